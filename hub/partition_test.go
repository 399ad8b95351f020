package hub_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect/v2"

	"github.com/droverhq/drover/hub"
	"github.com/droverhq/drover/hub/hubtest"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// waitIdentical waits until every live node has applied the same index and
// holds the same state there.
func waitIdentical(t *testing.T, nodes []*hub.Node) {
	t.Helper()
	hubtest.WaitFor(t, 15*time.Second, func() error {
		var idx0 uint64
		var d0 string
		for i, n := range nodes {
			if n == nil {
				continue
			}
			idx, d, err := n.StateDigest()
			if err != nil {
				return err
			}
			if i == 0 || d0 == "" {
				idx0, d0 = idx, d
				continue
			}
			if idx != idx0 || d != d0 {
				return fmt.Errorf("%s at %d (%s), others at %d (%s)", n.Name(), idx, d, idx0, d0)
			}
		}
		return nil
	})
}

// TestLeaderPartitioned cuts the leader off from the other two nodes (Raft
// and HTTP both, on the in-memory network). The majority elects a new
// leader and keeps accepting writes; the old leader accepts none; after the
// partition heals it steps down, drops what it could not commit, and every
// node ends with the same state.
func TestLeaderPartitioned(t *testing.T) {
	c := hubtest.StartCluster(t, 3, hubtest.Options{InMemory: true})
	ctx := t.Context()
	if _, err := c.Client().Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: "before"}); err != nil {
		t.Fatal(err)
	}
	old := c.Leader()
	var rest []int
	var restNames []string
	for i := range c.Nodes {
		if i != old {
			rest = append(rest, i)
			restNames = append(restNames, c.Nodes[i].Name())
		}
	}
	c.Net.Partition([]string{c.Nodes[old].Name()}, restNames)

	// The cut-off leader cannot commit: its write fails and is not acknowledged.
	oldCl := c.ClientFor(c.AdminToken, c.Nodes[old].HTTPAddr())
	_, err := oldCl.Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: "lost"})
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("write on the cut-off leader: %v", err)
	}
	// The majority carries on, through either of its nodes.
	majority := c.ClientFor(c.AdminToken, c.Nodes[rest[0]].HTTPAddr(), c.Nodes[rest[1]].HTTPAddr())
	hubtest.WaitFor(t, 10*time.Second, func() error {
		_, err := majority.Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: "during"})
		return err
	})
	for i := range 20 {
		if _, err := majority.Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: fmt.Sprint("during-", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if c.Nodes[old].IsLeader() {
		t.Fatal("the cut-off node still claims to lead")
	}

	c.Net.Heal()
	waitIdentical(t, c.Nodes)
	view := c.Nodes[old].State()
	if view.Model("lost") != nil {
		t.Fatal("a write the cut-off leader never committed survived the heal")
	}
	if view.Model("during-19") == nil || view.Model("before") == nil {
		t.Fatal("the healed node is missing committed writes")
	}
}

// TestMinorityPartition cuts one follower off: the other two keep going;
// the cut-off follower answers stale reads, refuses linearizable ones, and
// catches up when the partition heals.
func TestMinorityPartition(t *testing.T) {
	c := hubtest.StartCluster(t, 3, hubtest.Options{InMemory: true})
	ctx := t.Context()
	leader := c.Leader()
	lone := (leader + 1) % 3
	var others []string
	for i, n := range c.Nodes {
		if i != lone {
			others = append(others, n.Name())
		}
	}
	c.Net.Partition([]string{c.Nodes[lone].Name()}, others)
	if _, err := c.ClientFor(c.AdminToken, c.Nodes[leader].HTTPAddr()).Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: "m"}); err != nil {
		t.Fatal(err)
	}
	lcl := c.ClientFor(c.AdminToken, c.Nodes[lone].HTTPAddr())
	_, err := lcl.Models.GetModel(ctx, &droverv1.GetModelRequest{Name: "m"})
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("linearizable read on the cut-off node: %v", err)
	}
	resp, err := lcl.Models.ListModels(ctx, &droverv1.ListModelsRequest{Read: &droverv1.ReadOptions{Consistency: droverv1.ReadConsistency_READ_CONSISTENCY_STALE}})
	if err != nil || !resp.GetMeta().GetStale() {
		t.Fatalf("stale read on the cut-off node: %v %v", resp.GetMeta(), err)
	}
	c.Net.Heal()
	waitIdentical(t, c.Nodes)
	if _, err := lcl.Models.GetModel(ctx, &droverv1.GetModelRequest{Name: "m"}); err != nil {
		t.Fatalf("after the heal: %v", err)
	}
}

// TestCatchUpFromSnapshot stops a follower, writes far more than the log
// keeps after a snapshot, and restarts it: it catches up by installing the
// leader's snapshot, and ends identical.
func TestCatchUpFromSnapshot(t *testing.T) {
	c := hubtest.StartCluster(t, 3, hubtest.Options{Configure: func(_ int, cfg *hub.Config) {
		cfg.Raft.SnapshotThreshold = 32
		cfg.Raft.SnapshotInterval = 50 * time.Millisecond
		cfg.Raft.TrailingLogs = 8
	}})
	ctx := t.Context()
	cl := c.Client()
	leader := c.Leader()
	lagger := (leader + 1) % 3
	c.Kill(lagger)
	for i := range 150 {
		if _, err := cl.Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: fmt.Sprint("m-", i)}); err != nil {
			t.Fatal(err)
		}
	}
	hubtest.WaitFor(t, 10*time.Second, func() error {
		if idx, _ := strconv.ParseUint(c.Nodes[leader].RaftStats()["last_snapshot_index"], 10, 64); idx == 0 {
			return fmt.Errorf("no snapshot yet")
		}
		return nil
	})
	n := c.Restart(lagger)
	waitIdentical(t, c.Nodes)
	if n.State().Model("m-149") == nil {
		t.Fatal("restarted node did not catch up")
	}
	if idx, _ := strconv.ParseUint(n.RaftStats()["last_snapshot_index"], 10, 64); idx == 0 {
		t.Fatalf("restarted node caught up without a snapshot: %v / leader %v", n.RaftStats(), c.Nodes[leader].RaftStats())
	}
}
