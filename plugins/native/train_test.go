package native

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

type golden struct {
	Numeric    [][]float64
	Category   []string
	Binary     []string
	Multi      []string
	Regression []float64
	BinaryFit  fitted `json:"binary_fit"`
	MultiFit   fitted `json:"multi_fit"`
	RegFit     fitted `json:"regression_fit"`
}

type fitted struct {
	Coef      [][]float64
	Intercept []float64
}

func loadGolden(t *testing.T) (*golden, []Column) {
	t.Helper()
	raw, err := os.ReadFile("testdata/linear_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	cols := make([]Column, 3)
	for j := range cols {
		cols[j].Name = "x" + strconv.Itoa(j)
		for _, row := range g.Numeric {
			cols[j].Numbers = append(cols[j].Numbers, row[j])
		}
	}
	cols = append(cols, Column{Name: "plan", Categorical: true, Strings: g.Category})
	return &g, cols
}

// TestFitMatchesScikitLearn fits on every row and compares the weights
// with scikit-learn's LogisticRegression (binary and multinomial) and
// Ridge on the same standardised, one-hot encoded data: the same
// objective, the same minimum.
func TestFitMatchesScikitLearn(t *testing.T) {
	g, cols := loadGolden(t)
	all := make([]int, len(g.Numeric))
	for i := range all {
		all[i] = i
	}
	for _, c := range []struct {
		name   string
		target Column
		task   Task
		want   fitted
	}{
		{"binary", Column{Categorical: true, Strings: g.Binary}, Classification, g.BinaryFit},
		{"multinomial", Column{Categorical: true, Strings: g.Multi}, Classification, g.MultiFit},
		{"ridge", Column{Numbers: g.Regression}, Regression, g.RegFit},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, x, y, err := fit(t.Context(), &Dataset{Features: cols, Target: c.target}, all, TrainOptions{Task: c.task, L2: 1, MaxIterations: 10000})
			if err != nil {
				t.Fatal(err)
			}
			// Both minimise the same objective: ours must end at least as
			// low as scikit-learn's (which stops on a relative change in
			// the objective of 64 ε, a little early along flat directions).
			obj := objective{x: x, y: y, rows: all, width: m.Encoder.Width(), outputs: len(m.Weights), l2: 1, task: c.task}
			var ours, theirs []float64
			for k := range m.Weights {
				ours = append(append(ours, m.Weights[k]...), m.Intercepts[k])
				theirs = append(append(theirs, c.want.Coef[k]...), c.want.Intercept[k])
			}
			if a, b := obj.value(ours), obj.value(theirs); a > b+1e-9 {
				t.Errorf("objective %.10f at our weights, %.10f at scikit-learn's", a, b)
			}
			if len(m.Weights) != len(c.want.Coef) {
				t.Fatalf("%d outputs, scikit-learn %d", len(m.Weights), len(c.want.Coef))
			}
			for k := range m.Weights {
				for j, w := range m.Weights[k] {
					if math.Abs(w-c.want.Coef[k][j]) > 1e-3 {
						t.Errorf("weight [%d][%d] = %.6f, scikit-learn %.6f", k, j, w, c.want.Coef[k][j])
					}
				}
				if math.Abs(m.Intercepts[k]-c.want.Intercept[k]) > 1e-3 {
					t.Errorf("intercept %d = %.6f, scikit-learn %.6f", k, m.Intercepts[k], c.want.Intercept[k])
				}
			}
		})
	}
}

// TestGradient checks the objective's gradient against finite differences.
func TestGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([][]float64, 20)
	for i := range x {
		x[i] = []float64{rng.NormFloat64(), rng.NormFloat64(), rng.NormFloat64()}
	}
	rows := make([]int, len(x))
	for i := range rows {
		rows[i] = i
	}
	for _, c := range []struct {
		name    string
		task    Task
		outputs int
		label   func(i int) float64
	}{
		{"binary", Classification, 1, func(i int) float64 { return float64(i % 2) }},
		{"multinomial", Classification, 3, func(i int) float64 { return float64(i % 3) }},
		{"regression", Regression, 1, func(i int) float64 { return float64(i) / 3 }},
	} {
		y := make([]float64, len(x))
		for i := range y {
			y[i] = c.label(i)
		}
		o := objective{x: x, y: y, rows: rows, width: 3, outputs: c.outputs, l2: 0.7, task: c.task}
		p := make([]float64, 4*c.outputs)
		for i := range p {
			p[i] = rng.NormFloat64()
		}
		g := make([]float64, len(p))
		o.grad(g, p)
		for i := range p {
			const h = 1e-6
			q := append([]float64(nil), p...)
			q[i] += h
			up := o.value(q)
			q[i] -= 2 * h
			down := o.value(q)
			if num := (up - down) / (2 * h); math.Abs(num-g[i]) > 1e-4*max(1, math.Abs(num)) {
				t.Errorf("%s: d/dp[%d] = %.6f, finite differences %.6f", c.name, i, g[i], num)
			}
		}
	}
}

