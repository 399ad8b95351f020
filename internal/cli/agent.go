package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/droverhq/drover/agent"
	"github.com/droverhq/drover/internal/config"
	"github.com/droverhq/drover/internal/logging"
	"github.com/droverhq/drover/internal/progress"
	"github.com/droverhq/drover/internal/sdnotify"
	"github.com/droverhq/drover/nvml"
	"github.com/droverhq/drover/nvml/fake"
	"github.com/droverhq/drover/plugins/procserve"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// agentFlags are the agent's settings as flags.
type agentFlags struct {
	configFile string
	cfg        agent.Config
	labels     []string
	processes  []string
	trainers   []string
	fakeGPUs   string
	logOpts    logging.Options
	fromCLI    map[string]bool
}

func (f *agentFlags) register(fs *pflag.FlagSet) {
	c := &f.cfg
	fs.StringVar(&f.configFile, "config", "", "a YAML file of settings (keys are flag names); re-read on SIGHUP")
	fs.StringVar(&c.Name, "name", "", "the agent's name in the fleet (default: the host name)")
	fs.StringSliceVar(&c.Hubs, "hub", nil, "hub addresses, host:port (repeatable or comma-separated)")
	fs.StringVar(&c.JoinToken, "join-token", "", "an agent token to enrol with (drover tokens create --role agent)")
	fs.StringVar(&c.DataDir, "data-dir", "/var/lib/drover/agent", "where the agent keeps its state and artifacts")
	fs.StringVar(&c.ServeAddr, "serve-addr", "127.0.0.1:8430", "where to serve /healthz, /readyz, /metrics and predictions")
	fs.StringVar(&c.PluginDir, "plugin-dir", DefaultPluginDir, "runner plugins and their SHA256SUMS; empty for none")
	fs.StringArrayVar(&f.labels, "label", nil, "a label describing this machine, key=value (repeatable)")
	fs.StringArrayVar(&f.processes, "process-server", nil, "FORMAT=COMMAND: serve artifacts of FORMAT with a model server process speaking the Open Inference Protocol; COMMAND's words may hold {port}, {artifact}, {name}, {model}, {format} (repeatable)")
	fs.StringArrayVar(&f.trainers, "trainer", nil, "NAME=COMMAND: an exec trainer that retraining jobs may name as their runner, run as 'drover train --runner exec' runs its --exec-command (repeatable; native is built in)")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", 5*time.Second, "how often to heartbeat")
	fs.DurationVar(&c.SampleInterval, "sample-interval", 10*time.Second, "how often to sample the GPUs")
	fs.DurationVar(&c.TelemetryWindow, "telemetry-window", time.Minute, "the span one telemetry report summarises")
	fs.DurationVar(&c.InventoryInterval, "inventory-interval", 5*time.Minute, "how often to look for hardware changes")
	fs.IntVar(&c.OutboxMaxReports, "outbox-max-reports", 100_000, "how many reports to keep while the hub is away")
	fs.Float64Var(&c.SampleRate, "sample-rate", 0.1, "the fraction of answered predictions kept on the agent for drift and feedback (0 to 1)")
	fs.IntVar(&c.SampleKeep, "sample-keep", 10_000, "how many prediction samples to keep per model")
	fs.DurationVar(&c.FeedbackRetention, "feedback-retention", 24*time.Hour, "how long a sampled prediction waits for its feedback label")
	fs.IntVar(&c.WindowKeep, "window-keep", 1440, "how many one-minute metric windows to keep per model")
	fs.DurationVar(&c.MetricWindow, "metric-window", time.Minute, "the span of one metric window (requests, errors, latency), reported to the hub for rollout gates")
	fs.DurationVar(&c.Drift.Window, "drift-window", time.Minute, "the span of one drift window")
	fs.DurationVar(&c.Drift.Evaluation, "drift-evaluation", 10*time.Minute, "how much recent traffic the agent judges for drift at each window's close")
	fs.DurationVar(&c.Drift.Report, "drift-report-interval", 5*time.Minute, "how often to send the hub the drift windows since the last")
	fs.IntVar(&c.Drift.Keep, "drift-keep", 1440, "how many drift windows to keep per model")
	fs.IntVar(&c.Serving.BatchMaxRows, "batch-max-rows", 64, "the most rows sent to a runner plugin in one call; requests queued while it is busy are combined up to this (1: no batching)")
	fs.DurationVar(&c.Serving.BatchMaxDelay, "batch-max-delay", 0, "how long a batch for a runner plugin may wait for more requests (0: never wait)")
	fs.DurationVar(&c.Serving.DrainTimeout, "drain-timeout", 30*time.Second, "how long a version taken out of service may finish the requests it has")
	fs.DurationVar(&c.ArtifactKeep, "artifact-keep", 24*time.Hour, "how long an unused artifact stays cached")
	fs.StringVar(&f.fakeGPUs, "fake-gpus", "", "simulate GPUs instead of using NVML: "+strings.Join(fake.Models, ", ")+" (for tests and the demo)")
	fs.StringVar(&f.logOpts.Level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logOpts.Format, "log-format", "text", "text or json")
}

