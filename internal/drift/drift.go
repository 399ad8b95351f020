// Package drift measures distribution drift between a reference sample and a
// current sample of a model's features, and turns the statistics into
// per-feature and data-set verdicts.
//
// The statistics are computed as scipy 1.10 computes them —
// scipy.stats.ks_2samp, wasserstein_distance, chi2_contingency and
// scipy.spatial.distance.jensenshannon — and golden tests (testdata/golden.py
// writes the expected values) hold them to a relative error of 1e-9. PSI,
// Hellinger and the two-proportion z-test follow their textbook formulas.
//
// The verdicts follow Evidently's documented defaults: a feature whose
// reference has at most Options.SmallReference (1000) values is judged by a
// p-value test (KS for numeric features, chi-square for categorical ones,
// the two-proportion z-test for binary ones), drifting when p < 0.05; a
// larger one by a distance (the Wasserstein distance divided by the
// reference's standard deviation for numeric features, Jensen–Shannon for
// the others), drifting when the distance is ≥ 0.1. The data set drifts when
// at least half of its features do.
//
// Compare computes everything exactly from raw values. Decide applies the
// rules to statistics computed elsewhere, for example from sketches.
package drift

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
)

// Mode selects how the KS p-value is computed, as scipy.stats.ks_2samp's
// method argument.
type Mode int

const (
	// Auto computes the exact p-value when both samples have at most
	// 10000 values and the asymptotic one otherwise, as scipy 1.10 does.
	Auto Mode = iota
	// Exact computes the exact two-sample distribution, falling back to
	// Asymptotic when it cannot be computed in floating point.
	Exact
	// Asymptotic uses the one-sample Kolmogorov distribution for
	// round(n·m/(n+m)) values, as scipy 1.10's method="asymp".
	Asymptotic
)

