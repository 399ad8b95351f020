package fsm

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/hub/state"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// randomRetrainCommand is one of the retraining commands, or an agent's
// training report, on a few job ids, for the property tests.
func randomRetrainCommand(r *rand.Rand, h *fsmv1.Header, i int) Command {
	id := fmt.Sprint("job-", r.IntN(3))
	switch r.IntN(8) {
	case 0:
		return &fsmv1.RetrainJobCreate{Header: h, Force: r.IntN(2) == 0, Job: &droverv1.RetrainJob{Id: id, Policy: fmt.Sprint("p", r.IntN(2)),
			Trigger: "manual", ChampionVersion: uint64(r.IntN(2))}}
	case 1:
		return &fsmv1.RetrainJobCollect{Header: h, Id: id, AgentIds: []string{"a-fixed"}}
	case 2:
		return &fsmv1.RetrainJobDataset{Header: h, Id: id, Dataset: &droverv1.DatasetVersion{Dataset: "churn-retrain", Content: blob(fmt.Sprint("d", i)), Format: "csv"},
			Validation: &droverv1.DatasetValidation{Passed: r.IntN(4) != 0}}
	case 3:
		return &fsmv1.RetrainJobPlace{Header: h, Id: id, Attempt: uint32(1 + r.IntN(2)), AgentId: "a-fixed"}
	case 4:
		return &fsmv1.RetrainJobRequeue{Header: h, Id: id, Attempt: uint32(1 + r.IntN(2)), Reason: "down"}
	case 5:
		return &fsmv1.RetrainJobFail{Header: h, Id: id, Reason: "no", Cancel: r.IntN(2) == 0}
	case 6:
		rep := &droverv1.TrainingReport{JobId: id, Attempt: uint32(1 + r.IntN(2)), Phase: droverv1.TrainingPhase(1 + r.IntN(6)),
			LogLines: []string{"line"}, Points: []*droverv1.MetricPoint{{Name: "loss", Value: r.Float64(), Step: int64(i)}}}
		if rep.Phase == droverv1.TrainingPhase_TRAINING_PHASE_SUCCEEDED {
			rep.Result = &droverv1.TrainingResult{Artifact: blob(fmt.Sprint("m", i)), Format: "drover-native",
				Metrics: map[string]float64{"accuracy": r.Float64()}, ChampionMetrics: map[string]float64{"accuracy": r.Float64()}}
		}
		return &fsmv1.AgentReports{Header: h, AgentId: "a-fixed", Reports: []*droverv1.Report{{Seq: uint64(i*3 + 2), Time: h.GetTime(),
			Body: &droverv1.Report_Training{Training: rep}}}}
	}
	return &fsmv1.RetrainJobFinish{Header: h, Id: id, RolloutId: fmt.Sprint("rr", i)}
}

// retrainFixture is a hub state with the churn model at v1 (native, with
// a schema and an accuracy of 0.8), three agents running it, and a policy.
func retrainFixture(t *testing.T) *harness {
	h := newHarness(t)
	h.mustApply(&fsmv1.VersionCreate{Header: header(1), CreateModel: true, Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("v1"),
		Format: "drover-native", Runner: "native", Metrics: map[string]float64{"accuracy": 0.8},
		Schema: &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{{Name: "tenure", Datatype: "FP64"}}}}})
	for _, id := range []string{"a1", "a2", "a3"} {
		h.mustApply(&fsmv1.AgentEnroll{Header: header(2), Token: agentToken("t" + id), Agent: &droverv1.Agent{Id: id, Name: "gpu-" + id}})
		h.mustApply(&fsmv1.AssignmentSet{Header: header(3), AgentId: id, Assignment: &droverv1.Assignment{Model: "churn", Version: 1, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY}})
	}
	h.mustApply(&fsmv1.RetrainPolicyPut{Header: header(4), Policy: &droverv1.RetrainPolicy{Name: "nightly", Model: "churn", Runner: "native",
		Params: map[string]string{"l2": "0.5"}, Cooldown: durationpb.New(time.Hour), MaxAttempts: 2,
		Dataset:   &droverv1.DatasetRecipe{Target: "churned", Feedback: true},
		Promotion: &droverv1.Promotion{Margin: 0.01},
		Rollout:   &droverv1.RolloutTemplate{Auto: true}}})
	return h
}

