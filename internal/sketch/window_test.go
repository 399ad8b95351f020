package sketch

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/drift"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"google.golang.org/protobuf/proto"
)

// The test stream: a numeric feature "x" ~ N(mean, 1), a categorical
// feature "c" over five categories, a binary feature "b", and a numeric
// prediction.
var (
	categories = []string{"a", "b", "c", "d", "e"}
	baseShares = []float64{0.30, 0.25, 0.20, 0.15, 0.10}
	// shiftedShares moves 10 % of the traffic from "a" to "e".
	shiftedShares = []float64{0.20, 0.25, 0.20, 0.15, 0.20}
)

type stream struct {
	r      *rand.Rand
	mean   float64
	shares []float64
}

func newStream(seed uint64, mean float64, shares []float64) *stream {
	return &stream{r: rand.New(rand.NewPCG(seed, 99)), mean: mean, shares: shares}
}

// row is one generated row; it implements Row.
type row struct {
	x, pred float64
	c, b    string
}

func (r *row) Number(i int) float64 {
	if i == 0 {
		return r.x
	}
	return r.pred
}

func (r *row) String(i int) string {
	if i == 1 {
		return r.c
	}
	return r.b
}

func (s *stream) next(r *row) {
	r.x = s.mean + s.r.NormFloat64()
	if s.r.IntN(100) == 0 {
		r.x = math.NaN()
	}
	u, i := s.r.Float64(), 0
	for ; i < len(s.shares)-1 && u >= s.shares[i]; i++ {
		u -= s.shares[i]
	}
	r.c = categories[i]
	r.b = "no"
	if s.r.Float64() < 0.3 {
		r.b = "yes"
	}
	r.pred = 1 / (1 + math.Exp(-r.x))
}

func columns(s *stream, n int) ([]drift.Column, drift.Column) {
	x := drift.Column{Name: "x", Numbers: make([]float64, n)}
	c := drift.Column{Name: "c", Categorical: true, Strings: make([]string, n)}
	b := drift.Column{Name: "b", Categorical: true, Strings: make([]string, n)}
	p := drift.Column{Name: "score", Numbers: make([]float64, n)}
	var r row
	for i := range n {
		s.next(&r)
		x.Numbers[i], c.Strings[i], b.Strings[i], p.Numbers[i] = r.x, r.c, r.b, r.pred
	}
	return []drift.Column{x, c, b}, p
}

const referenceRows = 100_000

var testProfile = func() *droverv1.ReferenceProfile {
	cols, pred := columns(newStream(1, 0, baseShares), referenceRows)
	p, err := BuildProfileWith(cols, ProfileOptions{Prediction: &pred, Seed: 7, Built: time.Unix(1700000000, 0)})
	if err != nil {
		panic(err)
	}
	return p
}()

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func fill(t testing.TB, w *Window, s *stream, rows int) {
	t.Helper()
	var r row
	for range rows {
		s.next(&r)
		w.Observe(&r)
	}
}

