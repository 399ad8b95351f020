package state

import (
	"math"
	"strings"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// AuditQuery selects audit events.
type AuditQuery struct {
	// AfterIndex keeps events with a greater index.
	AfterIndex uint64
	// Limit caps the number returned.
	Limit int
	// Resource keeps events on this resource or beneath it: "model/churn"
	// matches "model/churn" and "model/churn/alias/champion", not "model/churn2".
	Resource string
	// ActorTokenID keeps events by this token.
	ActorTokenID string
	// Newest returns the newest matching events instead of the oldest.
	Newest bool
}

func (q AuditQuery) match(ev *droverv1.AuditEvent) bool {
	if q.Resource != "" {
		r := ev.GetResource()
		if r != q.Resource && !strings.HasPrefix(r, strings.TrimSuffix(q.Resource, "/")+"/") {
			return false
		}
	}
	return q.ActorTokenID == "" || ev.GetActor().GetTokenId() == q.ActorTokenID
}

// AuditEvents returns the events that match q, oldest first, and whether
// more match beyond the limit.
func (v *Snapshot) AuditEvents(q AuditQuery) ([]*droverv1.AuditEvent, bool) {
	var out []*droverv1.AuditEvent
	if q.AfterIndex == math.MaxUint64 {
		return nil, false // nothing comes after the last index (and +1 would wrap)
	}
	if q.Newest {
		it, err := v.txn.GetReverse(tableAudit, "id")
		if err != nil {
			panic(err)
		}
		more := false
		for raw := it.Next(); raw != nil; raw = it.Next() {
			ev := raw.(*droverv1.AuditEvent)
			if ev.GetIndex() <= q.AfterIndex {
				break
			}
			if !q.match(ev) {
				continue
			}
			if len(out) == q.Limit {
				more = true
				break
			}
			out = append(out, ev)
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
		return out, more
	}
	it, err := v.txn.LowerBound(tableAudit, "id", q.AfterIndex+1)
	if err != nil {
		panic(err)
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		ev := raw.(*droverv1.AuditEvent)
		if !q.match(ev) {
			continue
		}
		if len(out) == q.Limit {
			return out, true
		}
		out = append(out, ev)
	}
	return out, false
}
