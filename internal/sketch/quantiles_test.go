package sketch

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"google.golang.org/protobuf/proto"
)

// maxRankError returns the largest difference between q's estimated CDF
// and the true CDF of data, over every distinct value of data (where the
// true CDF steps) and just below each (where the estimate may step).
func maxRankError(t *testing.T, q *Quantiles, data []float64) float64 {
	t.Helper()
	s := slices.Clone(data)
	slices.Sort(s)
	n := float64(len(s))
	worst := 0.0
	for i := 0; i < len(s); i++ {
		if i+1 < len(s) && s[i+1] == s[i] {
			continue
		}
		// True fraction at most s[i], and strictly below it.
		at := float64(i+1) / n
		below := float64(lowerBound(s, s[i])) / n
		worst = max(worst, math.Abs(q.CDF(s[i])-at), math.Abs(q.CDF(math.Nextafter(s[i], math.Inf(-1)))-below))
	}
	return worst
}

func lowerBound(s []float64, x float64) int {
	i, _ := slices.BinarySearch(s, x)
	return i
}

func streams(n int, seed uint64) map[string][]float64 {
	r := rand.New(rand.NewPCG(seed, 7))
	normal := make([]float64, n)
	sorted := make([]float64, n)
	ties := make([]float64, n)
	for i := range normal {
		normal[i] = r.NormFloat64()
		sorted[i] = float64(i)
		ties[i] = float64(r.IntN(50))
	}
	return map[string][]float64{"normal": normal, "sorted": sorted, "ties": ties}
}

func TestRankErrorWithinBound(t *testing.T) {
	sizes := []int{1_000, 10_000, 100_000, 1_000_000}
	if testing.Short() {
		sizes = sizes[:3]
	}
	for _, n := range sizes {
		for name, data := range streams(n, uint64(n)) {
			q := NewSeeded(DefaultK, uint64(n)+3)
			for _, x := range data {
				q.Add(x)
			}
			if q.Count() != uint64(n) {
				t.Fatalf("%s n=%d: count %d", name, n, q.Count())
			}
			got, bound := maxRankError(t, q, data), q.RankError()
			t.Logf("%-6s n=%-7d retained=%-3d observed=%.4f bound=%.4f", name, n, q.Retained(), got, bound)
			if got > bound {
				t.Errorf("%s n=%d: observed rank error %.4f above the bound %.4f", name, n, got, bound)
			}
			// Quantile is CDF's inverse within the same bound.
			s := slices.Sorted(slices.Values(data))
			for _, p := range []float64{0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99} {
				v := q.Quantile(p)
				lo, hi := float64(lowerBound(s, v))/float64(n), float64(upperBound(s, v))/float64(n)
				if p < lo-bound || p > hi+bound {
					t.Errorf("%s n=%d: Quantile(%v)=%v has true rank [%.4f, %.4f], bound %.4f", name, n, p, v, lo, hi, bound)
				}
			}
			if q.Quantile(0) != s[0] || q.Quantile(1) != s[n-1] {
				t.Errorf("%s n=%d: extremes %v, %v; want %v, %v", name, n, q.Quantile(0), q.Quantile(1), s[0], s[n-1])
			}
		}
	}
}

func TestMergeOfPartsMatchesWhole(t *testing.T) {
	const n, parts = 1_000_000, 10
	n2 := n
	if testing.Short() {
		n2 = 100_000
	}
	data := streams(n2, 11)["normal"]
	whole := NewSeeded(DefaultK, 1)
	for _, x := range data {
		whole.Add(x)
	}
	merged := NewSeeded(DefaultK, 2)
	for p := range parts {
		part := NewSeeded(DefaultK, uint64(100+p))
		for _, x := range data[p*n2/parts : (p+1)*n2/parts] {
			part.Add(x)
		}
		merged.Merge(part)
	}
	if merged.Count() != whole.Count() {
		t.Fatalf("merged count %d, whole %d", merged.Count(), whole.Count())
	}
	gotM, gotW := maxRankError(t, merged, data), maxRankError(t, whole, data)
	t.Logf("whole: observed %.4f bound %.4f retained %d; merged: observed %.4f bound %.4f retained %d",
		gotW, whole.RankError(), whole.Retained(), gotM, merged.RankError(), merged.Retained())
	if gotM > merged.RankError() {
		t.Errorf("merged: observed %.4f above bound %.4f", gotM, merged.RankError())
	}
	if merged.RankError() > 1.25*whole.RankError() {
		t.Errorf("merged bound %.4f much above the whole's %.4f", merged.RankError(), whole.RankError())
	}
	if merged.Retained() > whole.capacity+merged.capacity {
		t.Errorf("merged retains %d items", merged.Retained())
	}
}

func TestExactUntilCompaction(t *testing.T) {
	q := NewSeeded(64, 1)
	for i := range 50 {
		q.Add(float64(i))
	}
	if q.RankError() != 0 {
		t.Fatalf("RankError %v before any compaction", q.RankError())
	}
	if got := q.CDF(24.5); got != 0.5 {
		t.Errorf("CDF(24.5) = %v, want 0.5", got)
	}
	if lo, hi := q.Rank(24); lo != 0.5 || hi != 0.5 {
		t.Errorf("Rank(24) = [%v, %v], want exactly 0.5", lo, hi)
	}
	if got := q.Quantile(0.5); got != 24 {
		t.Errorf("Quantile(0.5) = %v, want 24", got)
	}
	q.Add(math.NaN())
	if q.Count() != 50 {
		t.Errorf("NaN was counted")
	}
}