func (h *harness) job(id string) *droverv1.RetrainJob {
	h.t.Helper()
	j := h.f.State().Snapshot().RetrainJob(id)
	if j == nil {
		h.t.Fatalf("no job %s", id)
	}
	return j
}

func trainingReport(seq uint64, i int, r *droverv1.TrainingReport) *fsmv1.AgentReports {
	return &fsmv1.AgentReports{Header: header(i), AgentId: "", Reports: []*droverv1.Report{{Seq: seq, Time: header(i).GetTime(), Body: &droverv1.Report_Training{Training: r}}}}
}

// TestRetrainJobLifecycle drives a job through every state with the
// commands the leader makes and the reports agents send: each command is
// guarded (a repeated or stale one is refused and changes nothing), a
// report of an attempt given up on is ignored, a winner is registered
// with its lineage and rolled out, and the desired states carry the work.
func TestRetrainJobLifecycle(t *testing.T) {
	h := retrainFixture(t)
	j := h.mustApply(&fsmv1.RetrainJobCreate{Header: header(10), Job: &droverv1.RetrainJob{Id: "job-1", Policy: "nightly", Trigger: "drift", ChampionVersion: 1}}).(*droverv1.RetrainJob)
	if j.GetState() != droverv1.RetrainJobState_RETRAIN_JOB_STATE_PENDING || j.GetSpec().GetRunner() != "native" || j.GetModel() != "churn" {
		t.Fatalf("created: %v", j)
	}
	// One active job per policy, force or not.
	h.refused(&fsmv1.RetrainJobCreate{Header: header(11), Force: true, Job: &droverv1.RetrainJob{Id: "job-2", Policy: "nightly", Trigger: "manual"}}, state.KindFailedPrecondition)

	h.mustApply(&fsmv1.RetrainJobCollect{Header: header(12), Id: "job-1", AgentIds: []string{"a1", "a2"}})
	h.refused(&fsmv1.RetrainJobCollect{Header: header(13), Id: "job-1", AgentIds: []string{"a1"}}, state.KindFailedPrecondition)
	d, err := h.f.State().Snapshot().DesiredState("a1", nil)
	if err != nil || len(d.GetExports()) != 1 || d.GetExports()[0].GetJobId() != "job-1" || d.GetExports()[0].GetMaxRows() != state.DefaultFeedbackRows {
		t.Fatalf("a1's desired state while collecting: %v, %v", d, err)
	}
	if d3, _ := h.f.State().Snapshot().DesiredState("a3", nil); len(d3.GetExports()) != 0 {
		t.Fatal("an agent not asked was given an export")
	}
	// An export from an agent that was asked is taken once; from another, ignored.
	export := func(agent string, seq uint64, rows uint64) {
		h.mustApply(&fsmv1.AgentReports{Header: header(14), AgentId: agent, Reports: []*droverv1.Report{{Seq: seq, Time: header(14).GetTime(),
			Body: &droverv1.Report_Export{Export: &droverv1.LabelledExport{JobId: "job-1", Model: "churn", Content: blob(agent + "rows"), Rows: rows}}}}})
	}
	export("a1", 1, 40)
	export("a1", 2, 99)
	export("a3", 1, 7)
	if x := h.job("job-1").GetExports(); len(x) != 1 || x[0].GetAgentId() != "a1" || x[0].GetRows() != 40 {
		t.Fatalf("exports: %v", x)
	}
	if d, _ := h.f.State().Snapshot().DesiredState("a1", nil); len(d.GetExports()) != 0 {
		t.Fatal("an agent that handed in its rows is still asked")
	}
	if !h.f.State().Snapshot().AgentMayUpload("a2") || h.f.State().Snapshot().AgentMayUpload("a3") {
		t.Fatal("upload permission while collecting")
	}

	h.mustApply(&fsmv1.RetrainJobDataset{Header: header(15), Id: "job-1", Dataset: &droverv1.DatasetVersion{Dataset: "churn-retrain", Content: blob("assembled"), Format: "csv", Rows: 500},
		Validation: &droverv1.DatasetValidation{Passed: true, Rows: 500}})
	j = h.job("job-1")
	if j.GetState() != droverv1.RetrainJobState_RETRAIN_JOB_STATE_QUEUED || j.GetDataset() != "churn-retrain" || j.GetDatasetVersion() != 1 || len(j.GetExports()) != 0 {
		t.Fatalf("after the data set: %v", j)
	}
	if dv := h.f.State().Snapshot().DatasetVersions("churn-retrain"); len(dv) != 1 || dv[0].GetRows() != 500 {
		t.Fatalf("registry: %v", dv)
	}

	// Placing: the attempt must be the next; the run starts with it.
	h.refused(&fsmv1.RetrainJobPlace{Header: header(16), Id: "job-1", Attempt: 2, AgentId: "a2"}, state.KindFailedPrecondition)
	h.mustApply(&fsmv1.RetrainJobPlace{Header: header(16), Id: "job-1", Attempt: 1, AgentId: "a2"})
	h.refused(&fsmv1.RetrainJobPlace{Header: header(17), Id: "job-1", Attempt: 1, AgentId: "a2"}, state.KindFailedPrecondition)
	j = h.job("job-1")
	run := h.f.State().Snapshot().Run(j.GetRunId())
	if run == nil || run.GetParentVersion() != 1 || run.GetDatasetVersion() != 1 || run.GetTags()["policy"] != "nightly" {
		t.Fatalf("run: %v", run)
	}
	d, _ = h.f.State().Snapshot().DesiredState("a2", nil)
	if len(d.GetTraining()) != 1 {
		t.Fatalf("a2's desired state: %v", d)
	}
	task := d.GetTraining()[0]
	if task.GetAttempt() != 1 || task.GetChampionVersion() != 1 || task.GetChampionArtifact().GetDigest() != blob("v1").GetDigest() ||
		task.GetTarget() != "churned" || task.GetMetric() != "accuracy" || task.GetSchema() == nil || task.GetDeadline() == nil {
		t.Fatalf("training task: %v", task)
	}

	// The agent is lost: queued again with a2 excluded.
	h.mustApply(&fsmv1.RetrainJobRequeue{Header: header(18), Id: "job-1", Attempt: 1, Reason: "down"})
	h.refused(&fsmv1.RetrainJobRequeue{Header: header(18), Id: "job-1", Attempt: 1, Reason: "down"}, state.KindFailedPrecondition)
	if d, _ := h.f.State().Snapshot().DesiredState("a2", nil); len(d.GetTraining()) != 0 {
		t.Fatal("a lost agent keeps its task")
	}
	h.refused(&fsmv1.RetrainJobPlace{Header: header(19), Id: "job-1", Attempt: 2, AgentId: "a2"}, state.KindFailedPrecondition)
	h.mustApply(&fsmv1.RetrainJobPlace{Header: header(19), Id: "job-1", Attempt: 2, AgentId: "a3"})

	// A late report of attempt 1 from a2 is ignored; a3's are taken.
	stale := trainingReport(5, 20, &droverv1.TrainingReport{JobId: "job-1", Attempt: 1, Phase: droverv1.TrainingPhase_TRAINING_PHASE_FAILED, Message: "late"})
	stale.AgentId = "a2"
	h.mustApply(stale)
	if h.job("job-1").GetState() != droverv1.RetrainJobState_RETRAIN_JOB_STATE_RUNNING {
		t.Fatal("a stale report changed the job")
	}
	lines := make([]string, state.MaxJobLogLines+20)
	for i := range lines {
		lines[i] = fmt.Sprint("line ", i)
	}
	prog := trainingReport(10, 21, &droverv1.TrainingReport{JobId: "job-1", Attempt: 2, Phase: droverv1.TrainingPhase_TRAINING_PHASE_TRAINING,
		Fraction: 0.5, Stage: "lbfgs", LogLines: lines, Points: []*droverv1.MetricPoint{{Name: "loss", Value: 0.4, Step: 1}}})
	prog.AgentId = "a3"
	h.mustApply(prog)
	j = h.job("job-1")
	if j.GetPhase() != "training" || j.GetProgress() != 0.5 || len(j.GetLog()) != state.MaxJobLogLines || j.GetLog()[len(j.GetLog())-1] != lines[len(lines)-1] || j.GetMetrics()["loss"] != 0.4 {
		t.Fatalf("progress: phase %q progress %v log %d metrics %v", j.GetPhase(), j.GetProgress(), len(j.GetLog()), j.GetMetrics())
	}
	if hist := h.f.State().Snapshot().Run(j.GetRunId()).GetHistory(); len(hist) != 1 {
		t.Fatalf("run history: %v", hist)
	}
	done := trainingReport(11, 22, &droverv1.TrainingReport{JobId: "job-1", Attempt: 2, Phase: droverv1.TrainingPhase_TRAINING_PHASE_SUCCEEDED,
		Result: &droverv1.TrainingResult{Artifact: blob("v2"), Format: "drover-native", Metrics: map[string]float64{"accuracy": 0.85},
			ChampionMetrics: map[string]float64{"accuracy": 0.79}, Params: map[string]string{"l2": "0.5"}, ReferenceProfile: []byte{}}})
	done.AgentId = "a3"
	h.mustApply(done)
	if j := h.job("job-1"); j.GetState() != droverv1.RetrainJobState_RETRAIN_JOB_STATE_FINISHING {
		t.Fatalf("after success: %v", j.GetState())
	}
	if _, ok := h.f.State().Snapshot().ReferencedBlobs()[blob("v2").GetDigest()]; !ok {
		t.Fatal("a finishing job's artifact may be collected")
	}

	j = h.mustApply(&fsmv1.RetrainJobFinish{Header: header(23), Id: "job-1", RolloutId: "r-job1"}).(*droverv1.RetrainJob)
	h.refused(&fsmv1.RetrainJobFinish{Header: header(24), Id: "job-1", RolloutId: "r-again"}, state.KindFailedPrecondition)
	if j.GetState() != droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED || j.GetOutcome() != droverv1.RetrainOutcome_RETRAIN_OUTCOME_WON ||
		j.GetVersion() != 2 || j.GetRolloutId() != "r-job1" || j.GetCandidateScore() != 0.85 || j.GetChampionScore() != 0.79 {
		t.Fatalf("finished: %v", j)
	}
	mv := h.f.State().Snapshot().Version("churn", 2)
	if l := mv.GetLineage(); l.GetParentVersion() != 1 || l.GetRunId() != j.GetRunId() || l.GetDataset() != "churn-retrain" || l.GetDatasetVersion() != 1 ||
		l.GetDatasetDigest() != blob("assembled").GetDigest() || mv.GetRunner() != "native" || mv.GetSchema() == nil {
		t.Fatalf("registered version: %v", mv)
	}
	if r := h.f.State().Snapshot().Rollout("r-job1"); r == nil || r.GetToVersion() != 2 || len(r.GetSteps()) != 2 || r.GetSteps()[0].GetWeight() != 10 {
		t.Fatalf("rollout: %v", r)
	}
	run = h.f.State().Snapshot().Run(j.GetRunId())
	if run.GetState() != droverv1.RunState_RUN_STATE_SUCCEEDED || run.GetVersion() != 2 || run.GetMetrics()["champion_accuracy"] != 0.79 || run.GetTags()["outcome"] != "won" {
		t.Fatalf("run at the end: %v", run)
	}
	if d, _ := h.f.State().Snapshot().DesiredState("a3", nil); len(d.GetTraining()) != 0 {
		t.Fatal("a finished job is still a task")
	}

	// The cool-down: a new job within the hour is refused unless forced.
	h.refused(&fsmv1.RetrainJobCreate{Header: header(100), Job: &droverv1.RetrainJob{Id: "job-2", Policy: "nightly", Trigger: "drift"}}, state.KindFailedPrecondition)
	h.mustApply(&fsmv1.RetrainJobCreate{Header: header(101), Force: true, Job: &droverv1.RetrainJob{Id: "job-2", Policy: "nightly", Trigger: "manual", ChampionVersion: 2}})
	late := header(101)
	late.Time = timestamppb.New(t0.Add(3 * time.Hour))
	h.mustApply(&fsmv1.RetrainJobFail{Header: late, Id: "job-2", Reason: "cancelled", Cancel: true})
	if j := h.job("job-2"); j.GetState() != droverv1.RetrainJobState_RETRAIN_JOB_STATE_CANCELLED {
		t.Fatalf("cancelled: %v", j.GetState())
	}
	h.refused(&fsmv1.RetrainJobFail{Header: late, Id: "job-2", Reason: "again"}, state.KindFailedPrecondition)
	h.mustApply(&fsmv1.RetrainJobCreate{Header: late, Job: &droverv1.RetrainJob{Id: "job-3", Policy: "nightly", Trigger: "schedule"}})
}

