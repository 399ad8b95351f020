package drift

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"testing"
)

// The golden values in testdata/golden.json come from scipy 1.10.1
// (testdata/golden.py); no Python is needed to run these tests. Samples are
// regenerated here from the seeds stored there.

// tolerance is the relative error allowed against scipy: |got − want| ≤
// 1e-9·|want|. Exact zeros must match exactly.
const tolerance = 1e-9

func near(got, want float64) bool {
	if got == want {
		return true
	}
	return math.Abs(got-want) <= tolerance*math.Abs(want)
}

func check(t *testing.T, what string, got, want float64) {
	t.Helper()
	if !near(got, want) {
		t.Errorf("%s = %.17g, want %.17g (rel. error %.3g)", what, got, want, math.Abs(got-want)/math.Abs(want))
	}
}

// splitmix64 returns the i-th (1-based) output of splitmix64 seeded with
// seed; golden.py's uniforms() computes the same.
func splitmix64(seed, i uint64) uint64 {
	z := seed + i*0x9E3779B97F4A7C15
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

func uniform(seed, i uint64) float64 {
	return float64(splitmix64(seed, i)>>11) * 0x1p-53
}

type sampleSpec struct {
	Kind  string  `json:"kind"`
	Seed  uint64  `json:"seed"`
	N     int     `json:"n"`
	Loc   float64 `json:"loc"`
	Scale float64 `json:"scale"`
}

func (s sampleSpec) String() string {
	return fmt.Sprintf("%s(seed=%d,n=%d,loc=%g,scale=%g)", s.Kind, s.Seed, s.N, s.Loc, s.Scale)
}

// sample mirrors golden.py's sample(). float64(...) conversions keep the
// compiler from fusing a multiply and an add, which Python does not.
func sample(s sampleSpec) []float64 {
	scale := s.Scale
	out := make([]float64, s.N)
	for i := range out {
		var z float64
		switch s.Kind {
		case "normal":
			base := uint64(12 * i)
			z = uniform(s.Seed, base+1)
			for k := uint64(1); k < 12; k++ {
				z = z + uniform(s.Seed, base+k+1)
			}
			z = z - 6
		case "uniform":
			z = uniform(s.Seed, uint64(i)+1)
		case "ties":
			z = math.Floor(uniform(s.Seed, uint64(i)+1) * 10)
		default:
			panic("unknown sample kind " + s.Kind)
		}
		out[i] = s.Loc + float64(scale*z)
	}
	return out
}

func (s *sampleSpec) UnmarshalJSON(b []byte) error {
	type plain sampleSpec
	p := plain{Scale: 1}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*s = sampleSpec(p)
	return nil
}

type goldenKS struct {
	Statistic float64 `json:"statistic"`
	PValue    float64 `json:"p_value"`
	Method    string  `json:"method"`
}

type goldenChi2 struct {
	Statistic float64 `json:"statistic"`
	PValue    float64 `json:"p_value"`
	DOF       int     `json:"dof"`
}

type golden struct {
	Scipy string `json:"scipy"`
	KS    []struct {
		Ref         sampleSpec          `json:"ref"`
		Cur         sampleSpec          `json:"cur"`
		KS          map[string]goldenKS `json:"ks"`
		Wasserstein float64             `json:"wasserstein"`
		Std         float64             `json:"std"`
	} `json:"ks"`
	KSPValue []struct {
		N, M   int
		D      float64 `json:"d"`
		Mode   string  `json:"mode"`
		PValue float64 `json:"p_value"`
	} `json:"ks_pvalue"`
	KStwo []struct {
		N  int     `json:"n"`
		X  float64 `json:"x"`
		SF float64 `json:"sf"`
	} `json:"kstwo"`
	Smirnov []struct {
		N  int     `json:"n"`
		X  float64 `json:"x"`
		SF float64 `json:"sf"`
	} `json:"smirnov"`
	Counts []struct {
		Ref, Cur      []float64
		PSI           float64    `json:"psi"`
		JensenShannon float64    `json:"jensen_shannon"`
		Hellinger     float64    `json:"hellinger"`
		Chi2          goldenChi2 `json:"chi2"`
	} `json:"counts"`
	Bins []struct {
		Ref           sampleSpec `json:"ref"`
		Cur           sampleSpec `json:"cur"`
		Bins          int        `json:"bins"`
		Edges         []float64  `json:"edges"`
		RefCounts     []float64  `json:"ref_counts"`
		CurCounts     []float64  `json:"cur_counts"`
		PSI           float64    `json:"psi"`
		JensenShannon float64    `json:"jensen_shannon"`
		Hellinger     float64    `json:"hellinger"`
	} `json:"bins"`
	Categorical []struct {
		SeedRef       uint64     `json:"seed_ref"`
		SeedCur       uint64     `json:"seed_cur"`
		NRef          int        `json:"n_ref"`
		NCur          int        `json:"n_cur"`
		ThrRef        []float64  `json:"thr_ref"`
		ThrCur        []float64  `json:"thr_cur"`
		RefCounts     []float64  `json:"ref_counts"`
		CurCounts     []float64  `json:"cur_counts"`
		Chi2          goldenChi2 `json:"chi2"`
		PSI           float64    `json:"psi"`
		JensenShannon float64    `json:"jensen_shannon"`
		Hellinger     float64    `json:"hellinger"`
		Z             *ZResult   `json:"z"`
	} `json:"categorical"`
	ZTest []struct {
		RefPos    float64 `json:"ref_pos"`
		RefN      float64 `json:"ref_n"`
		CurPos    float64 `json:"cur_pos"`
		CurN      float64 `json:"cur_n"`
		Statistic float64 `json:"statistic"`
		PValue    float64 `json:"p_value"`
	} `json:"ztest"`
	Corrections []struct {
		P          []float64 `json:"p"`
		Bonferroni []float64 `json:"bonferroni"`
		FDRBH      []float64 `json:"fdr_bh"`
	} `json:"corrections"`
}

func loadGolden(t *testing.T) *golden {
	t.Helper()
	b, err := os.ReadFile("testdata/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if g.Scipy == "" || len(g.KS) == 0 {
		t.Fatal("golden.json is incomplete")
	}
	return &g
}

var modes = map[string]Mode{"auto": Auto, "exact": Exact, "asymp": Asymptotic}

func TestGoldenKS(t *testing.T) {
	g := loadGolden(t)
	for _, c := range g.KS {
		if testing.Short() && max(c.Ref.N, c.Cur.N) > 100000 {
			continue
		}
		t.Run(c.Ref.String()+"/"+c.Cur.String(), func(t *testing.T) {
			a, b := sample(c.Ref), sample(c.Cur)
			for name, want := range c.KS {
				got := KS(a, b, modes[name])
				check(t, name+" statistic", got.Statistic, want.Statistic)
				check(t, name+" p-value", got.PValue, want.PValue)
				if got.Method != want.Method {
					t.Errorf("%s method = %q, want %q", name, got.Method, want.Method)
				}
			}
			check(t, "wasserstein", Wasserstein(a, b), c.Wasserstein)
			check(t, "std", populationStd(sortedFinite(a)), c.Std)

			// Compare computes the same, from the same raw values.
			rep, err := Compare([]Column{{Name: "x", Numbers: a}}, []Column{{Name: "x", Numbers: b}}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			f := rep.Features[0]
			check(t, "Compare KS p-value", f.KS.PValue, c.KS["auto"].PValue)
			check(t, "Compare wasserstein_normed", *f.WassersteinNormed, c.Wasserstein/math.Max(c.Std, 0.001))
		})
	}
}

func TestGoldenKSPValue(t *testing.T) {
	g := loadGolden(t)
	for _, c := range g.KSPValue {
		p, method := KSPValue(c.D, c.N, c.M, modes[c.Mode])
		what := fmt.Sprintf("KSPValue(%v, %d, %d, %s)", c.D, c.N, c.M, c.Mode)
		check(t, what, p, c.PValue)
		if method != c.Mode {
			t.Errorf("%s method = %q", what, method)
		}
	}
}

func TestGoldenKolmogorov(t *testing.T) {
	g := loadGolden(t)
	for _, c := range g.KStwo {
		check(t, fmt.Sprintf("kstwo.sf(%v, %d)", c.X, c.N), kolmogorovSF(c.N, c.X), c.SF)
	}
	for _, c := range g.Smirnov {
		check(t, fmt.Sprintf("smirnov(%d, %v)", c.N, c.X), smirnovSF(c.N, c.X), c.SF)
	}
}

func TestGoldenCounts(t *testing.T) {
	g := loadGolden(t)
	for _, c := range g.Counts {
		what := fmt.Sprint(c.Ref, c.Cur)
		check(t, what+" PSI", PSI(c.Ref, c.Cur), c.PSI)
		check(t, what+" JensenShannon", JensenShannon(c.Ref, c.Cur), c.JensenShannon)
		check(t, what+" Hellinger", Hellinger(c.Ref, c.Cur), c.Hellinger)
		chi := Chi2Contingency(c.Ref, c.Cur)
		check(t, what+" chi2 statistic", chi.Statistic, c.Chi2.Statistic)
		check(t, what+" chi2 p-value", chi.PValue, c.Chi2.PValue)
		if chi.DOF != c.Chi2.DOF {
			t.Errorf("%s chi2 dof = %d, want %d", what, chi.DOF, c.Chi2.DOF)
		}
	}
}

func TestGoldenBins(t *testing.T) {
	g := loadGolden(t)
	for _, c := range g.Bins {
		a, b := sample(c.Ref), sample(c.Cur)
		what := c.Ref.String()
		edges := QuantileEdges(a, c.Bins)
		if len(edges) != len(c.Edges) {
			t.Fatalf("%s: edges %v, want %v", what, edges, c.Edges)
		}
		for i := range edges {
			check(t, fmt.Sprintf("%s edge %d", what, i), edges[i], c.Edges[i])
		}
		for _, side := range []struct {
			name string
			vals []float64
			want []float64
		}{{"ref", a, c.RefCounts}, {"cur", b, c.CurCounts}} {
			got := BinCounts(c.Edges, side.vals)
			fast := binCountsSorted(c.Edges, sortedFinite(side.vals))
			for i := range side.want {
				if got[i] != side.want[i] || fast[i] != side.want[i] {
					t.Errorf("%s %s counts = %v / %v, want %v", what, side.name, got, fast, side.want)
					break
				}
			}
		}
		check(t, what+" PSI", PSI(c.RefCounts, c.CurCounts), c.PSI)
		check(t, what+" JensenShannon", JensenShannon(c.RefCounts, c.CurCounts), c.JensenShannon)
		check(t, what+" Hellinger", Hellinger(c.RefCounts, c.CurCounts), c.Hellinger)
	}
}

// categorySample mirrors golden.py's categories(): category "c<i>" where i
// is the number of thresholds at or below a uniform.
func categorySample(seed uint64, n int, thr []float64) []string {
	out := make([]string, n)
	for i := range out {
		u := uniform(seed, uint64(i)+1)
		k := 0
		for _, th := range thr {
			if u >= th {
				k++
			}
		}
		out[i] = fmt.Sprintf("c%d", k)
	}
	return out
}

func TestGoldenCategorical(t *testing.T) {
	g := loadGolden(t)
	for _, c := range g.Categorical {
		ref := Column{Name: "cat", Categorical: true, Strings: categorySample(c.SeedRef, c.NRef, c.ThrRef)}
		cur := Column{Name: "cat", Categorical: true, Strings: categorySample(c.SeedCur, c.NCur, c.ThrCur)}
		rep, err := Compare([]Column{ref}, []Column{cur}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		f := rep.Features[0]
		what := fmt.Sprint(c.RefCounts, c.CurCounts)
		check(t, what+" chi2 statistic", f.Chi2.Statistic, c.Chi2.Statistic)
		check(t, what+" chi2 p-value", f.Chi2.PValue, c.Chi2.PValue)
		check(t, what+" PSI", *f.PSI, c.PSI)
		check(t, what+" JensenShannon", *f.JensenShannon, c.JensenShannon)
		check(t, what+" Hellinger", *f.Hellinger, c.Hellinger)
		if (c.Z != nil) != (f.Z != nil) {
			t.Fatalf("%s: z-test %v, want %v", what, f.Z, c.Z)
		}
		if c.Z != nil {
			if f.Type != TypeBinary {
				t.Errorf("%s: type %q, want binary", what, f.Type)
			}
			check(t, what+" z", f.Z.Statistic, c.Z.Statistic)
			check(t, what+" z p-value", f.Z.PValue, c.Z.PValue)
		}
	}
}

func TestGoldenZ(t *testing.T) {
	g := loadGolden(t)
	for _, c := range g.ZTest {
		z := TwoProportionZ(c.RefPos, c.RefN, c.CurPos, c.CurN)
		what := fmt.Sprint(c.RefPos, c.RefN, c.CurPos, c.CurN)
		check(t, what+" z", z.Statistic, c.Statistic)
		check(t, what+" p-value", z.PValue, c.PValue)
	}
}

func TestGoldenCorrections(t *testing.T) {
	g := loadGolden(t)
	for _, c := range g.Corrections {
		b, bh := Bonferroni(c.P), BenjaminiHochberg(c.P)
		for i := range c.P {
			check(t, fmt.Sprintf("%v bonferroni[%d]", c.P, i), b[i], c.Bonferroni[i])
			check(t, fmt.Sprintf("%v fdr_bh[%d]", c.P, i), bh[i], c.FDRBH[i])
		}
	}
}
