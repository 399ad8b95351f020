package state

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/internal/cron"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Retraining: policies say when and how a model is retrained; jobs are the
// retrainings. A job moves through its states by Raft commands the
// leader's retrain controller makes (each guarded by the state, and the
// attempt, it was made for, so that one applied twice or by a deposed
// leader is refused) and by the reports of the agents that hand in data
// and train.

// Retraining limits and defaults.
const (
	// MaxJobLogLines is how many of a job's newest log lines are kept.
	MaxJobLogLines = 200
	// MaxJobsKept is how many jobs are kept per policy, the newest.
	MaxJobsKept = 1000
	// MaxJobAttempts bounds a policy's max_attempts.
	MaxJobAttempts = 10

	DefaultRetrainCooldown = time.Hour
	DefaultRetrainTimeout  = time.Hour
	DefaultJobAttempts     = 3
	DefaultDriftWindows    = 3
	DefaultAccuracyWindow  = 10 * time.Minute
	DefaultAccuracyRows    = 100
	DefaultFeedbackRows    = 10_000
	DefaultMinRows         = 50
	DefaultCollectTimeout  = 30 * time.Second
)

// NativeRunner is the runner built into every agent.
const NativeRunner = "native"

func policyResource(name string) string { return "retrain/policies/" + name }
func jobResource(id string) string      { return "retrain/jobs/" + id }

// JobActive reports whether a job has not ended.
func JobActive(j *droverv1.RetrainJob) bool {
	switch j.GetState() {
	case droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED, droverv1.RetrainJobState_RETRAIN_JOB_STATE_FAILED,
		droverv1.RetrainJobState_RETRAIN_JOB_STATE_CANCELLED:
		return false
	}
	return true
}

// JobStateName is a job state's short name: "running", "succeeded", ...
func JobStateName(s droverv1.RetrainJobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "RETRAIN_JOB_STATE_"))
}

// PolicyCooldown, PolicyTimeout and PolicyAttempts are a policy's settings
// with their defaults.
func PolicyCooldown(p *droverv1.RetrainPolicy) time.Duration {
	if p.GetCooldown() == nil {
		return DefaultRetrainCooldown
	}
	return p.GetCooldown().AsDuration()
}

// PolicyTimeout is how long a job of the policy may run.
func PolicyTimeout(p *droverv1.RetrainPolicy) time.Duration {
	if d := p.GetTimeout().AsDuration(); d > 0 {
		return d
	}
	return DefaultRetrainTimeout
}

// PolicyAttempts is how many agents a job of the policy is tried on.
func PolicyAttempts(p *droverv1.RetrainPolicy) uint32 {
	if n := p.GetMaxAttempts(); n > 0 {
		return n
	}
	return DefaultJobAttempts
}

// PromotionMetric is the metric a policy compares candidates by: its own,
// or accuracy (rmse for a regression).
func PromotionMetric(p *droverv1.RetrainPolicy) string {
	if m := p.GetPromotion().GetMetric(); m != "" {
		return m
	}
	if p.GetParams()["task"] == "regression" {
		return "rmse"
	}
	return "accuracy"
}

// LowerIsBetter reports whether a smaller value of a metric is better.
func LowerIsBetter(metric string) bool {
	switch metric {
	case "log_loss", "rmse", "mae", "mse":
		return true
	}
	return false
}

// ValidateRetrainPolicy checks a policy as given (its status aside).
func ValidateRetrainPolicy(p *droverv1.RetrainPolicy) error {
	if err := ValidateName("policy name", p.GetName()); err != nil {
		return err
	}
	if err := ValidateName("model", p.GetModel()); err != nil {
		return err
	}
	if p.GetRunner() == "" {
		return Invalidf("runner: required (%q, or the name of an exec trainer or a training plugin the agents have)", NativeRunner)
	}
	if err := ValidateName("runner", p.GetRunner()); err != nil {
		return err
	}
	if err := ValidateStringMap("params", p.GetParams()); err != nil {
		return err
	}
	for _, f := range [...]struct {
		name string
		d    *durationpb.Duration
	}{{"cooldown", p.GetCooldown()}, {"timeout", p.GetTimeout()},
		{"dataset.collect_timeout", p.GetDataset().GetCollectTimeout()}, {"triggers.accuracy.window", p.GetTriggers().GetAccuracy().GetWindow()}} {
		if f.d != nil && (f.d.CheckValid() != nil || f.d.AsDuration() < 0) {
			return Invalidf("%s: %v is not a duration of zero or more", f.name, f.d.AsDuration())
		}
	}
	if n := p.GetMaxAttempts(); n > MaxJobAttempts {
		return Invalidf("max_attempts: %d is more than %d", n, MaxJobAttempts)
	}
	tr := p.GetTriggers()
	if d := tr.GetDrift(); d != nil && d.GetConsecutiveWindows() > MaxDriftWindows {
		return Invalidf("triggers.drift.consecutive_windows: %d is more than the %d windows the hub keeps", d.GetConsecutiveWindows(), MaxDriftWindows)
	}
	if a := tr.GetAccuracy(); a != nil {
		if a.Below == nil && a.Drop == nil {
			return Invalidf("triggers.accuracy: give below (a threshold) or drop (a fall from the champion's accuracy), or both")
		}
		if a.Below != nil && !(a.GetBelow() > 0 && a.GetBelow() <= 1) {
			return Invalidf("triggers.accuracy.below: %v is not in (0, 1]", a.GetBelow())
		}
		if a.Drop != nil && !(a.GetDrop() > 0 && a.GetDrop() <= 1) {
			return Invalidf("triggers.accuracy.drop: %v is not in (0, 1]", a.GetDrop())
		}
	}
	if s := tr.GetSchedule(); s != "" {
		if _, err := cron.Parse(s); err != nil {
			return Invalidf("triggers.schedule: %v", err)
		}
	}
	ds := p.GetDataset()
	if ds.GetTarget() == "" {
		return Invalidf("dataset.target: required: the column to predict")
	}
	if ds.GetBase() == "" && !ds.GetFeedback() {
		return Invalidf("dataset: give a base data set, feedback: true, or both")
	}
	if b := ds.GetBase(); b != "" {
		if err := ValidateName("dataset.base", b); err != nil {
			return err
		}
	}
	if o := ds.GetOutput(); o != "" {
		if err := ValidateName("dataset.output", o); err != nil {
			return err
		}
	}
	if err := ValidateLabels("placement.selector", p.GetPlacement().GetSelector()); err != nil {
		return err
	}
	if m := p.GetPromotion().GetMargin(); math.IsNaN(m) || math.IsInf(m, 0) || m < 0 {
		return Invalidf("promotion.margin: %v is not a finite number of zero or more", m)
	}
	if r := p.GetRollout(); r != nil {
		if err := ValidateLabels("rollout.selector", r.GetSelector()); err != nil {
			return err
		}
		if len(r.GetSteps()) > 0 {
			if err := ValidateRolloutSteps(r.GetSteps()); err != nil {
				return Invalidf("rollout.steps: %v", err)
			}
		}
	}
	return nil
}

