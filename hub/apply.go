package hub

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"connectrpc.com/connect/v2"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/hub/fsm"
	"github.com/droverhq/drover/hub/state"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// header stamps a command with its caller, the time and a reason.
func (n *Node) header(ctx context.Context, reason string) *fsmv1.Header {
	return &fsmv1.Header{Actor: principalFrom(ctx).Actor(), Time: timestamppb.New(n.now()), Reason: reason}
}

// apply commits a command through Raft and returns its result and index.
// On the leader it is applied directly; on a follower it is forwarded to
// the leader. A refusal by the state comes back as a *state.Error.
//
// A caller's reason is checked here, for every command at once; the hub's
// own controllers (no caller) compose theirs, which are cut to the limit.
func (n *Node) apply(ctx context.Context, body fsm.Command) (proto.Message, uint64, error) {
	if h := body.GetHeader(); len(h.GetReason()) > state.MaxReasonLen {
		if p := principalFrom(ctx); p.Token != nil || p.IsPeer {
			return nil, 0, state.ValidateText("reason", h.GetReason(), state.MaxReasonLen)
		}
		h.Reason = state.Clip(h.GetReason(), state.MaxReasonLen)
	}
	data, err := fsm.Encode(body)
	if err != nil {
		return nil, 0, err
	}
	// Retry, until LeaderWait has passed, whatever cannot have been applied:
	// a leader that stepped down before taking the write, or one that could
	// not be reached at all (it died, and no new one is known yet).
	deadline := time.Now().Add(n.cfg.LeaderWait)
	for {
		if n.raft.State() == raft.Leader {
			v, idx, err := n.applyData(data)
			if !errors.Is(err, errNotLeader) || time.Now().After(deadline) {
				return v, idx, err
			}
			continue
		}
		leader, err := n.leaderHTTP(ctx)
		if err != nil {
			return nil, 0, err
		}
		if leader == n.httpAddr {
			// Elected while we looked; Raft's state catches up in a moment.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		n.metrics.forwarded.Inc()
		resp, err := n.peers.client(leader).Apply(ctx, &droverv1.ApplyRequest{Command: data})
		if err == nil {
			return decodeApplyResponse(data, resp)
		}
		retriable := connect.CodeOf(err) == connect.CodeFailedPrecondition || errors.Is(err, syscall.ECONNREFUSED)
		if !retriable {
			return nil, 0, unavailable("forwarding the write to the leader (%s) failed, and it may or may not have been applied: %v", leader, err)
		}
		if time.Now().After(deadline) {
			return nil, 0, unavailable("the leader (%s) did not take the write within %v: %v", leader, n.cfg.LeaderWait, err)
		}
		select {
		case <-ctx.Done():
			return nil, 0, connectError(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// applyLocal applies a command on this node, which must be the leader.
func (n *Node) applyLocal(_ context.Context, body fsm.Command) (proto.Message, uint64, error) {
	data, err := fsm.Encode(body)
	if err != nil {
		return nil, 0, err
	}
	return n.applyData(data)
}

// applyData submits an encoded command to the local Raft as leader.
func (n *Node) applyData(data []byte) (proto.Message, uint64, error) {
	start := time.Now()
	f := n.raft.Apply(data, n.cfg.ApplyTimeout)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader):
			return nil, 0, errNotLeader
		case errors.Is(err, raft.ErrEnqueueTimeout):
			return nil, 0, unavailable("the write could not be queued within %v; the leader is overloaded", n.cfg.ApplyTimeout)
		case errors.Is(err, raft.ErrLeadershipLost):
			return nil, 0, unavailable("the leader lost its leadership while committing the write; it may or may not have been applied")
		case errors.Is(err, raft.ErrRaftShutdown):
			return nil, 0, unavailable("the node is shutting down")
		default:
			return nil, 0, fmt.Errorf("raft apply: %w", err)
		}
	}
	n.metrics.applyLatency.WithLabelValues(fsm.TypeName(fsm.MessageType(data[0]))).Observe(time.Since(start).Seconds())
	res, ok := f.Response().(*fsm.Result)
	if !ok {
		return nil, f.Index(), fmt.Errorf("raft apply: unexpected response %T", f.Response())
	}
	return res.Value, f.Index(), res.Err
}

// decodeApplyResponse turns a forwarded apply's answer back into a result
// or a state refusal.
func decodeApplyResponse(data []byte, resp *droverv1.ApplyResponse) (proto.Message, uint64, error) {
	if e := resp.GetError(); e != nil {
		kind, ok := state.ParseKind(e.GetCode())
		if !ok {
			return nil, resp.GetIndex(), fmt.Errorf("leader: %s: %s", e.GetCode(), e.GetMessage())
		}
		return nil, resp.GetIndex(), &state.Error{Kind: kind, Message: e.GetMessage()}
	}
	v, err := fsm.NewResult(fsm.MessageType(data[0]))
	if err != nil {
		return nil, resp.GetIndex(), err
	}
	if err := proto.Unmarshal(resp.GetResult(), v); err != nil {
		return nil, resp.GetIndex(), fmt.Errorf("decode forwarded result: %w", err)
	}
	return v, resp.GetIndex(), nil
}

// leaderHTTP returns the HTTP address of the current leader, waiting up to
// LeaderWait (or ctx) for one to be elected.
func (n *Node) leaderHTTP(ctx context.Context) (string, error) {
	deadline := time.Now().Add(n.cfg.LeaderWait)
	for {
		_, id := n.raft.LeaderWithID()
		if id == raft.ServerID(n.cfg.NodeName) {
			return n.httpAddr, nil
		}
		if id != "" {
			if rec := n.fsm.State().Snapshot().Node(string(id)); rec != nil {
				return rec.GetHttpAddress(), nil
			}
		}
		if time.Now().After(deadline) {
			if id != "" {
				return "", unavailable("the leader %s is not yet known to this node's state; retry", id)
			}
			return "", unavailable("no leader: %s has not heard from a leader since %s; the cluster may have lost its quorum",
				n.cfg.NodeName, lastContact(n.raft))
		}
		select {
		case <-ctx.Done():
			return "", connectError(ctx.Err())
		case <-n.ctx.Done():
			return "", unavailable("the node is shutting down")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func lastContact(r *raft.Raft) string {
	t := r.LastContact()
	if t.IsZero() {
		return "it started"
	}
	return fmt.Sprintf("%s ago", time.Since(t).Round(time.Millisecond))
}
