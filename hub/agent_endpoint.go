package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect/v2"
	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/hub/auth"
	"github.com/droverhq/drover/hub/state"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// agentEventsShown is how many events GetAgent returns.
const agentEventsShown = 50

// agentService implements drover.v1.AgentService, the operator's view.
type agentService struct {
	droverv1connect.UnimplementedAgentServiceHandler
	n *Node
}

func (s *agentService) ListAgents(ctx context.Context, req *droverv1.ListAgentsRequest) (*droverv1.ListAgentsResponse, error) {
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	return &droverv1.ListAgentsResponse{Agents: view.Agents(req.GetSelector()), Meta: meta}, nil
}

func (s *agentService) GetAgent(ctx context.Context, req *droverv1.GetAgentRequest) (*droverv1.GetAgentResponse, error) {
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	a := view.Agent(req.GetAgent())
	if a == nil {
		return nil, state.NotFoundf("no agent with id or name %q", req.GetAgent())
	}
	desired, err := view.DesiredState(a.GetId(), memdb.NewWatchSet())
	if err != nil {
		return nil, err
	}
	return &droverv1.GetAgentResponse{
		Agent:     a,
		Events:    view.AgentEvents(a.GetId(), agentEventsShown),
		Desired:   desired,
		Meta:      meta,
		Telemetry: s.n.agentTelemetry(ctx, a.GetId()),
	}, nil
}

// agentTelemetry returns an agent's telemetry windows from the leader's
// memory, asking the leader if need be. Best effort: none on failure.
func (n *Node) agentTelemetry(ctx context.Context, agentID string) []*droverv1.TelemetryWindow {
	if n.raft.State() == raft.Leader {
		return n.telemetry.get(agentID)
	}
	_, id := n.raft.LeaderWithID()
	rec := n.fsm.State().Snapshot().Node(string(id))
	if rec == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := n.peers.client(rec.GetHttpAddress()).AgentTelemetry(ctx, &droverv1.AgentTelemetryRequest{AgentId: agentID})
	if err != nil {
		return nil
	}
	return resp.GetWindows()
}

// agentID resolves an id or name to an agent id from this node's state.
func (n *Node) agentID(ref string) (string, error) {
	a := n.fsm.State().Snapshot().Agent(ref)
	if a == nil {
		return "", state.NotFoundf("no agent with id or name %q", ref)
	}
	return a.GetId(), nil
}

func (s *agentService) SetAgentLabels(ctx context.Context, req *droverv1.SetAgentLabelsRequest) (*droverv1.SetAgentLabelsResponse, error) {
	if err := state.ValidateLabels("labels", req.GetSet()); err != nil {
		return nil, err
	}
	id, err := s.n.agentID(req.GetAgent())
	if err != nil {
		return nil, err
	}
	v, _, err := s.n.apply(ctx, &fsmv1.AgentLabelsSet{Header: s.n.header(ctx, ""), AgentId: id, Set: req.GetSet(), Remove: req.GetRemove()})
	if err != nil {
		return nil, err
	}
	return &droverv1.SetAgentLabelsResponse{Agent: v.(*droverv1.Agent)}, nil
}

func (s *agentService) DrainAgent(ctx context.Context, req *droverv1.DrainAgentRequest) (*droverv1.DrainAgentResponse, error) {
	if err := state.ValidateText("reason", req.GetReason(), state.MaxReasonLen); err != nil {
		return nil, err
	}
	id, err := s.n.agentID(req.GetAgent())
	if err != nil {
		return nil, err
	}
	v, _, err := s.n.apply(ctx, &fsmv1.AgentDrain{Header: s.n.header(ctx, req.GetReason()), AgentId: id, Undo: req.GetUndo()})
	if err != nil {
		return nil, err
	}
	return &droverv1.DrainAgentResponse{Agent: v.(*droverv1.Agent)}, nil
}

func (s *agentService) SetAssignment(ctx context.Context, req *droverv1.SetAssignmentRequest) (*droverv1.SetAssignmentResponse, error) {
	as := &droverv1.Assignment{Model: req.GetModel(), Version: req.GetVersion(), Alias: req.GetAlias(), Role: req.GetRole(), Weight: req.GetWeight(), Reason: req.GetReason()}
	if as.Role == droverv1.AssignmentRole_ASSIGNMENT_ROLE_UNSPECIFIED {
		as.Role = droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY
	}
	if err := state.ValidateAssignment(as); err != nil {
		return nil, err
	}
	id, err := s.n.agentID(req.GetAgent())
	if err != nil {
		return nil, err
	}
	v, _, err := s.n.apply(ctx, &fsmv1.AssignmentSet{Header: s.n.header(ctx, req.GetReason()), AgentId: id, Assignment: as})
	if err != nil {
		return nil, err
	}
	return &droverv1.SetAssignmentResponse{Agent: v.(*droverv1.Agent)}, nil
}