// TestRetrainJobLoses covers a candidate that does not beat the champion
// by the margin (recorded, not registered, nothing rolled out), a champion
// that was not scored (the job fails), a data set that fails validation,
// and attempts running out.
func TestRetrainJobLoses(t *testing.T) {
	h := retrainFixture(t)
	run := func(id string, i int, res *droverv1.TrainingResult) *droverv1.RetrainJob {
		t.Helper()
		at := header(i)
		at.Time = timestamppb.New(t0.Add(time.Duration(i) * time.Hour)) // past the cool-down
		h.mustApply(&fsmv1.RetrainJobCreate{Header: at, Job: &droverv1.RetrainJob{Id: id, Policy: "nightly", Trigger: "manual", ChampionVersion: 1}})
		h.mustApply(&fsmv1.RetrainJobDataset{Header: at, Id: id, Dataset: &droverv1.DatasetVersion{Dataset: "churn-retrain", Content: blob(id), Format: "csv"},
			Validation: &droverv1.DatasetValidation{Passed: true}})
		h.mustApply(&fsmv1.RetrainJobPlace{Header: at, Id: id, Attempt: 1, AgentId: "a1"})
		h.mustApply(&fsmv1.AgentReports{Header: at, AgentId: "a1", Reports: []*droverv1.Report{{Seq: uint64(i), Time: at.GetTime(),
			Body: &droverv1.Report_Training{Training: &droverv1.TrainingReport{JobId: id, Attempt: 1, Phase: droverv1.TrainingPhase_TRAINING_PHASE_SUCCEEDED, Result: res}}}}})
		return h.mustApply(&fsmv1.RetrainJobFinish{Header: at, Id: id, RolloutId: "r-" + id}).(*droverv1.RetrainJob)
	}
	// Better, but not by the margin of 0.01.
	j := run("job-a", 10, &droverv1.TrainingResult{Artifact: blob("a"), Format: "drover-native", Metrics: map[string]float64{"accuracy": 0.805}, ChampionMetrics: map[string]float64{"accuracy": 0.8}})
	if j.GetOutcome() != droverv1.RetrainOutcome_RETRAIN_OUTCOME_LOST || j.GetVersion() != 0 || j.GetRolloutId() != "" || !strings.Contains(j.GetMessage(), "lost") {
		t.Fatalf("loser: %v", j)
	}
	if h.f.State().Snapshot().Version("churn", 2) != nil || len(h.f.State().Snapshot().Rollouts("churn", false)) != 0 {
		t.Fatal("a loser was registered or rolled out")
	}
	if r := h.f.State().Snapshot().Run(j.GetRunId()); r.GetTags()["outcome"] != "lost" || r.GetMetrics()["champion_accuracy"] != 0.8 {
		t.Fatalf("the loser's run: %v", r)
	}
	// The champion was not scored.
	j = run("job-b", 20, &droverv1.TrainingResult{Artifact: blob("b"), Format: "drover-native", Metrics: map[string]float64{"accuracy": 0.9}})
	if j.GetState() != droverv1.RetrainJobState_RETRAIN_JOB_STATE_FAILED || !strings.Contains(j.GetMessage(), "champion v1 was not scored") {
		t.Fatalf("unscored champion: %v", j)
	}
	// A lower-is-better metric.
	h.mustApply(&fsmv1.RetrainPolicyPut{Header: header(29), Policy: &droverv1.RetrainPolicy{Name: "nightly", Model: "churn", Runner: "native",
		Dataset: &droverv1.DatasetRecipe{Target: "churned", Base: "churn-train"}, Promotion: &droverv1.Promotion{Metric: "log_loss", Margin: 0.05}}})
	j = run("job-c", 30, &droverv1.TrainingResult{Artifact: blob("c"), Format: "drover-native", Metrics: map[string]float64{"log_loss": 0.3}, ChampionMetrics: map[string]float64{"log_loss": 0.4}})
	if j.GetOutcome() != droverv1.RetrainOutcome_RETRAIN_OUTCOME_WON || j.GetVersion() != 2 || j.GetRolloutId() != "" {
		t.Fatalf("log-loss winner without auto rollout: %v", j)
	}

	// Validation fails the job with the failures named.
	at := header(40)
	at.Time = timestamppb.New(t0.Add(40 * time.Hour))
	h.mustApply(&fsmv1.RetrainJobCreate{Header: at, Job: &droverv1.RetrainJob{Id: "job-d", Policy: "nightly", Trigger: "manual"}})
	j = h.mustApply(&fsmv1.RetrainJobDataset{Header: at, Id: "job-d", Dataset: &droverv1.DatasetVersion{Dataset: "churn-retrain", Content: blob("bad"), Format: "csv"},
		Validation: &droverv1.DatasetValidation{Expectations: []*droverv1.DatasetExpectation{{Name: "rows", Passed: true}, {Name: "tenure.range", Detail: "3 values above 72"}, {Name: "target.non_null"}}}}).(*droverv1.RetrainJob)
	if j.GetState() != droverv1.RetrainJobState_RETRAIN_JOB_STATE_FAILED || !strings.Contains(j.GetMessage(), "failed 2 of 3 expectations: tenure.range, target.non_null") {
		t.Fatalf("invalid data set: %v", j)
	}

	// Attempts run out (max_attempts is 1 by default? the fixture's is 2;
	// the policy was replaced above, so the default of 3 applies).
	at = header(50)
	at.Time = timestamppb.New(t0.Add(50 * time.Hour))
	h.mustApply(&fsmv1.RetrainJobCreate{Header: at, Job: &droverv1.RetrainJob{Id: "job-e", Policy: "nightly", Trigger: "manual"}})
	h.mustApply(&fsmv1.RetrainJobDataset{Header: at, Id: "job-e", Dataset: &droverv1.DatasetVersion{Dataset: "churn-retrain", Content: blob("e"), Format: "csv"}, Validation: &droverv1.DatasetValidation{Passed: true}})
	for i, a := range []string{"a1", "a2", "a3"} {
		h.mustApply(&fsmv1.RetrainJobPlace{Header: at, Id: "job-e", Attempt: uint32(i + 1), AgentId: a})
		h.mustApply(&fsmv1.RetrainJobRequeue{Header: at, Id: "job-e", Attempt: uint32(i + 1), Reason: "down"})
	}
	j = h.job("job-e")
	if j.GetState() != droverv1.RetrainJobState_RETRAIN_JOB_STATE_FAILED || len(j.GetAttempts()) != 3 || !strings.Contains(j.GetMessage(), "lost on 3 agents") {
		t.Fatalf("out of attempts: %v", j)
	}
	if r := h.f.State().Snapshot().Run(j.GetRunId()); r.GetState() != droverv1.RunState_RUN_STATE_FAILED {
		t.Fatalf("its run: %v", r)
	}
}

