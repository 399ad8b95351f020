package hub

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/hub/blob"
	"github.com/droverhq/drover/hub/gates"
	"github.com/droverhq/drover/hub/state"
	"github.com/droverhq/drover/internal/cron"
	"github.com/droverhq/drover/internal/digest"
	"github.com/droverhq/drover/internal/sketch"
	"github.com/droverhq/drover/internal/tabular"
	"github.com/droverhq/drover/internal/training"
	"github.com/droverhq/drover/internal/validate"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// The retrain controller runs on the leader. Every tick it looks at each
// policy's triggers and at each active job, and moves things on by Raft
// commands, each guarded by the state (and attempt) it was decided in:
//
//   - a policy with no active job, out of its cool-down, whose trigger
//     fires, gets a job (the state refuses a second active job, and a job
//     within the cool-down, so a new leader deciding again is harmless);
//   - a pending job asks the agents that serve the model for their
//     labelled rows (collecting), or, with none to ask, gets its data set;
//   - a collecting job, once every live agent asked has handed in (or the
//     collect timeout passed), gets its data set: the base and the rows
//     concatenated, stored as a new registry version, and validated;
//   - a queued job is placed on an agent, within the concurrency limit;
//   - a running job whose agent went down is queued again elsewhere, and
//     one past its timeout fails;
//   - a finishing job is judged, and a winner registered and rolled out.
//
// Everything the controller needs is in the replicated state except the
// metric windows (accuracy triggers) and GPU telemetry (placement), which
// the leader holds in memory and a new leader rebuilds from reports.

// retrainTick is how often the controller looks.
const retrainTick = 500 * time.Millisecond

// retrainMemory is what the controller remembers between ticks: verdicts
// of merged drift windows it has judged.
type retrainMemory struct {
	verdicts map[string]string    // by model/version/start/agents
	seen     map[string]time.Time // when a collecting job was first seen
	warned   map[string]string    // the last warning logged per job or policy
}

func (n *Node) runRetraining(ctx context.Context) {
	tick := time.NewTicker(retrainTick)
	defer tick.Stop()
	m := &retrainMemory{verdicts: map[string]string{},
		seen: map[string]time.Time{}, warned: map[string]string{}}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n.retrainOnce(ctx, m)
	}
}