func (s *agentService) DeleteAssignment(ctx context.Context, req *droverv1.DeleteAssignmentRequest) (*droverv1.DeleteAssignmentResponse, error) {
	if err := state.ValidateText("reason", req.GetReason(), state.MaxReasonLen); err != nil {
		return nil, err
	}
	role := req.GetRole()
	if role == droverv1.AssignmentRole_ASSIGNMENT_ROLE_UNSPECIFIED {
		role = droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY
	}
	id, err := s.n.agentID(req.GetAgent())
	if err != nil {
		return nil, err
	}
	v, _, err := s.n.apply(ctx, &fsmv1.AssignmentDelete{Header: s.n.header(ctx, req.GetReason()), AgentId: id, Model: req.GetModel(), Role: role})
	if err != nil {
		return nil, err
	}
	return &droverv1.DeleteAssignmentResponse{Agent: v.(*droverv1.Agent)}, nil
}

func (s *agentService) RemoveAgent(ctx context.Context, req *droverv1.RemoveAgentRequest) (*droverv1.RemoveAgentResponse, error) {
	if err := state.ValidateText("reason", req.GetReason(), state.MaxReasonLen); err != nil {
		return nil, err
	}
	id, err := s.n.agentID(req.GetAgent())
	if err != nil {
		return nil, err
	}
	v, _, err := s.n.apply(ctx, &fsmv1.AgentRemove{Header: s.n.header(ctx, req.GetReason()), AgentId: id, Force: req.GetForce()})
	if err != nil {
		return nil, err
	}
	s.n.liveness.forget(id)
	return &droverv1.RemoveAgentResponse{Agent: v.(*droverv1.Agent)}, nil
}

// agentControlService implements drover.v1.AgentControlService, for agents.
type agentControlService struct {
	droverv1connect.UnimplementedAgentControlServiceHandler
	n *Node
}

// checkAgent refuses a call about an agent from a credential bound to
// another. Admins and peers may act for any agent.
func checkAgent(ctx context.Context, agentID string) error {
	if agentID == "" {
		// An unbound join token would otherwise pass as "bound to no agent".
		return connect.NewError(connect.CodeInvalidArgument, "agent_id is required")
	}
	p := principalFrom(ctx)
	if p.IsPeer || p.Token.GetRole() == droverv1.Role_ROLE_ADMIN {
		return nil
	}
	if bound := p.Token.GetAgentId(); bound != agentID {
		if bound == "" {
			return connect.NewError(connect.CodePermissionDenied, "this token may enrol agents but not act for one: use the credential Enroll returned")
		}
		return connect.NewError(connect.CodePermissionDenied, "this credential speaks for agent "+bound+", not "+agentID)
	}
	return nil
}

// Enroll takes a join token only: an agent's own credential may not enrol,
// or it could take over another agent by its name; nor may an admin's
// token, which the agent would keep on disk, on every machine.
func (s *agentControlService) Enroll(ctx context.Context, req *droverv1.EnrollRequest) (*droverv1.EnrollResponse, error) {
	tok := principalFrom(ctx).Token
	switch {
	case tok.GetAgentId() != "":
		return nil, connect.NewError(connect.CodePermissionDenied, "this credential speaks for agent "+tok.GetAgentId()+" and may not enrol agents: enrol with a join token (drover tokens create --role agent)")
	case tok.GetRole() != droverv1.Role_ROLE_AGENT:
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Sprintf("token %s has the %s role: enrol with a join token (drover tokens create --role agent); an agent keeps its join token on disk", tok.GetId(), auth.RoleName(tok.GetRole())))
	}
	if err := state.ValidateName("agent name", req.GetName()); err != nil {
		return nil, err
	}
	if err := state.ValidateLabels("labels", req.GetLabels()); err != nil {
		return nil, err
	}
	h := s.n.header(ctx, "")
	tokenID, secret := auth.NewSecret()
	cmd := &fsmv1.AgentEnroll{
		Header: h,
		Agent: &droverv1.Agent{
			Id: "a-" + auth.RandomString(6), Name: req.GetName(), ReportedLabels: req.GetLabels(),
			Inventory: req.GetInventory(), Version: req.GetVersion(),
		},
		Token: &fsmv1.TokenRecord{
			Token:      &droverv1.Token{Id: tokenID, Name: "agent " + req.GetName(), Role: droverv1.Role_ROLE_AGENT, CreatedBy: h.GetActor(), CreateTime: h.GetTime()},
			SecretHash: auth.Hash(secret),
		},
	}
	v, _, err := s.n.apply(ctx, cmd)
	if err != nil {
		return nil, err
	}
	a := v.(*droverv1.Agent)
	s.n.liveness.heard(a.GetId(), s.n.raft.State() == raft.Leader)
	return &droverv1.EnrollResponse{AgentId: a.GetId(), Token: secret, LastReportSeq: a.GetLastReportSeq()}, nil
}

