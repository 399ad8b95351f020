package agent

import (
	"context"
	"slices"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/nvml/fake"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// BenchmarkDesiredStateLatency measures the time from an assignment change
// acknowledged by a three-node hub to the agent holding the new desired
// state: the Raft commit, replication to the follower the agent watches,
// the watch firing, and the stream. The agent watches a follower, not the
// leader, as most agents of a fleet do. Target: p99 under 200 ms.
func BenchmarkDesiredStateLatency(b *testing.B) {
	c := hubtest.StartCluster(b, 3, hubtest.Options{})
	cl := c.Client()
	ctx := b.Context()
	join := joinToken(b, cl)
	var versions []uint64
	for i := range 2 {
		versions = append(versions, push(b, cl, "churn", []byte{byte(i)}))
	}
	follower := c.Nodes[(c.Leader()+1)%3].HTTPAddr()
	got := make(chan uint64, 16)
	machine, _ := fake.New("dgxh100", fake.WithGPUs(1))
	a, err := New(Config{
		Name: "bench", Hubs: []string{follower}, JoinToken: join, DataDir: b.TempDir(), ServeAddr: "127.0.0.1:0",
		GPUs: func() gonvml.Interface { return machine }, Logger: hubtest.Logger(b, "agent"),
		OnDesired: func(d *droverv1.DesiredState) {
			for _, as := range d.GetAssignments() {
				got <- as.GetVersion()
			}
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = a.Run(runCtx) }()
	hubtest.WaitFor(b, 10*time.Second, func() error {
		_, err := cl.Agents.GetAgent(ctx, &droverv1.GetAgentRequest{Agent: "bench"})
		return err
	})
	time.Sleep(time.Second) // the watch is open
	var lat []time.Duration
	i := 0
	for b.Loop() {
		v := versions[i%2]
		i++
		if _, err := cl.Agents.SetAssignment(ctx, &droverv1.SetAssignmentRequest{Agent: "bench", Model: "churn", Version: v}); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for seen := uint64(0); seen != v; {
			select {
			case seen = <-got:
			case <-time.After(10 * time.Second):
				b.Fatal("the agent never saw the change")
			}
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
