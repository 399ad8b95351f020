package store

import (
	"fmt"
	"sync/atomic"
	"syscall"

	"github.com/dgraph-io/badger/v4"
)

// ErrNoSpace is returned for a write refused because the file system under
// the store has less than Options.MinFreeBytes free. It matches
// syscall.ENOSPC with errors.Is.
var ErrNoSpace = fmt.Errorf("store: the file system under it is nearly full: %w", syscall.ENOSPC)

// space keeps the store off the last of its file system's space.
//
// Badger writes its memtables, value log and tables through memory-mapped
// files that it extends sparsely: the blocks behind a page are allocated
// when the page is first written, and when the file system has none left
// the write kills the process with SIGBUS instead of returning an error.
// So the store never lets Badger near the last of the space: every write
// first asks the file system how much is free and is refused with
// ErrNoSpace below a reserve, which covers what Badger may still allocate
// for writes already made (a memtable flushed to a table, a compaction).
// Writes resume by themselves once space is freed.
//
// This protects against a disk that fills at the pace of logs and
// downloads. A writer that takes the last reserve in the instant between
// the check and Badger's write can still crash the agent; keep the data
// directory on a file system of its own (or under a quota) where that
// matters.
type space struct {
	dir     string
	min     uint64
	free    func(dir string) (uint64, error)
	low     atomic.Bool
	last    atomic.Uint64 // bytes free at the last check
	refused atomic.Uint64
	// changed, if set, is called when the store goes low on space or
	// recovers, with the bytes free and the reserve.
	changed func(low bool, free, min uint64)
}

// FreeBytes returns the bytes free to an unprivileged writer on dir's
// file system.
func FreeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// probe asks the file system how much is free and reports whether that is
// below the reserve. A file system whose free space cannot be told is
// assumed to have room.
func (sp *space) probe() (low bool) {
	if sp.min == 0 {
		return false
	}
	free, err := sp.free(sp.dir)
	if err != nil {
		return false
	}
	sp.last.Store(free)
	low = free < sp.min
	if sp.low.Swap(low) != low && sp.changed != nil {
		sp.changed(low, free, sp.min)
	}
	return low
}

// check returns ErrNoSpace, and counts the refusal, when less than the
// reserve is free.
func (sp *space) check() error {
	if sp.probe() {
		sp.refused.Add(1)
		return ErrNoSpace
	}
	return nil
}

// update runs fn in a read-write transaction, unless the file system is
// nearly full.
func (s *Store) update(fn func(txn *badger.Txn) error) error {
	if err := s.space.check(); err != nil {
		return err
	}
	return s.db.Update(fn)
}

// SpaceStatus describes the space under the store.
type SpaceStatus struct {
	// Low is true while writes are refused for want of space.
	Low bool
	// FreeBytes is what is free now.
	FreeBytes uint64
	// MinFreeBytes is the reserve below which writes are refused.
	MinFreeBytes uint64
	// Refused counts writes refused for want of space, ever.
	Refused uint64
	// HeldReports counts reports waiting in memory for space.
	HeldReports int
}

// Space checks the free space now and returns where the store stands.
func (s *Store) Space() SpaceStatus {
	low := s.space.probe()
	free := s.space.last.Load()
	if s.space.min == 0 { // no reserve: probe does not look
		free, _ = s.space.free(s.space.dir)
	}
	s.mu.Lock()
	held := len(s.held)
	s.mu.Unlock()
	return SpaceStatus{
		Low: low, FreeBytes: free, MinFreeBytes: s.space.min,
		Refused: s.space.refused.Load(), HeldReports: held,
	}
}