// retrainOnce is one look at every policy and active job.
func (n *Node) retrainOnce(ctx context.Context, m *retrainMemory) {
	view := n.fsm.State().Snapshot()
	now := n.now()
	active := view.RetrainJobs(state.JobQuery{Active: true})
	busy := map[string]bool{}
	for _, j := range active {
		busy[j.GetPolicy()] = true
	}
	for _, p := range view.RetrainPolicies("") {
		if busy[p.GetName()] || p.GetPaused() {
			continue
		}
		if last := p.GetStatus().GetLastTriggerTime(); last != nil && now.Before(last.AsTime().Add(state.PolicyCooldown(p))) {
			continue
		}
		trigger, detail, sched := n.policyTrigger(view, p, m, now)
		if trigger == "" {
			continue
		}
		job := &droverv1.RetrainJob{Id: newID("job"), Policy: p.GetName(), Trigger: trigger, TriggerDetail: detail,
			ChampionVersion: championVersion(view, p.GetModel())}
		cmd := &fsmv1.RetrainJobCreate{Header: n.systemHeader(detail), Job: job}
		if !sched.IsZero() {
			cmd.ScheduleTime = timestamppb.New(sched)
		}
		if _, _, err := n.applyLocal(ctx, cmd); err != nil {
			n.warnOnce(m, p.GetName(), "cannot start a retraining job", err, "policy", p.GetName())
			continue
		}
		n.logger.Info("retraining job started", "policy", p.GetName(), "model", p.GetModel(), "job", job.GetId(), "trigger", trigger, "detail", detail)
	}

	running := 0
	for _, j := range active {
		if j.GetState() == droverv1.RetrainJobState_RETRAIN_JOB_STATE_RUNNING || j.GetState() == droverv1.RetrainJobState_RETRAIN_JOB_STATE_FINISHING {
			running++
		}
	}
	limit := cmp.Or(n.cfg.RetrainMaxJobs, 2)
	// Oldest first, so that the queue is fair.
	slices.Reverse(active)
	for _, j := range active {
		if ctx.Err() != nil {
			return
		}
		var err error
		switch j.GetState() {
		case droverv1.RetrainJobState_RETRAIN_JOB_STATE_PENDING:
			err = n.startCollecting(ctx, view, j, m)
		case droverv1.RetrainJobState_RETRAIN_JOB_STATE_COLLECTING:
			err = n.maybeAssemble(ctx, view, j, m, now)
		case droverv1.RetrainJobState_RETRAIN_JOB_STATE_QUEUED:
			if running < limit {
				var placed bool
				placed, err = n.placeJob(ctx, view, j, m)
				if placed {
					running++
				}
			}
		case droverv1.RetrainJobState_RETRAIN_JOB_STATE_RUNNING:
			err = n.watchRunningJob(ctx, view, j, now)
		case droverv1.RetrainJobState_RETRAIN_JOB_STATE_FINISHING:
			_, _, err = n.applyLocal(ctx, &fsmv1.RetrainJobFinish{Header: n.systemHeader(""), Id: j.GetId(), RolloutId: newID("r")})
			if err == nil {
				n.logger.Info("retraining job finished", "job", j.GetId(), "model", j.GetModel())
			}
		}
		if err != nil && state.KindOf(err) != state.KindFailedPrecondition {
			n.warnOnce(m, j.GetId(), "retraining job", err, "job", j.GetId())
		}
	}
	for id := range m.seen {
		if !slices.ContainsFunc(active, func(j *droverv1.RetrainJob) bool { return j.GetId() == id }) {
			delete(m.seen, id)
		}
	}
}

func (n *Node) systemHeader(reason string) *fsmv1.Header {
	if len(reason) > state.MaxReasonLen {
		reason = reason[:state.MaxReasonLen]
	}
	return &fsmv1.Header{Actor: systemActor, Time: now(n), Reason: reason}
}

// warnOnce logs a warning unless the same one was logged last time for key.
func (n *Node) warnOnce(m *retrainMemory, key, msg string, err error, args ...any) {
	if m.warned[key] == err.Error() {
		return
	}
	m.warned[key] = err.Error()
	n.logger.Warn(msg, append(args, "err", err)...)
}

// championVersion is the version a model's agents mostly run as primary,
// or, when none runs it, its newest ready version; 0 when it has none.
func championVersion(view *state.Snapshot, model string) uint64 {
	count := map[uint64]int{}
	for _, a := range view.Agents(nil) {
		for _, as := range a.GetAssignments() {
			if as.GetModel() != model || as.GetRole() != droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY {
				continue
			}
			v := as.GetVersion()
			if as.GetAlias() != "" {
				if al := view.Alias(model, as.GetAlias()); al != nil {
					v = al.GetVersion()
				}
			}
			if v != 0 {
				count[v]++
			}
		}
	}
	var best uint64
	for v, c := range count {
		if c > count[best] || c == count[best] && v > best {
			best = v
		}
	}
	if best != 0 {
		return best
	}
	versions := view.Versions(model)
	for i := len(versions) - 1; i >= 0; i-- {
		if versions[i].GetState() == droverv1.VersionState_VERSION_STATE_READY {
			return versions[i].GetVersion()
		}
	}
	return 0
}

