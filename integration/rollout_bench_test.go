package integration

import (
	"connectrpc.com/connect/v2"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/droverhq/drover/agent/sim"
	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/plugins/sdk/sdktest"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// BenchmarkRollout1000 rolls a version through three steps (1%, 10%,
// 100% of the agents; no bake, no gates) across 1,000 simulated agents
// (agent/sim: each reports a new desired state's assignments ready at
// once, through the real Report RPC) on a three-process hub, and reports
// the time from StartRollout to the rollout's state being SUCCEEDED, read
// every 50 ms. Each iteration pushes the next version first (untimed) and
// rolls it out over the one before.
func BenchmarkRollout1000(b *testing.B) {
	if testing.Short() {
		b.Skip("a three-node hub and 1,000 simulated agents")
	}
	benchRolloutFleet(b, 1000)
}

// BenchmarkRollout10000 is BenchmarkRollout1000 with 10,000 simulated
// agents.
func BenchmarkRollout10000(b *testing.B) {
	if testing.Short() {
		b.Skip("a three-node hub and 10,000 simulated agents")
	}
	benchRolloutFleet(b, 10_000)
}

func benchRolloutFleet(b *testing.B, n int) {
	c := startCluster(b, 3)
	cl := c.client()
	var tok struct {
		Token string `json:"token"`
	}
	c.cli(b, &tok, "tokens", "create", "--role", "agent")
	selector := map[string]string{"fleet": "bench"}
	f, err := sim.New(sim.Config{Hubs: c.addrs(), JoinToken: tok.Token, Agents: n, Prefix: "bench", Heartbeat: 5 * time.Second, Labels: selector})
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Enroll(b.Context()); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })

	// Version 1 on every agent, assigned through the API in parallel.
	v := c.pushArtifact(b, "bench", 1024)
	names := make(chan string)
	var wg sync.WaitGroup
	var assignErr error
	var errOnce sync.Once
	for range 32 {
		wg.Go(func() {
			for name := range names {
				// An assignment is idempotent: one that may or may not have
				// been applied (a leader overloaded by the enrolling fleet on
				// these two cores stepped down) is simply made again.
				var err error
				for range 5 {
					actx, acancel := context.WithTimeout(ctx, 30*time.Second)
					_, err = cl.Agents.SetAssignment(actx, &droverv1.SetAssignmentRequest{Agent: name, Model: "bench", Version: v,
						Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY})
					acancel()
					if connect.CodeOf(err) != connect.CodeUnavailable {
						break
					}
				}
				if err != nil {
					errOnce.Do(func() { assignErr = fmt.Errorf("%s: %w", name, err) })
				}
			}
		})
	}
	assignStart := time.Now()
	for i := range n {
		names <- fmt.Sprintf("bench-%05d", i)
	}
	close(names)
	wg.Wait()
	if assignErr != nil {
		b.Fatal(assignErr)
	}
	waitFleetReady(b, cl, selector, n, "bench", v)
	b.Logf("version %d assigned to and ready on %d agents in %s", v, n, time.Since(assignStart).Round(time.Millisecond))

	steps := []*droverv1.RolloutStep{{Percent: 1}, {Percent: 10}, {Percent: 100}}
	var took []time.Duration
	var waitReady, waitAdvance time.Duration // summed over the steps of every iteration
	var lastReport time.Duration             // the last step's start to its last agent's report, summed
	var cpu0, cpu1 time.Duration
	var rollbacks []time.Duration // ActOnRollout to every agent ready with v again
	for b.Loop() {
		b.StopTimer()
		next := c.pushArtifact(b, "bench", 1024)
		before := f.Stats()
		for _, h := range c.hubs {
			t, _ := procStat(h.pid())
			cpu0 += t
		}
		b.StartTimer()
		start := time.Now()
		resp, err := cl.Rollouts.StartRollout(ctx, &droverv1.StartRolloutRequest{Model: "bench", Version: next, Selector: selector, Steps: steps})
		if err != nil {
			b.Fatal(err)
		}
		id := resp.GetRollout().GetId()
		// The hub's own times of each step: started, ready, and the end.
		starts := map[uint32]time.Time{0: resp.GetRollout().GetStepStartTime().AsTime()}
		readies := map[uint32]time.Time{}
		var r *droverv1.Rollout
		for {
			gctx, gcancel := context.WithTimeout(ctx, 10*time.Second)
			got, err := cl.Rollouts.GetRollout(gctx, &droverv1.GetRolloutRequest{Id: id})
			gcancel()
			if err != nil {
				b.Fatal(err)
			}
			r = got.GetRollout()
			if r.GetState() == droverv1.RolloutState_ROLLOUT_STATE_RUNNING {
				starts[r.GetStep()] = r.GetStepStartTime().AsTime()
				if rt := r.GetStepReadyTime(); rt != nil {
					readies[r.GetStep()] = rt.AsTime()
				}
			}
			if r.GetState() == droverv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
				break
			}
			if r.GetState() != droverv1.RolloutState_ROLLOUT_STATE_RUNNING {
				b.Fatalf("rollout %s: %s: %s", id, r.GetState(), r.GetReason())
			}
			if time.Since(start) > 5*time.Minute {
				b.Fatalf("rollout %s still at step %d after 5 minutes", id, r.GetStep()+1)
			}
			time.Sleep(50 * time.Millisecond)
		}
		d := time.Since(start)
		b.StopTimer()
		took = append(took, d)
		for _, h := range c.hubs {
			t, _ := procStat(h.pid())
			cpu1 += t
		}
		after := f.Stats()
		var parts []string
		for s := range uint32(len(steps)) {
			st, rd := starts[s], readies[s]
			end := starts[s+1]
			if s == uint32(len(steps))-1 {
				end = r.GetEndTime().AsTime()
			}
			if st.IsZero() || rd.IsZero() || end.IsZero() {
				parts = append(parts, fmt.Sprintf("step %d: not seen", s+1))
				continue
			}
			waitReady += rd.Sub(st)
			waitAdvance += end.Sub(rd)
			parts = append(parts, fmt.Sprintf("step %d: ready after %s, next %s later", s+1, rd.Sub(st).Round(time.Millisecond), end.Sub(rd).Round(time.Millisecond)))
		}
		last := starts[uint32(len(steps))-1]
		b.Logf("rollout of v%d: SUCCEEDED seen after %s (hub: %s from create to end); %s; %d status reports in %d batches, %d failed, the last acknowledged %s after the last step began",
			next, d.Round(time.Millisecond), r.GetEndTime().AsTime().Sub(r.GetCreateTime().AsTime()).Round(time.Millisecond), strings.Join(parts, "; "),
			after.Reports-before.Reports, after.ReportBatches-before.ReportBatches, after.ReportFailures-before.ReportFailures,
			after.LastReport.Sub(last).Round(time.Millisecond))
		lastReport += after.LastReport.Sub(last)

		// Rolled back by hand: every agent back on v, ready.
		rbStart := time.Now()
		if _, err := cl.Rollouts.ActOnRollout(ctx, &droverv1.ActOnRolloutRequest{Id: id, Action: droverv1.RolloutAction_ROLLOUT_ACTION_ROLLBACK}); err != nil {
			b.Fatal(err)
		}
		waitFleetReady(b, cl, selector, n, "bench", v)
		rollbacks = append(rollbacks, time.Since(rbStart))
		b.Logf("rolled back: every agent ready with v%d again %s later", v, rollbacks[len(rollbacks)-1].Round(time.Millisecond))
		b.StartTimer()
	}
	var sum time.Duration
	for _, d := range took {
		sum += d
	}
	it := float64(len(took))
	b.ReportMetric(sum.Seconds()/it, "rollout-s")
	b.ReportMetric(slices.Max(took).Seconds(), "rollout-s-max")
	b.ReportMetric(waitReady.Seconds()/it, "agents-ready-s")
	b.ReportMetric(waitAdvance.Seconds()/it, "ready-to-advance-s")
	b.ReportMetric(lastReport.Seconds()/it, "last-step-reports-s")
	b.ReportMetric((cpu1-cpu0).Seconds()/sum.Seconds(), "hub-cpu-cores")
	var rb time.Duration
	for _, d := range rollbacks {
		rb += d
	}
	b.ReportMetric(rb.Seconds()/it, "rollback-s")
}

