// Package store is the agent's durable state, one Badger database with
// every write synced: its identity, the last desired state the hub sent
// (so that it keeps serving it while the hub is away), the index of
// downloaded artifacts, the outbox of reports waiting for the hub (GPU
// telemetry windows among them), and bounded journals for what the agent
// keeps for itself: prediction samples, feedback and drift sketches.
//
// The outbox is bounded. When it is full, the two oldest telemetry windows
// are merged into one (summarised); when no two are left, the oldest report
// is dropped. Both are counted, and the counts reach the hub as a report of
// their own.
package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/internal/kvstore"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Keys. Reports sort by sequence number under outboxPrefix.
var (
	keyIdentity  = []byte("m/identity")
	keyDesired   = []byte("m/desired")
	keyNextSeq   = []byte("m/next_seq")
	keyDropped   = []byte("m/dropped")
	keyMerged    = []byte("m/summarised")
	outboxPrefix = []byte("o/")
	artPrefix    = []byte("a/")
	metaPrefix   = []byte("k/")
)

// ErrNotFound is returned for something never stored.
var ErrNotFound = errors.New("not found")

// Options tune the store.
type Options struct {
	// MaxReports bounds the outbox (default 100,000 reports).
	MaxReports int
	// DB tunes Badger; the zero value is the small default.
	DB kvstore.Options
}

// Store is the agent's durable state. It is safe for concurrent use.
type Store struct {
	db  *badger.DB
	max int

	mu         sync.Mutex // serialises outbox changes
	nextSeq    uint64
	depth      int
	dropped    uint64
	summarised uint64
	changed    chan struct{}

	journalsMu sync.Mutex
	journals   map[string]*Journal
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, o Options, logger *slog.Logger) (*Store, error) {
	if o.MaxReports <= 0 {
		o.MaxReports = 100_000
	}
	db, err := kvstore.Open(dir, o.DB, logger)
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, max: o.MaxReports, changed: make(chan struct{}, 1), nextSeq: 1}
	err = db.View(func(txn *badger.Txn) error {
		for key, dst := range map[string]*uint64{string(keyNextSeq): &s.nextSeq, string(keyDropped): &s.dropped, string(keyMerged): &s.summarised} {
			if v, err := getUint(txn, []byte(key)); err == nil {
				*dst = v
			} else if !errors.Is(err, ErrNotFound) {
				return err
			}
		}
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = outboxPrefix
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			s.depth++
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	if s.nextSeq == 0 {
		s.nextSeq = 1
	}
	return s, nil
}

// DB returns the database, for garbage collection.
func (s *Store) DB() *badger.DB { return s.db }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func getUint(txn *badger.Txn, key []byte) (uint64, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, err
	}
	var v uint64
	err = item.Value(func(b []byte) error {
		if len(b) != 8 {
			return fmt.Errorf("store: %s holds %d bytes, not a number", key, len(b))
		}
		v = binary.BigEndian.Uint64(b)
		return nil
	})
	return v, err
}

func setUint(txn *badger.Txn, key []byte, v uint64) error {
	return txn.Set(key, binary.BigEndian.AppendUint64(nil, v))
}

func (s *Store) get(key []byte, decode func([]byte) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		return item.Value(decode)
	})
}

func (s *Store) put(key, val []byte) error {
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set(key, val) })
}

// Identity is who the agent is to the hub.
type Identity struct {
	AgentID string `json:"agent_id"`
	Name    string `json:"name"`
	// Token is the agent's own credential, returned by Enroll.
	Token string `json:"token"`
	// Hubs are the addresses it enrolled with.
	Hubs []string `json:"hubs"`
}

// Identity returns the stored identity, or ErrNotFound before enrolment.
func (s *Store) Identity() (*Identity, error) {
	var id Identity
	if err := s.get(keyIdentity, func(b []byte) error { return json.Unmarshal(b, &id) }); err != nil {
		return nil, err
	}
	return &id, nil
}

// SetIdentity stores the identity.
func (s *Store) SetIdentity(id *Identity) error {
	b, err := json.Marshal(id)
	if err != nil {
		return err
	}
	return s.put(keyIdentity, b)
}

// Desired returns the last desired state stored, or ErrNotFound.
func (s *Store) Desired() (*droverv1.DesiredState, error) {
	d := new(droverv1.DesiredState)
	if err := s.get(keyDesired, func(b []byte) error { return proto.Unmarshal(b, d) }); err != nil {
		return nil, err
	}
	return d, nil
}

// SetDesired stores a desired state.
func (s *Store) SetDesired(d *droverv1.DesiredState) error {
	b, err := proto.Marshal(d)
	if err != nil {
		return err
	}
	return s.put(keyDesired, b)
}

// Get reads a small value stored under a name with Put.
func (s *Store) Get(name string) ([]byte, error) {
	var out []byte
	err := s.get(metaKey(name), func(b []byte) error {
		out = append([]byte(nil), b...)
		return nil
	})
	return out, err
}

// Put stores a small value under a name.
func (s *Store) Put(name string, val []byte) error {
	return s.put(metaKey(name), val)
}

