package sketch

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

const (
	// DefaultK is the accuracy parameter of a live window's sketches. A
	// numeric feature's window (summary, 12 bins and sketch) then stays
	// within 4 KiB serialised: at most 3,945 bytes with a 32-byte name for
	// up to 2^40 values, about 3,800 in practice.
	DefaultK = 140
	// ReferenceK is the accuracy parameter of a reference profile's
	// sketches: references are built once and may be larger, which keeps
	// their share of a KS bound small.
	ReferenceK = 1024
	// MinK is the smallest accepted accuracy parameter; smaller values
	// are raised to it.
	MinK = 8
	// MaxK is the largest accepted accuracy parameter; larger values are
	// lowered to it.
	MaxK = 1 << 16
	// DefaultDelta is the failure probability of RankError: the bound
	// holds for every query at once with probability at least
	// 1 - DefaultDelta.
	DefaultDelta = 1e-3

	// capacityRatio is c in KLL: each level below the top holds c times
	// the items of the level above it.
	capacityRatio = 2.0 / 3.0
	// minLevelCapacity is the smallest capacity of any level.
	minLevelCapacity = 2
	// level0Capacity is the smallest capacity of level 0 (for k at least
	// as large): new values are sorted and compacted in batches of it.
	level0Capacity = 32
	// maxLevels bounds the levels a decoded sketch may claim; 2^64 values
	// need 64 levels at most.
	maxLevels = 64
)

// Quantiles is a mergeable quantile sketch with a provable rank error
// bound: the KLL sketch of Karnin, Lang and Liberty ("Optimal Quantile
// Approximation in Streams", FOCS 2016), with lazy compaction.
//
// Items live in levels; an item at level h stands for 2^h values. Values
// enter level 0. When the sketch holds as many items as its levels'
// capacities allow, the lowest full level is compacted: sorted, paired
// off, and one item of each pair (all the odd-placed or all the
// even-placed ones, by a fair coin) is promoted to the next level with
// twice the weight. The top level holds k items and each level below it
// 2/3 as many (at least 2), so a sketch of n values keeps about 3k items
// and log2(n/k) levels.
//
// For any x, one compaction of level h changes the estimated rank of x by
// 0 (an even number of the compacted items are at most x) or by ±2^h with
// equal probability. These errors form a martingale, so by Azuma's
// inequality the rank error at a fixed x exceeds t with probability at
// most 2·exp(−t²/(2V)), where V is the sum of 4^h over all compactions.
// The estimate only changes where x crosses an input value, so a union
// bound over the n+1 gaps between input values makes the bound hold for
// every x at once:
//
//	P(sup_x |rank(x) − estimate(x)| > ε·n) ≤ δ  for  ε = sqrt(2·V·ln(2(n+1)/δ)) / n.
//
// V depends only on the input's length and the merge tree, not on the
// coins, so the sketch tracks it exactly and RankError reports ε for
// δ = DefaultDelta. For n ≫ k, ε is roughly sqrt(ln(2n/δ))/k (0.035 for
// k = 140 and n = 10^6); the observed error is three to eight times
// smaller than the bound.
//
// Coins come from a deterministic generator seeded by NewSeeded, so
// sketches are reproducible. Sketches that will be merged need distinct
// seeds: the bound assumes their coins are independent (the estimate is
// unbiased either way). Merge mixes both generators' states.
//
// A Quantiles is not safe for concurrent use; queries cache a sorted view.
type Quantiles struct {
	k        int
	n        uint64
	min, max float64
	// levels[h] holds the items of weight 2^h. Level 0 is unsorted and
	// sorted when compacted; higher levels are kept ascending.
	levels [][]float64
	// caps[h] is level h's capacity; capacity their sum, and size the
	// number of items retained.
	caps           []int
	size, capacity int
	// variance is the sum of 4^h over every compaction of level h.
	variance float64
	rng      uint64

	// view caches the retained items sorted, with cumulative weights.
	view      []float64
	viewCum   []uint64
	viewValid bool
}