// DefaultRolloutSteps are a winner's rollout steps when its policy names
// none: a canary at weight 10 judged by its error rate for a minute, then
// every agent.
func DefaultRolloutSteps() []*droverv1.RolloutStep {
	return []*droverv1.RolloutStep{
		{Percent: 50, Weight: 10, Bake: durationpb.New(time.Minute),
			Gates: []*droverv1.Gate{{Name: "errors", Metric: "error_rate", Max: proto.Float64(0.01), MinSamples: 50}}},
		{Percent: 100},
	}
}

func getPolicy(t *txn, name string) (*droverv1.RetrainPolicy, error) {
	raw, err := t.First(tableRetrainPolicies, "id", name)
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, NotFoundf("no retraining policy %q", name)
	}
	return proto.CloneOf(raw.(*droverv1.RetrainPolicy)), nil
}

func getJob(t *txn, id string) (*droverv1.RetrainJob, error) {
	raw, err := t.First(tableRetrainJobs, "id", id)
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, NotFoundf("no retraining job %s", id)
	}
	return proto.CloneOf(raw.(*droverv1.RetrainJob)), nil
}

// putJob stores a job; dispatch says whether what agents are asked to do
// may have changed, which wakes the desired-state watches.
func putJob(t *txn, j *droverv1.RetrainJob, dispatch bool) error {
	j.UpdateTime = t.c.timestamp()
	j.ModifyIndex = t.c.Index
	if err := t.Insert(tableRetrainJobs, j); err != nil {
		return err
	}
	if dispatch {
		return t.Insert(tableRetrainDispatch, &metaRow{Key: "dispatch", Value: t.c.Index})
	}
	return nil
}

// PutRetrainPolicy creates or replaces a policy, keeping its status.
func (s *Store) PutRetrainPolicy(c Change, in *droverv1.RetrainPolicy) (*droverv1.RetrainPolicy, error) {
	var out *droverv1.RetrainPolicy
	err := s.write(c, func(t *txn) error {
		if err := ValidateRetrainPolicy(in); err != nil {
			return err
		}
		if _, err := getModel(t, in.GetModel()); err != nil {
			return err
		}
		p := proto.CloneOf(in)
		p.UpdatedBy, p.UpdateTime, p.ModifyIndex = c.Actor, c.timestamp(), c.Index
		verb := "retrain.policy.create"
		if raw, _ := t.First(tableRetrainPolicies, "id", p.GetName()); raw != nil {
			old := raw.(*droverv1.RetrainPolicy)
			p.Status, p.CreateTime, p.CreateIndex = old.GetStatus(), old.GetCreateTime(), old.GetCreateIndex()
			verb = "retrain.policy.update"
		} else {
			p.Status, p.CreateTime, p.CreateIndex = nil, c.timestamp(), c.Index
		}
		if err := t.Insert(tableRetrainPolicies, p); err != nil {
			return err
		}
		out = p
		return t.audit(verb, policyResource(p.GetName()), fmt.Sprintf("policy %s retrains %s with %s", p.GetName(), p.GetModel(), p.GetRunner()))
	})
	return out, err
}

// DeleteRetrainPolicy deletes a policy; its jobs are kept.
func (s *Store) DeleteRetrainPolicy(c Change, name string) error {
	return s.write(c, func(t *txn) error {
		p, err := getPolicy(t, name)
		if err != nil {
			return err
		}
		if err := t.Delete(tableRetrainPolicies, p); err != nil {
			return err
		}
		return t.audit("retrain.policy.delete", policyResource(name), "policy "+name+" deleted")
	})
}

