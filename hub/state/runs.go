package state

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/internal/digest"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Training runs, tracked as MLflow tracks them: parameters, tags, metrics
// over steps, the data set and parent version they came from, the artifact
// and version they became.

// Run limits.
const (
	MaxRunHistory = 10_000 // metric points kept per run, the newest
	MaxRunsKept   = 10_000 // runs kept per model, the newest
)

func runResource(id string) string { return "runs/" + id }

// CreateRun starts tracking a run.
func (s *Store) CreateRun(c Change, in *droverv1.Run) (*droverv1.Run, error) {
	var out *droverv1.Run
	err := s.write(c, func(t *txn) error {
		r, err := createRun(t, in)
		if err != nil {
			return err
		}
		out = r
		return t.audit("run.start", runResource(r.GetId()), fmt.Sprintf("%s run of %s started", r.GetRunner(), r.GetModel()))
	})
	return out, err
}

// createRun starts tracking a run within a write.
func createRun(t *txn, in *droverv1.Run) (*droverv1.Run, error) {
	c := t.c
	if raw, _ := t.First(tableRuns, "id", in.GetId()); raw != nil {
		return nil, AlreadyExistsf("run %s exists", in.GetId())
	}
	if _, err := getModel(t, in.GetModel()); err != nil {
		return nil, err
	}
	if err := validateRunMaps(in.GetParams(), in.GetTags()); err != nil {
		return nil, err
	}
	if d := in.GetDataset(); d != "" {
		if err := ValidateName("dataset", d); err != nil {
			return nil, err
		}
	}
	if d := in.GetDatasetDigest(); d != "" {
		if _, err := digest.Parse(d); err != nil {
			return nil, Invalidf("dataset_digest: %v", err)
		}
	}
	if p := in.GetParentVersion(); p != 0 {
		if raw, _ := t.First(tableVersions, "id", in.GetModel(), p); raw == nil {
			return nil, NotFoundf("model %q has no version %d to be the run's parent", in.GetModel(), p)
		}
	}
	r := proto.CloneOf(in)
	r.State, r.CreatedBy, r.StartTime = droverv1.RunState_RUN_STATE_RUNNING, c.Actor, c.timestamp()
	r.History, r.Metrics, r.Version, r.Artifact, r.EndTime = nil, nil, 0, nil, nil
	if err := t.Insert(tableRuns, r); err != nil {
		return nil, err
	}
	// The oldest of the model's runs go beyond the bound.
	it, err := t.Get(tableRuns, "model", r.GetModel())
	if err != nil {
		return nil, err
	}
	runs := collect[*droverv1.Run](it)
	if len(runs) > MaxRunsKept {
		// Oldest first; runs started at the same instant by id, so that
		// every replica drops the same ones.
		slices.SortFunc(runs, func(a, b *droverv1.Run) int {
			if c := a.GetStartTime().AsTime().Compare(b.GetStartTime().AsTime()); c != 0 {
				return c
			}
			return strings.Compare(a.GetId(), b.GetId())
		})
		for _, old := range runs[:len(runs)-MaxRunsKept] {
			if err := t.Delete(tableRuns, old); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

func validateRunMaps(params, tags map[string]string) error {
	if err := ValidateStringMap("params", params); err != nil {
		return err
	}
	return ValidateStringMap("tags", tags)
}

// LogRun adds metric points and tags to a run and, with an end state,
// ends it with its final metrics, artifact and version.
func (s *Store) LogRun(c Change, l *droverv1.LogRunRequest) (*droverv1.Run, error) {
	var out *droverv1.Run
	err := s.write(c, func(t *txn) error {
		raw, err := t.First(tableRuns, "id", l.GetId())
		if err != nil {
			return err
		}
		if raw == nil {
			return NotFoundf("no run %s", l.GetId())
		}
		r := proto.CloneOf(raw.(*droverv1.Run))
		if r.GetState() != droverv1.RunState_RUN_STATE_RUNNING {
			return Preconditionf("run %s has ended (%s)", r.GetId(), runStateName(r.GetState()))
		}
		tags := maps.Clone(r.GetTags())
		if tags == nil {
			tags = map[string]string{}
		}
		maps.Copy(tags, l.GetTags())
		if err := validateRunMaps(nil, tags); err != nil {
			return err
		}
		if err := ValidateMetrics(l.GetMetrics()); err != nil {
			return err
		}
		for _, p := range l.GetPoints() {
			if err := ValidateMetrics(map[string]float64{p.GetName(): p.GetValue()}); err != nil {
				return err
			}
		}
		r.Tags = tags
		for _, p := range l.GetPoints() {
			p = proto.CloneOf(p)
			if p.GetTime() == nil {
				p.Time = c.timestamp()
			}
			r.History = append(r.History, p)
		}
		if n := len(r.History); n > MaxRunHistory {
			r.History = r.History[n-MaxRunHistory:]
		}
		summary := fmt.Sprintf("%d metric points", len(l.GetPoints()))
		switch l.GetEndState() {
		case droverv1.RunState_RUN_STATE_UNSPECIFIED, droverv1.RunState_RUN_STATE_RUNNING:
		case droverv1.RunState_RUN_STATE_SUCCEEDED, droverv1.RunState_RUN_STATE_FAILED:
			if v := l.GetVersion(); v != 0 {
				if raw, _ := t.First(tableVersions, "id", r.GetModel(), v); raw == nil {
					return NotFoundf("model %q has no version %d", r.GetModel(), v)
				}
			}
			r.State, r.Metrics, r.Artifact, r.Version, r.Message = l.GetEndState(), l.GetMetrics(), l.GetArtifact(), l.GetVersion(), l.GetMessage()
			r.EndTime = c.timestamp()
			summary = "ended " + runStateName(r.GetState())
			if r.GetVersion() != 0 {
				summary += fmt.Sprintf(" as %s:%d", r.GetModel(), r.GetVersion())
			}
		default:
			return Invalidf("end_state %v is not a state a run ends in", l.GetEndState())
		}
		if err := t.Insert(tableRuns, r); err != nil {
			return err
		}
		out = r
		return t.audit("run.log", runResource(r.GetId()), summary)
	})
	return out, err
}

func runStateName(s droverv1.RunState) string {
	switch s {
	case droverv1.RunState_RUN_STATE_RUNNING:
		return "running"
	case droverv1.RunState_RUN_STATE_SUCCEEDED:
		return "succeeded"
	case droverv1.RunState_RUN_STATE_FAILED:
		return "failed"
	}
	return "unknown"
}

// Run returns a run with its history, or nil.
func (v *Snapshot) Run(id string) *droverv1.Run {
	raw, _ := v.txn.First(tableRuns, "id", id)
	if raw == nil {
		return nil
	}
	return raw.(*droverv1.Run)
}

// Runs returns runs (a model's, or every model's), newest first, at most
// limit, without their history.
func (v *Snapshot) Runs(model string, limit int) []*droverv1.Run {
	it := v.all(tableRuns, "id")
	if model != "" {
		it = v.all(tableRuns, "model", model)
	}
	runs := collect[*droverv1.Run](it)
	slices.SortFunc(runs, func(a, b *droverv1.Run) int { return b.GetStartTime().AsTime().Compare(a.GetStartTime().AsTime()) })
	if limit > 0 && len(runs) > limit {
		runs = runs[:limit]
	}
	out := make([]*droverv1.Run, len(runs))
	for i, r := range runs {
		r = proto.CloneOf(r)
		r.History = nil
		out[i] = r
	}
	return out
}
