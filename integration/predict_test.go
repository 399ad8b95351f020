package integration

import (
	"encoding/json"
	"errors"
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

// pushNative trains a native churn classifier (churn likelier with a short
// tenure, or a long one when flip is set) and pushes it with a schema.
func (c *cluster) pushNative(t testing.TB, flip bool) uint64 {
	t.Helper()
	rng := rand.New(rand.NewPCG(9, 9))
	var tenure []float64
	var plan, churn []string
	for range 300 {
		ten := rng.Float64() * 60
		p := []string{"basic", "pro"}[rng.IntN(2)]
		short := ten < 20
		tenure, plan = append(tenure, ten), append(plan, p)
		churn = append(churn, map[bool]string{true: "yes", false: "no"}[short != flip])
	}
	m, _, err := native.Train(&native.Dataset{
		Features: []native.Column{{Name: "tenure", Numbers: tenure}, {Name: "plan", Categorical: true, Strings: plan}},
		Target:   native.Column{Categorical: true, Strings: churn},
	}, native.TrainOptions{Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	art, _ := m.MarshalArtifact()
	schema := `{"inputs": [
	  {"name": "tenure", "datatype": "FP32", "kind": "FEATURE_KIND_NUMERIC", "min": 0},
	  {"name": "plan", "datatype": "BYTES", "kind": "FEATURE_KIND_CATEGORICAL", "categories": ["basic", "pro"]}]}`
	for name, b := range map[string][]byte{"model.json": art, "schema.json": []byte(schema)} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var v struct {
		Version uint64 `json:"version"`
	}
	c.cli(t, &v, "models", "push", "churn", "--create", "--file", filepath.Join(dir, "model.json"),
		"--format", "drover-native", "--runner", "native", "--schema", filepath.Join(dir, "schema.json"))
	return v.Version
}

// TestPredictionsEndToEnd pushes a natively trained model to a hub
// process, assigns it to an agent process, and asks the agent for
// predictions over the Open Inference Protocol; then moves to a new
// version and sees the answers change.
func TestPredictionsEndToEnd(t *testing.T) {
	c := startCluster(t, 1)
	var tok struct {
		Token string `json:"token"`
	}
	c.cli(t, &tok, "tokens", "create", "--role", "agent", "--name", "edge")
	a := newAgent(t, t.TempDir(), "edge-1", "--hub", c.hubs[0].httpAddr, "--join-token", tok.Token, "--heartbeat-interval", "300ms",
		"--sample-rate", "1") // every prediction kept, for the feedback below
	a.start()
	hubtest.WaitFor(t, 20*time.Second, func() error {
		if l := c.agents(t); len(l.Agents) != 1 {
			return fmt.Errorf("%d agents enrolled", len(l.Agents))
		}
		return nil
	})

	v1 := c.pushNative(t, false)
	c.cli(t, nil, "agents", "assign", "edge-1", fmt.Sprintf("churn:%d", v1))
	c.waitRunning(t, "edge-1", "churn", v1, 20*time.Second)

	infer := func(body string) (int, map[string]any) {
		resp, err := http.Post("http://"+a.serveAddr+"/v2/models/churn/infer", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var out map[string]any
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%v: %s", err, raw)
		}
		return resp.StatusCode, out
	}
	req := `{"id": "q1", "inputs": [
	  {"name": "tenure", "datatype": "FP32", "shape": [2], "data": [2, 50]},
	  {"name": "plan", "datatype": "BYTES", "shape": [2], "data": ["basic", "pro"]}]}`
	labels := func(body map[string]any) string {
		outs, _ := body["outputs"].([]any)
		if len(outs) == 0 {
			return fmt.Sprint(body)
		}
		return fmt.Sprint(outs[0].(map[string]any)["data"])
	}
	code, body := infer(req)
	if code != 200 || body["id"] != "q1" || body["model_version"] != fmt.Sprint(v1) || labels(body) != "[yes no]" {
		t.Fatalf("v%d: %d %v", v1, code, body)
	}
	// The schema pushed with the version is enforced at the agent.
	if code, body := infer(strings.Replace(req, `"pro"`, `"gold"`, 1)); code != 400 || !strings.Contains(fmt.Sprint(body["error"]), `"gold" is not a category of plan`) {
		t.Fatalf("bad category: %d %v", code, body)
	}

	// Counted on the agent's /metrics, by model, version and status.
	resp, err := http.Get("http://" + a.serveAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		fmt.Sprintf(`drover_agent_inference_requests_total{code="200",model="churn",version="%d"} 1`, v1),
		// A refused request is counted against the version that refused it.
		fmt.Sprintf(`drover_agent_inference_requests_total{code="400",model="churn",version="%d"} 1`, v1),
		fmt.Sprintf(`drover_agent_inference_rows_total{model="churn",version="%d"} 2`, v1),
		fmt.Sprintf(`drover_agent_inference_duration_seconds_count{model="churn",version="%d"} 1`, v1),
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("the agent's metrics lack %s", want)
		}
	}

	// Feedback: the true labels of request q1 (answered [yes no]) are
	// [yes yes]; the agent joins them to its kept prediction and counts
	// accuracy 1/2 in v1's window.
	labelFile := filepath.Join(t.TempDir(), "labels.csv")
	_ = os.WriteFile(labelFile, []byte("id,label\nq1,yes\nq1,yes\n"), 0o600)
	var fb struct {
		Joined  int      `json:"joined"`
		Unknown []string `json:"unknown"`
	}
	hubtest.WaitFor(t, 10*time.Second, func() error { // the kept predictions are written once a second
		c.cli(t, &fb, "feedback", "--agent", a.serveAddr, "--model", "churn", "--file", labelFile)
		if fb.Joined != 1 {
			return fmt.Errorf("feedback: %+v", fb)
		}
		return nil
	})

	// And in the agent's metric windows.
	resp, err = http.Get("http://" + a.serveAddr + "/v1/windows?model=churn")
	if err != nil {
		t.Fatal(err)
	}
	var windows struct {
		Current []struct {
			Version      string  `json:"version"`
			Requests     int     `json:"requests"`
			ClientErrors int     `json:"client_errors"`
			P50          float64 `json:"p50_seconds"`
			Feedback     struct {
				Labeled  int      `json:"labeled_rows"`
				Accuracy *float64 `json:"accuracy"`
			} `json:"feedback"`
		} `json:"current"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&windows)
	resp.Body.Close()
	var answered, refused int
	for _, w := range windows.Current {
		if w.Version == fmt.Sprint(v1) && w.P50 > 0 {
			answered += w.Requests - w.ClientErrors
		}
		refused += w.ClientErrors
	}
	labelled := 0
	for _, w := range windows.Current {
		if w.Feedback.Labeled > 0 {
			labelled += w.Feedback.Labeled
			if w.Feedback.Accuracy == nil || *w.Feedback.Accuracy != 0.5 {
				t.Errorf("feedback accuracy: %+v", w.Feedback)
			}
		}
	}
	if answered != 1 || refused != 1 || labelled != 2 {
		t.Errorf("metric windows: %+v", windows.Current)
	}

	v2 := c.pushNative(t, true)
	c.cli(t, nil, "agents", "assign", "edge-1", fmt.Sprintf("churn:%d", v2))
	hubtest.WaitFor(t, 20*time.Second, func() error {
		code, body := infer(req)
		if code != 200 || body["model_version"] != fmt.Sprint(v2) || labels(body) != "[no yes]" {
			return fmt.Errorf("%d %v", code, body)
		}
		return nil
	})

	// v1 as a canary taking 30% of the requests, sticky by request id.
	c.cli(t, nil, "agents", "assign", "edge-1", fmt.Sprintf("churn:%d", v1), "--role", "canary", "--weight", "30")
	withID := func(id string) string { return strings.Replace(req, `"id": "q1"`, fmt.Sprintf(`"id": %q`, id), 1) }
	hubtest.WaitFor(t, 20*time.Second, func() error {
		for i := range 50 {
			if _, body := infer(withID(fmt.Sprint("probe-", i))); body["model_version"] == fmt.Sprint(v1) {
				return nil
			}
		}
		return errors.New("the canary answers nothing yet")
	})
	byID := map[string]any{}
	canary := 0
	for i := range 300 {
		id := fmt.Sprint("customer-", i)
		code, body := infer(withID(id))
		if code != 200 {
			t.Fatalf("%d %v", code, body)
		}
		byID[id] = body["model_version"]
		if body["model_version"] == fmt.Sprint(v1) {
			canary++
		}
	}
	if canary < 60 || canary > 120 { // 30% of 300, ±3.8 standard deviations
		t.Errorf("the canary at weight 30 answered %d of 300 requests", canary)
	}
	for i := range 20 {
		id := fmt.Sprint("customer-", i)
		if _, body := infer(withID(id)); body["model_version"] != byID[id] {
			t.Errorf("request id %s went to v%v, then to v%v", id, byID[id], body["model_version"])
		}
	}

	// v1 as a shadow instead: the caller always gets v2, and the agent
	// counts how often v1 would have agreed (never: its labels are the
	// opposite).
	c.cli(t, nil, "agents", "unassign", "edge-1", "churn", "--role", "canary")
	c.cli(t, nil, "agents", "assign", "edge-1", fmt.Sprintf("churn:%d", v1), "--role", "shadow")
	shadowRows := fmt.Sprintf(`drover_agent_shadow_rows_total{agreement="disagree",model="churn",version="%d"}`, v1)
	hubtest.WaitFor(t, 20*time.Second, func() error {
		if code, body := infer(req); code != 200 || body["model_version"] != fmt.Sprint(v2) {
			return fmt.Errorf("with a shadow: %d %v", code, body)
		}
		resp, err := http.Get("http://" + a.serveAddr + "/metrics")
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), shadowRows) {
			return errors.New("no shadow comparisons counted yet")
		}
		return nil
	})
}
