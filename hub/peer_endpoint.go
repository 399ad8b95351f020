package hub

import (
	"context"
	"errors"

	"connectrpc.com/connect/v2"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/hub/fsm"
	"github.com/droverhq/drover/hub/state"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// peerService implements drover.v1.PeerService, spoken between nodes.
type peerService struct {
	droverv1connect.UnimplementedPeerServiceHandler
	n *Node
}

// notLeader is how a node tells a peer that it is not the leader and did
// nothing; the peer may retry elsewhere.
func notLeader() error {
	return connect.NewError(connect.CodeFailedPrecondition, "not the leader")
}

func now(n *Node) *timestamppb.Timestamp { return timestamppb.New(n.now()) }

func (s *peerService) Join(ctx context.Context, req *droverv1.JoinRequest) (*droverv1.JoinResponse, error) {
	n := s.n
	if err := state.ValidateName("node name", req.GetName()); err != nil {
		return nil, err
	}
	if req.GetRaftAddress() == "" || req.GetHttpAddress() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, "a joining node must give its raft and HTTP addresses")
	}
	if n.raft.State() != raft.Leader {
		leader, err := n.leaderHTTP(ctx)
		if err != nil {
			return nil, err
		}
		if leader != n.httpAddr {
			resp, err := n.peers.client(leader).Join(ctx, req)
			if err != nil {
				return nil, relay(err)
			}
			return resp, nil
		}
	}
	if err := n.addMember(ctx, req); err != nil {
		return nil, err
	}
	return &droverv1.JoinResponse{ClusterId: n.fsm.State().Snapshot().ClusterMeta().GetClusterId()}, nil
}

// addMember adds or updates a voter and records its addresses. Joining
// again with the same name and address changes nothing.
func (n *Node) addMember(ctx context.Context, req *droverv1.JoinRequest) error {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return unavailable("reading the raft configuration: %v", err)
	}
	id, addr := raft.ServerID(req.GetName()), raft.ServerAddress(req.GetRaftAddress())
	member := false
	for _, srv := range f.Configuration().Servers {
		switch {
		case srv.ID == id && srv.Address == addr:
			member = true
		case srv.ID != id && srv.Address == addr:
			// Another name at this address: a node rebuilt under a new name.
			n.logger.Info("removing a member whose address a new node has taken", "old", srv.ID, "new", id, "address", addr)
			if err := n.raft.RemoveServer(srv.ID, 0, n.cfg.ApplyTimeout).Error(); err != nil {
				return unavailable("removing %q: %v", srv.ID, err)
			}
			// Its record goes too, or the cluster status would list it
			// for ever; a retry of the join finds it gone from Raft and
			// removes nothing more.
			if _, _, err := n.apply(ctx, &fsmv1.NodeRemove{Header: n.header(ctx, "its address was taken by "+req.GetName()), Name: string(srv.ID)}); err != nil && state.KindOf(err) != state.KindNotFound {
				return err
			}
		}
	}
	if !member {
		if err := n.raft.AddVoter(id, addr, 0, n.cfg.ApplyTimeout).Error(); err != nil {
			if errors.Is(err, raft.ErrNotLeader) {
				return unavailable("this node lost its leadership while adding %q; retry", id)
			}
			return unavailable("adding %q to the raft configuration: %v", id, err)
		}
		n.logger.Info("added a member to the cluster", "member", id, "raft", addr, "http", req.GetHttpAddress())
	}
	_, _, err := n.apply(ctx, &fsmv1.NodeUpsert{
		Header: n.header(ctx, ""),
		Node:   &fsmv1.Node{Name: req.GetName(), RaftAddress: req.GetRaftAddress(), HttpAddress: req.GetHttpAddress(), Version: req.GetVersion()},
	})
	return err
}

func (s *peerService) RemoveMember(ctx context.Context, req *droverv1.RemoveMemberRequest) (*droverv1.RemoveMemberResponse, error) {
	if err := s.n.removeMember(ctx, req.GetName(), req.GetActor()); err != nil {
		return nil, err
	}
	return &droverv1.RemoveMemberResponse{}, nil
}

