package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/droverhq/drover/agent/sim"
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

// procStat returns a process's CPU time (user+system) and resident memory.
func procStat(pid int) (cpu time.Duration, rss int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	pages, _ := strconv.ParseInt(f[21], 10, 64)
	const ticks = 100 // USER_HZ
	return time.Duration(utime+stime) * time.Second / ticks, pages * int64(os.Getpagesize())
}

func (h *hubProc) pid() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil {
		return 0
	}
	return h.cmd.Process.Pid
}

// BenchmarkFleet runs a three-process hub against thousands of simulated
// agents (agent/sim: the real protocol — enrolment, a heartbeat every 5 s,
// an open desired-state watch — and no model work), and reports the
// heartbeat round-trip latency the agents see and what the hub spends.
// Everything, the simulated fleet included, shares this machine's cores.
func BenchmarkFleet(b *testing.B) {
	for _, n := range []int{1000, 5000, 10000} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			c := startCluster(b, 3)
			var tok struct {
				Token string `json:"token"`
			}
			c.cli(b, &tok, "tokens", "create", "--role", "agent")
			f, err := sim.New(sim.Config{Hubs: c.addrs(), JoinToken: tok.Token, Agents: n, Heartbeat: 5 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if err := f.Enroll(b.Context()); err != nil {
				b.Fatal(err)
			}
			enrolRate := float64(n) / time.Since(start).Seconds()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { f.Run(ctx); close(done) }()
			time.Sleep(10 * time.Second) // every agent heartbeats and watches
			f.Stats()
			var cpu0 time.Duration
			for _, h := range c.hubs {
				c, _ := procStat(h.pid())
				cpu0 += c
			}
			window := 30 * time.Second
			b.ResetTimer()
			for b.Loop() {
				time.Sleep(window)
			}
			b.StopTimer()
			s := f.Stats()
			var cpu1 time.Duration
			var rssMax int64
			for _, h := range c.hubs {
				c, rss := procStat(h.pid())
				cpu1 += c
				rssMax = max(rssMax, rss)
			}
			cancel()
			<-done
			if s.Failures > 0 {
				b.Errorf("%d heartbeats failed", s.Failures)
			}
			elapsed := window * time.Duration(b.N)
			b.ReportMetric(float64(s.Heartbeats)/elapsed.Seconds(), "heartbeats/s")
			b.ReportMetric(float64(s.P50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(s.P99.Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(s.Max.Microseconds())/1000, "max-ms")
			b.ReportMetric((cpu1-cpu0).Seconds()/elapsed.Seconds(), "hub-cpu-cores")
			b.ReportMetric(float64(rssMax)/(1<<20), "hub-rss-MiB")
			b.ReportMetric(enrolRate, "enrolments/s")
		})
	}
}

// BenchmarkAgentRSS measures a real agent process on a simulated DGX H100:
// idle (enrolled, sampling 8 GPUs, reporting telemetry, nothing assigned),
// and at its peak while downloading, verifying and loading a 256 MiB
// artifact. The target is 64 MiB idle.
func BenchmarkAgentRSS(b *testing.B) {
	c := startCluster(b, 1)
	var tok struct {
		Token string `json:"token"`
	}
	c.cli(b, &tok, "tokens", "create", "--role", "agent")
	dir := b.TempDir()
	a := newAgent(b, dir, "gpu-1", "--hub", c.hubs[0].httpAddr, "--join-token", tok.Token, "--fake-gpus", "dgxh100",
		"--sample-interval", "1s", "--telemetry-window", "5s")
	a.start()
	var idle, peak, loaded int64
	var rps float64
	for b.Loop() {
		time.Sleep(20 * time.Second) // enrolled, a few windows reported
		a.mu.Lock()
		pid := a.cmd.Process.Pid
		a.mu.Unlock()
		_, idle = procStat(pid)
		v := c.pushArtifact(b, "big", 256<<20)
		c.cli(b, nil, "agents", "assign", "gpu-1", fmt.Sprintf("big:%d", v))
		c.waitRunning(b, "gpu-1", "big", v, 2*time.Minute)
		peak = vmHWM(pid)

		// Under load: 16 clients asking a native model for predictions
		// for 10 s, the resident memory read at the end, still loaded.
		nv := c.pushNative(b, false)
		c.cli(b, nil, "agents", "assign", "gpu-1", fmt.Sprintf("churn:%d", nv))
		c.waitRunning(b, "gpu-1", "churn", nv, time.Minute)
		body := `{"inputs": [{"name": "tenure", "datatype": "FP32", "shape": [1], "data": [7]},
		  {"name": "plan", "datatype": "BYTES", "shape": [1], "data": ["pro"]}]}`
		stop := time.Now().Add(10 * time.Second)
		var wg sync.WaitGroup
		var served atomic.Int64
		for range 16 {
			wg.Go(func() {
				for time.Now().Before(stop) {
					resp, err := http.Post("http://"+a.serveAddr+"/v2/models/churn/infer", "application/json", strings.NewReader(body))
					if err != nil {
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 {
						served.Add(1)
					}
				}
			})
		}
		time.Sleep(9 * time.Second)
		_, loaded = procStat(pid)
		wg.Wait()
		rps = float64(served.Load()) / 10
	}
	b.ReportMetric(float64(idle)/(1<<20), "idle-RSS-MiB")
	b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(float64(loaded)/(1<<20), "load-RSS-MiB")
	b.ReportMetric(rps, "load-req/s")
}

// vmHWM is a process's peak resident memory.
func vmHWM(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
