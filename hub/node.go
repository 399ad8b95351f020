// Package hub is one node of the Drover hub: a member of a Raft cluster of
// 1, 3 or 5 nodes that owns the fleet's state, serving the Connect API, the
// blob store, /metrics, /healthz and /readyz on one HTTP port.
//
// The pieces, each in its own file:
//
//   - node.go: start-up and shut-down.
//   - raft.go: the Raft log, bootstrap, joining, and what the leader does
//     when it takes office.
//   - apply.go: writes, applied on the leader or forwarded to it.
//   - read.go: reads, linearizable by default or stale on request.
//   - auth.go: who is calling and what they may do.
//   - *_endpoint.go: one Connect service each.
//   - blobs.go: blob upload, download, replication and collection.
//
// The replicated state itself is hub/state, changed only through the
// commands of hub/fsm.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/droverhq/drover/hub/blob"
	"github.com/droverhq/drover/hub/fsm"
	"github.com/droverhq/drover/hub/raftlog"
	"github.com/droverhq/drover/hub/state"
	"github.com/droverhq/drover/internal/kvstore"
)

// Node is a running hub node.
type Node struct {
	cfg    Config
	logger *slog.Logger
	now    func() time.Time
	// formerOwner is the node another name had claimed the data dir for,
	// when that name is not this node's: allowed only while the data dir
	// holds no cluster state (a first start that failed), see startRaft.
	formerOwner string

	fsm      *fsm.FSM
	raft     *raft.Raft
	logStore *raftlog.Store
	trans    raft.Transport
	blobs    *blob.Store
	metrics  *metrics
	peers    *peerClients

	// httpAddr and raftAddr are the addresses this node advertises.
	httpAddr string
	raftAddr string
	listener net.Listener
	server   *http.Server

	// leaderNotify receives Raft's leadership changes.
	leaderNotify <-chan bool
	// hadState is true if the data directory held Raft state at start-up.
	hadState bool
	// leaderReady is true while this node is leader and has applied every
	// entry of earlier terms (see establishLeadership).
	leaderReady atomic.Bool

	pulls         pullGroup
	liveness      *liveness
	telemetry     *telemetryStore
	metricWindows *metricStore // agents' metric windows, on the leader
	// gcMu keeps the blob collector from removing a blob between a
	// version's check that it exists and the version's commit.
	gcMu sync.Mutex

	ctx    context.Context
	cancel context.CancelFunc
	// streams ends the long-lived server streams (agents' desired-state
	// watches, rollout watches) when the node starts shutting down, so
	// that the HTTP server's graceful shutdown does not wait on them.
	streams       context.Context
	cancelStreams context.CancelFunc
	wg            sync.WaitGroup
	closing       atomic.Bool
}

// New starts a hub node: it opens the data directory, starts Raft,
// bootstraps or joins a cluster as configured, and serves HTTP. Call
// Shutdown to stop it.
func New(cfg Config) (_ *Node, err error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("hub config: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// n is not the named result: a failure returns nil, and the deferred
	// clean-up below must still see what was opened.
	n := &Node{cfg: cfg, logger: cfg.Logger.With("node", cfg.NodeName), now: time.Now, ctx: ctx, cancel: cancel}
	n.streams, n.cancelStreams = context.WithCancel(ctx)
	defer func() {
		if err != nil {
			n.closeResources()
		}
	}()

	if err := n.claimDataDir(); err != nil {
		return nil, err
	}
	if n.blobs, err = blob.Open(filepath.Join(cfg.DataDir, "blobs"), n.logger.With("component", "blobs")); err != nil {
		return nil, err
	}
	if n.listener = cfg.HTTPListener; n.listener == nil {
		if n.listener, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("listen for HTTP on %s: %w", cfg.HTTPAddr, err)
		}
	}
	if n.httpAddr, err = advertise(cfg.AdvertiseHTTP, n.listener.Addr()); err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	n.peers = newPeerClients(cfg.PeerHTTPClient, n.peerSecret)
	n.liveness = newLiveness(n.now)
	n.telemetry = newTelemetryStore()
	n.metricWindows = newMetricStore()

	n.metrics = newMetrics(n)
	if err := n.startRaft(); err != nil {
		return nil, err
	}

	n.server = &http.Server{
		Handler:           n.routes(),
		Protocols:         serverProtocols(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.logger.Handler(), slog.LevelDebug),
	}
	n.goFunc(func() {
		if err := n.server.Serve(n.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.logger.Error("HTTP server stopped", "err", err)
		}
	})
	n.goFunc(n.monitorLeadership)
	n.goFunc(n.registerSelf)
	n.goFunc(n.reconcileBlobs)
	n.goFunc(n.collectBlobs)
	n.goFunc(n.forwardHeartbeats)
	n.goFunc(func() {
		kvstore.CollectGarbage(n.ctx, n.logStore.DB(), 5*time.Minute, n.logger.With("component", "raftlog"), nil)
	})
	n.logger.Info("hub node started", "http", n.httpAddr, "raft", n.raftAddr, "data_dir", cfg.DataDir)
	return n, nil
}

// awaitChange waits, in a server stream, until ch (a state watch) fires or
// every has passed. It returns the error that ends the stream when the
// caller goes away or the node starts shutting down.
func (n *Node) awaitChange(ctx context.Context, ch <-chan struct{}, every time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-n.streams.Done():
		return unavailable("the node is shutting down")
	case <-ch:
	case <-time.After(every):
	}
	return nil
}

