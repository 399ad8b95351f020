package drift

import "math"

// This file computes the survival function of the one-sample, two-sided
// Kolmogorov–Smirnov statistic D_n for finite n, following the algorithm
// selection of Simard & L'Ecuyer (2011) exactly as scipy 1.10's
// scipy.stats.kstwo does (scipy/stats/_ksstats.py), so that the asymptotic
// two-sample p-value matches scipy.stats.ks_2samp(method="asymp"):
//
//   - Ruben–Gambino closed forms near the ends of the support;
//   - 2·smirnov(n, x) (the one-sided Birnbaum–Tingey sum) for x ≥ 1/2 and
//     for the upper tail;
//   - the Durbin matrix method as improved by Marsaglia, Tsang & Wang (2003)
//     for small n·x²;
//   - the Pomeranz (1974) recursion for n ≤ 140 and moderate n·x²;
//   - the Pelz–Good (1976) asymptotic series for large n.

const (
	// scale2p128 and scale2m128 rescale intermediate results that would
	// otherwise overflow or underflow.
	scale2p128 = 0x1p128
	scale2m128 = 0x1p-128
	// minLog is cephes' MINLOG: exp of anything smaller underflows.
	minLog = -7.08396418532264106224e2
	// smirnovMaxComputeN is the n above which smirnov uses an approximation,
	// as cephes does.
	smirnovMaxComputeN = 1000000
)

// kolmogorovSF returns Pr(D_n > x) for the one-sample, two-sided
// Kolmogorov–Smirnov statistic D_n of a sample of size n ≥ 1.
func kolmogorovSF(n int, x float64) float64 {
	switch {
	case math.IsNaN(x) || n < 1:
		return math.NaN()
	case x >= 1:
		return 0
	case x <= 0:
		return 1
	}
	fn := float64(n)
	t := fn * x
	if t <= 1 { // Ruben–Gambino: 1/(2n) ≤ x ≤ 1/n.
		if t <= 0.5 {
			return 1
		}
		var cdf float64
		if n <= 140 {
			cdf = 1
			for i := 1; i <= n; i++ {
				cdf *= float64(i) * (1.0 / fn) * (2*t - 1)
			}
		} else {
			cdf = math.Exp(logFactorialOverPower(fn) + fn*math.Log(2*t-1))
		}
		return clip01(1 - cdf)
	}
	if t >= fn-1 { // Ruben–Gambino.
		return clip01(2 * math.Pow(1-x, fn))
	}
	if x >= 0.5 {
		return clip01(2 * smirnovSF(n, x))
	}
	nxx := t * x
	if n <= 140 {
		switch {
		case nxx <= 0.754693:
			return clip01(1 - durbinMTW(n, x))
		case nxx <= 4:
			return clip01(1 - pomeranz(n, x))
		default:
			return clip01(2 * smirnovSF(n, x))
		}
	}
	if nxx >= 370 {
		return 0
	}
	if nxx >= 2.2 {
		return clip01(2 * smirnovSF(n, x))
	}
	var cdf float64
	if n <= 100000 && fn*math.Pow(x, 1.5) <= 1.4 {
		cdf = durbinMTW(n, x)
	} else {
		cdf = pelzGood(n, x)
	}
	return clip01(1 - cdf)
}

func clip01(p float64) float64 {
	switch {
	case p < 0:
		return 0
	case p > 1:
		return 1
	}
	return p
}

// stirlingCoeffs are B_{2j}/(2j)/(2j-1) for j = 8, …, 1 (B the Bernoulli
// numbers), highest power first.
var stirlingCoeffs = [...]float64{
	-2.955065359477124183e-2, 6.4102564102564102564e-3,
	-1.9175269175269175269e-3, 8.4175084175084175084e-4,
	-5.952380952380952381e-4, 7.9365079365079365079e-4,
	-2.7777777777777777778e-3, 8.3333333333333333333e-2,
}

// logFactorialOverPower returns log(n!/n^n) by Stirling's series, with the
// n·log(n) terms cancelled analytically.
func logFactorialOverPower(n float64) float64 {
	rn := 1 / n
	y := rn / n
	poly := 0.0
	for _, c := range stirlingCoeffs {
		poly = poly*y + c
	}
	return math.Log(n)/2 - n + math.Log(2*math.Pi)/2 + rn*poly
}

