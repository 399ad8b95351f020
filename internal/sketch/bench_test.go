package sketch

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/drift"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// BenchmarkUpdate measures the per-value hot path: one numeric feature's
// summary (Welford, bin search, range check, sketch), and one categorical
// feature's counts.
func BenchmarkUpdate(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	xs := make([]float64, 1<<16)
	for i := range xs {
		xs[i] = r.NormFloat64()
	}
	b.Run("numeric", func(b *testing.B) {
		n, err := NumericAgainst(testProfile.GetFeatures()[0].GetNumeric(), NewSeeded(DefaultK, 1))
		if err != nil {
			b.Fatal(err)
		}
		i := 0
		for b.Loop() {
			n.Add(xs[i&(len(xs)-1)])
			i++
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "values/s")
	})
	b.Run("categorical", func(b *testing.B) {
		c := CategoricalAgainst(testProfile.GetFeatures()[1].GetCategorical())
		i := 0
		for b.Loop() {
			c.Add(categories[i%len(categories)])
			i++
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "values/s")
	})
	b.Run("window-row", func(b *testing.B) {
		w := newWindow(b, 1)
		rows := make([]row, 1024)
		s := newStream(2, 0, baseShares)
		for i := range rows {
			s.next(&rows[i])
		}
		i := 0
		for b.Loop() {
			w.Observe(&rows[i&1023])
			i++
		}
		b.ReportMetric(float64(b.N)*4/b.Elapsed().Seconds(), "values/s")
	})
}

// profile20 returns a reference profile of 20 numeric features and a
// window of 10,000 rows against it.
func profile20(b *testing.B) (*droverv1.ReferenceProfile, *Window) {
	r := rand.New(rand.NewPCG(5, 5))
	cols := make([]drift.Column, 20)
	for i := range cols {
		cols[i] = drift.Column{Name: fmt.Sprintf("f%02d", i), Numbers: make([]float64, 50_000)}
		for j := range cols[i].Numbers {
			cols[i].Numbers[j] = r.NormFloat64()
		}
	}
	prof, err := BuildProfile(cols, DefaultBins)
	if err != nil {
		b.Fatal(err)
	}
	w, err := NewWindow(prof, "m", 1, t0, time.Minute, WithSeed(1))
	if err != nil {
		b.Fatal(err)
	}
	for i := range cols {
		for range 10_000 {
			w.ObserveNumber(i, 0.1+r.NormFloat64())
		}
	}
	w.AddRows(10_000)
	return prof, w
}

// BenchmarkMerge merges two windows of 20 numeric features.
func BenchmarkMerge(b *testing.B) {
	prof, w := profile20(b)
	o, err := WindowFromProto(w.ToProto(), prof)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		m := w.clone()
		if err := m.Merge(o); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEvaluate20 evaluates a window of 20 numeric features against
// its reference, preparing the reference each time (Evaluate) and once
// (Reference.Evaluate, as the hub and the agent do).
func BenchmarkEvaluate20(b *testing.B) {
	prof, w := profile20(b)
	p := w.ToProto()
	b.Run("unprepared", func(b *testing.B) {
		for b.Loop() {
			Evaluate(prof, p, drift.Options{})
		}
	})
	b.Run("prepared", func(b *testing.B) {
		ref := NewReference(prof)
		for b.Loop() {
			ref.Evaluate(p, drift.Options{})
		}
	})
}