// TestRetrainPolicyValidation names what is wrong with a policy.
func TestRetrainPolicyValidation(t *testing.T) {
	ok := func() *droverv1.RetrainPolicy {
		return &droverv1.RetrainPolicy{Name: "p", Model: "churn", Runner: "native", Dataset: &droverv1.DatasetRecipe{Target: "y", Feedback: true}}
	}
	for _, c := range []struct {
		change func(*droverv1.RetrainPolicy)
		want   string
	}{
		{func(p *droverv1.RetrainPolicy) { p.Runner = "" }, "runner: required"},
		{func(p *droverv1.RetrainPolicy) { p.Dataset.Target = "" }, "dataset.target: required"},
		{func(p *droverv1.RetrainPolicy) { p.Dataset.Feedback = false }, "give a base data set"},
		{func(p *droverv1.RetrainPolicy) { p.Triggers = &droverv1.RetrainTriggers{Schedule: "0 25 * * *"} }, "hour: 25 is out of range"},
		{func(p *droverv1.RetrainPolicy) {
			p.Triggers = &droverv1.RetrainTriggers{Accuracy: &droverv1.AccuracyTrigger{}}
		}, "give below"},
		{func(p *droverv1.RetrainPolicy) {
			b := 1.5
			p.Triggers = &droverv1.RetrainTriggers{Accuracy: &droverv1.AccuracyTrigger{Below: &b}}
		}, "not in (0, 1]"},
		{func(p *droverv1.RetrainPolicy) {
			p.Triggers = &droverv1.RetrainTriggers{Drift: &droverv1.DriftTrigger{ConsecutiveWindows: 100}}
		}, "consecutive_windows"},
		{func(p *droverv1.RetrainPolicy) { p.Cooldown = durationpb.New(-time.Second) }, "cooldown"},
		{func(p *droverv1.RetrainPolicy) { p.Promotion = &droverv1.Promotion{Margin: -1} }, "promotion.margin"},
		{func(p *droverv1.RetrainPolicy) { p.MaxAttempts = 99 }, "max_attempts"},
	} {
		p := ok()
		c.change(p)
		err := state.ValidateRetrainPolicy(p)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want an error with %q, got %v", c.want, err)
		}
	}
	if err := state.ValidateRetrainPolicy(ok()); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	h.refused(&fsmv1.RetrainPolicyPut{Header: header(1), Policy: ok()}, state.KindNotFound) // no such model
}