// CreateRetrainJob starts a job of a policy. It is refused while the
// policy has an active job, and within the policy's cool-down unless
// forced; scheduleTime, for a scheduled job, is recorded as the policy's
// last scheduled time.
func (s *Store) CreateRetrainJob(c Change, in *droverv1.RetrainJob, force bool, scheduleTime *timestamppb.Timestamp) (*droverv1.RetrainJob, error) {
	var out *droverv1.RetrainJob
	err := s.write(c, func(t *txn) error {
		p, err := getPolicy(t, in.GetPolicy())
		if err != nil {
			return err
		}
		if raw, _ := t.First(tableRetrainJobs, "id", in.GetId()); raw != nil {
			return AlreadyExistsf("retraining job %s exists", in.GetId())
		}
		it, err := t.Get(tableRetrainJobs, "policy", p.GetName())
		if err != nil {
			return err
		}
		jobs := collect[*droverv1.RetrainJob](it)
		for _, j := range jobs {
			if JobActive(j) {
				return Preconditionf("policy %s already has job %s %s; wait for it or cancel it (drover retrain jobs cancel %s)",
					p.GetName(), j.GetId(), JobStateName(j.GetState()), j.GetId())
			}
		}
		if last := p.GetStatus().GetLastTriggerTime(); last != nil && !force {
			if until := last.AsTime().Add(PolicyCooldown(p)); c.Time.Before(until) {
				return Preconditionf("policy %s is cooling down until %s (its last job started %s); force it to start one anyway",
					p.GetName(), until.UTC().Format(time.RFC3339), last.AsTime().UTC().Format(time.RFC3339))
			}
		}
		if v := in.GetChampionVersion(); v != 0 {
			if raw, _ := t.First(tableVersions, "id", p.GetModel(), v); raw == nil {
				return NotFoundf("model %q has no version %d to be the champion", p.GetModel(), v)
			}
		}
		if err := ValidateText("trigger", in.GetTriggerDetail(), MaxReasonLen); err != nil {
			return err
		}
		j := &droverv1.RetrainJob{
			Id: in.GetId(), Policy: p.GetName(), Model: p.GetModel(), State: droverv1.RetrainJobState_RETRAIN_JOB_STATE_PENDING,
			Trigger: in.GetTrigger(), TriggerDetail: in.GetTriggerDetail(), ChampionVersion: in.GetChampionVersion(),
			CreatedBy: c.Actor, CreateTime: c.timestamp(), CreateIndex: c.Index,
		}
		spec := proto.CloneOf(p)
		spec.Status = nil
		j.Spec = spec
		if err := putJob(t, j, true); err != nil {
			return err
		}
		// The oldest ended jobs of the policy go beyond the bound.
		if len(jobs)+1 > MaxJobsKept {
			slices.SortFunc(jobs, func(a, b *droverv1.RetrainJob) int {
				if c := a.GetCreateTime().AsTime().Compare(b.GetCreateTime().AsTime()); c != 0 {
					return c
				}
				return strings.Compare(a.GetId(), b.GetId())
			})
			for _, old := range jobs[:len(jobs)+1-MaxJobsKept] {
				if err := t.Delete(tableRetrainJobs, old); err != nil {
					return err
				}
			}
		}
		if p.Status == nil {
			p.Status = &droverv1.RetrainPolicyStatus{}
		}
		p.Status.LastTriggerTime, p.Status.LastTrigger, p.Status.LastJobId = c.timestamp(), j.GetTrigger(), j.GetId()
		if scheduleTime != nil {
			p.Status.LastScheduleTime = scheduleTime
		}
		if err := t.Insert(tableRetrainPolicies, p); err != nil {
			return err
		}
		out = j
		summary := fmt.Sprintf("%s job of %s by policy %s", j.GetTrigger(), j.GetModel(), p.GetName())
		if d := j.GetTriggerDetail(); d != "" {
			summary += ": " + d
		}
		return t.audit("retrain.job.create", jobResource(j.GetId()), summary)
	})
	return out, err
}

// updateJob applies fn to a job in the given states, and audits it.
func (s *Store) updateJob(c Change, id, verb string, states []droverv1.RetrainJobState, fn func(t *txn, j *droverv1.RetrainJob) (string, error)) (*droverv1.RetrainJob, error) {
	var out *droverv1.RetrainJob
	err := s.write(c, func(t *txn) error {
		j, err := getJob(t, id)
		if err != nil {
			return err
		}
		if states != nil && !slices.Contains(states, j.GetState()) {
			return Preconditionf("retraining job %s is %s", id, JobStateName(j.GetState()))
		}
		summary, err := fn(t, j)
		if err != nil {
			return err
		}
		if err := putJob(t, j, true); err != nil {
			return err
		}
		out = j
		return t.audit(verb, jobResource(id), summary)
	})
	return out, err
}

var (
	statePending    = droverv1.RetrainJobState_RETRAIN_JOB_STATE_PENDING
	stateCollecting = droverv1.RetrainJobState_RETRAIN_JOB_STATE_COLLECTING
	stateQueued     = droverv1.RetrainJobState_RETRAIN_JOB_STATE_QUEUED
	stateRunning    = droverv1.RetrainJobState_RETRAIN_JOB_STATE_RUNNING
	stateFinishing  = droverv1.RetrainJobState_RETRAIN_JOB_STATE_FINISHING
	stateSucceeded  = droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED
	stateFailed     = droverv1.RetrainJobState_RETRAIN_JOB_STATE_FAILED
	stateCancelled  = droverv1.RetrainJobState_RETRAIN_JOB_STATE_CANCELLED
)

