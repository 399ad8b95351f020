package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/agent/reconcile"
	"github.com/droverhq/drover/internal/logging"
	"github.com/droverhq/drover/plugins/native"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// trainChurn trains a small native classifier: churn is likelier with a
// short tenure and the basic plan.
func trainChurn(t *testing.T) (path string, m *native.Model) {
	t.Helper()
	rng := rand.New(rand.NewPCG(5, 6))
	var tenure []float64
	var plan, churn []string
	for range 400 {
		ten := rng.Float64() * 60
		p := []string{"basic", "pro"}[rng.IntN(2)]
		z := 2 - ten/10 + map[string]float64{"basic": 1, "pro": -1}[p] + rng.NormFloat64()*0.3
		tenure = append(tenure, ten)
		plan = append(plan, p)
		churn = append(churn, map[bool]string{true: "yes", false: "no"}[z > 0])
	}
	m, met, err := native.Train(&native.Dataset{
		Features: []native.Column{{Name: "tenure", Numbers: tenure}, {Name: "plan", Categorical: true, Strings: plan}},
		Target:   native.Column{Categorical: true, Strings: churn},
	}, native.TrainOptions{Seed: 1})
	if err != nil || met["accuracy"] < 0.9 {
		t.Fatalf("training: %v %v", met, err)
	}
	b, err := m.MarshalArtifact()
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "model.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, m
}

func TestServingNativeModels(t *testing.T) {
	path, _ := trainChurn(t)
	rt := newServingRuntime(nil, logging.Discard(), ServingOptions{})
	ctx := context.Background()
	lo := 0.0
	schema := &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{
		{Name: "tenure", Datatype: "FP32", Min: &lo},
		{Name: "plan", Datatype: "BYTES", Kind: droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL, Categories: []string{"basic", "pro"}},
	}}
	primary := droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY
	if err := rt.Load(ctx, &droverv1.DesiredAssignment{Model: "churn", Version: 2, Role: primary, Format: NativeFormat, Schema: schema}, path); err != nil {
		t.Fatal(err)
	}
	// A format no runner serves yet loads, but answers 503.
	other := filepath.Join(t.TempDir(), "model.onnx")
	_ = os.WriteFile(other, []byte("onnx"), 0o644)
	if err := rt.Load(ctx, &droverv1.DesiredAssignment{Model: "vision", Version: 1, Role: primary, Format: "onnx"}, other); err != nil {
		t.Fatal(err)
	}
	// A corrupt native artifact does not load.
	bad := filepath.Join(t.TempDir(), "bad.json")
	_ = os.WriteFile(bad, []byte(`{"format": 1}`), 0o644)
	if err := rt.Load(ctx, &droverv1.DesiredAssignment{Model: "churn", Version: 3, Role: primary, Format: NativeFormat}, bad); err == nil {
		t.Fatal("a broken native artifact loaded")
	}

	srv := httptest.NewServer(oip.NewHandler(rt))
	defer srv.Close()
	post := func(path, body string) (int, map[string]any) {
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var out map[string]any
		_ = json.Unmarshal(raw, &out)
		return resp.StatusCode, out
	}
	req := `{"id":"a","inputs":[{"name":"tenure","datatype":"FP32","shape":[2],"data":[1, 55]},{"name":"plan","datatype":"BYTES","shape":[2],"data":["basic","pro"]}]}`
	for _, p := range []string{"/v2/models/churn/infer", "/v2/models/churn/versions/2/infer"} {
		code, body := post(p, req)
		if code != 200 || body["model_version"] != "2" || body["id"] != "a" {
			t.Fatalf("%s: %d %v", p, code, body)
		}
		outs := body["outputs"].([]any)
		if labels := outs[0].(map[string]any)["data"]; fmt.Sprint(labels) != "[yes no]" {
			t.Errorf("labels %v, want [yes no]", labels)
		}
		if shape := outs[1].(map[string]any)["shape"]; fmt.Sprint(shape) != "[2 2]" {
			t.Errorf("probabilities shape %v", shape)
		}
	}
	if code, body := post("/v2/models/churn/infer", strings.Replace(req, "[1, 55]", "[-1, 55]", 1)); code != 400 || !strings.Contains(fmt.Sprint(body["error"]), "below tenure's minimum 0") {
		t.Errorf("out of range: %d %v", code, body)
	}
	if code, body := post("/v2/models/vision/infer", req); code != 503 || !strings.Contains(fmt.Sprint(body["error"]), `no runner serves format "onnx"`) {
		t.Errorf("onnx: %d %v", code, body)
	}
	if code, _ := post("/v2/models/churn/versions/7/infer", req); code != 404 {
		t.Errorf("an unloaded version: %d", code)
	}
	resp, err := http.Get(srv.URL + "/v2/models/churn")
	if err != nil {
		t.Fatal(err)
	}
	var md oip.ModelMetadata
	_ = json.NewDecoder(resp.Body).Decode(&md)
	resp.Body.Close()
	if md.Platform != NativeFormat || len(md.Inputs) != 2 || md.Outputs[0].Name != "label" || fmt.Sprint(md.Versions) != "[2]" {
		t.Errorf("metadata %+v", md)
	}

	// Unloading stops serving.
	if err := rt.Unload(ctx, reconcile.Key{Model: "churn", Role: primary}, 2); err != nil {
		t.Fatal(err)
	}
	if code, _ := post("/v2/models/churn/infer", req); code != 404 {
		t.Errorf("after unload: %d", code)
	}
}