// TestDesiredStateWatchIsQuiet: an agent's desired-state watch fires when
// its work changes, not on every command (which, at 10,000 agents, would
// recompute every desired state on every write).
func TestDesiredStateWatchIsQuiet(t *testing.T) {
	h := retrainFixture(t)
	fired := func(ws memdb.WatchSet) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		return ws.WatchCtx(ctx) == nil
	}
	ws := memdb.NewWatchSet()
	if _, err := h.f.State().Snapshot().DesiredState("a1", ws); err != nil {
		t.Fatal(err)
	}
	h.mustApply(&fsmv1.ModelCreate{Header: header(5), Name: "other"})
	h.mustApply(&fsmv1.VersionCreate{Header: header(5), Version: &droverv1.ModelVersion{Model: "other", Artifact: blob("o1"), Format: "onnx"}})
	if fired(ws) {
		t.Fatal("a1's desired-state watch fired on writes that do not concern it")
	}
	h.mustApply(&fsmv1.RetrainJobCreate{Header: header(6), Job: &droverv1.RetrainJob{Id: "job-q", Policy: "nightly", Trigger: "manual", ChampionVersion: 1}})
	if !fired(ws) {
		t.Fatal("a1's desired-state watch did not fire when jobs changed")
	}
}

// TestRefusalMessagesAreDeterministic fails a job on a report with
// several invalid metrics: the message kept names the first in order, the
// same on every replica (it named whichever a map's random order visited
// first, and replicas' states diverged).
func TestRefusalMessagesAreDeterministic(t *testing.T) {
	var first string
	for range 10 {
		h := retrainFixture(t)
		h.mustApply(&fsmv1.RetrainJobCreate{Header: header(10), Job: &droverv1.RetrainJob{Id: "job-1", Policy: "nightly", Trigger: "manual"}})
		h.mustApply(&fsmv1.RetrainJobDataset{Header: header(11), Id: "job-1", Dataset: &droverv1.DatasetVersion{Dataset: "d", Content: blob("rows"), Format: "csv", Rows: 5},
			Validation: &droverv1.DatasetValidation{Passed: true, Rows: 5}})
		h.mustApply(&fsmv1.RetrainJobPlace{Header: header(12), Id: "job-1", Attempt: 1, AgentId: "a1"})
		r := trainingReport(1, 13, &droverv1.TrainingReport{JobId: "job-1", Attempt: 1, Phase: droverv1.TrainingPhase_TRAINING_PHASE_SUCCEEDED,
			Result: &droverv1.TrainingResult{Artifact: blob("cand"), Metrics: map[string]float64{"f1": nanValue(), "accuracy": nanValue(), "auc": nanValue(), "loss": nanValue()}}})
		r.AgentId = "a1"
		h.mustApply(r)
		var dump bytes.Buffer
		snap, _ := h.f.Snapshot()
		if err := snap.(*snapshot).write(&dump); err != nil {
			t.Fatal(err)
		}
		msg := h.job("job-1").GetMessage()
		if !strings.Contains(msg, `metrics["accuracy"]`) {
			t.Fatalf("job message %q does not name the first invalid metric", msg)
		}
		if first == "" {
			first = dump.String()
		} else if dump.String() != first {
			t.Fatalf("the same commands left different states (job message %q)", msg)
		}
	}
}