// RetrainJobCollect asks agents for their labelled rows for a pending job.
func (s *Store) RetrainJobCollect(c Change, id string, agentIDs []string) (*droverv1.RetrainJob, error) {
	return s.updateJob(c, id, "retrain.job.collect", []droverv1.RetrainJobState{statePending}, func(t *txn, j *droverv1.RetrainJob) (string, error) {
		for _, a := range agentIDs {
			if _, err := getAgent(t, a); err != nil {
				return "", err
			}
		}
		j.State, j.ExportAgents = stateCollecting, slices.Clone(agentIDs)
		return fmt.Sprintf("labelled rows asked of %d agents", len(agentIDs)), nil
	})
}

// RetrainJobDataset records a job's data set, made by the leader: the
// registry version (created here) and its validation. A data set that
// failed validation fails the job.
func (s *Store) RetrainJobDataset(c Change, id string, dv *droverv1.DatasetVersion, val *droverv1.DatasetValidation) (*droverv1.RetrainJob, error) {
	return s.updateJob(c, id, "retrain.job.dataset", []droverv1.RetrainJobState{statePending, stateCollecting}, func(t *txn, j *droverv1.RetrainJob) (string, error) {
		if dv == nil {
			return "", Invalidf("no data set")
		}
		v, err := createDatasetVersion(t, dv)
		if err != nil {
			return "", err
		}
		j.Dataset, j.DatasetVersion, j.DatasetContent, j.Validation = v.GetDataset(), v.GetVersion(), v.GetContent(), val
		j.Exports = nil // handed in and assembled: the blobs may go
		summary := fmt.Sprintf("data set %s:%d (%d rows)", v.GetDataset(), v.GetVersion(), v.GetRows())
		if !val.GetPassed() {
			var failed []string
			for _, x := range val.GetExpectations() {
				if !x.GetPassed() {
					failed = append(failed, x.GetName())
				}
			}
			j.State, j.EndTime = stateFailed, t.c.timestamp()
			j.Message = fmt.Sprintf("the data set %s:%d failed %d of %d expectations: %s", v.GetDataset(), v.GetVersion(),
				len(failed), len(val.GetExpectations()), strings.Join(failed, ", "))
			return summary + "; " + j.Message, nil
		}
		j.State = stateQueued
		return summary + " passed validation", nil
	})
}

// PlaceRetrainJob puts a queued job on an agent as its next attempt, and
// starts tracking its run with the first.
func (s *Store) PlaceRetrainJob(c Change, id string, attempt uint32, agentID string) (*droverv1.RetrainJob, error) {
	return s.updateJob(c, id, "retrain.job.place", []droverv1.RetrainJobState{stateQueued}, func(t *txn, j *droverv1.RetrainJob) (string, error) {
		if attempt != j.GetAttempt()+1 {
			return "", Preconditionf("retraining job %s is at attempt %d, not %d", id, j.GetAttempt(), attempt-1)
		}
		a, err := getAgent(t, agentID)
		if err != nil {
			return "", err
		}
		if slices.Contains(j.GetExcludedAgents(), agentID) {
			return "", Preconditionf("retraining job %s was lost on agent %s before", id, a.GetName())
		}
		j.State, j.AgentId, j.AgentName, j.Attempt = stateRunning, a.GetId(), a.GetName(), attempt
		j.Phase, j.Progress, j.Stage = "placed", 0, ""
		j.Attempts = append(j.Attempts, &droverv1.RetrainAttempt{Attempt: attempt, AgentId: a.GetId(), AgentName: a.GetName(), StartTime: t.c.timestamp()})
		if j.StartTime == nil {
			j.StartTime = t.c.timestamp()
		}
		if j.GetRunId() == "" {
			r, err := createRun(t, &droverv1.Run{
				Id: "run-" + strings.TrimPrefix(j.GetId(), "job-"), Model: j.GetModel(), Runner: j.GetSpec().GetRunner(),
				Params: j.GetSpec().GetParams(), Tags: map[string]string{"policy": j.GetPolicy(), "job": j.GetId(), "trigger": j.GetTrigger()},
				DatasetDigest: j.GetDatasetContent().GetDigest(), Dataset: j.GetDataset(), DatasetVersion: j.GetDatasetVersion(),
				ParentVersion: j.GetChampionVersion(),
			})
			if err != nil {
				return "", err
			}
			j.RunId = r.GetId()
		}
		return fmt.Sprintf("attempt %d on %s", attempt, a.GetName()), nil
	})
}

// endAttempt records how the running attempt ended.
func endAttempt(t *txn, j *droverv1.RetrainJob, outcome string) {
	if n := len(j.GetAttempts()); n > 0 && j.Attempts[n-1].GetEndTime() == nil {
		j.Attempts[n-1].EndTime, j.Attempts[n-1].Outcome = t.c.timestamp(), outcome
	}
}

