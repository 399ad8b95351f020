package state

import (
	"container/list"
	"fmt"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/internal/sketch"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// maxCachedReferences bounds the prepared reference profiles a store
// keeps: enough for every version under rollout or watched for drift at
// once on a large fleet; a miss only costs a decode.
const maxCachedReferences = 32

// references caches model versions' reference profiles, decoded and made
// ready to judge drift windows against (sketch.Reference). Judging a
// window against a large profile was mostly decoding and sorting the
// profile, on every window every agent reported, in the FSM.
//
// An entry is keyed by model and version and remembers the serialised
// profile it was made from: a version's row is replaced, never changed
// in place, so an entry whose bytes are not the row's is stale. Entries
// are a pure function of the bytes, so replicas stay identical whatever
// each one has cached.
type references struct {
	mu      sync.Mutex
	entries map[refKey]*list.Element
	lru     list.List // of *refEntry, most recently used first
}

type refKey struct {
	model   string
	version uint64
}

type refEntry struct {
	key refKey
	raw []byte
	ref *sketch.Reference
	err error
}

// get returns mv's prepared reference profile: nil with a nil error when
// it has none, an error when it is not one this hub can read.
func (c *references) get(mv *droverv1.ModelVersion) (*sketch.Reference, error) {
	raw := mv.GetReferenceProfile()
	if len(raw) == 0 {
		return nil, nil
	}
	k := refKey{mv.GetModel(), mv.GetVersion()}
	if c == nil { // a restore's transaction: nothing is judged there
		e := prepare(k, raw)
		return e.ref, e.err
	}
	c.mu.Lock()
	if el, ok := c.entries[k]; ok {
		e := el.Value.(*refEntry)
		if sameBytes(e.raw, raw) {
			c.lru.MoveToFront(el)
			c.mu.Unlock()
			return e.ref, e.err
		}
	}
	c.mu.Unlock()

	// Prepared outside the lock: two readers may both prepare one
	// profile, which is cheaper than making every reader wait.
	e := prepare(k, raw)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[refKey]*list.Element{}
	}
	if el, ok := c.entries[k]; ok {
		c.lru.Remove(el)
	}
	c.entries[k] = c.lru.PushFront(e)
	for c.lru.Len() > maxCachedReferences {
		old := c.lru.Remove(c.lru.Back()).(*refEntry)
		delete(c.entries, old.key)
	}
	return e.ref, e.err
}

// prepare decodes a serialised profile and prepares it.
func prepare(k refKey, raw []byte) *refEntry {
	e := &refEntry{key: k, raw: raw}
	p := &droverv1.ReferenceProfile{}
	if err := proto.Unmarshal(raw, p); err != nil {
		e.err = fmt.Errorf("%s:%d's reference profile is not one this hub reads: %w", k.model, k.version, err)
	} else {
		e.ref = sketch.NewReference(p)
	}
	return e
}

// sameBytes reports whether a and b are the same bytes in memory, not
// merely equal ones: comparing a profile's contents would cost as much as
// a good part of decoding it.
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
