package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/agent/reconcile"
	"github.com/droverhq/drover/internal/logging"
	"github.com/droverhq/drover/plugins/native"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

const (
	primaryRole = droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY
	canaryRole  = droverv1.AssignmentRole_ASSIGNMENT_ROLE_CANARY
	shadowRole  = droverv1.AssignmentRole_ASSIGNMENT_ROLE_SHADOW
)

// churnRequest is a request for trainChurn's model.
func churnRequest(id string, tenure ...float64) *oip.InferRequest {
	plans := make([]string, len(tenure))
	for i := range plans {
		plans[i] = []string{"basic", "pro"}[i%2]
	}
	n := int64(len(tenure))
	return &oip.InferRequest{ID: id, Inputs: []*oip.Tensor{
		{Name: "tenure", Datatype: oip.FP64, Shape: []int64{n}, Numbers: tenure},
		{Name: "plan", Datatype: oip.Bytes, Shape: []int64{n}, Strings: plans},
	}}
}

func loadNative(t *testing.T, rt *servingRuntime, model string, version uint64, role droverv1.AssignmentRole, weight uint32, path string) {
	t.Helper()
	a := &droverv1.DesiredAssignment{Model: model, Version: version, Role: role, Weight: weight, Format: NativeFormat}
	if err := rt.Load(context.Background(), a, path); err != nil {
		t.Fatal(err)
	}
}

// TestTrafficSplit routes a canary its weight's share of requests, and the
// same request id always to the same version.
func TestTrafficSplit(t *testing.T) {
	path, _ := trainChurn(t)
	rt := newServingRuntime(nil, logging.Discard(), ServingOptions{})
	loadNative(t, rt, "churn", 1, primaryRole, 0, path)
	loadNative(t, rt, "churn", 2, canaryRole, 20, path)
	m, err := rt.Model("churn", "")
	if err != nil {
		t.Fatal(err)
	}
	answered := func(id string) string {
		resp, err := m.Infer(context.Background(), churnRequest(id, 5))
		if err != nil {
			t.Fatal(err)
		}
		return resp.ModelVersion
	}
	const n = 4000
	canary := 0
	byID := map[string]string{}
	for i := range n {
		id := fmt.Sprintf("req-%d", i)
		v := answered(id)
		byID[id] = v
		if v == "2" {
			canary++
		}
	}
	// 20% of 4000: the binomial's standard deviation is ~25 requests.
	if canary < 700 || canary > 900 {
		t.Errorf("the canary at weight 20 took %d of %d requests", canary, n)
	}
	for id, v := range byID {
		if got := answered(id); got != v {
			t.Fatalf("request %s went to v%s, then to v%s: routing by id is not sticky", id, v, got)
		}
		if len(byID) > 200 {
			delete(byID, id) // check a few hundred
		}
	}
	// Without an id, requests are spread by chance.
	canary = 0
	for range n {
		if answered("") == "2" {
			canary++
		}
	}
	if canary < 700 || canary > 900 {
		t.Errorf("without ids, the canary took %d of %d requests", canary, n)
	}

	for _, c := range []struct {
		weight uint32
		want   string
	}{{0, "1"}, {100, "2"}} {
		loadNative(t, rt, "churn", 2, canaryRole, c.weight, path)
		m, _ := rt.Model("churn", "")
		for i := range 200 {
			resp, err := m.Infer(context.Background(), churnRequest(strconv.Itoa(i), 5))
			if err != nil {
				t.Fatal(err)
			}
			if resp.ModelVersion != c.want {
				t.Fatalf("weight %d: answered by v%s, want v%s", c.weight, resp.ModelVersion, c.want)
			}
		}
	}
	// A version asked for by number answers whatever the weights.
	v2, err := rt.Model("churn", "2")
	if err != nil {
		t.Fatal(err)
	}
	if md := v2.Metadata(); fmt.Sprint(md.Versions) != "[1 2]" {
		t.Errorf("versions %v", md.Versions)
	}
}