// endRun ends a job's run, if it has one that is running.
func endRun(t *txn, j *droverv1.RetrainJob, state droverv1.RunState, metrics map[string]float64, tags map[string]string, artifact *droverv1.BlobRef, version uint64, msg string) error {
	raw, err := t.First(tableRuns, "id", j.GetRunId())
	if err != nil || raw == nil {
		return err
	}
	r := proto.CloneOf(raw.(*droverv1.Run))
	if r.GetState() != droverv1.RunState_RUN_STATE_RUNNING {
		return nil
	}
	if r.Tags == nil {
		r.Tags = map[string]string{}
	}
	maps.Copy(r.Tags, tags)
	r.State, r.Metrics, r.Artifact, r.Version, r.Message, r.EndTime = state, metrics, artifact, version, msg, t.c.timestamp()
	return t.Insert(tableRuns, r)
}

// RequeueRetrainJob takes a running job off its agent, which was lost:
// back in the queue with that agent excluded, or failed once its attempts
// are spent.
func (s *Store) RequeueRetrainJob(c Change, id string, attempt uint32, reason string) (*droverv1.RetrainJob, error) {
	return s.updateJob(c, id, "retrain.job.requeue", []droverv1.RetrainJobState{stateRunning}, func(t *txn, j *droverv1.RetrainJob) (string, error) {
		if attempt != j.GetAttempt() {
			return "", Preconditionf("retraining job %s is at attempt %d, not %d", id, j.GetAttempt(), attempt)
		}
		lost := j.GetAgentName()
		endAttempt(t, j, "agent lost: "+reason)
		j.ExcludedAgents = append(j.ExcludedAgents, j.GetAgentId())
		j.AgentId, j.AgentName, j.Phase, j.Progress, j.Stage = "", "", "", 0, ""
		if attempt >= PolicyAttempts(j.GetSpec()) {
			j.State, j.EndTime = stateFailed, t.c.timestamp()
			j.Message = fmt.Sprintf("lost on %d agents, the last %s (%s); no attempts left", attempt, lost, reason)
			if err := endRun(t, j, droverv1.RunState_RUN_STATE_FAILED, nil, nil, nil, 0, j.GetMessage()); err != nil {
				return "", err
			}
			return j.GetMessage(), nil
		}
		j.State = stateQueued
		return fmt.Sprintf("agent %s lost (%s); queued again", lost, reason), nil
	})
}

// FailRetrainJob fails (or cancels) a job that has not ended. A non-zero
// attempt guards a running job: the command is refused if the job has
// moved on to another attempt, or is no longer running (its agent's
// success moved it to finishing), since it was made.
func (s *Store) FailRetrainJob(c Change, id string, attempt uint32, reason string, cancel bool) (*droverv1.RetrainJob, error) {
	verb := "retrain.job.fail"
	if cancel {
		verb = "retrain.job.cancel"
	}
	return s.updateJob(c, id, verb, []droverv1.RetrainJobState{statePending, stateCollecting, stateQueued, stateRunning, stateFinishing},
		func(t *txn, j *droverv1.RetrainJob) (string, error) {
			if attempt != 0 && attempt != j.GetAttempt() {
				return "", Preconditionf("retraining job %s is at attempt %d, not %d", id, j.GetAttempt(), attempt)
			}
			if attempt != 0 && j.GetState() != stateRunning {
				return "", Preconditionf("retraining job %s is %s, no longer running attempt %d", id, JobStateName(j.GetState()), attempt)
			}
			if err := ValidateText("reason", reason, MaxReasonLen); err != nil {
				return "", err
			}
			j.State, j.Message, j.EndTime = stateFailed, reason, t.c.timestamp()
			outcome := "failed: " + reason
			if cancel {
				j.State, outcome = stateCancelled, "cancelled"
				if j.Message == "" {
					j.Message = "cancelled"
				}
			}
			endAttempt(t, j, outcome)
			if err := endRun(t, j, droverv1.RunState_RUN_STATE_FAILED, nil, nil, nil, 0, j.GetMessage()); err != nil {
				return "", err
			}
			return JobStateName(j.GetState()) + ": " + j.GetMessage(), nil
		})
}