// New returns an empty sketch with accuracy parameter k (clamped to
// [MinK, MaxK]) and a random seed.
func New(k int) *Quantiles {
	return NewSeeded(k, rand.Uint64())
}

// NewSeeded returns an empty sketch with accuracy parameter k (clamped to
// [MinK, MaxK]) whose coin flips are determined by seed.
func NewSeeded(k int, seed uint64) *Quantiles {
	q := &Quantiles{k: clampK(k), rng: seed}
	q.levels = [][]float64{make([]float64, 0, q.k)}
	q.setCapacities()
	return q
}

func clampK(k int) int {
	return min(max(k, MinK), MaxK)
}

// K returns the sketch's accuracy parameter.
func (q *Quantiles) K() int { return q.k }

// Count returns the number of values added, directly or by merges.
func (q *Quantiles) Count() uint64 { return q.n }

// Retained returns the number of items the sketch holds.
func (q *Quantiles) Retained() int { return q.size }

// Min returns the smallest value added, or NaN when empty.
func (q *Quantiles) Min() float64 {
	if q.n == 0 {
		return math.NaN()
	}
	return q.min
}

// Max returns the largest value added, or NaN when empty.
func (q *Quantiles) Max() float64 {
	if q.n == 0 {
		return math.NaN()
	}
	return q.max
}

// Add adds a value. NaN is ignored.
func (q *Quantiles) Add(x float64) {
	if x != x {
		return
	}
	if q.n == 0 {
		q.min, q.max = x, x
	} else if x < q.min {
		q.min = x
	} else if x > q.max {
		q.max = x
	}
	q.n++
	q.levels[0] = append(q.levels[0], x)
	q.size++
	q.viewValid = false
	if q.size >= q.capacity {
		q.compress()
	}
}

// Merge adds o's values to q; o is unchanged. The merged sketch uses the
// smaller k of the two, and its error bound accounts for both inputs'
// compactions and the merge's.
func (q *Quantiles) Merge(o *Quantiles) {
	if o == nil || o.n == 0 {
		return
	}
	if o == q {
		o = q.Clone()
	}
	if q.n == 0 {
		q.min, q.max = o.min, o.max
	} else {
		q.min = min(q.min, o.min)
		q.max = max(q.max, o.max)
	}
	q.n += o.n
	q.k = min(q.k, o.k)
	for len(q.levels) < len(o.levels) {
		q.levels = append(q.levels, nil)
	}
	q.levels[0] = append(q.levels[0], o.levels[0]...)
	for h := 1; h < len(o.levels); h++ {
		q.levels[h] = mergeInto(q.levels[h], o.levels[h])
	}
	q.size += o.size
	q.variance += o.variance
	q.rng = splitmix(q.rng ^ (o.rng*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019))
	q.viewValid = false
	q.setCapacities()
	for q.size >= q.capacity {
		q.compress()
	}
}

// Clone returns an independent copy of q, including its generator state.
func (q *Quantiles) Clone() *Quantiles {
	c := &Quantiles{
		k: q.k, n: q.n, min: q.min, max: q.max,
		caps: slices.Clone(q.caps), size: q.size, capacity: q.capacity,
		variance: q.variance, rng: q.rng,
	}
	c.levels = make([][]float64, len(q.levels))
	for h, l := range q.levels {
		c.levels[h] = slices.Clone(l)
	}
	return c
}

// setCapacities recomputes the levels' capacities: the top level holds
// k items, each level below it 2/3 as many, and none fewer than
// minLevelCapacity; level 0 holds at least level0Capacity, so that values
// are sorted and compacted in batches.
func (q *Quantiles) setCapacities() {
	top := len(q.levels) - 1
	q.caps = q.caps[:0]
	q.capacity = 0
	for h := range q.levels {
		c := max(int(math.Ceil(float64(q.k)*math.Pow(capacityRatio, float64(top-h)))), minLevelCapacity)
		if h == 0 {
			c = max(c, min(level0Capacity, q.k))
		}
		q.caps = append(q.caps, c)
		q.capacity += c
	}
}