// policyTrigger returns the trigger that fires for a policy now, with
// what it saw, or "" when none does. A schedule also returns the
// scheduled time it fires for.
func (n *Node) policyTrigger(view *state.Snapshot, p *droverv1.RetrainPolicy, m *retrainMemory, now time.Time) (trigger, detail string, sched time.Time) {
	in := triggerInputs{champion: championVersion(view, p.GetModel())}
	tr := p.GetTriggers()
	if in.champion != 0 {
		if d := tr.GetDrift(); d != nil {
			in.drift = n.fleetDriftVerdicts(view, p.GetModel(), in.champion, int(cmp.Or(d.GetConsecutiveWindows(), state.DefaultDriftWindows)), m)
		}
		if a := tr.GetAccuracy(); a != nil {
			var agents []string
			for _, ag := range view.Agents(nil) {
				agents = append(agents, ag.GetId())
			}
			in.live, _ = n.metricWindows.sample(agents, p.GetModel(), in.champion, now.Add(-accuracyWindow(a)))
			if mv := view.Version(p.GetModel(), in.champion); mv != nil {
				if acc, ok := mv.GetMetrics()["accuracy"]; ok {
					in.registered = &acc
				}
			}
		}
	}
	return decideTrigger(p, in, now)
}

// triggerInputs are what a policy's triggers are judged on.
type triggerInputs struct {
	// champion is the version judged (0: the model has none).
	champion uint64
	// drift holds the verdicts of the fleet's newest merged drift windows
	// of the champion, newest first.
	drift []string
	// live is the champion's labelled live traffic over the accuracy
	// trigger's window, and registered the accuracy it was registered
	// with, if any.
	live       gates.Sample
	registered *float64
}

func accuracyWindow(a *droverv1.AccuracyTrigger) time.Duration {
	if w := a.GetWindow().AsDuration(); w > 0 {
		return w
	}
	return state.DefaultAccuracyWindow
}

// decideTrigger is the trigger that fires for a policy given what was
// seen, drift first, then accuracy, then the schedule; "" when none does.
// (Whether the policy may start a job at all — paused, cooling down, busy
// — is decided before.)
func decideTrigger(p *droverv1.RetrainPolicy, in triggerInputs, now time.Time) (trigger, detail string, sched time.Time) {
	tr := p.GetTriggers()
	if d := tr.GetDrift(); d != nil && in.champion != 0 {
		want := int(cmp.Or(d.GetConsecutiveWindows(), state.DefaultDriftWindows))
		if len(in.drift) >= want && !slices.ContainsFunc(in.drift[:want], func(v string) bool { return v != "drift" }) {
			return "drift", fmt.Sprintf("the fleet's drift verdict on %s:%d was drift for %d consecutive windows", p.GetModel(), in.champion, want), time.Time{}
		}
	}
	if a := tr.GetAccuracy(); a != nil && in.champion != 0 && in.live.Accuracy != nil && in.live.AccuracyRows >= cmp.Or(a.GetMinRows(), state.DefaultAccuracyRows) {
		acc, rows, window := *in.live.Accuracy, in.live.AccuracyRows, accuracyWindow(a)
		if a.Below != nil && acc < a.GetBelow() {
			return "accuracy", fmt.Sprintf("%s:%d's accuracy over the last %v was %.4g on %d labelled rows, below %g",
				p.GetModel(), in.champion, window, acc, rows, a.GetBelow()), time.Time{}
		}
		if base := in.registered; a.Drop != nil && base != nil && acc < *base-a.GetDrop() {
			return "accuracy", fmt.Sprintf("%s:%d's accuracy over the last %v was %.4g on %d labelled rows, down %.4g from the %.4g it was registered with (more than %g)",
				p.GetModel(), in.champion, window, acc, rows, *base-acc, *base, a.GetDrop()), time.Time{}
		}
	}
	if expr := tr.GetSchedule(); expr != "" {
		s, err := cron.Parse(expr)
		if err != nil {
			return "", "", time.Time{}
		}
		// The first scheduled time after the policy's last one (or its
		// creation): times missed while no leader was up fire once.
		from := p.GetCreateTime().AsTime()
		if last := p.GetStatus().GetLastScheduleTime(); last != nil && last.AsTime().After(from) {
			from = last.AsTime()
		}
		if next := s.Next(from); !next.IsZero() && !next.After(now) {
			for due := s.Next(next); !due.IsZero() && !due.After(now); due = s.Next(due) {
				next = due // the newest time due
			}
			return "schedule", fmt.Sprintf("scheduled (%s) for %s", expr, next.UTC().Format(time.RFC3339)), next
		}
	}
	return "", "", time.Time{}
}

