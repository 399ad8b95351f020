package gates

import (
	"encoding/json"
	"math"
	"os"
	"testing"
)

// golden is testdata/golden.json, written by testdata/golden.py from scipy.
type golden struct {
	Generator   string `json:"generator"`
	MannWhitney []struct {
		Name     string         `json:"name"`
		Canary   map[int]uint64 `json:"canary"`
		Baseline map[int]uint64 `json:"baseline"`
		U        float64        `json:"u"`
		P        float64        `json:"p"`
	} `json:"mann_whitney"`
	TwoProportion []struct {
		Name string  `json:"name"`
		K1   float64 `json:"k1"`
		N1   float64 `json:"n1"`
		K2   float64 `json:"k2"`
		N2   float64 `json:"n2"`
		Z    float64 `json:"z"`
		P    float64 `json:"p"`
	} `json:"two_proportion"`
}

func readGolden(t *testing.T) golden {
	t.Helper()
	b, err := os.ReadFile("testdata/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.MannWhitney) == 0 || len(g.TwoProportion) == 0 {
		t.Fatal("golden.json holds no cases")
	}
	return g
}

// close reports whether got is within 1e-9 of want, absolutely, and, for
// values far from zero, relatively.
func close(got, want float64) bool {
	return math.Abs(got-want) <= 1e-9*math.Max(1, math.Abs(want))
}

func TestMannWhitneyMatchesScipy(t *testing.T) {
	g := readGolden(t)
	for _, c := range g.MannWhitney {
		x := Sample{Latency: c.Canary}.histogram()
		y := Sample{Latency: c.Baseline}.histogram()
		r, ok := mannWhitneyGreater(x[:], y[:])
		if !ok {
			t.Errorf("%s: not computed", c.Name)
			continue
		}
		if !close(r.stat, c.U) || !close(r.p, c.P) {
			t.Errorf("%s: U = %.12g, p = %.12g; scipy: U = %.12g, p = %.12g", c.Name, r.stat, r.p, c.U, c.P)
		}
		// Tiny p-values agree relatively too, not only to 1e-9.
		if c.P > 0 && c.P < 1e-6 && math.Abs(r.p-c.P) > 1e-6*c.P {
			t.Errorf("%s: p = %.12g, scipy %.12g", c.Name, r.p, c.P)
		}
	}
}

func TestTwoProportionMatchesFormula(t *testing.T) {
	g := readGolden(t)
	for _, c := range g.TwoProportion {
		r, ok := twoProportionGreater(c.K1, c.N1, c.K2, c.N2)
		if !ok {
			t.Errorf("%s: not computed", c.Name)
			continue
		}
		if !close(r.z, c.Z) || !close(r.p, c.P) {
			t.Errorf("%s: z = %.12g, p = %.12g; golden: z = %.12g, p = %.12g", c.Name, r.z, r.p, c.Z, c.P)
		}
		if c.P > 0 && c.P < 1e-6 && math.Abs(r.p-c.P) > 1e-6*c.P {
			t.Errorf("%s: p = %.12g, golden %.12g", c.Name, r.p, c.P)
		}
	}
}

func TestStatisticalTestsDegenerate(t *testing.T) {
	if _, ok := mannWhitneyGreater([]float64{0, 0}, []float64{1, 2}); ok {
		t.Error("Mann–Whitney with an empty canary computed")
	}
	if _, ok := mannWhitneyGreater([]float64{1, 2}, []float64{0, 0}); ok {
		t.Error("Mann–Whitney with an empty baseline computed")
	}
	if r, ok := mannWhitneyGreater([]float64{0, 5}, []float64{0, 9}); !ok || r.p != 1 || !math.IsNaN(r.z) {
		t.Errorf("all tied: %+v, %v; want p = 1, z NaN", r, ok)
	}
	if _, ok := twoProportionGreater(0, 0, 1, 10); ok {
		t.Error("two-proportion with no canary requests computed")
	}
	for _, c := range [][4]float64{{0, 10, 0, 20}, {10, 10, 20, 20}} {
		if r, ok := twoProportionGreater(c[0], c[1], c[2], c[3]); !ok || r.p != 1 || !math.IsNaN(r.z) {
			t.Errorf("%v: %+v, %v; want p = 1, z NaN", c, r, ok)
		}
	}
}