// TestRetrainTimeoutAfterSuccessRefused: the controller's time-out of a
// running attempt (a fail carrying the attempt), landing after the
// agent's success moved the job to finishing, is refused; a cancel by hand
// still applies.
func TestRetrainTimeoutAfterSuccessRefused(t *testing.T) {
	h := retrainFixture(t)
	h.mustApply(&fsmv1.RetrainJobCreate{Header: header(10), Job: &droverv1.RetrainJob{Id: "job-1", Policy: "nightly", Trigger: "drift", ChampionVersion: 1}})
	h.mustApply(&fsmv1.RetrainJobDataset{Header: header(15), Id: "job-1", Dataset: &droverv1.DatasetVersion{Dataset: "churn-retrain", Content: blob("assembled"), Format: "csv", Rows: 500},
		Validation: &droverv1.DatasetValidation{Passed: true, Rows: 500}})
	h.mustApply(&fsmv1.RetrainJobPlace{Header: header(16), Id: "job-1", Attempt: 1, AgentId: "a2"})
	// The controller decides the attempt timed out; meanwhile it succeeds.
	rep := trainingReport(10, 17, &droverv1.TrainingReport{JobId: "job-1", Attempt: 1, Phase: droverv1.TrainingPhase_TRAINING_PHASE_SUCCEEDED,
		Result: &droverv1.TrainingResult{Artifact: blob("cand"), Format: "drover-native", Metrics: map[string]float64{"accuracy": 0.9}, ChampionMetrics: map[string]float64{"accuracy": 0.8}}})
	rep.AgentId = "a2"
	h.mustApply(rep)
	if s := h.job("job-1").GetState(); s != droverv1.RetrainJobState_RETRAIN_JOB_STATE_FINISHING {
		t.Fatalf("state %v", s)
	}
	h.refused(&fsmv1.RetrainJobFail{Header: header(18), Id: "job-1", Attempt: 1, Reason: "timed out: attempt 1 on gpu-a2 ran longer than 1h0m0s"}, state.KindFailedPrecondition)
	if s := h.job("job-1").GetState(); s != droverv1.RetrainJobState_RETRAIN_JOB_STATE_FINISHING {
		t.Fatalf("after the late time-out: %v", s)
	}
	h.mustApply(&fsmv1.RetrainJobFail{Header: header(19), Id: "job-1", Reason: "cancelled by hand", Cancel: true})
	if s := h.job("job-1").GetState(); s != droverv1.RetrainJobState_RETRAIN_JOB_STATE_CANCELLED {
		t.Fatalf("after cancel: %v", s)
	}
}
