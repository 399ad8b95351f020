package native

import (
	"encoding/json"
	"math"
	"os"
	"testing"
)

// TestMetricsMatchScikitLearn checks every metric against scikit-learn's
// on the same data (testdata/metrics_golden.py wrote the figures).
func TestMetricsMatchScikitLearn(t *testing.T) {
	raw, err := os.ReadFile("testdata/metrics_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Binary struct {
			Y, P                    []int
			S                       []float64
			Acc, Prec, Rec, F1, AUC float64
			LL                      float64 `json:"ll"`
		}
		Multi struct {
			Y, P                    []int
			Proba                   [][]float64
			Acc, Prec, Rec, F1, AUC float64
			LL                      float64 `json:"ll"`
		}
		Reg struct {
			Y, P          []float64
			MAE, RMSE, R2 float64
		}
	}
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9 {
			t.Errorf("%s = %.12f, scikit-learn %.12f", name, got, want)
		}
	}
	b := g.Binary
	proba := make([][]float64, len(b.S))
	for i, s := range b.S {
		proba[i] = []float64{1 - s, s}
	}
	near("binary accuracy", Accuracy(b.Y, b.P), b.Acc)
	p, r, f := PrecisionRecallF1(b.Y, b.P, 2)
	near("binary precision", p, b.Prec)
	near("binary recall", r, b.Rec)
	near("binary F1", f, b.F1)
	near("binary ROC AUC", ROCAUC(b.Y, proba), b.AUC)
	near("binary log loss", LogLoss(b.Y, proba), b.LL)

	m := g.Multi
	near("multiclass accuracy", Accuracy(m.Y, m.P), m.Acc)
	p, r, f = PrecisionRecallF1(m.Y, m.P, 3)
	near("multiclass precision", p, m.Prec)
	near("multiclass recall", r, m.Rec)
	near("multiclass F1", f, m.F1)
	near("multiclass ROC AUC", ROCAUC(m.Y, m.Proba), m.AUC)
	near("multiclass log loss", LogLoss(m.Y, m.Proba), m.LL)

	mae, rmse, r2 := RegressionMetrics(g.Reg.Y, g.Reg.P)
	near("MAE", mae, g.Reg.MAE)
	near("RMSE", rmse, g.Reg.RMSE)
	near("R²", r2, g.Reg.R2)
}

func TestMetricEdges(t *testing.T) {
	if !math.IsNaN(BinaryAUC([]bool{true, true}, []float64{0.1, 0.9})) {
		t.Error("AUC with one class is not NaN")
	}
	if auc := BinaryAUC([]bool{false, true}, []float64{0.5, 0.5}); auc != 0.5 {
		t.Errorf("AUC of a tie is %v", auc)
	}
	if _, _, r2 := RegressionMetrics([]float64{2, 2}, []float64{2, 2}); r2 != 1 {
		t.Errorf("R² of a perfect constant fit is %v", r2)
	}
	if p, r, f := PrecisionRecallF1([]int{0, 0}, []int{0, 0}, 2); p != 0 || r != 0 || f != 0 {
		t.Errorf("no positives: %v %v %v", p, r, f)
	}
}
