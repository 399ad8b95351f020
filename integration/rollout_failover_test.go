package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/plugins/sdk/sdktest"
)

// newFailoverFleet is newRolloutFleet on a three-node hub: every agent is
// given all three addresses, so that it fails over when its node dies.
// failoverAgents is how many agents the fleet has: the issue's "3-node hub
// with 5 agents".
const failoverAgents = 5

func newFailoverFleet(t *testing.T) *rolloutFleet {
	plugins := t.TempDir()
	_, sum, err := sdktest.BuildExample(plugins)
	if err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(plugins, "SHA256SUMS"), []byte(sum+"  centroid\n"), 0o644)
	f := &rolloutFleet{c: startCluster(t, 3), dir: t.TempDir()}
	var tok struct {
		Token string `json:"token"`
	}
	f.c.cli(t, &tok, "tokens", "create", "--role", "agent", "--name", "edge")
	hubs := strings.Join(f.c.addrs(), ",")
	for i := range failoverAgents {
		a := newAgent(t, t.TempDir(), fmt.Sprint("edge-", i+1), "--hub", hubs, "--join-token", tok.Token,
			"--heartbeat-interval", "300ms", "--plugin-dir", plugins, "--metric-window", "1s", "--label", "site=lab")
		a.start()
		f.agents = append(f.agents, a)
	}
	_ = os.WriteFile(filepath.Join(f.dir, "model.json"), []byte(`{"format":"centroid-json","features":["x"],"classes":["lo","hi"],"centroids":[[0],[10]]}`), 0o644)
	_ = os.WriteFile(filepath.Join(f.dir, "schema.json"), []byte(`{"inputs": [{"name": "x", "datatype": "FP64"}]}`), 0o644)
	hubtest.WaitFor(t, 20*time.Second, func() error {
		if l := f.c.agents(t); len(l.Agents) != failoverAgents {
			return fmt.Errorf("%d agents enrolled", len(l.Agents))
		}
		return nil
	})
	return f
}

// rolloutProgress is what the fail-over test reads of a rollout.
type rolloutProgress struct {
	ID        string     `json:"id"`
	State     string     `json:"state"`
	Step      uint32     `json:"step"`
	Reason    string     `json:"reason"`
	StepReady *time.Time `json:"step_ready_time"`
}

// pollRollout waits until cond holds of the rollout, tolerating the CLI
// failing meanwhile (a node is down, an election is under way).
func (f *rolloutFleet) pollRollout(t *testing.T, id string, timeout time.Duration, cond func(rolloutProgress) error) rolloutProgress {
	t.Helper()
	var r rolloutProgress
	hubtest.WaitFor(t, timeout, func() error {
		var now rolloutProgress
		if err := f.c.tryCLI(&now, "rollouts", "status", id); err != nil {
			return err
		}
		r = now
		return cond(r)
	})
	return r
}

// newLeader waits until a node other than old leads, and returns it.
func (c *cluster) newLeader(t *testing.T, old *hubProc) *hubProc {
	t.Helper()
	var leader *hubProc
	hubtest.WaitFor(t, 20*time.Second, func() error {
		st, err := c.status()
		if err != nil {
			return err
		}
		for _, h := range c.hubs {
			if h != old && h.name == st.GetLeader() {
				leader = h
				return nil
			}
		}
		return fmt.Errorf("leader %q", st.GetLeader())
	})
	return leader
}

// rolloutAudit counts a rollout's audit events by action and step
// (1-based, as the summaries number them; 0 where an action names none).
func (f *rolloutFleet) rolloutAudit(t *testing.T, id string, steps int) (map[string]map[int]int, []string) {
	t.Helper()
	var out struct {
		Events []struct {
			Index    uint64 `json:"index"`
			Action   string `json:"action"`
			Resource string `json:"resource"`
			Summary  string `json:"summary"`
		} `json:"events"`
	}
	// --after makes it list oldest first, every page.
	f.c.cli(t, &out, "audit", "--resource", "rollouts/"+id, "--after", "1", "--limit", "1000")
	counts := map[string]map[int]int{}
	var trail []string
	var last uint64
	for _, ev := range out.Events {
		if ev.Resource != "rollouts/"+id {
			continue
		}
		if ev.Index <= last {
			t.Errorf("audit events out of order: %d after %d", ev.Index, last)
		}
		last = ev.Index
		step := 0
		switch ev.Action {
		case "rollout.step_ready":
			_, _ = fmt.Sscanf(ev.Summary, "step %d of", &step)
		case "rollout.advance":
			if _, err := fmt.Sscanf(ev.Summary, "step %d passed", &step); err != nil && strings.HasPrefix(ev.Summary, "every step passed") {
				step = steps
			}
		case "rollout.judge":
			_, _ = fmt.Sscanf(ev.Summary, "step %d:", &step)
		}
		if counts[ev.Action] == nil {
			counts[ev.Action] = map[int]int{}
		}
		counts[ev.Action][step]++
		if ev.Action != "rollout.judge" {
			trail = append(trail, fmt.Sprintf("%d %s: %s", ev.Index, ev.Action, ev.Summary))
		}
	}
	return counts, trail
}

