package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// A Journal is a bounded, append-only log of opaque records in the store,
// one per stream of data the agent keeps for itself rather than sending
// at once: prediction samples and feedback per model, drift sketches per
// window. Records are numbered from 1 in append order and keep their
// numbers; when the journal would hold more than its bound, the oldest
// records are dropped in the same transaction as the append, and counted.
//
// Appends are synced like every write of the store: a record Append has
// returned survives a crash. A Journal is safe for concurrent use.
type Journal struct {
	s      *Store
	name   string
	prefix []byte // j/<name>\x00
	meta   []byte // m/j/<name>\x00

	mu      sync.Mutex
	max     int
	first   uint64 // the oldest record held, or next when empty
	next    uint64
	dropped uint64
}

const journalMaxName = 200

// Journal opens the journal with the given name, holding at most max
// records (at least 1). Opening the same name again returns the same
// journal, with the new bound.
func (s *Store) Journal(name string, max int) (*Journal, error) {
	if name == "" || len(name) > journalMaxName || strings.ContainsRune(name, 0) {
		return nil, fmt.Errorf("store: journal name %q: want 1 to %d bytes without NUL", name, journalMaxName)
	}
	if max < 1 {
		return nil, fmt.Errorf("store: journal %s: a bound of %d records holds nothing", name, max)
	}
	s.journalsMu.Lock()
	defer s.journalsMu.Unlock()
	if j, ok := s.journals[name]; ok {
		j.mu.Lock()
		j.max = max
		j.mu.Unlock()
		return j, nil
	}
	j := &Journal{
		s:      s,
		name:   name,
		prefix: []byte("j/" + name + "\x00"),
		meta:   []byte("m/j/" + name + "\x00"),
		max:    max,
		next:   1,
	}
	err := s.db.View(func(txn *badger.Txn) error {
		if v, err := getUint(txn, j.metaKey("next")); err == nil {
			j.next = v
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		if v, err := getUint(txn, j.metaKey("dropped")); err == nil {
			j.dropped = v
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		j.first = j.next
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = j.prefix
		it := txn.NewIterator(opts)
		defer it.Close()
		if it.Rewind(); it.Valid() {
			j.first = j.seqOf(it.Item().Key())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: open journal %s: %w", name, err)
	}
	if s.journals == nil {
		s.journals = map[string]*Journal{}
	}
	s.journals[name] = j
	return j, nil
}

func (j *Journal) metaKey(field string) []byte {
	return append(append([]byte(nil), j.meta...), field...)
}

func (j *Journal) key(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), j.prefix...), seq)
}

func (j *Journal) seqOf(key []byte) uint64 {
	return binary.BigEndian.Uint64(key[len(j.prefix):])
}

// Name returns the journal's name.
func (j *Journal) Name() string { return j.name }

// ErrOverBound is Append's error for more records at once than the
// journal holds.
var ErrOverBound = errors.New("more records at once than the journal holds")

// Journal appends go in transactions of at most this many records, and at
// most half the bytes Badger takes in one (ErrTxnTooBig beyond).
const journalTxnRecords = 1000

// Append adds records and returns the number of the first; the oldest
// records beyond the bound are dropped. The records go in order, in
// bounded transactions, each of which also drops what it pushes beyond the
// bound: a batch of any size is stored, and the journal never holds more
// than its bound. If a transaction fails, the records before it stay
// stored, and the error says how many. More records than the bound at once
// are refused (ErrOverBound).
func (j *Journal) Append(recs ...[]byte) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(recs) == 0 {
		return j.next, nil
	}
	if len(recs) > j.max {
		return 0, fmt.Errorf("store: journal %s: %d records at once, and it holds %d: %w", j.name, len(recs), j.max, ErrOverBound)
	}
	at := j.next
	budget := j.s.db.MaxBatchSize() / 2
	for stored := 0; stored < len(recs); {
		n, size := 0, int64(0)
		for _, r := range recs[stored:] {
			// The record, and the delete of the oldest it may drop.
			size += int64(2*(len(j.prefix)+8+16) + len(r))
			if n == journalTxnRecords || n > 0 && size > budget {
				break
			}
			n++
		}
		if err := j.appendLocked(recs[stored : stored+n]); err != nil {
			if stored > 0 {
				return 0, fmt.Errorf("store: journal %s: append: %w (the first %d of %d records are stored)", j.name, err, stored, len(recs))
			}
			return 0, fmt.Errorf("store: journal %s: append: %w", j.name, err)
		}
		stored += n
	}
	return at, nil
}

// appendLocked appends records in one transaction, dropping the oldest
// beyond the bound. Called with mu held.
func (j *Journal) appendLocked(recs [][]byte) error {
	first, next := j.first, j.next+uint64(len(recs))
	drop := int(next-first) - j.max
	err := j.s.update(func(txn *badger.Txn) error {
		for i, r := range recs {
			if err := txn.Set(j.key(j.next+uint64(i)), r); err != nil {
				return err
			}
		}
		for ; drop > 0; drop-- {
			if err := txn.Delete(j.key(first)); err != nil {
				return err
			}
			first++
		}
		if err := setUint(txn, j.metaKey("next"), next); err != nil {
			return err
		}
		return setUint(txn, j.metaKey("dropped"), j.dropped+(first-j.first))
	})
	if err != nil {
		return err
	}
	j.dropped += first - j.first
	j.first, j.next = first, next
	return nil
}

// Scan calls fn for each record numbered from on, in order, up to limit
// records (no limit when limit ≤ 0), stopping at the first error fn
// returns. rec is valid only during the call.
func (j *Journal) Scan(from uint64, limit int, fn func(seq uint64, rec []byte) error) error {
	return j.s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = j.prefix
		opts.PrefetchSize = 64
		it := txn.NewIterator(opts)
		defer it.Close()
		n := 0
		for it.Seek(j.key(from)); it.Valid() && (limit <= 0 || n < limit); it.Next() {
			seq := j.seqOf(it.Item().Key())
			if err := it.Item().Value(func(b []byte) error { return fn(seq, b) }); err != nil {
				return err
			}
			n++
		}
		return nil
	})
}

// TrimBefore deletes every record numbered below seq: what the agent has
// shipped or folded into a summary.
func (j *Journal) TrimBefore(seq uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	seq = min(seq, j.next)
	for j.first < seq {
		end := min(seq, j.first+1000) // bounded transactions
		err := j.s.update(func(txn *badger.Txn) error {
			for s := j.first; s < end; s++ {
				if err := txn.Delete(j.key(s)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: journal %s: trim: %w", j.name, err)
		}
		j.first = end
	}
	return nil
}

// JournalStats describes a journal's contents.
type JournalStats struct {
	First   uint64 // the oldest record held (equal to Next when empty)
	Next    uint64 // the number the next record will get
	Len     int    // records held
	Dropped uint64 // records dropped for the bound, ever
}

// Stats returns the journal's numbers.
func (j *Journal) Stats() JournalStats {
	j.mu.Lock()
	defer j.mu.Unlock()
	return JournalStats{First: j.first, Next: j.next, Len: int(j.next - j.first), Dropped: j.dropped}
}
