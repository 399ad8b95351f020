package sim

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/internal/digest"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

func TestFleet(t *testing.T) {
	c := hubtest.StartCluster(t, 1, hubtest.Options{})
	cl := c.Client()
	join, err := cl.Tokens.CreateToken(t.Context(), &droverv1.CreateTokenRequest{Role: droverv1.Role_ROLE_AGENT})
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{Hubs: []string{c.Nodes[0].HTTPAddr()}, JoinToken: join.GetSecret(), Agents: 20, Heartbeat: 200 * time.Millisecond,
		Labels: map[string]string{"sim": "yes"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Enroll(t.Context()); err != nil || f.Enrolled() != 20 {
		t.Fatalf("enrolled %d: %v", f.Enrolled(), err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	f.Run(ctx)
	s := f.Stats()
	if s.Heartbeats < 40 || s.Failures != 0 || s.DesiredMessages < 20 || s.P99 == 0 {
		t.Fatalf("stats = %+v", s)
	}
	list, err := cl.Agents.ListAgents(t.Context(), &droverv1.ListAgentsRequest{Selector: map[string]string{"sim": "yes"}})
	if err != nil || len(list.GetAgents()) != 20 {
		t.Fatalf("hub lists %d simulated agents: %v", len(list.GetAgents()), err)
	}
}

// pushVersion uploads a small artifact as the next version of model.
func pushVersion(t *testing.T, cl *client.Client, model, content string) uint64 {
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

// statusesOn waits until every agent with the label holds, at the hub,
// exactly the statuses want says (role → version, all READY and healthy).
func statusesOn(t *testing.T, cl *client.Client, agents int, want map[droverv1.AssignmentRole]uint64) []*droverv1.Agent {
	t.Helper()
	var list []*droverv1.Agent
	hubtest.WaitFor(t, 20*time.Second, func() error {
		resp, err := cl.Agents.ListAgents(t.Context(), &droverv1.ListAgentsRequest{Selector: map[string]string{"sim": "yes"}})
		if err != nil {
			return err
		}
		list = resp.GetAgents()
		if len(list) != agents {
			return fmt.Errorf("%d agents", len(list))
		}
		for _, a := range list {
			got := map[droverv1.AssignmentRole]uint64{}
			for _, st := range a.GetAssignmentStatuses() {
				if st.GetModel() != "m" || st.GetPhase() != droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY ||
					st.GetHealth() != droverv1.ServingHealth_SERVING_HEALTH_HEALTHY {
					return fmt.Errorf("%s: %v", a.GetName(), st)
				}
				got[st.GetRole()] = st.GetVersion()
			}
			if !maps.Equal(got, want) {
				return fmt.Errorf("%s: statuses %v, want %v", a.GetName(), got, want)
			}
		}
		return nil
	})
	return list
}

// TestFleetReportsAssignments checks that simulated agents report each new
// desired state's assignments ready, and removed slots removed, one batch
// per loaded change with consecutive sequence numbers, never twice; and
// that a load delay holds the report back.
func TestFleetReportsAssignments(t *testing.T) {
	c := hubtest.StartCluster(t, 1, hubtest.Options{})
	cl := c.Client()
	join, err := cl.Tokens.CreateToken(t.Context(), &droverv1.CreateTokenRequest{Role: droverv1.Role_ROLE_AGENT})
	if err != nil {
		t.Fatal(err)
	}
	v1 := pushVersion(t, cl, "m", "one")
	v2 := pushVersion(t, cl, "m", "two")
	const n = 10
	const delay = 300 * time.Millisecond
	f, err := New(Config{Hubs: []string{c.Nodes[0].HTTPAddr()}, JoinToken: join.GetSecret(), Agents: n, Heartbeat: time.Second,
		Labels: map[string]string{"sim": "yes"}, LoadDelay: delay})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Enroll(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	assign := func(role droverv1.AssignmentRole, v uint64, weight uint32) {
		t.Helper()
		for i := range n {
			if _, err := cl.Agents.SetAssignment(t.Context(), &droverv1.SetAssignmentRequest{Agent: fmt.Sprintf("sim-%05d", i), Model: "m",
				Version: v, Role: role, Weight: weight}); err != nil {
				t.Fatal(err)
			}
		}
	}
	primary, canary := droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY, droverv1.AssignmentRole_ASSIGNMENT_ROLE_CANARY

	start := time.Now()
	assign(primary, v1, 0)
	statusesOn(t, cl, n, map[droverv1.AssignmentRole]uint64{primary: v1})
	if took := time.Since(start); took < delay {
		t.Errorf("ready after %s, before the %s load delay", took, delay)
	}
	assign(canary, v2, 10)
	statusesOn(t, cl, n, map[droverv1.AssignmentRole]uint64{primary: v1, canary: v2})
	// The canary goes, and v2 replaces v1 as primary: one batch of two.
	for i := range n {
		name := fmt.Sprintf("sim-%05d", i)
		if _, err := cl.Agents.DeleteAssignment(t.Context(), &droverv1.DeleteAssignmentRequest{Agent: name, Model: "m", Role: canary}); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Agents.SetAssignment(t.Context(), &droverv1.SetAssignmentRequest{Agent: name, Model: "m", Version: v2, Role: primary}); err != nil {
			t.Fatal(err)
		}
	}
	list := statusesOn(t, cl, n, map[droverv1.AssignmentRole]uint64{primary: v2})
	for _, a := range list {
		// Reports 1 (primary v1), 2 (canary v2), then 3 and 4 (primary v2,
		// canary removed: one batch, or two if the two changes were loaded
		// apart).
		if seq := a.GetLastReportSeq(); seq != 4 {
			t.Errorf("%s: last report %d, want 4", a.GetName(), seq)
		}
	}
	s := f.Stats()
	if s.Reports != 4*n || s.ReportFailures != 0 || s.ReportBatches < 3*n || s.ReportBatches > 4*n {
		t.Errorf("stats = %+v, want %d reports in %d to %d batches", s, 4*n, 3*n, 4*n)
	}
}
