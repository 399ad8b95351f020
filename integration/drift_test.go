package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/plugins/native"
)

// TestFleetDrift pushes a native model with its training data (push builds
// the reference profile), serves it from an agent process, sends it traffic like the training data and then traffic
// that is not, and follows the drift verdict on the agent (/v1/drift) and
// at the hub (drover drift show, drover drift events) — with only
// sketches leaving the agent.
func TestFleetDrift(t *testing.T) {
	c := startCluster(t, 1)
	rng := rand.New(rand.NewPCG(4, 2))
	// Training data: tenure uniform on [0, 60), plan basic or pro; churn
	// when tenure is short.
	n := 3000
	tenure := make([]float64, n)
	plan, label := make([]string, n), make([]string, n)
	for i := range n {
		tenure[i] = rng.Float64() * 60
		plan[i] = []string{"basic", "pro"}[rng.IntN(2)]
		label[i] = map[bool]string{true: "yes", false: "no"}[tenure[i] < 20]
	}
	m, _, err := native.Train(&native.Dataset{
		Features: []native.Column{{Name: "tenure", Numbers: tenure}, {Name: "plan", Categorical: true, Strings: plan}},
		Target:   native.Column{Categorical: true, Strings: label},
	}, native.TrainOptions{Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	// The training data, as a CSV file: push builds the reference profile
	// from it (with the model's own predictions over it).
	dir := t.TempDir()
	csv := "tenure,plan,churn\n"
	for i := range n {
		csv += fmt.Sprintf("%g,%s,%s\n", tenure[i], plan[i], label[i])
	}
	art, _ := m.MarshalArtifact()
	for name, b := range map[string][]byte{"model.json": art, "train.csv": []byte(csv)} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var v struct {
		Version uint64 `json:"version"`
	}
	c.cli(t, &v, "models", "push", "churn", "--create", "--file", filepath.Join(dir, "model.json"), "--format", "drover-native",
		"--runner", "native", "--dataset", filepath.Join(dir, "train.csv"), "--target", "churn")

	var tok struct {
		Token string `json:"token"`
	}
	c.cli(t, &tok, "tokens", "create", "--role", "agent", "--name", "edge")
	a := newAgent(t, t.TempDir(), "edge-1", "--hub", c.hubs[0].httpAddr, "--join-token", tok.Token, "--heartbeat-interval", "300ms",
		"--drift-window", "1s", "--drift-evaluation", "3s", "--drift-report-interval", "1s")
	a.start()
	hubtest.WaitFor(t, 20*time.Second, func() error {
		if l := c.agents(t); len(l.Agents) != 1 {
			return fmt.Errorf("%d agents enrolled", len(l.Agents))
		}
		return nil
	})
	c.cli(t, nil, "agents", "assign", "edge-1", fmt.Sprintf("churn:%d", v.Version))
	c.waitRunning(t, "edge-1", "churn", v.Version, 20*time.Second)

	// send posts batches of 50 rows, tenure uniform on [lo, hi).
	send := func(lo, hi float64, batches int) {
		t.Helper()
		for range batches {
			var ten []string
			var pl []string
			for range 50 {
				ten = append(ten, fmt.Sprintf("%.2f", lo+rng.Float64()*(hi-lo)))
				pl = append(pl, []string{`"basic"`, `"pro"`}[rng.IntN(2)])
			}
			body := fmt.Sprintf(`{"inputs":[{"name":"tenure","datatype":"FP64","shape":[50],"data":[%s]},{"name":"plan","datatype":"BYTES","shape":[50],"data":[%s]}]}`,
				strings.Join(ten, ","), strings.Join(pl, ","))
			resp, err := http.Post("http://"+a.serveAddr+"/v2/models/churn/infer", "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("infer: %d", resp.StatusCode)
			}
		}
	}
	type showView struct {
		Rows    uint64 `json:"rows"`
		Dataset struct {
			Drifted    bool    `json:"drifted"`
			DriftShare float64 `json:"drift_share"`
		} `json:"dataset"`
		Features []struct {
			Name      string `json:"name"`
			Verdict   string `json:"verdict"`
			Method    string `json:"method"`
			Histogram *struct {
				Reference []uint64 `json:"reference"`
				Current   []uint64 `json:"current"`
			} `json:"histogram"`
		} `json:"features"`
	}
	// show reads the hub's view of the last few seconds; under load the
	// newest windows may not have arrived yet, which is an error to retry.
	show := func() (showView, error) {
		var s showView
		err := c.tryCLI(&s, "drift", "show", fmt.Sprintf("churn:%d", v.Version), "--window", "3s")
		return s, err
	}

	// Traffic like the training data: no drift, at the agent or the hub.
	deadline := time.Now().Add(30 * time.Second)
	var s showView
	for {
		send(0, 60, 10)
		time.Sleep(300 * time.Millisecond)
		if err := c.tryCLI(&s, "drift", "show", fmt.Sprintf("churn:%d", v.Version), "--window", "3s"); err == nil && s.Rows >= 500 {
			break
		}
		if time.Now().After(deadline) {
			resp, err := http.Get("http://" + a.serveAddr + "/metrics")
			var lines []string
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				for _, l := range strings.Split(string(b), "\n") {
					if strings.Contains(l, "drift") || strings.Contains(l, "outbox") || strings.Contains(l, "reports_") {
						lines = append(lines, l)
					}
				}
			}
			t.Fatalf("no drift windows reached the hub: %+v\nthe agent's metrics:\n%s", s, strings.Join(lines, "\n"))
		}
	}
	if s.Dataset.Drifted || len(s.Features) != 2 {
		t.Fatalf("traffic like the reference drifts: %+v", s)
	}
	if s.Features[0].Histogram == nil || len(s.Features[0].Histogram.Reference) != len(s.Features[0].Histogram.Current) {
		t.Errorf("no histogram of tenure: %+v", s.Features[0])
	}

	// Then only long-tenure customers: tenure drifts, plan does not.
	hubtest.WaitFor(t, 30*time.Second, func() error {
		send(45, 60, 10)
		var err error
		if s, err = show(); err != nil {
			return err
		}
		if !s.Dataset.Drifted {
			return fmt.Errorf("no drift yet: %+v", s)
		}
		return nil
	})
	for _, f := range s.Features {
		if want := map[string]string{"tenure": "drift", "plan": "no_drift"}[f.Name]; f.Verdict != want {
			t.Errorf("%s: %s by %s, want %s", f.Name, f.Verdict, f.Method, want)
		}
	}
	// The hub recorded the change, and the agent knows too.
	hubtest.WaitFor(t, 10*time.Second, func() error {
		var ev struct {
			Events []struct {
				Verdict         string   `json:"verdict"`
				DriftedFeatures []string `json:"drifted_features"`
			} `json:"events"`
		}
		c.cli(t, &ev, "drift", "events", "churn")
		for _, e := range ev.Events {
			if e.Verdict == "drift" && strings.Contains(strings.Join(e.DriftedFeatures, ","), "tenure") {
				return nil
			}
		}
		return fmt.Errorf("no drift event: %+v", ev)
	})
	resp, err := http.Get("http://" + a.serveAddr + "/v1/drift?model=churn")
	if err != nil {
		t.Fatal(err)
	}
	var local struct {
		Versions []struct {
			Report struct {
				Dataset struct {
					Drifted bool `json:"drifted"`
				} `json:"dataset"`
			} `json:"report"`
		} `json:"versions"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&local)
	resp.Body.Close()
	if len(local.Versions) != 1 || !local.Versions[0].Report.Dataset.Drifted {
		t.Errorf("the agent's own verdict: %+v", local)
	}
}