// fleetDriftVerdicts judges the newest want windows of a version, each
// merged across the agents that reported one for that period, newest
// first.
func (n *Node) fleetDriftVerdicts(view *state.Snapshot, model string, version uint64, want int, m *retrainMemory) []string {
	ref, _ := view.DriftReference(model, version)
	if ref == nil {
		return nil
	}
	pkey := fmt.Sprintf("%s/%d", model, version)
	byStart := map[int64][]*droverv1.DriftWindow{}
	for _, w := range view.DriftWindows(model, version, nil, time.Time{}) {
		k := w.GetWindow().GetStart().AsTime().UnixNano()
		byStart[k] = append(byStart[k], w.GetWindow())
	}
	starts := slices.Sorted(maps.Keys(byStart))
	slices.Reverse(starts)
	if len(starts) > want {
		starts = starts[:want]
	}
	opts := state.DriftOptions(view.DriftSettings(model))
	var out []string
	for _, st := range starts {
		parts := byStart[st]
		key := fmt.Sprintf("%s/%d/%d", pkey, st, len(parts))
		v, ok := m.verdicts[key]
		if !ok {
			merged, err := sketch.MergeWindows(parts...)
			if err != nil {
				return nil
			}
			rep := ref.Evaluate(merged, opts)
			judged := false
			for _, f := range rep.Features {
				judged = judged || f.Verdict != "insufficient_data"
			}
			switch {
			case !judged:
				v = "insufficient_data"
			case rep.Dataset.Drifted:
				v = "drift"
			default:
				v = "no_drift"
			}
			if len(m.verdicts) > 10_000 {
				clear(m.verdicts)
			}
			m.verdicts[key] = v
		}
		out = append(out, v)
	}
	return out
}

// servingAgents are the live agents that run a model in any role.
func servingAgents(view *state.Snapshot, model string) []string {
	var out []string
	for _, a := range view.Agents(nil) {
		if a.GetStatus() != droverv1.AgentStatus_AGENT_STATUS_READY || a.GetDraining() {
			continue
		}
		if slices.ContainsFunc(a.GetAssignments(), func(as *droverv1.Assignment) bool { return as.GetModel() == model }) {
			out = append(out, a.GetId())
		}
	}
	slices.Sort(out)
	return out
}

// startCollecting asks the agents that serve the model for their labelled
// rows, or makes the data set at once when there are none to ask.
func (n *Node) startCollecting(ctx context.Context, view *state.Snapshot, j *droverv1.RetrainJob, m *retrainMemory) error {
	if j.GetSpec().GetDataset().GetFeedback() {
		if agents := servingAgents(view, j.GetModel()); len(agents) > 0 {
			_, _, err := n.applyLocal(ctx, &fsmv1.RetrainJobCollect{Header: n.systemHeader(""), Id: j.GetId(), AgentIds: agents})
			return err
		}
	}
	return n.assemble(ctx, view, j)
}

// maybeAssemble makes a collecting job's data set once every agent asked
// has handed in its rows, gone down, or run out of time.
func (n *Node) maybeAssemble(ctx context.Context, view *state.Snapshot, j *droverv1.RetrainJob, m *retrainMemory, now time.Time) error {
	first, ok := m.seen[j.GetId()]
	if !ok {
		first = now
		if t := j.GetUpdateTime().AsTime(); t.Before(now) && len(j.GetExports()) == 0 {
			first = t // the collect command's time: a new leader does not start the wait again
		}
		m.seen[j.GetId()] = first
	}
	timeout := state.DefaultCollectTimeout
	if d := j.GetSpec().GetDataset().GetCollectTimeout().AsDuration(); d > 0 {
		timeout = d
	}
	waiting := 0
	for _, id := range j.GetExportAgents() {
		if slices.ContainsFunc(j.GetExports(), func(x *droverv1.LabelledExport) bool { return x.GetAgentId() == id }) {
			continue
		}
		if a := view.Agent(id); a != nil && a.GetStatus() == droverv1.AgentStatus_AGENT_STATUS_READY {
			waiting++
		}
	}
	if waiting > 0 && now.Before(first.Add(timeout)) {
		return nil
	}
	return n.assemble(ctx, view, j)
}