func (s *agentControlService) Heartbeat(ctx context.Context, req *droverv1.HeartbeatRequest) (*droverv1.HeartbeatResponse, error) {
	if err := checkAgent(ctx, req.GetAgentId()); err != nil {
		return nil, err
	}
	d, err := s.n.fsm.State().Snapshot().DesiredState(req.GetAgentId(), memdb.NewWatchSet())
	if err != nil {
		return nil, err
	}
	s.n.liveness.heard(req.GetAgentId(), s.n.raft.State() == raft.Leader)
	return &droverv1.HeartbeatResponse{DesiredFingerprint: d.GetFingerprint()}, nil
}

// desiredKeepalive is how often WatchDesired resends an unchanged state,
// so that an agent can tell a quiet stream from a dead one.
const desiredKeepalive = 15 * time.Second

// WatchDesired streams an agent's desired state from this node's state:
// staleness is harmless here (the agent converges on the next change), and
// it spreads the fleet's streams over every node.
func (s *agentControlService) WatchDesired(ctx context.Context, req *droverv1.WatchDesiredRequest, stream droverv1connect.AgentControlServiceWatchDesiredServerStream) error {
	if err := checkAgent(ctx, req.GetAgentId()); err != nil {
		return err
	}
	n := s.n
	lastSent := ""
	keepalive := time.Now().Add(desiredKeepalive)
	for {
		store := n.fsm.State()
		view := store.Snapshot()
		ws := memdb.NewWatchSet()
		ws.Add(store.AbandonCh())
		d, err := view.DesiredState(req.GetAgentId(), ws)
		if err != nil {
			return err
		}
		if d.GetFingerprint() != lastSent || !time.Now().Before(keepalive) {
			if err := stream.Send(&droverv1.WatchDesiredResponse{Desired: d, Meta: &droverv1.ReadMeta{Index: view.Index(), Stale: true, ServedBy: n.cfg.NodeName}}); err != nil {
				return err
			}
			lastSent = d.GetFingerprint()
			keepalive = time.Now().Add(desiredKeepalive)
		}
		wctx, cancel := context.WithDeadline(ctx, keepalive)
		stop := context.AfterFunc(n.streams, cancel)
		err = ws.WatchCtx(wctx)
		stop()
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case n.streams.Err() != nil:
			return unavailable("the node is shutting down")
		case errors.Is(err, context.DeadlineExceeded):
			// keepalive due
		}
	}
}

func (s *agentControlService) Report(ctx context.Context, req *droverv1.ReportRequest) (*droverv1.ReportResponse, error) {
	if err := checkAgent(ctx, req.GetAgentId()); err != nil {
		return nil, err
	}
	n := s.n
	if n.raft.State() == raft.Leader {
		return n.takeReports(ctx, req)
	}
	leader, err := n.leaderHTTP(ctx)
	if err != nil {
		return nil, err
	}
	if leader == n.httpAddr {
		return n.takeReports(ctx, req)
	}
	resp, err := n.peers.client(leader).AgentReport(ctx, &droverv1.AgentReportRequest{Request: req})
	if err != nil {
		return nil, relay(err)
	}
	return resp.GetResponse(), nil
}

// takeReports, on the leader, keeps an agent's telemetry and metric windows
// in memory and
// commits the rest through Raft, and returns what is now acknowledged.
func (n *Node) takeReports(ctx context.Context, req *droverv1.ReportRequest) (*droverv1.ReportResponse, error) {
	if len(req.GetReports()) == 0 {
		a := n.fsm.State().Snapshot().Agent(req.GetAgentId())
		return &droverv1.ReportResponse{AckedSeq: a.GetLastReportSeq()}, nil
	}
	reports := make([]*droverv1.Report, 0, len(req.GetReports()))
	for _, r := range req.GetReports() {
		if w := r.GetTelemetry(); w != nil {
			n.telemetry.add(req.GetAgentId(), r.GetSeq(), w)
			r = &droverv1.Report{Seq: r.GetSeq(), Time: r.GetTime()} // the sequence number counts
		}
		if w := r.GetMetrics(); w != nil {
			n.metricWindows.add(req.GetAgentId(), r.GetSeq(), w)
			r = &droverv1.Report{Seq: r.GetSeq(), Time: r.GetTime()}
		}
		reports = append(reports, r)
	}
	h := &fsmv1.Header{Actor: principalFrom(ctx).Actor(), Time: now(n)}
	cmd := &fsmv1.AgentReports{Header: h, AgentId: req.GetAgentId(), Reports: reports}
	if proto.Size(cmd) > maxMessageBytes/2 {
		return nil, connect.NewError(connect.CodeInvalidArgument, "report batch too large; send fewer reports at once")
	}
	v, _, err := n.apply(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return &droverv1.ReportResponse{AckedSeq: v.(*fsmv1.AgentReportsResult).GetAckedSeq()}, nil
}
