package drift

import (
	"math"
	"slices"
	"sync"
)

// maxAutoExact is the largest sample size for which Auto computes the exact
// p-value, as scipy 1.10's ks_2samp (MAX_AUTO_N).
const maxAutoExact = 10000

// KS is the two-sample, two-sided Kolmogorov–Smirnov test, as
// scipy.stats.ks_2samp(ref, cur, method=...) in scipy 1.10. The inputs need
// not be sorted and are not modified; NaN values are nulls and are skipped.
// Ties are handled as scipy does: both empirical CDFs are evaluated at every
// distinct value, so tied values step together.
//
// In Exact mode (and in Auto when it picks exact) the statistic is rounded
// to the nearest multiple of 1/lcm(n, m), as scipy returns it. When either
// sample has no values the result is {NaN, NaN, ""}: the test is undefined.
func KS(ref, cur []float64, mode Mode) KSResult {
	a, b := sortedFinite(ref), sortedFinite(cur)
	if len(a) == 0 || len(b) == 0 {
		return KSResult{Statistic: math.NaN(), PValue: math.NaN()}
	}
	d, _ := ksWasserstein(a, b)
	return ksTest(d, len(a), len(b), mode)
}

// ksTest turns a statistic into a KSResult, rounding it as the exact method
// does.
func ksTest(d float64, n, m int, mode Mode) KSResult {
	p, method, dr := ksPValue(d, n, m, mode)
	return KSResult{Statistic: dr, PValue: p, Method: method}
}

// KSPValue returns the two-sided p-value of the two-sample
// Kolmogorov–Smirnov statistic d for sample sizes n and m, and how it was
// computed: "exact" or "asymp".
//
// Auto is exact when max(n, m) ≤ 10000 and asymptotic otherwise. Exact
// counts lattice paths: for n = m the closed-form alternating sum of
// binomial ratios, otherwise Hodges' "inside" recursion in the 1−p form of
// Viehmann (2021); it falls back to the asymptotic value when lcm(n, m)
// is too large or the computation leaves [0, 1] in floating point.
// Asymptotic is scipy's: the one-sample Kolmogorov distribution for
// round(n·m/(n+m)) observations (scipy.stats.kstwo.sf). A round(...) of 0
// (n = m = 1) gives p = 1.
//
// Invalid input (n or m < 1, d NaN) gives NaN and "".
func KSPValue(d float64, n, m int, mode Mode) (p float64, method string) {
	p, method, _ = ksPValue(d, n, m, mode)
	return p, method
}

func ksPValue(d float64, n1, n2 int, mode Mode) (p float64, method string, dr float64) {
	if n1 < 1 || n2 < 1 || math.IsNaN(d) {
		return math.NaN(), "", d
	}
	d = math.Min(math.Max(d, 0), 1)
	g := gcd(n1, n2)
	switch mode {
	case Auto:
		if max(n1, n2) <= maxAutoExact {
			mode = Exact
		} else {
			mode = Asymptotic
		}
	case Exact:
		if float64(n1/g) >= float64(math.MaxInt32)/float64(n2/g) {
			mode = Asymptotic
		}
	default:
		mode = Asymptotic
	}
	if mode == Exact {
		if p, dr, ok := ksExact(n1, n2, g, d); ok {
			return clip01(p), "exact", dr
		} else {
			d = dr
		}
	}
	hi, lo := float64(max(n1, n2)), float64(min(n1, n2))
	en := math.RoundToEven(hi * lo / (hi + lo))
	if en < 1 {
		return 1, "asymp", d
	}
	return clip01(kolmogorovSF(int(en), d)), "asymp", d
}

// ksExact is scipy's _attempt_exact_2kssamp for the two-sided alternative.
// It returns the p-value, the statistic rounded to a multiple of 1/lcm and
// whether the computation succeeded.
func ksExact(n1, n2, g int, d float64) (float64, float64, bool) {
	lcm := (n1 / g) * n2
	h := int(math.RoundToEven(d * float64(lcm)))
	d = float64(h) / float64(lcm)
	if h == 0 {
		return 1, d, true
	}
	var p float64
	if n1 == n2 {
		p = probOutsideSquare(n1, h)
	} else {
		p = probOutsideBand(n1, n2, g, h)
	}
	if !(p >= 0 && p <= 1) {
		return p, d, false
	}
	return p, d, true
}

// probOutsideSquare returns Pr(D_{n,n} ≥ h/n) =
// 2·Σ_{k≥1} (−1)^(k−1) C(2n, n−kh)/C(2n, n), evaluated Horner-fashion on
// ratios of binomial coefficients to avoid cancellation.
func probOutsideSquare(n, h int) float64 {
	p := 0.0
	for k := n / h; k >= 0; k-- {
		p1 := 1.0
		for j := 0; j < h; j++ {
			p1 = float64(n-k*h-j) * p1 / float64(n+k*h+j+1)
		}
		p = p1 * (1 - p)
	}
	return 2 * p
}

