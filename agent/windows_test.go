package agent

import (
	"math"
	"testing"
	"time"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/agent/store"
	"github.com/droverhq/drover/internal/logging"
)

func TestLatencyBuckets(t *testing.T) {
	for _, s := range []float64{1e-6, 25e-6, 26e-6, 1e-3, 0.5, 3, 1e6} {
		b := latencyBucket(s)
		if hi := latencyUpper(b); b < latencyBuckets-1 && (hi < s || hi > math.Max(s, latencyBase)*1.19) {
			t.Errorf("%g s: bucket %d up to %g", s, b, hi)
		}
		if b > 0 && b < latencyBuckets-1 && latencyUpper(b-1) >= s {
			t.Errorf("%g s: bucket %d, but %d holds up to %g", s, b, b-1, latencyUpper(b-1))
		}
	}
}

// TestMetricWindows counts requests into minute windows, closes them as
// the minute passes, stores them, and reads them back with their
// percentiles.
func TestMetricWindows(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m := newMetricWindows(st, 3, 0, logging.Discard())
	now := time.Date(2026, 11, 27, 10, 0, 5, 0, time.UTC)
	m.now = func() time.Time { return now }
	obs := func(version string, status int, d time.Duration) {
		m.observe(oip.Observation{Model: "churn", Version: version, Status: status, Rows: 2, Duration: d})
	}
	// 100 answered requests at 1..100 ms, 5 refused, 2 failed.
	for i := 1; i <= 100; i++ {
		obs("3", 200, time.Duration(i)*time.Millisecond)
	}
	for range 5 {
		obs("", 400, time.Millisecond)
	}
	obs("3", 503, time.Millisecond)
	obs("3", 500, time.Millisecond)
	obs("nope", 404, time.Millisecond) // not counted: no such model

	cur := m.Current()
	if len(cur) != 2 {
		t.Fatalf("%d current windows, want 2 (v3 and refused requests)", len(cur))
	}
	now = now.Add(time.Minute) // the minute passes
	obs("3", 200, time.Millisecond)
	m.flush()

	ws, err := m.Windows("churn", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 2 {
		t.Fatalf("%d stored windows, want 2", len(ws))
	}
	var v3 *Window
	for _, w := range ws {
		if w.Version == "3" {
			v3 = w
		} else if w.Requests != 5 || w.ClientErrors != 5 {
			t.Errorf("refused requests' window: %+v", w)
		}
	}
	if v3 == nil || v3.Requests != 102 || v3.Rows != 200 || v3.ServerErrors != 2 || v3.ClientErrors != 0 || !v3.Start.Equal(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("v3's window: %+v", v3)
	}
	if r := v3.ErrorRate(); math.Abs(r-2.0/102) > 1e-12 {
		t.Errorf("error rate %g", r)
	}
	for _, c := range []struct{ got, want float64 }{{v3.P50, 0.050}, {v3.P95, 0.095}, {v3.P99, 0.099}} {
		if c.got < c.want || c.got > c.want*1.19 {
			t.Errorf("percentile %g s, want within 19%% above %g s", c.got, c.want)
		}
	}
	// Windows merge by adding counts: two agents' windows are one.
	merged := &Window{}
	merged.Merge(v3)
	merged.Merge(v3)
	if merged.Requests != 204 || merged.P50 != v3.P50 || merged.P99 != v3.P99 {
		t.Errorf("merged: %+v", merged)
	}

	// The journal keeps the newest three windows per model.
	for range 4 {
		now = now.Add(time.Minute)
		obs("3", 200, time.Millisecond)
		m.flush()
	}
	ws, _ = m.Windows("churn", 10)
	if len(ws) != 3 || !ws[2].Start.Equal(now.Add(-time.Minute).Truncate(time.Minute)) {
		t.Errorf("kept %d windows, the newest from %v", len(ws), ws[len(ws)-1].Start)
	}
}
