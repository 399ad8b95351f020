package churn

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"slices"
	"strconv"
	"testing"
)

func TestGenerateIsDeterministic(t *testing.T) {
	a := Generate(Options{Rows: 500, Seed: 7, Drift: 0.3})
	b := Generate(Options{Rows: 500, Seed: 7, Drift: 0.3})
	if !slices.Equal(a, b) {
		t.Fatal("the same options gave different customers")
	}
	if c := Generate(Options{Rows: 500, Seed: 8, Drift: 0.3}); slices.Equal(a, c) {
		t.Fatal("different seeds gave the same customers")
	}
	if Generate(Options{}) != nil {
		t.Fatal("zero rows gave customers")
	}
}

// TestRealism checks the bundled splits' columns against their documented
// ranges and categories, and the churn rate against a realistic one.
func TestRealism(t *testing.T) {
	features := Features()
	for name, data := range map[string][]byte{"train": TrainCSV(), "test": TestCSV()} {
		records, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(records[0], Header()) {
			t.Fatalf("%s: header %v, want %v", name, records[0], Header())
		}
		churned := 0
		for i, rec := range records[1:] {
			line := i + 2
			if rec[0] != fmt.Sprintf("C%06d", i+1) {
				t.Errorf("%s line %d: customer_id %s", name, line, rec[0])
			}
			for j, f := range features {
				v := rec[j+1]
				if f.Categorical {
					if !slices.Contains(f.Categories, v) {
						t.Errorf("%s line %d: %s %q is not one of %v", name, line, f.Name, v, f.Categories)
					}
					continue
				}
				x, err := strconv.ParseFloat(v, 64)
				switch {
				case err != nil:
					t.Errorf("%s line %d: %s: %v", name, line, f.Name, err)
				case x < f.Min || (f.Max != 0 && x > f.Max):
					t.Errorf("%s line %d: %s %g is outside [%g, %g]", name, line, f.Name, x, f.Min, f.Max)
				case f.Integer && x != float64(int(x)):
					t.Errorf("%s line %d: %s %g is not whole", name, line, f.Name, x)
				}
			}
			switch rec[len(rec)-1] {
			case "yes":
				churned++
			case "no":
			default:
				t.Errorf("%s line %d: churn %q", name, line, rec[len(rec)-1])
			}
		}
		rate := float64(churned) / float64(len(records)-1)
		t.Logf("%s: %d rows, churn rate %.3f", name, len(records)-1, rate)
		if rate < 0.20 || rate > 0.32 {
			t.Errorf("%s: churn rate %.3f, want about 0.25", name, rate)
		}
	}
}

// TestPopulation checks the documented shape of the population on a large
// sample: total charges follow tenure × monthly charges, and drift makes
// customers riskier.
func TestPopulation(t *testing.T) {
	summary := func(d float64) (churn, monthToMonth, monthly, calls float64) {
		cs := Generate(Options{Rows: 20000, Seed: 3, Drift: d})
		for _, c := range cs {
			if c.Churn {
				churn++
			}
			if c.Contract == MonthToMonth {
				monthToMonth++
			}
			monthly += c.MonthlyCharges
			calls += float64(c.SupportCalls)
			if want := float64(c.TenureMonths) * c.MonthlyCharges; c.TotalCharges < 0.7*want || c.TotalCharges > 1.3*want {
				t.Fatalf("%s: total charges %.2f for %d months at %.2f", c.ID, c.TotalCharges, c.TenureMonths, c.MonthlyCharges)
			}
		}
		n := float64(len(cs))
		return churn / n, monthToMonth / n, monthly / n, calls / n
	}
	c0, m0, p0, s0 := summary(0)
	c1, m1, p1, s1 := summary(1)
	t.Logf("drift 0: churn %.3f, month-to-month %.3f, monthly $%.2f, calls %.2f", c0, m0, p0, s0)
	t.Logf("drift 1: churn %.3f, month-to-month %.3f, monthly $%.2f, calls %.2f", c1, m1, p1, s1)
	if c0 < 0.22 || c0 > 0.30 {
		t.Errorf("reference churn rate %.3f, want about 0.26", c0)
	}
	if c1 < c0+0.1 || m1 < m0+0.1 || p1 < p0+5 || s1 < s0+0.5 {
		t.Error("drift 1 did not shift the population as documented")
	}
}
