package sketch

import (
	"errors"
	"fmt"
	"math"
	"slices"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// ErrMismatch is returned (wrapped) when two summaries cannot be merged
// or a summary does not fit its reference: different bin edges, features
// or models.
var ErrMismatch = errors.New("summaries do not match")

// ErrInvalid is returned (wrapped) when a serialised summary or a
// reference is inconsistent.
var ErrInvalid = errors.New("invalid summary")

// Numeric summarises a numeric feature's values: counts of values and
// nulls, minimum, maximum, mean and sum of squared deviations (Welford's
// update, Chan et al.'s parallel merge), counts per bin on frozen edges, a
// quantile sketch, and, when measured against a reference, the count of
// values outside the reference's [min, max].
//
// NaN and ±Inf are counted as nulls: they have no place in a mean or a
// distance. A Numeric is not safe for concurrent use.
type Numeric struct {
	count, nulls uint64
	min, max     float64
	mean, m2     float64
	edges        []float64
	bins         []uint64
	// live marks a summary measured against a reference: it counts
	// out-of-range values and does not serialise the reference's edges.
	live           bool
	refMin, refMax float64
	outOfRange     uint64
	sketch         *Quantiles
}

// NewNumeric returns an empty summary for a reference: values are counted
// into the len(edges)+1 bins that edges delimit (see NumericSummary.edges)
// and sketched by sketch (nil: New(ReferenceK)). Edges must be finite and
// ascending; duplicates are dropped.
func NewNumeric(edges []float64, sketch *Quantiles) (*Numeric, error) {
	e, err := checkEdges(edges)
	if err != nil {
		return nil, err
	}
	if sketch == nil {
		sketch = New(ReferenceK)
	}
	return &Numeric{edges: e, bins: make([]uint64, len(e)+1), sketch: sketch}, nil
}

// NumericAgainst returns an empty live summary measured against a
// reference's summary: its bins are the reference's frozen edges and it
// counts values outside the reference's [min, max]. sketch nil means
// New(DefaultK).
func NumericAgainst(ref *droverv1.NumericSummary, sketch *Quantiles) (*Numeric, error) {
	if ref == nil {
		return nil, fmt.Errorf("%w: no reference numeric summary", ErrInvalid)
	}
	e, err := checkEdges(ref.GetEdges())
	if err != nil {
		return nil, err
	}
	if len(e) != len(ref.GetEdges()) {
		return nil, fmt.Errorf("%w: reference edges repeat", ErrInvalid)
	}
	if sketch == nil {
		sketch = New(DefaultK)
	}
	return &Numeric{
		edges: e, bins: make([]uint64, len(e)+1), sketch: sketch,
		live: true, refMin: ref.GetMin(), refMax: ref.GetMax(),
	}, nil
}

func checkEdges(edges []float64) ([]float64, error) {
	out := make([]float64, 0, len(edges))
	for i, e := range edges {
		if math.IsNaN(e) || math.IsInf(e, 0) {
			return nil, fmt.Errorf("%w: bin edge %d is %v", ErrInvalid, i, e)
		}
		if i > 0 && e < edges[i-1] {
			return nil, fmt.Errorf("%w: bin edges not ascending at %d", ErrInvalid, i)
		}
		if i == 0 || e != edges[i-1] {
			out = append(out, e)
		}
	}
	return out, nil
}

// Add adds a value; NaN and ±Inf count as nulls.
func (n *Numeric) Add(x float64) {
	if x-x != 0 { // NaN or ±Inf
		n.nulls++
		return
	}
	n.count++
	if n.count == 1 {
		n.min, n.max = x, x
	} else if x < n.min {
		n.min = x
	} else if x > n.max {
		n.max = x
	}
	d := x - n.mean
	n.mean += d / float64(n.count)
	n.m2 += d * (x - n.mean)
	n.bins[binOf(n.edges, x)]++
	if n.live && (x < n.refMin || x > n.refMax) {
		n.outOfRange++
	}
	n.sketch.Add(x)
}

// binOf returns x's bin: the number of edges at or below it. A few edges
// are counted without branches, which random values would mispredict.
func binOf(edges []float64, x float64) int {
	if len(edges) <= 32 {
		b := 0
		for _, e := range edges {
			if e <= x {
				b++
			}
		}
		return b
	}
	return upperBound(edges, x)
}

// AddNull counts a null value.
func (n *Numeric) AddNull() { n.nulls++ }

// Merge adds o's values to n; o is unchanged. Both must have the same
// bin edges and, for live summaries, the same reference range.
func (n *Numeric) Merge(o *Numeric) error {
	if o == nil {
		return nil
	}
	if !slices.Equal(n.edges, o.edges) {
		return fmt.Errorf("%w: bin edges differ", ErrMismatch)
	}
	if n.live != o.live || (n.live && (n.refMin != o.refMin || n.refMax != o.refMax)) {
		return fmt.Errorf("%w: measured against different references", ErrMismatch)
	}
	if o == n {
		o = n.Clone()
	}
	n.nulls += o.nulls
	n.outOfRange += o.outOfRange
	for i, c := range o.bins {
		n.bins[i] += c
	}
	n.sketch.Merge(o.sketch)
	if o.count == 0 {
		return nil
	}
	if n.count == 0 {
		n.count, n.min, n.max, n.mean, n.m2 = o.count, o.min, o.max, o.mean, o.m2
		return nil
	}
	na, nb := float64(n.count), float64(o.count)
	total := na + nb
	d := o.mean - n.mean
	n.mean += d * nb / total
	n.m2 += o.m2 + d*d*na*nb/total
	n.count += o.count
	n.min = min(n.min, o.min)
	n.max = max(n.max, o.max)
	return nil
}

// Clone returns an independent copy of n.
func (n *Numeric) Clone() *Numeric {
	c := *n
	c.edges = slices.Clone(n.edges)
	c.bins = slices.Clone(n.bins)
	c.sketch = n.sketch.Clone()
	return &c
}

// Count returns the number of non-null values added.
func (n *Numeric) Count() uint64 { return n.count }

// Nulls returns the number of null values added.
func (n *Numeric) Nulls() uint64 { return n.nulls }

// Mean returns the mean of the values, or NaN when there are none.
func (n *Numeric) Mean() float64 {
	if n.count == 0 {
		return math.NaN()
	}
	return n.mean
}

// Variance returns the population variance of the values, or NaN when
// there are none.
func (n *Numeric) Variance() float64 {
	if n.count == 0 {
		return math.NaN()
	}
	return n.m2 / float64(n.count)
}

// Bins returns the counts per bin, underflow first.
func (n *Numeric) Bins() []uint64 { return slices.Clone(n.bins) }

// OutOfRange returns the number of values outside the reference's
// [min, max]; always 0 for a reference's own summary.
func (n *Numeric) OutOfRange() uint64 { return n.outOfRange }

// Sketch returns the summary's quantile sketch. It is shared, not copied.
func (n *Numeric) Sketch() *Quantiles { return n.sketch }

// ToProto returns the summary as a FeatureProfile of kind numeric, with
// no name. A live summary leaves edges out: they are its reference's.
func (n *Numeric) ToProto() *droverv1.FeatureProfile {
	s := &droverv1.NumericSummary{
		Min: n.min, Max: n.max, Mean: n.mean, M2: n.m2,
		Bins:       slices.Clone(n.bins),
		Sketch:     n.sketch.ToProto(),
		OutOfRange: n.outOfRange,
	}
	if !n.live {
		s.Edges = slices.Clone(n.edges)
	}
	return &droverv1.FeatureProfile{
		Kind:    droverv1.FeatureKind_FEATURE_KIND_NUMERIC,
		Count:   n.count,
		Nulls:   n.nulls,
		Numeric: s,
	}
}

// NumericFromProto restores a summary. With ref nil, p is a reference's
// summary and carries its own edges; otherwise p is a live summary
// measured against ref, whose edges and range it takes.
func NumericFromProto(p *droverv1.FeatureProfile, ref *droverv1.NumericSummary) (*Numeric, error) {
	s := p.GetNumeric()
	if s == nil {
		return nil, fmt.Errorf("%w: feature %q has no numeric summary", ErrInvalid, p.GetName())
	}
	sk, err := FromProto(s.GetSketch())
	if err != nil {
		return nil, fmt.Errorf("feature %q: %w", p.GetName(), err)
	}
	var n *Numeric
	if ref == nil {
		n, err = NewNumeric(s.GetEdges(), sk)
		if err == nil && len(n.edges) != len(s.GetEdges()) {
			err = fmt.Errorf("%w: edges repeat", ErrInvalid)
		}
	} else {
		if len(s.GetEdges()) > 0 && !slices.Equal(s.GetEdges(), ref.GetEdges()) {
			return nil, fmt.Errorf("%w: feature %q has edges other than its reference's", ErrMismatch, p.GetName())
		}
		n, err = NumericAgainst(ref, sk)
	}
	if err != nil {
		return nil, fmt.Errorf("feature %q: %w", p.GetName(), err)
	}
	if len(s.GetBins()) != len(n.bins) {
		return nil, fmt.Errorf("%w: feature %q has %d bins, want %d", ErrInvalid, p.GetName(), len(s.GetBins()), len(n.bins))
	}
	var binned uint64
	for _, c := range s.GetBins() {
		binned += c
	}
	if binned != p.GetCount() || sk.Count() != p.GetCount() {
		return nil, fmt.Errorf("%w: feature %q counts %d values, its bins %d and its sketch %d",
			ErrInvalid, p.GetName(), p.GetCount(), binned, sk.Count())
	}
	if p.GetCount() > 0 && !(s.GetMin() <= s.GetMax()) {
		return nil, fmt.Errorf("%w: feature %q has min %v above max %v", ErrInvalid, p.GetName(), s.GetMin(), s.GetMax())
	}
	if math.IsNaN(s.GetMean()) || math.IsNaN(s.GetM2()) || s.GetM2() < 0 {
		return nil, fmt.Errorf("%w: feature %q has mean %v, m2 %v", ErrInvalid, p.GetName(), s.GetMean(), s.GetM2())
	}
	copy(n.bins, s.GetBins())
	n.count, n.nulls = p.GetCount(), p.GetNulls()
	n.min, n.max, n.mean, n.m2 = s.GetMin(), s.GetMax(), s.GetMean(), s.GetM2()
	n.outOfRange = s.GetOutOfRange()
	return n, nil
}
