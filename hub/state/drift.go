package state

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/internal/drift"
	"github.com/droverhq/drover/internal/sketch"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Drift: agents report drift windows (sketches of a model version's live
// traffic); the hub keeps each agent's recent ones, judges every window it
// receives against the version's reference profile, and records an event
// when an agent's verdict changes. The fleet view merges windows on read.

// Drift limits.
const (
	// MaxDriftWindows is how many windows the hub keeps per agent and
	// model version, the newest.
	MaxDriftWindows = 24
	// MaxDriftEvents is how many drift events the hub keeps per model.
	MaxDriftEvents = 1000
	// MaxDriftWindowBytes bounds one window, serialised.
	MaxDriftWindowBytes = 1 << 20
)

// driftKey parts: the tables' keys are built from these, in order.
func driftWindowParts(o any) []any {
	w := o.(*droverv1.AgentDriftWindow)
	return []any{w.GetWindow().GetModel(), w.GetWindow().GetVersion(), w.GetAgentId(), uint64(w.GetWindow().GetStart().AsTime().UnixNano())}
}

func driftVerdictParts(o any) []any {
	v := o.(*droverv1.DriftVerdictRecord)
	return []any{v.GetModel(), v.GetVersion(), v.GetAgentId()}
}

// byParts keys a table by a tuple of strings and uint64s; a prefix lookup
// takes any number of the leading parts.
func byParts(f func(any) []any) *funcIndexer {
	build := func(parts []any) ([]byte, error) {
		var b []byte
		for i, p := range parts {
			switch v := p.(type) {
			case string:
				b = append(b, strKey(v)...)
			case uint64:
				b = uintKey(b, v)
			default:
				return nil, fmt.Errorf("argument %d is %T, want string or uint64", i, p)
			}
		}
		return b, nil
	}
	return &funcIndexer{
		object: func(o any) []byte { b, _ := build(f(o)); return b },
		args:   func(args ...any) ([]byte, error) { return build(args) },
		prefix: func(args ...any) ([]byte, error) { return build(args) },
	}
}

// DriftOptions turns a model's settings into the statistics' options.
func DriftOptions(s *droverv1.DriftSettings) drift.Options {
	o := drift.Options{
		SmallReference: int(s.GetSmallReference()), PValue: s.GetPValue(), Distance: s.GetDistance(),
		DatasetShare: s.GetDatasetShare(), MinRows: int(s.GetMinRows()), Correction: s.GetCorrection(),
		Methods: s.GetMethods(), Thresholds: s.GetThresholds(),
	}
	return o
}

// validateDriftSettings refuses settings no test could use. The
// comparisons are written so that NaN fails them: a NaN or infinite
// threshold would silently turn drift detection off.
func validateDriftSettings(s *droverv1.DriftSettings) error {
	switch {
	case !(s.GetPValue() >= 0 && s.GetPValue() < 1):
		return Invalidf("p_value %g is not in [0, 1)", s.GetPValue())
	case !(s.GetDistance() >= 0 && !math.IsInf(s.GetDistance(), 1)):
		return Invalidf("distance %g is not a finite number of zero or more", s.GetDistance())
	case !(s.GetDatasetShare() >= 0 && s.GetDatasetShare() <= 1):
		return Invalidf("dataset_share %g is not in [0, 1]", s.GetDatasetShare())
	case len(s.GetMethods()) > MaxMapEntries || len(s.GetThresholds()) > MaxMapEntries:
		return Invalidf("methods and thresholds may name at most %d features each", MaxMapEntries)
	}
	switch s.GetCorrection() {
	case "", "none", "bonferroni", "fdr":
	default:
		return Invalidf("correction %q: want none, bonferroni or fdr", s.GetCorrection())
	}
	methods := []string{"ks", "wasserstein", "psi", "jensen_shannon", "hellinger", "chi2", "z"}
	for _, f := range slices.Sorted(maps.Keys(s.GetMethods())) {
		if err := validateKey("methods", f); err != nil {
			return err
		}
		if m := s.GetMethods()[f]; !slices.Contains(methods, m) {
			return Invalidf("method %q for feature %s: want one of %v", m, f, methods)
		}
	}
	for _, f := range slices.Sorted(maps.Keys(s.GetThresholds())) {
		if err := validateKey("thresholds", f); err != nil {
			return err
		}
		if t := s.GetThresholds()[f]; !(t >= 0 && !math.IsInf(t, 1)) {
			return Invalidf("threshold %g for feature %s is not a finite number of zero or more", t, f)
		}
	}
	return nil
}

// SetDriftSettings sets a model's drift settings.
func (s *Store) SetDriftSettings(c Change, m *droverv1.ModelDriftSettings) error {
	return s.write(c, func(t *txn) error {
		if err := validateDriftSettings(m.GetSettings()); err != nil {
			return err
		}
		raw, err := t.First(tableModels, "id", m.GetModel())
		if err != nil {
			return err
		}
		if raw == nil {
			return NotFoundf("model %q does not exist", m.GetModel())
		}
		if err := t.Insert(tableDriftSettings, proto.CloneOf(m)); err != nil {
			return err
		}
		return t.audit("drift.settings", "models/"+m.GetModel()+"/drift", "drift settings set")
	})
}

// DriftSettings returns a model's drift settings (empty: the defaults).
func (v *Snapshot) DriftSettings(model string) *droverv1.DriftSettings {
	raw, _ := v.txn.First(tableDriftSettings, "id", model)
	if raw == nil {
		return &droverv1.DriftSettings{}
	}
	return raw.(*droverv1.ModelDriftSettings).GetSettings()
}

// addDriftWindow keeps an agent's drift window, judges it against the
// version's reference profile, and records an event when the agent's
// verdict changes. A window for a version the hub does not know, or one
// without a profile, is kept for the fleet view only if the version
// exists.
func addDriftWindow(t *txn, agent *droverv1.Agent, w *droverv1.DriftWindow) (*droverv1.AgentEvent, error) {
	if proto.Size(w) > MaxDriftWindowBytes {
		return &droverv1.AgentEvent{Kind: "drift", Message: fmt.Sprintf("a drift window of %s:%d over %d bytes was refused", w.GetModel(), w.GetVersion(), MaxDriftWindowBytes)}, nil
	}
	raw, err := t.First(tableVersions, "id", w.GetModel(), w.GetVersion())
	if err != nil || raw == nil {
		return nil, err
	}
	mv := raw.(*droverv1.ModelVersion)
	if err := t.Insert(tableDriftWindows, &droverv1.AgentDriftWindow{AgentId: agent.GetId(), Window: w}); err != nil {
		return nil, err
	}
	it, err := t.Get(tableDriftWindows, "id_prefix", w.GetModel(), w.GetVersion(), agent.GetId())
	if err != nil {
		return nil, err
	}
	kept := collect[*droverv1.AgentDriftWindow](it)
	for len(kept) > MaxDriftWindows {
		if err := t.Delete(tableDriftWindows, kept[0]); err != nil {
			return nil, err
		}
		kept = kept[1:]
	}
	if len(mv.GetReferenceProfile()) == 0 {
		return nil, nil
	}
	ref, err := t.refs.get(mv)
	if err != nil {
		return nil, nil // not a profile this hub can read: windows are kept, not judged
	}
	settingsRaw, _ := t.First(tableDriftSettings, "id", w.GetModel())
	settings := &droverv1.DriftSettings{}
	if settingsRaw != nil {
		settings = settingsRaw.(*droverv1.ModelDriftSettings).GetSettings()
	}
	rep := ref.Evaluate(w, DriftOptions(settings))
	verdict := verdictOf(rep)
	rec := &droverv1.DriftVerdictRecord{Model: w.GetModel(), Version: w.GetVersion(), AgentId: agent.GetId(),
		Verdict: verdict, DriftShare: rep.Dataset.DriftShare, Time: w.GetStart()}
	for _, f := range rep.Features {
		if f.Drifted {
			rec.DriftedFeatures = append(rec.DriftedFeatures, f.Name)
		}
	}
	lastRaw, err := t.First(tableDriftVerdicts, "id", w.GetModel(), w.GetVersion(), agent.GetId())
	if err != nil {
		return nil, err
	}
	if err := t.Insert(tableDriftVerdicts, rec); err != nil {
		return nil, err
	}
	last := "no_drift" // a first window that finds no drift is no news
	if lastRaw != nil {
		last = lastRaw.(*droverv1.DriftVerdictRecord).GetVerdict()
	}
	if verdict == last || verdict == "insufficient_data" {
		return nil, nil
	}
	if err := addDriftEvent(t, rec); err != nil {
		return nil, err
	}
	msg := fmt.Sprintf("%s:%d %s", w.GetModel(), w.GetVersion(), verdict)
	if len(rec.DriftedFeatures) > 0 {
		msg += fmt.Sprintf(" (%.0f%% of features: %v)", 100*rec.GetDriftShare(), rec.GetDriftedFeatures())
	}
	return &droverv1.AgentEvent{Kind: "drift", Message: msg}, nil
}

// verdictOf is a report's data-set verdict.
func verdictOf(r drift.Report) string {
	judged := 0
	for _, f := range r.Features {
		if f.Verdict != "insufficient_data" {
			judged++
		}
	}
	switch {
	case judged == 0:
		return "insufficient_data"
	case r.Dataset.Drifted:
		return "drift"
	}
	return "no_drift"
}

func addDriftEvent(t *txn, rec *droverv1.DriftVerdictRecord) error {
	ev := proto.CloneOf(rec)
	ev.Seq = t.c.Index
	if err := t.Insert(tableDriftEvents, ev); err != nil {
		return err
	}
	it, err := t.Get(tableDriftEvents, "id_prefix", rec.GetModel())
	if err != nil {
		return err
	}
	kept := collect[*droverv1.DriftVerdictRecord](it)
	for len(kept) > MaxDriftEvents {
		if err := t.Delete(tableDriftEvents, kept[0]); err != nil {
			return err
		}
		kept = kept[1:]
	}
	return nil
}

// DriftReference returns a version's reference profile made ready to
// judge drift windows against, prepared once and shared: nil when the
// version or its profile is missing, an error (ErrPrecondition) when the
// profile is not one this hub reads.
func (v *Snapshot) DriftReference(model string, version uint64) (*sketch.Reference, error) {
	raw := v.first(tableVersions, model, version)
	if raw == nil {
		return nil, nil
	}
	ref, err := v.refs.get(raw.(*droverv1.ModelVersion))
	if err != nil {
		return nil, Preconditionf("%v", err)
	}
	return ref, nil
}

// DriftWindows returns the kept windows of a model version from the given
// agents (all when nil) that end after since, oldest first.
func (v *Snapshot) DriftWindows(model string, version uint64, agents []string, since time.Time) []*droverv1.AgentDriftWindow {
	var out []*droverv1.AgentDriftWindow
	it := v.all(tableDriftWindows, "id_prefix", model, version)
	for raw := it.Next(); raw != nil; raw = it.Next() {
		w := raw.(*droverv1.AgentDriftWindow)
		if agents != nil && !slices.Contains(agents, w.GetAgentId()) {
			continue
		}
		if end := w.GetWindow().GetStart().AsTime().Add(w.GetWindow().GetLength().AsDuration()); !end.After(since) {
			continue // over before since
		}
		out = append(out, w)
	}
	slices.SortStableFunc(out, func(a, b *droverv1.AgentDriftWindow) int {
		return a.GetWindow().GetStart().AsTime().Compare(b.GetWindow().GetStart().AsTime())
	})
	return out
}

// NewestDriftVersion is the highest version of a model that has windows,
// or 0.
func (v *Snapshot) NewestDriftVersion(model string) uint64 {
	var newest uint64
	it := v.all(tableDriftWindows, "id_prefix", model)
	for raw := it.Next(); raw != nil; raw = it.Next() {
		newest = max(newest, raw.(*droverv1.AgentDriftWindow).GetWindow().GetVersion())
	}
	return newest
}

// DriftEvents returns a model's drift events (every model's when empty),
// oldest first, at most limit of the newest.
func (v *Snapshot) DriftEvents(model string, limit int) []*droverv1.DriftVerdictRecord {
	var it = v.all(tableDriftEvents, "id")
	if model != "" {
		it = v.all(tableDriftEvents, "id_prefix", model)
	}
	out := collect[*droverv1.DriftVerdictRecord](it)
	slices.SortStableFunc(out, func(a, b *droverv1.DriftVerdictRecord) int {
		switch {
		case a.GetSeq() < b.GetSeq():
			return -1
		case a.GetSeq() > b.GetSeq():
			return 1
		}
		return 0
	})
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}
