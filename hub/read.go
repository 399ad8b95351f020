package hub

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/raft"

	"github.com/droverhq/drover/hub/state"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// read returns a view of the state for a read request, and what to tell the
// caller about its freshness.
//
// A linearizable read (the default) asks the leader for a read index — the
// leader confirms with a quorum that it still leads and answers with its
// applied index — then waits until this node has applied that much. It
// sees every write acknowledged before it began, on any node. A stale read
// answers from this node's state at once, even with no leader.
func (n *Node) read(ctx context.Context, opts *droverv1.ReadOptions) (*state.Snapshot, *droverv1.ReadMeta, error) {
	_, leaderID := n.raft.LeaderWithID()
	meta := &droverv1.ReadMeta{ServedBy: n.cfg.NodeName, KnownLeader: leaderID != ""}
	if opts.GetConsistency() == droverv1.ReadConsistency_READ_CONSISTENCY_STALE {
		view := n.fsm.State().Snapshot()
		meta.Index = view.Index()
		meta.Stale = true
		if n.raft.State() != raft.Leader {
			if t := n.raft.LastContact(); !t.IsZero() {
				meta.LastContactMs = time.Since(t).Milliseconds()
			}
		}
		return view, meta, nil
	}
	index, err := n.readIndex(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := n.fsm.WaitForIndex(ctx, index); err != nil {
		return nil, nil, unavailable("this node is catching up with the leader: %v", err)
	}
	view := n.fsm.State().Snapshot()
	meta.Index = view.Index()
	return view, meta, nil
}

// readIndex returns the index a linearizable read must wait for.
func (n *Node) readIndex(ctx context.Context) (uint64, error) {
	deadline := time.Now().Add(n.cfg.LeaderWait)
	for {
		if n.raft.State() == raft.Leader {
			idx, err := n.localReadIndex(ctx)
			if !errors.Is(err, errNotLeader) || time.Now().After(deadline) {
				return idx, err
			}
			continue
		}
		leader, err := n.leaderHTTP(ctx)
		if err != nil {
			return 0, err
		}
		if leader == n.httpAddr {
			time.Sleep(5 * time.Millisecond) // elected while we looked
			continue
		}
		resp, err := n.peers.client(leader).ReadIndex(ctx, &droverv1.ReadIndexRequest{})
		if err == nil {
			return resp.GetIndex(), nil
		}
		if time.Now().After(deadline) {
			return 0, unavailable("asking the leader (%s) for a read index failed: %v", leader, err)
		}
		select {
		case <-ctx.Done():
			return 0, connectError(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// localReadIndex confirms this node's leadership and returns its applied
// index. A new leader waits until its barrier has applied every earlier
// entry.
func (n *Node) localReadIndex(ctx context.Context) (uint64, error) {
	deadline := time.Now().Add(n.cfg.LeaderWait)
	for !n.leaderReady.Load() {
		if n.raft.State() != raft.Leader {
			return 0, errNotLeader
		}
		if time.Now().After(deadline) {
			return 0, unavailable("the new leader is still catching up; retry")
		}
		select {
		case <-ctx.Done():
			return 0, connectError(ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return 0, errNotLeader
	}
	return n.fsm.AppliedIndex(), nil
}
