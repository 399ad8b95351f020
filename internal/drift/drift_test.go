package drift

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func ptr(v float64) *float64 { return &v }

func TestDefaultMethod(t *testing.T) {
	for _, c := range []struct {
		typ  string
		rows int
		want string
	}{
		{TypeNumeric, 1000, MethodKS},
		{TypeNumeric, 1001, MethodWasserstein},
		{TypeCategorical, 10, MethodChi2},
		{TypeCategorical, 5000, MethodJensenShannon},
		{TypeBinary, 1000, MethodZ},
		{TypeBinary, 1001, MethodJensenShannon},
	} {
		if got := DefaultMethod(c.typ, c.rows, 0); got != c.want {
			t.Errorf("DefaultMethod(%s, %d) = %s, want %s", c.typ, c.rows, got, c.want)
		}
	}
	if got := DefaultMethod(TypeNumeric, 1500, 2000); got != MethodKS {
		t.Errorf("SmallReference 2000: %s", got)
	}
}

func TestDecide(t *testing.T) {
	features := []FeatureReport{
		// small numeric, p < 0.05: drift
		{Name: "a", Type: TypeNumeric, ReferenceRows: 500, CurrentRows: 500, KS: &KSResult{Statistic: 0.2, PValue: 0.01}},
		// small numeric, p = 0.05 exactly: no drift (strictly below)
		{Name: "b", Type: TypeNumeric, ReferenceRows: 500, CurrentRows: 500, KS: &KSResult{PValue: 0.05}},
		// large numeric, distance = 0.1 exactly: drift (at or above)
		{Name: "c", Type: TypeNumeric, ReferenceRows: 5000, CurrentRows: 5000, WassersteinNormed: ptr(0.1)},
		// large categorical: Jensen–Shannon
		{Name: "d", Type: TypeCategorical, ReferenceRows: 5000, CurrentRows: 5000, JensenShannon: ptr(0.05)},
		// too few current rows
		{Name: "e", Type: TypeNumeric, ReferenceRows: 500, CurrentRows: 29, KS: &KSResult{PValue: 0}},
		// statistic missing
		{Name: "f", Type: TypeBinary, ReferenceRows: 500, CurrentRows: 500},
		// binary small: z
		{Name: "g", Type: TypeBinary, ReferenceRows: 500, CurrentRows: 500, Z: &ZResult{PValue: 0.2}},
	}
	rep := Decide(features, Options{})
	want := map[string]struct {
		method, verdict string
		threshold       float64
	}{
		"a": {MethodKS, VerdictDrift, 0.05},
		"b": {MethodKS, VerdictNoDrift, 0.05},
		"c": {MethodWasserstein, VerdictDrift, 0.1},
		"d": {MethodJensenShannon, VerdictNoDrift, 0.1},
		"e": {MethodKS, VerdictInsufficientData, 0.05},
		"f": {MethodZ, VerdictInsufficientData, 0.05},
		"g": {MethodZ, VerdictNoDrift, 0.05},
	}
	for _, f := range rep.Features {
		w := want[f.Name]
		if f.Method != w.method || f.Verdict != w.verdict || f.Threshold != w.threshold || f.Drifted != (w.verdict == VerdictDrift) {
			t.Errorf("%s: method %s verdict %s threshold %v drifted %v, want %+v", f.Name, f.Method, f.Verdict, f.Threshold, f.Drifted, w)
		}
	}
	if d := rep.Dataset; d.Features != 5 || d.DriftedFeatures != 2 || d.DriftShare != 0.4 || d.Drifted {
		t.Errorf("dataset = %+v", d)
	}
	if features[0].Verdict != "" {
		t.Error("Decide modified its input")
	}

	// Overrides: a method and a threshold per feature, and the data-set share.
	rep = Decide(features, Options{
		Methods:      map[string]string{"d": MethodPSI},
		Thresholds:   map[string]float64{"b": 0.06},
		DatasetShare: 0.4,
	})
	if f := rep.Features[3]; f.Method != MethodPSI || f.Verdict != VerdictInsufficientData {
		t.Errorf("forced psi without a PSI statistic: %+v", f)
	}
	if f := rep.Features[1]; f.Verdict != VerdictDrift || f.Threshold != 0.06 {
		t.Errorf("threshold override: %+v", f)
	}
	if !rep.Dataset.Drifted {
		t.Errorf("dataset share ≥ 0.4 should drift: %+v", rep.Dataset)
	}
}

