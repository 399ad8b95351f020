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

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	a, err := readArtifact(req.GetArtifactPath())
	if err != nil {
		return nil, err
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
			// The caller's fault: InvalidArgument reaches them as a 400.
			return nil, status.Errorf(codes.InvalidArgument, "input %s: missing, or not one number a row", f)
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

// holdoutEvery is the hold-out: every holdoutEvery-th row of the data set
// (the 5th, the 10th, ...) is held out of training and the model is scored
// on those rows, and so is the champion. Fixed, so that the candidate and
// the champion, and one run and the next, are measured on the same rows.
const holdoutEvery = 5

// Train reads the CSV data set, computes each class's mean over the rows
// it trains on, and writes the artifact. It reports progress per stage,
// the accuracy on the hold-out (accuracy) and on the rows trained on
// (train_accuracy) with the row counts, and, given a champion in the
// request, the champion's accuracy on the same hold-out rows
// (champion_accuracy).
func (trainer) Train(_ context.Context, req *runnerv1.TrainRequest, send func(*runnerv1.TrainResponse) error) error {
	progress := func(f float64, stage string) error {
		return send(&runnerv1.TrainResponse{Event: &runnerv1.TrainResponse_Progress{Progress: &runnerv1.TrainProgress{Fraction: f, Stage: stage}}})
	}
	logf := func(format string, args ...any) error {
		return send(&runnerv1.TrainResponse{Event: &runnerv1.TrainResponse_LogLine{LogLine: fmt.Sprintf(format, args...)}})
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
	header, rows := records[0], records[1:]
	target := slices.Index(header, req.GetTarget())
	if target < 0 {
		return fmt.Errorf("data set: no column %q", req.GetTarget())
	}
	// The features: every column but the target and the ignored ones.
	a := artifact{Format: Format}
	var columns []int
	for i, h := range header {
		if i != target && !slices.Contains(req.GetIgnore(), h) {
			a.Features = append(a.Features, h)
			columns = append(columns, i)
		}
	}
	x := make([][]float64, len(rows))
	for r, rec := range rows {
		if x[r], err = numbers(header, rec, columns, r); err != nil {
			return err
		}
	}
	var fit, holdout []int
	for r := range rows {
		if (r+1)%holdoutEvery == 0 {
			holdout = append(holdout, r)
		} else {
			fit = append(fit, r)
		}
	}

	sums := map[string][]float64{}
	counts := map[string]float64{}
	for _, r := range fit {
		label := rows[r][target]
		if sums[label] == nil {
			sums[label] = make([]float64, len(columns))
		}
		for i, v := range x[r] {
			sums[label][i] += v
		}
		counts[label]++
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
	if err := logf("%d rows (%d trained on, %d held out), %d classes", len(rows), len(fit), len(holdout), len(a.Classes)); err != nil {
		return err
	}
	labels := make([]string, len(rows))
	for r, rec := range rows {
		labels[r] = rec[target]
	}
	metrics := map[string]float64{
		"train_accuracy": accuracy(a, x, labels, fit),
		"train_rows":     float64(len(fit)),
		"holdout_rows":   float64(len(holdout)),
	}
	if len(holdout) > 0 {
		metrics["accuracy"] = accuracy(a, x, labels, holdout)
	} else if err := logf("fewer than %d rows: nothing is held out, so no accuracy is reported", holdoutEvery); err != nil {
		return err
	}

	if champ := req.GetChampionArtifactPath(); champ != "" {
		if err := scoreChampion(champ, req.GetChampionFormat(), header, rows, labels, holdout, metrics, logf); err != nil {
			return err
		}
	}

	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(req.GetOutputDir(), 0o755); err != nil {
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
		ArtifactPath: path, Format: Format, Metrics: metrics,
	}}})
}

// scoreChampion scores the champion's artifact (path, of the format
// named) on the hold-out rows and adds its accuracy to metrics as
// champion_accuracy; a champion of another format, or no hold-out, is
// only said in the log. The champion's features are found by name: it may
// have been trained on other columns.
func scoreChampion(path, format string, header []string, rows [][]string, labels []string, holdout []int,
	metrics map[string]float64, logf func(string, ...any) error) error {
	switch {
	case format != "" && format != Format:
		return logf("the champion is %s, not %s: it is not scored", format, Format)
	case len(holdout) == 0:
		return logf("no hold-out: the champion is not scored")
	}
	c, err := readArtifact(path)
	if err != nil {
		return fmt.Errorf("the champion: %w", err)
	}
	cols := make([]int, len(c.Features))
	for i, name := range c.Features {
		if cols[i] = slices.Index(header, name); cols[i] < 0 {
			return fmt.Errorf("the champion: its feature %q is not a column of the data set", name)
		}
	}
	x := make([][]float64, len(rows))
	for _, r := range holdout {
		if x[r], err = numbers(header, rows[r], cols, r); err != nil {
			return fmt.Errorf("the champion: %w", err)
		}
	}
	metrics["champion_accuracy"] = accuracy(c, x, labels, holdout)
	return logf("the champion on the same %d hold-out rows: accuracy %.4g (the candidate: %.4g)",
		len(holdout), metrics["champion_accuracy"], metrics["accuracy"])
}

// accuracy is the share of the rows rs (indices into x and labels) whose
// label the model predicts.
func accuracy(m artifact, x [][]float64, labels []string, rs []int) float64 {
	right := 0
	for _, r := range rs {
		if m.Classes[nearest(m.Centroids, x[r])] == labels[r] {
			right++
		}
	}
	return float64(right) / float64(len(rs))
}

// numbers reads the columns of a data row (row r, 0-based, of the data
// set) as numbers.
func numbers(header, rec []string, columns []int, r int) ([]float64, error) {
	out := make([]float64, len(columns))
	for i, c := range columns {
		n, err := strconv.ParseFloat(rec[c], 64)
		if err != nil {
			return nil, fmt.Errorf("data set line %d, column %s: %q is not a number", r+2, header[c], rec[c])
		}
		out[i] = n
	}
	return out, nil
}

// readArtifact reads a centroid artifact.
func readArtifact(path string) (artifact, error) {
	var a artifact
	b, err := os.ReadFile(path)
	if err != nil {
		return a, err
	}
	if err := json.Unmarshal(b, &a); err != nil || a.Format != Format || len(a.Classes) == 0 || len(a.Classes) != len(a.Centroids) {
		return a, fmt.Errorf("%s is not a %s artifact", path, Format)
	}
	for _, c := range a.Centroids {
		if len(c) != len(a.Features) {
			return a, fmt.Errorf("%s is not a %s artifact: a centroid has %d values for %d features", path, Format, len(c), len(a.Features))
		}
	}
	return a, nil
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
