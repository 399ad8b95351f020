package reconcile

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/droverhq/drover/internal/logging"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// fakeArtifacts is an in-memory cache whose fetches can fail or block.
type fakeArtifacts struct {
	mu        sync.Mutex
	have      map[string]bool
	fetches   map[string]int
	failFetch int            // fail this many fetches first
	corrupt   map[string]int // fail Verify this many times for a digest
	block     chan struct{}  // if set, fetches wait on it
}

func newArtifacts() *fakeArtifacts {
	return &fakeArtifacts{have: map[string]bool{}, fetches: map[string]int{}, corrupt: map[string]int{}}
}

func (f *fakeArtifacts) Has(ref *droverv1.BlobRef) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.have[ref.GetDigest()]
}

func (f *fakeArtifacts) Fetch(ctx context.Context, ref *droverv1.BlobRef) (string, error) {
	f.mu.Lock()
	if f.have[ref.GetDigest()] {
		f.mu.Unlock()
		return "/cache/" + ref.GetDigest(), nil
	}
	f.fetches[ref.GetDigest()]++
	block := f.block
	if f.failFetch > 0 {
		f.failFetch--
		f.mu.Unlock()
		return "", errors.New("hub unreachable")
	}
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	time.Sleep(100 * time.Millisecond) // a download takes time
	f.mu.Lock()
	f.have[ref.GetDigest()] = true
	f.mu.Unlock()
	return "/cache/" + ref.GetDigest(), nil
}

func (f *fakeArtifacts) Verify(ref *droverv1.BlobRef) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.corrupt[ref.GetDigest()] > 0 {
		f.corrupt[ref.GetDigest()]--
		delete(f.have, ref.GetDigest())
		return errors.New("artifact does not match its digest")
	}
	return nil
}

// fakeRuntime records loads and unloads. While failUnload is set, an
// unload forgets the version, waits for failUnload to close, and fails.
type fakeRuntime struct {
	mu         sync.Mutex
	loaded     map[Key]uint64
	weights    map[Key]uint32
	unloadErr  error // every unload fails with it
	log        []string
	failUnload chan struct{}
}

func (r *fakeRuntime) Load(_ context.Context, a *droverv1.DesiredAssignment, _ string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := Key{a.GetModel(), a.GetRole()}
	r.log = append(r.log, fmt.Sprintf("load %s v%d", k, a.GetVersion()))
	if r.loaded == nil {
		r.loaded = map[Key]uint64{}
	}
	r.loaded[k] = a.GetVersion()
	if r.weights == nil {
		r.weights = map[Key]uint32{}
	}
	r.weights[k] = a.GetWeight()
	return nil
}

func (r *fakeRuntime) Unload(_ context.Context, k Key, v uint64) error {
	r.mu.Lock()
	r.log = append(r.log, fmt.Sprintf("unload %s v%d", k, v))
	if r.loaded[k] == v {
		delete(r.loaded, k)
	}
	fail := r.failUnload
	r.failUnload = nil
	if err := r.unloadErr; err != nil {
		r.mu.Unlock()
		return err
	}
	r.mu.Unlock()
	if fail != nil {
		<-fail
		return errors.New("runner gone")
	}
	return nil
}

// Retune makes fakeRuntime a Retuner: it logs weights that change.
func (r *fakeRuntime) Retune(k Key, a *droverv1.DesiredAssignment) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.weights == nil {
		r.weights = map[Key]uint32{}
	}
	if r.weights[k] != a.GetWeight() {
		r.weights[k] = a.GetWeight()
		r.log = append(r.log, fmt.Sprintf("weight %s v%d %d", k, a.GetVersion(), a.GetWeight()))
	}
}

func (r *fakeRuntime) history() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.log...)
}

func (r *fakeRuntime) loadedNow() map[Key]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.loaded)
}

func (f *fakeArtifacts) fetchCount(digest string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fetches[digest]
}

type recorder struct {
	mu       sync.Mutex
	statuses []Status
}

func (r *recorder) report(s Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statuses = append(r.statuses, s)
}

func (r *recorder) phases() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.statuses {
		out = append(out, fmt.Sprintf("v%d:%s", s.Version, strings.ToLower(strings.TrimPrefix(s.Phase.String(), "ASSIGNMENT_PHASE_"))))
	}
	return strings.Join(out, " ")
}

