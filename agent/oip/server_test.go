package oip

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// sumModel adds its inputs' numeric features row by row: enough of a model
// to exercise the protocol.
type sumModel struct {
	name, version string
	schema        *Schema
	ready         bool
	fail          error
}

func (m *sumModel) Metadata() ModelMetadata {
	return m.schema.Metadata(m.name, "test", []string{m.version})
}
func (m *sumModel) Ready() bool { return m.ready }
func (m *sumModel) Infer(ctx context.Context, r *InferRequest) (*InferResponse, error) {
	if m.fail != nil {
		return nil, m.fail
	}
	rows, err := m.schema.Check(r)
	if err != nil {
		return nil, err
	}
	sum := make([]float64, rows)
	for _, in := range r.Inputs {
		if in.Datatype == Bytes {
			continue
		}
		per := in.Len() / rows
		for i, v := range in.Numbers {
			sum[i/per] += v
		}
	}
	return &InferResponse{ModelName: m.name, ModelVersion: m.version, Outputs: []*Tensor{
		{Name: "probability", Datatype: FP64, Shape: []int64{int64(rows)}, Numbers: sum},
		{Name: "label", Datatype: Bytes, Shape: []int64{int64(rows)}, Strings: make([]string, rows)},
	}}, nil
}

type testBackend struct {
	ready  bool
	models map[string]*sumModel // by "name" and "name/version"
}

func (b *testBackend) Ready() bool { return b.ready }
func (b *testBackend) Metadata() ServerMetadata {
	return ServerMetadata{Name: "drover-agent", Version: "test", Extensions: []string{}}
}
func (b *testBackend) Model(name, version string) (Model, error) {
	key := name
	if version != "" {
		key += "/" + version
	}
	if m, ok := b.models[key]; ok {
		return m, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrModelNotFound, key)
}

func newTestServer(t *testing.T) (*httptest.Server, *testBackend, *[]int) {
	srv, b, refused, _ := newObservedServer(t)
	return srv, b, refused
}

func newObservedServer(t *testing.T) (*httptest.Server, *testBackend, *[]int, func() []Observation) {
	t.Helper()
	s := churnSchema(t)
	s.outputs = append(s.outputs, &droverv1.Feature{Name: "label", Datatype: "BYTES"})
	m := &sumModel{name: "churn", version: "3", schema: s, ready: true}
	b := &testBackend{ready: true, models: map[string]*sumModel{"churn": m, "churn/3": m,
		"churn/2": {name: "churn", version: "2", schema: s}}}
	h := NewHandler(b)
	var refused []int
	h.OnError = func(status int, _ error) { refused = append(refused, status) }
	var mu sync.Mutex
	var seen []Observation
	h.Observe = func(o Observation) {
		mu.Lock()
		seen = append(seen, o)
		mu.Unlock()
	}
	h.MaxBody = 4096
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, b, &refused, func() []Observation {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

func TestObserve(t *testing.T) {
	srv, _, _, seen := newObservedServer(t)
	call(t, "POST", srv.URL+"/v2/models/churn/infer", goodRequest)
	call(t, "POST", srv.URL+"/v2/models/churn/versions/9/infer", goodRequest)
	call(t, "POST", srv.URL+"/v2/models/churn/infer", strings.Replace(goodRequest, `"pro"`, `"gold"`, 1))
	call(t, "GET", srv.URL+"/v2/models/churn", "")
	got := seen()
	if len(got) != 3 {
		t.Fatalf("%d observations for 3 inference requests: %+v", len(got), got)
	}
	ok, missing, bad := got[0], got[1], got[2]
	if ok.Status != 200 || ok.Model != "churn" || ok.Version != "3" || ok.Rows != 2 || ok.Err != nil || ok.Duration <= 0 {
		t.Errorf("a good request: %+v", ok)
	}
	if missing.Status != 404 || missing.Version != "9" || missing.Rows != 0 {
		t.Errorf("an unknown version: %+v", missing)
	}
	if bad.Status != 400 || bad.Rows != 2 || bad.Err == nil {
		t.Errorf("a bad request: %+v", bad)
	}
}

func call(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: content type %q", method, url, ct)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %v: %s", method, url, err, raw)
	}
	return resp.StatusCode, out
}

const goodRequest = `{"id":"req-7","inputs":[
  {"name":"tenure","datatype":"FP32","shape":[2],"data":[3, 4]},
  {"name":"plan","datatype":"BYTES","shape":[2],"data":["basic","pro"]},
  {"name":"seats","datatype":"INT32","shape":[2],"data":[1, 10]},
  {"name":"usage","datatype":"FP64","shape":[2,3],"data":[[1,2,3],[4,5,6]]}]}`

