package hub

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/hub/auth"
	"github.com/droverhq/drover/hub/fsm"
	"github.com/droverhq/drover/hub/raftlog"
	"github.com/droverhq/drover/hub/state"
	"github.com/droverhq/drover/internal/buildinfo"
	"github.com/droverhq/drover/internal/logging"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// systemActor is recorded for changes the hub makes on its own.
var systemActor = &droverv1.Actor{TokenId: "system", Name: "hub"}

func (n *Node) startRaft() error {
	raftDir := filepath.Join(n.cfg.DataDir, "raft")
	logDir := filepath.Join(raftDir, "log")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return fmt.Errorf("raft dir: %w", err)
	}
	var err error
	if n.logStore, err = raftlog.Open(logDir, n.logger.With("component", "raftlog")); err != nil {
		return fmt.Errorf("open raft log in %s: %w", logDir, err)
	}
	if err := n.clearLeftovers(); err != nil {
		return err
	}
	hclog := logging.HCLog(n.logger, "raft")
	snaps, err := raft.NewFileSnapshotStoreWithLogger(raftDir, 2, hclog)
	if err != nil {
		return fmt.Errorf("open raft snapshots in %s: %w", raftDir, err)
	}

	if n.trans = n.cfg.RaftTransport; n.trans == nil {
		var adv net.Addr
		if n.cfg.AdvertiseRaft != "" {
			if adv, err = net.ResolveTCPAddr("tcp", n.cfg.AdvertiseRaft); err != nil {
				return fmt.Errorf("advertise raft address: %w", err)
			}
		}
		tcp, err := raft.NewTCPTransportWithLogger(n.cfg.RaftAddr, adv, 5, 10*time.Second, hclog)
		if err != nil {
			// Not assigned on failure: a nil *NetworkTransport in the
			// interface would look like one to close.
			return fmt.Errorf("listen for raft on %s: %w", n.cfg.RaftAddr, err)
		}
		n.trans = tcp
	}
	n.raftAddr = string(n.trans.LocalAddr())

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.NodeName)
	rc.Logger = hclog
	rc.HeartbeatTimeout = n.cfg.Raft.HeartbeatTimeout
	rc.ElectionTimeout = n.cfg.Raft.ElectionTimeout
	rc.LeaderLeaseTimeout = n.cfg.Raft.LeaderLeaseTimeout
	rc.CommitTimeout = n.cfg.Raft.CommitTimeout
	rc.SnapshotThreshold = n.cfg.Raft.SnapshotThreshold
	rc.SnapshotInterval = n.cfg.Raft.SnapshotInterval
	rc.TrailingLogs = n.cfg.Raft.TrailingLogs
	// Entries that queue up while a write is in flight go out, and are
	// synced to disk, together.
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 512
	notify := make(chan bool, 16)
	rc.NotifyCh = notify
	n.leaderNotify = notify

	hasState, err := raft.HasExistingState(n.logStore, n.logStore, snaps)
	if err != nil {
		return fmt.Errorf("read raft state: %w", err)
	}
	if err := n.settleOwner(hasState); err != nil {
		return err
	}
	n.fsm = fsm.New(n.logger.With("component", "fsm"))
	n.fsm.Observe = n.metrics.observeApply
	if n.raft, err = raft.NewRaft(rc, n.fsm, n.logStore, n.logStore, snaps, n.trans); err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	n.hadState = hasState

	switch {
	case hasState && (n.cfg.Bootstrap || len(n.cfg.Join) > 0):
		n.logger.Info("data dir already holds cluster state; ignoring --bootstrap/--join and rejoining", "last_index", n.raft.LastIndex())
	case n.cfg.Bootstrap:
		return n.bootstrap()
	case !hasState && len(n.cfg.Join) == 0:
		return fmt.Errorf("%s holds no cluster state: start with --bootstrap to create a cluster, or --join to enter one", n.cfg.DataDir)
	}
	return nil
}