// durbinMTW returns Pr(D_n ≤ d) by Durbin's matrix method in the form of
// Marsaglia, Tsang & Wang (2003): the k-th diagonal element of H^n, scaled by
// n!/n^n, with d = (k−h)/n.
func durbinMTW(n int, d float64) float64 {
	if d >= 1 {
		return 1
	}
	fn := float64(n)
	nd := fn * d
	if nd <= 0.5 {
		return 0
	}
	k := int(math.Ceil(nd))
	h := float64(k) - nd
	m := 2*k - 1

	// v[j] = (1 − h^(j+1)) / (j+1)!, w[j] = 1/j!.
	v := make([]float64, m)
	w := make([]float64, m)
	fac := 1.0
	for j := 1; j <= m; j++ {
		v[j-1] = 1 - math.Pow(h, float64(j))
		w[j-1] = fac
		fac /= float64(j)
		v[j-1] *= fac
	}
	tt := math.Pow(math.Max(2*h-1, 0), float64(m)) - 2*math.Pow(h, float64(m))
	v[m-1] = (1 + tt) * fac

	H := newSquare(m)
	for i := 1; i < m; i++ {
		for r := i - 1; r < m; r++ {
			H[r][i] = w[r-i+1]
		}
	}
	for r := 0; r < m; r++ {
		H[r][0] = v[r]
	}
	for c := 0; c < m; c++ {
		H[m-1][c] = v[m-1-c]
	}

	pw := newSquare(m)
	for i := range pw {
		pw[i][i] = 1
	}
	tmp := newSquare(m)
	expnt, hExpnt := 0, 0
	for nn := n; nn > 0; nn /= 2 {
		if nn%2 == 1 {
			matMul(tmp, pw, H)
			pw, tmp = tmp, pw
			expnt += hExpnt
		}
		matMul(tmp, H, H)
		H, tmp = tmp, H
		hExpnt *= 2
		if math.Abs(H[k-1][k-1]) > scale2p128 {
			for _, row := range H {
				for c := range row {
					row[c] /= scale2p128
				}
			}
			hExpnt += 128
		}
	}
	p := pw[k-1][k-1]
	for i := 1; i <= n; i++ {
		p = float64(i) * p / fn
		if math.Abs(p) < scale2m128 {
			p *= scale2p128
			expnt -= 128
		}
	}
	if expnt != 0 {
		p = math.Ldexp(p, expnt)
	}
	return clip01(p)
}

func newSquare(m int) [][]float64 {
	back := make([]float64, m*m)
	rows := make([][]float64, m)
	for i := range rows {
		rows[i] = back[i*m : (i+1)*m]
	}
	return rows
}

// matMul sets dst = a·b; dst must not alias a or b.
func matMul(dst, a, b [][]float64) {
	for i, row := range dst {
		clear(row)
		for k, aik := range a[i] {
			if aik == 0 {
				continue
			}
			for j, bkj := range b[k] {
				row[j] += aik * bkj
			}
		}
	}
}

// pomeranzBounds returns the first and last non-zero entries of row i of
// the Pomeranz recursion.
func pomeranzBounds(i, n, ll, ceilf, roundf int) (int, int) {
	var j1, j2 int
	if i == 0 {
		j1, j2 = -ll-ceilf-1, ll+ceilf-1
	} else {
		half, odd := (i+1)/2, (i+1)%2
		switch {
		case odd == 0 && half == n+1:
			j1, j2 = n-ll-ceilf-1, n+ll+ceilf-1
		case odd == 0:
			j1, j2 = half-1-ll-roundf-1, half+ll-1+ceilf-1
		default:
			j1, j2 = half-1-ll-1, half+ll+roundf-1
		}
	}
	return max(j1+2, 0), min(j2, n)
}