// FinishRetrainJob judges a finishing job's candidate against the
// champion on the same hold-out: a winner is registered as the model's
// next version, with lineage, and rolled out as the policy says (as
// rolloutID); a loser is recorded. The run ends either way.
func (s *Store) FinishRetrainJob(c Change, id, rolloutID string) (*droverv1.RetrainJob, error) {
	return s.updateJob(c, id, "retrain.job.finish", []droverv1.RetrainJobState{stateFinishing}, func(t *txn, j *droverv1.RetrainJob) (string, error) {
		res := j.GetResult()
		spec := j.GetSpec()
		j.Metric, j.Margin = PromotionMetric(spec), spec.GetPromotion().GetMargin()
		cand, ok := res.GetMetrics()[j.GetMetric()]
		if !ok {
			return "", failJob(t, j, fmt.Sprintf("the candidate has no %s metric (it has %s)", j.GetMetric(), metricNames(res.GetMetrics())))
		}
		j.CandidateScore = cand
		won := true
		if j.GetChampionVersion() != 0 {
			champ, ok := res.GetChampionMetrics()[j.GetMetric()]
			if !ok {
				return "", failJob(t, j, fmt.Sprintf("the champion v%d was not scored on %s (the runner reported %s)", j.GetChampionVersion(), j.GetMetric(), metricNames(res.GetChampionMetrics())))
			}
			j.ChampionScore = champ
			gain := cand - champ
			if LowerIsBetter(j.GetMetric()) {
				gain = -gain
			}
			won = gain >= j.GetMargin()
		}
		metrics := maps.Clone(res.GetMetrics())
		for k, v := range res.GetChampionMetrics() {
			metrics["champion_"+k] = v
		}
		tags := map[string]string{"outcome": "lost"}
		if j.GetChampionVersion() != 0 {
			tags["champion"] = fmt.Sprint(j.GetChampionVersion())
		}
		j.State, j.EndTime = stateSucceeded, t.c.timestamp()
		versus := fmt.Sprintf("%s %.4g", j.GetMetric(), cand)
		if j.GetChampionVersion() != 0 {
			versus += fmt.Sprintf(" vs the champion v%d's %.4g on the same hold-out, margin %g", j.GetChampionVersion(), j.GetChampionScore(), j.GetMargin())
		}
		if !won {
			j.Outcome = droverv1.RetrainOutcome_RETRAIN_OUTCOME_LOST
			j.Message = "the candidate lost: " + versus + "; not registered"
			if err := endRun(t, j, droverv1.RunState_RUN_STATE_SUCCEEDED, metrics, tags, res.GetArtifact(), 0, j.GetMessage()); err != nil {
				return "", err
			}
			return j.GetMessage(), nil
		}
		tags["outcome"] = "won"
		mv := &droverv1.ModelVersion{
			Model: j.GetModel(), Artifact: res.GetArtifact(), Format: res.GetFormat(), Params: res.GetParams(),
			Metrics: res.GetMetrics(), ReferenceProfile: res.GetReferenceProfile(),
			Description: fmt.Sprintf("retrained by policy %s (job %s, %s)", j.GetPolicy(), j.GetId(), j.GetTrigger()),
			Lineage: &droverv1.Lineage{ParentVersion: j.GetChampionVersion(), DatasetDigest: j.GetDatasetContent().GetDigest(),
				RunId: j.GetRunId(), Dataset: j.GetDataset(), DatasetVersion: j.GetDatasetVersion()},
		}
		if spec.GetRunner() == NativeRunner {
			mv.Runner = NativeRunner
		}
		if raw, _ := t.First(tableVersions, "id", j.GetModel(), j.GetChampionVersion()); raw != nil {
			mv.Schema = raw.(*droverv1.ModelVersion).GetSchema()
		}
		v, err := createVersion(t, mv, false)
		if err != nil {
			return "", failJob(t, j, fmt.Sprintf("the candidate won (%s) but could not be registered: %v", versus, err))
		}
		j.Outcome, j.Version = droverv1.RetrainOutcome_RETRAIN_OUTCOME_WON, v.GetVersion()
		j.Message = fmt.Sprintf("the candidate won: %s; registered as %s:%d", versus, j.GetModel(), v.GetVersion())
		if err := endRun(t, j, droverv1.RunState_RUN_STATE_SUCCEEDED, metrics, tags, res.GetArtifact(), v.GetVersion(), j.GetMessage()); err != nil {
			return "", err
		}
		if spec.GetRollout().GetAuto() {
			steps := spec.GetRollout().GetSteps()
			if len(steps) == 0 {
				steps = DefaultRolloutSteps()
			}
			r, err := createRollout(t, &droverv1.Rollout{Id: rolloutID, Model: j.GetModel(), ToVersion: v.GetVersion(),
				Selector: spec.GetRollout().GetSelector(), Steps: steps})
			if err != nil {
				if KindOf(err) == 0 { // not a refusal: the write fails
					return "", err
				}
				j.Message += fmt.Sprintf("; not rolled out: %v", err)
			} else {
				j.RolloutId = r.GetId()
				j.Message += "; rollout " + r.GetId() + " started"
			}
		}
		return j.GetMessage(), nil
	})
}

// failJob ends a job as failed within a write (the run too).
func failJob(t *txn, j *droverv1.RetrainJob, msg string) error {
	j.State, j.Message, j.EndTime = stateFailed, msg, t.c.timestamp()
	endAttempt(t, j, "failed: "+msg)
	return endRun(t, j, droverv1.RunState_RUN_STATE_FAILED, nil, nil, nil, 0, msg)
}

func metricNames(m map[string]float64) string {
	if len(m) == 0 {
		return "none"
	}
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}