// bootstrap starts a new single-node cluster. The first admin token is
// written to disk before the cluster exists, so that a crash between the two
// reuses it rather than leaving a cluster nobody can administer.
func (n *Node) bootstrap() error {
	if _, err := n.loadOrCreateAdminToken(); err != nil {
		return err
	}
	cfg := raft.Configuration{Servers: []raft.Server{{
		Suffrage: raft.Voter, ID: raft.ServerID(n.cfg.NodeName), Address: raft.ServerAddress(n.raftAddr),
	}}}
	if err := n.raft.BootstrapCluster(cfg).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("bootstrap: %w", err)
	}
	n.logger.Info("bootstrapped a new cluster", "admin_token_file", AdminTokenPath(n.cfg.DataDir))
	return nil
}

func (n *Node) loadOrCreateAdminToken() (string, error) {
	path := AdminTokenPath(n.cfg.DataDir)
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read admin token: %w", err)
	}
	_, secret := auth.NewSecret()
	if err := writeFileAtomic(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write admin token: %w", err)
	}
	n.logger.Info("wrote the first admin token; keep it safe, it is shown nowhere else", "path", path)
	return secret, nil
}

// monitorLeadership runs the leader's duties while this node leads.
func (n *Node) monitorLeadership() {
	var stop context.CancelFunc
	done := make(chan struct{})
	close(done)
	for {
		select {
		case <-n.ctx.Done():
			if stop != nil {
				stop()
				<-done
			}
			return
		case isLeader := <-n.leaderNotify:
			if isLeader && stop == nil {
				var ctx context.Context
				ctx, stop = context.WithCancel(n.ctx)
				done = make(chan struct{})
				go func() {
					defer close(done)
					n.leaderLoop(ctx)
				}()
			} else if !isLeader && stop != nil {
				stop()
				<-done
				stop = nil
				n.leaderReady.Store(false)
				n.logger.Info("lost leadership")
			}
		}
	}
}

