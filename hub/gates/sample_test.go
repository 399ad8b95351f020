package gates

import (
	"math"
	"reflect"
	"testing"
)

func ptr(v float64) *float64 { return &v }

func TestLatencyBucket(t *testing.T) {
	for _, s := range []float64{1e-7, 25e-6, 26e-6, 1e-4, 1e-3, 0.0119, 0.05, 0.2, 1, 3.5, 60, 1200} {
		// The agent's formula, verbatim.
		want := 0
		if s > 25e-6 {
			want = min(int(math.Ceil(4*math.Log2(s/25e-6))), 103)
		}
		b := LatencyBucket(s)
		if b != want {
			t.Errorf("LatencyBucket(%g) = %d, want %d", s, b, want)
		}
		if hi := LatencyUpper(b); b < LatencyBuckets-1 && hi < s {
			t.Errorf("%g s: bucket %d holds only up to %g", s, b, hi)
		}
		if b > 0 && b < LatencyBuckets-1 && LatencyUpper(b-1) >= s {
			t.Errorf("%g s: bucket %d, but %d holds up to %g", s, b, b-1, LatencyUpper(b-1))
		}
	}
	for s, want := range map[float64]int{-1: 0, math.NaN(): 0, math.Inf(1): 103, 1e9: 103} {
		if b := LatencyBucket(s); b != want {
			t.Errorf("LatencyBucket(%g) = %d, want %d", s, b, want)
		}
	}
	if LatencyUpper(0) != LatencyBase || LatencyUpper(4) != 2*LatencyBase || LatencyUpper(-3) != LatencyBase ||
		LatencyUpper(500) != LatencyUpper(LatencyBuckets-1) {
		t.Error("LatencyUpper's ends are wrong")
	}
}

func TestLatencyQuantile(t *testing.T) {
	s := Sample{Latency: map[int]uint64{40: 50, 44: 45, 48: 4, 60: 1}}
	for q, want := range map[float64]float64{
		0.5: LatencyUpper(40), 0.51: LatencyUpper(44), 0.95: LatencyUpper(44),
		0.96: LatencyUpper(48), 0.99: LatencyUpper(48), 1: LatencyUpper(60),
		0: LatencyUpper(40), -1: LatencyUpper(40), 7: LatencyUpper(60),
	} {
		if got := s.LatencyQuantile(q); got != want {
			t.Errorf("q %g: %g, want %g", q, got, want)
		}
	}
	if got := (Sample{}).LatencyQuantile(0.5); got != 0 {
		t.Errorf("empty histogram: %g, want 0", got)
	}
	if got := (Sample{Latency: map[int]uint64{3: 0}}).LatencyQuantile(0.5); got != 0 {
		t.Errorf("histogram of zero counts: %g, want 0", got)
	}
	if got := s.LatencyQuantile(math.NaN()); got != 0 {
		t.Errorf("NaN quantile: %g, want 0", got)
	}
	// Buckets out of range count as the nearest.
	odd := Sample{Latency: map[int]uint64{-5: 1, 200: 3}}
	if got := odd.LatencyQuantile(0.25); got != LatencyUpper(0) {
		t.Errorf("bucket -5: %g, want %g", got, LatencyUpper(0))
	}
	if got := odd.LatencyQuantile(0.5); got != LatencyUpper(LatencyBuckets-1) {
		t.Errorf("bucket 200: %g, want %g", got, LatencyUpper(LatencyBuckets-1))
	}
}

func TestSampleAdd(t *testing.T) {
	a := Sample{
		Requests: 100, Errors: 2, Latency: map[int]uint64{40: 90, 41: 8},
		DriftShare: ptr(0.2), FeatureDrift: map[string]float64{"tenure": 0.1, "plan": 0.5},
		Accuracy: ptr(0.9), AccuracyRows: 10, LogLoss: ptr(0.3),
		GPUUnhealthy: 1, Agents: 3,
	}
	b := Sample{
		Requests: 300, Errors: 6, Latency: map[int]uint64{41: 2, 50: 290},
		DriftShare: ptr(0.6), FeatureDrift: map[string]float64{"tenure": 0.5, "age": 0.7},
		Accuracy: ptr(0.5), AccuracyRows: 30,
		Agents: 5, ShadowAgreement: ptr(0.99), ShadowRows: 50,
	}
	bBefore := b
	bBefore.Latency = map[int]uint64{41: 2, 50: 290}
	bBefore.FeatureDrift = map[string]float64{"tenure": 0.5, "age": 0.7}
	a.Add(b)
	want := Sample{
		Requests: 400, Errors: 8, Latency: map[int]uint64{40: 90, 41: 10, 50: 290},
		DriftShare: ptr(0.5), FeatureDrift: map[string]float64{"tenure": 0.4, "plan": 0.5, "age": 0.7},
		Accuracy: ptr(0.6), AccuracyRows: 40, LogLoss: ptr(0.3),
		GPUUnhealthy: 1, Agents: 8, ShadowAgreement: ptr(0.99), ShadowRows: 50,
	}
	approx := func(name string, got, want *float64) {
		if (got == nil) != (want == nil) || got != nil && math.Abs(*got-*want) > 1e-12 {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	approx("DriftShare", a.DriftShare, want.DriftShare)
	approx("Accuracy", a.Accuracy, want.Accuracy)
	approx("LogLoss", a.LogLoss, want.LogLoss)
	approx("ShadowAgreement", a.ShadowAgreement, want.ShadowAgreement)
	for f, v := range want.FeatureDrift {
		if math.Abs(a.FeatureDrift[f]-v) > 1e-12 {
			t.Errorf("FeatureDrift[%s] = %g, want %g", f, a.FeatureDrift[f], v)
		}
	}
	a.DriftShare, a.Accuracy, a.LogLoss, a.ShadowAgreement, a.FeatureDrift = nil, nil, nil, nil, nil
	want.DriftShare, want.Accuracy, want.LogLoss, want.ShadowAgreement, want.FeatureDrift = nil, nil, nil, nil, nil
	if !reflect.DeepEqual(a, want) {
		t.Errorf("counts: %+v, want %+v", a, want)
	}

	// A merge into an empty sample copies, sharing nothing with b.
	var c Sample
	c.Add(b)
	c.Latency[50]++
	c.FeatureDrift["age"] = 9
	*c.ShadowAgreement = 0
	*c.Accuracy = 0
	if !reflect.DeepEqual(b, bBefore) || *b.ShadowAgreement != 0.99 || *b.Accuracy != 0.5 {
		t.Errorf("changing a merge changed what was added: %+v", b)
	}
}

func TestSampleAddZeroWeights(t *testing.T) {
	s := Sample{Accuracy: ptr(0.8)}
	s.Add(Sample{Accuracy: ptr(0.6)})
	if s.Accuracy == nil || math.Abs(*s.Accuracy-0.7) > 1e-12 {
		t.Errorf("accuracy without rows on either side: %v, want their mean 0.7", s.Accuracy)
	}
	s = Sample{}
	s.Add(Sample{})
	if s.Accuracy != nil || s.DriftShare != nil || s.Latency != nil || s.FeatureDrift != nil {
		t.Errorf("adding empty samples made %+v", s)
	}
}
