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
//
// The store keeps a reserve of free space on its file system (see
// ErrNoSpace): below it, writes are refused, and reports are held in memory
// (bounded, oldest dropped and counted), delivered from there, and written
// in order once space returns if they are still waiting.
//
// Held reports are numbered on from the reports on disk, and the numbers
// they took are lost with them in a crash. So after every start, before it
// delivers anything, the agent tells the store how far the hub has
// acknowledged (Sync): reports numbered since the start at or below that
// are renumbered above it, never taken by the hub for ones it has seen.
package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
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
	// MinFreeBytes is the space kept free on the store's file system:
	// below it, writes are refused with ErrNoSpace (default twice the
	// memtable size, 32 MiB; negative: no reserve).
	MinFreeBytes int64
	// MaxHeldReports bounds the reports held in memory while writes are
	// refused (default 10,000); beyond it the oldest are dropped and
	// counted.
	MaxHeldReports int
	// OnSpace, if set, is called when the store starts refusing writes for
	// want of space (low) and when it stops, with the bytes then free and
	// the reserve. It may be called in the middle of a write, with the
	// store's locks held: it must not call the store.
	OnSpace func(low bool, freeBytes, minFreeBytes uint64)
	// freeBytes replaces statfs in tests.
	freeBytes func(dir string) (uint64, error)
}

// Store is the agent's durable state. It is safe for concurrent use.
type Store struct {
	db      *badger.DB
	max     int
	maxHeld int
	space   *space
	logger  *slog.Logger

	mu         sync.Mutex // serialises outbox changes
	nextSeq    uint64     // the next report's number (held reports count)
	depth      int        // reports in the outbox on disk
	dropped    uint64
	summarised uint64
	changed    chan struct{}
	// held are reports numbered while writes were refused, in order; each
	// numbers above every report on disk.
	held []*droverv1.Report
	// openNext is nextSeq as the store opened; synced is whether Sync has
	// since told it where the hub stands. Before that, nothing is
	// offered for delivery.
	openNext uint64
	synced   bool
	// ackedTo is the highest number the hub acknowledged; reports up to it
	// that could not be deleted for want of space are not sent again.
	ackedTo  uint64
	ackLater bool // reports up to ackedTo wait to be deleted

	journalsMu sync.Mutex
	journals   map[string]*Journal
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, o Options, logger *slog.Logger) (*Store, error) {
	if o.MaxReports <= 0 {
		o.MaxReports = 100_000
	}
	if o.MaxHeldReports <= 0 {
		o.MaxHeldReports = 10_000
	}
	if o.MinFreeBytes == 0 {
		mem := o.DB.MemTableBytes
		if mem <= 0 {
			mem = kvstore.DefaultMemTableBytes
		}
		o.MinFreeBytes = 2 * mem
	}
	if o.freeBytes == nil {
		o.freeBytes = FreeBytes
	}
	sp := &space{dir: dir, min: uint64(max(o.MinFreeBytes, 0)), free: o.freeBytes}
	// Badger writes as it opens; on a nearly full file system that may be
	// the write that kills the process.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if sp.probe() {
		return nil, fmt.Errorf("store: %s has %d bytes free, less than the %d it keeps in reserve: free some space and start again: %w",
			dir, sp.last.Load(), sp.min, ErrNoSpace)
	}
	sp.changed = o.OnSpace // from here on, a change is news
	db, err := kvstore.Open(dir, o.DB, logger)
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, max: o.MaxReports, maxHeld: o.MaxHeldReports, space: sp, logger: logger, changed: make(chan struct{}, 1), nextSeq: 1}
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
	s.openNext = s.nextSeq
	return s, nil
}

// DB returns the database, for garbage collection.
func (s *Store) DB() *badger.DB { return s.db }

// Close closes the database. On a nearly full file system it leaves it as
// a crash would: closing flushes the memtable into a new table, a write
// that could kill the process, and everything is in Badger's synced
// write-ahead log anyway, replayed at the next start.
func (s *Store) Close() error {
	if s.space.probe() {
		s.mu.Lock()
		held := len(s.held)
		s.mu.Unlock()
		s.logger.Warn("store left unclosed on a nearly full file system; it recovers from its log at the next start",
			"free_bytes", s.space.last.Load(), "reports_lost", held)
		return nil
	}
	return s.db.Close()
}

// CollectGarbage runs Badger's value-log garbage collection every interval
// until ctx ends, skipping rounds while the file system is nearly full
// (rewriting the value log needs space).
func (s *Store) CollectGarbage(ctx context.Context, interval time.Duration) {
	kvstore.CollectGarbage(ctx, s.db, interval, s.logger, s.space.probe)
}

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
	return s.update(func(txn *badger.Txn) error { return txn.Set(key, val) })
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
	return s.update(func(txn *badger.Txn) error { return txn.Delete(metaKey(name)) })
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
	return s.update(func(txn *badger.Txn) error { return txn.Delete(artKey(digest)) })
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
// returns once they are on disk. A report given a time keeps it. While the
// file system is nearly full, the reports are held in memory instead (see
// ErrNoSpace) and written, in order, once there is room.
func (s *Store) Append(now time.Time, reports ...*droverv1.Report) error {
	return s.appendWith(now, nil, nil, reports)
}