// leaderLoop establishes leadership, retrying until it succeeds or the node
// stops leading.
func (n *Node) leaderLoop(ctx context.Context) {
	n.logger.Info("elected leader; establishing leadership", "term", n.raft.CurrentTerm())
	backoff := 50 * time.Millisecond
	for {
		err := n.establishLeadership(ctx)
		if err == nil {
			n.leaderReady.Store(true)
			n.logger.Info("leadership established", "term", n.raft.CurrentTerm(), "applied_index", n.fsm.AppliedIndex())
			n.runControllers(ctx)
			return
		}
		n.logger.Warn("cannot establish leadership yet", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// runControllers runs the leader's controllers until leadership ends. Each
// resumes from the replicated state; their decisions are commands.
func (n *Node) runControllers(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { n.watchAgents(ctx) })
	wg.Go(func() { n.runRollouts(ctx) })
	wg.Go(func() { n.runRetraining(ctx) })
	wg.Wait()
}

// establishLeadership makes the new leader safe to serve reads and run
// controllers: a barrier applies every entry of earlier terms first (so that
// a read on the leader sees every acknowledged write), then the cluster is
// initialised if this is its first leader, and the leader's own addresses
// are recorded.
func (n *Node) establishLeadership(ctx context.Context) error {
	if err := n.raft.Barrier(n.cfg.ApplyTimeout).Error(); err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	view := n.fsm.State().Snapshot()
	if view.ClusterMeta() == nil {
		if err := n.initCluster(ctx); err != nil {
			return err
		}
	}
	return n.upsertSelf(ctx)
}

// initCluster writes the cluster's identity and first admin token. Only the
// node that bootstrapped the cluster has the token file.
func (n *Node) initCluster(ctx context.Context) error {
	secret, err := os.ReadFile(AdminTokenPath(n.cfg.DataDir))
	if err != nil {
		return fmt.Errorf("the cluster has no identity yet and this node has no admin token to give it (%w); was it bootstrapped?", err)
	}
	s := strings.TrimSpace(string(secret))
	id, ok := auth.IDFromSecret(s)
	if !ok {
		return fmt.Errorf("%s does not hold a drover token", AdminTokenPath(n.cfg.DataDir))
	}
	now := timestamppb.New(n.now())
	_, _, err = n.applyLocal(ctx, &fsmv1.ClusterInit{
		Header: &fsmv1.Header{Actor: systemActor, Time: now},
		Meta:   &fsmv1.ClusterMeta{ClusterId: auth.RandomString(8), PeerSecret: auth.RandomString(32)},
		AdminToken: &fsmv1.TokenRecord{
			Token:      &droverv1.Token{Id: id, Name: "bootstrap", Role: droverv1.Role_ROLE_ADMIN, CreatedBy: systemActor, CreateTime: now},
			SecretHash: auth.Hash(s),
		},
	})
	if state.KindOf(err) == state.KindAlreadyExists {
		return nil
	}
	return err
}

func (n *Node) selfRecord() *fsmv1.Node {
	return &fsmv1.Node{Name: n.cfg.NodeName, RaftAddress: n.raftAddr, HttpAddress: n.httpAddr, Version: buildinfo.Get().Version}
}

func (n *Node) upsertSelf(ctx context.Context) error {
	if rec := n.fsm.State().Snapshot().Node(n.cfg.NodeName); rec != nil && proto.Equal(rec, n.selfRecord()) {
		return nil
	}
	_, _, err := n.applyLocal(ctx, &fsmv1.NodeUpsert{
		Header: &fsmv1.Header{Actor: systemActor, Time: timestamppb.New(n.now())},
		Node:   n.selfRecord(),
	})
	return err
}

// registerSelf makes sure the cluster knows this node: a new node joins
// through the addresses it was given; a node that restarts with changed
// addresses updates its record. The leader records itself when it takes
// office, so this is for followers.
func (n *Node) registerSelf() {
	backoff := 100 * time.Millisecond
	joined := n.hadState || n.cfg.Bootstrap
	for {
		done, err := n.tryRegister(joined)
		if done {
			return
		}
		if err != nil {
			n.logger.Warn("cannot register with the cluster yet", "err", err, "retry_in", backoff)
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (n *Node) tryRegister(joined bool) (done bool, err error) {
	ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer cancel()
	req := &droverv1.JoinRequest{Name: n.cfg.NodeName, RaftAddress: n.raftAddr, HttpAddress: n.httpAddr, Version: buildinfo.Get().Version}
	if !joined {
		var errs []error
		for _, addr := range n.cfg.Join {
			resp, err := n.peers.joinClient(addr, n.cfg.JoinToken).Join(ctx, req)
			if err == nil {
				n.logger.Info("joined the cluster", "through", addr, "cluster_id", resp.GetClusterId())
				return true, nil
			}
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		}
		return false, errors.Join(errs...)
	}
	// A member: wait until the state is caught up enough to know the
	// leader and the peer secret, then update the record if it is stale.
	if n.raft.State() == raft.Leader {
		return true, nil // establishLeadership records the leader
	}
	rec := n.fsm.State().Snapshot().Node(n.cfg.NodeName)
	if rec != nil && proto.Equal(rec, n.selfRecord()) {
		return true, nil
	}
	if n.peerSecret() == "" {
		return false, nil
	}
	leader, err := n.leaderHTTP(ctx)
	if err != nil {
		return false, err
	}
	if _, err := n.peers.client(leader).Join(ctx, req); err != nil {
		return false, err
	}
	n.logger.Info("updated this node's addresses in the cluster", "http", n.httpAddr, "raft", n.raftAddr)
	return true, nil
}

// peerSecret returns the secret nodes present to each other, or "" before
// the state holds one.
func (n *Node) peerSecret() string {
	return n.fsm.State().Snapshot().ClusterMeta().GetPeerSecret()
}
