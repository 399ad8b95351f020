package native

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"

	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/optimize"
)

// FormatVersion is the version of the artifact format Train writes.
const FormatVersion = 1

// Task is what a model predicts.
type Task string

// The tasks.
const (
	Classification Task = "classification" // logistic regression
	Regression     Task = "regression"     // linear (ridge) regression
)

// Column is one feature of a data set: numbers, or the text of each row's
// category when Categorical.
type Column struct {
	Name        string
	Categorical bool
	Numbers     []float64
	Strings     []string
}

func (c *Column) len() int {
	if c.Categorical {
		return len(c.Strings)
	}
	return len(c.Numbers)
}

// Dataset is the training data: feature columns and the target, the class
// labels' text for classification or numbers for regression.
type Dataset struct {
	Features []Column
	Target   Column
}

// TrainOptions tune Train; the zero value trains as scikit-learn's
// LogisticRegression() and Ridge() do by default.
type TrainOptions struct {
	Task Task
	// L2 is the penalty on the weights (not the intercepts): 1/C in
	// scikit-learn's LogisticRegression, alpha in Ridge. Default 1.
	L2 float64
	// HoldOut is the fraction of rows kept out of training for
	// evaluation (default 0.2; 0 < HoldOut < 1).
	HoldOut float64
	// Seed makes the hold-out split reproducible.
	Seed uint64
	// MaxIterations bounds L-BFGS (default 1000).
	MaxIterations int
}

// Encoder turns feature columns into the model's inputs: numeric features
// standardised to mean 0 and standard deviation 1 (over the training rows),
// categorical ones one-hot encoded (an unseen category encodes as zeros).
type Encoder struct {
	Features []EncodedFeature `json:"features"`
}

// EncodedFeature is how the encoder treats one feature.
type EncodedFeature struct {
	Name        string   `json:"name"`
	Categorical bool     `json:"categorical,omitempty"`
	Mean        float64  `json:"mean,omitempty"`
	Std         float64  `json:"std,omitempty"`
	Categories  []string `json:"categories,omitempty"`
}

// Width returns the number of encoded inputs.
func (e *Encoder) Width() int {
	w := 0
	for _, f := range e.Features {
		if f.Categorical {
			w += len(f.Categories)
		} else {
			w++
		}
	}
	return w
}

func fitEncoder(cols []Column, rows []int) Encoder {
	var e Encoder
	for _, c := range cols {
		f := EncodedFeature{Name: c.Name, Categorical: c.Categorical}
		if c.Categorical {
			seen := map[string]bool{}
			for _, r := range rows {
				seen[c.Strings[r]] = true
			}
			for v := range seen {
				f.Categories = append(f.Categories, v)
			}
			sort.Strings(f.Categories)
		} else {
			var sum, sq float64
			for _, r := range rows {
				sum += c.Numbers[r]
			}
			f.Mean = sum / float64(len(rows))
			for _, r := range rows {
				d := c.Numbers[r] - f.Mean
				sq += d * d
			}
			f.Std = math.Sqrt(sq / float64(len(rows)))
			if f.Std == 0 {
				f.Std = 1 // a constant feature: centred, not scaled
			}
		}
		e.Features = append(e.Features, f)
	}
	return e
}

// encode writes row r of cols into dst (Width long).
func (e *Encoder) encode(cols []Column, r int, dst []float64) {
	j := 0
	for i, f := range e.Features {
		if f.Categorical {
			v := cols[i].Strings[r]
			for _, c := range f.Categories {
				dst[j] = 0
				if c == v {
					dst[j] = 1
				}
				j++
			}
			continue
		}
		dst[j] = (cols[i].Numbers[r] - f.Mean) / f.Std
		j++
	}
}

// Model is a trained linear model, the content of a native artifact.
type Model struct {
	Format  int     `json:"format"`
	Task    Task    `json:"task"`
	Encoder Encoder `json:"encoder"`
	// Classes are the class labels, sorted; empty for regression.
	Classes []string `json:"classes,omitempty"`
	// Weights has one row per output: one for regression and binary
	// classification (the positive class, Classes[1]), one per class for
	// multinomial.
	Weights    [][]float64 `json:"weights"`
	Intercepts []float64   `json:"intercepts"`
}