func TestDecideCorrection(t *testing.T) {
	var features []FeatureReport
	for i, p := range []float64{0.01, 0.04, 0.03, 0.2} {
		features = append(features, FeatureReport{
			Name: string(rune('a' + i)), Type: TypeNumeric, ReferenceRows: 100, CurrentRows: 100,
			KS: &KSResult{PValue: p},
		})
	}
	// A distance-decided feature takes no part in the correction.
	features = append(features, FeatureReport{Name: "z", Type: TypeNumeric, ReferenceRows: 5000, CurrentRows: 5000, WassersteinNormed: ptr(0.5)})

	drifted := func(r Report) (n int) {
		for _, f := range r.Features[:4] {
			if f.Drifted {
				n++
			}
		}
		return n
	}
	if n := drifted(Decide(features, Options{})); n != 3 {
		t.Errorf("no correction: %d drifted, want 3", n)
	}
	b := Decide(features, Options{Correction: CorrectionBonferroni})
	if n := drifted(b); n != 1 || b.Features[0].Score != 0.04 || b.Features[4].Score != 0.5 {
		t.Errorf("bonferroni: %d drifted, scores %v %v", n, b.Features[0].Score, b.Features[4].Score)
	}
	// BH: sorted 0.01 0.03 0.04 0.2 → ·4/rank: 0.04 0.06 0.0533 0.2 →
	// running minimum from the top: 0.04 0.0533 0.0533 0.2.
	f := Decide(features, Options{Correction: CorrectionFDR})
	if n := drifted(f); n != 1 || !near(f.Features[1].Score, 0.04*4/3) {
		t.Errorf("fdr: %d drifted, want 1; scores %v", n, f.Features[1].Score)
	}
}

func TestDecideBound(t *testing.T) {
	f := FeatureReport{Name: "x", Type: TypeNumeric, ReferenceRows: 800, CurrentRows: 800,
		KS: &KSResult{Statistic: 0.08, PValue: 0.01}}
	if r := Decide([]FeatureReport{f}, Options{}); !r.Features[0].Drifted {
		t.Fatalf("without bound: %+v", r.Features[0])
	}
	f.Bound = 0.03 // 0.05 is not significant for 800 × 800
	r := Decide([]FeatureReport{f}, Options{})
	want, _ := KSPValue(0.05, 800, 800, Auto)
	if r.Features[0].Drifted || r.Features[0].Score != want {
		t.Errorf("with bound: %+v, want score %v", r.Features[0], want)
	}
}

