package state

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/internal/drift"
	"github.com/droverhq/drover/internal/sketch"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// testProfile is a serialised one-feature reference profile around mean.
func testProfile(t *testing.T, mean float64) []byte {
	t.Helper()
	r := rand.New(rand.NewPCG(1, uint64(mean*1000)))
	col := drift.Column{Name: "x", Numbers: make([]float64, 5000)}
	for i := range col.Numbers {
		col.Numbers[i] = mean + r.NormFloat64()
	}
	p, err := sketch.BuildProfile([]drift.Column{col}, sketch.DefaultBins)
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReferencesCache(t *testing.T) {
	var c references
	raw := testProfile(t, 0)
	mv := &droverv1.ModelVersion{Model: "m", Version: 1, ReferenceProfile: raw}

	r1, err := c.get(mv)
	if err != nil || r1 == nil {
		t.Fatalf("get: %v, %v", r1, err)
	}
	if r2, _ := c.get(mv); r2 != r1 {
		t.Error("the same row was prepared twice")
	}
	// A replaced row (new bytes, even equal ones) is prepared afresh.
	if r3, _ := c.get(&droverv1.ModelVersion{Model: "m", Version: 1, ReferenceProfile: slices.Clone(raw)}); r3 == r1 || r3 == nil {
		t.Error("a replaced row's stale reference was returned")
	}
	if r, err := c.get(&droverv1.ModelVersion{Model: "m", Version: 2}); r != nil || err != nil {
		t.Errorf("a version without a profile: %v, %v", r, err)
	}
	if _, err := c.get(&droverv1.ModelVersion{Model: "m", Version: 3, ReferenceProfile: []byte{0xff, 0xff}}); err == nil {
		t.Error("an unreadable profile was accepted")
	}
	// A restore's transaction has no cache and still prepares.
	var none *references
	if r, err := none.get(mv); r == nil || err != nil {
		t.Errorf("without a cache: %v, %v", r, err)
	}
}

func TestReferencesCacheBound(t *testing.T) {
	var c references
	raw := testProfile(t, 0)
	first := &droverv1.ModelVersion{Model: "m", Version: 1, ReferenceProfile: raw}
	r1, _ := c.get(first)
	for v := range uint64(maxCachedReferences) {
		c.get(&droverv1.ModelVersion{Model: "m", Version: 100 + v, ReferenceProfile: raw})
	}
	if c.lru.Len() != maxCachedReferences || len(c.entries) != maxCachedReferences {
		t.Fatalf("%d entries, %d in the map, want %d", c.lru.Len(), len(c.entries), maxCachedReferences)
	}
	if r, _ := c.get(first); r == r1 {
		t.Error("the least recently used entry was not evicted")
	}
}

// TestReferencesConcurrent judges windows from many goroutines against
// one cached reference; run with -race.
func TestReferencesConcurrent(t *testing.T) {
	var c references
	mv := &droverv1.ModelVersion{Model: "m", Version: 1, ReferenceProfile: testProfile(t, 0)}
	ref, err := c.get(mv)
	if err != nil {
		t.Fatal(err)
	}
	w, err := sketch.NewWindow(ref.Profile(), "m", 1, time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(2, 2))
	for range 2000 {
		w.ObserveNumber(0, 3+r.NormFloat64())
	}
	w.AddRows(2000)
	cur := w.ToProto()
	want := sketch.Evaluate(ref.Profile(), cur, drift.Options{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 3 {
				r, _ := c.get(mv)
				if got := r.Evaluate(cur, drift.Options{}); !reflect.DeepEqual(got, want) {
					t.Errorf("concurrent evaluation differs:\n%+v\n%+v", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}