// load applies the environment and the config file to fs, and builds the
// agent's config.
func (f *agentFlags) load(fs *pflag.FlagSet) (agent.Config, error) {
	var file map[string]any
	if f.configFile != "" {
		var err error
		if file, err = config.LoadFile(f.configFile); err != nil {
			return agent.Config{}, usageError{err}
		}
	}
	if err := config.Apply(fs, file, "config"); err != nil {
		return agent.Config{}, usageError{err}
	}
	cfg := f.cfg
	labels, err := parseKV("label", f.labels)
	if err != nil {
		return agent.Config{}, err
	}
	cfg.Labels = labels
	servers, err := parseKV("process-server", f.processes)
	if err != nil {
		return agent.Config{}, err
	}
	for format, command := range servers {
		words := strings.Fields(command)
		if len(words) == 0 {
			return agent.Config{}, usagef("--process-server %s: no command", format)
		}
		if cfg.Serving.ProcessServers == nil {
			cfg.Serving.ProcessServers = map[string]procserve.Config{}
		}
		cfg.Serving.ProcessServers[format] = procserve.Config{Command: words}
	}
	trainers, err := parseKV("trainer", f.trainers)
	if err != nil {
		return agent.Config{}, err
	}
	for name, command := range trainers {
		words := strings.Fields(command)
		switch {
		case len(words) == 0:
			return agent.Config{}, usagef("--trainer %s: no command", name)
		case name == "native":
			return agent.Config{}, usagef("--trainer native: native is the built-in runner; give the exec trainer another name")
		}
		if cfg.Trainers == nil {
			cfg.Trainers = map[string][]string{}
		}
		cfg.Trainers[name] = words
	}
	if f.fakeGPUs != "" {
		seed := cfg.Name
		if seed == "" {
			seed, _ = os.Hostname()
		}
		machine, err := fake.New(f.fakeGPUs, fake.WithSeed(seed))
		if err != nil {
			return agent.Config{}, usageError{err}
		}
		cfg.GPUs = func() gonvml.Interface { return machine }
	}
	return cfg, nil
}

// reload builds the agent's config again: flags given on the command line
// keep their values; every other goes back to its default, and the
// environment and the file are read again.
func (f *agentFlags) reload(fs *pflag.FlagSet) (agent.Config, error) {
	if err := config.Reset(fs, func(fl *pflag.Flag) bool { return f.fromCLI[fl.Name] || fl.Name == "config" }); err != nil {
		return agent.Config{}, err
	}
	return f.load(fs)
}