// Metrics are a model's figures on the hold-out rows.
type Metrics map[string]float64

// Train fits a model to the data set and evaluates it on a hold-out.
func Train(ds *Dataset, o TrainOptions) (*Model, Metrics, error) {
	return TrainContext(context.Background(), ds, o)
}

// TrainContext is Train, stopped with ctx's cause when ctx ends: the
// optimiser looks at ctx after every evaluation of the objective.
func TrainContext(ctx context.Context, ds *Dataset, o TrainOptions) (*Model, Metrics, error) {
	if o.Task == "" {
		o.Task = Classification
	}
	if o.L2 == 0 {
		o.L2 = 1
	}
	if o.HoldOut == 0 {
		o.HoldOut = 0.2
	}
	if o.MaxIterations == 0 {
		o.MaxIterations = 1000
	}
	switch {
	case o.Task != Classification && o.Task != Regression:
		return nil, nil, fmt.Errorf("native: unknown task %q", o.Task)
	case o.L2 < 0:
		return nil, nil, errors.New("native: the L2 penalty cannot be negative")
	case o.HoldOut <= 0 || o.HoldOut >= 1:
		return nil, nil, fmt.Errorf("native: hold-out fraction %g is not between 0 and 1", o.HoldOut)
	case len(ds.Features) == 0:
		return nil, nil, errors.New("native: no features")
	}
	n := ds.Target.len()
	for _, c := range ds.Features {
		if c.len() != n {
			return nil, nil, fmt.Errorf("native: feature %s has %d rows, the target %d", c.Name, c.len(), n)
		}
	}
	if o.Task == Classification && !ds.Target.Categorical {
		return nil, nil, errors.New("native: classification needs a categorical target")
	}
	if o.Task == Regression && ds.Target.Categorical {
		return nil, nil, errors.New("native: regression needs a numeric target")
	}
	trainRows, testRows, err := split(n, o.HoldOut, o.Seed)
	if err != nil {
		return nil, nil, err
	}
	m, x, y, err := fit(ctx, ds, trainRows, o)
	if err != nil {
		return nil, nil, err
	}
	return m, m.evaluate(x, y, testRows), nil
}

// split divides n rows into training and hold-out rows, by a seeded
// shuffle, each sorted.
func split(n int, holdOut float64, seed uint64) (train, test []int, err error) {
	if holdOut <= 0 || holdOut >= 1 {
		return nil, nil, fmt.Errorf("native: hold-out fraction %g is not between 0 and 1", holdOut)
	}
	perm := rand.New(rand.NewPCG(seed, 0x64726f766572)).Perm(n)
	k := int(math.Round(float64(n) * holdOut))
	if k < 1 || n-k < 2 {
		return nil, nil, fmt.Errorf("native: %d rows are too few to train and hold out %g", n, holdOut)
	}
	train, test = perm[k:], perm[:k]
	slices.Sort(train)
	slices.Sort(test)
	return train, test, nil
}

// HoldOutRows returns the rows Train holds out of a data set of n rows
// with the same HoldOut and Seed: to score another model — the champion —
// on exactly the rows a candidate was scored on.
func HoldOutRows(n int, holdOut float64, seed uint64) ([]int, error) {
	_, test, err := split(n, holdOut, seed)
	return test, err
}