func newWindow(t testing.TB, seed uint64) *Window {
	t.Helper()
	w, err := NewWindow(testProfile, "churn", 3, t0, time.Minute, WithSeed(seed))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestBuildProfile(t *testing.T) {
	p := testProfile
	if p.GetRows() != referenceRows || len(p.GetFeatures()) != 3 || p.GetPrediction().GetName() != "score" {
		t.Fatalf("profile: rows %d, %d features, prediction %q", p.GetRows(), len(p.GetFeatures()), p.GetPrediction().GetName())
	}
	x := p.GetFeatures()[0]
	if x.GetCount()+x.GetNulls() != referenceRows || x.GetNulls() == 0 {
		t.Errorf("x: count %d nulls %d", x.GetCount(), x.GetNulls())
	}
	n := x.GetNumeric()
	if len(n.GetEdges()) != DefaultBins+1 || len(n.GetBins()) != DefaultBins+2 {
		t.Fatalf("x: %d edges, %d bins", len(n.GetEdges()), len(n.GetBins()))
	}
	for i, c := range n.GetBins()[1 : DefaultBins+1] {
		if want := float64(x.GetCount()) / DefaultBins; math.Abs(float64(c)-want) > 1 {
			t.Errorf("bin %d holds %d, want %v (equal frequency)", i+1, c, want)
		}
	}
	if n.GetBins()[0] != 0 || n.GetBins()[DefaultBins+1] != 0 {
		t.Errorf("reference under/overflow %d, %d", n.GetBins()[0], n.GetBins()[DefaultBins+1])
	}
	if sd := math.Sqrt(n.GetM2() / float64(x.GetCount())); math.Abs(n.GetMean()) > 0.02 || math.Abs(sd-1) > 0.02 {
		t.Errorf("x: mean %v sd %v", n.GetMean(), sd)
	}
	if k := p.GetFeatures()[1].GetKind(); k != droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL {
		t.Errorf("c kind %v", k)
	}
	if k := p.GetFeatures()[2].GetKind(); k != droverv1.FeatureKind_FEATURE_KIND_BINARY {
		t.Errorf("b kind %v", k)
	}
	size := proto.Size(p)
	t.Logf("reference profile of %d rows, 4 columns: %d bytes", referenceRows, size)

	if _, err := BuildProfile([]drift.Column{{Name: "a", Numbers: []float64{1}}, {Name: "b", Numbers: []float64{1, 2}}}, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("ragged columns: %v", err)
	}
	if _, err := BuildProfile([]drift.Column{{Name: "a"}, {Name: "a"}}, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("repeated names: %v", err)
	}
	empty, err := BuildProfile([]drift.Column{{Name: "a"}, {Name: "b", Categorical: true}}, 0)
	if err != nil {
		t.Fatalf("empty columns: %v", err)
	}
	if _, err := NewWindow(empty, "m", 1, t0, time.Minute); err != nil {
		t.Errorf("window on an empty profile: %v", err)
	}
}

func TestWindowRoundTrip(t *testing.T) {
	w := newWindow(t, 1)
	fill(t, w, newStream(2, 2, shiftedShares), 5000)
	w.AddSchemaViolations(4)
	p := w.ToProto()
	wire, err := proto.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var back droverv1.DriftWindow
	if err := proto.Unmarshal(wire, &back); err != nil {
		t.Fatal(err)
	}
	w2, err := WindowFromProto(&back, testProfile)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(w2.ToProto(), p) {
		t.Fatal("window changed in a round trip")
	}
	if p.GetRows() != 5000 || p.GetSchemaViolations() != 4 || p.GetFeatures()[0].GetNumeric().GetOutOfRange() == 0 {
		t.Errorf("rows %d violations %d out of range %d", p.GetRows(), p.GetSchemaViolations(), p.GetFeatures()[0].GetNumeric().GetOutOfRange())
	}
	if len(p.GetFeatures()[0].GetNumeric().GetEdges()) != 0 {
		t.Error("live window carries its reference's edges")
	}

	bad := proto.Clone(p).(*droverv1.DriftWindow)
	bad.Features[0].Numeric.Bins[0]++
	if _, err := WindowFromProto(bad, testProfile); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad bins: %v", err)
	}
	bad = proto.Clone(p).(*droverv1.DriftWindow)
	bad.Features[1].Categorical.Counts["zzz"] = 1
	if _, err := WindowFromProto(bad, testProfile); !errors.Is(err, ErrMismatch) {
		t.Errorf("stray category: %v", err)
	}
	bad = proto.Clone(p).(*droverv1.DriftWindow)
	bad.Features = bad.Features[:2]
	if _, err := WindowFromProto(bad, testProfile); !errors.Is(err, ErrMismatch) {
		t.Errorf("missing feature: %v", err)
	}
	bad = proto.Clone(p).(*droverv1.DriftWindow)
	bad.Features[0].Numeric.Sketch.Items[0] = math.NaN()
	if _, err := WindowFromProto(bad, testProfile); err == nil {
		t.Error("NaN sketch item accepted")
	}
	// Evaluate survives a corrupt window: the feature has no current rows.
	rep := Evaluate(testProfile, bad, drift.Options{})
	if len(rep.Features) != 3 || rep.Features[0].Verdict != drift.VerdictInsufficientData {
		t.Errorf("corrupt window evaluated as %+v", rep.Features)
	}
}