func (a *app) agentCommand() *cobra.Command {
	var flags agentFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the agent on a GPU machine",
		Long: `agent runs the daemon on a GPU machine: it discovers the machine and its GPUs,
enrols with the hub (with --join-token, once), heartbeats, watches its desired
state, downloads and verifies the model versions it is assigned, and reports.
It keeps serving its last desired state while the hub is away.

Every flag can also be set in the YAML file given by --config (keys are flag
names) or by an environment variable DROVER_<FLAG>. SIGHUP re-reads the file and
applies the labels, the trainers and the log level; SIGTERM stops the agent cleanly. Under systemd (Type=notify)
it reports readiness and pets the watchdog.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Remember what the command line set: a reload keeps those.
			flags.fromCLI = map[string]bool{}
			cmd.Flags().Visit(func(f *pflag.Flag) { flags.fromCLI[f.Name] = true })
			cfg, err := flags.load(cmd.Flags())
			if err != nil {
				return err
			}
			if a.json && !cmd.Flags().Changed("log-format") {
				flags.logOpts.Format = "json" // --json: the log is the output
			}
			logger, level, err := logging.NewWithLevel(a.stderr, flags.logOpts)
			if err != nil {
				return usageError{err}
			}
			cfg.Logger = logger
			ag, err := agent.New(cfg)
			if errors.Is(err, agent.ErrConfig) {
				return usageError{err}
			}
			if err != nil {
				return err
			}
			return runAgent(cmd.Context(), ag, cmd, &flags, logger, level)
		},
	}
	flags.register(cmd.Flags())
	cmd.AddCommand(a.agentInventory())
	return cmd
}

// runAgent runs the agent under systemd's eye: READY once started, the
// watchdog petted while the agent's loops turn, SIGHUP to reload.
func runAgent(parent context.Context, ag *agent.Agent, cmd *cobra.Command, flags *agentFlags, logger *slog.Logger, level *slog.LevelVar) error {
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	_ = sdnotify.Ready()
	_ = sdnotify.Status("running")
	go watchdog(ctx, ag.Alive)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			_ = sdnotify.Stopping()
			logger.Info("signal received; stopping")
			return <-done
		case <-hup:
			_ = sdnotify.Reloading()
			cfg, err := flags.reload(cmd.Flags())
			var lvl slog.Level
			if err == nil {
				lvl, err = logging.ParseLevel(flags.logOpts.Level)
			}
			if err != nil {
				logger.Error("reload failed; keeping the running configuration", "err", err)
			} else {
				level.Set(lvl)
				ag.Reload(cfg)
				logger.Info("configuration reloaded", "log_level", lvl)
			}
			_ = sdnotify.Ready()
		}
	}
}

// watchdog pets systemd's watchdog while alive says so.
func watchdog(ctx context.Context, alive func() bool) {
	every, ok := sdnotify.WatchdogInterval()
	if !ok {
		return
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if alive() {
				_ = sdnotify.Watchdog()
			}
		}
	}
}

func (a *app) agentInventory() *cobra.Command {
	var fakeGPUs string
	var sample bool
	cmd := &cobra.Command{
		Use:   "inventory",
		Short: "Print what the agent sees of this machine and its GPUs, without a hub",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			lib := nvml.System()
			if fakeGPUs != "" {
				host, _ := os.Hostname()
				m, err := fake.New(fakeGPUs, fake.WithSeed(host))
				if err != nil {
					return usageError{err}
				}
				lib = m
			}
			out := inventoryView{Host: agent.HostInfo(), GPUs: []nvml.GPU{}}
			c, err := nvml.Open(lib)
			if err != nil {
				out.NVMLError = err.Error()
			} else {
				defer c.Close()
				inv, err := c.Inventory()
				if err != nil {
					return err
				}
				out.DriverVersion, out.CUDADriverVersion, out.NVMLVersion, out.GPUs = inv.DriverVersion, inv.CUDADriverVersion, inv.NVMLVersion, inv.GPUs
				if sample {
					if out.Telemetry, err = c.Sample(); err != nil {
						return err
					}
				}
			}
			return a.emit(out, func(w io.Writer) { printInventory(w, out) })
		},
	}
	cmd.Flags().StringVar(&fakeGPUs, "fake-gpus", "", "simulate GPUs: "+strings.Join(fake.Models, ", "))
	cmd.Flags().BoolVar(&sample, "telemetry", false, "also sample every GPU's telemetry once")
	return cmd
}

// inventoryView is drover agent inventory's output.
type inventoryView struct {
	Host              *droverv1.Host   `json:"host"`
	DriverVersion     string           `json:"driver_version,omitempty"`
	CUDADriverVersion string           `json:"cuda_driver_version,omitempty"`
	NVMLVersion       string           `json:"nvml_version,omitempty"`
	NVMLError         string           `json:"nvml_error,omitempty"`
	GPUs              []nvml.GPU       `json:"gpus"`
	Telemetry         []nvml.Telemetry `json:"telemetry,omitempty"`
}

func printInventory(w io.Writer, v inventoryView) {
	h := v.Host
	fmt.Fprintf(w, "Host: %s, %s/%s, kernel %s, %d CPUs (%s), %s of memory\n", h.GetHostname(), h.GetOs(), h.GetArch(), dash(h.GetKernel()),
		h.GetCpus(), dash(h.GetCpuModel()), progress.Bytes(int64(h.GetMemoryBytes())))
	if v.NVMLError != "" {
		fmt.Fprintf(w, "GPUs: none usable (%s); the agent runs CPU-only\n", v.NVMLError)
		return
	}
	fmt.Fprintf(w, "Driver %s, CUDA %s, NVML %s\n\n", v.DriverVersion, v.CUDADriverVersion, v.NVMLVersion)
	t := newTable(w)
	fmt.Fprintln(t, "GPU\tNAME\tUUID\tMEMORY\tCC\tPCI\tMIG")
	for _, g := range v.GPUs {
		mig := "-"
		if g.MIG.Enabled {
			var profiles []string
			for _, in := range g.MIG.Instances {
				profiles = append(profiles, in.Profile)
			}
			mig = "on: " + strings.Join(profiles, ",")
		} else if g.MIG.Capable {
			mig = "off"
		}
		fmt.Fprintf(t, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", g.Index, g.Name, g.UUID, progress.Bytes(int64(g.MemoryBytes)), g.ComputeCapability, g.PCIBusID, mig)
	}
	t.Flush()
	if len(v.Telemetry) > 0 {
		fmt.Fprintln(w)
		t = newTable(w)
		fmt.Fprintln(t, "GPU\tTEMP\tPOWER\tUTIL\tMEM USED\tSM CLOCK\tTHROTTLES\tECC (corr/uncorr)")
		for _, s := range v.Telemetry {
			fmt.Fprintf(t, "%d\t%s°C\t%sW\t%s%%\t%s\t%sMHz\t%s\t%s/%s\n", s.Index, opt(s.TemperatureC), optF(s.PowerWatts), opt(s.GPUUtilPercent),
				optBytes(s.MemoryUsedBytes), opt(s.SMClockMHz), dash(strings.Join(s.Throttles, ",")), opt(s.ECC.CorrectedVolatile), opt(s.ECC.UncorrectedVolatile))
		}
		t.Flush()
	}
}

func opt[T uint32 | uint64](v *T) string {
	if v == nil {
		return "?"
	}
	return fmt.Sprint(*v)
}

func optF(v *float64) string {
	if v == nil {
		return "?"
	}
	return fmt.Sprintf("%.0f", *v)
}

func optBytes(v *uint64) string {
	if v == nil {
		return "?"
	}
	return progress.Bytes(int64(*v))
}
