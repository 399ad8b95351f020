package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/plugins/sdk/sdktest"
)

// rolloutFleet is a one-node hub with three agents serving the example
// plugin's centroid model, reporting one-second metric windows.
type rolloutFleet struct {
	c      *cluster
	agents []*agentProc
	dir    string
}

func newRolloutFleet(t *testing.T) *rolloutFleet {
	plugins := t.TempDir()
	_, sum, err := sdktest.BuildExample(plugins)
	if err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(plugins, "SHA256SUMS"), []byte(sum+"  centroid\n"), 0o644)
	f := &rolloutFleet{c: startCluster(t, 1), dir: t.TempDir()}
	var tok struct {
		Token string `json:"token"`
	}
	f.c.cli(t, &tok, "tokens", "create", "--role", "agent", "--name", "edge")
	for i := range 3 {
		a := newAgent(t, t.TempDir(), fmt.Sprint("edge-", i+1), "--hub", f.c.hubs[0].httpAddr, "--join-token", tok.Token,
			"--heartbeat-interval", "300ms", "--plugin-dir", plugins, "--metric-window", "1s", "--label", "site=lab",
			"--drift-window", "1s", "--drift-report-interval", "1s")
		a.start()
		f.agents = append(f.agents, a)
	}
	_ = os.WriteFile(filepath.Join(f.dir, "model.json"), []byte(`{"format":"centroid-json","features":["x"],"classes":["lo","hi"],"centroids":[[0],[10]]}`), 0o644)
	_ = os.WriteFile(filepath.Join(f.dir, "schema.json"), []byte(`{"inputs": [{"name": "x", "datatype": "FP64"}]}`), 0o644)
	hubtest.WaitFor(t, 20*time.Second, func() error {
		if l := f.c.agents(t); len(l.Agents) != 3 {
			return fmt.Errorf("%d agents enrolled", len(l.Agents))
		}
		return nil
	})
	return f
}

// push registers the next version of the centroid model with params.
func (f *rolloutFleet) push(t *testing.T, params ...string) uint64 {
	t.Helper()
	return f.pushWith(t, nil, params...)
}

// pushWith registers the next version with more push flags.
func (f *rolloutFleet) pushWith(t *testing.T, flags []string, params ...string) uint64 {
	t.Helper()
	args := []string{"models", "push", "centroid", "--create", "--file", filepath.Join(f.dir, "model.json"), "--format", "centroid-json",
		"--runner", "centroid", "--schema", filepath.Join(f.dir, "schema.json")}
	args = append(args, flags...)
	for _, p := range params {
		args = append(args, "--param", p)
	}
	var v struct {
		Version uint64 `json:"version"`
	}
	f.c.cli(t, &v, args...)
	return v.Version
}

// load sends requests to every agent until stop is called, and returns
// how many were answered and how many failed.
func (f *rolloutFleet) load(t *testing.T) (stop func() (ok, failed int64)) {
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	done := make(chan struct{})
	client := &http.Client{Timeout: 10 * time.Second}
	for _, a := range f.agents {
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
					if err != nil {
						failed.Add(1)
						continue
					}
					resp.Body.Close()
					if resp.StatusCode == 200 {
						ok.Add(1)
					} else {
						failed.Add(1)
					}
					time.Sleep(5 * time.Millisecond)
				}
			})
		}
	}
	return func() (int64, int64) {
		close(done)
		wg.Wait()
		return ok.Load(), failed.Load()
	}
}

type rolloutJSON struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Reason string `json:"reason"`
	Agents []struct {
		Name  string `json:"name"`
		Phase string `json:"phase"`
	} `json:"agents"`
	Judgements []map[string]any `json:"judgements"`
}

// waitRollout waits until the rollout has ended, and returns it.
func (f *rolloutFleet) waitRollout(t *testing.T, id string, timeout time.Duration) rolloutJSON {
	t.Helper()
	var r rolloutJSON
	hubtest.WaitFor(t, timeout, func() error {
		f.c.cli(t, &r, "rollouts", "status", id)
		if r.State == "running" {
			return fmt.Errorf("still running: %+v", r)
		}
		return nil
	})
	return r
}

// runningEverywhere waits until every agent serves version v as primary.
func (f *rolloutFleet) runningEverywhere(t *testing.T, v uint64) {
	t.Helper()
	for _, a := range f.agents {
		f.c.waitRunning(t, a.name, "centroid", v, 30*time.Second)
	}
}

