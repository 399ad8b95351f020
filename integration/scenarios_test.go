package integration

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/plugins/sdk/sdktest"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// terminate sends the hub SIGTERM, as systemctl stop does, and waits up to
// timeout for it to exit; then it is SIGKILLed. It returns how long the
// stop took, the exit code, and whether SIGTERM alone was enough.
func (h *hubProc) terminate(timeout time.Duration) (took time.Duration, code int, clean bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil {
		return 0, 0, true
	}
	began := time.Now()
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	clean = true
	select {
	case <-h.exited:
	case <-time.After(timeout):
		clean = false
		_ = h.cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-h.exited:
		case <-time.After(10 * time.Second):
			h.t.Errorf("%s did not die within 10s of SIGKILL", h.name)
		}
	}
	took = time.Since(began)
	// Wait has returned before exited is closed, so ProcessState is set.
	if ps := h.cmd.ProcessState; ps != nil {
		code = ps.ExitCode()
	}
	h.cmd = nil
	return took, code, clean
}

// checkRolloutSteps checks a finished rollout's audit trail: one start,
// each step made ready and advanced exactly once, nothing else but
// judgements.
func (f *rolloutFleet) checkRolloutSteps(t *testing.T, id string, steps int) {
	t.Helper()
	counts, trail := f.rolloutAudit(t, id, steps)
	bad := false
	if n := counts["rollout.start"][0]; n != 1 {
		t.Errorf("%d rollout.start events", n)
		bad = true
	}
	for s := 1; s <= steps; s++ {
		if n := counts["rollout.step_ready"][s]; n != 1 {
			t.Errorf("step %d made ready %d times", s, n)
			bad = true
		}
		if n := counts["rollout.advance"][s]; n != 1 {
			t.Errorf("step %d advanced %d times", s, n)
			bad = true
		}
	}
	for action, bySteps := range counts {
		switch action {
		case "rollout.start", "rollout.step_ready", "rollout.advance", "rollout.judge":
		default:
			t.Errorf("unexpected %s events: %v", action, bySteps)
			bad = true
		}
		if action != "rollout.start" && bySteps[0] > 0 {
			t.Errorf("%d %s events name no step", bySteps[0], action)
			bad = true
		}
	}
	if bad {
		t.Logf("the audit trail of %s:\n%s", id, strings.Join(trail, "\n"))
	}
}

// stopBudget is how long a hub node may take to stop on SIGTERM when
// nothing but agents' desired-state watches and short calls are in flight.
const stopBudget = 5 * time.Second

