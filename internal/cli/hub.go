package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/droverhq/drover/hub"
	"github.com/droverhq/drover/internal/config"
	"github.com/droverhq/drover/internal/logging"
	"github.com/droverhq/drover/internal/sdnotify"
)

func (a *app) hubCommand() *cobra.Command {
	cfg := hub.DefaultConfig()
	var (
		configFile string
		logOpts    logging.Options
	)
	cmd := &cobra.Command{
		Use:   "hub",
		Short: "Run a hub node",
		Long: `hub runs one node of the hub's Raft cluster.

Start the first node of a new cluster with --bootstrap; it writes the first admin
token to <data-dir>/admin.token. Start the others with --join <address of a member>
and --join-token <an admin token>. A node restarted on its data directory rejoins
by itself.

Every flag can also be set in the YAML file given by --config (keys are flag
names) or by an environment variable DROVER_<FLAG> (e.g. DROVER_DATA_DIR); the
command line wins over the environment, which wins over the file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			levelOnCLI := cmd.Flags().Changed("log-level")
			var file map[string]any
			if configFile != "" {
				var err error
				if file, err = config.LoadFile(configFile); err != nil {
					return usageError{err}
				}
			}
			if err := config.Apply(cmd.Flags(), file, "config"); err != nil {
				return usageError{err}
			}
			if a.json && !cmd.Flags().Changed("log-format") {
				logOpts.Format = "json" // --json: the log is the output
			}
			logger, level, err := logging.NewWithLevel(a.stderr, logOpts)
			if err != nil {
				return usageError{err}
			}
			cfg.Logger = logger
			if cfg.NodeName == "" {
				host, _ := os.Hostname()
				cfg.NodeName = host
			}
			node, err := hub.New(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			_ = sdnotify.Ready()
			go watchdog(ctx, node.Alive)
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			for ctx.Err() == nil {
				select {
				case <-ctx.Done():
				case <-hup:
					// Only the log level changes without a restart.
					_ = sdnotify.Reloading()
					if lvl, err := reloadLogLevel(configFile, logOpts.Level, levelOnCLI); err != nil {
						logger.Error("reload failed", "err", err)
					} else {
						level.Set(lvl)
						logger.Info("configuration reloaded", "log_level", lvl)
					}
					_ = sdnotify.Ready()
				}
			}
			_ = sdnotify.Stopping()
			logger.Info("signal received; shutting down (a second signal stops at once)")
			stop()
			sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := node.Shutdown(sctx); err != nil {
				return fmt.Errorf("shutdown: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "a YAML file of settings (keys are flag names)")
	f.StringVar(&cfg.NodeName, "node-name", "", "this node's name in the cluster (default: the host name)")
	f.StringVar(&cfg.DataDir, "data-dir", "/var/lib/drover/hub", "where the node keeps its Raft log, snapshots and blobs")
	f.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "where to serve the API, blobs, /metrics, /healthz and /readyz")
	f.StringVar(&cfg.AdvertiseHTTP, "advertise-http", "", "the HTTP address peers and clients use (default: --http-addr)")
	f.StringVar(&cfg.RaftAddr, "raft-addr", cfg.RaftAddr, "where to speak Raft to peers")
	f.StringVar(&cfg.AdvertiseRaft, "advertise-raft", "", "the Raft address peers use (default: --raft-addr)")
	f.BoolVar(&cfg.Bootstrap, "bootstrap", false, "start a new cluster with this node as its first member")
	f.StringSliceVar(&cfg.Join, "join", nil, "join an existing cluster through these members' HTTP addresses")
	f.StringVar(&cfg.JoinToken, "join-token", "", "an admin token, to join with")
	f.DurationVar(&cfg.Raft.HeartbeatTimeout, "raft-heartbeat-timeout", cfg.Raft.HeartbeatTimeout, "how long a follower waits for the leader before an election")
	f.DurationVar(&cfg.Raft.ElectionTimeout, "raft-election-timeout", cfg.Raft.ElectionTimeout, "how long a candidate waits for votes")
	f.DurationVar(&cfg.Raft.LeaderLeaseTimeout, "raft-leader-lease-timeout", cfg.Raft.LeaderLeaseTimeout, "how long a leader leads without hearing from a quorum")
	f.Uint64Var(&cfg.Raft.SnapshotThreshold, "raft-snapshot-threshold", cfg.Raft.SnapshotThreshold, "log entries between snapshots")
	f.DurationVar(&cfg.Raft.SnapshotInterval, "raft-snapshot-interval", cfg.Raft.SnapshotInterval, "how often to check whether a snapshot is due")
	f.Uint64Var(&cfg.Raft.TrailingLogs, "raft-trailing-logs", cfg.Raft.TrailingLogs, "log entries kept after a snapshot")
	f.DurationVar(&cfg.LeaderWait, "leader-wait", cfg.LeaderWait, "how long a request waits for a leader before failing with unavailable")
	f.DurationVar(&cfg.BlobGCGrace, "blob-gc-grace", cfg.BlobGCGrace, "how long an unreferenced blob is kept")
	f.DurationVar(&cfg.BlobGCInterval, "blob-gc-interval", cfg.BlobGCInterval, "how often unreferenced blobs are collected")
	f.Int64Var(&cfg.BlobMaxBytes, "blob-max-bytes", cfg.BlobMaxBytes, "the largest blob an upload may send")
	f.Int64Var(&cfg.BlobServeRate, "blob-serve-rate", 0, "cap each blob download at this many bytes a second (0: no cap)")
	f.DurationVar(&cfg.AgentTimeout, "agent-timeout", cfg.AgentTimeout, "how long an agent may go without a heartbeat before it is marked down")
	f.IntVar(&cfg.RetrainMaxJobs, "retrain-max-jobs", cfg.RetrainMaxJobs, "how many retraining jobs may run at once")
	f.StringVar(&logOpts.Level, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&logOpts.Format, "log-format", "text", "text or json")
	return cmd
}

// reloadLogLevel reads the log level again, with the usual precedence: the
// command line, then DROVER_LOG_LEVEL, then the config file.
func reloadLogLevel(configFile, current string, onCLI bool) (slog.Level, error) {
	level := current
	if onCLI {
		return logging.ParseLevel(level)
	}
	if configFile != "" {
		file, err := config.LoadFile(configFile)
		if err != nil {
			return 0, err
		}
		if v, ok := file["log-level"]; ok {
			level = fmt.Sprint(v)
		}
	}
	if v, ok := os.LookupEnv(config.EnvName("log-level")); ok {
		level = v
	}
	return logging.ParseLevel(level)
}