func desired(versions ...uint64) *droverv1.DesiredState {
	d := &droverv1.DesiredState{}
	for _, v := range versions {
		d.Assignments = append(d.Assignments, &droverv1.DesiredAssignment{
			Model: "churn", Version: v, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY,
			Artifact: &droverv1.BlobRef{Digest: fmt.Sprintf("sha256:%064d", v), SizeBytes: 100},
		})
	}
	return d
}

// harness runs a reconciler inside a synctest bubble.
func harness(t *testing.T, arts *fakeArtifacts) (*Reconciler, *fakeRuntime, *recorder, context.CancelFunc) {
	rt := &fakeRuntime{}
	rec := &recorder{}
	r := New(arts, rt, rec.report, logging.Discard(), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	go r.Run(ctx)
	return r, rt, rec, cancel
}

func TestConvergeAndReplace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arts := newArtifacts()
		r, rt, rec, stop := harness(t, arts)
		defer stop()
		r.SetDesired(desired(1))
		time.Sleep(time.Second)
		if !r.Converged() || rec.phases() != "v1:pending v1:downloading v1:loading v1:ready" {
			t.Fatalf("converged %v, phases %s", r.Converged(), rec.phases())
		}
		// A new version: loaded first, then the old one let go.
		r.SetDesired(desired(2))
		time.Sleep(time.Second)
		if !r.Converged() || strings.Join(rt.history(), ", ") != "load churn/primary v1, load churn/primary v2, unload churn/primary v1" {
			t.Fatalf("runtime log: %v", rt.history())
		}
		// Each status says which version served meanwhile: v1 until v2
		// was ready.
		var serving []string
		rec.mu.Lock()
		for _, s := range rec.statuses {
			serving = append(serving, fmt.Sprintf("v%d:%d", s.Version, s.Serving))
		}
		rec.mu.Unlock()
		if got := strings.Join(serving, " "); got != "v1:0 v1:0 v1:0 v1:1 v2:1 v2:1 v2:1 v2:2" {
			t.Fatalf("serving versions: %s", got)
		}
		// Going back to v1 needs no download: it is cached.
		r.SetDesired(desired(1))
		time.Sleep(time.Second)
		if arts.fetchCount(desired(1).Assignments[0].GetArtifact().GetDigest()) != 1 {
			t.Fatalf("v1 fetched %d times", arts.fetchCount(desired(1).Assignments[0].GetArtifact().GetDigest()))
		}
		// Nothing desired: unloaded and reported removed.
		r.SetDesired(desired())
		time.Sleep(time.Second)
		if len(rt.loadedNow()) != 0 || !strings.HasSuffix(rec.phases(), "v1:removed") {
			t.Fatalf("after removal: loaded %v, phases %s", rt.loadedNow(), rec.phases())
		}
	})
}

func TestRetryWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arts := newArtifacts()
		arts.failFetch = 3
		r, _, rec, stop := harness(t, arts)
		defer stop()
		start := time.Now()
		r.SetDesired(desired(7))
		for !r.Converged() {
			time.Sleep(100 * time.Millisecond)
		}
		took := time.Since(start)
		// Three failures wait 1 s, 2 s and 4 s before the fourth try.
		if took < 7*time.Second || took > 8*time.Second {
			t.Fatalf("converged after %v, want about 7 s of back-off", took)
		}
		var attempts []int
		for _, s := range rec.statuses {
			if s.Phase == droverv1.AssignmentPhase_ASSIGNMENT_PHASE_FAILED {
				attempts = append(attempts, s.Attempts)
				if !strings.Contains(s.Message, "hub unreachable") {
					t.Fatalf("failure message %q", s.Message)
				}
			}
		}
		if fmt.Sprint(attempts) != "[1 2 3]" {
			t.Fatalf("failed attempts reported: %v", attempts)
		}
	})
}

func TestCorruptArtifactIsRefetched(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arts := newArtifacts()
		d := desired(3)
		arts.corrupt[d.Assignments[0].GetArtifact().GetDigest()] = 1
		r, rt, rec, stop := harness(t, arts)
		defer stop()
		r.SetDesired(d)
		time.Sleep(5 * time.Second)
		if !r.Converged() || arts.fetchCount(d.Assignments[0].GetArtifact().GetDigest()) != 2 {
			t.Fatalf("converged %v after %d fetches; phases %s", r.Converged(), arts.fetchCount(d.Assignments[0].GetArtifact().GetDigest()), rec.phases())
		}
		if !strings.Contains(rec.phases(), "v3:failed") || len(rt.history()) != 1 {
			t.Fatalf("the corrupt artifact was loaded or not reported: %v / %s", rt.history(), rec.phases())
		}
	})
}