// applyTrainingReport takes an agent's progress with a job; a report for
// a job it no longer runs (another attempt, or one that has ended) is
// ignored. It returns an event for the agent's history when the phase
// changed.
func applyTrainingReport(t *txn, a *droverv1.Agent, r *droverv1.TrainingReport) (*droverv1.AgentEvent, error) {
	raw, err := t.First(tableRetrainJobs, "id", r.GetJobId())
	if err != nil || raw == nil {
		return nil, err
	}
	j := proto.CloneOf(raw.(*droverv1.RetrainJob))
	if j.GetState() != stateRunning || j.GetAgentId() != a.GetId() || j.GetAttempt() != r.GetAttempt() {
		return nil, nil
	}
	phase := strings.ToLower(strings.TrimPrefix(r.GetPhase().String(), "TRAINING_PHASE_"))
	changed := phase != j.GetPhase()
	j.Phase, j.Progress, j.Stage = phase, r.GetFraction(), Clip(r.GetStage(), MaxReportKind)
	lines := r.GetLogLines()
	if n := len(lines); n > MaxJobLogLines {
		lines = lines[n-MaxJobLogLines:]
	}
	for _, l := range lines {
		j.Log = append(j.Log, Clip(l, MaxReportText))
	}
	if n := len(j.Log); n > MaxJobLogLines {
		j.Log = j.Log[n-MaxJobLogLines:]
	}
	// Points that are not finite or are under a name no metric may have
	// are dropped; so are new names past the number of metrics a job
	// keeps.
	points := slices.DeleteFunc(slices.Clone(r.GetPoints()), func(p *droverv1.MetricPoint) bool {
		v := p.GetValue()
		return math.IsNaN(v) || math.IsInf(v, 0) || validateKey("metrics", p.GetName()) != nil
	})
	if len(points) > 0 {
		if j.Metrics == nil {
			j.Metrics = map[string]float64{}
		}
		for _, p := range points {
			if _, known := j.Metrics[p.GetName()]; known || len(j.Metrics) < MaxMetrics {
				j.Metrics[p.GetName()] = p.GetValue()
			}
		}
		if rraw, _ := t.First(tableRuns, "id", j.GetRunId()); rraw != nil {
			run := proto.CloneOf(rraw.(*droverv1.Run))
			run.History = append(run.History, points...)
			if n := len(run.History); n > MaxRunHistory {
				run.History = run.History[n-MaxRunHistory:]
			}
			if err := t.Insert(tableRuns, run); err != nil {
				return nil, err
			}
		}
	}
	dispatch := false
	switch r.GetPhase() {
	case droverv1.TrainingPhase_TRAINING_PHASE_SUCCEEDED:
		res := r.GetResult()
		if res.GetArtifact().GetDigest() == "" {
			if err := failJob(t, j, "the agent reported success without an artifact"); err != nil {
				return nil, err
			}
		} else if err := ValidateMetrics(res.GetMetrics()); err != nil {
			if err := failJob(t, j, fmt.Sprintf("the candidate's metrics: %v", err)); err != nil {
				return nil, err
			}
		} else {
			j.State, j.Result, j.Progress = stateFinishing, res, 1
			endAttempt(t, j, "succeeded")
		}
		dispatch = true
	case droverv1.TrainingPhase_TRAINING_PHASE_FAILED:
		msg := r.GetMessage()
		if msg == "" {
			msg = "no reason given"
		}
		if err := failJob(t, j, fmt.Sprintf("training on %s failed: %s", a.GetName(), msg)); err != nil {
			return nil, err
		}
		dispatch = true
	}
	if err := putJob(t, j, dispatch); err != nil {
		return nil, err
	}
	if !changed {
		return nil, nil
	}
	msg := fmt.Sprintf("job %s (attempt %d) %s", j.GetId(), j.GetAttempt(), phase)
	if j.GetState() == stateFailed {
		msg += ": " + r.GetMessage()
	}
	return &droverv1.AgentEvent{Kind: "training", Message: msg}, nil
}

// applyExport takes an agent's labelled rows for a collecting job.
func applyExport(t *txn, a *droverv1.Agent, e *droverv1.LabelledExport) (*droverv1.AgentEvent, error) {
	raw, err := t.First(tableRetrainJobs, "id", e.GetJobId())
	if err != nil || raw == nil {
		return nil, err
	}
	j := proto.CloneOf(raw.(*droverv1.RetrainJob))
	if j.GetState() != stateCollecting || !slices.Contains(j.GetExportAgents(), a.GetId()) ||
		slices.ContainsFunc(j.GetExports(), func(x *droverv1.LabelledExport) bool { return x.GetAgentId() == a.GetId() }) {
		return nil, nil
	}
	x := proto.CloneOf(e)
	x.AgentId = a.GetId()
	j.Exports = append(j.Exports, x)
	if err := putJob(t, j, true); err != nil {
		return nil, err
	}
	msg := fmt.Sprintf("handed in %d labelled rows of %s for job %s", x.GetRows(), x.GetModel(), j.GetId())
	if x.GetError() != "" {
		msg = fmt.Sprintf("could not hand in labelled rows for job %s: %s", j.GetId(), x.GetError())
	}
	return &droverv1.AgentEvent{Kind: "export", Message: msg}, nil
}

// RetrainPolicy returns a policy, or nil.
func (v *Snapshot) RetrainPolicy(name string) *droverv1.RetrainPolicy {
	if raw := v.first(tableRetrainPolicies, name); raw != nil {
		return raw.(*droverv1.RetrainPolicy)
	}
	return nil
}

// RetrainPolicies returns every policy (a model's, when given) by name.
func (v *Snapshot) RetrainPolicies(model string) []*droverv1.RetrainPolicy {
	out := collect[*droverv1.RetrainPolicy](v.all(tableRetrainPolicies, "id"))
	if model != "" {
		out = slices.DeleteFunc(out, func(p *droverv1.RetrainPolicy) bool { return p.GetModel() != model })
	}
	return out
}

// RetrainJob returns a job, or nil.
func (v *Snapshot) RetrainJob(id string) *droverv1.RetrainJob {
	if raw := v.first(tableRetrainJobs, id); raw != nil {
		return raw.(*droverv1.RetrainJob)
	}
	return nil
}

