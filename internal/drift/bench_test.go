package drift

import (
	"fmt"
	"testing"
)

// benchColumns generates features × rows normal-ish values per side, the
// current side shifted a little on every other feature.
func benchColumns(features, rows int) (ref, cur []Column) {
	for f := range features {
		name := fmt.Sprintf("f%02d", f)
		shift := 0.0
		if f%2 == 1 {
			shift = 0.01
		}
		ref = append(ref, Column{Name: name, Numbers: sample(sampleSpec{Kind: "normal", Seed: uint64(1000 + 2*f), N: rows, Scale: 1})})
		cur = append(cur, Column{Name: name, Numbers: sample(sampleSpec{Kind: "normal", Seed: uint64(1001 + 2*f), N: rows, Loc: shift, Scale: 1})})
	}
	return ref, cur
}

// BenchmarkCompare20x1M is Compare on 20 numeric features of 1,000,000
// reference and 1,000,000 current rows: KS (asymptotic), normalised
// Wasserstein, PSI, Jensen–Shannon and Hellinger on quantile bins.
// testdata/bench_scipy.py times the same in scipy.
func BenchmarkCompare20x1M(b *testing.B) {
	ref, cur := benchColumns(20, 1000000)
	b.ResetTimer()
	for b.Loop() {
		if _, err := Compare(ref, cur, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
