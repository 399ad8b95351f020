package hub_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/hub"
	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/internal/digest"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// control returns an AgentControlService client with the given token for
// the given node.
func control(addr, token string) droverv1connect.AgentControlServiceClient {
	return droverv1connect.NewAgentControlServiceClient(connect.NewClient(
		connecthttp.NewTransport(client.NewHTTPClient(), client.BaseURL(addr)),
		client.Bearer(func() string { return token })))
}

func pushVersion(t *testing.T, cl *client.Client, model string, content string) uint64 {
	t.Helper()
	art := []byte(content)
	up, err := cl.Upload(t.Context(), bytes.NewReader(art), int64(len(art)), digest.FromBytes(art), nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := cl.Models.CreateVersion(t.Context(), &droverv1.CreateVersionRequest{Model: model, CreateModel: true, Artifact: up.BlobRef(), Format: "onnx"})
	if err != nil {
		t.Fatal(err)
	}
	return v.GetVersion().GetVersion()
}

func TestAgentEnrolmentAndControl(t *testing.T) {
	c := hubtest.StartCluster(t, 3, hubtest.Options{Configure: func(_ int, cfg *hub.Config) {
		cfg.AgentTimeout = time.Second
	}})
	ctx := t.Context()
	admin := c.Client()
	leader := c.Leader()
	follower := c.Nodes[(leader+1)%3].HTTPAddr()
	join, err := admin.Tokens.CreateToken(ctx, &droverv1.CreateTokenRequest{Role: droverv1.Role_ROLE_AGENT, Name: "fleet join"})
	if err != nil {
		t.Fatal(err)
	}

	// Enrol through a follower; the credential works at once on any node.
	en, err := control(follower, join.GetSecret()).Enroll(ctx, &droverv1.EnrollRequest{
		Name: "gpu-1", Labels: map[string]string{"site": "lab"}, Version: "dev",
		Inventory: &droverv1.Inventory{Gpus: []*droverv1.Gpu{{Index: 0, Uuid: "GPU-x", Name: "H100"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	me := control(c.Nodes[(leader+2)%3].HTTPAddr(), en.GetToken())
	if _, err := me.Heartbeat(ctx, &droverv1.HeartbeatRequest{AgentId: en.GetAgentId()}); err != nil {
		t.Fatalf("heartbeat with the new credential: %v", err)
	}
	// The join token may enrol but not act for an agent; a credential speaks
	// for its own agent only.
	_, err = control(follower, join.GetSecret()).Heartbeat(ctx, &droverv1.HeartbeatRequest{AgentId: en.GetAgentId()})
	wantCode(t, "join token acting for an agent", err, connect.CodePermissionDenied)
	_, err = me.Heartbeat(ctx, &droverv1.HeartbeatRequest{AgentId: "a-other"})
	wantCode(t, "credential acting for another agent", err, connect.CodePermissionDenied)
	_, err = control(follower, join.GetSecret()).Report(ctx, &droverv1.ReportRequest{AgentId: ""})
	wantCode(t, "join token reporting for no agent", err, connect.CodeInvalidArgument)
	// An agent's credential may not enrol: by another agent's name it
	// would take that agent over.
	if _, err := control(follower, join.GetSecret()).Enroll(ctx, &droverv1.EnrollRequest{Name: "gpu-2"}); err != nil {
		t.Fatal(err)
	}
	_, err = me.Enroll(ctx, &droverv1.EnrollRequest{Name: "gpu-2"})
	wantCode(t, "an agent's credential enrolling", err, connect.CodePermissionDenied)
	_, err = me.Enroll(ctx, &droverv1.EnrollRequest{Name: "gpu-new"})
	wantCode(t, "an agent's credential enrolling a new agent", err, connect.CodePermissionDenied)
	// Nor does an admin's token, which the agent would keep on disk.
	_, err = control(follower, c.AdminToken).Enroll(ctx, &droverv1.EnrollRequest{Name: "gpu-new"})
	wantCode(t, "an admin token enrolling", err, connect.CodePermissionDenied)

	// The desired state reaches a watching agent quickly after a change.
	v1 := pushVersion(t, admin, "churn", "model v1")
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := me.WatchDesired(wctx, &droverv1.WatchDesiredRequest{AgentId: en.GetAgentId()})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Receive()
	if err != nil || len(first.GetDesired().GetAssignments()) != 0 {
		t.Fatalf("first desired state: %v %v", first, err)
	}
	start := time.Now()
	if _, err := admin.Agents.SetAssignment(ctx, &droverv1.SetAssignmentRequest{Agent: "gpu-1", Model: "churn", Version: v1}); err != nil {
		t.Fatal(err)
	}
	next, err := stream.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if got := next.GetDesired().GetAssignments(); len(got) != 1 || got[0].GetVersion() != v1 || got[0].GetArtifact().GetDigest() == "" {
		t.Fatalf("desired after assignment: %v", next)
	}
	t.Logf("assignment reached the watching agent in %v", time.Since(start))

	// Reports: acknowledged in order, repeats ignored.
	rep := func(seq uint64, phase droverv1.AssignmentPhase) *droverv1.Report {
		return &droverv1.Report{Seq: seq, Time: timestamppb.Now(), Body: &droverv1.Report_Assignment{Assignment: &droverv1.AssignmentStatus{
			Model: "churn", Version: v1, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY, Phase: phase}}}
	}
	ack, err := me.Report(ctx, &droverv1.ReportRequest{AgentId: en.GetAgentId(), Reports: []*droverv1.Report{
		rep(1, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_DOWNLOADING), rep(2, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY),
		{Seq: 3, Body: &droverv1.Report_Telemetry{Telemetry: &droverv1.TelemetryWindow{Gpus: []*droverv1.GpuWindow{{Index: 0, Samples: 6, TemperatureCMax: 51}}}}},
	}})
	if err != nil || ack.GetAckedSeq() != 3 {
		t.Fatalf("report: %v %v", ack, err)
	}
	ack, err = me.Report(ctx, &droverv1.ReportRequest{AgentId: en.GetAgentId(), Reports: []*droverv1.Report{rep(2, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_FAILED)}})
	if err != nil || ack.GetAckedSeq() != 3 {
		t.Fatalf("repeated report: %v %v", ack, err)
	}
	got, err := admin.Agents.GetAgent(ctx, &droverv1.GetAgentRequest{Agent: "gpu-1"})
	if err != nil {
		t.Fatal(err)
	}
	a := got.GetAgent()
	if a.GetLastReportSeq() != 3 || len(a.GetAssignmentStatuses()) != 1 || a.GetAssignmentStatuses()[0].GetPhase() != droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY {
		t.Fatalf("agent after reports: %v", a)
	}
	if len(got.GetTelemetry()) != 1 || got.GetTelemetry()[0].GetGpus()[0].GetTemperatureCMax() != 51 {
		t.Fatalf("telemetry: %v", got.GetTelemetry())
	}
	if len(got.GetDesired().GetAssignments()) != 1 {
		t.Fatalf("desired in GetAgent: %v", got.GetDesired())
	}

	// Liveness: no heartbeats, marked down; heartbeats again, ready.
	waitStatus := func(want droverv1.AgentStatus) {
		t.Helper()
		hubtest.WaitFor(t, 10*time.Second, func() error {
			r, err := admin.Agents.GetAgent(ctx, &droverv1.GetAgentRequest{Agent: "gpu-1"})
			if err != nil {
				return err
			}
			if s := r.GetAgent().GetStatus(); s != want {
				if want == droverv1.AgentStatus_AGENT_STATUS_READY {
					_, _ = me.Heartbeat(ctx, &droverv1.HeartbeatRequest{AgentId: en.GetAgentId()})
				}
				return fmt.Errorf("status %v, want %v", s, want)
			}
			return nil
		})
	}
	waitStatus(droverv1.AgentStatus_AGENT_STATUS_DOWN)
	waitStatus(droverv1.AgentStatus_AGENT_STATUS_READY)

	// Labels, drain and listing by selector.
	if _, err := admin.Agents.SetAgentLabels(ctx, &droverv1.SetAgentLabelsRequest{Agent: "gpu-1", Set: map[string]string{"tier": "gold"}}); err != nil {
		t.Fatal(err)
	}
	list, err := admin.Agents.ListAgents(ctx, &droverv1.ListAgentsRequest{Selector: map[string]string{"site": "lab", "tier": "gold"}})
	if err != nil || len(list.GetAgents()) != 1 {
		t.Fatalf("list by selector: %v %v", list, err)
	}
	if _, err := admin.Agents.DrainAgent(ctx, &droverv1.DrainAgentRequest{Agent: "gpu-1", Reason: "maintenance"}); err != nil {
		t.Fatal(err)
	}
	drained, err := stream.Receive()
	if err != nil || !drained.GetDesired().GetDraining() || len(drained.GetDesired().GetAssignments()) != 0 {
		t.Fatalf("desired while draining: %v %v", drained, err)
	}
	_, err = admin.Agents.SetAssignment(ctx, &droverv1.SetAssignmentRequest{Agent: "nope", Model: "churn", Version: v1})
	wantCode(t, "assign to an unknown agent", err, connect.CodeNotFound)
}
