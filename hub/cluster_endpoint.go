package hub

import (
	"context"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect/v2"
	"github.com/hashicorp/raft"

	"github.com/droverhq/drover/hub/state"
	"github.com/droverhq/drover/internal/buildinfo"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// clusterService implements drover.v1.ClusterService.
type clusterService struct {
	droverv1connect.UnimplementedClusterServiceHandler
	n *Node
}

// GetClusterStatus answers from this node's view of the membership, asking
// every other member for its own indexes (unreachable ones are marked so).
func (s *clusterService) GetClusterStatus(ctx context.Context, req *droverv1.GetClusterStatusRequest) (*droverv1.GetClusterStatusResponse, error) {
	n := s.n
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, unavailable("reading the raft configuration: %v", err)
	}
	view := n.fsm.State().Snapshot()
	_, leaderID := n.raft.LeaderWithID()
	resp := &droverv1.GetClusterStatusResponse{
		ClusterId:   view.ClusterMeta().GetClusterId(),
		Leader:      string(leaderID),
		ServedBy:    n.cfg.NodeName,
		CommitIndex: n.raft.CommitIndex(),
		Meta:        &droverv1.ReadMeta{Index: view.Index(), Stale: true, KnownLeader: leaderID != "", ServedBy: n.cfg.NodeName},
	}
	servers := f.Configuration().Servers
	members := make([]*droverv1.Member, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		rec := view.Node(string(srv.ID))
		m := &droverv1.Member{
			Name:        string(srv.ID),
			RaftAddress: string(srv.Address),
			HttpAddress: rec.GetHttpAddress(),
			Voter:       srv.Suffrage == raft.Voter,
			Version:     rec.GetVersion(),
		}
		members[i] = m
		if srv.ID == raft.ServerID(n.cfg.NodeName) {
			fill(m, n.selfInfo(req.GetVerify()))
			continue
		}
		if m.HttpAddress == "" {
			m.Role, m.Error = droverv1.MemberRole_MEMBER_ROLE_UNREACHABLE, "its HTTP address is not known yet"
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			info, err := n.peers.client(m.HttpAddress).NodeInfo(cctx, &droverv1.NodeInfoRequest{WithStateDigest: req.GetVerify()})
			if err != nil {
				m.Role, m.Error = droverv1.MemberRole_MEMBER_ROLE_UNREACHABLE, err.Error()
				return
			}
			fill(m, info.GetMember())
		})
	}
	wg.Wait()
	resp.Members = members
	return resp, nil
}

func fill(m, info *droverv1.Member) {
	m.Role = info.GetRole()
	m.LastIndex = info.GetLastIndex()
	m.AppliedIndex = info.GetAppliedIndex()
	m.Term = info.GetTerm()
	m.Version = info.GetVersion()
	m.StateDigest = info.GetStateDigest()
	if !m.Voter && m.Role == droverv1.MemberRole_MEMBER_ROLE_FOLLOWER {
		m.Role = droverv1.MemberRole_MEMBER_ROLE_NONVOTER
	}
}

// selfInfo is this node's own view of itself, with a digest of its state
// if asked.
func (n *Node) selfInfo(withDigest bool) *droverv1.Member {
	role := droverv1.MemberRole_MEMBER_ROLE_FOLLOWER
	switch n.raft.State() {
	case raft.Leader:
		role = droverv1.MemberRole_MEMBER_ROLE_LEADER
	case raft.Candidate:
		role = droverv1.MemberRole_MEMBER_ROLE_CANDIDATE
	}
	m := &droverv1.Member{
		Name:         n.cfg.NodeName,
		RaftAddress:  n.raftAddr,
		HttpAddress:  n.httpAddr,
		Role:         role,
		LastIndex:    n.raft.LastIndex(),
		AppliedIndex: n.fsm.AppliedIndex(),
		Term:         n.raft.CurrentTerm(),
		Version:      buildinfo.Get().Version,
	}
	if withDigest {
		idx, d, err := n.fsm.Digest()
		if err != nil {
			m.Error = "state digest: " + err.Error()
		} else {
			m.AppliedIndex, m.StateDigest = idx, d.String()
		}
	}
	return m
}

func (s *clusterService) RemoveNode(ctx context.Context, req *droverv1.RemoveNodeRequest) (*droverv1.RemoveNodeResponse, error) {
	if err := state.ValidateName("node name", req.GetName()); err != nil {
		return nil, err
	}
	if err := s.n.removeMember(ctx, req.GetName(), principalFrom(ctx).Actor()); err != nil {
		return nil, err
	}
	return &droverv1.RemoveNodeResponse{}, nil
}

// removeMember takes a node out of the Raft configuration and forgets its
// record, on the leader (forwarding there if need be).
func (n *Node) removeMember(ctx context.Context, name string, actor *droverv1.Actor) error {
	if n.raft.State() != raft.Leader {
		leader, err := n.leaderHTTP(ctx)
		if err != nil {
			return err
		}
		if leader != n.httpAddr {
			if _, err := n.peers.client(leader).RemoveMember(ctx, &droverv1.RemoveMemberRequest{Name: name, Actor: actor}); err != nil {
				return relay(err)
			}
			return nil
		}
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return unavailable("reading the raft configuration: %v", err)
	}
	servers := f.Configuration().Servers
	i := slices.IndexFunc(servers, func(s raft.Server) bool { return s.ID == raft.ServerID(name) })
	if i < 0 && n.fsm.State().Snapshot().Node(name) == nil {
		return state.NotFoundf("no member named %q", name)
	}
	if i >= 0 {
		if len(servers) == 1 {
			return state.Preconditionf("%q is the only member; a cluster cannot remove its last node", name)
		}
		if err := n.raft.RemoveServer(raft.ServerID(name), 0, n.cfg.ApplyTimeout).Error(); err != nil {
			return unavailable("removing %q from the raft configuration: %v", name, err)
		}
		n.logger.Info("removed a member from the cluster", "member", name)
	}
	// The leader may have removed itself: apply forwards to the new one.
	_, _, err := n.apply(ctx, &fsmv1.NodeRemove{Header: &fsmv1.Header{Actor: actor, Time: now(n)}, Name: name})
	return err
}

// relay re-creates an error received from a peer as this node's own, since
// Connect will not pass a remote error through a handler unchanged.
func relay(err error) error {
	if ce, ok := err.(*connect.Error); ok {
		return connect.NewError(ce.Code(), ce.Message())
	}
	return unavailable("%v", err)
}