// trainFlipped trains trainChurn's model with every label swapped: a
// version that disagrees with it.
func trainFlipped(t *testing.T, m *native.Model) string {
	t.Helper()
	flipped := *m
	flipped.Classes = []string{m.Classes[1], m.Classes[0]}
	b, err := flipped.MarshalArtifact()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "flipped.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestShadow mirrors answered requests to a shadow version and measures
// how often it agrees; the caller always gets the primary's answer.
func TestShadow(t *testing.T) {
	path, m := trainChurn(t)
	flipped := trainFlipped(t, m)
	// Room for every mirror: none is dropped.
	rt := newServingRuntime(nil, logging.Discard(), ServingOptions{ShadowConcurrency: 1000})
	loadNative(t, rt, "churn", 1, primaryRole, 0, path)
	loadNative(t, rt, "churn", 2, shadowRole, 0, path) // the same model: agrees everywhere

	infer := func(n int) {
		t.Helper()
		mod, err := rt.Model("churn", "")
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			resp, err := mod.Infer(context.Background(), churnRequest(strconv.Itoa(i), float64(i%60), float64(i%7)))
			if err != nil {
				t.Fatal(err)
			}
			if resp.ModelVersion != "1" {
				t.Fatalf("the caller got v%s, want the primary's answer", resp.ModelVersion)
			}
		}
	}
	waitRows := func(version string, rows uint64) float64 {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			rate, n := rt.shadows.Agreement("churn", version)
			if n >= rows {
				return rate
			}
			if time.Now().After(deadline) {
				t.Fatalf("shadow v%s compared %d rows, want %d", version, n, rows)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	infer(100)
	if rate := waitRows("2", 200); rate != 1 {
		t.Errorf("an identical shadow agreed on %.3f of rows", rate)
	}
	// A shadow with every label swapped agrees on none.
	loadNative(t, rt, "churn", 3, shadowRole, 0, flipped)
	infer(100)
	if rate := waitRows("3", 200); rate != 0 {
		t.Errorf("a flipped shadow agreed on %.3f of rows", rate)
	}
	// A shadow that fails never fails the caller.
	other := filepath.Join(t.TempDir(), "model.onnx")
	_ = os.WriteFile(other, []byte("onnx"), 0o644)
	if err := rt.Load(context.Background(), &droverv1.DesiredAssignment{Model: "churn", Version: 4, Role: shadowRole, Format: "onnx"}, other); err != nil {
		t.Fatal(err)
	}
	infer(50)
	if _, n := rt.shadows.Agreement("churn", "4"); n != 0 {
		t.Errorf("a failing shadow compared %d rows", n)
	}
}

func TestAgreement(t *testing.T) {
	lab := func(s ...string) *oip.Tensor {
		return &oip.Tensor{Name: "label", Datatype: oip.Bytes, Shape: []int64{int64(len(s))}, Strings: s}
	}
	num := func(name string, v ...float64) *oip.Tensor {
		return &oip.Tensor{Name: name, Datatype: oip.FP64, Shape: []int64{int64(len(v))}, Numbers: v}
	}
	for _, c := range []struct {
		name           string
		primary, other []*oip.Tensor
		agree, total   int
	}{
		{"labels", []*oip.Tensor{num("p", 1, 2), lab("a", "b")}, []*oip.Tensor{lab("a", "c")}, 1, 2},
		{"numbers within 1%", []*oip.Tensor{num("y", 100, 0, 5)}, []*oip.Tensor{num("y", 100.9, 1e-12, 6)}, 2, 3},
		{"missing output", []*oip.Tensor{num("y", 1)}, []*oip.Tensor{num("z", 1)}, 0, 1},
		{"other rows", []*oip.Tensor{num("y", 1, 2)}, []*oip.Tensor{num("y", 1)}, 0, 2},
		{"nothing", nil, nil, 0, 0},
	} {
		if a, n := agreement(c.primary, c.other); a != c.agree || n != c.total {
			t.Errorf("%s: %d of %d agree, want %d of %d", c.name, a, n, c.agree, c.total)
		}
	}
}

// pluginRuntime starts the example runner plugin and a serving runtime
// over it.
func pluginRuntime(t testing.TB, opts ServingOptions) *servingRuntime {
	t.Helper()
	return newServingRuntime(startExamplePlugin(t), logging.Discard(), opts)
}

// loadCentroid loads a centroid model (x below 5 is "lo", above "hi")
// into the runtime.
func loadCentroid(t testing.TB, rt *servingRuntime, version uint64, role droverv1.AssignmentRole, delay time.Duration) {
	t.Helper()
	art := filepath.Join(t.TempDir(), "model.json")
	_ = os.WriteFile(art, []byte(`{"format":"centroid-json","features":["x"],"classes":["lo","hi"],"centroids":[[0],[10]]}`), 0o644)
	a := &droverv1.DesiredAssignment{Model: "m", Version: version, Role: role, Format: "centroid-json",
		Schema: &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{{Name: "x", Datatype: "FP64"}}},
		Params: map[string]string{"predict_delay": delay.String()}}
	if err := rt.Load(context.Background(), a, art); err != nil {
		t.Fatal(err)
	}
}

func xRequest(xs ...float64) *oip.InferRequest {
	return &oip.InferRequest{Inputs: []*oip.Tensor{{Name: "x", Datatype: oip.FP64, Shape: []int64{int64(len(xs))}, Numbers: xs}}}
}

// checkCentroid checks a centroid model's answer to xRequest(xs...).
func checkCentroid(resp *oip.InferResponse, xs []float64) error {
	if len(resp.Outputs) != 1 || len(resp.Outputs[0].Strings) != len(xs) {
		return fmt.Errorf("outputs %+v for %d rows", resp.Outputs, len(xs))
	}
	for i, x := range xs {
		if want := map[bool]string{true: "lo", false: "hi"}[x < 5]; resp.Outputs[0].Strings[i] != want {
			return fmt.Errorf("row %d (x=%g): %s, want %s", i, x, resp.Outputs[0].Strings[i], want)
		}
	}
	return nil
}

// TestDynamicBatching sends concurrent requests to a slow plugin and sees
// them answered correctly in far fewer calls than requests.
func TestDynamicBatching(t *testing.T) {
	rt := pluginRuntime(t, ServingOptions{BatchMaxRows: 64})
	loadCentroid(t, rt, 1, primaryRole, 20*time.Millisecond)
	m, err := rt.Model("m", "")
	if err != nil {
		t.Fatal(err)
	}
	const clients, each = 32, 5
	var wg sync.WaitGroup
	errs := make(chan error, clients*each)
	for c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 1))
			for range each {
				xs := make([]float64, 1+rng.IntN(3))
				for i := range xs {
					xs[i] = rng.Float64() * 10
				}
				resp, err := m.Infer(context.Background(), xRequest(xs...))
				if err == nil {
					err = checkCentroid(resp, xs)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	b := (*rt.routes.Load())["m"].primary.batch
	if sent, reqs := b.sent.Load(), b.sentFor.Load(); reqs != clients*each || sent > reqs/4 {
		t.Errorf("%d requests went in %d batches; want batches of several", reqs, sent)
	} else {
		t.Logf("%d requests in %d batches", reqs, sent)
	}
}

// TestVersionSwitchUnderLoad switches versions back and forth, as the
// reconciler does (load the new, unload the old), while clients keep
// asking: no request fails.
func TestVersionSwitchUnderLoad(t *testing.T) {
	for _, c := range []struct {
		name string
		opts ServingOptions
	}{{"batched", ServingOptions{}}, {"unbatched", ServingOptions{BatchMaxRows: 1}}} {
		t.Run(c.name, func(t *testing.T) {
			rt := pluginRuntime(t, c.opts)
			loadCentroid(t, rt, 1, primaryRole, 5*time.Millisecond)
			var stop atomic.Bool
			var ok, failed atomic.Int64
			var wg sync.WaitGroup
			for c := range 8 {
				wg.Go(func() {
					for i := 0; !stop.Load(); i++ {
						xs := []float64{float64((c + i) % 5 * 2)} // never 5, the tie
						m, err := rt.Model("m", "")
						var resp *oip.InferResponse
						if err == nil {
							resp, err = m.Infer(context.Background(), xRequest(xs...))
						}
						if err == nil {
							err = checkCentroid(resp, xs)
						}
						if err != nil {
							failed.Add(1)
							t.Error(err)
							return
						}
						ok.Add(1)
					}
				})
			}
			k := reconcile.Key{Model: "m", Role: primaryRole}
			for v := uint64(2); v <= 8; v++ {
				time.Sleep(40 * time.Millisecond)
				loadCentroid(t, rt, v, primaryRole, 5*time.Millisecond)
				if err := rt.Unload(context.Background(), k, v-1); err != nil {
					t.Fatal(err)
				}
			}
			stop.Store(true)
			wg.Wait()
			if ok.Load() < 100 || failed.Load() > 0 {
				t.Errorf("%d answered, %d failed across 7 switches", ok.Load(), failed.Load())
			}
			// Every replaced version was unloaded from the plugin.
			hp := rt.plugins.forFormat("centroid-json")
			hp.mu.Lock()
			n := len(hp.loaded)
			hp.mu.Unlock()
			if n != 1 {
				t.Errorf("the plugin holds %d models, want only the current one", n)
			}
		})
	}
}

// TestLoadSameVersionAgain loads a version that is loaded already: the
// new copy serves, and letting the old copy go leaves the new one loaded
// at its runner (they shared a runner id, and the old copy's unload took
// the new one with it).
func TestLoadSameVersionAgain(t *testing.T) {
	rt := pluginRuntime(t, ServingOptions{})
	loadCentroid(t, rt, 1, primaryRole, 0)
	first := (*rt.routes.Load())["m"].primary
	loadCentroid(t, rt, 1, primaryRole, 0)
	rt.unloading.Wait()
	second := (*rt.routes.Load())["m"].primary
	if second == first {
		t.Fatal("the version was not loaded again")
	}
	hp := rt.plugins.forFormat("centroid-json")
	hp.mu.Lock()
	ids := slices.Collect(maps.Keys(hp.loaded))
	hp.mu.Unlock()
	if len(ids) != 1 || ids[0] != second.runnerID {
		t.Fatalf("the plugin holds %q; want only the new copy, %q", ids, second.runnerID)
	}
	m, err := rt.Model("m", "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := m.Infer(context.Background(), xRequest(1, 9))
	if err == nil {
		err = checkCentroid(resp, []float64{1, 9})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestBatcher checks the batcher's combining and splitting with a runner
// that answers each row with its input and the batch's size.
func TestBatcher(t *testing.T) {
	var mu sync.Mutex
	var calls []int
	release := make(chan struct{})
	send := func(ctx context.Context, req *runnerv1.PredictRequest) (*runnerv1.PredictResponse, error) {
		<-release
		mu.Lock()
		calls = append(calls, int(req.GetRows()))
		mu.Unlock()
		if req.GetInputs()[0].GetNumbers()[0] < 0 {
			return nil, errors.New("negative")
		}
		in := req.GetInputs()[0]
		return &runnerv1.PredictResponse{Outputs: []*runnerv1.Tensor{{Name: "y", Datatype: "FP64", Shape: in.GetShape(), Numbers: in.GetNumbers()}}}, nil
	}
	b := newBatcher("t", send, ServingOptions{BatchMaxRows: 4, BatchInFlight: 1})
	defer b.close()
	tensor := func(name string, xs ...float64) []*runnerv1.Tensor {
		return []*runnerv1.Tensor{{Name: name, Datatype: "FP64", Shape: []int64{int64(len(xs))}, Numbers: xs}}
	}
	type result struct {
		got []float64
		err error
	}
	ask := func(in []*runnerv1.Tensor) chan result {
		ch := make(chan result, 1)
		go func() {
			out, err := b.predict(context.Background(), in, int(in[0].GetShape()[0]))
			var got []float64
			if err == nil {
				got = out[0].GetNumbers()
			}
			ch <- result{got, err}
		}()
		return ch
	}
	first := ask(tensor("x", 1)) // goes alone, and holds the runner
	time.Sleep(20 * time.Millisecond)
	a := ask(tensor("x", 2, 3))
	time.Sleep(5 * time.Millisecond)
	bb := ask(tensor("x", 4))
	time.Sleep(5 * time.Millisecond)
	c := ask(tensor("x", 5, 6)) // does not fit the 4-row batch: next
	time.Sleep(5 * time.Millisecond)
	d := ask(tensor("other", 7)) // another input: a batch of its own
	time.Sleep(20 * time.Millisecond)
	close(release)
	for _, w := range []struct {
		ch   chan result
		want string
	}{{first, "[1]"}, {a, "[2 3]"}, {bb, "[4]"}, {c, "[5 6]"}, {d, "[7]"}} {
		r := <-w.ch
		if r.err != nil || fmt.Sprint(r.got) != w.want {
			t.Errorf("got %v (%v), want %s", r.got, r.err, w.want)
		}
	}
	mu.Lock()
	if fmt.Sprint(calls) != "[1 3 2 1]" {
		t.Errorf("batches of %v rows, want [1 3 2 1]", calls)
	}
	mu.Unlock()
	// A failed batch fails each of its requests.
	if r := <-ask(tensor("x", -1)); r.err == nil {
		t.Error("a failed batch answered")
	}
}
