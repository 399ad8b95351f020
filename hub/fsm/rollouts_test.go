package fsm

import (
	"fmt"
	"strings"
	"testing"

	"github.com/droverhq/drover/hub/state"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// primaryOf is the version an agent runs as primary for churn, with its
// canary (0: none).
func primaryOf(h *harness, agent string) (primary, canary uint64) {
	for _, as := range h.f.State().Snapshot().Agent(agent).GetAssignments() {
		if as.GetModel() != "churn" {
			continue
		}
		switch as.GetRole() {
		case droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY:
			primary = as.GetVersion()
		case droverv1.AssignmentRole_ASSIGNMENT_ROLE_CANARY:
			canary = as.GetVersion()
		}
	}
	return primary, canary
}

// TestRolloutLifecycle drives a rollout through its guarded commands: a
// command for a step already left is refused and changes nothing; a
// rollback restores every agent and rejects the version; a rejected
// version needs force; one rollout per model at a time.
func TestRolloutLifecycle(t *testing.T) {
	h := newHarness(t)
	for i := range 3 {
		h.mustApply(&fsmv1.VersionCreate{Header: header(1), CreateModel: i == 0, Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob(string(rune('a' + i))), Format: "onnx"}})
	}
	for i, id := range []string{"a1", "a2", "a3", "a4"} {
		h.mustApply(&fsmv1.AgentEnroll{Header: header(2), Token: agentToken("t" + id), Agent: &droverv1.Agent{Id: id, Name: "gpu-" + id, ReportedLabels: map[string]string{"site": []string{"lab", "lab", "lab", "edge"}[i]}}})
		h.mustApply(&fsmv1.AssignmentSet{Header: header(3), AgentId: id, Assignment: &droverv1.Assignment{Model: "churn", Version: 1, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY}})
	}
	steps := []*droverv1.RolloutStep{{Agents: 1, Weight: 10}, {Percent: 100}}
	r := h.mustApply(&fsmv1.RolloutCreate{Header: header(4), Rollout: &droverv1.Rollout{Id: "r1", Model: "churn", ToVersion: 2,
		Selector: map[string]string{"site": "lab"}, Steps: steps}}).(*droverv1.Rollout)
	if len(r.GetAgents()) != 3 || r.GetFromVersion() != 1 || r.GetState() != droverv1.RolloutState_ROLLOUT_STATE_RUNNING {
		t.Fatalf("started: %v", r)
	}
	first := r.GetAgents()[0].GetAgentId()
	if p, c := primaryOf(h, first); p != 1 || c != 2 {
		t.Fatalf("step 1's agent runs %d with canary %d", p, c)
	}
	if _, c := primaryOf(h, r.GetAgents()[1].GetAgentId()); c != 0 {
		t.Fatal("an agent of step 2 got the canary at step 1")
	}
	// One rollout per model.
	h.refused(&fsmv1.RolloutCreate{Header: header(5), Rollout: &droverv1.Rollout{Id: "r2", Model: "churn", ToVersion: 3, Steps: steps}}, state.KindFailedPrecondition)

	h.mustApply(&fsmv1.RolloutStepReady{Header: header(6), Id: "r1", Step: 0})
	h.mustApply(&fsmv1.RolloutAdvance{Header: header(7), Id: "r1", Step: 0})
	// The same advance again (a new leader repeating a decision) is stale.
	h.refused(&fsmv1.RolloutAdvance{Header: header(8), Id: "r1", Step: 0}, state.KindFailedPrecondition)
	h.refused(&fsmv1.RolloutStepReady{Header: header(8), Id: "r1", Step: 0}, state.KindFailedPrecondition)
	for _, a := range []string{"a1", "a2", "a3"} {
		if p, _ := primaryOf(h, a); p != 2 {
			t.Fatalf("at step 2, %s runs %d as primary", a, p)
		}
	}
	if p, _ := primaryOf(h, "a4"); p != 1 {
		t.Fatal("an agent outside the selector was moved")
	}
	// A failure at step 2 rolls every agent back and rejects version 2.
	r = h.mustApply(&fsmv1.RolloutFail{Header: header(9), Id: "r1", Step: 1, Reason: "gate error_rate failed"}).(*droverv1.Rollout)
	if r.GetState() != droverv1.RolloutState_ROLLOUT_STATE_ROLLED_BACK || r.GetReason() != "gate error_rate failed" {
		t.Fatalf("after the failure: %v", r)
	}
	for _, a := range []string{"a1", "a2", "a3"} {
		if p, c := primaryOf(h, a); p != 1 || c != 0 {
			t.Fatalf("after the rollback, %s runs %d (canary %d)", a, p, c)
		}
	}
	if v := h.f.State().Snapshot().Version("churn", 2); v.GetState() != droverv1.VersionState_VERSION_STATE_REJECTED {
		t.Fatalf("version 2 is %v", v.GetState())
	}
	// A second rollback is refused; so is a new rollout of the rejected
	// version, unless forced.
	h.refused(&fsmv1.RolloutFail{Header: header(10), Id: "r1", Step: 1, Reason: "again"}, state.KindFailedPrecondition)
	h.refused(&fsmv1.RolloutCreate{Header: header(11), Rollout: &droverv1.Rollout{Id: "r3", Model: "churn", ToVersion: 2, Steps: steps}}, state.KindFailedPrecondition)
	h.mustApply(&fsmv1.RolloutCreate{Header: header(12), Rollout: &droverv1.Rollout{Id: "r3", Model: "churn", ToVersion: 2, Selector: map[string]string{"site": "lab"}, Steps: steps, Force: true}})
	// Pause freezes, promote finishes.
	h.mustApply(&fsmv1.RolloutAct{Header: header(13), Id: "r3", Action: droverv1.RolloutAction_ROLLOUT_ACTION_PAUSE})
	h.refused(&fsmv1.RolloutAdvance{Header: header(14), Id: "r3", Step: 0}, state.KindFailedPrecondition)
	r = h.mustApply(&fsmv1.RolloutAct{Header: header(15), Id: "r3", Action: droverv1.RolloutAction_ROLLOUT_ACTION_PROMOTE}).(*droverv1.Rollout)
	if r.GetState() != droverv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Fatalf("after promote: %v", r)
	}
	for _, a := range []string{"a1", "a2", "a3", "a4"} {
		want := uint64(2)
		if a == "a4" {
			want = 1
		}
		if p, c := primaryOf(h, a); p != want || c != 0 {
			t.Fatalf("after promote, %s runs %d (canary %d)", a, p, c)
		}
	}
	// A finished rollout rolls back by hand, but not while a later one is
	// running or has succeeded: that would undo the later one's work.
	rollback := func(id string, i int) *fsmv1.RolloutAct {
		return &fsmv1.RolloutAct{Header: header(i), Id: id, Action: droverv1.RolloutAction_ROLLOUT_ACTION_ROLLBACK}
	}
	h.mustApply(&fsmv1.RolloutCreate{Header: header(16), Rollout: &droverv1.Rollout{Id: "r4", Model: "churn", ToVersion: 3, Selector: map[string]string{"site": "lab"}, Steps: steps}})
	h.refused(rollback("r3", 17), state.KindFailedPrecondition)
	h.mustApply(&fsmv1.RolloutAct{Header: header(18), Id: "r4", Action: droverv1.RolloutAction_ROLLOUT_ACTION_PROMOTE})
	h.refused(rollback("r3", 19), state.KindFailedPrecondition)
	h.mustApply(rollback("r4", 20))
	if p, _ := primaryOf(h, "a2"); p != 2 {
		t.Fatalf("after r4's rollback a2 runs %d", p)
	}
	r = h.mustApply(rollback("r3", 21)).(*droverv1.Rollout)
	if r.GetState() != droverv1.RolloutState_ROLLOUT_STATE_ROLLED_BACK {
		t.Fatalf("after rollback: %v", r)
	}
	if p, _ := primaryOf(h, "a2"); p != 1 {
		t.Fatalf("after the manual rollback a2 runs %d", p)
	}
}

