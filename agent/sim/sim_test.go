package sim

import (
	"context"
	"testing"
	"time"

	"github.com/droverhq/drover/hub/hubtest"
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