// waitFleetReady waits until n agents matching selector report version v
// of model as primary, ready.
func waitFleetReady(b *testing.B, cl *client.Client, selector map[string]string, n int, model string, v uint64) {
	b.Helper()
	hubtest.WaitFor(b, 3*time.Minute, func() error {
		resp, err := cl.Agents.ListAgents(b.Context(), &droverv1.ListAgentsRequest{Selector: selector})
		if err != nil {
			return err
		}
		ready := 0
		for _, a := range resp.GetAgents() {
			for _, st := range a.GetAssignmentStatuses() {
				if st.GetModel() == model && st.GetVersion() == v && st.GetRole() == droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY &&
					st.GetPhase() == droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY {
					ready++
				}
			}
		}
		if ready < n {
			return fmt.Errorf("%d of %d agents ready with %s:%d", ready, n, model, v)
		}
		return nil
	})
}

// newRolloutBench is newRolloutFleet for a benchmark: a one-node hub with
// three agents (label site=lab) that serve the example plugin's centroid
// model and report one-second metric windows.
func newRolloutBench(tb testing.TB) *rolloutFleet {
	tb.Helper()
	plugins := tb.TempDir()
	_, sum, err := sdktest.BuildExample(plugins)
	if err != nil {
		tb.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(plugins, "SHA256SUMS"), []byte(sum+"  centroid\n"), 0o644)
	f := &rolloutFleet{c: startCluster(tb, 1), dir: tb.TempDir()}
	var tok struct {
		Token string `json:"token"`
	}
	f.c.cli(tb, &tok, "tokens", "create", "--role", "agent", "--name", "edge")
	for i := range 3 {
		a := newAgent(tb, tb.TempDir(), fmt.Sprint("edge-", i+1), "--hub", f.c.hubs[0].httpAddr, "--join-token", tok.Token,
			"--heartbeat-interval", "300ms", "--plugin-dir", plugins, "--metric-window", "1s", "--label", "site=lab")
		a.start()
		f.agents = append(f.agents, a)
	}
	_ = os.WriteFile(filepath.Join(f.dir, "model.json"), []byte(`{"format":"centroid-json","features":["x"],"classes":["lo","hi"],"centroids":[[0],[10]]}`), 0o644)
	_ = os.WriteFile(filepath.Join(f.dir, "schema.json"), []byte(`{"inputs": [{"name": "x", "datatype": "FP64"}]}`), 0o644)
	hubtest.WaitFor(tb, 20*time.Second, func() error {
		if l := f.c.agents(tb); len(l.Agents) != 3 {
			return fmt.Errorf("%d agents enrolled", len(l.Agents))
		}
		return nil
	})
	return f
}