// TestRolloutJudgeOnce refuses judgements applied twice (a retried command
// that had committed the first time).
func TestRolloutJudgeOnce(t *testing.T) {
	h := newHarness(t)
	h.mustApply(&fsmv1.VersionCreate{Header: header(1), CreateModel: true, Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("a"), Format: "onnx"}})
	h.mustApply(&fsmv1.VersionCreate{Header: header(1), Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("b"), Format: "onnx"}})
	h.mustApply(&fsmv1.AgentEnroll{Header: header(2), Token: agentToken("t1"), Agent: &droverv1.Agent{Id: "a1", Name: "gpu-1"}})
	h.mustApply(&fsmv1.AssignmentSet{Header: header(3), AgentId: "a1", Assignment: &droverv1.Assignment{Model: "churn", Version: 1, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY}})
	r := h.mustApply(&fsmv1.RolloutCreate{Header: header(4), Rollout: &droverv1.Rollout{Id: "r1", Model: "churn", ToVersion: 2, Steps: []*droverv1.RolloutStep{{Percent: 100}}}}).(*droverv1.Rollout)
	judge := &fsmv1.RolloutJudge{Header: header(5), Id: "r1", Step: 0, Revision: r.GetRevision(), Judgements: []*droverv1.Judgement{{Gate: "error_rate", Result: "fail", ConsecutiveFailures: 1}}}
	h.mustApply(judge)
	h.refused(judge, state.KindFailedPrecondition)
	if n := len(h.f.State().Snapshot().Rollout("r1").GetJudgements()); n != 1 {
		t.Fatalf("%d judgements after applying the same one twice", n)
	}
}