// compress compacts the lowest level that has reached its capacity,
// growing a new top level when that is the current top. The sketch must
// be at capacity, so that such a level exists.
func (q *Quantiles) compress() {
	for h := range q.levels {
		if len(q.levels[h]) < q.caps[h] {
			continue
		}
		if h == len(q.levels)-1 {
			q.levels = append(q.levels, nil)
			q.setCapacities()
		}
		q.compact(h)
		return
	}
	// Unreachable: a sketch at capacity has a level at its capacity.
}

// compact halves level h into level h+1, which must exist.
func (q *Quantiles) compact(h int) {
	buf := q.levels[h]
	pairs := len(buf) / 2
	if pairs == 0 {
		return
	}
	if h == 0 {
		sortFloats(buf)
	}
	// Keep one item of each pair, in place at the front; an odd item out,
	// the largest, stays behind at level h.
	offset := int(q.next() & 1)
	for i := range pairs {
		buf[i] = buf[2*i+offset]
	}
	q.levels[h+1] = mergeInto(q.levels[h+1], buf[:pairs])
	rest := copy(buf, buf[2*pairs:])
	q.levels[h] = buf[:rest]
	q.size -= pairs
	q.variance += math.Ldexp(1, 2*h)
	q.viewValid = false
}

// mergeInto merges the ascending run into the ascending dst, in place from
// the back; run must not share dst's storage.
func mergeInto(dst, run []float64) []float64 {
	n := len(dst)
	dst = append(dst, run...)
	if n == 0 || len(run) == 0 || dst[n-1] <= run[0] {
		return dst
	}
	i, j := n-1, len(run)-1
	for o := len(dst) - 1; j >= 0; o-- {
		if i >= 0 && dst[i] > run[j] {
			dst[o] = dst[i]
			i--
		} else {
			dst[o] = run[j]
			j--
		}
	}
	return dst
}

// sortFloats sorts values without NaN ascending: by insertion for the
// small batches level 0 usually holds, which beats a general sort there.
func sortFloats(s []float64) {
	if len(s) > 48 {
		slices.Sort(s)
		return
	}
	for i := 1; i < len(s); i++ {
		x := s[i]
		j := i
		for ; j > 0 && s[j-1] > x; j-- {
			s[j] = s[j-1]
		}
		s[j] = x
	}
}

// next advances the generator (SplitMix64) and returns its output.
func (q *Quantiles) next() uint64 {
	q.rng += 0x9e3779b97f4a7c15
	return splitmix(q.rng)
}

func splitmix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// sorted returns the retained items ascending and, for each, the total
// weight of the items up to and including it.
//
// Levels above 0 are kept ascending, so the view is a merge of the
// levels, from the bottom (the smallest) up, after sorting level 0 in
// place (its order carries no meaning); a general sort of the whole was
// most of a drift evaluation's time.
func (q *Quantiles) sorted() ([]float64, []uint64) {
	if q.viewValid {
		return q.view, q.viewCum
	}
	sortFloats(q.levels[0])
	vals, wts := make([]float64, 0, q.size), make([]uint64, 0, q.size)
	mv, mw := make([]float64, 0, q.size), make([]uint64, 0, q.size)
	for h, l := range q.levels {
		if len(l) == 0 {
			continue
		}
		mv, mw = mergeWeighted(mv[:0], mw[:0], vals, wts, l, 1<<h)
		vals, wts, mv, mw = mv, mw, vals, wts
	}
	q.view = q.view[:0]
	q.viewCum = q.viewCum[:0]
	var cum uint64
	for i, v := range vals {
		cum += wts[i]
		// Equal values collapse into one step of the CDF.
		if n := len(q.view); n > 0 && q.view[n-1] == v {
			q.viewCum[n-1] = cum
			continue
		}
		q.view = append(q.view, v)
		q.viewCum = append(q.viewCum, cum)
	}
	q.viewValid = true
	return q.view, q.viewCum
}

