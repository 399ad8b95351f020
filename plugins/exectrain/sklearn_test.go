package exectrain

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/churn"
	"github.com/droverhq/drover/plugins/sdk/sdktest"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
)

// python is Debian's interpreter, which has scikit-learn.
const python = sdktest.Python

// TestScikitLearnRandomForest trains the example random-forest churn model
// (plugins/examples/sklearn/train.py) on the bundled churn data through the
// exec trainer, and checks what came back: the streamed log and progress,
// the hold-out metrics, and an artifact that predicts from raw columns.
func TestScikitLearnRandomForest(t *testing.T) {
	t.Parallel()
	sdktest.RequireSklearn(t)
	trainPy, err := filepath.Abs(filepath.Join("..", "examples", "sklearn", "train.py"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dataset := filepath.Join(dir, "churn_train.csv")
	if err := os.WriteFile(dataset, churn.TrainCSV(), 0o644); err != nil {
		t.Fatal(err)
	}
	req := &runnerv1.TrainRequest{
		DatasetPath: dataset,
		OutputDir:   filepath.Join(dir, "out"),
		Target:      "churn",
		Params:      map[string]string{"n_estimators": "200", "random_state": "0"},
	}
	tr := New(Config{Command: []string{python, trainPy}, Dir: filepath.Dir(trainPy), Timeout: 5 * time.Minute}, nil)
	var rec recorder
	start := time.Now()
	if err := tr.Train(t.Context(), req, rec.send); err != nil {
		t.Fatal(err)
	}
	t.Logf("trained in %v", time.Since(start).Round(time.Millisecond))

	lines := rec.logLines()
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "scikit-learn ") }) {
		t.Errorf("no version line in the log: %q", lines)
	}
	var (
		fractions []float64
		stages    []string
		metrics   = map[string]float64{}
	)
	for _, ev := range rec.events {
		if p := ev.GetProgress(); p != nil {
			fractions = append(fractions, p.GetFraction())
			stages = append(stages, p.GetStage())
			for k, v := range p.GetMetrics() {
				metrics[k] = v
			}
		}
	}
	if !slices.IsSorted(fractions) || len(fractions) < 10 || fractions[len(fractions)-1] < 0.9 {
		t.Errorf("progress fractions %v: want at least 10, rising to 0.9 or more", fractions)
	}
	if !slices.Contains(stages, "training 200/200 trees") {
		t.Errorf("stages %q: no training stage", stages)
	}

	res := rec.result(t)
	m := res.GetMetrics()
	t.Logf("hold-out metrics: %v", m)
	if res.GetFormat() != "sklearn-pickle" {
		t.Errorf("format %q, want sklearn-pickle", res.GetFormat())
	}
	if m["accuracy"] <= 0.7 || m["roc_auc"] <= 0.75 {
		t.Errorf("accuracy %.4f, roc_auc %.4f: want over 0.7 and 0.75", m["accuracy"], m["roc_auc"])
	}
	if m["holdout_rows"] != 800 {
		t.Errorf("holdout_rows %v, want 800 (20%% of 4000)", m["holdout_rows"])
	}
	for _, k := range []string{"precision", "recall", "f1", "log_loss"} {
		if _, ok := m[k]; !ok {
			t.Errorf("no %s metric", k)
		}
		if metrics[k] != m[k] {
			t.Errorf("%s: streamed %v, result %v", k, metrics[k], m[k])
		}
	}
	if want := filepath.Join(req.GetOutputDir(), "model.pkl"); res.GetArtifactPath() != want {
		t.Errorf("artifact %s, want %s", res.GetArtifactPath(), want)
	}
	if fi, err := os.Stat(res.GetArtifactPath()); err != nil || fi.Size() == 0 {
		t.Fatalf("artifact: %v", err)
	}

	// The artifact serves from raw feature columns, in model.json's order.
	b, err := os.ReadFile(filepath.Join(req.GetOutputDir(), "model.json"))
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Features []string `json:"features"`
		Classes  []string `json:"classes"`
	}
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(info.Features, "customer_id") || slices.Contains(info.Features, "churn") || len(info.Features) != 10 {
		t.Errorf("features %q: want the 10 columns but customer_id and churn", info.Features)
	}
	if !slices.Equal(info.Classes, []string{"no", "yes"}) {
		t.Errorf("classes %q, want no, yes", info.Classes)
	}
	predict := `
import json, pickle, sys
import numpy as np
model = pickle.load(open(sys.argv[1], "rb"))
features = json.load(open(sys.argv[2]))["features"]
risky = {"tenure_months": 2, "contract": "month-to-month", "monthly_charges": 99.5, "total_charges": 199.0,
         "support_calls": 6, "internet_service": "fiber", "payment_method": "electronic-check",
         "paperless_billing": "yes", "senior_citizen": 1, "num_products": 1}
settled = {"tenure_months": 70, "contract": "two-year", "monthly_charges": 25.0, "total_charges": 1750.0,
           "support_calls": 0, "internet_service": "none", "payment_method": "bank-transfer",
           "paperless_billing": "no", "senior_citizen": 0, "num_products": 4}
X = np.array([[row[f] for f in features] for row in (risky, settled)], dtype=object)
print(json.dumps(model.predict_proba(X)[:, list(model.classes_).index("yes")].tolist()))
`
	out, err := exec.Command(python, "-c", predict, res.GetArtifactPath(), filepath.Join(req.GetOutputDir(), "model.json")).CombinedOutput()
	if err != nil {
		t.Fatalf("predicting with the artifact: %v\n%s", err, out)
	}
	var p []float64
	if err := json.Unmarshal(out, &p); err != nil || len(p) != 2 {
		t.Fatalf("predictions %q: %v", out, err)
	}
	if p[0] < 0.5 || p[1] > 0.2 {
		t.Errorf("P(churn) = %.3f for a risky customer, %.3f for a settled one", p[0], p[1])
	}
}
