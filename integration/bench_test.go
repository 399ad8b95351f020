package integration

import (
	"context"
	"fmt"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// BenchmarkFailover measures, on a three-process hub with the default Raft
// timings, the time from SIGKILL of the leader to the first write that was
// made after the kill being acknowledged by the cluster: detection,
// election, the new leader's barrier, and the client's fail-over together.
// Each iteration kills the current leader, then restarts it and waits for
// the cluster to converge before the next.
func BenchmarkFailover(b *testing.B) {
	c := startCluster(b, 3)
	cl := c.client()
	var seq atomic.Int64
	var samples []time.Duration
	for b.Loop() {
		leader := c.leader()
		ctx, stop := context.WithCancel(context.Background())
		var killedAt atomic.Int64
		acked := make(chan time.Time, 64)
		for w := range 4 {
			go func() {
				for ctx.Err() == nil {
					call := time.Now()
					wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					_, err := cl.Models.CreateModel(wctx, &droverv1.CreateModelRequest{Name: fmt.Sprintf("m-%d-%d", w, seq.Add(1))})
					cancel()
					if k := killedAt.Load(); err == nil && k != 0 && call.UnixNano() > k {
						select {
						case acked <- time.Now():
						default:
						}
					}
					time.Sleep(2 * time.Millisecond)
				}
			}()
		}
		time.Sleep(300 * time.Millisecond)
		kill := time.Now()
		killedAt.Store(kill.UnixNano())
		leader.kill()
		select {
		case at := <-acked:
			samples = append(samples, at.Sub(kill))
		case <-time.After(30 * time.Second):
			b.Fatal("no write acknowledged within 30s of killing the leader")
		}
		stop()
		b.StopTimer()
		leader.start()
		leader.waitReady(30 * time.Second)
		c.waitConverged(30 * time.Second)
		b.StartTimer()
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	var sum time.Duration
	for _, s := range samples {
		sum += s
	}
	b.ReportMetric(float64(sum.Milliseconds())/float64(len(samples)), "failover-ms-mean")
	b.ReportMetric(float64(samples[len(samples)-1].Milliseconds()), "failover-ms-max")
}
