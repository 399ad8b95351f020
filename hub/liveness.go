package hub

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Agent liveness is not replicated: heartbeats land on any node, which
// passes them to the leader every heartbeatForwardInterval; the leader
// keeps when it last heard from each agent and, every second, commits the
// agents whose heartbeats stopped (down) or came back (ready) as one
// command each way. A new leader gives every ready agent a full timeout
// before judging it.

const heartbeatForwardInterval = 500 * time.Millisecond

// liveness tracks heartbeats on one node.
type liveness struct {
	mu      sync.Mutex
	pending map[string]struct{}  // heard here, not yet passed to the leader
	seen    map[string]time.Time // on the leader: the last heartbeat of each agent
	now     func() time.Time
}

func newLiveness(now func() time.Time) *liveness {
	return &liveness{pending: map[string]struct{}{}, seen: map[string]time.Time{}, now: now}
}

// heard records a heartbeat received by this node.
func (l *liveness) heard(agentID string, leader bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if leader {
		l.seen[agentID] = l.now()
	} else {
		l.pending[agentID] = struct{}{}
	}
}

// mark records heartbeats passed on by another node (on the leader).
func (l *liveness) mark(ids []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, id := range ids {
		l.seen[id] = now
	}
}

func (l *liveness) takePending() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]string, 0, len(l.pending))
	for id := range l.pending {
		ids = append(ids, id)
	}
	clear(l.pending)
	return ids
}

func (l *liveness) putBack(ids []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		l.pending[id] = struct{}{}
	}
}

// forget drops what this node knows of a removed agent's heartbeats.
func (l *liveness) forget(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.seen, id)
	delete(l.pending, id)
}

func (l *liveness) lastSeen(id string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.seen[id]
	return t, ok
}

// forwardHeartbeats passes heartbeats received on a follower to the leader.
func (n *Node) forwardHeartbeats() {
	tick := time.NewTicker(heartbeatForwardInterval)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		ids := n.liveness.takePending()
		if len(ids) == 0 {
			continue
		}
		if n.raft.State() == raft.Leader {
			n.liveness.mark(ids)
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
		err := n.passHeartbeats(ctx, ids)
		cancel()
		if err != nil {
			n.liveness.putBack(ids)
			n.logger.Debug("cannot pass agent heartbeats to the leader yet", "err", err, "agents", len(ids))
		}
	}
}

func (n *Node) passHeartbeats(ctx context.Context, ids []string) error {
	_, id := n.raft.LeaderWithID()
	rec := n.fsm.State().Snapshot().Node(string(id))
	if rec == nil {
		return fmt.Errorf("no leader known")
	}
	_, err := n.peers.client(rec.GetHttpAddress()).AgentHeartbeats(ctx, &droverv1.AgentHeartbeatsRequest{AgentIds: ids})
	return err
}

// watchAgents is the leader's liveness controller; it runs until ctx ends.
func (n *Node) watchAgents(ctx context.Context) {
	since := n.now() // a new leader judges nobody before a full timeout
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		at := n.now()
		var down, up []string
		for _, a := range n.fsm.State().Snapshot().Agents(nil) {
			seen, heard := n.liveness.lastSeen(a.GetId())
			switch a.GetStatus() {
			case droverv1.AgentStatus_AGENT_STATUS_READY:
				last := seen
				if last.Before(since) {
					last = since
				}
				if at.Sub(last) > n.cfg.AgentTimeout {
					down = append(down, a.GetId())
				}
			case droverv1.AgentStatus_AGENT_STATUS_DOWN:
				if heard && at.Sub(seen) <= n.cfg.AgentTimeout && seen.After(a.GetStatusTime().AsTime()) {
					up = append(up, a.GetId())
				}
			}
		}
		for _, change := range []struct {
			status droverv1.AgentStatus
			ids    []string
			reason string
		}{
			{droverv1.AgentStatus_AGENT_STATUS_DOWN, down, fmt.Sprintf("no heartbeat for %v", n.cfg.AgentTimeout)},
			{droverv1.AgentStatus_AGENT_STATUS_READY, up, "heartbeats resumed"},
		} {
			if len(change.ids) == 0 {
				continue
			}
			slices.Sort(change.ids)
			_, _, err := n.applyLocal(ctx, &fsmv1.AgentStatusSet{
				Header: &fsmv1.Header{Actor: systemActor, Time: now(n), Reason: change.reason},
				Status: change.status, AgentIds: change.ids,
			})
			if err != nil {
				n.logger.Warn("cannot record agent liveness", "status", change.status, "agents", len(change.ids), "err", err)
			} else {
				n.logger.Info("agent liveness changed", "status", change.status, "agents", change.ids)
			}
		}
	}
}

// telemetryKeep is how many telemetry windows the leader keeps per agent.
const telemetryKeep = 10

// telemetryStore holds agents' recent telemetry windows, on the leader, in
// memory. A new leader starts empty and fills from the next reports.
type telemetryStore struct {
	mu      sync.Mutex
	windows map[string][]*droverv1.TelemetryWindow
	lastSeq map[string]uint64
}

func newTelemetryStore() *telemetryStore {
	return &telemetryStore{windows: map[string][]*droverv1.TelemetryWindow{}, lastSeq: map[string]uint64{}}
}

func (s *telemetryStore) add(agentID string, seq uint64, w *droverv1.TelemetryWindow) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq <= s.lastSeq[agentID] {
		return // a retry of a report already kept
	}
	s.lastSeq[agentID] = seq
	ws := append(s.windows[agentID], w)
	if len(ws) > telemetryKeep {
		ws = ws[len(ws)-telemetryKeep:]
	}
	s.windows[agentID] = ws
}

func (s *telemetryStore) get(agentID string) []*droverv1.TelemetryWindow {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*droverv1.TelemetryWindow, 0, len(s.windows[agentID]))
	for _, w := range s.windows[agentID] {
		out = append(out, proto.CloneOf(w))
	}
	return out
}
