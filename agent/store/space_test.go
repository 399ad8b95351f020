package store

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/droverhq/drover/internal/logging"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// disk is a file system whose free space the test sets.
type disk struct {
	free    atomic.Uint64
	mu      sync.Mutex
	changes []string
}

func newDisk(free uint64) *disk {
	d := &disk{}
	d.free.Store(free)
	return d
}

func (d *disk) open(t testing.TB, dir string, o Options) (*Store, error) {
	t.Helper()
	o.MinFreeBytes = 1000
	o.freeBytes = func(string) (uint64, error) { return d.free.Load(), nil }
	o.OnSpace = func(low bool, free, _ uint64) {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.changes = append(d.changes, fmt.Sprintf("low=%v free=%d", low, free))
	}
	s, err := Open(dir, o, logging.Discard())
	if err == nil {
		err = s.Sync(0)
	}
	return s, err
}

func seqsOf(rs []*droverv1.Report) []uint64 {
	var out []uint64
	for _, r := range rs {
		out = append(out, r.GetSeq())
	}
	return out
}

// With the file system nearly full, the store refuses writes with an error
// that says so and holds reports in memory, offered for delivery after
// those on disk; once space is freed, what is still held is written.
func TestNearlyFullDiskHoldsReports(t *testing.T) {
	d := newDisk(1 << 30)
	dir := t.TempDir()
	s, err := d.open(t, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Append(t0, event("before")); err != nil {
		t.Fatal(err)
	}

	d.free.Store(999)
	<-s.Changed()
	if err := s.Append(t0, event("held-1"), event("held-2")); err != nil {
		t.Fatalf("Append with the disk full: %v, want the reports held", err)
	}
	select {
	case <-s.Changed(): // the sender wakes for held reports too
	default:
		t.Error("holding reports did not signal Changed")
	}
	if got := s.Depth(); got != 3 {
		t.Errorf("Depth = %d, want 3 (one on disk, two held)", got)
	}
	if got := s.Space(); !got.Low || got.HeldReports != 2 || got.FreeBytes != 999 || got.MinFreeBytes != 1000 {
		t.Errorf("Space = %+v", got)
	}
	pending, err := s.Pending(100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqsOf(pending)) != "[1 2 3]" {
		t.Errorf("pending with the disk full: %v, want [1 2 3]", seqsOf(pending))
	}
	// Everything else is refused, with ENOSPC, and changes nothing.
	for name, write := range map[string]func() error{
		"Put":               func() error { return s.Put("k", []byte("v")) },
		"AppendAndPut":      func() error { return s.AppendAndPut(t0, "marker", []byte("v"), event("with marker")) },
		"PutArtifact":       func() error { return s.PutArtifact(&Artifact{Digest: "sha256:00"}) },
		"SetDesired":        func() error { return s.SetDesired(&droverv1.DesiredState{}) },
		"PutPredictions":    func() error { return s.PutPredictions("m", map[string][]byte{"r1": []byte("p")}, 0) },
		"DeletePredictions": func() error { return s.DeletePredictions("m", []string{"r1"}) },
		"Journal.Append": func() error {
			j, err := s.Journal("samples/m", 10)
			if err != nil {
				return err
			}
			_, err = j.Append([]byte("rec"))
			return err
		},
	} {
		if err := write(); !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("%s with the disk full: %v, want ErrNoSpace", name, err)
		}
	}
	if _, err := s.Get("marker"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the refused AppendAndPut left its marker: %v", err)
	}
	if got := s.NextSeq(); got != 4 {
		t.Errorf("NextSeq = %d, want 4: the refused AppendAndPut took a number", got)
	}
	// The hub acknowledges reports 1 and 2: 1 cannot be deleted yet, but
	// neither is offered again, and 2 needs no writing.
	if err := s.Ack(2); err != nil {
		t.Fatalf("Ack with the disk full: %v", err)
	}
	if pending, _ := s.Pending(100, 1<<20); fmt.Sprint(seqsOf(pending)) != "[3]" {
		t.Errorf("pending after the ack: %v, want [3]", seqsOf(pending))
	}

	d.free.Store(1 << 30)
	pending, err = s.Pending(100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqsOf(pending)) != "[3]" {
		t.Fatalf("pending once space is freed: %v, want [3]", seqsOf(pending))
	}
	if err := s.Append(t0, event("after")); err != nil {
		t.Fatal(err)
	}
	if got := s.Space(); got.Low || got.HeldReports != 0 || got.Refused < 7 {
		t.Errorf("Space once freed = %+v, want not low, none held, at least 7 writes refused", got)
	}
	d.mu.Lock()
	if fmt.Sprint(d.changes) != "[low=true free=999 low=false free=1073741824]" {
		t.Errorf("OnSpace calls: %v", d.changes)
	}
	d.mu.Unlock()

	// All of it is on disk, in order, the acknowledged reports gone.
	s.Close()
	s, err = d.open(t, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pending, _ = s.Pending(100, 1<<20)
	if fmt.Sprint(seqsOf(pending)) != "[3 4]" || s.NextSeq() != 5 {
		t.Errorf("after reopening: pending %v, next %d; want [3 4], 5", seqsOf(pending), s.NextSeq())
	}
}

// Reports held in memory and delivered die with the process, and their
// numbers are used again after the restart; Sync, told how far the hub
// got, renumbers the new reports above it so that the hub takes them.
func TestSyncRenumbersAfterLostHeldReports(t *testing.T) {
	d := newDisk(1 << 30)
	dir := t.TempDir()
	s, err := d.open(t, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Append(t0, event("a"), event("b"))
	d.free.Store(0)
	_ = s.Append(t0, event("c"), event("d"))
	pending, _ := s.Pending(100, 1<<20)
	if fmt.Sprint(seqsOf(pending)) != "[1 2 3 4]" {
		t.Fatalf("pending: %v", seqsOf(pending))
	}
	// The hub takes all four; the agent dies before it hears so.
	_ = s.db.Close()

	d.free.Store(1 << 30)
	s, err = Open(dir, Options{MinFreeBytes: 1000, freeBytes: func(string) (uint64, error) { return d.free.Load(), nil }}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(t0, event("e")); err != nil {
		t.Fatal(err)
	}
	if pending, _ := s.Pending(100, 1<<20); len(pending) != 0 {
		t.Fatalf("offered before Sync: %v", seqsOf(pending))
	}
	if err := s.Sync(4); err != nil {
		t.Fatal(err)
	}
	pending, _ = s.Pending(100, 1<<20)
	if fmt.Sprint(seqsOf(pending)) != "[5]" || pending[0].GetEvent().GetMessage() != "e" || s.NextSeq() != 6 {
		t.Fatalf("after Sync(4): pending %v, next %d; want e as 5, next 6", seqsOf(pending), s.NextSeq())
	}
	// The renumbering is on disk; a second start with the hub where it was
	// changes nothing.
	_ = s.Close()
	s, err = d.open(t, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Sync(4); err != nil {
		t.Fatal(err)
	}
	pending, _ = s.Pending(100, 1<<20)
	if fmt.Sprint(seqsOf(pending)) != "[5]" || s.NextSeq() != 6 {
		t.Fatalf("after a second start: pending %v, next %d", seqsOf(pending), s.NextSeq())
	}
}

// Held reports are bounded: the oldest go first, and the loss is reported
// once there is room, after the held reports that survived.
func TestHeldReportsBound(t *testing.T) {
	d := newDisk(1 << 30)
	s, err := d.open(t, t.TempDir(), Options{MaxHeldReports: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d.free.Store(0)
	for i := range 5 {
		if err := s.Append(t0, event(fmt.Sprint("held-", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.TakeLosses(t0); !errors.Is(err, ErrNoSpace) {
		t.Errorf("TakeLosses with the disk full: %v, want ErrNoSpace", err)
	}
	d.free.Store(1 << 30)
	if err := s.TakeLosses(t0); err != nil {
		t.Fatal(err)
	}
	pending, err := s.Pending(100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqsOf(pending)) != "[3 4 5 6]" {
		t.Fatalf("pending: %v, want the three newest held, then the loss", seqsOf(pending))
	}
	if got := pending[3].GetDropped(); got.GetDropped() != 2 {
		t.Errorf("loss report %v, want 2 dropped", got)
	}
	if err := s.TakeLosses(t0); err != nil {
		t.Fatal(err)
	}
	if got := s.NextSeq(); got != 7 {
		t.Errorf("a second TakeLosses reported the loss again: next %d", got)
	}
}

// A store does not open on a nearly full file system: Badger writes as it
// opens. One closed with the disk full is left as a crash would leave it,
// and loses nothing that was written.
func TestOpenAndCloseOnANearlyFullDisk(t *testing.T) {
	d := newDisk(999)
	dir := t.TempDir()
	if _, err := d.open(t, dir, Options{}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Open on a full disk: %v, want ENOSPC", err)
	}
	if len(d.changes) != 0 {
		t.Errorf("a store that did not open called OnSpace: %v", d.changes)
	}
	d.free.Store(1 << 30)
	s, err := d.open(t, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(t0, event("kept")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	d.free.Store(0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The process would exit here; the test lets the file lock go by
	// closing for real, without a flush of its own.
	_ = s.db.Close()
	d.free.Store(1 << 30)
	s, err = d.open(t, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := s.Get("k"); err != nil || string(v) != "v" {
		t.Errorf("Get after reopening: %q, %v", v, err)
	}
	if pending, _ := s.Pending(10, 1<<20); fmt.Sprint(seqsOf(pending)) != "[1]" {
		t.Errorf("pending after reopening: %v", seqsOf(pending))
	}
}