// TestRunLifecycle tracks a run: its points and tags accumulate, it ends
// once with its metrics and version, and nothing is logged to it after.
func TestRunLifecycle(t *testing.T) {
	h := newHarness(t)
	h.mustApply(&fsmv1.VersionCreate{Header: header(1), CreateModel: true, Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("a"), Format: "onnx"}})
	h.refused(&fsmv1.RunCreate{Header: header(2), Run: &droverv1.Run{Id: "run-1", Model: "nope"}}, state.KindNotFound)
	h.refused(&fsmv1.RunCreate{Header: header(2), Run: &droverv1.Run{Id: "run-1", Model: "churn", ParentVersion: 9}}, state.KindNotFound)
	r := h.mustApply(&fsmv1.RunCreate{Header: header(2), Run: &droverv1.Run{Id: "run-1", Model: "churn", Runner: "native", ParentVersion: 1,
		Params: map[string]string{"l2": "1"}, DatasetDigest: "sha256:" + strings.Repeat("ab", 32)}}).(*droverv1.Run)
	if r.GetState() != droverv1.RunState_RUN_STATE_RUNNING || r.GetStartTime() == nil {
		t.Fatalf("created: %v", r)
	}
	h.mustApply(&fsmv1.RunLog{Header: header(3), Log: &droverv1.LogRunRequest{Id: "run-1", Tags: map[string]string{"host": "gpu-1"},
		Points: []*droverv1.MetricPoint{{Name: "loss", Value: 0.7, Step: 1}, {Name: "loss", Value: 0.5, Step: 2}}}})
	h.refused(&fsmv1.RunLog{Header: header(4), Log: &droverv1.LogRunRequest{Id: "run-1", EndState: droverv1.RunState_RUN_STATE_SUCCEEDED, Version: 7}}, state.KindNotFound)
	h.mustApply(&fsmv1.VersionCreate{Header: header(4), Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("b"), Format: "onnx"}})
	r = h.mustApply(&fsmv1.RunLog{Header: header(5), Log: &droverv1.LogRunRequest{Id: "run-1", EndState: droverv1.RunState_RUN_STATE_SUCCEEDED,
		Metrics: map[string]float64{"accuracy": 0.81}, Version: 2, Artifact: blob("b")}}).(*droverv1.Run)
	if r.GetState() != droverv1.RunState_RUN_STATE_SUCCEEDED || r.GetVersion() != 2 || len(r.GetHistory()) != 2 || r.GetTags()["host"] != "gpu-1" || r.GetEndTime() == nil {
		t.Fatalf("ended: %v", r)
	}
	h.refused(&fsmv1.RunLog{Header: header(6), Log: &droverv1.LogRunRequest{Id: "run-1", Points: []*droverv1.MetricPoint{{Name: "loss", Value: 0.1}}}}, state.KindFailedPrecondition)
	if runs := h.f.State().Snapshot().Runs("churn", 0); len(runs) != 1 || runs[0].GetHistory() != nil {
		t.Fatalf("listed: %v", runs)
	}
}