func TestProtocolEndpoints(t *testing.T) {
	srv, b, _ := newTestServer(t)
	u := srv.URL
	if code, body := call(t, "GET", u+"/v2/health/live", ""); code != 200 || body["live"] != true {
		t.Errorf("live: %d %v", code, body)
	}
	if code, body := call(t, "GET", u+"/v2/health/ready", ""); code != 200 || body["ready"] != true {
		t.Errorf("ready: %d %v", code, body)
	}
	b.ready = false
	if code, body := call(t, "GET", u+"/v2/health/ready", ""); code != 400 || body["ready"] != false {
		t.Errorf("not ready: %d %v", code, body)
	}
	b.ready = true
	if code, body := call(t, "GET", u+"/v2", ""); code != 200 || body["name"] != "drover-agent" {
		t.Errorf("server metadata: %d %v", code, body)
	}
	for _, path := range []string{"/v2/models/churn", "/v2/models/churn/versions/3"} {
		code, body := call(t, "GET", u+path, "")
		inputs, _ := body["inputs"].([]any)
		if code != 200 || body["name"] != "churn" || len(inputs) != 5 {
			t.Errorf("%s: %d %v", path, code, body)
		}
		if code, body := call(t, "GET", u+path+"/ready", ""); code != 200 || body["ready"] != true || body["name"] != "churn" {
			t.Errorf("%s/ready: %d %v", path, code, body)
		}
	}
	if code, body := call(t, "GET", u+"/v2/models/churn/versions/2/ready", ""); code != 400 || body["ready"] != false {
		t.Errorf("a loading version's readiness: %d %v", code, body)
	}

	code, body := call(t, "POST", u+"/v2/models/churn/infer", goodRequest)
	outputs, _ := body["outputs"].([]any)
	if code != 200 || body["id"] != "req-7" || body["model_name"] != "churn" || body["model_version"] != "3" || len(outputs) != 2 {
		t.Fatalf("infer: %d %v", code, body)
	}
	first := outputs[0].(map[string]any)
	if fmt.Sprint(first["data"]) != "[10 29]" || fmt.Sprint(first["shape"]) != "[2]" || first["datatype"] != "FP64" {
		t.Errorf("infer output %v", first)
	}
	// Asking for one output returns only it.
	one := strings.Replace(goodRequest, `"id":"req-7",`, `"outputs":[{"name":"label"}],`, 1)
	code, body = call(t, "POST", u+"/v2/models/churn/versions/3/infer", one)
	if outputs, _ := body["outputs"].([]any); code != 200 || len(outputs) != 1 || outputs[0].(map[string]any)["name"] != "label" || body["id"] != nil {
		t.Errorf("infer with outputs: %d %v", code, body)
	}
}

func TestProtocolErrors(t *testing.T) {
	srv, b, refused := newTestServer(t)
	u := srv.URL
	cases := []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"GET", "/v2/models/nope", "", 404, "model not found: nope"},
		{"GET", "/v2/models/churn/versions/9/ready", "", 404, "model not found: churn/9"},
		{"POST", "/v2/models/nope/infer", goodRequest, 404, "model not found"},
		{"GET", "/v2/models/churn/infer", "", 405, "takes POST, not GET"},
		{"POST", "/v2/health/live", "", 405, "takes GET, not POST"},
		{"GET", "/v3/anything", "", 404, "no endpoint /v3/anything"},
		{"POST", "/v2/models/churn/infer", `{"inputs":`, 400, "malformed JSON"},
		{"POST", "/v2/models/churn/infer", `{"inputs":[{"name":"tenure","datatype":"FP32","shape":[2],"data":[1]}]}`, 400, "inputs[0].data: 1 elements, where the shape [2] holds 2"},
		{"POST", "/v2/models/churn/infer", strings.Replace(goodRequest, `"pro"`, `"gold"`, 1), 400, `inputs[1].data: element 1: "gold" is not a category of plan`},
		{"POST", "/v2/models/churn/infer", strings.Replace(goodRequest, `"id":"req-7",`, `"outputs":[{"name":"nope"}],`, 1), 400, `outputs[0].name: "nope" is not an output of churn`},
		{"POST", "/v2/models/churn/infer", `{"inputs":[` + strings.Repeat(`{"name":"x"},`, 400) + `]}`, 413, "larger than 4096 bytes"},
	}
	for _, c := range cases {
		code, body := call(t, c.method, u+c.path, c.body)
		if code != c.status || !strings.Contains(fmt.Sprint(body["error"]), c.want) {
			t.Errorf("%s %s: %d %v; want %d %q", c.method, c.path, code, body, c.status, c.want)
		}
	}
	if len(*refused) != len(cases) {
		t.Errorf("%d refusals counted for %d", len(*refused), len(cases))
	}

	m := b.models["churn"]
	m.fail = fmt.Errorf("warming up: %w", ErrModelNotReady)
	if code, body := call(t, "POST", u+"/v2/models/churn/infer", goodRequest); code != 503 || !strings.Contains(fmt.Sprint(body["error"]), "model not ready") {
		t.Errorf("a model not ready: %d %v", code, body)
	}
	m.fail = fmt.Errorf("the runner crashed")
	if code, body := call(t, "POST", u+"/v2/models/churn/infer", goodRequest); code != 500 || body["error"] != "the runner crashed" {
		t.Errorf("a model failing: %d %v", code, body)
	}
}