// pushVersion registers the next version of the centroid model with params.
func (f *rolloutFleet) pushVersion(tb testing.TB, params ...string) uint64 {
	tb.Helper()
	args := []string{"models", "push", "centroid", "--create", "--file", filepath.Join(f.dir, "model.json"), "--format", "centroid-json",
		"--runner", "centroid", "--schema", filepath.Join(f.dir, "schema.json")}
	for _, p := range params {
		args = append(args, "--param", p)
	}
	var v struct {
		Version uint64 `json:"version"`
	}
	f.c.cli(tb, &v, args...)
	return v.Version
}

// stickyID returns a request id that the agents route to a canary of the
// given weight for as long as it stands (they route by the id's FNV-1a
// hash), so that a probe with it sees the canary go.
func stickyID(weight uint32) string {
	for i := 0; ; i++ {
		id := fmt.Sprint("probe-", i)
		h := fnv.New32a()
		_, _ = h.Write([]byte(id))
		if h.Sum32()%100 < weight || weight == 0 {
			return id
		}
	}
}

// probeSample is what one probe of one agent saw: the version that
// answered, or "" for an error.
type probeSample struct {
	at      time.Time
	version string
}

// prober asks every agent, every 20 ms, for a prediction with one
// request id, and records which version answered.
type prober struct {
	mu      sync.Mutex
	samples [][]probeSample
	done    chan struct{}
	wg      sync.WaitGroup
}

