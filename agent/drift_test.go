package agent

import (
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/agent/store"
	"github.com/droverhq/drover/internal/drift"
	"github.com/droverhq/drover/internal/logging"
	"github.com/droverhq/drover/internal/sketch"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// churnTraffic makes n rows of tenure ~ N(30+shift, 10) and plan, with a
// label, as a request and its answer.
func churnTraffic(rng *rand.Rand, n int, shift float64) (*oip.InferRequest, *oip.InferResponse) {
	tenure := make([]float64, n)
	plan := make([]string, n)
	label := make([]string, n)
	for i := range n {
		tenure[i] = 30 + shift + 10*rng.NormFloat64()
		plan[i] = []string{"basic", "pro"}[rng.IntN(2)]
		label[i] = map[bool]string{true: "yes", false: "no"}[tenure[i] < 25]
	}
	req := &oip.InferRequest{Inputs: []*oip.Tensor{
		{Name: "tenure", Datatype: oip.FP64, Shape: []int64{int64(n)}, Numbers: tenure},
		{Name: "plan", Datatype: oip.Bytes, Shape: []int64{int64(n)}, Strings: plan},
	}}
	resp := &oip.InferResponse{ModelName: "churn", ModelVersion: "1", Outputs: []*oip.Tensor{
		{Name: outputLabel, Datatype: oip.Bytes, Shape: []int64{int64(n)}, Strings: label},
	}}
	return req, resp
}

func churnProfile(t *testing.T) *droverv1.ReferenceProfile {
	t.Helper()
	req, resp := churnTraffic(rand.New(rand.NewPCG(1, 2)), 20000, 0)
	pred := drift.Column{Name: "label", Categorical: true, Strings: resp.Outputs[0].Strings}
	p, err := sketch.BuildProfileWith([]drift.Column{
		{Name: "tenure", Numbers: req.Inputs[0].Numbers},
		{Name: "plan", Categorical: true, Strings: req.Inputs[1].Strings},
	}, sketch.ProfileOptions{Prediction: &pred})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDriftMonitor feeds a version's traffic through its minute windows:
// unchanged traffic is judged no drift, shifted traffic drift; closed
// windows are stored, and reported to the hub merged; refused requests
// count as schema violations.
func TestDriftMonitor(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	profile := churnProfile(t)
	var mu sync.Mutex
	var sent []*droverv1.DriftWindow
	d := newDriftMonitor(st, DriftOptions{Evaluation: time.Minute, Report: 2 * time.Minute}, logging.Discard(),
		func(model string, version uint64) *sketch.Reference {
			if model == "churn" && version == 1 {
				return sketch.NewReference(profile)
			}
			return nil
		},
		func(r *droverv1.Report) {
			mu.Lock()
			sent = append(sent, r.GetDrift())
			mu.Unlock()
		})
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	d.now = func() time.Time { return now }
	d.sentAt = now
	rng := rand.New(rand.NewPCG(3, 4))
	traffic := func(shift float64) {
		for range 10 {
			req, resp := churnTraffic(rng, 100, shift)
			d.observe(oip.Observation{Model: "churn", Version: "1", Status: 200, Rows: 100, Request: req, Response: resp})
		}
	}
	traffic(0)
	// A refused request counts against its version; another model's, or
	// one without a profile, is ignored.
	bad, _ := churnTraffic(rng, 3, 0)
	d.observe(oip.Observation{Model: "churn", Version: "1", Status: 400, Rows: 3, Request: bad})
	d.observe(oip.Observation{Model: "other", Version: "1", Status: 200, Rows: 3, Request: bad})

	now = now.Add(time.Minute)
	d.flush(false)
	rep := d.verdict[driftKey{"churn", 1}]
	if rep.Dataset.Drifted || len(rep.Features) != 2 {
		t.Fatalf("unchanged traffic: %+v", rep)
	}

	traffic(8) // 0.8 standard deviations
	now = now.Add(time.Minute)
	d.flush(false)
	rep = d.verdict[driftKey{"churn", 1}]
	if !rep.Dataset.Drifted || !rep.Features[0].Drifted || rep.Features[1].Drifted {
		t.Fatalf("shifted tenure: %+v", rep)
	}

	// Both minutes are in the journal; the report merges them.
	j, err := st.Journal("drift/churn", 10)
	if err != nil {
		t.Fatal(err)
	}
	if n := j.Stats().Len; n != 2 {
		t.Errorf("%d windows stored, want 2", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 1 {
		t.Fatalf("%d drift reports sent, want 1 (both minutes merged)", len(sent))
	}
	w := sent[0]
	if w.GetRows() != 2000 || w.GetSchemaViolations() != 3 || w.GetModel() != "churn" || w.GetVersion() != 1 || len(w.GetFeatures()) != 2 || w.GetPrediction() == nil {
		t.Errorf("report: rows %d, violations %d, %s:%d, %d features", w.GetRows(), w.GetSchemaViolations(), w.GetModel(), w.GetVersion(), len(w.GetFeatures()))
	}
	if n := proto.Size(w); n > 3*4096 {
		t.Errorf("a 3-column window is %d bytes", n)
	}
	if !strings.Contains(w.GetFeatures()[1].GetName(), "plan") {
		t.Errorf("features %v", w.GetFeatures())
	}
}
