// Command centroid is a complete example of a Drover runner plugin: a
// nearest-centroid classifier. It trains on a CSV data set (numeric
// feature columns and a target column), writes its artifact as JSON, and
// serves it: each row gets the label of the class whose mean it is
// nearest. See README.md beside it.
package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/droverhq/drover/plugins/sdk"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
)

// Format is the artifact format this runner writes and serves.
const Format = "centroid-json"

// artifact is what training writes and Load reads.
type artifact struct {
	Format    string      `json:"format"`
	Features  []string    `json:"features"`
	Classes   []string    `json:"classes"`
	Centroids [][]float64 `json:"centroids"` // one row per class
}

func main() {
	sdk.Serve(sdk.Runner{
		Name:    "centroid",
		Version: "1.0.0",
		Formats: []string{Format},
		Server:  &server{models: map[string]*loaded{}},
		Trainer: trainer{},
	})
}

type loaded struct {
	a     artifact
	delay time.Duration
	// failEvery fails every n-th Predict (0: none).
	failEvery uint64
	calls     atomic.Uint64
}

// server holds the loaded models.
type server struct {
	mu     sync.RWMutex
	models map[string]*loaded
}

func (s *server) Load(_ context.Context, req *runnerv1.LoadRequest) (*runnerv1.LoadResponse, error) {
	b, err := os.ReadFile(req.GetArtifactPath())
	if err != nil {
		return nil, err
	}
	var a artifact
	if err := json.Unmarshal(b, &a); err != nil || a.Format != Format {
		return nil, fmt.Errorf("%s is not a %s artifact", req.GetArtifactPath(), Format)
	}
	m := &loaded{a: a}
	// predict_delay slows every Predict: for exercising timeouts and
	// crashes in tests, never for production.
	if d := req.GetParams()["predict_delay"]; d != "" {
		if m.delay, err = time.ParseDuration(d); err != nil {
			return nil, fmt.Errorf("predict_delay: %w", err)
		}
	}
	// fail_every fails every n-th Predict: a deliberately broken version,
	// for rollout tests, never for production.
	if n := req.GetParams()["fail_every"]; n != "" {
		if m.failEvery, err = strconv.ParseUint(n, 10, 64); err != nil {
			return nil, fmt.Errorf("fail_every: %w", err)
		}
	}
	s.mu.Lock()
	s.models[req.GetId()] = m
	s.mu.Unlock()
	return &runnerv1.LoadResponse{Outputs: []*runnerv1.TensorInfo{{Name: "label", Datatype: "BYTES", Shape: []int64{-1}}}}, nil
}

func (s *server) Predict(ctx context.Context, req *runnerv1.PredictRequest) (*runnerv1.PredictResponse, error) {
	s.mu.RLock()
	m := s.models[req.GetId()]
	s.mu.RUnlock()
	if m == nil {
		return nil, fmt.Errorf("model %s is not loaded", req.GetId())
	}
	if m.failEvery > 0 && m.calls.Add(1)%m.failEvery == 0 {
		return nil, fmt.Errorf("model %s failed this batch on purpose (fail_every=%d)", req.GetId(), m.failEvery)
	}
	if m.delay > 0 {
		select {
		case <-time.After(m.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	rows := int(req.GetRows())
	cols := make([][]float64, len(m.a.Features))
	for i, f := range m.a.Features {
		idx := slices.IndexFunc(req.GetInputs(), func(t *runnerv1.Tensor) bool { return t.GetName() == f })
		if idx < 0 || len(req.GetInputs()[idx].GetNumbers()) != rows {
			return nil, fmt.Errorf("input %s: missing, or not one number a row", f)
		}
		cols[i] = req.GetInputs()[idx].GetNumbers()
	}
	labels := make([]string, rows)
	row := make([]float64, len(cols))
	for r := range rows {
		for i := range cols {
			row[i] = cols[i][r]
		}
		labels[r] = m.a.Classes[nearest(m.a.Centroids, row)]
	}
	return &runnerv1.PredictResponse{Outputs: []*runnerv1.Tensor{{Name: "label", Datatype: "BYTES", Shape: []int64{int64(rows)}, Strings: labels}}}, nil
}

func (s *server) Unload(_ context.Context, id string) error {
	s.mu.Lock()
	delete(s.models, id)
	s.mu.Unlock()
	return nil
}

type trainer struct{}

// Train reads the CSV data set, computes each class's mean, and writes the
// artifact; it reports progress per stage and the training accuracy.
func (trainer) Train(_ context.Context, req *runnerv1.TrainRequest, send func(*runnerv1.TrainResponse) error) error {
	progress := func(f float64, stage string) error {
		return send(&runnerv1.TrainResponse{Event: &runnerv1.TrainResponse_Progress{Progress: &runnerv1.TrainProgress{Fraction: f, Stage: stage}}})
	}
	f, err := os.Open(req.GetDatasetPath())
	if err != nil {
		return err
	}
	defer f.Close()
	records, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return fmt.Errorf("data set: %w", err)
	}
	if len(records) < 2 {
		return errors.New("data set: a header and at least one row are needed")
	}
	if err := progress(0.3, "read"); err != nil {
		return err
	}
	header := records[0]
	target := slices.Index(header, req.GetTarget())
	if target < 0 {
		return fmt.Errorf("data set: no column %q", req.GetTarget())
	}
	a := artifact{Format: Format}
	for i, h := range header {
		if i != target {
			a.Features = append(a.Features, h)
		}
	}
	sums := map[string][]float64{}
	counts := map[string]float64{}
	x := make([][]float64, 0, len(records)-1)
	for line, rec := range records[1:] {
		row := make([]float64, 0, len(a.Features))
		for i, v := range rec {
			if i == target {
				continue
			}
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return fmt.Errorf("data set line %d, column %s: %q is not a number", line+2, header[i], v)
			}
			row = append(row, n)
		}
		label := rec[target]
		if sums[label] == nil {
			sums[label] = make([]float64, len(row))
		}
		for i, v := range row {
			sums[label][i] += v
		}
		counts[label]++
		x = append(x, row)
	}
	for label := range sums {
		a.Classes = append(a.Classes, label)
	}
	slices.Sort(a.Classes)
	for _, label := range a.Classes {
		c := sums[label]
		for i := range c {
			c[i] /= counts[label]
		}
		a.Centroids = append(a.Centroids, c)
	}
	if err := send(&runnerv1.TrainResponse{Event: &runnerv1.TrainResponse_LogLine{LogLine: fmt.Sprintf("%d rows, %d classes", len(x), len(a.Classes))}}); err != nil {
		return err
	}
	// Training accuracy, to report something; a real runner holds rows out.
	right := 0
	for r, row := range x {
		if a.Classes[nearest(a.Centroids, row)] == records[r+1][target] {
			right++
		}
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	path := filepath.Join(req.GetOutputDir(), "model.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return err
	}
	if err := progress(1, "written"); err != nil {
		return err
	}
	return send(&runnerv1.TrainResponse{Event: &runnerv1.TrainResponse_Result{Result: &runnerv1.TrainResult{
		ArtifactPath: path, Format: Format, Metrics: map[string]float64{"train_accuracy": float64(right) / float64(len(x))},
	}}})
}

// nearest returns the index of the centroid closest to row (Euclidean).
func nearest(centroids [][]float64, row []float64) int {
	best, bestD := 0, math.Inf(1)
	for k, c := range centroids {
		d := 0.0
		for i := range c {
			d += (row[i] - c[i]) * (row[i] - c[i])
		}
		if d < bestD {
			best, bestD = k, d
		}
	}
	return best
}
