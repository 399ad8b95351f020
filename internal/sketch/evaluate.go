package sketch

import (
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/droverhq/drover/internal/drift"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// minNormStd is the smallest reference standard deviation the Wasserstein
// distance is divided by, as Evidently does, so a constant reference does
// not divide by zero.
const minNormStd = 0.001

// Evaluate compares a window of live traffic with its reference profile
// feature by feature, from the summaries alone, and decides with
// drift.Decide.
//
// Numeric features get a KS test on the two quantile sketches, widened by
// their rank error bounds (see EvaluateFeature), the normalised
// Wasserstein distance from the sketches, and PSI, Jensen–Shannon and
// Hellinger on the frozen bins. Categorical and binary features get PSI,
// Jensen–Shannon, Hellinger and a chi-square test on the category counts,
// and binary ones a two-proportion z-test. A reference feature the window
// lacks, or whose summary is invalid, is reported with no current rows,
// which drift.Decide judges as insufficient data; EvaluateFeature returns
// the error.
//
// Evaluate prepares the reference at every call; code that judges many
// windows against one reference keeps a Reference instead.
func Evaluate(ref *droverv1.ReferenceProfile, cur *droverv1.DriftWindow, opts drift.Options) drift.Report {
	return NewReference(ref).Evaluate(cur, opts)
}

// A Reference is a reference profile made ready to judge windows against:
// its numeric features' sketches are decoded and sorted once, which is
// most of the work of judging a window against a large reference. It is
// safe for concurrent use and must not be changed once made.
type Reference struct {
	profile *droverv1.ReferenceProfile
	// numeric holds, by position in the profile, each numeric feature's
	// decoded sketch, or the error decoding it.
	numeric []*Quantiles
	errs    []error
}

// NewReference prepares p for Evaluate. An invalid feature is not an
// error here: each window's report judges it as insufficient data.
func NewReference(p *droverv1.ReferenceProfile) *Reference {
	r := &Reference{
		profile: p,
		numeric: make([]*Quantiles, len(p.GetFeatures())),
		errs:    make([]error, len(p.GetFeatures())),
	}
	for i, f := range p.GetFeatures() {
		if f.GetKind() != droverv1.FeatureKind_FEATURE_KIND_NUMERIC {
			continue
		}
		q, err := FromProto(f.GetNumeric().GetSketch())
		if err != nil {
			r.errs[i] = fmt.Errorf("reference feature %q: %w", f.GetName(), err)
			continue
		}
		q.sorted() // cached now, so that queries only read
		r.numeric[i] = q
	}
	return r
}

// Profile returns the profile r was made from.
func (r *Reference) Profile() *droverv1.ReferenceProfile { return r.profile }

// Evaluate judges a window against the reference, as the package-level
// Evaluate does.
func (r *Reference) Evaluate(cur *droverv1.DriftWindow, opts drift.Options) drift.Report {
	byName := make(map[string]*droverv1.FeatureProfile, len(cur.GetFeatures()))
	for _, fp := range cur.GetFeatures() {
		byName[fp.GetName()] = fp
	}
	reports := make([]drift.FeatureReport, 0, len(r.profile.GetFeatures()))
	for i, rf := range r.profile.GetFeatures() {
		fr, err := evaluateFeature(rf, r.numeric[i], r.errs[i], byName[rf.GetName()])
		if err != nil {
			fr = drift.FeatureReport{
				Name:           rf.GetName(),
				Type:           featureType(rf.GetKind()),
				ReferenceRows:  toInt(rf.GetCount()),
				ReferenceNulls: toInt(rf.GetNulls()),
			}
		}
		reports = append(reports, fr)
	}
	return drift.Decide(reports, opts)
}

// EvaluateFeature computes one feature's statistics from its reference
// profile and its live profile (for example the model's prediction), with
// no verdict: drift.Decide makes that.
//
// The KS statistic is the largest difference between the two sketches'
// estimated CDFs, found at the union of their retained values. Each
// sketch's estimate is within its RankError of its true CDF everywhere
// (with probability at least 1 − DefaultDelta), so the exact statistic is
// at least D − Bound with Bound the sum of the two rank errors; the
// p-value is computed for max(0, D − Bound) and is conservative. With
// both sketches exact (no compaction yet) Bound is 0 and the test is the
// exact one.
func EvaluateFeature(ref, cur *droverv1.FeatureProfile) (drift.FeatureReport, error) {
	return evaluateFeature(ref, nil, nil, cur)
}

// evaluateFeature is EvaluateFeature with the reference's sketch decoded
// already (rs, or the error decoding it), or not yet (both nil).
func evaluateFeature(ref *droverv1.FeatureProfile, rs *Quantiles, rerr error, cur *droverv1.FeatureProfile) (drift.FeatureReport, error) {
	if ref == nil {
		return drift.FeatureReport{}, fmt.Errorf("%w: no reference feature", ErrInvalid)
	}
	fr := drift.FeatureReport{
		Name:           ref.GetName(),
		Type:           featureType(ref.GetKind()),
		ReferenceRows:  toInt(ref.GetCount()),
		ReferenceNulls: toInt(ref.GetNulls()),
	}
	if cur == nil {
		return fr, fmt.Errorf("%w: the window has no feature %q", ErrMismatch, ref.GetName())
	}
	if cur.GetKind() != ref.GetKind() {
		return fr, fmt.Errorf("%w: feature %q is %v in the reference, %v in the window", ErrMismatch, ref.GetName(), ref.GetKind(), cur.GetKind())
	}
	fr.CurrentRows = toInt(cur.GetCount())
	fr.CurrentNulls = toInt(cur.GetNulls())
	err := rerr
	if err == nil {
		switch ref.GetKind() {
		case droverv1.FeatureKind_FEATURE_KIND_NUMERIC:
			err = evaluateNumeric(&fr, ref, rs, cur)
		case droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL, droverv1.FeatureKind_FEATURE_KIND_BINARY:
			err = evaluateCategorical(&fr, ref, cur)
		default:
			err = fmt.Errorf("%w: feature %q has kind %v", ErrInvalid, ref.GetName(), ref.GetKind())
		}
	}
	if err != nil {
		fr.CurrentRows, fr.CurrentNulls = 0, 0
		return fr, err
	}
	return fr, nil
}

func featureType(k droverv1.FeatureKind) string {
	switch k {
	case droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL:
		return drift.TypeCategorical
	case droverv1.FeatureKind_FEATURE_KIND_BINARY:
		return drift.TypeBinary
	}
	return drift.TypeNumeric
}

func toInt(n uint64) int {
	return int(min(n, math.MaxInt))
}

// evaluateNumeric compares two numeric features; rs is the reference's
// sketch, decoded here when nil.
func evaluateNumeric(fr *drift.FeatureReport, ref *droverv1.FeatureProfile, rs *Quantiles, cur *droverv1.FeatureProfile) error {
	if rs == nil {
		var err error
		if rs, err = FromProto(ref.GetNumeric().GetSketch()); err != nil {
			return fmt.Errorf("reference feature %q: %w", ref.GetName(), err)
		}
	}
	cs, err := FromProto(cur.GetNumeric().GetSketch())
	if err != nil {
		return fmt.Errorf("window feature %q: %w", cur.GetName(), err)
	}
	if rs.Count() != ref.GetCount() || cs.Count() != cur.GetCount() {
		return fmt.Errorf("%w: feature %q: sketches count %d and %d values, profiles %d and %d",
			ErrInvalid, ref.GetName(), rs.Count(), cs.Count(), ref.GetCount(), cur.GetCount())
	}
	if rs.Count() == 0 || cs.Count() == 0 {
		return nil
	}
	d, area := compareCDFs(rs, cs)
	fr.Bound = rs.RankError() + cs.RankError()
	p, method := drift.KSPValue(max(0, d-fr.Bound), toInt(rs.Count()), toInt(cs.Count()), drift.Auto)
	fr.KS = &drift.KSResult{Statistic: d, PValue: p, Method: method}
	std := math.Sqrt(ref.GetNumeric().GetM2() / float64(ref.GetCount()))
	w := area / max(std, minNormStd)
	fr.WassersteinNormed = &w

	rb, cb := ref.GetNumeric().GetBins(), cur.GetNumeric().GetBins()
	if len(rb) != len(cb) || len(rb) != len(ref.GetNumeric().GetEdges())+1 {
		return fmt.Errorf("%w: feature %q has %d reference bins, %d current, %d edges",
			ErrMismatch, ref.GetName(), len(rb), len(cb), len(ref.GetNumeric().GetEdges()))
	}
	setDistances(fr, toFloats(rb), toFloats(cb))
	return nil
}

// compareCDFs returns the largest absolute difference between the two
// sketches' estimated CDFs and the area between them (the Wasserstein-1
// distance between the estimated distributions). Both CDFs are step
// functions that change only at retained values, so a sweep over the
// union of those values finds both exactly.
func compareCDFs(a, b *Quantiles) (sup, area float64) {
	av, ac := a.sorted()
	bv, bc := b.sorted()
	na, nb := float64(a.Count()), float64(b.Count())
	var fa, fb, prev float64
	i, j := 0, 0
	for i < len(av) || j < len(bv) {
		var x float64
		switch {
		case j >= len(bv) || (i < len(av) && av[i] <= bv[j]):
			x = av[i]
		default:
			x = bv[j]
		}
		if i+j > 0 {
			area += math.Abs(fa-fb) * (x - prev)
		}
		if i < len(av) && av[i] == x {
			fa = float64(ac[i]) / na
			i++
		}
		if j < len(bv) && bv[j] == x {
			fb = float64(bc[j]) / nb
			j++
		}
		sup = max(sup, math.Abs(fa-fb))
		prev = x
	}
	return sup, area
}

func toFloats(c []uint64) []float64 {
	f := make([]float64, len(c))
	for i, n := range c {
		f[i] = float64(n)
	}
	return f
}

func setDistances(fr *drift.FeatureReport, ref, cur []float64) {
	psi := drift.PSI(ref, cur)
	js := drift.JensenShannon(ref, cur)
	h := drift.Hellinger(ref, cur)
	fr.PSI, fr.JensenShannon, fr.Hellinger = &psi, &js, &h
}

func evaluateCategorical(fr *drift.FeatureReport, ref, cur *droverv1.FeatureProfile) error {
	rc, cc := ref.GetCategorical(), cur.GetCategorical()
	if rc == nil || cc == nil {
		return fmt.Errorf("%w: feature %q lacks category counts", ErrInvalid, ref.GetName())
	}
	if ref.GetCount() == 0 || cur.GetCount() == 0 {
		return nil
	}
	names := slices.Sorted(maps.Keys(rc.GetCounts()))
	refVec := make([]float64, 0, len(names)+2)
	curVec := make([]float64, 0, len(names)+2)
	var matched, refSum, curSum uint64
	for _, name := range names {
		refVec = append(refVec, float64(rc.GetCounts()[name]))
		refSum += rc.GetCounts()[name]
		n := cc.GetCounts()[name]
		curVec = append(curVec, float64(n))
		matched += n
	}
	// Categories the window counts that the reference does not track are
	// new to it: they join the unseen bucket.
	var stray uint64
	for name, n := range cc.GetCounts() {
		if _, ok := rc.GetCounts()[name]; !ok {
			stray += n
		}
	}
	refSum += rc.GetOther() + rc.GetUnseen()
	curSum = matched + stray + cc.GetOther() + cc.GetUnseen()
	if refSum != ref.GetCount() || curSum != cur.GetCount() {
		return fmt.Errorf("%w: feature %q: buckets hold %d and %d values, profiles count %d and %d",
			ErrInvalid, ref.GetName(), refSum, curSum, ref.GetCount(), cur.GetCount())
	}
	refVec = append(refVec, float64(rc.GetOther()), float64(rc.GetUnseen()))
	curVec = append(curVec, float64(cc.GetOther()), float64(cc.GetUnseen()+stray))
	// A bucket empty on both sides carries no information and would leave
	// the chi-square test an expected count of zero.
	r, c := refVec[:0], curVec[:0]
	for i := range refVec {
		if refVec[i] > 0 || curVec[i] > 0 {
			r = append(r, refVec[i])
			c = append(c, curVec[i])
		}
	}
	setDistances(fr, r, c)
	chi := drift.Chi2Contingency(r, c)
	fr.Chi2 = &chi
	if ref.GetKind() == droverv1.FeatureKind_FEATURE_KIND_BINARY && len(names) > 0 {
		// Two-sided, so which category counts as positive does not matter.
		z := drift.TwoProportionZ(refVec[0], float64(ref.GetCount()), curVec[0], float64(cur.GetCount()))
		fr.Z = &z
	}
	return nil
}