// TestRollingRestartDuringRollout restarts every node of a three-node hub
// in turn (SIGTERM, the way systemctl restart stops it), the i-th as the
// rollout reaches its i-th step and only once the previous node has
// rejoined, a leader is elected and the replicas agree,
// while a three-step rollout with bakes goes on under load: the rollout
// succeeds, the new version runs everywhere, no step is made ready or
// advanced twice, no request fails, and the replicas converge.
func TestRollingRestartDuringRollout(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-node hub and five agents through a rolling restart")
	}
	began := time.Now()
	f := newFailoverFleet(t)
	v1 := f.push(t)
	for _, a := range f.agents {
		f.c.cli(t, nil, "agents", "assign", a.name, fmt.Sprintf("centroid:%d", v1))
	}
	f.runningEverywhere(t, v1)
	t.Logf("fleet up, v%d everywhere, after %v", v1, time.Since(began).Round(time.Millisecond))

	const steps = 3
	v2 := f.push(t)
	stop := f.load(t)
	var r rolloutJSON
	f.c.cli(t, &r, "rollouts", "start", fmt.Sprintf("centroid:%d", v2), "--selector", "site=lab",
		"--step", "agents=1,bake=3s", "--step", "agents=2,bake=3s", "--step", "percent=100,bake=2s",
		"--gate", "error_rate,max=0.05,min-samples=10")
	id := r.ID
	started := time.Now()

	var during int // restarts begun while the rollout was still running
	slow := false
	for i, h := range f.c.hubs {
		// Node i restarts once the rollout is at step i (0-based), so that
		// the restarts fall on different steps.
		p := f.pollRollout(t, id, 30*time.Second, func(p rolloutProgress) error {
			if p.State == "running" && p.Step < uint32(i) {
				return fmt.Errorf("at step %d", p.Step)
			}
			return nil
		})
		if p.State == "running" {
			during++
		}
		at := time.Since(started)
		leader := f.c.leader()
		took, code, clean := h.terminate(20 * time.Second)
		if !clean || code != 0 || took > stopBudget {
			slow = true
			t.Errorf("restart %d: %s (leader: %v) took %v to stop after SIGTERM and exited %d (clean: %v); want under %v and 0",
				i, h.name, h == leader, took.Round(time.Millisecond), code, clean, stopBudget)
		}
		down := time.Now()
		h.start()
		h.waitReady(20 * time.Second)
		ready := time.Since(down)
		now := f.c.leader()
		f.c.waitConverged(30 * time.Second)
		t.Logf("restart %d, %v into the rollout (%s at step %d): SIGTERM to %s (leader: %s) took %v, exit %d; ready again %v after, converged %v after, leader now %s",
			i, at.Round(time.Millisecond), p.State, p.Step, h.name, leader.name, took.Round(time.Millisecond), code,
			ready.Round(time.Millisecond), time.Since(down).Round(time.Millisecond), now.name)
	}
	switch {
	case during == len(f.c.hubs):
	case slow:
		t.Logf("only %d of %d restarts began while the rollout ran: the slow stops above held it up", during, len(f.c.hubs))
	default:
		t.Errorf("only %d of %d restarts began while the rollout ran", during, len(f.c.hubs))
	}

	end := f.pollRollout(t, id, 60*time.Second, func(p rolloutProgress) error {
		if p.State == "running" {
			return fmt.Errorf("still running at step %d", p.Step)
		}
		return nil
	})
	if end.State != "succeeded" {
		t.Fatalf("rollout %s ended %s: %s", id, end.State, end.Reason)
	}
	t.Logf("rollout %s succeeded %v after it started", id, time.Since(started).Round(time.Millisecond))
	f.runningEverywhere(t, v2)
	f.checkRolloutSteps(t, id, steps)
	f.c.waitConverged(30 * time.Second)
	ok, failed := stop()
	t.Logf("%d requests answered, %d failed; %v in all", ok, failed, time.Since(began).Round(time.Millisecond))
	if failed > 0 || ok < 100 {
		t.Errorf("across the rolling restart: %d answered, %d failed", ok, failed)
	}
}

// swapFleet is a one-node hub serving blobs slowly and one agent serving
// the centroid model, each version padded to a few megabytes.
type swapFleet struct {
	c     *cluster
	agent *agentProc
	dir   string
}

// swapPad is how many bytes of padding each version carries: at the hub's
// blob rate below, a download takes about a second.
const (
	swapPad      = 6 << 20
	swapBlobRate = "6000000"
)

// pushPadded registers the next version of the centroid model, padded with
// random bytes so that each version has its own artifact, and returns the
// version and the artifact's sha256.
func (f *swapFleet) pushPadded(t *testing.T) (uint64, string) {
	t.Helper()
	raw := make([]byte, swapPad/2)
	_, _ = rand.Read(raw)
	body := fmt.Sprintf(`{"format":"centroid-json","features":["x"],"classes":["lo","hi"],"centroids":[[0],[10]],"pad":"%s"}`, hex.EncodeToString(raw))
	path := filepath.Join(f.dir, "model.json")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(body))
	var v struct {
		Version uint64 `json:"version"`
	}
	f.c.cli(t, &v, "models", "push", "centroid", "--create", "--file", path, "--format", "centroid-json",
		"--runner", "centroid", "--schema", filepath.Join(f.dir, "schema.json"))
	return v.Version, hex.EncodeToString(sum[:])
}