// pomeranz returns Pr(D_n ≤ x) by the Pomeranz (1974) recursion: each of
// 2n+1 rows is the convolution of the previous one with (unnormalised)
// Poisson probabilities; only a band of each row is non-zero.
func pomeranz(n int, x float64) float64 {
	fn := float64(n)
	t := fn * x
	ll := int(math.Floor(t))
	f := t - float64(ll)
	g := math.Min(f, 1-f)
	ceilf, roundf := 0, 0
	if f > 0 {
		ceilf = 1
	}
	if f > 0.5 {
		roundf = 1
	}
	npw := 2 * (ll + 1)
	gp := make([]float64, npw)   // (g/n)^m/m!
	g2p := make([]float64, npw)  // (2g/n)^m/m!
	g12p := make([]float64, npw) // ((1−2g)/n)^m/m!
	gp[0], g2p[0], g12p[0] = 1, 1, 1
	a, b, c := g/fn, 2*g/fn, (1-2*g)/fn
	for m := 1; m < npw; m++ {
		gp[m] = gp[m-1] * a / float64(m)
		g2p[m] = g2p[m-1] * b / float64(m)
		g12p[m] = g12p[m-1] * c / float64(m)
	}

	v0 := make([]float64, npw)
	v1 := make([]float64, npw)
	conv := make([]float64, 2*npw)
	v1[0] = 1
	v0s, v1s := 0, 0
	expnt := 0
	j1, j2 := pomeranzBounds(0, n, ll, ceilf, roundf)
	for i := 1; i < 2*n+2; i++ {
		k1 := j1
		v0, v1 = v1, v0
		v0s, v1s = v1s, v0s
		clear(v1)
		j1, j2 = pomeranzBounds(i, n, ll, ceilf, roundf)
		pw := g12p
		switch {
		case i == 1 || i == 2*n+1:
			pw = gp
		case i%2 == 1:
			pw = g2p
		}
		ln2 := j2 - k1 + 1
		if ln2 <= 0 {
			continue
		}
		// conv = full convolution of v0[k1−v0s:][:ln2] with pw[:ln2].
		src := window(v0, k1-v0s, ln2)
		ker := pw[:min(ln2, len(pw))]
		clen := len(src) + len(ker) - 1
		if clen > len(conv) {
			conv = make([]float64, clen)
		}
		clear(conv[:max(clen, 0)])
		for p, sv := range src {
			for q, kv := range ker {
				conv[p+q] += sv * kv
			}
		}
		start, cnt := j1-k1, j2-j1+1
		peak := 0.0
		for q := 0; q < cnt && q < len(v1); q++ {
			if s := start + q; s >= 0 && s < clen {
				v1[q] = conv[s]
			}
			peak = math.Max(peak, v1[q])
		}
		if peak > 0 && peak < scale2m128 {
			for q := range v1 {
				v1[q] *= scale2p128
			}
			expnt -= 128
		}
		v1s = v0s + j1 - k1
	}
	ans := 0.0
	if idx := n - v1s; idx >= 0 && idx < len(v1) {
		ans = v1[idx]
	}
	for m := 1; m <= n; m++ {
		if math.Abs(ans) > scale2p128 {
			ans *= scale2m128
			expnt += 128
		}
		ans *= float64(m)
	}
	if expnt != 0 {
		ans = math.Ldexp(ans, expnt)
	}
	return clip01(ans)
}

// window returns s[from:from+n], clipped to s's bounds.
func window(s []float64, from, n int) []float64 {
	if from < 0 {
		from = 0
	}
	if from > len(s) {
		return nil
	}
	return s[from:min(from+n, len(s))]
}

// pelzGood returns the Pelz–Good (1976) approximation of Pr(D_n ≤ x): the
// Li-Chien/Korolyuk expansion K0 + K1/√n + K2/n + K3/n^1.5 with each term
// rewritten through Jacobi theta functions for small z = x√n.
func pelzGood(n int, x float64) float64 {
	if x <= 0 {
		return 0
	}
	if x >= 1 {
		return 1
	}
	fn := float64(n)
	z := math.Sqrt(fn) * x
	z2 := z * z
	z3, z4, z6 := z2*z, z2*z2, z2*z2*z2
	pi2 := math.Pi * math.Pi
	pi4, pi6 := pi2*pi2, pi2*pi2*pi2

	qlog := -pi2 / 8 / z2
	if qlog < -708 {
		return 0
	}
	q := math.Exp(qlog)

	k1a, k1b := -z2, pi2/4
	k2a := 6*z6 + 2*z4
	k2b := (2*z4 - 5*z2) * pi2 / 4
	k2c := pi4 * (1 - 2*z2) / 16
	k3d := pi6 * (5 - 30*z2) / 64
	k3c := pi4 * (-60*z2 + 212*z4) / 16
	k3b := pi2 * (135*z4 - 96*z6) / 4
	k3a := -30*z6 - 90*z6*z2

	// Horner evaluation of Σ c_k q^((2k−1)²) over odd integers.
	var K [4]float64
	maxk := int(math.Ceil(16 * z / math.Pi))
	for k := maxk; k > 0; k-- {
		m := float64(2*k - 1)
		m2 := m * m
		m4, m6 := m2*m2, m2*m2*m2
		qp := math.Pow(q, float64(8*k))
		coef := [4]float64{
			1,
			k1a + k1b*m2,
			k2a + k2b*m2 + k2c*m4,
			k3a + k3b*m2 + k3c*m4 + k3d*m6,
		}
		for i := range K {
			K[i] = K[i]*qp + coef[i]
		}
	}
	sqrt2pi := math.Sqrt(2 * math.Pi)
	den := [4]float64{z, 6 * z4, 72 * z6 * z, 6480 * z6 * z4}
	for i := range K {
		K[i] = K[i] * q * sqrt2pi / den[i]
	}

	// The sums over all integers k in K2 and K3.
	q = math.Exp(-pi2 / 2 / z2)
	sqrt3z := math.Sqrt(3) * z
	var s2, s3 float64
	for k := maxk; k > 0; k-- {
		kk := float64(k)
		k2 := kk * kk
		qk := math.Pow(q, k2)
		kpi := math.Pi * kk
		s2 += k2 * qk
		s3 += (sqrt3z + kpi) * (sqrt3z - kpi) * k2 * qk
	}
	K[2] += s2 * pi2 * sqrt2pi / (-36 * z3)
	K[3] += s3 * pi2 * sqrt2pi / (216 * z6)
	sum := 0.0
	for i := range K {
		sum += K[i] / math.Pow(fn, float64(i)/2)
	}
	return sum
}