// TestRolloutGates rolls a good version through two steps under load with
// no failed request; then a version that fails every fifth batch, which
// its error-rate gate rolls back; a slow version, which its latency gate
// rolls back with no failed request; a version whose inputs drift from its
// training data, which its drift gate rolls back; and checks that a
// rejected version needs --force.
func TestRolloutGates(t *testing.T) {
	f := newRolloutFleet(t)
	v1 := f.push(t)
	for _, a := range f.agents {
		f.c.cli(t, nil, "agents", "assign", a.name, fmt.Sprintf("centroid:%d", v1))
	}
	f.runningEverywhere(t, v1)

	gatesFlags := []string{"--gate", "error_rate,max=0.05,min-samples=20", "--gate", "latency_p95,max=0.02,min-samples=20"}
	start := func(v uint64, extra ...string) string {
		t.Helper()
		args := append([]string{"rollouts", "start", fmt.Sprintf("centroid:%d", v), "--selector", "site=lab",
			"--step", "agents=1,bake=2s", "--step", "percent=100,bake=1s"}, gatesFlags...)
		var r rolloutJSON
		f.c.cli(t, &r, append(args, extra...)...)
		return r.ID
	}

	// A good version goes everywhere, with nothing failing on the way,
	// followed live with `drover rollouts watch` (the hub's server stream).
	v2 := f.push(t)
	stop := f.load(t)
	id := start(v2)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	out, err := exec.CommandContext(ctx, droverBin, "--addr", strings.Join(f.c.addrs(), ","), "--token", f.c.token, "--json",
		"rollouts", "watch", id).Output()
	cancel()
	if err != nil {
		t.Fatalf("rollouts watch %s: %v\n%s", id, err, out)
	}
	var watched []rolloutJSON
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var w rolloutJSON
		if err := json.Unmarshal([]byte(line), &w); err != nil {
			t.Fatalf("rollouts watch printed %q: %v", line, err)
		}
		watched = append(watched, w)
	}
	if len(watched) < 2 || watched[len(watched)-1].State != "succeeded" {
		t.Errorf("rollouts watch saw %d changes, the last %+v; want several, ending succeeded", len(watched), watched[len(watched)-1])
	}
	r := f.waitRollout(t, id, 60*time.Second)
	ok, failed := stop()
	if r.State != "succeeded" {
		t.Fatalf("the good version: %+v", r)
	}
	f.runningEverywhere(t, v2)
	if failed > 0 || ok < 100 {
		t.Errorf("during the clean rollout: %d answered, %d failed", ok, failed)
	}

	// A version that fails one batch in five: rolled back by its error
	// gate, the version rejected, every agent back on v2.
	v3 := f.push(t, "fail_every=5")
	stop = f.load(t)
	r = f.waitRollout(t, start(v3), 60*time.Second)
	stop()
	if r.State != "rolled_back" || !strings.Contains(r.Reason, "error_rate") {
		t.Fatalf("the failing version: %+v", r)
	}
	f.runningEverywhere(t, v2)
	var mv struct {
		State       string `json:"state"`
		StateReason string `json:"state_reason"`
	}
	f.c.cli(t, &mv, "models", "show", fmt.Sprintf("centroid:%d", v3))
	if mv.State != "rejected" {
		t.Errorf("v%d after its rollback: %+v", v3, mv)
	}

	// A slow version: rolled back by its latency gate, and no request
	// fails, on the way there or back.
	v4 := f.push(t, "predict_delay=40ms")
	stop = f.load(t)
	r = f.waitRollout(t, start(v4), 60*time.Second)
	ok, failed = stop()
	if r.State != "rolled_back" || !strings.Contains(r.Reason, "latency_p95") {
		t.Fatalf("the slow version: %+v", r)
	}
	if failed > 0 {
		t.Errorf("during the rollback: %d answered, %d failed", ok, failed)
	}
	f.runningEverywhere(t, v2)

	// A version whose inputs drift: its training data had x spread evenly
	// over [0, 10); the traffic has only 1s and 9s. Its drift gate rolls
	// it back.
	var csv strings.Builder
	csv.WriteString("x\n")
	for i := range 2000 {
		fmt.Fprintf(&csv, "%g\n", float64(i%1000)/100)
	}
	_ = os.WriteFile(filepath.Join(f.dir, "train.csv"), []byte(csv.String()), 0o644)
	v5 := f.pushWith(t, []string{"--dataset", filepath.Join(f.dir, "train.csv")})
	stop = f.load(t)
	var dr rolloutJSON
	f.c.cli(t, &dr, "rollouts", "start", fmt.Sprintf("centroid:%d", v5), "--step", "agents=1,bake=3s", "--step", "percent=100",
		"--gate", "error_rate,max=0.05,min-samples=20", "--gate", "drift_share,max=0.5,min-samples=20")
	r = f.waitRollout(t, dr.ID, 60*time.Second)
	stop()
	if r.State != "rolled_back" || !strings.Contains(r.Reason, "drift_share") {
		t.Fatalf("the drifting version: %+v", r)
	}
	f.runningEverywhere(t, v2)

	// A rejected version rolls out again only with --force.
	if err := f.c.tryCLI(nil, "rollouts", "start", fmt.Sprintf("centroid:%d", v3), "--step", "percent=100"); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("rolling out a rejected version without --force: %v", err)
	}
}

// TestRolloutOfflineAgent kills one of three agents as a rollout starts:
// with a minimum healthy share of 0.6 the step goes on without it at the
// progress deadline; with 1 the rollout rolls back, saying why.
func TestRolloutOfflineAgent(t *testing.T) {
	f := newRolloutFleet(t)
	v1 := f.push(t)
	for _, a := range f.agents {
		f.c.cli(t, nil, "agents", "assign", a.name, fmt.Sprintf("centroid:%d", v1))
	}
	f.runningEverywhere(t, v1)
	f.agents[2].kill()

	v2 := f.push(t)
	var r rolloutJSON
	f.c.cli(t, &r, "rollouts", "start", fmt.Sprintf("centroid:%d", v2), "--step", "percent=100,deadline=3s,min-healthy=0.6")
	if r = f.waitRollout(t, r.ID, 30*time.Second); r.State != "succeeded" {
		t.Fatalf("with a minimum healthy share of 0.6: %+v", r)
	}
	for _, a := range f.agents[:2] {
		f.c.waitRunning(t, a.name, "centroid", v2, 10*time.Second)
	}

	v3 := f.push(t)
	f.c.cli(t, &r, "rollouts", "start", fmt.Sprintf("centroid:%d", v3), "--step", "percent=100,deadline=3s")
	if r = f.waitRollout(t, r.ID, 30*time.Second); r.State != "rolled_back" || !strings.Contains(r.Reason, "2 of 3 agents") {
		t.Fatalf("with every agent required: %+v", r)
	}
}