func TestSupersededDownload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arts := newArtifacts()
		arts.block = make(chan struct{}) // v1's download never finishes
		r, rt, _, stop := harness(t, arts)
		defer stop()
		r.SetDesired(desired(1))
		time.Sleep(time.Second)
		arts.mu.Lock()
		arts.block = nil
		arts.mu.Unlock()
		r.SetDesired(desired(2))
		time.Sleep(time.Second)
		if !r.Converged() || strings.Join(rt.history(), ",") != "load churn/primary v2" {
			t.Fatalf("converged %v, runtime %v", r.Converged(), rt.history())
		}
	})
}

// TestBackBeforeReplaced wants v2 and then v1 again while v2 is still
// downloading: v1, which never stopped serving, is reported ready again
// without being loaded a second time (the runtime would replace it with
// itself), and nothing is unloaded.
func TestBackBeforeReplaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arts := newArtifacts()
		r, rt, rec, stop := harness(t, arts)
		defer stop()
		r.SetDesired(desired(1))
		time.Sleep(time.Second)
		arts.mu.Lock()
		arts.block = make(chan struct{}) // v2's download waits
		arts.mu.Unlock()
		r.SetDesired(desired(2))
		time.Sleep(time.Second)
		r.SetDesired(desired(1))
		time.Sleep(time.Second)
		if !r.Converged() || strings.Join(rt.history(), ", ") != "load churn/primary v1" {
			t.Fatalf("converged %v, runtime log: %v", r.Converged(), rt.history())
		}
		if !strings.HasSuffix(rec.phases(), "v2:pending v2:downloading v1:ready") {
			t.Fatalf("phases %s", rec.phases())
		}
	})
}

// TestReloadAfterFailedUnload loads a version again when it is wanted back
// while its unload fails: the runtime may hold it no longer.
func TestReloadAfterFailedUnload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arts := newArtifacts()
		r, rt, _, stop := harness(t, arts)
		defer stop()
		r.SetDesired(desired(1))
		time.Sleep(time.Second)
		fail := make(chan struct{})
		rt.mu.Lock()
		rt.failUnload = fail
		rt.mu.Unlock()
		r.SetDesired(desired())
		synctest.Wait() // the unload waits
		r.SetDesired(desired(1))
		close(fail)
		time.Sleep(5 * time.Second)
		if !r.Converged() || strings.Join(rt.history(), ", ") != "load churn/primary v1, unload churn/primary v1, load churn/primary v1" {
			t.Fatalf("converged %v, runtime log: %v", r.Converged(), rt.history())
		}
	})
}

// TestWeightChangeRetunes changes the weight of a ready canary's
// assignment, as a rollout's next step does: the runtime is told, and the
// version is not loaded again.
func TestWeightChangeRetunes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arts := newArtifacts()
		r, rt, _, stop := harness(t, arts)
		defer stop()
		d := desired(2)
		d.Assignments[0].Role, d.Assignments[0].Weight = droverv1.AssignmentRole_ASSIGNMENT_ROLE_CANARY, 10
		r.SetDesired(d)
		time.Sleep(time.Second)
		d = desired(2)
		d.Assignments[0].Role, d.Assignments[0].Weight = droverv1.AssignmentRole_ASSIGNMENT_ROLE_CANARY, 50
		r.SetDesired(d)
		time.Sleep(time.Second)
		if got := strings.Join(rt.history(), ", "); !strings.HasSuffix(got, "load churn/canary v2, weight churn/canary v2 50") {
			t.Fatalf("runtime log: %s", got)
		}
	})
}

// TestFailingUnloadBacksOff: an unload that keeps failing is retried with
// back-off, not in a loop.
func TestFailingUnloadBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arts := newArtifacts()
		r, rt, _, stop := harness(t, arts)
		defer stop()
		r.SetDesired(desired(1))
		time.Sleep(time.Second)
		rt.mu.Lock()
		rt.unloadErr = errors.New("runner wedged")
		rt.mu.Unlock()
		r.SetDesired(desired())
		time.Sleep(10 * time.Second)
		n := 0
		for _, h := range rt.history() {
			if strings.HasPrefix(h, "unload") {
				n++
			}
		}
		if n < 2 || n > 6 {
			t.Fatalf("%d unloads in 10 s of failing", n)
		}
	})
}
