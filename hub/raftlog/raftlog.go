// Package raftlog is the hub's durable Raft log and stable store: one
// Badger database with every write synced before it returns, implementing
// raft.LogStore and raft.StableStore.
//
// Keys are "l" + the big-endian index for log entries, so that they sort by
// index, and "s" + the key for the stable store. The first and last indexes
// are kept in memory and recomputed on open. Truncations delete in an order
// that leaves the log contiguous if a crash interrupts them: the head from
// the oldest entry up, the tail from the newest down.
package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"github.com/droverhq/drover/internal/kvstore"
)

var (
	logPrefix    = []byte("l")
	stablePrefix = []byte("s")
)

// ErrKeyNotFound is returned by Get and GetUint64 for a key never set.
// (raft only checks for a nil value or zero; it is exported for tests.)
var ErrKeyNotFound = errors.New("not found")

// deleteChunk is how many entries one truncation transaction deletes.
const deleteChunk = 1000

// Store is a raft.LogStore and raft.StableStore on Badger.
type Store struct {
	db *badger.DB

	mu          sync.RWMutex
	first, last uint64
}

var (
	_ raft.LogStore    = (*Store)(nil)
	_ raft.StableStore = (*Store)(nil)
)

// Open opens (creating if needed) the store in dir.
func Open(dir string, logger *slog.Logger) (*Store, error) {
	db, err := kvstore.Open(dir, kvstore.Options{}, logger)
	if err != nil {
		return nil, err
	}
	s := &Store{db: db}
	if err := s.loadBounds(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// DB returns the underlying database, for garbage collection.
func (s *Store) DB() *badger.DB { return s.db }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func logKey(index uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), logPrefix...), index)
}

func (s *Store) loadBounds() error {
	return s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = logPrefix
		it := txn.NewIterator(opts)
		it.Rewind()
		if it.Valid() {
			s.first = binary.BigEndian.Uint64(it.Item().Key()[len(logPrefix):])
		}
		it.Close()
		opts.Reverse = true
		it = txn.NewIterator(opts)
		defer it.Close()
		// Seek past the largest possible log key.
		it.Seek(append(append([]byte(nil), logPrefix...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
		if it.Valid() {
			s.last = binary.BigEndian.Uint64(it.Item().Key()[len(logPrefix):])
		}
		return nil
	})
}

// FirstIndex returns the first index written, or 0 for an empty log.
func (s *Store) FirstIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.first, nil
}

// LastIndex returns the last index written, or 0 for an empty log.
func (s *Store) LastIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.last, nil
}

// GetLog reads the entry at index into out, or returns raft.ErrLogNotFound.
func (s *Store) GetLog(index uint64, out *raft.Log) error {
	return s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(logKey(index))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return raft.ErrLogNotFound
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { return decodeLog(v, out) })
	})
}

// StoreLog stores one entry.
func (s *Store) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs stores entries in one synced transaction (several, if they are
// too big for one), and returns only once they are on disk.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	for len(logs) > 0 {
		n, err := s.storeSome(logs)
		if err != nil {
			return err
		}
		logs = logs[n:]
	}
	return nil
}