func TestNumericMergeMatchesWhole(t *testing.T) {
	ref := testProfile.GetFeatures()[0].GetNumeric()
	whole, _ := NumericAgainst(ref, NewSeeded(DefaultK, 1))
	a, _ := NumericAgainst(ref, NewSeeded(DefaultK, 2))
	b, _ := NumericAgainst(ref, NewSeeded(DefaultK, 3))
	r := rand.New(rand.NewPCG(3, 3))
	for i := range 10_000 {
		x := 1e6 + 3*r.NormFloat64()
		whole.Add(x)
		if i%3 == 0 {
			a.Add(x)
		} else {
			b.Add(x)
		}
	}
	if err := a.Merge(b); err != nil {
		t.Fatal(err)
	}
	if a.Count() != whole.Count() || a.OutOfRange() != whole.OutOfRange() || fmt.Sprint(a.Bins()) != fmt.Sprint(whole.Bins()) {
		t.Fatalf("merged counts differ")
	}
	if math.Abs(a.Mean()/whole.Mean()-1) > 1e-12 || math.Abs(a.Variance()/whole.Variance()-1) > 1e-9 || math.Abs(whole.Variance()-9) > 0.5 {
		t.Errorf("mean %v vs %v, variance %v vs %v", a.Mean(), whole.Mean(), a.Variance(), whole.Variance())
	}
	other, _ := NewNumeric([]float64{1, 2}, nil)
	if err := a.Merge(other); !errors.Is(err, ErrMismatch) {
		t.Errorf("merge across edges: %v", err)
	}
	if _, err := NewNumeric([]float64{2, 1}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("descending edges: %v", err)
	}
	a.Add(math.Inf(1))
	if a.Nulls() != 1 {
		t.Errorf("+Inf not counted as null")
	}
}

func TestCategoricalCapAndBuckets(t *testing.T) {
	c := NewCategorical(3)
	for _, v := range []string{"a", "a", "b", "c", "d", "", "a"} {
		c.Add(v)
	}
	if c.Count() != 6 || c.Other() != 1 || c.Nulls() != 1 {
		t.Fatalf("count %d other %d nulls %d", c.Count(), c.Other(), c.Nulls())
	}
	d := NewCategorical(3)
	for range 5 {
		d.Add("z")
	}
	c.Merge(d)
	got := c.Counts()
	if len(got) != 3 || got["z"] != 5 || got["a"] != 3 || got["b"] != 1 || c.Other() != 2 {
		t.Errorf("after capped merge: %v other %d", got, c.Other())
	}
	live := CategoricalAgainst(&droverv1.CategoricalCounts{Counts: map[string]uint64{"a": 1, "b": 1}})
	live.Add("a")
	live.Add("new")
	if live.Unseen() != 1 || live.Other() != 0 {
		t.Errorf("unseen %d other %d", live.Unseen(), live.Other())
	}
	capped := CategoricalAgainst(&droverv1.CategoricalCounts{Counts: map[string]uint64{"a": 1}, Other: 5})
	capped.Add("new")
	if capped.Unseen() != 0 || capped.Other() != 1 {
		t.Errorf("against a capped reference: unseen %d other %d", capped.Unseen(), capped.Other())
	}
}

func TestBytesPerFeatureWindow(t *testing.T) {
	// The target: a feature's window (summary, bins, sketch) in at
	// most 4 KiB, whatever the window's size.
	const limit = 4096
	w := newWindow(t, 5)
	s := newStream(5, 0, baseShares)
	worst := map[string]int{}
	rows := 0
	for _, target := range []int{10, 100, 1_000, 10_000, 100_000, 1_000_000} {
		for rows < target {
			var r row
			s.next(&r)
			w.Observe(&r)
			rows++
			if rows%97 == 0 || rows == target {
				for _, fp := range append(w.ToProto().GetFeatures(), w.ToProto().GetPrediction()) {
					worst[fp.GetName()] = max(worst[fp.GetName()], proto.Size(fp))
				}
			}
			if rows > 20_000 && rows%9973 != 0 && rows != target {
				continue
			}
		}
		t.Logf("%7d rows: window %d bytes; x %d bytes", rows, proto.Size(w.ToProto()), proto.Size(w.ToProto().GetFeatures()[0]))
	}
	for name, b := range worst {
		t.Logf("feature %q: at most %d bytes per window", name, b)
		if b > limit {
			t.Errorf("feature %q: %d bytes per window, above %d", name, b, limit)
		}
	}

	// The worst case, whatever the data: every level one item short of its
	// capacity, for windows of up to 2^40 values (35 levels), a name of
	// 32 bytes and counts of 2^40.
	n := w.cols[0].num.Clone()
	n.count, n.nulls, n.outOfRange = 1<<40, 1<<40, 1<<40
	for i := range n.bins {
		n.bins[i] = 1 << 40
	}
	for levels := 1; levels <= 35; levels++ {
		q := NewSeeded(DefaultK, 1)
		q.levels = make([][]float64, levels)
		q.setCapacities()
		for h := range q.levels {
			q.levels[h] = make([]float64, q.caps[h]-1)
			for i := range q.levels[h] {
				q.levels[h][i] = s.r.NormFloat64()
			}
		}
		q.n = 1 << 40
		n.sketch = q
		fp := n.ToProto()
		fp.Name = "a_feature_name_of_32_characters_"
		if size := proto.Size(fp); size > limit {
			t.Errorf("%d full levels: %d bytes per window, above %d", levels, size, limit)
		} else if levels == 35 {
			t.Logf("worst case at 35 levels: %d bytes", size)
		}
	}
}