// Apply commits a command a follower forwarded. A refusal by the state is a
// result, not an RPC error; FailedPrecondition means "not the leader, nothing
// applied".
func (s *peerService) Apply(_ context.Context, req *droverv1.ApplyRequest) (*droverv1.ApplyResponse, error) {
	n := s.n
	if n.raft.State() != raft.Leader {
		return nil, notLeader()
	}
	typ, body, err := fsm.Decode(req.GetCommand())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err.Error())
	}
	// The command's time is the leader's, not the follower's that made it:
	// the controllers measure deadlines from the times the state records,
	// by the leader's clock.
	if body.GetHeader() == nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, "fsm: a forwarded command has no header")
	}
	body.GetHeader().Time = now(n)
	data, err := fsm.Encode(body)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err.Error())
	}
	data[0] = byte(typ) // as the follower sent it, the flag bit included
	v, idx, err := n.applyData(data)
	resp := &droverv1.ApplyResponse{Index: idx}
	if se, ok := errors.AsType[*state.Error](err); ok {
		resp.Error = &droverv1.CommandError{Code: se.Kind.String(), Message: se.Message}
		return resp, nil
	}
	if errors.Is(err, errNotLeader) {
		return nil, notLeader()
	}
	if err != nil {
		return nil, err
	}
	if resp.Result, err = proto.Marshal(v); err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *peerService) ReadIndex(ctx context.Context, _ *droverv1.ReadIndexRequest) (*droverv1.ReadIndexResponse, error) {
	if s.n.raft.State() != raft.Leader {
		return nil, notLeader()
	}
	idx, err := s.n.localReadIndex(ctx)
	if errors.Is(err, errNotLeader) {
		return nil, notLeader()
	}
	if err != nil {
		return nil, err
	}
	return &droverv1.ReadIndexResponse{Index: idx}, nil
}

func (s *peerService) NodeInfo(_ context.Context, req *droverv1.NodeInfoRequest) (*droverv1.NodeInfoResponse, error) {
	_, leader := s.n.raft.LeaderWithID()
	return &droverv1.NodeInfoResponse{
		Member:    s.n.selfInfo(req.GetWithStateDigest()),
		Leader:    string(leader),
		ClusterId: s.n.fsm.State().Snapshot().ClusterMeta().GetClusterId(),
	}, nil
}

func (s *peerService) ReplicateBlob(ctx context.Context, req *droverv1.ReplicateBlobRequest) (*droverv1.ReplicateBlobResponse, error) {
	if err := state.ValidateBlobRef("blob", req.GetBlob()); err != nil {
		return nil, err
	}
	if err := s.n.pullBlob(ctx, req.GetBlob(), req.GetSources()); err != nil {
		return nil, err
	}
	return &droverv1.ReplicateBlobResponse{}, nil
}

func (s *peerService) AgentHeartbeats(_ context.Context, req *droverv1.AgentHeartbeatsRequest) (*droverv1.AgentHeartbeatsResponse, error) {
	if s.n.raft.State() != raft.Leader {
		return nil, notLeader()
	}
	s.n.liveness.mark(req.GetAgentIds())
	return &droverv1.AgentHeartbeatsResponse{}, nil
}

func (s *peerService) AgentReport(ctx context.Context, req *droverv1.AgentReportRequest) (*droverv1.AgentReportResponse, error) {
	if s.n.raft.State() != raft.Leader {
		return nil, notLeader()
	}
	resp, err := s.n.takeReports(ctx, req.GetRequest())
	if err != nil {
		return nil, err
	}
	return &droverv1.AgentReportResponse{Response: resp}, nil
}

func (s *peerService) AgentTelemetry(_ context.Context, req *droverv1.AgentTelemetryRequest) (*droverv1.AgentTelemetryResponse, error) {
	if s.n.raft.State() != raft.Leader {
		return nil, notLeader()
	}
	return &droverv1.AgentTelemetryResponse{Windows: s.n.telemetry.get(req.GetAgentId())}, nil
}