// Evaluate scores the model on the given rows of a data set, with Train's
// metrics. The data set's features are matched to the model's by name; a
// class the model never saw is counted, not scored.
func (m *Model) Evaluate(ds *Dataset, rows []int) (Metrics, error) {
	cols := make([]Column, len(m.Encoder.Features))
	for i, f := range m.Encoder.Features {
		j := slices.IndexFunc(ds.Features, func(c Column) bool { return c.Name == f.Name })
		if j < 0 {
			return nil, fmt.Errorf("native: the data set has no feature %s, which the model takes", f.Name)
		}
		if ds.Features[j].Categorical != f.Categorical {
			return nil, fmt.Errorf("native: feature %s: categorical is %v in the data set, %v in the model", f.Name, ds.Features[j].Categorical, f.Categorical)
		}
		cols[i] = ds.Features[j]
	}
	n := ds.Target.len()
	for _, r := range rows {
		if r < 0 || r >= n {
			return nil, fmt.Errorf("native: row %d is outside the data set's %d", r, n)
		}
	}
	x := make([][]float64, n)
	y := make([]float64, n)
	for _, r := range rows {
		x[r] = make([]float64, m.Encoder.Width())
		m.Encoder.encode(cols, r, x[r])
		switch {
		case m.Task == Regression && ds.Target.Categorical:
			return nil, errors.New("native: a regression needs a numeric target")
		case m.Task == Regression:
			y[r] = ds.Target.Numbers[r]
		case !ds.Target.Categorical:
			return nil, errors.New("native: a classifier needs a categorical target")
		default:
			y[r] = float64(slices.Index(m.Classes, ds.Target.Strings[r]))
		}
	}
	return m.evaluate(x, y, rows), nil
}

// fit trains a model on the given rows of the data set and returns it with
// every row encoded (x) and its class index or target value (y).
func fit(ctx context.Context, ds *Dataset, trainRows []int, o TrainOptions) (*Model, [][]float64, []float64, error) {
	n := ds.Target.len()
	m := &Model{Format: FormatVersion, Task: o.Task, Encoder: fitEncoder(ds.Features, trainRows)}
	width := m.Encoder.Width()
	x := make([][]float64, n)
	for r := range n {
		x[r] = make([]float64, width)
		m.Encoder.encode(ds.Features, r, x[r])
	}

	var y []float64 // class index or target value, by row
	outputs := 1
	if o.Task == Classification {
		classes := map[string]bool{}
		for _, r := range trainRows {
			classes[ds.Target.Strings[r]] = true
		}
		for c := range classes {
			m.Classes = append(m.Classes, c)
		}
		sort.Strings(m.Classes)
		if len(m.Classes) < 2 {
			return nil, nil, nil, errors.New("native: the training rows hold only one class")
		}
		if len(m.Classes) > 2 {
			outputs = len(m.Classes)
		}
		y = make([]float64, n)
		for r := range n {
			i, ok := slices.BinarySearch(m.Classes, ds.Target.Strings[r])
			if !ok {
				i = -1 // a class seen only in the hold-out
			}
			y[r] = float64(i)
		}
	} else {
		y = ds.Target.Numbers
	}

	obj := objective{x: x, y: y, rows: trainRows, width: width, outputs: outputs, l2: o.L2, task: o.Task}
	settings := &optimize.Settings{GradientThreshold: 1e-6, MajorIterations: o.MaxIterations}
	if ctx.Done() != nil {
		settings.Recorder = ctxRecorder{ctx}
	}
	res, err := optimize.Minimize(optimize.Problem{Func: obj.value, Grad: obj.grad},
		make([]float64, (width+1)*outputs), settings, &optimize.LBFGS{})
	if ctx.Err() != nil {
		return nil, nil, nil, context.Cause(ctx)
	}
	if err != nil && res == nil {
		return nil, nil, nil, fmt.Errorf("native: training: %w", err)
	}
	for k := range outputs {
		w := res.X[k*(width+1) : (k+1)*(width+1)]
		m.Weights = append(m.Weights, slices.Clone(w[:width]))
		m.Intercepts = append(m.Intercepts, w[width])
	}
	return m, x, y, nil
}

// ctxRecorder stops the optimiser when its context ends: a Recorder's
// error ends Minimize.
type ctxRecorder struct{ ctx context.Context }

func (r ctxRecorder) Init() error { return r.ctx.Err() }

func (r ctxRecorder) Record(*optimize.Location, optimize.Operation, *optimize.Stats) error {
	return r.ctx.Err()
}

// objective is the penalised negative log-likelihood (classification) or
// half the sum of squared errors (regression) over the training rows.
// Parameters: per output, width weights then the intercept.
type objective struct {
	x       [][]float64
	y       []float64
	rows    []int
	width   int
	outputs int
	l2      float64
	task    Task
}