// Delete removes the value stored under a name, if any.
func (s *Store) Delete(name string) error {
	return s.db.Update(func(txn *badger.Txn) error { return txn.Delete(metaKey(name)) })
}

// Names returns the names, stored with Put, that start with prefix, in
// order.
func (s *Store) Names(prefix string) ([]string, error) {
	var out []string
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = metaKey(prefix)
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			out = append(out, string(it.Item().Key()[len(metaPrefix):]))
		}
		return nil
	})
	return out, err
}

func metaKey(name string) []byte { return append(append([]byte(nil), metaPrefix...), name...) }

// Artifact is a downloaded, verified artifact in the agent's cache.
type Artifact struct {
	Digest     string    `json:"digest"`
	Size       int64     `json:"size"`
	VerifiedAt time.Time `json:"verified_at"`
	LastUsed   time.Time `json:"last_used"`
}

func artKey(digest string) []byte { return append(append([]byte(nil), artPrefix...), digest...) }

// Artifact returns the index entry of an artifact, or ErrNotFound.
func (s *Store) Artifact(digest string) (*Artifact, error) {
	var a Artifact
	if err := s.get(artKey(digest), func(b []byte) error { return json.Unmarshal(b, &a) }); err != nil {
		return nil, err
	}
	return &a, nil
}

// PutArtifact records an artifact as present and verified.
func (s *Store) PutArtifact(a *Artifact) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return s.put(artKey(a.Digest), b)
}

// DeleteArtifact forgets an artifact.
func (s *Store) DeleteArtifact(digest string) error {
	return s.db.Update(func(txn *badger.Txn) error { return txn.Delete(artKey(digest)) })
}

// Artifacts returns every indexed artifact.
func (s *Store) Artifacts() ([]*Artifact, error) {
	var out []*Artifact
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = artPrefix
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var a Artifact
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &a) }); err != nil {
				return err
			}
			out = append(out, &a)
		}
		return nil
	})
	return out, err
}

func reportKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), outboxPrefix...), seq)
}

// Append adds reports to the outbox, numbering and timestamping them, and
// returns once they are on disk. A report given a time keeps it.
func (s *Store) Append(now time.Time, reports ...*droverv1.Report) error {
	return s.appendWith(now, nil, reports)
}

// AppendAndPut appends reports as Append does and, in the same
// transaction, stores val under name as Put does: either both are on disk
// or neither, so that a marker saying "this was reported" is never without
// its report, nor the report without its marker.
func (s *Store) AppendAndPut(now time.Time, name string, val []byte, reports ...*droverv1.Report) error {
	return s.appendWith(now, func(txn *badger.Txn) error { return txn.Set(metaKey(name), val) }, reports)
}

// appendWith appends reports, running also (if not nil) in the same
// transaction.
func (s *Store) appendWith(now time.Time, also func(*badger.Txn) error, reports []*droverv1.Report) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := s.nextSeq
	err := s.db.Update(func(txn *badger.Txn) error {
		if also != nil {
			if err := also(txn); err != nil {
				return err
			}
		}
		for _, r := range reports {
			r = proto.CloneOf(r)
			r.Seq = seq
			if r.Time == nil {
				r.Time = timestamppb.New(now)
			}
			b, err := proto.Marshal(r)
			if err != nil {
				return err
			}
			if err := txn.Set(reportKey(seq), b); err != nil {
				return err
			}
			seq++
		}
		return setUint(txn, keyNextSeq, seq)
	})
	if err != nil {
		return fmt.Errorf("store: append reports: %w", err)
	}
	s.depth += int(seq - s.nextSeq)
	s.nextSeq = seq
	for s.depth > s.max {
		if err := s.shrink(); err != nil {
			return err
		}
	}
	s.signal()
	return nil
}

func (s *Store) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Changed returns a channel that receives after reports are appended.
func (s *Store) Changed() <-chan struct{} { return s.changed }

// shrink makes room for one report: it merges the two oldest telemetry
// windows, or, with fewer than two, drops the oldest report.
func (s *Store) shrink() error {
	return s.db.Update(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = outboxPrefix
		it := txn.NewIterator(opts)
		var oldestKey []byte
		var first, second *droverv1.Report
		var firstKey, secondKey []byte
		for it.Rewind(); it.Valid() && second == nil; it.Next() {
			item := it.Item()
			if oldestKey == nil {
				oldestKey = item.KeyCopy(nil)
			}
			var r droverv1.Report
			if err := item.Value(func(b []byte) error { return proto.Unmarshal(b, &r) }); err != nil {
				it.Close()
				return err
			}
			if r.GetTelemetry() == nil {
				continue
			}
			if first == nil {
				first, firstKey = &r, item.KeyCopy(nil)
			} else {
				second, secondKey = &r, item.KeyCopy(nil)
			}
		}
		it.Close()
		if second != nil {
			merged := proto.CloneOf(first)
			merged.Body = &droverv1.Report_Telemetry{Telemetry: MergeWindows(first.GetTelemetry(), second.GetTelemetry())}
			b, err := proto.Marshal(merged)
			if err != nil {
				return err
			}
			if err := txn.Set(firstKey, b); err != nil {
				return err
			}
			if err := txn.Delete(secondKey); err != nil {
				return err
			}
			s.summarised++
			s.depth--
			return setUint(txn, keyMerged, s.summarised)
		}
		if oldestKey == nil {
			return nil
		}
		if err := txn.Delete(oldestKey); err != nil {
			return err
		}
		s.dropped++
		s.depth--
		return setUint(txn, keyDropped, s.dropped)
	})
}