// mergeWeighted appends to (dv, dw) the ascending items (av, aw) merged
// with the ascending run, each of whose items weighs w.
func mergeWeighted(dv []float64, dw []uint64, av []float64, aw []uint64, run []float64, w uint64) ([]float64, []uint64) {
	i, j := 0, 0
	for i < len(av) && j < len(run) {
		if av[i] <= run[j] {
			dv, dw = append(dv, av[i]), append(dw, aw[i])
			i++
		} else {
			dv, dw = append(dv, run[j]), append(dw, w)
			j++
		}
	}
	dv, dw = append(dv, av[i:]...), append(dw, aw[i:]...)
	for ; j < len(run); j++ {
		dv, dw = append(dv, run[j]), append(dw, w)
	}
	return dv, dw
}

// CDF returns the estimated fraction of values at most x: exact when the
// sketch has never compacted, and within RankError of the truth (for
// every x at once, with probability at least 1 − DefaultDelta)
// otherwise. An empty sketch returns NaN.
func (q *Quantiles) CDF(x float64) float64 {
	if q.n == 0 || x != x {
		return math.NaN()
	}
	if x < q.min {
		return 0
	}
	if x >= q.max {
		return 1
	}
	vals, cum := q.sorted()
	i := upperBound(vals, x)
	if i == 0 {
		return 0
	}
	return float64(cum[i-1]) / float64(q.n)
}

// Rank returns bounds on the fraction of values at most x that hold with
// probability at least 1 − DefaultDelta: CDF(x) ± RankError(), clipped to
// [0, 1]. Outside [Min, Max] the bounds are exact.
func (q *Quantiles) Rank(x float64) (lo, hi float64) {
	c := q.CDF(x)
	if c != c {
		return c, c
	}
	if x < q.min || x >= q.max {
		return c, c
	}
	e := q.RankError()
	return max(c-e, 0), min(c+e, 1)
}

// Quantile returns an estimate of the p-quantile: the smallest retained
// value whose estimated rank reaches p·Count. Its true rank is within
// RankError of p (with probability at least 1 − DefaultDelta). Quantile(0)
// and Quantile(1) are the exact minimum and maximum. An empty sketch or a
// NaN p returns NaN.
func (q *Quantiles) Quantile(p float64) float64 {
	if q.n == 0 || p != p {
		return math.NaN()
	}
	if p <= 0 {
		return q.min
	}
	if p >= 1 {
		return q.max
	}
	vals, cum := q.sorted()
	target := p * float64(q.n)
	i, _ := slices.BinarySearchFunc(cum, target, func(c uint64, t float64) int {
		if float64(c) < t {
			return -1
		}
		return 1
	})
	if i >= len(vals) {
		return q.max
	}
	return vals[i]
}

// RankError returns ε, the bound on the rank error as a fraction of
// Count: with probability at least 1 − DefaultDelta, every estimated rank
// is within ε·Count of the true rank. It is 0 while the sketch is exact.
func (q *Quantiles) RankError() float64 {
	return q.RankErrorAt(DefaultDelta)
}

// RankErrorAt returns the rank error bound that holds with probability at
// least 1 − delta: sqrt(2·V·ln(2(n+1)/delta)) / n, where V is the sum of
// 4^h over the sketch's compactions. delta outside (0, 1) returns +Inf.
func (q *Quantiles) RankErrorAt(delta float64) float64 {
	if !(delta > 0 && delta < 1) {
		return math.Inf(1)
	}
	if q.variance == 0 || q.n == 0 {
		return 0
	}
	n := float64(q.n)
	e := math.Sqrt(2*q.variance*math.Log(2*(n+1)/delta)) / n
	return min(e, 1)
}

