package drift

import (
	"math"
	"sort"

	"gonum.org/v1/gonum/stat/distuv"
)

// Chi2Contingency is Pearson's chi-square test of homogeneity on the 2×k
// contingency table whose rows are the reference's and the current sample's
// category counts (aligned by category; a missing trailing entry counts as
// 0), as scipy.stats.chi2_contingency with its defaults:
//
//   - Categories empty in both rows are dropped first (scipy would refuse the
//     table, as their expected counts are 0); k is what remains.
//   - DOF is k−1. With one degree of freedom (two categories) Yates'
//     continuity correction is applied, as scipy's correction=True: each
//     observed count moves up to 0.5 towards its expected count.
//   - With fewer than two categories left, or an empty row, there is nothing
//     to test: {0, 1, 0}.
//
// Negative or non-finite counts give {NaN, NaN, 0}.
func Chi2Contingency(ref, cur []float64) Chi2Result {
	n := max(len(ref), len(cur))
	var rows [2][]float64
	var sums [2]float64
	for i := range n {
		var a, b float64
		if i < len(ref) {
			a = ref[i]
		}
		if i < len(cur) {
			b = cur[i]
		}
		if !(a >= 0 && b >= 0) || math.IsInf(a, 0) || math.IsInf(b, 0) {
			return Chi2Result{Statistic: math.NaN(), PValue: math.NaN()}
		}
		if a == 0 && b == 0 {
			continue
		}
		rows[0] = append(rows[0], a)
		rows[1] = append(rows[1], b)
		sums[0] += a
		sums[1] += b
	}
	k := len(rows[0])
	if k < 2 || sums[0] == 0 || sums[1] == 0 {
		return Chi2Result{Statistic: 0, PValue: 1}
	}
	total := sums[0] + sums[1]
	dof := k - 1
	stat := 0.0
	for c := range k {
		col := rows[0][c] + rows[1][c]
		for r := range 2 {
			exp := sums[r] * col / total
			obs := rows[r][c]
			if dof == 1 {
				diff := exp - obs
				obs += math.Copysign(math.Min(0.5, math.Abs(diff)), diff)
				if diff == 0 {
					obs = rows[r][c]
				}
			}
			d := obs - exp
			stat += d * d / exp
		}
	}
	p := distuv.ChiSquared{K: float64(dof)}.Survival(stat)
	return Chi2Result{Statistic: stat, PValue: p, DOF: dof}
}

// TwoProportionZ is the pooled two-proportion z-test, two-sided:
// z = (p₁ − p₂)/√(p̂(1−p̂)(1/n₁ + 1/n₂)) with p₁ = refPositive/refN,
// p₂ = curPositive/curN and the pooled p̂ = (refPositive+curPositive)/(refN+curN);
// the p-value is 2·Φ(−|z|). When both samples are all positive or all
// negative (p̂ is 0 or 1) the proportions are equal and the result is {0, 1}.
// Counts that are negative, not finite, or exceed their totals, and empty
// totals give {NaN, NaN}.
func TwoProportionZ(refPositive, refN, curPositive, curN float64) ZResult {
	for _, v := range [...]float64{refPositive, refN, curPositive, curN} {
		if !(v >= 0) || math.IsInf(v, 0) {
			return ZResult{Statistic: math.NaN(), PValue: math.NaN()}
		}
	}
	if refN == 0 || curN == 0 || refPositive > refN || curPositive > curN {
		return ZResult{Statistic: math.NaN(), PValue: math.NaN()}
	}
	pooled := (refPositive + curPositive) / (refN + curN)
	se := math.Sqrt(pooled * (1 - pooled) * (1/refN + 1/curN))
	if se == 0 {
		return ZResult{Statistic: 0, PValue: 1}
	}
	z := (refPositive/refN - curPositive/curN) / se
	return ZResult{Statistic: z, PValue: 2 * distuv.UnitNormal.Survival(math.Abs(z))}
}

// Bonferroni returns the Bonferroni-adjusted p-values min(1, p·m), m being
// the number of non-NaN p-values. NaN entries stay NaN. The input is not
// modified.
func Bonferroni(p []float64) []float64 {
	out := make([]float64, len(p))
	m := 0
	for _, v := range p {
		if !math.IsNaN(v) {
			m++
		}
	}
	for i, v := range p {
		out[i] = math.Min(1, v*float64(m))
		if math.IsNaN(v) {
			out[i] = v
		}
	}
	return out
}

// BenjaminiHochberg returns the Benjamini–Hochberg false-discovery-rate
// adjusted p-values, as statsmodels' multipletests(method="fdr_bh"): with the
// m non-NaN p-values sorted ascending, the i-th (1-based) becomes
// min over j ≥ i of p_(j)·m/j, capped at 1. NaN entries stay NaN and do not
// count in m. The input is not modified.
func BenjaminiHochberg(p []float64) []float64 {
	out := make([]float64, len(p))
	idx := make([]int, 0, len(p))
	for i, v := range p {
		out[i] = v
		if !math.IsNaN(v) {
			idx = append(idx, i)
		}
	}
	sort.SliceStable(idx, func(a, b int) bool { return p[idx[a]] < p[idx[b]] })
	m := float64(len(idx))
	running := math.Inf(1)
	for r := len(idx) - 1; r >= 0; r-- {
		adj := p[idx[r]] * m / float64(r+1)
		running = math.Min(running, adj)
		out[idx[r]] = math.Min(1, running)
	}
	return out
}