// TestEndedRolloutsAreTrimmed keeps the newest MaxRolloutsKept ended
// rollouts of a model.
func TestEndedRolloutsAreTrimmed(t *testing.T) {
	h := newHarness(t)
	h.mustApply(&fsmv1.VersionCreate{Header: header(1), CreateModel: true, Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("a"), Format: "onnx"}})
	h.mustApply(&fsmv1.VersionCreate{Header: header(1), Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("b"), Format: "onnx"}})
	h.mustApply(&fsmv1.AgentEnroll{Header: header(2), Token: agentToken("t1"), Agent: &droverv1.Agent{Id: "a1", Name: "gpu-1"}})
	h.mustApply(&fsmv1.AssignmentSet{Header: header(3), AgentId: "a1", Assignment: &droverv1.Assignment{Model: "churn", Version: 1, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY}})
	total := state.MaxRolloutsKept + 5
	for i := range total {
		id := fmt.Sprintf("r%03d", i)
		h.mustApply(&fsmv1.RolloutCreate{Header: header(10 + 2*i), Rollout: &droverv1.Rollout{Id: id, Model: "churn", ToVersion: 2, Force: true,
			Steps: []*droverv1.RolloutStep{{Percent: 100}}}})
		h.mustApply(&fsmv1.RolloutAct{Header: header(11 + 2*i), Id: id, Action: droverv1.RolloutAction_ROLLOUT_ACTION_ABORT})
	}
	// The last one is still running when the trim runs, so one more than
	// the bound can be left until the next start.
	got := h.f.State().Snapshot().Rollouts("churn", false)
	if len(got) > state.MaxRolloutsKept+1 || len(got) < state.MaxRolloutsKept {
		t.Fatalf("%d rollouts kept of %d, want about %d", len(got), total, state.MaxRolloutsKept)
	}
	if got[0].GetId() != fmt.Sprintf("r%03d", total-1) || h.f.State().Snapshot().Rollout("r000") != nil {
		t.Fatalf("the newest was dropped or the oldest kept: newest %s", got[0].GetId())
	}
}

// rolloutFixture is a model with versions 1 and 2 and two agents, a1 and
// a2, running 1 as primary.
func rolloutFixture(t *testing.T) *harness {
	h := newHarness(t)
	for i := range 2 {
		h.mustApply(&fsmv1.VersionCreate{Header: header(1), CreateModel: i == 0, Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob(string(rune('a' + i))), Format: "onnx"}})
	}
	for _, id := range []string{"a1", "a2"} {
		h.mustApply(&fsmv1.AgentEnroll{Header: header(2), Token: agentToken("t" + id), Agent: &droverv1.Agent{Id: id, Name: "gpu-" + id}})
		h.mustApply(&fsmv1.AssignmentSet{Header: header(3), AgentId: id, Assignment: &droverv1.Assignment{Model: "churn", Version: 1, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY}})
	}
	return h
}

