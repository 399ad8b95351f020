package state

import (
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/types/known/timestamppb"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// MaxAuditEvents is how many audit events the state keeps; older ones are
// dropped as new ones arrive. It is a constant, not a setting, because every
// node must drop the same events to stay identical.
const MaxAuditEvents = 100_000

// Store holds the state. It is safe for concurrent use: one writer (the FSM)
// and any number of readers.
type Store struct {
	db          *memdb.MemDB
	abandonCh   chan struct{}
	abandonOnce sync.Once
	refs        references
}

// New returns an empty store.
func New() *Store {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		// The schema is a constant; an error is a programming mistake.
		panic(fmt.Sprintf("state: bad schema: %v", err))
	}
	return &Store{db: db, abandonCh: make(chan struct{})}
}

// Abandon marks the store as replaced (by a snapshot restore). Anyone
// watching it should start again from the new one.
func (s *Store) Abandon() { s.abandonOnce.Do(func() { close(s.abandonCh) }) }

// AbandonCh is closed when the store is abandoned.
func (s *Store) AbandonCh() <-chan struct{} { return s.abandonCh }

// Change carries what a write needs to know about the command that caused it.
type Change struct {
	// Index is the Raft index of the command.
	Index uint64
	// Time is when the command was made, by the clock of the node that made it.
	Time time.Time
	// Actor is who asked for it.
	Actor *droverv1.Actor
	// Reason is the reason given, if any.
	Reason string
}

func (c Change) timestamp() *timestamppb.Timestamp { return timestamppb.New(c.Time) }

// txn is a write transaction bound to its change.
type txn struct {
	*memdb.Txn
	c       Change
	audited bool
	refs    *references
}

// write runs fn in one transaction. If fn fails nothing it did is kept, but
// the applied index still advances: the command was applied, and refused.
func (s *Store) write(c Change, fn func(tx *txn) error) error {
	t := &txn{Txn: s.db.Txn(true), c: c, refs: &s.refs}
	defer t.Abort()
	if err := fn(t); err != nil {
		t.Abort()
		s.SetApplied(c.Index)
		return err
	}
	if err := t.Insert(tableMeta, &metaRow{Key: metaApplied, Value: c.Index}); err != nil {
		return fmt.Errorf("state: set applied index: %w", err)
	}
	t.Commit()
	return nil
}

// SetApplied records that the command at index was applied without changing
// anything else (a refused command, or one this version ignores).
func (s *Store) SetApplied(index uint64) {
	t := s.db.Txn(true)
	defer t.Abort()
	if err := t.Insert(tableMeta, &metaRow{Key: metaApplied, Value: index}); err != nil {
		panic(fmt.Sprintf("state: set applied index: %v", err))
	}
	t.Commit()
}

// audit writes the change's audit event. Every successful write calls it
// exactly once.
func (t *txn) audit(action, resource, summary string) error {
	if t.audited {
		return fmt.Errorf("state: change %d audited twice", t.c.Index)
	}
	t.audited = true
	ev := &droverv1.AuditEvent{
		Index:    t.c.Index,
		Time:     t.c.timestamp(),
		Actor:    t.c.Actor,
		Action:   action,
		Resource: resource,
		Summary:  summary,
		Reason:   t.c.Reason,
	}
	if err := t.Insert(tableAudit, ev); err != nil {
		return fmt.Errorf("state: insert audit event: %w", err)
	}
	count := metaUint(t.Txn, metaAudit) + 1
	for count > MaxAuditEvents {
		oldest, err := t.First(tableAudit, "id")
		if err != nil || oldest == nil {
			return fmt.Errorf("state: trim audit trail: %v", err)
		}
		if err := t.Delete(tableAudit, oldest); err != nil {
			return fmt.Errorf("state: trim audit trail: %w", err)
		}
		count--
	}
	return t.Insert(tableMeta, &metaRow{Key: metaAudit, Value: count})
}

func metaUint(t *memdb.Txn, key string) uint64 {
	raw, err := t.First(tableMeta, "id", key)
	if err != nil || raw == nil {
		return 0
	}
	return raw.(*metaRow).Value.(uint64)
}

// Snapshot returns an immutable view of the current state.
func (s *Store) Snapshot() *Snapshot {
	return &Snapshot{txn: s.db.Txn(false), refs: &s.refs}
}

// Snapshot is a read-only, consistent view of the state at one index.
type Snapshot struct {
	txn  *memdb.Txn
	refs *references
}

// Index returns the Raft index of the last command the view includes.
func (v *Snapshot) Index() uint64 { return metaUint(v.txn, metaApplied) }

func (v *Snapshot) first(table string, args ...any) any {
	raw, err := v.txn.First(table, "id", args...)
	if err != nil {
		panic(fmt.Sprintf("state: lookup in %s: %v", table, err))
	}
	return raw
}

func (v *Snapshot) all(table, index string, args ...any) memdb.ResultIterator {
	it, err := v.txn.Get(table, index, args...)
	if err != nil {
		panic(fmt.Sprintf("state: iterate %s.%s: %v", table, index, err))
	}
	return it
}

// collect gathers every object of an iterator as T.
func collect[T any](it memdb.ResultIterator) []T {
	var out []T
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(T))
	}
	return out
}