// evalOptions decide by the p-value tests whatever the reference's size.
var evalOptions = drift.Options{Methods: map[string]string{"x": drift.MethodKS, "c": drift.MethodChi2, "b": drift.MethodZ}}

func TestMergedWindowsGiveTheSameVerdict(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mean   float64
		shares []float64
		drift  bool
	}{
		{"unshifted", 0, baseShares, false},
		{"shifted", 0.5, shiftedShares, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const agents, rows = 4, 2500
			whole := newWindow(t, 100)
			merged := newWindow(t, 200)
			var wire []*droverv1.DriftWindow
			for a := range agents {
				part := newWindow(t, uint64(300+a))
				s := newStream(uint64(400+a), tc.mean, tc.shares)
				var r row
				for range rows {
					s.next(&r)
					part.Observe(&r)
					whole.Observe(&r)
				}
				// The hub receives each agent's window on the wire.
				wire = append(wire, part.ToProto())
				back, err := WindowFromProto(part.ToProto(), testProfile)
				if err != nil {
					t.Fatal(err)
				}
				if err := merged.Merge(back); err != nil {
					t.Fatal(err)
				}
			}
			rw := Evaluate(testProfile, whole.ToProto(), evalOptions)
			rm := Evaluate(testProfile, merged.ToProto(), evalOptions)
			mw, err := MergeWindows(wire...)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := WindowFromProto(mw, testProfile); err != nil {
				t.Fatalf("MergeWindows made an invalid window: %v", err)
			}
			// The sketches' coins differ (merge order), the exact parts not.
			mp := merged.ToProto()
			for i, fp := range mw.GetFeatures() {
				want := mp.GetFeatures()[i]
				if fp.GetCount() != want.GetCount() || fmt.Sprint(fp.GetNumeric().GetBins()) != fmt.Sprint(want.GetNumeric().GetBins()) ||
					!proto.Equal(fp.GetCategorical(), want.GetCategorical()) {
					t.Errorf("%s: MergeWindows and Window.Merge disagree", fp.GetName())
				}
			}
			if rmw := Evaluate(testProfile, mw, evalOptions); rmw.Dataset != rm.Dataset {
				t.Errorf("MergeWindows data set %+v, Window.Merge %+v", rmw.Dataset, rm.Dataset)
			}
			for i := range rw.Features {
				fw, fm := rw.Features[i], rm.Features[i]
				t.Logf("%s: whole %s (score %.3g), merged %s (score %.3g, bound %.4f)", fw.Name, fw.Verdict, fw.Score, fm.Verdict, fm.Score, fm.Bound)
				if fw.Verdict != fm.Verdict || fw.CurrentRows != fm.CurrentRows {
					t.Errorf("%s: whole window %s, merged windows %s", fw.Name, fw.Verdict, fm.Verdict)
				}
				if fw.Chi2 != nil && *fw.Chi2 != *fm.Chi2 {
					t.Errorf("%s: chi-square differs after merge: %+v vs %+v", fw.Name, *fw.Chi2, *fm.Chi2)
				}
			}
			if rw.Dataset != rm.Dataset {
				t.Errorf("data set: whole %+v, merged %+v", rw.Dataset, rm.Dataset)
			}
			if rw.Features[0].Drifted != tc.drift || rw.Features[1].Drifted != tc.drift {
				t.Errorf("drift verdicts x=%v c=%v, want %v", rw.Features[0].Drifted, rw.Features[1].Drifted, tc.drift)
			}
			if merged.Rows() != agents*rows || !merged.Start().Equal(t0) || merged.Length() != time.Minute {
				t.Errorf("merged window: %d rows from %v for %v", merged.Rows(), merged.Start(), merged.Length())
			}
		})
	}
	other, _ := NewWindow(testProfile, "churn", 4, t0, time.Minute)
	if err := newWindow(t, 1).Merge(other); !errors.Is(err, ErrMismatch) {
		t.Errorf("merge across versions: %v", err)
	}
	if _, err := MergeWindows(newWindow(t, 1).ToProto(), other.ToProto()); !errors.Is(err, ErrMismatch) {
		t.Errorf("MergeWindows across versions: %v", err)
	}
	if _, err := MergeWindows(); !errors.Is(err, ErrInvalid) {
		t.Errorf("MergeWindows of nothing: %v", err)
	}
}