func (n *Node) goFunc(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// claimDataDir creates the data directory and records which node owns it.
// A data dir another name claimed is refused once it holds cluster state
// (startRaft checks): two Raft servers with one identity would follow.
func (n *Node) claimDataDir() error {
	if err := os.MkdirAll(n.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(n.cfg.DataDir, "node-name")
	owner, err := os.ReadFile(path)
	switch {
	case err == nil:
		if got := strings.TrimSpace(string(owner)); got != n.cfg.NodeName {
			n.formerOwner = got
		}
		return nil
	case errors.Is(err, os.ErrNotExist):
		return writeFileAtomic(path, []byte(n.cfg.NodeName+"\n"), 0o600)
	default:
		return fmt.Errorf("data dir: %w", err)
	}
}

// settleOwner decides a data dir another name had claimed, once it is
// known whether it holds cluster state: one that does stays that node's;
// one that does not (a first start that failed, before the name was set)
// is this node's now.
func (n *Node) settleOwner(hasState bool) error {
	if n.formerOwner == "" {
		return nil
	}
	if hasState {
		return fmt.Errorf("data dir %s belongs to node %q, not %q, and holds its cluster state: start it with --node-name %s, or give this node another data dir", n.cfg.DataDir, n.formerOwner, n.cfg.NodeName, n.formerOwner)
	}
	n.logger.Info("the data dir was claimed by another name but holds no cluster state; it is this node's now", "was", n.formerOwner)
	return writeFileAtomic(filepath.Join(n.cfg.DataDir, "node-name"), []byte(n.cfg.NodeName+"\n"), 0o600)
}

// Alive reports whether the node's Raft is running, for systemd's watchdog.
func (n *Node) Alive() bool { return !n.closing.Load() && n.raft.State() != raft.Shutdown }

// HTTPAddr returns the address the node serves HTTP on, as advertised.
func (n *Node) HTTPAddr() string { return n.httpAddr }

// RaftAddr returns the node's advertised Raft address.
func (n *Node) RaftAddr() string { return n.raftAddr }

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.NodeName }

// IsLeader reports whether the node is the leader and ready to serve as one.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader && n.leaderReady.Load() }

// State returns a view of this node's replicated state as applied so far
// (it may lag the leader).
func (n *Node) State() *state.Snapshot { return n.fsm.State().Snapshot() }

// StateDigest returns the applied index and a digest of the whole state at
// it; replicas at the same index must agree.
func (n *Node) StateDigest() (uint64, string, error) {
	idx, d, err := n.fsm.Digest()
	return idx, d.String(), err
}

// RaftStats returns Raft's own statistics (last_snapshot_index, num_peers, ...).
func (n *Node) RaftStats() map[string]string { return n.raft.Stats() }

// AdminTokenPath is where a bootstrapped node writes the first admin token.
func AdminTokenPath(dataDir string) string { return filepath.Join(dataDir, "admin.token") }

// Shutdown stops the node: it stops serving HTTP (waiting up to ctx for
// requests in flight), leaves Raft running until then, and closes the log.
func (n *Node) Shutdown(ctx context.Context) error {
	if !n.closing.CompareAndSwap(false, true) {
		return nil
	}
	n.logger.Info("hub node shutting down")
	// A leader hands over first, so that the cluster does not wait out an
	// election timeout for a node that is leaving anyway.
	if n.raft != nil && n.raft.State() == raft.Leader {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			n.logger.Warn("leadership transfer before shutdown failed", "err", err)
		}
	}
	// Streams end now: they would hold the HTTP server's shutdown open.
	n.cancelStreams()
	var errs []error
	if n.server != nil {
		if err := n.server.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
			_ = n.server.Close()
		}
	}
	n.cancel()
	errs = append(errs, n.closeResources())
	n.wg.Wait()
	return errors.Join(errs...)
}

// closeResources stops Raft and closes what New opened.
func (n *Node) closeResources() error {
	n.cancel()
	var errs []error
	if n.raft != nil {
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
	}
	if c, ok := n.trans.(closer); ok {
		_ = c.Close()
	}
	if n.logStore != nil {
		if err := n.logStore.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft log: %w", err))
		}
	}

	if n.server == nil && n.listener != nil {
		_ = n.listener.Close()
	}
	return errors.Join(errs...)
}

type closer interface{ Close() error }

// writeFileAtomic writes a file so that it is either whole or absent.
func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// scratchDir is where the node writes files it needs for a moment (a
// data set being assembled); startRaft empties it, since a crash leaves
// them behind.
func (n *Node) scratchDir() string { return filepath.Join(n.cfg.DataDir, "tmp") }

// clearLeftovers removes what a crash can leave in the data dir: scratch
// files, and a Raft snapshot that was being written (raft skips those and
// never removes them: each would keep a whole copy of the state).
func (n *Node) clearLeftovers() error {
	if err := os.RemoveAll(n.scratchDir()); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.MkdirAll(n.scratchDir(), 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	partial, _ := filepath.Glob(filepath.Join(n.cfg.DataDir, "raft", "snapshots", "*.tmp"))
	for _, p := range partial {
		n.logger.Info("removing a snapshot a crash left half-written", "path", p)
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func serverProtocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return p
}