// WatchRetrainJob returns a job and a channel closed when it changes.
func (v *Snapshot) WatchRetrainJob(id string) (*droverv1.RetrainJob, <-chan struct{}) {
	ch, raw, err := v.txn.FirstWatch(tableRetrainJobs, "id", id)
	if err != nil || raw == nil {
		return nil, ch
	}
	return raw.(*droverv1.RetrainJob), ch
}

// JobQuery selects jobs.
type JobQuery struct {
	Policy, Model string
	Active        bool
	Limit         int
}

// RetrainJobs returns jobs, newest first.
func (v *Snapshot) RetrainJobs(q JobQuery) []*droverv1.RetrainJob {
	it := v.all(tableRetrainJobs, "id")
	switch {
	case q.Active:
		it = v.all(tableRetrainJobs, "active", "yes")
	case q.Policy != "":
		it = v.all(tableRetrainJobs, "policy", q.Policy)
	}
	out := collect[*droverv1.RetrainJob](it)
	out = slices.DeleteFunc(out, func(j *droverv1.RetrainJob) bool {
		return q.Policy != "" && j.GetPolicy() != q.Policy || q.Model != "" && j.GetModel() != q.Model
	})
	slices.SortFunc(out, func(a, b *droverv1.RetrainJob) int {
		if c := b.GetCreateTime().AsTime().Compare(a.GetCreateTime().AsTime()); c != 0 {
			return c
		}
		return strings.Compare(b.GetId(), a.GetId())
	})
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out
}

// AgentMayUpload reports whether an agent has work that makes it upload a
// blob: a job running on it, or one collecting its labelled rows.
func (v *Snapshot) AgentMayUpload(agentID string) bool {
	for _, j := range collect[*droverv1.RetrainJob](v.all(tableRetrainJobs, "active", "yes")) {
		if j.GetState() == stateRunning && j.GetAgentId() == agentID ||
			j.GetState() == stateCollecting && slices.Contains(j.GetExportAgents(), agentID) {
			return true
		}
	}
	return false
}

// jobBlobs are the blobs active jobs refer to outside the registry: the
// labelled rows handed in, and a finishing candidate's artifact.
func (v *Snapshot) jobBlobs() []*droverv1.BlobRef {
	var out []*droverv1.BlobRef
	for _, j := range collect[*droverv1.RetrainJob](v.all(tableRetrainJobs, "active", "yes")) {
		for _, x := range j.GetExports() {
			if x.GetContent() != nil {
				out = append(out, x.GetContent())
			}
		}
		if a := j.GetResult().GetArtifact(); a != nil {
			out = append(out, a)
		}
	}
	return out
}

// desiredWork adds an agent's training and export tasks to its desired
// state, and the dispatch row to ws.
func (v *Snapshot) desiredWork(d *droverv1.DesiredState, agentID string, ws interface{ Add(<-chan struct{}) }) error {
	ch, _, err := v.txn.FirstWatch(tableRetrainDispatch, "id", "dispatch")
	if err != nil {
		return err
	}
	ws.Add(ch)
	for _, j := range collect[*droverv1.RetrainJob](v.all(tableRetrainJobs, "active", "yes")) {
		switch {
		case j.GetState() == stateRunning && j.GetAgentId() == agentID:
			d.Training = append(d.Training, v.trainingTask(j))
		case j.GetState() == stateCollecting && slices.Contains(j.GetExportAgents(), agentID) &&
			!slices.ContainsFunc(j.GetExports(), func(x *droverv1.LabelledExport) bool { return x.GetAgentId() == agentID }):
			rows := j.GetSpec().GetDataset().GetFeedbackMaxRows()
			if rows == 0 {
				rows = DefaultFeedbackRows
			}
			d.Exports = append(d.Exports, &droverv1.ExportTask{JobId: j.GetId(), Model: j.GetModel(), MaxRows: rows})
		}
	}
	slices.SortFunc(d.Training, func(a, b *droverv1.TrainingTask) int { return strings.Compare(a.GetJobId(), b.GetJobId()) })
	slices.SortFunc(d.Exports, func(a, b *droverv1.ExportTask) int { return strings.Compare(a.GetJobId(), b.GetJobId()) })
	return nil
}

// trainingTask is a running job as its agent is told it.
func (v *Snapshot) trainingTask(j *droverv1.RetrainJob) *droverv1.TrainingTask {
	spec := j.GetSpec()
	task := &droverv1.TrainingTask{
		JobId: j.GetId(), Attempt: j.GetAttempt(), Model: j.GetModel(), Runner: spec.GetRunner(), Params: spec.GetParams(),
		Dataset: j.GetDatasetContent(), Target: spec.GetDataset().GetTarget(), Ignore: spec.GetDataset().GetIgnore(),
		Metric: PromotionMetric(spec),
	}
	if n := len(j.GetAttempts()); n > 0 {
		task.Deadline = timestamppb.New(j.GetAttempts()[n-1].GetStartTime().AsTime().Add(PolicyTimeout(spec)))
	}
	if mv := v.Version(j.GetModel(), j.GetChampionVersion()); mv != nil {
		task.Schema = mv.GetSchema()
		task.ChampionVersion, task.ChampionArtifact, task.ChampionFormat = mv.GetVersion(), mv.GetArtifact(), mv.GetFormat()
	}
	return task
}