func TestCompareErrors(t *testing.T) {
	num := func(name string, v ...float64) Column { return Column{Name: name, Numbers: v} }
	cat := func(name string, v ...string) Column { return Column{Name: name, Categorical: true, Strings: v} }
	nan := math.NaN()
	for _, c := range []struct {
		name     string
		ref, cur []Column
		opts     Options
		want     string
	}{
		{"empty", nil, nil, Options{}, "no columns"},
		{"count", []Column{num("a", 1)}, []Column{num("a", 1), num("b", 1)}, Options{}, "columns"},
		{"name", []Column{num("a", 1)}, []Column{num("b", 1)}, Options{}, `"b"`},
		{"kind", []Column{num("a", 1)}, []Column{cat("a", "x")}, Options{}, "categorical on one side"},
		{"dup", []Column{num("a", 1), num("a", 2)}, []Column{num("a", 1), num("a", 2)}, Options{}, "twice"},
		{"noname", []Column{num("", 1)}, []Column{num("", 1)}, Options{}, "no name"},
		{"inf", []Column{num("a", 1, math.Inf(1))}, []Column{num("a", 1)}, Options{}, `"a": reference data holds 1 infinite`},
		{"-inf", []Column{num("a", 1)}, []Column{num("a", math.Inf(-1))}, Options{}, `current data holds 1 infinite`},
		{"allnull", []Column{num("a", nan, nan)}, []Column{num("a", 1)}, Options{}, "no non-null"},
		{"nullcur", []Column{num("a", 1)}, []Column{num("a")}, Options{}, "no non-null"},
		{"catnull", []Column{cat("c", "", "")}, []Column{cat("c", "x")}, Options{}, "no non-null"},
		{"mixed", []Column{{Name: "a", Numbers: []float64{1}, Strings: []string{"x"}}}, []Column{num("a", 1)}, Options{}, "holds strings"},
		{"correction", []Column{num("a", 1)}, []Column{num("a", 1)}, Options{Correction: "holm"}, "correction"},
		{"method", []Column{num("a", 1)}, []Column{num("a", 1)}, Options{Methods: map[string]string{"a": "t"}}, "unknown method"},
		{"method type", []Column{num("a", 1)}, []Column{num("a", 1)}, Options{Methods: map[string]string{"a": "chi2"}}, "does not apply"},
		{"method feature", []Column{num("a", 1)}, []Column{num("a", 1)}, Options{Methods: map[string]string{"b": "ks"}}, "unknown feature"},
		{"threshold", []Column{num("a", 1)}, []Column{num("a", 1)}, Options{Thresholds: map[string]float64{"a": nan}}, "threshold"},
	} {
		rep, err := Compare(c.ref, c.cur, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: report %v, error %v, want one containing %q", c.name, rep, err, c.want)
		}
	}
}

func TestCompareNulls(t *testing.T) {
	nan := math.NaN()
	ref := []Column{
		{Name: "n", Numbers: []float64{1, nan, 2, 3, nan}},
		{Name: "c", Categorical: true, Strings: []string{"a", "", "b", "a"}},
		{Name: "k", Numbers: []float64{5, 5, 5, 5}},
	}
	cur := []Column{
		{Name: "n", Numbers: []float64{nan, 2, 3, 4}},
		{Name: "c", Categorical: true, Strings: []string{"b", "b", "c"}},
		{Name: "k", Numbers: []float64{5, 6, 5}},
	}
	rep, err := Compare(ref, cur, Options{MinRows: 1})
	if err != nil {
		t.Fatal(err)
	}
	n, c, k := rep.Features[0], rep.Features[1], rep.Features[2]
	if n.ReferenceRows != 3 || n.ReferenceNulls != 2 || n.CurrentRows != 3 || n.CurrentNulls != 1 {
		t.Errorf("numeric counts: %+v", n)
	}
	if c.ReferenceRows != 3 || c.ReferenceNulls != 1 || c.Type != TypeCategorical || c.Chi2.DOF != 2 {
		t.Errorf("categorical: %+v %+v", c, c.Chi2)
	}
	// A constant reference: std floored at 0.001, finite.
	if w := *k.WassersteinNormed; math.IsInf(w, 0) || math.IsNaN(w) || !near(w, (1.0/3)/0.001) {
		t.Errorf("constant reference: wasserstein_normed %v", w)
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Errorf("report does not marshal: %v", err)
	}
	// With the default MinRows every feature is insufficient.
	rep, _ = Compare(ref, cur, Options{})
	for _, f := range rep.Features {
		if f.Verdict != VerdictInsufficientData {
			t.Errorf("%s: %s", f.Name, f.Verdict)
		}
	}
	if rep.Dataset.Features != 0 || rep.Dataset.Drifted {
		t.Errorf("dataset: %+v", rep.Dataset)
	}
}