// agentEvent is an event of drover agents show --json.
type agentEvent struct {
	Seq     uint64 `json:"seq"`
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

type agentShown struct {
	LastReportSeq uint64       `json:"last_report_seq"`
	Events        []agentEvent `json:"events"`
}

// infer asks the agent for a prediction and returns the version that
// answered, or an error.
func inferCentroid(client *http.Client, addr string) (string, error) {
	resp, err := client.Post("http://"+addr+"/v2/models/centroid/infer", "application/json",
		strings.NewReader(`{"inputs":[{"name":"x","datatype":"FP64","shape":[2],"data":[1,9]}]}`))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("%d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	var out struct {
		Version string `json:"model_version"`
		Outputs []struct {
			Data []any `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return "", fmt.Errorf("%v: %s", err, b)
	}
	if len(out.Outputs) != 1 || fmt.Sprint(out.Outputs[0].Data) != "[lo hi]" {
		return out.Version, fmt.Errorf("wrong answer from version %s: %s", out.Version, b)
	}
	return out.Version, nil
}

// TestAgentKilledMidSwap SIGKILLs an agent while it switches to a new
// version — 0, 5, 20 and 50 ms after the assignment is committed, as soon as
// the hub shows the new version downloading, half-way through the download,
// and as soon as the agent itself says it is loading — and starts it again
// on the same data directory. Each time it converges to the new version
// and serves it; nothing but whole versions answered, before or after (a
// load goes on throughout); the cached artifact is whole; no load failed;
// and the hub holds every report the agent made, numbered without a gap.
func TestAgentKilledMidSwap(t *testing.T) {
	if testing.Short() {
		t.Skip("kills an agent mid-swap seven times")
	}
	began := time.Now()
	plugins := t.TempDir()
	_, sum, err := sdktest.BuildExample(plugins)
	if err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(plugins, "SHA256SUMS"), []byte(sum+"  centroid\n"), 0o644)
	f := &swapFleet{c: startCluster(t, 1, "--blob-serve-rate", swapBlobRate), dir: t.TempDir()}
	_ = os.WriteFile(filepath.Join(f.dir, "schema.json"), []byte(`{"inputs": [{"name": "x", "datatype": "FP64"}]}`), 0o644)
	var tok struct {
		Token string `json:"token"`
	}
	f.c.cli(t, &tok, "tokens", "create", "--role", "agent", "--name", "swap")
	// Every report this agent makes becomes an event at the hub: telemetry,
	// metric and drift windows (which do not) are made too long to close
	// within the test.
	f.agent = newAgent(t, t.TempDir(), "swap-1", "--hub", f.c.hubs[0].httpAddr, "--join-token", tok.Token,
		"--heartbeat-interval", "300ms", "--plugin-dir", plugins, "--telemetry-window", "24h", "--metric-window", "24h",
		"--drift-window", "24h", "--drift-report-interval", "24h")
	f.agent.start()
	a := f.agent

	v, digest := f.pushPadded(t)
	f.c.waitEnrolled(t, a.name, 30*time.Second)
	f.c.cli(t, nil, "agents", "assign", a.name, fmt.Sprintf("centroid:%d", v))
	f.c.waitRunning(t, a.name, "centroid", v, 30*time.Second)
	t.Logf("agent up, v%d running, after %v", v, time.Since(began).Round(time.Millisecond))

	// A load throughout: every answer is right and comes from a version
	// pushed whole; failures to connect while the agent is down are
	// expected and not counted.
	var answered, refused atomic.Int64
	var pushedMu sync.Mutex
	pushed := map[string]bool{fmt.Sprint(v): true}
	var wrongMu sync.Mutex
	var wrong []string
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		client := &http.Client{Timeout: 5 * time.Second}
		for {
			select {
			case <-done:
				return
			default:
			}
			got, err := inferCentroid(client, a.serveAddr)
			pushedMu.Lock()
			known := pushed[got]
			pushedMu.Unlock()
			switch {
			case err != nil && strings.Contains(err.Error(), "wrong answer"), err == nil && !known:
				wrongMu.Lock()
				wrong = append(wrong, fmt.Sprintf("version %q: %v", got, err))
				wrongMu.Unlock()
			case err == nil:
				answered.Add(1)
			default:
				refused.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
	defer func() {
		close(done)
		wg.Wait()
	}()

	hub := f.c.clientFor(f.c.hubs[0])
	hubPhase := func(want uint64) string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := hub.Agents.GetAgent(ctx, &droverv1.GetAgentRequest{Agent: a.name})
		if err != nil {
			return ""
		}
		for _, st := range resp.GetAgent().GetAssignmentStatuses() {
			if st.GetModel() == "centroid" && st.GetVersion() == want {
				return strings.ToLower(strings.TrimPrefix(st.GetPhase().String(), "ASSIGNMENT_PHASE_"))
			}
		}
		return ""
	}
	agentPhase := func(want uint64) string {
		st, err := a.status()
		if err != nil {
			return ""
		}
		as, _ := st["assignments"].([]any)
		for _, x := range as {
			// "centroid/primary v7 loading ..."
			if s := fmt.Sprint(x); strings.Contains(s, fmt.Sprintf(" v%d ", want)) {
				if fs := strings.Fields(s); len(fs) >= 3 {
					return fs[2]
				}
			}
		}
		return ""
	}
	partialBytes := func() int64 {
		parts, _ := filepath.Glob(filepath.Join(a.dataDir, "artifacts", "sha256", "*", "*.partial"))
		var n int64
		for _, p := range parts {
			if fi, err := os.Stat(p); err == nil {
				n = max(n, fi.Size())
			}
		}
		return n
	}

	type trigger struct {
		name string
		// wait returns once it is time to kill, saying what it saw, or
		// false if the moment passed.
		wait func(v uint64) (string, bool)
	}
	after := func(d time.Duration) trigger {
		return trigger{fmt.Sprintf("%v after the assignment", d), func(uint64) (string, bool) {
			time.Sleep(d)
			return "", true
		}}
	}
	poll := func(name string, cond func(v uint64) (string, bool)) trigger {
		return trigger{name, func(v uint64) (string, bool) {
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				if seen, ok := cond(v); ok {
					return seen, true
				}
				if agentPhase(v) == "ready" {
					return "ready already", false
				}
				time.Sleep(time.Millisecond)
			}
			return "nothing in 10s", false
		}}
	}
	triggers := []trigger{
		after(0), after(5 * time.Millisecond), after(20 * time.Millisecond), after(50 * time.Millisecond),
		poll("the hub shows it downloading", func(v uint64) (string, bool) {
			p := hubPhase(v)
			return "hub: " + p, p == "downloading"
		}),
		poll("half-way through the download", func(uint64) (string, bool) {
			n := partialBytes()
			return fmt.Sprintf("%d bytes downloaded", n), n > swapPad/2
		}),
		poll("the agent says it is loading", func(v uint64) (string, bool) {
			p := agentPhase(v)
			return "agent: " + p, p == "loading"
		}),
	}

	var lastSeq uint64
	for i, tr := range triggers {
		runStart := time.Now()
		prev := v
		v, digest = f.pushPadded(t)
		pushedMu.Lock()
		pushed[fmt.Sprint(v)] = true
		pushedMu.Unlock()
		f.c.cli(t, nil, "agents", "assign", a.name, fmt.Sprintf("centroid:%d", v))
		assigned := time.Now()
		seen, hit := tr.wait(v)
		killedAt := time.Now()
		a.kill()
		phaseAtKill := hubPhase(v)
		partial := partialBytes()
		a.start()
		f.c.waitRunning(t, a.name, "centroid", v, 30*time.Second)
		converged := time.Since(killedAt)

		// It serves the new version.
		hubtest.WaitFor(t, 10*time.Second, func() error {
			got, err := inferCentroid(http.DefaultClient, a.serveAddr)
			if err != nil {
				return err
			}
			if got != fmt.Sprint(v) {
				return fmt.Errorf("answered by version %s, want %d", got, v)
			}
			return nil
		})

		// The cached artifact is whole and is the one pushed.
		cached := filepath.Join(a.dataDir, "artifacts", "sha256", digest[:2], digest)
		b, err := os.ReadFile(cached)
		if err != nil {
			t.Errorf("run %d: the artifact of v%d is not cached: %v", i, v, err)
		} else if s := sha256.Sum256(b); hex.EncodeToString(s[:]) != digest {
			t.Errorf("run %d: the cached artifact of v%d hashes to %x, want %s", i, v, s, digest)
		}

		// Settled: the outbox is empty and the hub has taken every report
		// the agent made.
		var shown agentShown
		var agentSeq uint64
		hubtest.WaitFor(t, 15*time.Second, func() error {
			st, err := a.status()
			if err != nil {
				return err
			}
			agentSeq = uint64(st["last_report_seq"].(float64))
			if depth := st["outbox_reports"].(float64); depth != 0 {
				return fmt.Errorf("%v reports in the outbox", depth)
			}
			if err := f.c.tryCLI(&shown, "agents", "show", a.name); err != nil {
				return err
			}
			if shown.LastReportSeq != agentSeq {
				return fmt.Errorf("the hub has taken reports up to %d, the agent made up to %d", shown.LastReportSeq, agentSeq)
			}
			return nil
		})
		if agentSeq <= lastSeq {
			t.Errorf("run %d: the report sequence went from %d to %d", i, lastSeq, agentSeq)
		}

		// The events the agent's reports made are numbered without a gap,
		// up to the last report; none says a load failed.
		var reported []agentEvent
		for _, ev := range shown.Events {
			if ev.Seq < 1<<63 { // the hub's own events are numbered apart
				reported = append(reported, ev)
			}
		}
		bad := false
		for j := 1; j < len(reported); j++ {
			if reported[j].Seq != reported[j-1].Seq+1 {
				t.Errorf("run %d: report %d follows report %d at the hub", i, reported[j].Seq, reported[j-1].Seq)
				bad = true
			}
		}
		if n := len(reported); n == 0 || reported[n-1].Seq != agentSeq {
			t.Errorf("run %d: the agent's last report is %d, the hub's last event from it %v", i, agentSeq, reported[max(n-1, 0):])
			bad = true
		}
		for _, ev := range reported {
			if ev.Seq > lastSeq && (strings.Contains(ev.Message, " failed") || ev.Kind == "reports_dropped") {
				t.Errorf("run %d: event %d: %s %s", i, ev.Seq, ev.Kind, ev.Message)
				bad = true
			}
		}
		if bad {
			var lines []string
			for _, ev := range reported {
				lines = append(lines, fmt.Sprintf("%d %s: %s", ev.Seq, ev.Kind, ev.Message))
			}
			t.Logf("run %d: the agent's events at the hub:\n%s", i, strings.Join(lines, "\n"))
		}
		lastSeq = agentSeq

		t.Logf("run %d (%s): v%d→v%d, killed %v after the assignment (saw %q, hit: %v; hub then: %q, %d bytes partial), ready %v after the kill; reports up to %d; %v",
			i, tr.name, prev, v, killedAt.Sub(assigned).Round(time.Millisecond), seen, hit, phaseAtKill, partial,
			converged.Round(time.Millisecond), agentSeq, time.Since(runStart).Round(time.Millisecond))
	}

	wrongMu.Lock()
	defer wrongMu.Unlock()
	for _, w := range wrong {
		t.Errorf("a wrong answer: %s", w)
	}
	t.Logf("%d predictions answered, %d refused while the agent was down or loading; %v in all",
		answered.Load(), refused.Load(), time.Since(began).Round(time.Millisecond))
	if answered.Load() < 100 {
		t.Errorf("only %d predictions answered", answered.Load())
	}
	if b, _ := os.ReadFile(a.logPath); !strings.Contains(string(b), "resuming an interrupted download") {
		t.Log("no restart resumed a partial download")
	}
}