// probOutsideBand returns the share of monotone lattice paths from (0, 0) to
// (m, n) that touch or cross the lines |x·n/g − y·m/g| = h (Hodges' inside
// method). The recursion carries, column by column, the share of paths to
// each point that have already left the band, which is numerically stable
// (Viehmann, arXiv:2102.08037).
func probOutsideBand(m, n, g, h int) float64 {
	if m < n {
		m, n = n, m
	}
	mg, ng := m/g, n/g
	// a[j−lo] is the share for point (i, j); points outside the band hold 1.
	a := make([]float64, n+2)
	for i := range a {
		a[i] = 1
	}
	lo, hi := 0, min(ceilDiv(h, mg), n+1)
	for j := lo; j < hi; j++ {
		a[j] = 0
	}
	curLen := hi - lo
	for i := 1; i <= m; i++ {
		lastLo, lastLen := lo, curLen
		lo = min(max(floorDiv(ng*i-h, mg)+1, 0), n)
		hi = min(ceilDiv(ng*i+h, mg), n+1)
		if hi <= lo {
			return 1
		}
		val := 1.0
		if lo == 0 {
			val = 0
		}
		fi := float64(i)
		for jj := 0; jj < hi-lo; jj++ {
			j := jj + lo
			val = (a[jj+lo-lastLo]*fi + val*float64(j)) / float64(i+j)
			a[jj] = val
		}
		curLen = hi - lo
		for k := curLen; k < lastLen && k < len(a); k++ {
			a[k] = 1
		}
	}
	return a[hi-lo-1]
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func floorDiv(a, b int) int {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

func ceilDiv(a, b int) int { return -floorDiv(-a, b) }

// sortedFinite returns the non-NaN values of x, sorted, in a new slice.
func sortedFinite(x []float64) []float64 {
	out, _, _ := sortNonNull(x)
	return out
}

// sortNonNull returns the non-NaN values of x sorted ascending in a new
// slice, the number of NaNs skipped and the number of ±Inf kept. Large
// inputs use a bucket sort by value, several times faster than a comparison
// sort.
func sortNonNull(x []float64) (out []float64, nulls, infs int) {
	if len(x) < 4096 {
		out = make([]float64, 0, len(x))
		for _, v := range x {
			switch {
			case math.IsNaN(v):
				continue
			case math.IsInf(v, 0):
				infs++
			case v == 0:
				v = 0
			}
			out = append(out, v)
		}
		slices.Sort(out)
		return out, len(x) - len(out), infs
	}
	out = make([]float64, 0, len(x))
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range x {
		if v != v { // NaN
			continue
		}
		if math.IsInf(v, 0) {
			infs++
		}
		lo, hi = math.Min(lo, v), math.Max(hi, v)
		out = append(out, v)
	}
	nulls = len(x) - len(out)
	if infs > 0 || !(hi-lo < math.Inf(1)) || hi == lo {
		slices.Sort(out)
		return out, nulls, infs
	}
	bucketSort(out, lo, hi)
	return out, nulls, infs
}

// bucketSort sorts finite values x in [lo, hi] (lo < hi) by distributing
// them into about len(x)/4 buckets by value, (v−lo)·scale rounded down,
// which is monotone in v, then sorting each bucket: insertion sort for small
// buckets, pdqsort for large ones, so skewed or tied data stay O(n log n).
func bucketSort(x []float64, lo, hi float64) {
	nb := max(len(x)/4, 1)
	scale := float64(nb) / (hi - lo)
	bucket := func(v float64) int {
		return min(int((v-lo)*scale), nb-1)
	}
	start := getScratch(nb + 1)
	defer scratchPool.Put(start)
	cnt := (*start)[:nb+1]
	clear(cnt)
	for _, v := range x {
		cnt[bucket(v)+1]++
	}
	for i := 1; i <= nb; i++ {
		cnt[i] += cnt[i-1]
	}
	src := make([]float64, len(x))
	copy(src, x)
	pos := getScratch(nb)
	defer scratchPool.Put(pos)
	next := (*pos)[:nb]
	copy(next, cnt[:nb])
	for _, v := range src {
		b := bucket(v)
		x[next[b]] = v
		next[b]++
	}
	for b := range nb {
		s := x[cnt[b]:cnt[b+1]]
		if len(s) > 32 {
			slices.Sort(s)
			continue
		}
		for i := 1; i < len(s); i++ {
			v := s[i]
			j := i
			for ; j > 0 && s[j-1] > v; j-- {
				s[j] = s[j-1]
			}
			s[j] = v
		}
	}
}

// scratchPool holds bucket-sort buffers, reused across columns.
var scratchPool sync.Pool

func getScratch(n int) *[]int {
	if p, ok := scratchPool.Get().(*[]int); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	s := make([]int, n)
	return &s
}

// ksWasserstein returns the two-sample KS statistic and the 1-D Wasserstein
// distance of two sorted, non-empty samples in one merge pass over their
// distinct values: between consecutive distinct values u < w the empirical
// CDFs are constant, contributing |F−G|·(w−u) to the distance, and the KS
// statistic is the largest |F−G| (computed as scipy does, i/n − j/m).
func ksWasserstein(a, b []float64) (ks, w float64) {
	n, m := len(a), len(b)
	fn, fm := float64(n), float64(m)
	i, j := 0, 0
	for i < n || j < m {
		var v float64
		switch {
		case j >= m || (i < n && a[i] <= b[j]):
			v = a[i]
		default:
			v = b[j]
		}
		for i < n && a[i] <= v {
			i++
		}
		for j < m && b[j] <= v {
			j++
		}
		diff := math.Abs(float64(i)/fn - float64(j)/fm)
		if diff > ks {
			ks = diff
		}
		if i < n || j < m {
			var next float64
			switch {
			case j >= m || (i < n && a[i] <= b[j]):
				next = a[i]
			default:
				next = b[j]
			}
			w += diff * (next - v)
		}
	}
	return ks, w
}