// smirnovSF returns Pr(D⁺_n > x) for the one-sided Kolmogorov–Smirnov
// statistic, by the Birnbaum–Tingey sum (as cephes' smirnov, which scipy
// uses). Terms are computed in logarithms with the binomial coefficient
// carried as a mantissa and a binary exponent, which keeps the relative
// error near 1e-12 for n up to a million.
func smirnovSF(n int, x float64) float64 {
	switch {
	case n < 1 || math.IsNaN(x) || x < 0 || x > 1:
		return math.NaN()
	case n == 1:
		return 1 - x
	case x == 0:
		return 1
	case x == 1:
		return 0
	}
	fn := float64(n)
	// floor(n·x) and its remainder alpha, exactly.
	nx := fn * x
	fl := math.Floor(nx)
	alpha := math.FMA(fn, x, -fl)
	if alpha < 0 {
		fl--
		alpha++
	}
	if alpha >= 1 {
		fl++
		alpha = 0
	}
	nxfl := int(fl)
	n1mxfl := n - nxfl
	if alpha != 0 {
		n1mxfl--
	}
	n1mxceil := n - nxfl
	if alpha == 0 {
		n1mxfl--
		n1mxceil++
	}

	if nxfl == 0 || (nxfl == 1 && alpha == 0) { // x ≤ 1/n
		cdf := x * math.Pow(1+x, fn-1)
		return clip01(1 - cdf)
	}
	if -2*fn*x*x < minLog {
		return 0
	}
	if nxfl >= n-1 { // x ≥ 1 − 1/n
		return clip01(math.Pow(1-x, fn))
	}
	if n > smirnovMaxComputeN {
		logp := -math.Pow(6*fn*x+1, 2) / 18 / fn
		if logp < -math.Ln2 {
			return clip01(math.Exp(logp))
		}
		return clip01(1 + math.Expm1(logp))
	}

	nUpper := n - n1mxceil + 1
	upper := (nUpper <= 1 && x < 0.5) ||
		(n >= 10 && nUpper <= 3 && x <= 0.5/math.Sqrt(fn))

	// term(v) = C(n,v) (x + v/n)^(v−1) (1 − x − v/n)^(n−v), with its sign.
	// binomial coefficients are passed as log values.
	term := func(v int, logC float64) float64 {
		a := (float64(nxfl+v) + alpha) / fn   // x + v/n
		b := (float64(n-nxfl-v) - alpha) / fn // 1 − x − v/n
		sign := 1.0
		if b < 0 && (n-v)%2 == 1 {
			sign = -1
		}
		if b == 0 {
			if n == v {
				return sign * math.Exp(logC+float64(v-1)*math.Log(a))
			}
			return 0
		}
		l := logC + float64(v-1)*math.Log(a) + float64(n-v)*math.Log(math.Abs(b))
		return sign * math.Exp(l)
	}

	if upper {
		// cdf = x · Σ_{v=n}^{n1mxceil} term(v).
		sum := 0.0
		cman, cexp := 1.0, 0
		for j := 0; j < nUpper; j++ {
			v := n - j
			sum += term(v, math.Log(cman)+float64(cexp)*math.Ln2)
			var e int
			cman, e = math.Frexp(cman * float64(n-j) / float64(j+1))
			cexp += e
		}
		return clip01(1 - x*sum)
	}

	// sf = x · Σ_{v=0}^{n1mxfl} term(v); all terms are positive.
	nTerms := n1mxfl + 1
	sum := 0.0
	cman, cexp := 1.0, 0
	for v := 0; v < nTerms; v++ {
		tv := term(v, math.Log(cman)+float64(cexp)*math.Ln2)
		sum += tv
		if tv > 0 && v != nTerms-1 && 4*float64(nTerms-v)*tv < epsilon*sum {
			break
		}
		if tv == 0 && v > n/2 {
			break
		}
		var e int
		cman, e = math.Frexp(cman * float64(n-v) / float64(v+1))
		cexp += e
	}
	return clip01(x * sum)
}

// epsilon is the spacing of float64 values at 1.
const epsilon = 0x1p-52