func TestTrainEvaluatesOnHoldOut(t *testing.T) {
	g, cols := loadGolden(t)
	m, met, err := Train(&Dataset{Features: cols, Target: Column{Categorical: true, Strings: g.Binary}}, TrainOptions{Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if met["holdout_rows"] != 60 || met["accuracy"] < 0.85 || met["roc_auc"] < 0.9 || met["log_loss"] > 0.4 {
		t.Fatalf("hold-out metrics %v", met)
	}
	if len(m.Classes) != 2 || m.Classes[1] != "1" || m.Encoder.Width() != 6 {
		t.Fatalf("model classes %v, width %d", m.Classes, m.Encoder.Width())
	}
	_, met, err = Train(&Dataset{Features: cols, Target: Column{Numbers: g.Regression}}, TrainOptions{Task: Regression, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if met["r2"] < 0.95 || met["rmse"] > 0.5 {
		t.Fatalf("regression hold-out metrics %v", met)
	}

	for name, bad := range map[string]struct {
		ds *Dataset
		o  TrainOptions
	}{
		"no features":     {&Dataset{Target: Column{Categorical: true, Strings: g.Binary}}, TrainOptions{}},
		"short feature":   {&Dataset{Features: []Column{{Name: "a", Numbers: []float64{1}}}, Target: Column{Categorical: true, Strings: g.Binary}}, TrainOptions{}},
		"numeric classes": {&Dataset{Features: cols, Target: Column{Numbers: g.Regression}}, TrainOptions{}},
		"one class":       {&Dataset{Features: cols[:1], Target: Column{Categorical: true, Strings: make([]string, len(g.Binary))}}, TrainOptions{}},
		"bad hold-out":    {&Dataset{Features: cols, Target: Column{Categorical: true, Strings: g.Binary}}, TrainOptions{HoldOut: 1}},
		"negative L2":     {&Dataset{Features: cols, Target: Column{Categorical: true, Strings: g.Binary}}, TrainOptions{L2: -1}},
		"unknown task":    {&Dataset{Features: cols, Target: Column{Categorical: true, Strings: g.Binary}}, TrainOptions{Task: "ranking"}},
	} {
		if _, _, err := Train(bad.ds, bad.o); err == nil {
			t.Errorf("%s: trained", name)
		}
	}
}

func TestArtifactRoundTripAndPredict(t *testing.T) {
	g, cols := loadGolden(t)
	for _, target := range [][]string{g.Binary, g.Multi} {
		m, met, err := Train(&Dataset{Features: cols, Target: Column{Categorical: true, Strings: target}}, TrainOptions{Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		b, err := m.MarshalArtifact()
		if err != nil {
			t.Fatal(err)
		}
		back, err := LoadArtifact(b)
		if err != nil {
			t.Fatal(err)
		}
		proba, err := back.Predict(cols)
		if err != nil {
			t.Fatal(err)
		}
		per := back.Outputs()
		right := 0
		for r := range target {
			sum := 0.0
			for _, p := range proba[r*per : (r+1)*per] {
				sum += p
			}
			if math.Abs(sum-1) > 1e-9 {
				t.Fatalf("row %d: probabilities sum to %v", r, sum)
			}
			if back.Classes[argmax(proba[r*per:(r+1)*per])] == target[r] {
				right++
			}
		}
		if acc := float64(right) / float64(len(target)); acc < met["accuracy"]-0.05 {
			t.Errorf("%d classes: accuracy over all rows %.3f, on the hold-out %.3f", per, acc, met["accuracy"])
		}
		// An unseen category encodes as zeros rather than failing.
		one := []Column{{Name: "x0", Numbers: []float64{0}}, {Name: "x1", Numbers: []float64{10}}, {Name: "x2", Numbers: []float64{-1}}, {Name: "plan", Categorical: true, Strings: []string{"zzz"}}}
		if _, err := back.Predict(one); err != nil {
			t.Errorf("unseen category: %v", err)
		}
		if _, err := back.Predict(one[:3]); err == nil {
			t.Error("a missing column was accepted")
		}
	}
	for _, bad := range []string{
		`{"format": 2}`,
		`{"format": 1, "task": "classification", "classes": ["a"], "weights": [], "intercepts": []}`,
		`{"format": 1, "task": "regression", "encoder": {"features": [{"name": "a", "std": 1}]}, "weights": [[1, 2]], "intercepts": [0]}`,
		`{"format": 1, "task": "regression", "encoder": {"features": [{"name": "a", "std": 0}]}, "weights": [[1]], "intercepts": [0]}`,
		`not json`,
	} {
		if _, err := LoadArtifact([]byte(bad)); err == nil {
			t.Errorf("artifact %s loaded", bad)
		}
	}
}

// TestPredictNotFinite refuses, with ErrNotFinite, rows whose feature is
// not finite, whose scaled feature overflows, or whose answer does.
func TestPredictNotFinite(t *testing.T) {
	m, err := LoadArtifact([]byte(`{"format": 1, "task": "classification", "classes": ["a", "b", "c"],
	  "encoder": {"features": [{"name": "x", "std": 0.5}]}, "weights": [[1e8], [2e8], [3e8]], "intercepts": [0, 0, 0]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		x    float64
		fail string
	}{
		{1, ""},
		{math.NaN(), "feature x is NaN"},
		{math.Inf(-1), "feature x is -Inf"},
		{1e308, "feature x: 1e+308 is too large"},
		{1e300, "the model's answer"},
	} {
		p, err := m.Predict([]Column{{Name: "x", Numbers: []float64{0, c.x}}})
		switch {
		case c.fail == "" && err != nil:
			t.Errorf("x=%g: %v", c.x, err)
		case c.fail == "" && slices.ContainsFunc(p, notFinite):
			t.Errorf("x=%g: %v", c.x, p)
		case c.fail != "" && (!errors.Is(err, ErrNotFinite) || !strings.Contains(err.Error(), "row 1: "+c.fail)):
			t.Errorf("x=%g: %v, want row 1 refused: %s", c.x, err, c.fail)
		}
	}
}