// assemble makes a job's data set: the recipe's base data set and the
// labelled rows handed in, concatenated into one CSV, stored as a blob
// and a new version of the output data set, and validated against the
// champion's schema and the recipe. The job fails when the data cannot be
// read or made at all; a data set that fails validation fails it with the
// report.
func (n *Node) assemble(ctx context.Context, view *state.Snapshot, j *droverv1.RetrainJob) error {
	recipe := j.GetSpec().GetDataset()
	fail := func(format string, args ...any) error {
		reason := fmt.Sprintf(format, args...)
		_, _, err := n.applyLocal(ctx, &fsmv1.RetrainJobFail{Header: n.systemHeader(""), Id: j.GetId(), Reason: reason})
		return err
	}
	var base io.Reader
	var baseName string
	if b := recipe.GetBase(); b != "" {
		var dv *droverv1.DatasetVersion
		for _, v := range view.DatasetVersions(b) {
			if recipe.GetBaseVersion() == 0 && (dv == nil || v.GetVersion() > dv.GetVersion()) || v.GetVersion() == recipe.GetBaseVersion() {
				dv = v
			}
		}
		if dv == nil {
			return fail("the base data set %s has no version %d", b, recipe.GetBaseVersion())
		}
		rc, err := n.openBlob(ctx, dv.GetContent().GetDigest())
		if err != nil {
			return fmt.Errorf("the base data set %s:%d: %w", b, dv.GetVersion(), err)
		}
		defer rc.Close()
		base, baseName = rc, fmt.Sprintf("%s:%d", b, dv.GetVersion())
		switch dv.GetFormat() {
		case "", "csv":
		case "parquet":
			csv, err := n.parquetAsCSV(rc)
			if err != nil {
				return fail("the base data set %s: %v", baseName, err)
			}
			base = csv
		default:
			return fail("the base data set %s is %s; retraining reads CSV and Parquet", baseName, dv.GetFormat())
		}
	}
	var labelled []io.Reader
	var handedIn []string
	for _, x := range j.GetExports() {
		if x.GetContent() == nil || x.GetRows() == 0 {
			continue
		}
		rc, err := n.openBlob(ctx, x.GetContent().GetDigest())
		if err != nil {
			return fmt.Errorf("labelled rows of agent %s: %w", x.GetAgentId(), err)
		}
		defer rc.Close()
		labelled = append(labelled, rc)
		handedIn = append(handedIn, fmt.Sprintf("%s (%d rows)", agentName(view, x.GetAgentId()), x.GetRows()))
	}
	if base == nil && len(labelled) == 0 {
		return fail("no data: the recipe has no base data set and no agent handed in labelled rows (%d asked)", len(j.GetExportAgents()))
	}
	tmp, err := os.CreateTemp(n.scratchDir(), "dataset-*.csv")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	rows, err := training.Assemble(tmp, base, labelled, recipe.GetTarget())
	if err != nil {
		return fail("assembling the data set: %v", err)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	d, size, err := digest.FromReader(tmp)
	if err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := n.blobs.Ingest(ctx, tmp, d, size); err != nil {
		return fmt.Errorf("storing the data set: %w", err)
	}
	ref := &droverv1.BlobRef{Digest: d.String(), SizeBytes: size}
	if _, err := n.replicateBlob(ctx, ref); err != nil {
		return err
	}
	// Validation: the champion's schema (if it has one), the recipe's
	// target and row count.
	var schema *droverv1.FeatureSchema
	if mv := view.Version(j.GetModel(), j.GetChampionVersion()); mv != nil {
		schema = mv.GetSchema()
	}
	val := &droverv1.DatasetValidation{Rows: uint64(rows)}
	t, err := validate.ReadFile(tmp.Name(), schema, recipe.GetTarget(), recipe.GetIgnore())
	if err == nil && len(schema.GetInputs()) == 0 {
		// A champion without a schema: the data set is checked as a whole
		// (rows, target), its columns as they are.
		schema = schemaOf(t, recipe.GetTarget())
	}
	if err != nil {
		val.Expectations = []*droverv1.DatasetExpectation{{Name: "readable", Detail: err.Error()}}
	} else {
		rep := validate.Check(t, schema, validate.Expectations{MinRows: int(cmp.Or(recipe.GetMinRows(), state.DefaultMinRows)), Target: recipe.GetTarget()})
		val.Passed, val.Rows = rep.Passed, uint64(rep.Rows)
		for _, x := range rep.Expectations {
			val.Expectations = append(val.Expectations, &droverv1.DatasetExpectation{Name: x.Name, Column: x.Column, Passed: x.Passed, Detail: x.Detail})
		}
	}
	output := cmp.Or(recipe.GetOutput(), j.GetModel()+"-retrain")
	desc := fmt.Sprintf("assembled for retraining job %s of %s", j.GetId(), j.GetModel())
	if baseName != "" {
		desc += ": " + baseName
	}
	if len(handedIn) > 0 {
		desc += ", labelled rows from " + strings.Join(handedIn, ", ")
	}
	if len(desc) > 1000 {
		desc = desc[:1000]
	}
	dv := &droverv1.DatasetVersion{Dataset: output, Content: ref, Format: "csv", Rows: int64(rows), Description: desc,
		Labels: map[string]string{"model": j.GetModel(), "job": j.GetId(), "policy": j.GetPolicy()}}
	_, _, err = n.applyLocal(ctx, &fsmv1.RetrainJobDataset{Header: n.systemHeader(""), Id: j.GetId(), Dataset: dv, Validation: val})
	if err == nil {
		n.logger.Info("retraining data set made", "job", j.GetId(), "dataset", output, "rows", rows, "valid", val.GetPassed())
	}
	return err
}

// parquetAsCSV reads a Parquet data set and returns it as CSV, which is
// what data sets are assembled and trained from.
func (n *Node) parquetAsCSV(r io.Reader) (io.Reader, error) {
	tmp, err := os.CreateTemp(n.scratchDir(), "base-*.parquet")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := io.Copy(tmp, r); err != nil {
		return nil, err
	}
	t, err := tabular.Read(tmp.Name(), tabular.Options{})
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := tabular.WriteCSV(&buf, t); err != nil {
		return nil, err
	}
	return &buf, nil
}

// schemaOf is a schema that takes a table's columns (but the target) as
// they are: numbers or text, nulls allowed.
func schemaOf(t *tabular.Table, target string) *droverv1.FeatureSchema {
	s := &droverv1.FeatureSchema{}
	for _, c := range t.Columns {
		if c.Name == target {
			continue
		}
		f := &droverv1.Feature{Name: c.Name, Datatype: "BYTES", Nullable: true}
		if c.Kind == tabular.Numeric {
			f.Datatype, f.Kind = "FP64", droverv1.FeatureKind_FEATURE_KIND_NUMERIC
		}
		s.Inputs = append(s.Inputs, f)
	}
	return s
}

func agentName(view *state.Snapshot, id string) string {
	if a := view.Agent(id); a != nil {
		return a.GetName()
	}
	return id
}

// openBlob opens a blob from this node's store or, when it does not hold
// it yet, from a peer that does.
func (n *Node) openBlob(ctx context.Context, dg string) (io.ReadCloser, error) {
	d, err := digest.Parse(dg)
	if err != nil {
		return nil, err
	}
	f, err := n.blobs.Open(d)
	if err == nil {
		return f, nil
	}
	if !errors.Is(err, blob.ErrNotFound) {
		return nil, err
	}
	resp := n.peerBlob(ctx, http.MethodGet, d, nil)
	if resp == nil {
		return nil, fmt.Errorf("blob %s: no reachable node holds it", d)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("blob %s: a peer answered %s", d, resp.Status)
	}
	return resp.Body, nil
}

// placeJob puts a queued job on the best agent for it, if there is one.
func (n *Node) placeJob(ctx context.Context, view *state.Snapshot, j *droverv1.RetrainJob, m *retrainMemory) (bool, error) {
	agent, why := n.chooseAgent(view, j)
	if agent == "" {
		n.warnOnce(m, j.GetId(), "retraining job waits for an agent", errors.New(why), "job", j.GetId())
		return false, nil
	}
	_, _, err := n.applyLocal(ctx, &fsmv1.RetrainJobPlace{Header: n.systemHeader(""), Id: j.GetId(), Attempt: j.GetAttempt() + 1, AgentId: agent})
	if err != nil {
		return false, err
	}
	n.logger.Info("retraining job placed", "job", j.GetId(), "agent", agentName(view, agent), "attempt", j.GetAttempt()+1)
	return true, nil
}

// gpuCapacity is what placement knows of an agent's GPUs.
type gpuCapacity struct {
	healthy  int
	maxFree  uint64 // the most free memory on one healthy GPU
	anyGPUs  bool
	jobsHere int
}

// chooseAgent picks the agent for a job: among the live, undrained agents
// not under disk pressure matching the placement's selector that can train with the runner and
// that the job was not lost on, those with the GPUs and free GPU memory
// asked for (or, with allow_cpu and none of those free, those with no
// GPU), the one running fewest jobs, then with the most free GPU memory,
// then by name. It returns "" and why when there is none.
func (n *Node) chooseAgent(view *state.Snapshot, j *droverv1.RetrainJob) (string, string) {
	spec := j.GetSpec()
	pl := spec.GetPlacement()
	needGPUs := int(pl.GetGpus())
	if pl.GetMinFreeGpuMemoryBytes() > 0 && needGPUs == 0 {
		needGPUs = 1
	}
	jobsOn := map[string]int{}
	for _, other := range view.RetrainJobs(state.JobQuery{Active: true}) {
		if other.GetAgentId() != "" {
			jobsOn[other.GetAgentId()]++
		}
	}
	type cand struct {
		id, name string
		cap      gpuCapacity
	}
	var gpu, cpu []cand
	considered := 0
	for _, a := range view.Agents(pl.GetSelector()) {
		// An agent under disk pressure could not keep the data set, the
		// champion or the candidate.
		if a.GetStatus() != droverv1.AgentStatus_AGENT_STATUS_READY || a.GetDraining() || a.GetDiskPressure() || slices.Contains(j.GetExcludedAgents(), a.GetId()) {
			continue
		}
		if tr := a.GetInventory().GetTrainers(); !slices.Contains(tr, spec.GetRunner()) && !(len(tr) == 0 && spec.GetRunner() == state.NativeRunner) {
			continue
		}
		considered++
		c := cand{id: a.GetId(), name: a.GetName(), cap: n.gpuCapacity(a)}
		c.cap.jobsHere = jobsOn[a.GetId()]
		switch {
		case c.cap.healthy >= needGPUs && (needGPUs == 0 || c.cap.maxFree >= pl.GetMinFreeGpuMemoryBytes()):
			if needGPUs > 0 || c.cap.anyGPUs {
				gpu = append(gpu, c)
			} else {
				cpu = append(cpu, c)
			}
		case !c.cap.anyGPUs && pl.GetAllowCpu():
			cpu = append(cpu, c)
		}
	}
	pick := func(cs []cand) string {
		slices.SortFunc(cs, func(a, b cand) int {
			return cmp.Or(cmp.Compare(a.cap.jobsHere, b.cap.jobsHere), cmp.Compare(b.cap.maxFree, a.cap.maxFree), strings.Compare(a.name, b.name))
		})
		return cs[0].id
	}
	switch {
	case len(gpu) > 0:
		return pick(gpu), ""
	case len(cpu) > 0:
		return pick(cpu), ""
	case considered == 0:
		return "", fmt.Sprintf("no live agent matching %v can train with %q (excluded: %d)", pl.GetSelector(), spec.GetRunner(), len(j.GetExcludedAgents()))
	}
	return "", fmt.Sprintf("none of the %d agents that could has %d healthy GPUs with %d bytes free%s", considered, needGPUs,
		pl.GetMinFreeGpuMemoryBytes(), map[bool]string{true: "", false: ", and CPU-only agents are not allowed"}[pl.GetAllowCpu()])
}

// gpuCapacity reads an agent's healthy GPUs and their free memory from its
// inventory, GPU health and the newest telemetry the leader holds (a GPU
// with no telemetry yet counts as empty).
func (n *Node) gpuCapacity(a *droverv1.Agent) gpuCapacity {
	var c gpuCapacity
	used := map[int32]float64{}
	if ws := n.telemetry.get(a.GetId()); len(ws) > 0 {
		for _, g := range ws[len(ws)-1].GetGpus() {
			used[g.GetIndex()] = g.GetMemoryUsedBytesMax()
		}
	}
	health := map[int32]string{}
	for _, h := range a.GetGpuHealth() {
		health[h.GetIndex()] = h.GetHealth()
	}
	for _, g := range a.GetInventory().GetGpus() {
		c.anyGPUs = true
		if h, ok := health[g.GetIndex()]; ok && h != "healthy" {
			continue
		}
		c.healthy++
		free := g.GetMemoryBytes()
		if u := uint64(used[g.GetIndex()]); u < free {
			free -= u
		} else {
			free = 0
		}
		c.maxFree = max(c.maxFree, free)
	}
	return c
}

// watchRunningJob requeues a job whose agent went down and fails one past
// its timeout.
func (n *Node) watchRunningJob(ctx context.Context, view *state.Snapshot, j *droverv1.RetrainJob, now time.Time) error {
	a := view.Agent(j.GetAgentId())
	switch {
	case a == nil:
		_, _, err := n.applyLocal(ctx, &fsmv1.RetrainJobRequeue{Header: n.systemHeader(""), Id: j.GetId(), Attempt: j.GetAttempt(), Reason: "the agent no longer exists"})
		return err
	case a.GetStatus() == droverv1.AgentStatus_AGENT_STATUS_DOWN:
		reason := "it stopped heartbeating"
		if t := a.GetStatusTime(); t != nil {
			reason = fmt.Sprintf("down since %s", t.AsTime().UTC().Format(time.RFC3339))
		}
		_, _, err := n.applyLocal(ctx, &fsmv1.RetrainJobRequeue{Header: n.systemHeader(""), Id: j.GetId(), Attempt: j.GetAttempt(), Reason: reason})
		if err == nil {
			n.logger.Warn("retraining job's agent lost; queued again", "job", j.GetId(), "agent", a.GetName(), "attempt", j.GetAttempt())
		}
		return err
	case a.GetDraining():
		_, _, err := n.applyLocal(ctx, &fsmv1.RetrainJobRequeue{Header: n.systemHeader(""), Id: j.GetId(), Attempt: j.GetAttempt(), Reason: "the agent is draining"})
		return err
	}
	if k := len(j.GetAttempts()); k > 0 {
		timeout := state.PolicyTimeout(j.GetSpec())
		if start := j.GetAttempts()[k-1].GetStartTime().AsTime(); now.After(start.Add(timeout)) {
			_, _, err := n.applyLocal(ctx, &fsmv1.RetrainJobFail{Header: n.systemHeader(""), Id: j.GetId(), Attempt: j.GetAttempt(),
				Reason: fmt.Sprintf("timed out: attempt %d on %s ran longer than %v", j.GetAttempt(), j.GetAgentName(), timeout)})
			return err
		}
	}
	return nil
}
