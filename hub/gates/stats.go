package gates

import "math"

// testResult is the outcome of a one-sided test: its statistic (U for
// Mann–Whitney, else z), its z-score and its p-value. When the groups'
// variance is zero (every value tied) there is no evidence either way: z is
// NaN and p is 1.
type testResult struct {
	stat, z, p float64
}

// mannWhitneyGreater is the one-sided Mann–Whitney U test of whether the
// values counted by x are stochastically greater than those counted by y,
// where x[i] and y[i] count the values in bucket i and the buckets are in
// increasing order. Values within a bucket are ties: each gets the
// bucket's midrank. It uses the normal approximation with the tie-corrected
// variance and a continuity correction, as scipy's
// mannwhitneyu(x, y, alternative="greater", method="asymptotic",
// use_continuity=True):
//
//	U = R_x − n_x(n_x+1)/2          (R_x: the sum of x's ranks)
//	σ² = n_x·n_y/12 · ((n+1) − Σ(t³−t)/(n(n−1)))
//	z = (U − n_x·n_y/2 − ½) / σ,   p = P(Z ≥ z)
//
// ok is false when a group is empty.
func mannWhitneyGreater(x, y []float64) (r testResult, ok bool) {
	var nx, ny float64
	for i := range x {
		nx += x[i]
		ny += y[i]
	}
	if nx == 0 || ny == 0 {
		return testResult{}, false
	}
	n := nx + ny
	var below, rx, ties float64 // values in earlier buckets; x's rank sum; Σ(t³−t)
	for i := range x {
		t := x[i] + y[i]
		if t == 0 {
			continue
		}
		rx += x[i] * (below + (t+1)/2)
		ties += (t - 1) * t * (t + 1)
		below += t
	}
	u := rx - nx*(nx+1)/2
	sd := math.Sqrt(nx * ny / 12 * ((n + 1) - ties/(n*(n-1))))
	if !(sd > 0) {
		return testResult{stat: u, z: math.NaN(), p: 1}, true
	}
	z := (u - nx*ny/2 - 0.5) / sd
	return testResult{stat: u, z: z, p: normalSurvival(z)}, true
}

// twoProportionGreater is the one-sided pooled two-proportion z-test of
// whether the rate of successes k1 of n1 is greater than k2 of n2:
//
//	p̂ = (k1+k2)/(n1+n2),   se = √(p̂(1−p̂)(1/n1 + 1/n2))
//	z = (k1/n1 − k2/n2) / se,   p = P(Z ≥ z)
//
// without a continuity correction. ok is false when a group is empty.
// When p̂ is 0 or 1 there is no evidence either way: z is NaN and p is 1.
func twoProportionGreater(k1, n1, k2, n2 float64) (r testResult, ok bool) {
	if !(n1 > 0 && n2 > 0) {
		return testResult{}, false
	}
	pooled := (k1 + k2) / (n1 + n2)
	se := math.Sqrt(pooled * (1 - pooled) * (1/n1 + 1/n2))
	if !(se > 0) {
		return testResult{z: math.NaN(), p: 1}, true
	}
	z := (k1/n1 - k2/n2) / se
	return testResult{stat: z, z: z, p: normalSurvival(z)}, true
}

// normalSurvival is P(Z ≥ z) for a standard normal Z, accurate in the far
// tail (gonum's distuv.Normal.Survival computes 1 − erf, which rounds to 0
// beyond z ≈ 8.3).
func normalSurvival(z float64) float64 { return math.Erfc(z/math.Sqrt2) / 2 }