func startProbes(agents []*agentProc, id string) *prober {
	p := &prober{samples: make([][]probeSample, len(agents)), done: make(chan struct{})}
	client := &http.Client{Timeout: 2 * time.Second}
	body := fmt.Sprintf(`{"id":%q,"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[1]}]}`, id)
	for i, a := range agents {
		p.wg.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-p.done:
					return
				case <-tick.C:
				}
				s := probeSample{}
				resp, err := client.Post("http://"+a.serveAddr+"/v2/models/centroid/infer", "application/json", strings.NewReader(body))
				if err == nil {
					var r struct {
						Version string `json:"model_version"`
					}
					if resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&r) == nil {
						s.version = r.Version
					}
					resp.Body.Close()
				}
				s.at = time.Now()
				p.mu.Lock()
				p.samples[i] = append(p.samples[i], s)
				p.mu.Unlock()
			}
		})
	}
	return p
}

// seen returns a copy of every agent's samples so far.
func (p *prober) seen() [][]probeSample {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([][]probeSample, len(p.samples))
	for i, s := range p.samples {
		out[i] = slices.Clone(s)
	}
	return out
}

func (p *prober) stop() {
	close(p.done)
	p.wg.Wait()
}

// servingAgain returns when an agent's probes show it back on version
// want for good: the first answer from want after the last that was not.
// It reports false if the probes never settled on want.
func servingAgain(samples []probeSample, want string) (time.Time, bool) {
	last := -1
	for i, s := range samples {
		if s.version != want {
			last = i
		}
	}
	if last+1 >= len(samples) {
		return time.Time{}, false
	}
	return samples[last+1].at, true
}

// benchLoad sends requests to every agent (two clients each, no request
// id) until the returned function is called: the traffic the gates judge.
func benchLoad(agents []*agentProc) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for _, a := range agents {
		for range 2 {
			wg.Go(func() {
				for {
					select {
					case <-done:
						return
					default:
					}
					resp, err := client.Post("http://"+a.serveAddr+"/v2/models/centroid/infer", "application/json",
						strings.NewReader(`{"inputs":[{"name":"x","datatype":"FP64","shape":[2],"data":[1,9]}]}`))
					if err == nil {
						resp.Body.Close()
					}
					time.Sleep(5 * time.Millisecond)
				}
			})
		}
	}
	return func() {
		close(done)
		wg.Wait()
	}
}