// alarmRate evaluates windows of the given size from a stream and returns
// the share of windows in which each feature drifted.
func alarmRate(t *testing.T, s *stream, windows, rows int) map[string]float64 {
	t.Helper()
	alarms := map[string]int{}
	for i := range windows {
		w := newWindow(t, uint64(i)+1_000_000)
		fill(t, w, s, rows)
		rep := Evaluate(testProfile, w.ToProto(), evalOptions)
		for _, f := range rep.Features {
			if f.Drifted {
				alarms[f.Name]++
			}
		}
	}
	rates := map[string]float64{}
	for _, name := range []string{"x", "c", "b"} {
		rates[name] = float64(alarms[name]) / float64(windows)
	}
	return rates
}

// TestFalseAlarms evaluates 1,000 windows of 500 rows of an unchanged
// stream at p < 0.05. Under the null each window alarms with probability
// at most 0.05 (KS: at most 0.05 + 2·DefaultDelta, the bound's failure
// probability); 1,000 windows give a binomial standard deviation of 0.7
// points, so a rate above 7 % (three deviations) fails.
func TestFalseAlarms(t *testing.T) {
	windows := 1000
	if testing.Short() {
		windows = 200
	}
	rates := alarmRate(t, newStream(77, 0, baseShares), windows, 500)
	t.Logf("false-alarm rates over %d windows of 500 rows: %v", windows, rates)
	for name, r := range rates {
		if r > 0.07 {
			t.Errorf("feature %s: false-alarm rate %.3f above 0.05 plus slack", name, r)
		}
	}
}

// TestDetection checks that a 0.2σ shift of the numeric feature's mean and
// a move of 10 % of the traffic between categories are caught in at least
// 90 % of windows of 2,000 rows (reference of 100,000 rows, p < 0.05). With
// windows of 1,000 rows the numeric shift is caught in about 90 % (the
// sketches' bound costs power there) and the category shift in all.
func TestDetection(t *testing.T) {
	windows := 200
	if testing.Short() {
		windows = 50
	}
	for _, rows := range []int{500, 1000, 2000} {
		rates := alarmRate(t, newStream(78, 0.2, shiftedShares), windows, rows)
		t.Logf("detection rates over %d windows of %d rows: x %.3f, c %.3f", windows, rows, rates["x"], rates["c"])
		if rows == 2000 && (rates["x"] < 0.9 || rates["c"] < 0.9) {
			t.Errorf("windows of %d rows: detection x %.3f, c %.3f; want ≥ 0.9", rows, rates["x"], rates["c"])
		}
	}
}

func TestEvaluateExactMatchesCompare(t *testing.T) {
	// With windows small enough that no sketch compacts, sketch-based KS
	// is the exact test: compare with drift.Compare on the raw values.
	refCols, _ := columns(newStream(9, 0, baseShares), 100)
	curCols, _ := columns(newStream(10, 0.5, shiftedShares), 80)
	prof, err := BuildProfile(refCols, 10)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWindow(prof, "m", 1, t0, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	w.AddRows(80)
	w.ObserveNumbers(0, curCols[0].Numbers)
	w.ObserveStrings(1, curCols[1].Strings)
	w.ObserveStrings(2, curCols[2].Strings)
	got := Evaluate(prof, w.ToProto(), drift.Options{})
	want, err := drift.Compare(refCols, curCols, drift.Options{})
	if err != nil {
		t.Fatal(err)
	}
	g, e := got.Features[0], want.Features[0]
	if g.Bound != 0 || math.Abs(g.KS.Statistic-e.KS.Statistic) > 1e-12 || math.Abs(g.KS.PValue-e.KS.PValue) > 1e-12 ||
		math.Abs(*g.WassersteinNormed-*e.WassersteinNormed) > 1e-12 || math.Abs(*g.PSI-*e.PSI) > 1e-12 {
		t.Errorf("numeric: sketch %+v KS %+v W %v PSI %v; exact KS %+v W %v PSI %v",
			g, *g.KS, *g.WassersteinNormed, *g.PSI, *e.KS, *e.WassersteinNormed, *e.PSI)
	}
	for i := 1; i < 3; i++ {
		g, e := got.Features[i], want.Features[i]
		if g.Chi2.Statistic != e.Chi2.Statistic || g.Type != e.Type || g.Verdict != e.Verdict {
			t.Errorf("%s: sketch %s chi2 %+v %s; exact %s chi2 %+v %s", g.Name, g.Type, *g.Chi2, g.Verdict, e.Type, *e.Chi2, e.Verdict)
		}
	}
}