// TestVersionStateRefusedDuringRollout: the target of an active rollout is
// neither archived nor rejected by hand (the rollout would go on rolling it
// out); once the rollout is aborted it is, and archived stays archived
// through a later rollback.
func TestVersionStateRefusedDuringRollout(t *testing.T) {
	h := rolloutFixture(t)
	steps := []*droverv1.RolloutStep{{Agents: 1, Weight: 10}, {Percent: 100}}
	h.mustApply(&fsmv1.RolloutCreate{Header: header(4), Rollout: &droverv1.Rollout{Id: "r1", Model: "churn", ToVersion: 2, Steps: steps}})
	for _, st := range []droverv1.VersionState{droverv1.VersionState_VERSION_STATE_ARCHIVED, droverv1.VersionState_VERSION_STATE_REJECTED} {
		res := h.apply(&fsmv1.VersionStateSet{Header: header(5), Model: "churn", Version: 2, State: st})
		if state.KindOf(res.Err) != state.KindFailedPrecondition || !strings.Contains(res.Err.Error(), "rollout r1") {
			t.Fatalf("%v of the target mid-rollout: %v", st, res.Err)
		}
	}
	if s := h.f.State().Snapshot().Version("churn", 2).GetState(); s != droverv1.VersionState_VERSION_STATE_READY {
		t.Fatalf("version %v", s)
	}
	h.mustApply(&fsmv1.RolloutAct{Header: header(6), Id: "r1", Action: droverv1.RolloutAction_ROLLOUT_ACTION_PAUSE})
	h.refused(&fsmv1.VersionStateSet{Header: header(7), Model: "churn", Version: 2, State: droverv1.VersionState_VERSION_STATE_ARCHIVED}, state.KindFailedPrecondition)
	// Another version of the model is not held up.
	h.mustApply(&fsmv1.VersionStateSet{Header: header(7), Model: "churn", Version: 1, State: droverv1.VersionState_VERSION_STATE_REJECTED})
	h.mustApply(&fsmv1.RolloutAct{Header: header(8), Id: "r1", Action: droverv1.RolloutAction_ROLLOUT_ACTION_ABORT})
	h.mustApply(&fsmv1.VersionStateSet{Header: header(9), Model: "churn", Version: 2, State: droverv1.VersionState_VERSION_STATE_ARCHIVED})
	if s := h.f.State().Snapshot().Version("churn", 2).GetState(); s != droverv1.VersionState_VERSION_STATE_ARCHIVED {
		t.Fatalf("after abort: %v", s)
	}

	// A succeeded rollout's version archived, then the rollout rolled back
	// by hand: the version stays archived.
	h.mustApply(&fsmv1.VersionStateSet{Header: header(10), Model: "churn", Version: 1, State: droverv1.VersionState_VERSION_STATE_READY})
	h.mustApply(&fsmv1.VersionStateSet{Header: header(10), Model: "churn", Version: 2, State: droverv1.VersionState_VERSION_STATE_READY})
	h.mustApply(&fsmv1.RolloutCreate{Header: header(11), Rollout: &droverv1.Rollout{Id: "r2", Model: "churn", ToVersion: 2, Force: true, Steps: steps}})
	h.mustApply(&fsmv1.RolloutAct{Header: header(12), Id: "r2", Action: droverv1.RolloutAction_ROLLOUT_ACTION_PROMOTE})
	h.mustApply(&fsmv1.VersionStateSet{Header: header(13), Model: "churn", Version: 2, State: droverv1.VersionState_VERSION_STATE_ARCHIVED})
	h.mustApply(&fsmv1.RolloutAct{Header: header(14), Id: "r2", Action: droverv1.RolloutAction_ROLLOUT_ACTION_ROLLBACK})
	if s := h.f.State().Snapshot().Version("churn", 2).GetState(); s != droverv1.VersionState_VERSION_STATE_ARCHIVED {
		t.Errorf("a rollback turned an archived version %v", s)
	}
}