// MergeWindows combines two telemetry windows into one covering both.
func MergeWindows(a, b *droverv1.TelemetryWindow) *droverv1.TelemetryWindow {
	out := &droverv1.TelemetryWindow{Start: a.GetStart(), End: b.GetEnd()}
	if b.GetStart() != nil && (a.GetStart() == nil || b.GetStart().AsTime().Before(a.GetStart().AsTime())) {
		out.Start = b.GetStart()
	}
	if a.GetEnd() != nil && (b.GetEnd() == nil || a.GetEnd().AsTime().After(b.GetEnd().AsTime())) {
		out.End = a.GetEnd()
	}
	byUUID := map[string]*droverv1.GpuWindow{}
	for _, w := range []*droverv1.TelemetryWindow{a, b} {
		for _, g := range w.GetGpus() {
			m, ok := byUUID[g.GetUuid()]
			if !ok {
				m = proto.CloneOf(g)
				byUUID[g.GetUuid()] = m
				out.Gpus = append(out.Gpus, m)
				continue
			}
			n, gn := float64(m.GetSamples()), float64(g.GetSamples())
			total := n + gn
			if total > 0 {
				m.PowerWattsMean = (m.GetPowerWattsMean()*n + g.GetPowerWattsMean()*gn) / total
				m.GpuUtilPercentMean = (m.GetGpuUtilPercentMean()*n + g.GetGpuUtilPercentMean()*gn) / total
			}
			m.Samples += g.GetSamples()
			m.TemperatureCMax = max(m.GetTemperatureCMax(), g.GetTemperatureCMax())
			m.MemoryUsedBytesMax = max(m.GetMemoryUsedBytesMax(), g.GetMemoryUsedBytesMax())
			m.XidErrors += g.GetXidErrors()
		}
	}
	return out
}

// TakeLosses appends, if the outbox overflowed since the last time, a
// report saying by how much, and resets the counts.
func (s *Store) TakeLosses(now time.Time) error {
	s.mu.Lock()
	dropped, merged := s.dropped, s.summarised
	s.mu.Unlock()
	if dropped == 0 && merged == 0 {
		return nil
	}
	if err := s.Append(now, &droverv1.Report{Body: &droverv1.Report_Dropped{Dropped: &droverv1.ReportsDropped{Dropped: dropped, Summarised: merged}}}); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropped -= dropped
	s.summarised -= merged
	return s.db.Update(func(txn *badger.Txn) error {
		if err := setUint(txn, keyDropped, s.dropped); err != nil {
			return err
		}
		return setUint(txn, keyMerged, s.summarised)
	})
}

// Pending returns up to max reports from the oldest, in order, together
// no larger than maxBytes (but at least one).
func (s *Store) Pending(max, maxBytes int) ([]*droverv1.Report, error) {
	var out []*droverv1.Report
	size := 0
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = outboxPrefix
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid() && len(out) < max; it.Next() {
			var r droverv1.Report
			if err := it.Item().Value(func(b []byte) error {
				size += len(b)
				return proto.Unmarshal(b, &r)
			}); err != nil {
				return err
			}
			if len(out) > 0 && size > maxBytes {
				break
			}
			out = append(out, &r)
		}
		return nil
	})
	return out, err
}

// Ack removes every report up to and including seq.
func (s *Store) Ack(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		n := 0
		err := s.db.Update(func(txn *badger.Txn) error {
			opts := badger.DefaultIteratorOptions
			opts.PrefetchValues = false
			opts.Prefix = outboxPrefix
			it := txn.NewIterator(opts)
			defer it.Close()
			for it.Rewind(); it.Valid() && n < 1000; it.Next() {
				key := it.Item().KeyCopy(nil)
				if binary.BigEndian.Uint64(key[len(outboxPrefix):]) > seq {
					break
				}
				if err := txn.Delete(key); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: ack reports: %w", err)
		}
		s.depth -= n
		if n < 1000 {
			return nil
		}
	}
}

// Depth returns how many reports wait in the outbox.
func (s *Store) Depth() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.depth
}

// NextSeq returns the sequence number the next report will get.
func (s *Store) NextSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextSeq
}

// SkipTo makes the next report number at least seq: after re-enrolling
// with a hub that has taken reports numbered up to seq-1 from an agent of
// this name (whose data was lost), new reports must number on from there.
func (s *Store) SkipTo(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq <= s.nextSeq {
		return nil
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return setUint(txn, keyNextSeq, seq) }); err != nil {
		return err
	}
	s.nextSeq = seq
	return nil
}