// BenchmarkRollbackTime measures, with three real agents serving the
// example plugin under load, the time from a gate's failing verdict to
// every agent serving the old version again: a version that fails every
// fifth batch is rolled out to every agent in one step, its error-rate
// gate fails, and the rollout is rolled back; the figure runs from the
// rollout's end_time (the time of the rollback command, which the
// controller stamps when it decides) to the last agent's first answer from
// the old version after its last answer that was not (probes every 20 ms,
// with a request id that a canary would take). Two kinds of step:
// "primary" (weight 0: the new version replaces the old, which is
// unloaded, so rolling back loads it again) and "canary" (weight 10: the
// old version stays primary and loaded, so rolling back is a switch).
func BenchmarkRollbackTime(b *testing.B) {
	if testing.Short() {
		b.Skip("real hub and agent processes, a rollback per iteration")
	}
	f := newRolloutBench(b)
	v1 := f.pushVersion(b)
	for _, a := range f.agents {
		f.c.cli(b, nil, "agents", "assign", a.name, fmt.Sprintf("centroid:%d", v1))
	}
	for _, a := range f.agents {
		f.c.waitRunning(b, a.name, "centroid", v1, 30*time.Second)
	}
	for _, step := range []struct {
		name   string
		weight uint32
	}{{"primary", 0}, {"canary", 10}} {
		b.Run("step="+step.name, func(b *testing.B) {
			var samples []time.Duration
			for b.Loop() {
				samples = append(samples, rollBackOnce(b, f, v1, step.weight))
			}
			var sum time.Duration
			for _, s := range samples {
				sum += s
			}
			b.ReportMetric(sum.Seconds()/float64(len(samples)), "rollback-s")
			b.ReportMetric(slices.Max(samples).Seconds(), "rollback-s-max")
		})
	}
}

// rollBackOnce rolls a failing version out over v1 in one step of the
// given weight, under load, and returns the time from the failing verdict
// to every agent answering from v1 again.
func rollBackOnce(b *testing.B, f *rolloutFleet, v1 uint64, weight uint32) time.Duration {
	b.Helper()
	bad := f.pushVersion(b, "fail_every=5")
	stopLoad := benchLoad(f.agents)
	probes := startProbes(f.agents, stickyID(weight))
	var started rolloutJSON
	f.c.cli(b, &started, "rollouts", "start", fmt.Sprintf("centroid:%d", bad), "--selector", "site=lab",
		"--step", fmt.Sprintf("percent=100,weight=%d,bake=30s", weight), "--gate", "error_rate,max=0.05,min-samples=20")
	var r struct {
		State  string    `json:"state"`
		Reason string    `json:"reason"`
		Ended  time.Time `json:"end_time"`
	}
	hubtest.WaitFor(b, 60*time.Second, func() error {
		f.c.cli(b, &r, "rollouts", "status", started.ID)
		if r.State == "running" {
			return fmt.Errorf("rollout %s still running", started.ID)
		}
		return nil
	})
	if r.State != "rolled_back" || !strings.Contains(r.Reason, "error_rate") {
		probes.stop()
		stopLoad()
		b.Fatalf("rollout %s of v%d: %s: %s", started.ID, bad, r.State, r.Reason)
	}
	// Probe on until every agent has answered from v1 for a second.
	want := fmt.Sprint(v1)
	var got [][]probeSample
	deadline := time.Now().Add(30 * time.Second)
	for {
		time.Sleep(time.Second)
		got = probes.seen()
		settled := true
		for _, s := range got {
			at, ok := servingAgain(s, want)
			if !ok || time.Since(at) < time.Second {
				settled = false
			}
		}
		if settled {
			break
		}
		if time.Now().After(deadline) {
			probes.stop()
			stopLoad()
			b.Fatalf("the agents are not all back on v%d 30 s after the rollback", v1)
		}
	}
	probes.stop()
	stopLoad()
	var last time.Time
	for i, s := range got {
		at, _ := servingAgain(s, want)
		fromBad, failed := 0, 0
		for _, x := range s {
			switch x.version {
			case fmt.Sprint(bad):
				fromBad++
			case "":
				failed++
			}
		}
		if fromBad == 0 {
			b.Errorf("%s: no probe was answered by v%d: the probes did not see the step", f.agents[i].name, bad)
		}
		b.Logf("%s: back on v%d %s after the verdict (probes: %d answered by v%d, %d failed, %d in all)",
			f.agents[i].name, v1, at.Sub(r.Ended).Round(time.Millisecond), fromBad, bad, failed, len(s))
		if at.After(last) {
			last = at
		}
	}
	return max(last.Sub(r.Ended), 0)
}
