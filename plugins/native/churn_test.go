package native

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"slices"
	"testing"

	"github.com/droverhq/drover/internal/churn"
)

// churnGolden is testdata/churn_golden.json, written by churn_golden.py:
// scikit-learn's figures on the bundled churn split's test rows.
type churnGolden struct {
	SklearnVersion string `json:"sklearn_version"`
	TrainRows      int    `json:"train_rows"`
	TestRows       int    `json:"test_rows"`
	Logistic       struct {
		Accuracy float64 `json:"accuracy"`
		ROCAUC   float64 `json:"roc_auc"`
		LogLoss  float64 `json:"log_loss"`
	} `json:"logistic"`
	RandomForest struct {
		Accuracy float64 `json:"accuracy"`
		ROCAUC   float64 `json:"roc_auc"`
	} `json:"random_forest"`
}

func readChurn(t *testing.T, data []byte) *Dataset {
	t.Helper()
	ds, err := ReadCSV(bytes.NewReader(data), churn.Target, CSVOptions{Ignore: []string{churn.IDColumn}})
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// TestChurnMatchesScikitLearn trains on the bundled churn training split
// and scores the test split, as churn_golden.py does with scikit-learn's
// LogisticRegression(C=1) on the same encoding: the accuracies must agree
// within one percentage point. The model is fitted on every training row
// (fit, not Train, which would hold some out), as scikit-learn's is.
func TestChurnMatchesScikitLearn(t *testing.T) {
	raw, err := os.ReadFile("testdata/churn_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g churnGolden
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	train, test := readChurn(t, churn.TrainCSV()), readChurn(t, churn.TestCSV())
	if n, m := train.Target.len(), test.Target.len(); n != g.TrainRows || m != g.TestRows {
		t.Fatalf("%d training and %d test rows; the golden file was made from %d and %d", n, m, g.TrainRows, g.TestRows)
	}
	for _, f := range train.Features {
		want := slices.Contains([]string{"contract", "internet_service", "payment_method", "paperless_billing"}, f.Name)
		if f.Categorical != want {
			t.Errorf("feature %s: categorical %v, want %v", f.Name, f.Categorical, want)
		}
	}

	all := make([]int, train.Target.len())
	for i := range all {
		all[i] = i
	}
	m, _, _, err := fit(t.Context(), train, all, TrainOptions{Task: Classification, L2: 1, MaxIterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	proba, err := m.Predict(test.Features)
	if err != nil {
		t.Fatal(err)
	}
	var labels, predicted []int
	var rows [][]float64
	for r, label := range test.Target.Strings {
		i, ok := slices.BinarySearch(m.Classes, label)
		if !ok {
			t.Fatalf("test row %d: class %q unseen in training", r, label)
		}
		p := proba[r*len(m.Classes) : (r+1)*len(m.Classes)]
		labels, predicted, rows = append(labels, i), append(predicted, argmax(p)), append(rows, p)
	}
	acc, auc, loss := Accuracy(labels, predicted), ROCAUC(labels, rows), LogLoss(labels, rows)

	t.Logf("test accuracy: native %.4f, scikit-learn logistic regression %.4f, random forest %.4f (scikit-learn %s)",
		acc, g.Logistic.Accuracy, g.RandomForest.Accuracy, g.SklearnVersion)
	t.Logf("test ROC AUC: native %.6f, scikit-learn %.6f; log loss: native %.6f, scikit-learn %.6f",
		auc, g.Logistic.ROCAUC, loss, g.Logistic.LogLoss)
	if d := math.Abs(acc - g.Logistic.Accuracy); d > 0.01 {
		t.Errorf("accuracy %.4f is %.1f points from scikit-learn's %.4f; want within 1", acc, 100*d, g.Logistic.Accuracy)
	}
	// The same objective minimised to the same point gives the same
	// probabilities, so the finer figures agree too.
	if math.Abs(auc-g.Logistic.ROCAUC) > 1e-3 || math.Abs(loss-g.Logistic.LogLoss) > 1e-3 {
		t.Errorf("ROC AUC %.6f and log loss %.6f; scikit-learn's are %.6f and %.6f", auc, loss, g.Logistic.ROCAUC, g.Logistic.LogLoss)
	}
}

// TestChurnTrain runs the bundled training split through Train, as a user
// would: the hold-out figures must be realistic for the data set.
func TestChurnTrain(t *testing.T) {
	m, metrics, err := Train(readChurn(t, churn.TrainCSV()), TrainOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("hold-out: %v", metrics)
	if !slices.Equal(m.Classes, churn.Classes()) {
		t.Errorf("classes %v, want %v", m.Classes, churn.Classes())
	}
	if acc := metrics["accuracy"]; acc < 0.75 || acc > 0.87 {
		t.Errorf("hold-out accuracy %.3f, want 0.75–0.87", acc)
	}
	if auc := metrics["roc_auc"]; auc < 0.75 {
		t.Errorf("hold-out ROC AUC %.3f, want at least 0.75", auc)
	}
}

// TestEvaluateOnHoldOut scores a trained model on HoldOutRows with
// Evaluate and gets exactly Train's hold-out metrics: what champion and
// challenger comparisons rely on.
func TestEvaluateOnHoldOut(t *testing.T) {
	ds := readChurn(t, churn.TrainCSV())
	o := TrainOptions{HoldOut: 0.25, Seed: 7}
	m, metrics, err := Train(ds, o)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := HoldOutRows(ds.Target.len(), o.HoldOut, o.Seed)
	if err != nil {
		t.Fatal(err)
	}
	again, err := m.Evaluate(ds, rows)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range metrics {
		if again[k] != v {
			t.Errorf("%s: Evaluate %g, Train %g", k, again[k], v)
		}
	}
	if _, err := m.Evaluate(&Dataset{Features: ds.Features[:1], Target: ds.Target}, rows); err == nil {
		t.Error("a data set missing features was scored")
	}
}

// stopAfter is a context that ends after its Err has been asked n times:
// a cancellation arriving at a known point in the middle of training.
type stopAfter struct {
	context.Context
	n, asked int
	done     chan struct{}
}

func (c *stopAfter) Done() <-chan struct{} { return c.done }

func (c *stopAfter) Err() error {
	c.asked++
	if c.asked > c.n {
		return context.Canceled
	}
	return nil
}

// TestTrainContextStopsMidFit cancels training part-way: the optimiser
// stops at the next evaluation instead of finishing the fit.
func TestTrainContextStopsMidFit(t *testing.T) {
	ds := readChurn(t, churn.TrainCSV())
	full := &stopAfter{Context: context.Background(), n: 1 << 30, done: make(chan struct{})}
	if _, _, err := TrainContext(full, ds, TrainOptions{Seed: 1}); err != nil {
		t.Fatal(err)
	}
	if full.asked < 20 {
		t.Fatalf("a whole fit asked its context only %d times", full.asked)
	}
	stop := &stopAfter{Context: context.Background(), n: 5, done: make(chan struct{})}
	m, metrics, err := TrainContext(stop, ds, TrainOptions{Seed: 1})
	if !errors.Is(err, context.Canceled) || m != nil || metrics != nil {
		t.Fatalf("cancelled training: %v, %v, %v; want context.Canceled and nothing else", m, metrics, err)
	}
	if stop.asked > 8 {
		t.Errorf("training went on for %d more evaluations after it was cancelled", stop.asked-6)
	}
	t.Logf("a whole fit: %d evaluations; cancelled after 5: stopped at %d", full.asked, stop.asked)
}