// TestNoPanics feeds every exported function degenerate input.
func TestNoPanics(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	inputs := [][]float64{nil, {}, {nan}, {inf}, {-inf}, {nan, inf, -inf, 0, 1}, {0, 0}, {-1, 2}, {1e308, -1e308}}
	for _, a := range inputs {
		for _, b := range inputs {
			for _, m := range []Mode{Auto, Exact, Asymptotic, Mode(9)} {
				KS(a, b, m)
			}
			Wasserstein(a, b)
			PSI(a, b)
			JensenShannon(a, b)
			Hellinger(a, b)
			Chi2Contingency(a, b)
			Bonferroni(a)
			BenjaminiHochberg(a)
			BinCounts(QuantileEdges(a, 10), b)
			BinCounts(a, b)
			QuantileEdges(a, 0)
			QuantileEdges(a, -3)
		}
	}
	for _, v := range []float64{nan, inf, -inf, -1, 0, 0.5, 1, 2} {
		for _, n := range []int{-1, 0, 1, 2, 10, 141, 200000, 3000000} {
			KSPValue(v, n, n, Auto)
			KSPValue(v, n, 7, Exact)
			KSPValue(v, 3, n, Asymptotic)
			kolmogorovSF(n, v)
			smirnovSF(n, v)
		}
		TwoProportionZ(v, 10, 5, v)
		TwoProportionZ(1, 1, 1, 1)
		TwoProportionZ(0, 1, 0, 1)
	}
	Decide(nil, Options{})
	Decide([]FeatureReport{{}, {Type: "weird", Method: "weird"}}, Options{Correction: "weird", Methods: map[string]string{"": "weird"}})
}

func TestKSBasics(t *testing.T) {
	// Unsorted input is not modified; NaN is skipped.
	a := []float64{3, 1, math.NaN(), 2}
	b := []float64{2.5, 0.5}
	r := KS(a, b, Exact)
	if a[0] != 3 || !math.IsNaN(a[2]) {
		t.Error("KS modified its input")
	}
	// ECDF differences at 0.5, 1, 2, 2.5, 3: 0-1/2, 1/3-1/2, 2/3-1/2, 2/3-1, 1-1.
	if r.Statistic != 0.5 || r.Method != "exact" {
		t.Errorf("KS = %+v", r)
	}
	if r := KS(nil, b, Auto); !math.IsNaN(r.PValue) {
		t.Errorf("empty: %+v", r)
	}
	if p, m := KSPValue(1, 1, 1, Asymptotic); p != 1 || m != "asymp" {
		t.Errorf("n = m = 1 asymptotic: %v %v", p, m)
	}
}

func TestRadixSort(t *testing.T) {
	x := make([]float64, 10000)
	for i := range x {
		x[i] = (uniform(99, uint64(i)+1) - 0.5) * math.Pow(10, float64(i%40-20))
	}
	x[5], x[6], x[7] = 0, math.Copysign(0, -1), -math.MaxFloat64
	copy(x, sortedFinite(x))
	for i := 1; i < len(x); i++ {
		if x[i] < x[i-1] {
			t.Fatalf("not sorted at %d: %v > %v", i, x[i-1], x[i])
		}
	}
}

func TestBinCountsEdges(t *testing.T) {
	edges := []float64{0, 1, 2}
	got := BinCounts(edges, []float64{-1, 0, 0.5, 1, 2, 3, math.NaN(), math.Inf(-1), math.Inf(1)})
	want := []float64{2, 2, 1, 3}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("BinCounts = %v, want %v", got, want)
		}
	}
	if e := QuantileEdges([]float64{4, 4, 4}, 10); len(e) != 2 || e[0] != 4 || e[1] <= 4 {
		t.Errorf("constant reference edges: %v", e)
	}
}
