package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/agent/store"
	"github.com/droverhq/drover/internal/drift"
	"github.com/droverhq/drover/internal/logging"
	"github.com/droverhq/drover/internal/sketch"
	"github.com/droverhq/drover/plugins/native"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// bench20 loads a 20-feature native logistic model into a serving runtime
// and returns it with a one-row request body and the model's columns for
// that row.
func bench20(b *testing.B) (*servingRuntime, []byte, []native.Column) {
	b.Helper()
	rng := rand.New(rand.NewPCG(1, 1))
	cols := make([]native.Column, 20)
	var target []string
	for j := range cols {
		cols[j].Name = fmt.Sprintf("f%02d", j)
	}
	for range 500 {
		z := 0.0
		for j := range cols {
			v := rng.NormFloat64()
			cols[j].Numbers = append(cols[j].Numbers, v)
			z += v * float64(j%3-1)
		}
		target = append(target, map[bool]string{true: "yes", false: "no"}[z > 0])
	}
	m, _, err := native.Train(&native.Dataset{Features: cols, Target: native.Column{Categorical: true, Strings: target}}, native.TrainOptions{})
	if err != nil {
		b.Fatal(err)
	}
	art, _ := m.MarshalArtifact()
	path := filepath.Join(b.TempDir(), "model.json")
	_ = os.WriteFile(path, art, 0o644)
	schema := &droverv1.FeatureSchema{}
	var inputs []string
	row := make([]native.Column, 20)
	for j := range cols {
		schema.Inputs = append(schema.Inputs, &droverv1.Feature{Name: cols[j].Name, Datatype: "FP32"})
		inputs = append(inputs, fmt.Sprintf(`{"name":"%s","datatype":"FP32","shape":[1],"data":[%.3f]}`, cols[j].Name, cols[j].Numbers[0]))
		row[j] = native.Column{Name: cols[j].Name, Numbers: cols[j].Numbers[:1]}
	}
	// A reference profile, so that drift sketches are updated too.
	dcols := make([]drift.Column, len(cols))
	for j, c := range cols {
		dcols[j] = drift.Column{Name: c.Name, Numbers: c.Numbers}
	}
	profile, err := sketch.BuildProfileWith(dcols, sketch.ProfileOptions{Prediction: &drift.Column{Name: "label", Categorical: true, Strings: target}})
	if err != nil {
		b.Fatal(err)
	}
	pb, _ := proto.Marshal(profile)
	rt := newServingRuntime(nil, logging.Discard(), ServingOptions{})
	a := &droverv1.DesiredAssignment{Model: "m", Version: 1, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY, Format: NativeFormat,
		Schema: schema, ReferenceProfile: pb}
	if err := rt.Load(context.Background(), a, path); err != nil {
		b.Fatal(err)
	}
	return rt, []byte(`{"id":"1","inputs":[` + strings.Join(inputs, ",") + `]}`), row
}

// BenchmarkInferOverhead measures one single-row request through the
// agent's whole prediction path in-process (routing, decoding, schema
// checks, metrics, metric windows and drift sketches, encoding; not
// net/http's parsing, which the HTTP
// benchmark adds) against the model's own predict in the same run. It
// reports the median request and the overhead, the difference.
func BenchmarkInferOverhead(b *testing.B) {
	rt, body, row := bench20(b)
	n := (*rt.routes.Load())["m"].primary.native
	var predict time.Duration
	b.Run("predict", func(b *testing.B) {
		b.ReportAllocs()
		took := make([]time.Duration, 0, 1<<16)
		for b.Loop() {
			start := time.Now()
			if _, err := n.Predict(row); err != nil {
				b.Fatal(err)
			}
			took = append(took, time.Since(start))
		}
		predict = median(took)
		b.ReportMetric(float64(predict)/1e3, "p50-µs")
	})
	b.Run("request", func(b *testing.B) {
		h := oip.NewHandler(rt)
		h.Observe = benchObserver(b, rt)
		rd := bytes.NewReader(body)
		req := httptest.NewRequest("POST", "/v2/models/m/infer", rd)
		w := &discardWriter{header: http.Header{}}
		b.ReportAllocs()
		took := make([]time.Duration, 0, 1<<16)
		for b.Loop() {
			rd.Reset(body)
			clear(w.header)
			w.code = 0
			start := time.Now()
			h.ServeHTTP(w, req)
			took = append(took, time.Since(start))
			if w.code != 0 && w.code != 200 {
				b.Fatalf("status %d", w.code)
			}
		}
		p50 := median(took)
		b.ReportMetric(float64(p50)/1e3, "p50-µs")
		b.ReportMetric(float64(p50-predict)/1e3, "overhead-µs")
		b.ReportMetric(float64(p50)/float64(predict), "x-predict")
	})
}

// benchObserver is the agent's observation chain for a benchmark:
// Prometheus metrics, metric windows and drift sketches.
func benchObserver(b *testing.B, rt *servingRuntime) func(oip.Observation) {
	m := &metrics{}
	m.initInference()
	st, err := store.Open(b.TempDir(), store.Options{}, logging.Discard())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	windows := newMetricWindows(st, 10, 0, logging.Discard())
	drifts := newDriftMonitor(st, DriftOptions{}, logging.Discard(), rt.profile, func(*droverv1.Report) {})
	return func(o oip.Observation) {
		m.observeInference(o)
		windows.observe(o)
		drifts.observe(o)
	}
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[len(d)/2]
}

// discardWriter is a ResponseWriter that keeps only the status.
type discardWriter struct {
	header http.Header
	code   int
}

func (w *discardWriter) Header() http.Header         { return w.header }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

// BenchmarkInferHTTP measures single-row requests per second over real
// HTTP with keep-alive, 16 clients, on loopback, metrics, metric windows
// and drift sketches included.
func BenchmarkInferHTTP(b *testing.B) {
	rt, body, _ := bench20(b)
	h := oip.NewHandler(rt)
	h.Observe = benchObserver(b, rt)
	srv := httptest.NewServer(h)
	defer srv.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	client := &http.Client{Transport: tr}
	var failed atomic.Int64
	b.SetParallelism(8) // × GOMAXPROCS clients
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Post(srv.URL+"/v2/models/m/infer", "application/json", bytes.NewReader(body))
			if err != nil {
				failed.Add(1)
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				failed.Add(1)
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	if failed.Load() > 0 {
		b.Fatalf("%d requests failed", failed.Load())
	}
}

// BenchmarkPluginRows measures single-row requests answered through a
// runner plugin (the example centroid runner, a gRPC round trip away) by
// 32 concurrent callers, with and without dynamic batching: rows/s is the
// figure to compare.
func BenchmarkPluginRows(b *testing.B) {
	for _, c := range []struct {
		name string
		rows int
	}{{"batching=off", 1}, {"batching=on", 64}} {
		b.Run(c.name, func(b *testing.B) {
			rt := pluginRuntime(b, ServingOptions{BatchMaxRows: c.rows})
			loadCentroid(b, rt, 1, primaryRole, 0)
			m, err := rt.Model("m", "")
			if err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(32 / runtime.GOMAXPROCS(0))
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := m.Infer(context.Background(), xRequest(3)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rows/s")
		})
	}
}