// AppendAndPut appends reports as Append does and, in the same
// transaction, stores val under name as Put does: either both are on disk
// or neither, so that a marker saying "this was reported" is never without
// its report, nor the report without its marker. With the file system
// nearly full it returns ErrNoSpace and changes nothing.
func (s *Store) AppendAndPut(now time.Time, name string, val []byte, reports ...*droverv1.Report) error {
	return s.appendWith(now, func(txn *badger.Txn) error { return txn.Set(metaKey(name), val) }, nil, reports)
}

// appendWith appends reports, running also (if not nil) in the same
// transaction and committed (if not nil, under s.mu) once it is on disk.
// Reports appended without also are held in memory when the disk is full.
func (s *Store) appendWith(now time.Time, also func(*badger.Txn) error, committed func(), reports []*droverv1.Report) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Held reports go first, keeping the order.
	err := s.writeHeldLocked()
	if err == nil {
		err = s.appendLocked(now, also, reports)
	}
	switch {
	case err == nil:
		if committed != nil {
			committed()
		}
	case errors.Is(err, ErrNoSpace) && also == nil:
		s.holdLocked(now, reports)
		s.signal()
		return nil
	default:
		return fmt.Errorf("store: append reports: %w", err)
	}
	for s.depth > s.max {
		err := s.shrink()
		if errors.Is(err, ErrNoSpace) {
			break // over the bound until there is room again; the append stands
		}
		if err != nil {
			return err
		}
	}
	s.signal()
	return nil
}