// TestRolloutDecisionsGuardedByRevision: a decision made before a pause and
// resume (at an older revision) is refused after it, and a step is only
// advanced once it is baking.
func TestRolloutDecisionsGuardedByRevision(t *testing.T) {
	h := rolloutFixture(t)
	steps := []*droverv1.RolloutStep{{Agents: 1, Weight: 10}, {Percent: 100}}
	r := h.mustApply(&fsmv1.RolloutCreate{Header: header(4), Rollout: &droverv1.Rollout{Id: "r1", Model: "churn", ToVersion: 2, Steps: steps}}).(*droverv1.Rollout)
	// Not baking yet: no advance.
	h.refused(&fsmv1.RolloutAdvance{Header: header(5), Id: "r1", Step: 0, Revision: r.GetRevision()}, state.KindFailedPrecondition)
	r = h.mustApply(&fsmv1.RolloutStepReady{Header: header(5), Id: "r1", Step: 0, Revision: r.GetRevision()}).(*droverv1.Rollout)
	decided := r.GetRevision() // the controller decides to advance, or to roll back, here...
	h.mustApply(&fsmv1.RolloutAct{Header: header(6), Id: "r1", Action: droverv1.RolloutAction_ROLLOUT_ACTION_PAUSE})
	h.mustApply(&fsmv1.RolloutAct{Header: header(7), Id: "r1", Action: droverv1.RolloutAction_ROLLOUT_ACTION_RESUME})
	// ...and its commands land after the resume.
	h.refused(&fsmv1.RolloutAdvance{Header: header(8), Id: "r1", Step: 0, Revision: decided}, state.KindFailedPrecondition)
	h.refused(&fsmv1.RolloutFail{Header: header(8), Id: "r1", Step: 0, Revision: decided, Reason: "gate errors"}, state.KindFailedPrecondition)
	h.refused(&fsmv1.RolloutFail{Header: header(8), Id: "r1", Step: 0, Revision: decided, Reason: "inconclusive", Pause: true}, state.KindFailedPrecondition)
	// Resume restarted the bake: without a revision, still not baking.
	h.refused(&fsmv1.RolloutAdvance{Header: header(8), Id: "r1", Step: 0}, state.KindFailedPrecondition)
	r = h.f.State().Snapshot().Rollout("r1")
	if r.GetStep() != 0 || r.GetState() != droverv1.RolloutState_ROLLOUT_STATE_RUNNING {
		t.Fatalf("stale decisions changed the rollout: step %d, %v", r.GetStep(), r.GetState())
	}
	h.refused(&fsmv1.RolloutStepReady{Header: header(9), Id: "r1", Step: 0, Revision: decided}, state.KindFailedPrecondition)
	r = h.mustApply(&fsmv1.RolloutStepReady{Header: header(9), Id: "r1", Step: 0, Revision: r.GetRevision()}).(*droverv1.Rollout)
	r = h.mustApply(&fsmv1.RolloutAdvance{Header: header(10), Id: "r1", Step: 0, Revision: r.GetRevision()}).(*droverv1.Rollout)
	if r.GetStep() != 1 {
		t.Fatalf("step %d", r.GetStep())
	}
}

// TestRolloutLeavesOutDrainingAgents: a draining agent runs nothing, so a
// new rollout does not wait for it.
func TestRolloutLeavesOutDrainingAgents(t *testing.T) {
	h := rolloutFixture(t)
	h.mustApply(&fsmv1.AgentDrain{Header: header(4), AgentId: "a2"})
	r := h.mustApply(&fsmv1.RolloutCreate{Header: header(5), Rollout: &droverv1.Rollout{Id: "r1", Model: "churn", ToVersion: 2,
		Steps: []*droverv1.RolloutStep{{Percent: 100}}}}).(*droverv1.Rollout)
	if len(r.GetAgents()) != 1 || r.GetAgents()[0].GetAgentId() != "a1" {
		t.Fatalf("rollout agents: %v", r.GetAgents())
	}
}