// String returns the mode's name as scipy spells it.
func (m Mode) String() string {
	switch m {
	case Auto:
		return "auto"
	case Exact:
		return "exact"
	case Asymptotic:
		return "asymp"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// KSResult is a two-sample Kolmogorov–Smirnov test's outcome.
type KSResult struct {
	// Statistic is the largest distance between the two empirical CDFs.
	Statistic float64 `json:"statistic"`
	// PValue is the two-sided p-value.
	PValue float64 `json:"p_value"`
	// Method is "exact" or "asymp": how PValue was computed.
	Method string `json:"method"`
}

// Chi2Result is a chi-square test's outcome.
type Chi2Result struct {
	// Statistic is Pearson's chi-square statistic.
	Statistic float64 `json:"statistic"`
	// PValue is its p-value.
	PValue float64 `json:"p_value"`
	// DOF is the degrees of freedom.
	DOF int `json:"dof"`
}

// ZResult is a z-test's outcome.
type ZResult struct {
	// Statistic is the z score.
	Statistic float64 `json:"statistic"`
	// PValue is the two-sided p-value.
	PValue float64 `json:"p_value"`
}

// Method names, as Options.Methods and FeatureReport.Method spell them.
const (
	MethodKS            = "ks"
	MethodWasserstein   = "wasserstein"
	MethodPSI           = "psi"
	MethodJensenShannon = "jensen_shannon"
	MethodHellinger     = "hellinger"
	MethodChi2          = "chi2"
	MethodZ             = "z"
)

// Feature types, as FeatureReport.Type spells them.
const (
	TypeNumeric     = "numeric"
	TypeCategorical = "categorical"
	TypeBinary      = "binary"
)

// Verdicts, as FeatureReport.Verdict spells them.
const (
	VerdictDrift            = "drift"
	VerdictNoDrift          = "no_drift"
	VerdictInsufficientData = "insufficient_data"
)

// Corrections, as Options.Correction spells them.
const (
	CorrectionNone       = ""
	CorrectionBonferroni = "bonferroni"
	CorrectionFDR        = "fdr"
)

// Bins is the number of equal-frequency bins (on the reference's quantiles)
// Compare uses for PSI, Jensen–Shannon and Hellinger on numeric features,
// besides the underflow and overflow bins.
const Bins = 10

// minStd is the smallest reference standard deviation Wasserstein is
// normalised by (Evidently's floor), so a constant reference gives a finite
// normalised distance.
const minStd = 0.001

// pValueMethod reports whether a method's score is a p-value (drift when
// below the threshold) rather than a distance (drift when at or above it).
func pValueMethod(m string) bool {
	return m == MethodKS || m == MethodChi2 || m == MethodZ
}

// methodTypes lists the feature types each method applies to.
var methodTypes = map[string][]string{
	MethodKS:            {TypeNumeric},
	MethodWasserstein:   {TypeNumeric},
	MethodPSI:           {TypeNumeric, TypeCategorical, TypeBinary},
	MethodJensenShannon: {TypeNumeric, TypeCategorical, TypeBinary},
	MethodHellinger:     {TypeNumeric, TypeCategorical, TypeBinary},
	MethodChi2:          {TypeCategorical, TypeBinary},
	MethodZ:             {TypeBinary},
}

// Column is one feature's raw values. Numbers: NaN is null. Categorical:
// Strings, "" is null.
type Column struct {
	// Name names the feature; names are unique within a data set.
	Name string
	// Categorical says the values are in Strings rather than Numbers.
	Categorical bool
	// Numbers holds a numeric feature's values; NaN is null. ±Inf is an
	// error.
	Numbers []float64
	// Strings holds a categorical feature's values; "" is null.
	Strings []string
}

// Options tunes the verdicts. Zero values take the defaults.
type Options struct {
	// SmallReference is the reference size (non-null values) at or below
	// which p-value tests decide (default 1000, Evidently's rule).
	SmallReference int
	// PValue is the threshold of the p-value tests: drift when p < PValue
	// (default 0.05).
	PValue float64
	// Distance is the threshold of the distances: drift when the distance
	// is ≥ Distance (default 0.1).
	Distance float64
	// DatasetShare is the share of decided features that must drift for the
	// data set to drift (default 0.5; drift when the share is ≥ it).
	DatasetShare float64
	// MinRows is the number of non-null values, in the current or the
	// reference sample, below which a feature's verdict is
	// "insufficient_data" (default 30; negative for no minimum).
	MinRows int
	// Correction adjusts the p-values of the features decided by p-value
	// tests for multiple testing: "" (none), "bonferroni" or "fdr"
	// (Benjamini–Hochberg).
	Correction string
	// Methods forces a feature's method, by feature name: "ks",
	// "wasserstein", "psi", "jensen_shannon", "hellinger", "chi2" or "z".
	Methods map[string]string
	// Thresholds overrides a feature's threshold, by feature name.
	Thresholds map[string]float64
}

// withDefaults fills zero values.
func (o Options) withDefaults() Options {
	if o.SmallReference <= 0 {
		o.SmallReference = 1000
	}
	if !(o.PValue > 0) {
		o.PValue = 0.05
	}
	if !(o.Distance > 0) {
		o.Distance = 0.1
	}
	if !(o.DatasetShare > 0) {
		o.DatasetShare = 0.5
	}
	if o.MinRows == 0 {
		o.MinRows = 30
	}
	return o
}

// Validate checks the options on their own: a known correction, known
// method names, and finite, non-negative thresholds. Compare also checks
// that the names in Methods and Thresholds are features and that each forced
// method applies to its feature's type.
func (o Options) Validate() error {
	switch o.Correction {
	case CorrectionNone, CorrectionBonferroni, CorrectionFDR:
	default:
		return fmt.Errorf("drift: unknown correction %q (want \"\", %q or %q)", o.Correction, CorrectionBonferroni, CorrectionFDR)
	}
	for _, v := range []float64{o.PValue, o.Distance, o.DatasetShare} {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return fmt.Errorf("drift: thresholds must be finite and non-negative, got %v", v)
		}
	}
	for name, m := range o.Methods {
		if _, ok := methodTypes[m]; !ok {
			return fmt.Errorf("drift: feature %q: unknown method %q", name, m)
		}
	}
	for name, t := range o.Thresholds {
		if math.IsNaN(t) || math.IsInf(t, 0) || t < 0 {
			return fmt.Errorf("drift: feature %q: threshold must be finite and non-negative, got %v", name, t)
		}
	}
	return nil
}

// FeatureReport is one feature's statistics and verdict. The statistics are
// pointers: nil means not computed.
type FeatureReport struct {
	// Name is the feature's name.
	Name string `json:"name"`
	// Type is "numeric", "categorical" or "binary" (a categorical feature
	// with exactly two categories across both samples).
	Type string `json:"type"`
	// ReferenceRows and CurrentRows count the non-null values compared.
	ReferenceRows int `json:"reference_rows"`
	CurrentRows   int `json:"current_rows"`
	// ReferenceNulls and CurrentNulls count the nulls skipped.
	ReferenceNulls int `json:"reference_nulls"`
	CurrentNulls   int `json:"current_nulls"`

	// KS is the two-sample Kolmogorov–Smirnov test (numeric).
	KS *KSResult `json:"ks,omitempty"`
	// WassersteinNormed is the Wasserstein distance divided by the
	// reference's population standard deviation, floored at 0.001 (numeric).
	WassersteinNormed *float64 `json:"wasserstein_normed,omitempty"`
	// PSI, JensenShannon and Hellinger compare bin counts (numeric: the
	// reference's quantile bins, see QuantileEdges) or category counts.
	PSI           *float64 `json:"psi,omitempty"`
	JensenShannon *float64 `json:"jensen_shannon,omitempty"`
	Hellinger     *float64 `json:"hellinger,omitempty"`
	// Chi2 is the chi-square test of homogeneity (categorical and binary).
	Chi2 *Chi2Result `json:"chi2,omitempty"`
	// Z is the two-proportion z-test (binary).
	Z *ZResult `json:"z,omitempty"`
	// Bound is the error a sketch-based statistic may carry (0 when
	// computed exactly from raw values): the rank error for KS, already
	// used to make the verdict conservative. Whoever fills KS from a sketch
	// puts the sketch's statistic in KS and its error here; Decide scores
	// the p-value of max(0, KS.Statistic − Bound), so that a drift verdict
	// holds for any statistic within the bound.
	Bound float64 `json:"bound,omitempty"`

	// Method is the method that decided.
	Method string `json:"method"`
	// Score is the method's p-value (after any correction) or distance.
	Score float64 `json:"score"`
	// Threshold is the threshold Score was held to.
	Threshold float64 `json:"threshold"`
	// Drifted is Verdict == "drift".
	Drifted bool `json:"drifted"`
	// Verdict is "drift", "no_drift" or "insufficient_data".
	Verdict string `json:"verdict"`
}

// DatasetReport is the data set's verdict.
type DatasetReport struct {
	// DriftShare is DriftedFeatures / Features (0 with no features).
	DriftShare float64 `json:"drift_share"`
	// Drifted is whether DriftShare ≥ Options.DatasetShare, with at least
	// one feature decided.
	Drifted bool `json:"drifted"`
	// DriftedFeatures counts the features whose verdict is "drift".
	DriftedFeatures int `json:"drifted_features"`
	// Features counts the features decided: those whose verdict is not
	// "insufficient_data".
	Features int `json:"features"`
}

// Report is a comparison's outcome.
type Report struct {
	// Dataset is the data set's verdict.
	Dataset DatasetReport `json:"dataset"`
	// Features holds each feature's statistics and verdict, in input order.
	Features []FeatureReport `json:"features"`
}

// Compare compares a reference and a current data set column by column, from
// raw values: it computes every statistic that applies to each feature (KS,
// normalised Wasserstein, PSI, Jensen–Shannon and Hellinger for numeric
// features; chi-square, PSI, Jensen–Shannon, Hellinger and, for binary ones,
// the z-test for categorical features), then calls Decide.
//
// Columns are matched by position and must agree in name and kind. Compare
// returns an error, and never panics, when: there are no columns; the two
// sides have different numbers of columns, or a column's name or kind
// differs; names repeat or are empty; a numeric column holds ±Inf (an
// error naming the column, since no distance is defined); a categorical
// column holds numbers or a numeric one strings; a column has no non-null
// value on either side (all null or empty); or the options are invalid.
//
// Columns are processed in parallel, one goroutine per CPU.
func Compare(ref, cur []Column, opts Options) (*Report, error) {
	if len(ref) == 0 {
		return nil, errors.New("drift: no columns to compare")
	}
	if len(ref) != len(cur) {
		return nil, fmt.Errorf("drift: reference has %d columns, current has %d", len(ref), len(cur))
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(ref))
	for i := range ref {
		r, c := &ref[i], &cur[i]
		switch {
		case r.Name == "":
			return nil, fmt.Errorf("drift: column %d has no name", i)
		case r.Name != c.Name:
			return nil, fmt.Errorf("drift: column %d is %q in the reference but %q in the current data", i, r.Name, c.Name)
		case r.Categorical != c.Categorical:
			return nil, fmt.Errorf("drift: column %q is categorical on one side only", r.Name)
		case seen[r.Name]:
			return nil, fmt.Errorf("drift: column %q appears twice", r.Name)
		}
		seen[r.Name] = true
		for _, col := range []*Column{r, c} {
			if col.Categorical && len(col.Numbers) > 0 {
				return nil, fmt.Errorf("drift: categorical column %q holds numbers", col.Name)
			}
			if !col.Categorical && len(col.Strings) > 0 {
				return nil, fmt.Errorf("drift: numeric column %q holds strings", col.Name)
			}
		}
	}
	for name := range opts.Thresholds {
		if !seen[name] {
			return nil, fmt.Errorf("drift: threshold for unknown feature %q", name)
		}
	}
	for name := range opts.Methods {
		if !seen[name] {
			return nil, fmt.Errorf("drift: method for unknown feature %q", name)
		}
	}

	features := make([]FeatureReport, len(ref))
	errs := make([]error, len(ref))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(runtime.GOMAXPROCS(0), len(ref)) {
		wg.Go(func() {
			for i := range next {
				if ref[i].Categorical {
					features[i], errs[i] = compareCategorical(ref[i], cur[i])
				} else {
					features[i], errs[i] = compareNumeric(ref[i], cur[i])
				}
			}
		})
	}
	for i := range ref {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, f := range features {
		if m, ok := opts.Methods[f.Name]; ok && !slices.Contains(methodTypes[m], f.Type) {
			return nil, fmt.Errorf("drift: feature %q: method %q does not apply to a %s feature", f.Name, m, f.Type)
		}
	}
	rep := Decide(features, opts)
	return &rep, nil
}

// compareNumeric computes a numeric feature's statistics.
func compareNumeric(ref, cur Column) (FeatureReport, error) {
	f := FeatureReport{Name: ref.Name, Type: TypeNumeric}
	a, nullA, err := finiteSorted(ref.Name, "reference", ref.Numbers)
	if err != nil {
		return f, err
	}
	b, nullB, err := finiteSorted(ref.Name, "current", cur.Numbers)
	if err != nil {
		return f, err
	}
	f.ReferenceRows, f.CurrentRows = len(a), len(b)
	f.ReferenceNulls, f.CurrentNulls = nullA, nullB

	d, w := ksWasserstein(a, b)
	ks := ksTest(d, len(a), len(b), Auto)
	f.KS = &ks
	wn := w / math.Max(populationStd(a), minStd)
	f.WassersteinNormed = &wn

	edges := edgesSorted(a, Bins)
	rc, cc := binCountsSorted(edges, a), binCountsSorted(edges, b)
	setDistances(&f, rc, cc)
	return f, nil
}

// finiteSorted returns a numeric column's non-null values sorted, and the
// number of nulls; ±Inf and all-null columns are errors.
func finiteSorted(name, side string, x []float64) ([]float64, int, error) {
	out, nulls, infs := sortNonNull(x)
	if infs > 0 {
		return nil, 0, fmt.Errorf("drift: column %q: %s data holds %d infinite values (only finite numbers, and NaN for null, are allowed)", name, side, infs)
	}
	if len(out) == 0 {
		return nil, 0, fmt.Errorf("drift: column %q: %s data has no non-null values", name, side)
	}
	return out, nulls, nil
}

// populationStd is the population standard deviation (numpy's np.std) of
// non-empty values, by two passes.
func populationStd(x []float64) float64 {
	mean := 0.0
	for _, v := range x {
		mean += v
	}
	mean /= float64(len(x))
	ss := 0.0
	for _, v := range x {
		ss += (v - mean) * (v - mean)
	}
	return math.Sqrt(ss / float64(len(x)))
}

// setDistances fills PSI, Jensen–Shannon and Hellinger from counts.
func setDistances(f *FeatureReport, rc, cc []float64) {
	psi, js, h := PSI(rc, cc), JensenShannon(rc, cc), Hellinger(rc, cc)
	f.PSI, f.JensenShannon, f.Hellinger = &psi, &js, &h
}

// compareCategorical computes a categorical feature's statistics over the
// categories of both samples, sorted by name.
func compareCategorical(ref, cur Column) (FeatureReport, error) {
	f := FeatureReport{Name: ref.Name, Type: TypeCategorical}
	index := map[string]int{}
	var names []string
	for _, col := range []Column{ref, cur} {
		for _, s := range col.Strings {
			if _, ok := index[s]; !ok && s != "" {
				index[s] = 0
				names = append(names, s)
			}
		}
	}
	slices.Sort(names)
	for i, s := range names {
		index[s] = i
	}
	count := func(side string, x []string) ([]float64, int, int, error) {
		c := make([]float64, len(names))
		nulls := 0
		for _, s := range x {
			if s == "" {
				nulls++
				continue
			}
			c[index[s]]++
		}
		if nulls == len(x) {
			return nil, 0, 0, fmt.Errorf("drift: column %q: %s data has no non-null values", ref.Name, side)
		}
		return c, len(x) - nulls, nulls, nil
	}
	rc, nr, nullR, err := count("reference", ref.Strings)
	if err != nil {
		return f, err
	}
	cc, nc, nullC, err := count("current", cur.Strings)
	if err != nil {
		return f, err
	}
	f.ReferenceRows, f.CurrentRows = nr, nc
	f.ReferenceNulls, f.CurrentNulls = nullR, nullC

	chi := Chi2Contingency(rc, cc)
	f.Chi2 = &chi
	if len(names) == 2 {
		f.Type = TypeBinary
		z := TwoProportionZ(rc[0], float64(nr), cc[0], float64(nc))
		f.Z = &z
	}
	setDistances(&f, rc, cc)
	return f, nil
}

// DefaultMethod is the method Decide uses for a feature of the given type
// whose reference has refRows non-null values, given SmallReference (0 for
// the default): Evidently's choice.
func DefaultMethod(typ string, refRows, smallReference int) string {
	if smallReference <= 0 {
		smallReference = 1000
	}
	small := refRows <= smallReference
	switch {
	case typ == TypeNumeric && small:
		return MethodKS
	case typ == TypeNumeric:
		return MethodWasserstein
	case typ == TypeBinary && small:
		return MethodZ
	case small:
		return MethodChi2
	}
	return MethodJensenShannon
}

// Decide gives each feature its verdict from the statistics already in it,
// and the data set its verdict; the input is not modified. It is used by
// Compare and by sketch-based evaluation, which fills the statistics itself.
//
// For each feature: the method is Options.Methods[name] if set, else
// DefaultMethod. The threshold is Options.Thresholds[name] if set, else
// PValue for p-value methods (ks, chi2, z) and Distance for distances
// (wasserstein, psi, jensen_shannon, hellinger). The verdict is
// "insufficient_data" when either side has fewer than MinRows non-null
// values, or the method's statistic is missing (nil) or NaN; then Score is 0
// and the feature does not count towards the data set. Otherwise Score is
// the p-value (KS with a Bound: of max(0, statistic − Bound)) or the
// distance; p-values of the decided p-value features are then adjusted by
// Options.Correction across those features; and a feature drifts when its
// p-value is strictly below the threshold, or its distance is at or above
// it.
//
// Decide does not validate the options: an unknown correction is treated as
// none and an unknown method makes the verdict "insufficient_data" (Compare
// rejects both).
func Decide(features []FeatureReport, opts Options) Report {
	o := opts.withDefaults()
	out := make([]FeatureReport, len(features))
	copy(out, features)
	var pIdx []int
	for i := range out {
		f := &out[i]
		f.Method = DefaultMethod(f.Type, f.ReferenceRows, o.SmallReference)
		if m, ok := o.Methods[f.Name]; ok {
			f.Method = m
		}
		f.Threshold = o.Distance
		if pValueMethod(f.Method) {
			f.Threshold = o.PValue
		}
		if t, ok := o.Thresholds[f.Name]; ok {
			f.Threshold = t
		}
		f.Score, f.Drifted, f.Verdict = 0, false, VerdictInsufficientData
		if f.CurrentRows < o.MinRows || f.ReferenceRows < o.MinRows {
			continue
		}
		score, ok := scoreOf(f)
		if !ok || math.IsNaN(score) {
			continue
		}
		f.Score = score
		f.Verdict = VerdictNoDrift
		if pValueMethod(f.Method) {
			pIdx = append(pIdx, i)
		}
	}
	if len(pIdx) > 0 && o.Correction != CorrectionNone {
		ps := make([]float64, len(pIdx))
		for k, i := range pIdx {
			ps[k] = out[i].Score
		}
		switch o.Correction {
		case CorrectionBonferroni:
			ps = Bonferroni(ps)
		case CorrectionFDR:
			ps = BenjaminiHochberg(ps)
		}
		for k, i := range pIdx {
			out[i].Score = ps[k]
		}
	}
	var ds DatasetReport
	for i := range out {
		f := &out[i]
		if f.Verdict == VerdictInsufficientData {
			continue
		}
		ds.Features++
		if pValueMethod(f.Method) {
			f.Drifted = f.Score < f.Threshold
		} else {
			f.Drifted = f.Score >= f.Threshold
		}
		if f.Drifted {
			f.Verdict = VerdictDrift
			ds.DriftedFeatures++
		}
	}
	if ds.Features > 0 {
		ds.DriftShare = float64(ds.DriftedFeatures) / float64(ds.Features)
		ds.Drifted = ds.DriftShare >= o.DatasetShare
	}
	return Report{Dataset: ds, Features: out}
}

// scoreOf returns the score of a feature's method from its statistics.
func scoreOf(f *FeatureReport) (float64, bool) {
	switch f.Method {
	case MethodKS:
		if f.KS == nil {
			return 0, false
		}
		if f.Bound > 0 {
			p, _ := KSPValue(math.Max(0, f.KS.Statistic-f.Bound), f.ReferenceRows, f.CurrentRows, Auto)
			return p, true
		}
		return f.KS.PValue, true
	case MethodChi2:
		if f.Chi2 == nil {
			return 0, false
		}
		return f.Chi2.PValue, true
	case MethodZ:
		if f.Z == nil {
			return 0, false
		}
		return f.Z.PValue, true
	case MethodWasserstein:
		return deref(f.WassersteinNormed)
	case MethodPSI:
		return deref(f.PSI)
	case MethodJensenShannon:
		return deref(f.JensenShannon)
	case MethodHellinger:
		return deref(f.Hellinger)
	}
	return 0, false
}

func deref(p *float64) (float64, bool) {
	if p == nil {
		return 0, false
	}
	return *p, true
}