func TestEmptySketch(t *testing.T) {
	q := New(DefaultK)
	for _, v := range []float64{q.CDF(1), q.Quantile(0.5), q.Min(), q.Max()} {
		if !math.IsNaN(v) {
			t.Errorf("empty sketch answered %v, want NaN", v)
		}
	}
	if q.RankError() != 0 {
		t.Errorf("empty RankError %v", q.RankError())
	}
	q.Merge(New(DefaultK))
	q.Merge(nil)
	if q.Count() != 0 {
		t.Errorf("count %d", q.Count())
	}
}

func TestDeterministicAndRoundTrip(t *testing.T) {
	data := streams(20_000, 5)["normal"]
	a, b := NewSeeded(DefaultK, 42), NewSeeded(DefaultK, 42)
	for _, x := range data[:10_000] {
		a.Add(x)
		b.Add(x)
	}
	if !proto.Equal(a.ToProto(), b.ToProto()) {
		t.Fatal("same seed and input gave different sketches")
	}
	wire, err := proto.Marshal(a.ToProto())
	if err != nil {
		t.Fatal(err)
	}
	var p droverv1.QuantileSketch
	if err := proto.Unmarshal(wire, &p); err != nil {
		t.Fatal(err)
	}
	c, err := FromProto(&p)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(c.ToProto(), a.ToProto()) {
		t.Fatal("round trip changed the sketch")
	}
	// A restored sketch continues exactly as the original would.
	for _, x := range data[10_000:] {
		a.Add(x)
		c.Add(x)
	}
	if !proto.Equal(c.ToProto(), a.ToProto()) {
		t.Fatal("restored sketch diverged from the original")
	}
	for _, p := range []float64{0.1, 0.5, 0.9} {
		if a.Quantile(p) != c.Quantile(p) {
			t.Errorf("Quantile(%v): %v vs %v", p, a.Quantile(p), c.Quantile(p))
		}
	}
}

func TestMergeIsUnbiased(t *testing.T) {
	// Merging sketches with the same seed keeps every estimate unbiased;
	// averaged over many seeds the median estimate converges on the truth.
	const trials = 200
	var sum float64
	for s := range trials {
		a, b := NewSeeded(16, uint64(s)), NewSeeded(16, uint64(s))
		for i := range 2000 {
			a.Add(float64(i))
			b.Add(float64(2000 + i))
		}
		a.Merge(b)
		sum += a.CDF(1999.5) - 0.5
	}
	if mean := sum / trials; math.Abs(mean) > 0.01 {
		t.Errorf("mean CDF error %v after merges, want ~0", mean)
	}
}

func TestSelfMerge(t *testing.T) {
	q := NewSeeded(DefaultK, 3)
	for i := range 1000 {
		q.Add(float64(i))
	}
	q.Merge(q)
	if q.Count() != 2000 || q.Min() != 0 || q.Max() != 999 {
		t.Fatalf("self merge: count %d, [%v, %v]", q.Count(), q.Min(), q.Max())
	}
}

func TestFromProtoRejectsInconsistentState(t *testing.T) {
	good := func() *droverv1.QuantileSketch {
		q := NewSeeded(DefaultK, 1)
		for i := range 1000 {
			q.Add(float64(i))
		}
		return q.ToProto()
	}
	cases := map[string]func(p *droverv1.QuantileSketch){
		"k too small":     func(p *droverv1.QuantileSketch) { p.K = 1 },
		"count":           func(p *droverv1.QuantileSketch) { p.Count++ },
		"levels too many": func(p *droverv1.QuantileSketch) { p.Levels[0]++ },
		"levels too few":  func(p *droverv1.QuantileSketch) { p.Levels[len(p.Levels)-1]-- },
		"no levels":       func(p *droverv1.QuantileSketch) { p.Levels = nil },
		"unsorted":        func(p *droverv1.QuantileSketch) { p.Items[1], p.Items[0] = p.Items[0], p.Items[1]+1 },
		"item below min":  func(p *droverv1.QuantileSketch) { p.Min = p.Items[0] + 0.5 },
		"nan item":        func(p *droverv1.QuantileSketch) { p.Items[0] = math.NaN() },
		"variance":        func(p *droverv1.QuantileSketch) { p.Variance = -1 },
		"huge levels":     func(p *droverv1.QuantileSketch) { p.Levels = make([]uint32, 100) },
		"weight overflow": func(p *droverv1.QuantileSketch) { p.Levels = append(make([]uint32, 63), uint32(len(p.Items))) },
	}
	for name, mutate := range cases {
		p := good()
		mutate(p)
		if _, err := FromProto(p); !errors.Is(err, ErrInvalidSketch) {
			t.Errorf("%s: err = %v, want ErrInvalidSketch", name, err)
		}
	}
	if _, err := FromProto(good()); err != nil {
		t.Errorf("good sketch: %v", err)
	}
}
