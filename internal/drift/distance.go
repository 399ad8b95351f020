package drift

import (
	"math"
	"sort"
)

// Wasserstein is the 1-D earth mover's distance between two samples,
// ∫|F(x) − G(x)| dx over their empirical CDFs, as
// scipy.stats.wasserstein_distance(ref, cur). The inputs need not be sorted
// and are not modified; NaN values are nulls and are skipped. It is NaN when
// either sample has no values.
func Wasserstein(ref, cur []float64) float64 {
	a, b := sortedFinite(ref), sortedFinite(cur)
	if len(a) == 0 || len(b) == 0 {
		return math.NaN()
	}
	_, w := ksWasserstein(a, b)
	return w
}

// psiFloor is the smallest bin share PSI uses: shares below it (empty bins
// in particular) count as 1e-4, so that an empty bin adds a large but finite
// term instead of an infinite one. Shares are not renormalised afterwards.
const psiFloor = 1e-4

// PSI is the population stability index Σ (c_i − r_i)·ln(c_i / r_i) over
// bins, where r_i and c_i are the reference's and the current sample's
// shares of the bin counts (or category counts) given, each floored at 1e-4
// (see psiFloor). The slices are counts, aligned by bin; a missing trailing
// entry counts as 0. It is NaN when either side's total is not positive or
// a count is negative or not finite.
func PSI(ref, cur []float64) float64 {
	p, q, ok := shares(ref, cur)
	if !ok {
		return math.NaN()
	}
	s := 0.0
	for i := range p {
		r, c := math.Max(p[i], psiFloor), math.Max(q[i], psiFloor)
		s += (c - r) * math.Log(c/r)
	}
	return s
}

// JensenShannon is the Jensen–Shannon distance (the square root of the
// divergence, natural logarithm, so at most √ln2) between the distributions
// given by two count vectors, as scipy.spatial.distance.jensenshannon(ref,
// cur). Counts are normalised; empty bins need no smoothing. It is NaN for
// invalid counts, as PSI.
func JensenShannon(ref, cur []float64) float64 {
	p, q, ok := shares(ref, cur)
	if !ok {
		return math.NaN()
	}
	var left, right float64
	for i := range p {
		m := (p[i] + q[i]) / 2
		left += relEntr(p[i], m)
		right += relEntr(q[i], m)
	}
	return math.Sqrt((left + right) / 2)
}

// relEntr is x·ln(x/y), 0 for x = 0 (scipy.special.rel_entr for y > 0).
func relEntr(x, y float64) float64 {
	if x == 0 {
		return 0
	}
	return x * math.Log(x/y)
}

// Hellinger is the Hellinger distance √(Σ(√p_i − √q_i)²)/√2, in [0, 1],
// between the distributions given by two count vectors (normalised first).
// It is NaN for invalid counts, as PSI.
func Hellinger(ref, cur []float64) float64 {
	p, q, ok := shares(ref, cur)
	if !ok {
		return math.NaN()
	}
	s := 0.0
	for i := range p {
		d := math.Sqrt(p[i]) - math.Sqrt(q[i])
		s += d * d
	}
	return math.Sqrt(s) / math.Sqrt2
}

// shares normalises two count vectors to the same length.
func shares(ref, cur []float64) (p, q []float64, ok bool) {
	n := max(len(ref), len(cur))
	p, q = make([]float64, n), make([]float64, n)
	copy(p, ref)
	copy(q, cur)
	var sp, sq float64
	for i := range n {
		if p[i] < 0 || q[i] < 0 || math.IsInf(p[i], 0) || math.IsInf(q[i], 0) ||
			math.IsNaN(p[i]) || math.IsNaN(q[i]) {
			return nil, nil, false
		}
		sp += p[i]
		sq += q[i]
	}
	if !(sp > 0 && sq > 0) {
		return nil, nil, false
	}
	for i := range n {
		p[i] /= sp
		q[i] /= sq
	}
	return p, q, true
}

// QuantileEdges returns the bin edges Drover uses to bin a numeric feature:
// the reference's quantiles at k/bins for k = 0, …, bins (linear
// interpolation between order statistics, numpy's default), except that the
// last edge is the next float64 above the maximum so that the maximum is in
// range. Repeated values (ties) are kept once, so the edges are strictly
// increasing and there may be fewer than bins+1 (a constant reference gives
// two). NaN values are skipped. It returns nil for bins < 1 or when ref has
// no values. With BinCounts this gives equal-frequency bins plus an
// underflow and an overflow bin.
func QuantileEdges(ref []float64, bins int) []float64 {
	return edgesSorted(sortedFinite(ref), bins)
}

// edgesSorted is QuantileEdges on sorted values without NaN.
func edgesSorted(s []float64, bins int) []float64 {
	if bins < 1 || len(s) == 0 {
		return nil
	}
	edges := make([]float64, 0, bins+1)
	for k := 0; k <= bins; k++ {
		e := quantileSorted(s, float64(k)/float64(bins))
		if k == bins {
			e = math.Nextafter(s[len(s)-1], math.Inf(1))
		}
		if len(edges) == 0 || e > edges[len(edges)-1] {
			edges = append(edges, e)
		}
	}
	return edges
}

// quantileSorted is numpy's default (linear) quantile of sorted values.
func quantileSorted(s []float64, q float64) float64 {
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	if lo >= len(s)-1 {
		return s[len(s)-1]
	}
	t := pos - float64(lo)
	a, b := s[lo], s[lo+1]
	if t >= 0.5 { // as numpy, for accuracy near b
		return b - (b-a)*(1-t)
	}
	return a + (b-a)*t
}

// BinCounts counts values into len(edges)+1 bins for strictly increasing
// edges, every bin closed below and open above: bin 0 is the underflow
// (v < edges[0]); bin i, for 1 ≤ i < len(edges), holds
// edges[i−1] ≤ v < edges[i]; the last bin is the overflow
// (v ≥ edges[len(edges)−1]). That is, a value's bin is the number of edges
// at or below it. NaN values are not counted; ±Inf fall in the under- or
// overflow bin. With no edges everything is in the one bin.
func BinCounts(edges []float64, values []float64) []float64 {
	counts := make([]float64, len(edges)+1)
	for _, v := range values {
		if math.IsNaN(v) {
			continue
		}
		counts[sort.Search(len(edges), func(i int) bool { return edges[i] > v })]++
	}
	return counts
}

// binCountsSorted is BinCounts for sorted values without NaN, by binary
// search at the edges instead of per value.
func binCountsSorted(edges, s []float64) []float64 {
	counts := make([]float64, len(edges)+1)
	prev := 0
	for i, e := range edges {
		at := sort.SearchFloat64s(s, e) // first value ≥ e
		counts[i] = float64(at - prev)
		prev = at
	}
	counts[len(edges)] = float64(len(s) - prev)
	return counts
}