// A native model pushed without a schema is served with one derived from
// its features.
func TestServingNativeWithoutSchema(t *testing.T) {
	path, _ := trainChurn(t)
	rt := newServingRuntime(nil, logging.Discard(), ServingOptions{})
	if err := rt.Load(context.Background(), &droverv1.DesiredAssignment{Model: "churn", Version: 1, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY, Runner: "native"}, path); err != nil {
		t.Fatal(err)
	}
	m, err := rt.Model("churn", "")
	if err != nil {
		t.Fatal(err)
	}
	r, err := oip.DecodeInferRequest([]byte(`{"inputs":[{"name":"tenure","datatype":"FP64","shape":[1],"data":[3]},{"name":"plan","datatype":"BYTES","shape":[1],"data":["basic"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := m.Infer(context.Background(), r)
	if err != nil || resp.Outputs[0].Strings[0] != "yes" {
		t.Fatalf("%+v %v", resp, err)
	}
}

// TestServingThroughPlugin serves a version through the example runner
// plugin, kills the plugin, and sees the agent answer 503 and then, with
// the plugin started again and the model reloaded, 200.
func TestServingThroughPlugin(t *testing.T) {
	host := startExamplePlugin(t)
	art := filepath.Join(t.TempDir(), "model.json")
	_ = os.WriteFile(art, []byte(`{"format":"centroid-json","features":["x"],"classes":["lo","hi"],"centroids":[[0],[10]]}`), 0o644)

	rt := newServingRuntime(host, logging.Discard(), ServingOptions{})
	primary := droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY
	schema := &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{{Name: "x", Datatype: "FP64"}}}
	if err := rt.Load(context.Background(), &droverv1.DesiredAssignment{Model: "m", Version: 1, Role: primary, Format: "centroid-json", Schema: schema}, art); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(oip.NewHandler(rt))
	defer srv.Close()
	infer := func() (int, string) {
		resp, err := http.Post(srv.URL+"/v2/models/m/infer", "application/json",
			strings.NewReader(`{"inputs":[{"name":"x","datatype":"FP64","shape":[3],"data":[1,9,4]}]}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := infer(); code != 200 || !strings.Contains(body, `"data":["lo","hi","lo"]`) {
		t.Fatalf("through the plugin: %d %s", code, body)
	}
	m, _ := rt.Model("m", "")
	if md := m.Metadata(); len(md.Outputs) != 1 || md.Outputs[0].Name != "label" || !m.Ready() {
		t.Fatalf("metadata %+v, ready %v", md, m.Ready())
	}

	hp := host.forFormat("centroid-json")
	hp.mu.Lock()
	pid := hp.client.Pid()
	hp.mu.Unlock()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for hp.alive() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if m.Ready() {
		t.Fatal("a model whose plugin died is still ready")
	}
	// The first request after the death restarts the plugin and reloads
	// the model; within the back-off it is answered.
	var code int
	var body string
	for time.Now().Before(deadline.Add(5 * time.Second)) {
		if code, body = infer(); code == 200 {
			break
		}
		if code != 503 {
			t.Fatalf("while the plugin is down: %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != 200 || !strings.Contains(body, `"data":["lo","hi","lo"]`) {
		t.Fatalf("after the restart: %d %s", code, body)
	}
	if err := rt.Unload(context.Background(), reconcile.Key{Model: "m", Role: primary}, 1); err != nil {
		t.Fatal(err)
	}
}

// threeClasses writes a native classifier of three classes over one
// feature x, with weights scaled by w: with a large w, an input of 1e300
// overflows its logits.
func threeClasses(t *testing.T, w float64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.json")
	b := fmt.Sprintf(`{"format": 1, "task": "classification", "classes": ["a", "b", "c"],
	  "encoder": {"features": [{"name": "x", "std": 0.5}]}, "weights": [[%g], [%g], [%g]], "intercepts": [0, 0, 0]}`, w, 2*w, 3*w)
	if err := os.WriteFile(path, []byte(b), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestServingNotFinite answers 400 to inputs a native model cannot turn
// into finite probabilities (they used to take the handler down), and a
// shadow that meets one counts an error without taking the agent down.
func TestServingNotFinite(t *testing.T) {
	rt := newServingRuntime(nil, logging.Discard(), ServingOptions{})
	loadNative(t, rt, "m", 1, primaryRole, 0, threeClasses(t, 1))
	loadNative(t, rt, "big", 1, primaryRole, 0, threeClasses(t, 1e8))
	srv := httptest.NewServer(oip.NewHandler(rt))
	defer srv.Close()
	infer := func(model, x string) (int, string) {
		t.Helper()
		resp, err := http.Post(srv.URL+"/v2/models/"+model+"/infer", "application/json",
			strings.NewReader(`{"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[`+x+`]}]}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := infer("big", "1"); code != 200 || !strings.Contains(body, `"data":["c"]`) {
		t.Errorf("x=1: %d %s", code, body)
	}
	for _, x := range []string{"1e300", "1e308"} {
		if code, body := infer("big", x); code != 400 || !strings.Contains(body, "not a finite number") {
			t.Errorf("x=%s: %d %s", x, code, body)
		}
	}
	// The model with small weights answers 1e300; its shadow, with large
	// ones, cannot.
	loadNative(t, rt, "m", 2, shadowRole, 0, threeClasses(t, 1e8))
	if code, body := infer("m", "1e300"); code != 200 || !strings.Contains(body, `"data":["c"]`) {
		t.Fatalf("x=1e300: %d %s", code, body)
	}
	counter := rt.shadows.requests.WithLabelValues("m", "2", "error")
	for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(counter) != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the shadow's error was not counted")
		}
	}
}

// panicRunner is a runner whose predictions panic.
type panicRunner struct{}

func (panicRunner) load(context.Context, *runnerv1.LoadRequest) (*runnerv1.LoadResponse, error) {
	return &runnerv1.LoadResponse{}, nil
}
func (panicRunner) predict(context.Context, *runnerv1.PredictRequest) (*runnerv1.PredictResponse, error) {
	panic("runner bug")
}
func (panicRunner) unload(context.Context, string) error { return nil }
func (panicRunner) health(string) servingHealth          { return servingHealth{ok: true} }
func (panicRunner) String() string                       { return "panicking runner" }

// TestShadowPanic keeps the agent up when a shadow panics answering a
// mirrored request: the panic is counted, the caller has its answer.
func TestShadowPanic(t *testing.T) {
	rt := newServingRuntime(nil, logging.Discard(), ServingOptions{})
	loadNative(t, rt, "m", 1, primaryRole, 0, threeClasses(t, 1))
	routed := *(*rt.routes.Load())["m"]
	routed.shadow = &servedVersion{model: "m", version: 2, name: "2", role: shadowRole, runner: panicRunner{}, runnerID: "m/shadow/v2-1", drained: make(chan struct{})}
	resp, err := routed.Infer(context.Background(), &oip.InferRequest{Inputs: []*oip.Tensor{{Name: "x", Datatype: oip.FP64, Shape: []int64{1}, Numbers: []float64{1}}}})
	if err != nil || resp.ModelVersion != "1" {
		t.Fatalf("%v %v", resp, err)
	}
	counter := rt.shadows.requests.WithLabelValues("m", "2", "panic")
	for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(counter) != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the shadow's panic was not counted")
		}
	}
}
