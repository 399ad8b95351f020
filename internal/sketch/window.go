package sketch

import (
	"fmt"
	"math/rand/v2"
	"time"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Row reads one row of live traffic for Window.Observe. Index i counts the
// window's columns (Window.Columns): the reference's features in order,
// then the model's prediction when the reference has one. Number is called
// for numeric columns (NaN is null) and String for categorical and binary
// ones ("" is null).
type Row interface {
	Number(i int) float64
	String(i int) string
}

// WindowOption tunes NewWindow.
type WindowOption func(*windowConfig)

type windowConfig struct {
	k    int
	seed uint64
}

// WithK sets the accuracy parameter of the window's quantile sketches
// (default DefaultK).
func WithK(k int) WindowOption {
	return func(c *windowConfig) { c.k = k }
}

// WithSeed makes the window's sketches deterministic. Windows that will
// be merged need distinct seeds (for example, a hash of the agent and the
// window's start); the default is random.
func WithSeed(seed uint64) WindowOption {
	return func(c *windowConfig) { c.seed = seed }
}

// column is one feature's (or the prediction's) live summary.
type column struct {
	name string
	kind droverv1.FeatureKind
	num  *Numeric
	cat  *Categorical
}

// Window accumulates one window of live traffic for a model version,
// measured against the version's reference profile: per feature a Numeric
// or Categorical summary of the same shape as the reference's. Windows of
// the same model version merge across agents and time.
//
// A Window is not safe for concurrent use; an agent keeps one per
// goroutine or guards it.
type Window struct {
	model            string
	version          uint64
	start            time.Time
	length           time.Duration
	rows, violations uint64
	cols             []column
	// features is the number of columns that are features; a column after
	// them is the prediction.
	features int
	profile  *droverv1.ReferenceProfile
}

// NewWindow returns an empty window for a model version, starting at
// start and lasting length, measured against the version's reference
// profile. It fails when the profile is inconsistent (a feature of no
// known kind, or without the summary its kind needs).
func NewWindow(profile *droverv1.ReferenceProfile, model string, version uint64, start time.Time, length time.Duration, opts ...WindowOption) (*Window, error) {
	cfg := windowConfig{k: DefaultK, seed: rand.Uint64()}
	for _, o := range opts {
		o(&cfg)
	}
	if profile == nil {
		return nil, fmt.Errorf("%w: no reference profile", ErrInvalid)
	}
	w := &Window{model: model, version: version, start: start, length: length, profile: profile}
	refs := profile.GetFeatures()
	if profile.GetPrediction() != nil {
		refs = append(refs[:len(refs):len(refs)], profile.GetPrediction())
	}
	w.features = len(profile.GetFeatures())
	w.cols = make([]column, len(refs))
	for i, ref := range refs {
		c, err := newColumn(ref, NewSeeded(cfg.k, featureSeed(cfg.seed, i)))
		if err != nil {
			return nil, err
		}
		w.cols[i] = c
	}
	return w, nil
}

func newColumn(ref *droverv1.FeatureProfile, sk *Quantiles) (column, error) {
	c := column{name: ref.GetName(), kind: ref.GetKind()}
	var err error
	switch ref.GetKind() {
	case droverv1.FeatureKind_FEATURE_KIND_NUMERIC:
		c.num, err = NumericAgainst(ref.GetNumeric(), sk)
	case droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL, droverv1.FeatureKind_FEATURE_KIND_BINARY:
		if ref.GetCategorical() == nil {
			err = fmt.Errorf("%w: no category counts", ErrInvalid)
		} else {
			c.cat = CategoricalAgainst(ref.GetCategorical())
		}
	default:
		err = fmt.Errorf("%w: kind %v", ErrInvalid, ref.GetKind())
	}
	if err != nil {
		return column{}, fmt.Errorf("reference feature %q: %w", ref.GetName(), err)
	}
	return c, nil
}

// Model returns the window's model name.
func (w *Window) Model() string { return w.model }

// Version returns the window's model version.
func (w *Window) Version() uint64 { return w.version }

// Start returns the window's start.
func (w *Window) Start() time.Time { return w.start }

// Length returns the window's length.
func (w *Window) Length() time.Duration { return w.length }

// Rows returns the number of rows observed.
func (w *Window) Rows() uint64 { return w.rows }

// Columns returns the names of the window's columns in the order Row and
// the Observe methods index them: the features, then the prediction when
// the reference has one.
func (w *Window) Columns() []string {
	names := make([]string, len(w.cols))
	for i, c := range w.cols {
		names[i] = c.name
	}
	return names
}

// Numeric reports whether column i takes numbers (Row.Number,
// ObserveNumber) rather than strings.
func (w *Window) Numeric(i int) bool {
	return i >= 0 && i < len(w.cols) && w.cols[i].num != nil
}

// Observe adds one row: every column's value, read through r.
func (w *Window) Observe(r Row) {
	w.rows++
	for i := range w.cols {
		c := &w.cols[i]
		if c.num != nil {
			c.num.Add(r.Number(i))
		} else {
			c.cat.Add(r.String(i))
		}
	}
}

// AddRows counts n rows whose values are given column by column with
// ObserveNumber, ObserveNumbers, ObserveString and ObserveStrings.
func (w *Window) AddRows(n uint64) { w.rows += n }

// AddSchemaViolations counts n rows that did not match the model's schema
// and were not observed.
func (w *Window) AddSchemaViolations(n uint64) { w.violations += n }

// ObserveNumber adds a value of numeric column i; NaN is null. An index
// out of range or of a categorical column is ignored.
func (w *Window) ObserveNumber(i int, x float64) {
	if i >= 0 && i < len(w.cols) && w.cols[i].num != nil {
		w.cols[i].num.Add(x)
	}
}

// ObserveNumbers adds values of numeric column i, as ObserveNumber.
func (w *Window) ObserveNumbers(i int, xs []float64) {
	if i < 0 || i >= len(w.cols) || w.cols[i].num == nil {
		return
	}
	n := w.cols[i].num
	for _, x := range xs {
		n.Add(x)
	}
}

// ObserveString adds a value of categorical or binary column i; "" is
// null. An index out of range or of a numeric column is ignored.
func (w *Window) ObserveString(i int, s string) {
	if i >= 0 && i < len(w.cols) && w.cols[i].cat != nil {
		w.cols[i].cat.Add(s)
	}
}

// ObserveStrings adds values of categorical column i, as ObserveString.
func (w *Window) ObserveStrings(i int, ss []string) {
	if i < 0 || i >= len(w.cols) || w.cols[i].cat == nil {
		return
	}
	c := w.cols[i].cat
	for _, s := range ss {
		c.Add(s)
	}
}

// Merge adds o's rows to w; o is unchanged. Both must be for the same
// model version and columns. The merged window spans both.
func (w *Window) Merge(o *Window) error {
	if o == nil {
		return nil
	}
	if w.model != o.model || w.version != o.version {
		return fmt.Errorf("%w: window of %s v%d cannot merge one of %s v%d", ErrMismatch, w.model, w.version, o.model, o.version)
	}
	if len(w.cols) != len(o.cols) || w.features != o.features {
		return fmt.Errorf("%w: windows have %d and %d columns", ErrMismatch, len(w.cols), len(o.cols))
	}
	for i := range w.cols {
		if w.cols[i].name != o.cols[i].name || w.cols[i].kind != o.cols[i].kind {
			return fmt.Errorf("%w: column %d is %q in one window, %q in the other", ErrMismatch, i, w.cols[i].name, o.cols[i].name)
		}
	}
	if o == w {
		o = w.clone()
	}
	for i := range w.cols {
		if c := w.cols[i]; c.num != nil {
			if err := c.num.Merge(o.cols[i].num); err != nil {
				return fmt.Errorf("column %q: %w", c.name, err)
			}
		} else {
			c.cat.Merge(o.cols[i].cat)
		}
	}
	w.rows += o.rows
	w.violations += o.violations
	switch {
	case w.start.IsZero() && w.length == 0:
		w.start, w.length = o.start, o.length
	case o.start.IsZero() && o.length == 0:
	default:
		start := w.start
		if o.start.Before(start) {
			start = o.start
		}
		end := w.start.Add(w.length)
		if oe := o.start.Add(o.length); oe.After(end) {
			end = oe
		}
		w.start, w.length = start, end.Sub(start)
	}
	return nil
}

func (w *Window) clone() *Window {
	c := *w
	c.cols = make([]column, len(w.cols))
	for i, col := range w.cols {
		c.cols[i] = col
		if col.num != nil {
			c.cols[i].num = col.num.Clone()
		} else {
			c.cols[i].cat = col.cat.Clone()
		}
	}
	return &c
}

// ToProto returns the window as sent to the hub.
func (w *Window) ToProto() *droverv1.DriftWindow {
	p := &droverv1.DriftWindow{
		Model:            w.model,
		Version:          w.version,
		Start:            timestamppb.New(w.start),
		Length:           durationpb.New(w.length),
		Rows:             w.rows,
		SchemaViolations: w.violations,
	}
	for i, c := range w.cols {
		var fp *droverv1.FeatureProfile
		if c.num != nil {
			fp = c.num.ToProto()
		} else {
			fp = c.cat.ToProto()
		}
		fp.Name, fp.Kind = c.name, c.kind
		if i < w.features {
			p.Features = append(p.Features, fp)
		} else {
			p.Prediction = fp
		}
	}
	return p
}

// WindowFromProto restores a window measured against profile, checking
// that its features are the profile's.
func WindowFromProto(p *droverv1.DriftWindow, profile *droverv1.ReferenceProfile) (*Window, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: no window", ErrInvalid)
	}
	if err := p.GetStart().CheckValid(); p.GetStart() != nil && err != nil {
		return nil, fmt.Errorf("%w: window start: %v", ErrInvalid, err)
	}
	if err := p.GetLength().CheckValid(); p.GetLength() != nil && err != nil {
		return nil, fmt.Errorf("%w: window length: %v", ErrInvalid, err)
	}
	var start time.Time
	if p.GetStart() != nil {
		start = p.GetStart().AsTime()
	}
	w, err := NewWindow(profile, p.GetModel(), p.GetVersion(), start, p.GetLength().AsDuration(), WithSeed(0))
	if err != nil {
		return nil, err
	}
	if len(p.GetFeatures()) != w.features {
		return nil, fmt.Errorf("%w: window has %d features, reference %d", ErrMismatch, len(p.GetFeatures()), w.features)
	}
	if (p.GetPrediction() != nil) != (len(w.cols) > w.features) {
		return nil, fmt.Errorf("%w: window and reference disagree on a prediction", ErrMismatch)
	}
	fps := p.GetFeatures()
	if p.GetPrediction() != nil {
		fps = append(fps[:len(fps):len(fps)], p.GetPrediction())
	}
	refs := profile.GetFeatures()
	if profile.GetPrediction() != nil {
		refs = append(refs[:len(refs):len(refs)], profile.GetPrediction())
	}
	for i, fp := range fps {
		c := &w.cols[i]
		if fp.GetName() != c.name || fp.GetKind() != c.kind {
			return nil, fmt.Errorf("%w: window column %d is %q (%v), reference %q (%v)",
				ErrMismatch, i, fp.GetName(), fp.GetKind(), c.name, c.kind)
		}
		if c.num != nil {
			c.num, err = NumericFromProto(fp, refs[i].GetNumeric())
		} else {
			c.cat, err = CategoricalFromProto(fp, refs[i].GetCategorical(), 0)
		}
		if err != nil {
			return nil, err
		}
	}
	w.rows, w.violations = p.GetRows(), p.GetSchemaViolations()
	return w, nil
}