// TestRolloutLeaderFailover kills the hub's leader (SIGKILL) at each step
// of a three-step rollout in turn, once as the step begins and once while
// it bakes, a fresh version each run, under load: every run ends with the
// new version primary everywhere, each step made ready and advanced exactly
// once (the audit trail says so), no rollback, the replicas agree, and no
// request fails.
func TestRolloutLeaderFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-node hub and five agents through six fail-overs")
	}
	began := time.Now()
	f := newFailoverFleet(t)
	v := f.push(t)
	for _, a := range f.agents {
		f.c.cli(t, nil, "agents", "assign", a.name, fmt.Sprintf("centroid:%d", v))
	}
	f.runningEverywhere(t, v)

	const steps = 3
	type run struct {
		step   uint32
		baking bool // killed while the step bakes, not as it begins
	}
	var runs []run
	for k := range uint32(steps) {
		runs = append(runs, run{k, false}, run{k, true})
	}
	stop := f.load(t)
	for i, run := range runs {
		k := run.step
		v := f.push(t)
		var r rolloutJSON
		f.c.cli(t, &r, "rollouts", "start", fmt.Sprintf("centroid:%d", v), "--selector", "site=lab",
			"--step", "agents=1,bake=2s", "--step", "agents=2,bake=2s", "--step", "percent=100,bake=1s",
			"--gate", "error_rate,max=0.05,min-samples=10")
		id := r.ID

		// At step k (0-based), the leader dies.
		at := f.pollRollout(t, id, 30*time.Second, func(p rolloutProgress) error {
			if p.State != "running" || p.Step < k || run.baking && p.Step == k && p.StepReady == nil {
				return fmt.Errorf("%s at step %d", p.State, p.Step)
			}
			return nil
		})
		if at.State != "running" || at.Step != k {
			t.Fatalf("run %d: the rollout went past step %d before the leader could be killed: %+v", i, k, at)
		}
		old := f.c.leader()
		killed := time.Now()
		old.kill()
		leader := f.c.newLeader(t, old)
		t.Logf("run %d: rollout %s of v%d at step %d (baking: %v); killed %s, %s leads %v later",
			i, id, v, at.Step, at.StepReady != nil, old.name, leader.name, time.Since(killed).Round(time.Millisecond))
		old.start()
		old.waitReady(20 * time.Second)

		end := f.pollRollout(t, id, 60*time.Second, func(p rolloutProgress) error {
			if p.State == "running" {
				return fmt.Errorf("still running at step %d", p.Step)
			}
			return nil
		})
		if end.State != "succeeded" {
			t.Fatalf("run %d: rollout %s ended %s: %s", i, id, end.State, end.Reason)
		}
		f.runningEverywhere(t, v)

		counts, trail := f.rolloutAudit(t, id, steps)
		bad := false
		if n := counts["rollout.start"][0]; n != 1 {
			t.Errorf("run %d: %d rollout.start events", i, n)
			bad = true
		}
		for s := 1; s <= steps; s++ {
			if n := counts["rollout.step_ready"][s]; n != 1 {
				t.Errorf("run %d: step %d made ready %d times", i, s, n)
				bad = true
			}
			if n := counts["rollout.advance"][s]; n != 1 {
				t.Errorf("run %d: step %d advanced %d times", i, s, n)
				bad = true
			}
		}
		for action, bySteps := range counts {
			switch action {
			case "rollout.start", "rollout.step_ready", "rollout.advance", "rollout.judge":
			default:
				t.Errorf("run %d: unexpected %s events: %v", i, action, bySteps)
				bad = true
			}
			if action != "rollout.start" && bySteps[0] > 0 {
				t.Errorf("run %d: %d %s events name no step", i, bySteps[0], action)
				bad = true
			}
		}
		if bad {
			t.Logf("run %d: the audit trail of %s:\n%s", i, id, strings.Join(trail, "\n"))
		}

		// The restarted node has caught up: every replica holds the same
		// state.
		f.c.waitConverged(30 * time.Second)
	}
	ok, failed := stop()
	t.Logf("%d requests answered, %d failed, across %d fail-overs; %v in all", ok, failed, len(runs), time.Since(began).Round(time.Millisecond))
	if failed > 0 || ok < 100 {
		t.Errorf("across the fail-overs: %d answered, %d failed", ok, failed)
	}
}