// upperBound returns the number of elements of the ascending slice s that
// are at most x.
func upperBound(s []float64, x float64) int {
	lo, hi := 0, len(s)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s[m] <= x {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// ToProto returns the sketch's state. Each level's items are written
// ascending.
func (q *Quantiles) ToProto() *droverv1.QuantileSketch {
	p := &droverv1.QuantileSketch{
		K:        uint32(q.k),
		Count:    q.n,
		Min:      q.min,
		Max:      q.max,
		Items:    make([]float64, 0, q.size),
		Levels:   make([]uint32, len(q.levels)),
		Variance: q.variance,
		State:    q.rng,
	}
	// Trailing empty levels carry no information but the top level's
	// position, which sets capacities; keep them all.
	for h, l := range q.levels {
		start := len(p.Items)
		p.Items = append(p.Items, l...)
		if h == 0 {
			slices.Sort(p.Items[start:])
		}
		p.Levels[h] = uint32(len(l))
	}
	return p
}

// ErrInvalidSketch is returned (wrapped) when a serialised sketch is
// inconsistent.
var ErrInvalidSketch = errors.New("invalid quantile sketch")

// FromProto restores a sketch from its state, checking that the state is
// consistent: levels that account for every item, ascending levels, a
// count equal to the items' total weight, and finite values within
// [min, max]. A nil message yields an empty sketch with DefaultK.
func FromProto(p *droverv1.QuantileSketch) (*Quantiles, error) {
	if p == nil {
		return NewSeeded(DefaultK, 0), nil
	}
	if p.GetK() < MinK || p.GetK() > MaxK {
		return nil, fmt.Errorf("%w: k %d outside [%d, %d]", ErrInvalidSketch, p.GetK(), MinK, MaxK)
	}
	levels := p.GetLevels()
	if len(levels) == 0 || len(levels) > maxLevels {
		return nil, fmt.Errorf("%w: %d levels", ErrInvalidSketch, len(levels))
	}
	items := p.GetItems()
	var total int
	var weight uint64
	for h, c := range levels {
		total += int(c)
		if total > len(items) {
			return nil, fmt.Errorf("%w: levels claim more than the %d items", ErrInvalidSketch, len(items))
		}
		w := uint64(1) << h
		if c > 0 && w > (math.MaxUint64-weight)/uint64(c) {
			return nil, fmt.Errorf("%w: weight overflows", ErrInvalidSketch)
		}
		weight += w * uint64(c)
	}
	if total != len(items) {
		return nil, fmt.Errorf("%w: levels hold %d items, message has %d", ErrInvalidSketch, total, len(items))
	}
	if weight != p.GetCount() {
		return nil, fmt.Errorf("%w: items weigh %d, count is %d", ErrInvalidSketch, weight, p.GetCount())
	}
	v := p.GetVariance()
	if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return nil, fmt.Errorf("%w: variance %v", ErrInvalidSketch, v)
	}
	lo, hi := p.GetMin(), p.GetMax()
	if p.GetCount() > 0 && !(lo <= hi) {
		return nil, fmt.Errorf("%w: min %v above max %v", ErrInvalidSketch, lo, hi)
	}
	q := &Quantiles{
		k: int(p.GetK()), n: p.GetCount(), min: lo, max: hi,
		levels:   make([][]float64, len(levels)),
		size:     len(items),
		variance: v,
		rng:      p.GetState(),
	}
	off := 0
	for h, c := range levels {
		l := make([]float64, int(c))
		copy(l, items[off:off+int(c)])
		off += int(c)
		for i, x := range l {
			if x != x || x < lo || x > hi {
				return nil, fmt.Errorf("%w: item %v at level %d outside [%v, %v]", ErrInvalidSketch, x, h, lo, hi)
			}
			if i > 0 && l[i-1] > x {
				return nil, fmt.Errorf("%w: level %d not ascending", ErrInvalidSketch, h)
			}
		}
		q.levels[h] = l
	}
	q.setCapacities()
	for q.size >= q.capacity {
		q.compress()
	}
	return q, nil
}