// storeSome stores as many leading entries as fit in one transaction.
func (s *Store) storeSome(logs []*raft.Log) (int, error) {
	n := 0
	err := s.db.Update(func(txn *badger.Txn) error {
		for _, l := range logs {
			err := txn.Set(logKey(l.Index), encodeLog(l))
			if errors.Is(err, badger.ErrTxnTooBig) && n > 0 {
				return nil // commit what fits; the caller stores the rest
			}
			if err != nil {
				return fmt.Errorf("raftlog: store entry %d: %w", l.Index, err)
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	if s.first == 0 {
		s.first = logs[0].Index
	}
	s.last = max(s.last, logs[n-1].Index)
	s.mu.Unlock()
	return n, nil
}

// DeleteRange deletes the entries from min to max inclusive.
func (s *Store) DeleteRange(min, max uint64) error {
	s.mu.RLock()
	first, last := s.first, s.last
	s.mu.RUnlock()
	if min > max || first == 0 {
		return nil
	}
	lo, hi := maxU(min, first), minU(max, last)
	tail := hi >= last && lo > first
	if tail {
		// Newest first: an interrupted truncation leaves a shorter log.
		for top := hi; ; {
			bottom := lo
			if top-lo+1 > deleteChunk {
				bottom = top - deleteChunk + 1
			}
			if err := s.deleteKeys(bottom, top); err != nil {
				return err
			}
			s.mu.Lock()
			s.last = bottom - 1
			s.mu.Unlock()
			if bottom == lo {
				return nil
			}
			top = bottom - 1
		}
	}
	// Oldest first: an interrupted truncation leaves a later first index.
	for bottom := lo; bottom <= hi; bottom += deleteChunk {
		top := minU(hi, bottom+deleteChunk-1)
		if err := s.deleteKeys(bottom, top); err != nil {
			return err
		}
		s.mu.Lock()
		if top >= s.last {
			s.first, s.last = 0, 0
		} else {
			s.first = top + 1
		}
		s.mu.Unlock()
	}
	return nil
}

func (s *Store) deleteKeys(lo, hi uint64) error {
	return s.db.Update(func(txn *badger.Txn) error {
		for i := lo; i <= hi; i++ {
			if err := txn.Delete(logKey(i)); err != nil {
				return fmt.Errorf("raftlog: delete entry %d: %w", i, err)
			}
		}
		return nil
	})
}

func minU(a, b uint64) uint64 {
	if a < b {
		return a
	}
	return b
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

func stableKey(k []byte) []byte { return append(append([]byte(nil), stablePrefix...), k...) }

// Set stores a stable value.
func (s *Store) Set(key, val []byte) error {
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set(stableKey(key), val) })
}

// Get reads a stable value; a key never set returns ErrKeyNotFound.
func (s *Store) Get(key []byte) ([]byte, error) {
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(stableKey(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrKeyNotFound
		}
		if err != nil {
			return err
		}
		out, err = item.ValueCopy(nil)
		return err
	})
	return out, err
}

// SetUint64 stores a stable number.
func (s *Store) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 reads a stable number; a key never set returns 0 and
// ErrKeyNotFound.
func (s *Store) GetUint64(key []byte) (uint64, error) {
	b, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("raftlog: stable key %q holds %d bytes, not a number", key, len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// encodeLog writes an entry as: index, term (uvarints), type (one byte),
// data and extensions (length-prefixed), and the append time (varint Unix
// nanoseconds, 0 for none).
func encodeLog(l *raft.Log) []byte {
	b := make([]byte, 0, 32+len(l.Data)+len(l.Extensions))
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	b = append(b, byte(l.Type))
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	b = append(b, l.Extensions...)
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	return binary.AppendVarint(b, at)
}

var errCorrupt = errors.New("raftlog: corrupt entry")

func decodeLog(b []byte, l *raft.Log) error {
	var err error
	uv := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			err = errCorrupt
			return 0
		}
		b = b[n:]
		return v
	}
	bytesField := func() []byte {
		n := uv()
		if err != nil || n > uint64(len(b)) {
			err = errCorrupt
			return nil
		}
		var out []byte
		if n > 0 {
			out = append([]byte(nil), b[:n]...)
		}
		b = b[n:]
		return out
	}
	l.Index = uv()
	l.Term = uv()
	if err != nil || len(b) == 0 {
		return errCorrupt
	}
	l.Type = raft.LogType(b[0])
	b = b[1:]
	l.Data = bytesField()
	l.Extensions = bytesField()
	if err != nil {
		return err
	}
	at, n := binary.Varint(b)
	if n <= 0 {
		return errCorrupt
	}
	l.AppendedAt = time.Time{}
	if at != 0 {
		l.AppendedAt = time.Unix(0, at)
	}
	return nil
}