// appendLocked numbers reports and writes them in one transaction.
func (s *Store) appendLocked(now time.Time, also func(*badger.Txn) error, reports []*droverv1.Report) error {
	seq := s.nextSeq
	err := s.update(func(txn *badger.Txn) error {
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
		return err
	}
	s.depth += int(seq - s.nextSeq)
	s.nextSeq = seq
	return nil
}

// holdLocked numbers reports and keeps them in memory, dropping (and
// counting) the oldest held beyond the bound.
func (s *Store) holdLocked(now time.Time, reports []*droverv1.Report) {
	for _, r := range reports {
		r = proto.CloneOf(r)
		r.Seq = s.nextSeq
		s.nextSeq++
		if r.Time == nil {
			r.Time = timestamppb.New(now)
		}
		s.held = append(s.held, r)
	}
	if over := len(s.held) - s.maxHeld; over > 0 {
		s.held = slices.Delete(s.held, 0, over)
		s.dropped += uint64(over)
	}
}

// heldBatch bounds one transaction writing held reports.
const heldBatch = 256

// writeHeldLocked writes the held reports, oldest first, in bounded
// transactions; it returns ErrNoSpace (keeping the rest) when there is
// still no room.
func (s *Store) writeHeldLocked() error {
	for len(s.held) > 0 {
		batch := s.held[:min(len(s.held), heldBatch)]
		next := batch[len(batch)-1].GetSeq() + 1
		err := s.update(func(txn *badger.Txn) error {
			for _, r := range batch {
				b, err := proto.Marshal(r)
				if err != nil {
					return err
				}
				if err := txn.Set(reportKey(r.GetSeq()), b); err != nil {
					return err
				}
			}
			return setUint(txn, keyNextSeq, next)
		})
		if err != nil {
			return err
		}
		s.depth += len(batch)
		s.held = s.held[len(batch):]
		s.signal()
	}
	s.held = nil
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
	return s.update(func(txn *badger.Txn) error {
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
// report saying by how much, and resets the counts, in one transaction.
func (s *Store) TakeLosses(now time.Time) error {
	s.mu.Lock()
	dropped, merged := s.dropped, s.summarised
	s.mu.Unlock()
	if dropped == 0 && merged == 0 {
		return nil
	}
	report := &droverv1.Report{Body: &droverv1.Report_Dropped{Dropped: &droverv1.ReportsDropped{Dropped: dropped, Summarised: merged}}}
	// also and committed run under s.mu; the counts may have grown since.
	return s.appendWith(now, func(txn *badger.Txn) error {
		if err := setUint(txn, keyDropped, s.dropped-dropped); err != nil {
			return err
		}
		return setUint(txn, keyMerged, s.summarised-merged)
	}, func() {
		s.dropped -= dropped
		s.summarised -= merged
	}, []*droverv1.Report{report})
}

// Pending returns up to max reports from the oldest, in order, together
// no larger than maxBytes (but at least one), and none before Sync.
//
// Reports held in memory for want of space are written first if there is
// room now; if not, they follow those on disk.
func (s *Store) Pending(max, maxBytes int) ([]*droverv1.Report, error) {
	s.mu.Lock()
	if !s.synced {
		s.mu.Unlock()
		return nil, nil
	}
	err := s.writeHeldLocked()
	if err == nil && s.ackLater {
		err = s.deleteAckedLocked()
	}
	if err != nil && !errors.Is(err, ErrNoSpace) {
		s.mu.Unlock()
		return nil, fmt.Errorf("store: write held reports: %w", err)
	}
	acked := s.ackedTo
	held := slices.Clone(s.held)
	s.mu.Unlock()
	var out []*droverv1.Report
	size := 0
	err = s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = outboxPrefix
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(reportKey(acked + 1)); it.Valid() && len(out) < max; it.Next() {
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
	if err != nil {
		return nil, err
	}
	// Held reports number above every report on disk.
	for _, r := range held {
		size += proto.Size(r)
		if len(out) >= max || len(out) > 0 && size > maxBytes {
			break
		}
		out = append(out, r)
	}
	return out, nil
}

// Sync tells the store that the hub has acknowledged reports up to
// hubSeq, once after every start, before Pending offers anything. Reports
// up to hubSeq are acknowledged; reports numbered since the start at or
// below it (the hub took reports held in memory before a crash, whose
// numbers were used again) are renumbered above it.
func (s *Store) Sync(hubSeq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.synced {
		return s.ackLocked(hubSeq)
	}
	if hubSeq >= s.openNext {
		if err := s.renumberLocked(hubSeq + 1 - s.openNext); err != nil {
			return fmt.Errorf("store: renumber reports: %w", err)
		}
		s.logger.Warn("the hub has reports this agent numbered before a restart and lost (held in memory on a full disk); later reports renumbered after them",
			"hub_seq", hubSeq, "renumbered_from", s.openNext)
	}
	s.synced = true
	return s.ackLocked(hubSeq)
}

// Synced reports whether Sync has been called since the store opened.
func (s *Store) Synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

// renumberLocked adds shift to the number of every report numbered since
// the store opened, on disk and held.
func (s *Store) renumberLocked(shift uint64) error {
	err := s.update(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = outboxPrefix
		it := txn.NewIterator(opts)
		var moved []*droverv1.Report
		for it.Seek(reportKey(s.openNext)); it.Valid(); it.Next() {
			var r droverv1.Report
			if err := it.Item().Value(func(b []byte) error { return proto.Unmarshal(b, &r) }); err != nil {
				it.Close()
				return err
			}
			moved = append(moved, &r)
		}
		it.Close()
		// Highest first, so that no new key lands on one not yet moved.
		for i := len(moved) - 1; i >= 0; i-- {
			r := moved[i]
			if err := txn.Delete(reportKey(r.GetSeq())); err != nil {
				return err
			}
			r.Seq += shift
			b, err := proto.Marshal(r)
			if err != nil {
				return err
			}
			if err := txn.Set(reportKey(r.GetSeq()), b); err != nil {
				return err
			}
		}
		return setUint(txn, keyNextSeq, s.nextSeq+shift-uint64(len(s.held)))
	})
	if err != nil {
		return err
	}
	for _, r := range s.held {
		r.Seq += shift
	}
	s.nextSeq += shift
	return nil
}

// Ack removes every report up to and including seq. With the file system
// nearly full those on disk stay there, not offered by Pending again, and
// are removed once there is room.
func (s *Store) Ack(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ackLocked(seq)
}

func (s *Store) ackLocked(seq uint64) error {
	s.ackedTo = max(s.ackedTo, seq)
	// Delivered held reports need no writing.
	n := 0
	for n < len(s.held) && s.held[n].GetSeq() <= s.ackedTo {
		n++
	}
	s.held = s.held[n:]
	err := s.deleteAckedLocked()
	if errors.Is(err, ErrNoSpace) {
		return nil
	}
	return err
}

// deleteAckedLocked deletes the reports up to ackedTo, in bounded
// transactions.
func (s *Store) deleteAckedLocked() error {
	for {
		n := 0
		err := s.update(func(txn *badger.Txn) error {
			opts := badger.DefaultIteratorOptions
			opts.PrefetchValues = false
			opts.Prefix = outboxPrefix
			it := txn.NewIterator(opts)
			defer it.Close()
			for it.Rewind(); it.Valid() && n < 1000; it.Next() {
				key := it.Item().KeyCopy(nil)
				if binary.BigEndian.Uint64(key[len(outboxPrefix):]) > s.ackedTo {
					break
				}
				if err := txn.Delete(key); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if errors.Is(err, ErrNoSpace) {
			s.ackLater = true
			return err
		}
		if err != nil {
			return fmt.Errorf("store: ack reports: %w", err)
		}
		s.depth -= n
		if n < 1000 {
			s.ackLater = false
			return nil
		}
	}
}

// Depth returns how many reports wait in the outbox, held ones included.
func (s *Store) Depth() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.depth + len(s.held)
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
	if err := s.update(func(txn *badger.Txn) error { return setUint(txn, keyNextSeq, seq) }); err != nil {
		return err
	}
	s.nextSeq = seq
	return nil
}