func (o *objective) value(p []float64) float64 {
	g := make([]float64, len(p))
	return o.eval(p, g, false)
}

func (o *objective) grad(g, p []float64) {
	o.eval(p, g, true)
}

func (o *objective) eval(p, g []float64, wantGrad bool) float64 {
	clear(g)
	w := o.width + 1
	z := make([]float64, o.outputs)
	loss := 0.0
	for _, r := range o.rows {
		xr := o.x[r]
		for k := range o.outputs {
			z[k] = floats.Dot(p[k*w:k*w+o.width], xr) + p[k*w+o.width]
		}
		var dz []float64 // dloss/dz
		switch {
		case o.task == Regression:
			d := z[0] - o.y[r]
			loss += d * d / 2
			dz = []float64{d}
		case o.outputs == 1: // binary: class 1 is positive
			t := o.y[r]
			// log(1+exp(z)) - t*z, computed stably
			loss += softplus(z[0]) - t*z[0]
			dz = []float64{sigmoid(z[0]) - t}
		default:
			lse := floats.LogSumExp(z)
			loss += lse - z[int(o.y[r])]
			dz = z
			for k := range dz {
				dz[k] = math.Exp(z[k] - lse)
			}
			dz[int(o.y[r])]--
		}
		if wantGrad {
			for k, d := range dz {
				floats.AddScaled(g[k*w:k*w+o.width], d, xr)
				g[k*w+o.width] += d
			}
		}
	}
	for k := range o.outputs {
		wk := p[k*w : k*w+o.width]
		loss += o.l2 / 2 * floats.Dot(wk, wk)
		if wantGrad {
			floats.AddScaled(g[k*w:k*w+o.width], o.l2, wk)
		}
	}
	return loss
}

func sigmoid(z float64) float64 {
	if z >= 0 {
		return 1 / (1 + math.Exp(-z))
	}
	e := math.Exp(z)
	return e / (1 + e)
}

func softplus(z float64) float64 {
	if z > 30 {
		return z
	}
	return math.Log1p(math.Exp(z))
}

// predictEncoded returns, for encoded inputs, the class probabilities or
// the regression value.
func (m *Model) predictEncoded(x []float64, out []float64) {
	z := out[:len(m.Weights)]
	for k, w := range m.Weights {
		z[k] = floats.Dot(w, x) + m.Intercepts[k]
	}
	switch {
	case m.Task == Regression:
	case len(m.Weights) == 1:
		p := sigmoid(z[0])
		out[0], out[1] = 1-p, p
	default:
		lse := floats.LogSumExp(z)
		for k := range z {
			z[k] = math.Exp(z[k] - lse)
		}
	}
}

func (m *Model) evaluate(x [][]float64, y []float64, rows []int) Metrics {
	if m.Task == Regression {
		truth := make([]float64, len(rows))
		pred := make([]float64, len(rows))
		out := make([]float64, 1)
		for i, r := range rows {
			m.predictEncoded(x[r], out)
			truth[i], pred[i] = y[r], out[0]
		}
		mae, rmse, r2 := RegressionMetrics(truth, pred)
		return Metrics{"mae": mae, "rmse": rmse, "r2": r2, "holdout_rows": float64(len(rows))}
	}
	var labels, predicted []int
	var proba [][]float64
	unseen := 0
	for _, r := range rows {
		if y[r] < 0 {
			unseen++ // a class the model never saw cannot be scored
			continue
		}
		out := make([]float64, len(m.Classes))
		m.predictEncoded(x[r], out)
		labels = append(labels, int(y[r]))
		predicted = append(predicted, argmax(out))
		proba = append(proba, out)
	}
	p, rec, f1 := PrecisionRecallF1(labels, predicted, len(m.Classes))
	return Metrics{
		"accuracy": Accuracy(labels, predicted), "precision": p, "recall": rec, "f1": f1,
		"roc_auc": ROCAUC(labels, proba), "log_loss": LogLoss(labels, proba),
		"holdout_rows": float64(len(rows)), "holdout_unseen_class": float64(unseen),
	}
}
