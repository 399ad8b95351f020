package agent

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/droverhq/drover/agent/store"
	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/internal/logging"
)

// TestStoreSpaceReportsInOrder has the store go low on space and recover
// again and again, quickly: the hub is told of each state in the order
// they came, and last of the one that stands (reports sent from a
// goroutine per change could arrive low after recovered).
func TestStoreSpaceReportsInOrder(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Sync(0); err != nil {
		t.Fatal(err)
	}
	var low atomic.Bool
	a := &Agent{store: st, logger: logging.Discard(), now: time.Now, spaceChanged: make(chan struct{}, 1),
		spaceNow: func() store.SpaceStatus { return store.SpaceStatus{Low: low.Load(), FreeBytes: 10, MinFreeBytes: 20} }}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go a.reportSpace(ctx)
	reported := func() []bool {
		pending, err := st.Pending(10_000, 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		var out []bool
		for _, r := range pending {
			if s := r.GetStoreSpace(); s != nil {
				out = append(out, s.GetLow())
			}
		}
		return out
	}
	flip := func(to bool) {
		low.Store(to)
		a.storeSpaceChanged(to, 10, 20)
	}
	last := func(want bool) {
		t.Helper()
		hubtest.WaitFor(t, 5*time.Second, func() error {
			if r := reported(); len(r) > 0 && r[len(r)-1] == want {
				return nil
			}
			return fmt.Errorf("reported %v", reported())
		})
	}
	for range 20 {
		flip(true)
		flip(false)
	}
	flip(true)
	last(true)
	flip(false)
	last(false)
	r := reported()
	for i := 1; i < len(r); i++ {
		if r[i] == r[i-1] {
			t.Fatalf("reported %v: the same state twice in a row", r)
		}
	}
}
