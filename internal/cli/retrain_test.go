package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/hub/hubtest"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// churnPolicyYAML is a policy as people write it: snake_case, durations
// in Go's notation, a size with a unit, numbers for string parameters.
const churnPolicyYAML = `
name: churn-weekly
model: churn
triggers:
  drift: {consecutive_windows: 3}
  accuracy: {below: 0.75, drop: 0.05, window: 10m, min_rows: 200}
  schedule: "0 3 * * 0"
cooldown: 6h
runner: native
params: {l2: 0.1, holdout: 0.2, seed: 7}
dataset:
  base: churn-train
  feedback: true
  target: churned
  ignore: [customer_id]
  collect_timeout: 45s
placement:
  selector: {site: lab}
  gpus: 1
  min_free_gpu_memory_bytes: 8GiB
  allow_cpu: true
promotion: {metric: accuracy, margin: 0.01}
rollout:
  auto: true
  steps:
    - weight: 10
      agents: 1
      bake: 1m
      gates: [{metric: error_rate, max: 0.02}]
    - percent: 100
timeout: 1h30m
max_attempts: 3
`

func wantChurnPolicy() *droverv1.RetrainPolicy {
	below, drop, maxErr := 0.75, 0.05, 0.02
	return &droverv1.RetrainPolicy{
		Name: "churn-weekly", Model: "churn",
		Triggers: &droverv1.RetrainTriggers{
			Drift:    &droverv1.DriftTrigger{ConsecutiveWindows: 3},
			Accuracy: &droverv1.AccuracyTrigger{Below: &below, Drop: &drop, Window: durationpb.New(10 * time.Minute), MinRows: 200},
			Schedule: "0 3 * * 0",
		},
		Cooldown: durationpb.New(6 * time.Hour),
		Runner:   "native",
		Params:   map[string]string{"l2": "0.1", "holdout": "0.2", "seed": "7"},
		Dataset: &droverv1.DatasetRecipe{Base: "churn-train", Feedback: true, Target: "churned", Ignore: []string{"customer_id"},
			CollectTimeout: durationpb.New(45 * time.Second)},
		Placement: &droverv1.Placement{Selector: map[string]string{"site": "lab"}, Gpus: 1, MinFreeGpuMemoryBytes: 8 << 30, AllowCpu: true},
		Promotion: &droverv1.Promotion{Metric: "accuracy", Margin: 0.01},
		Rollout: &droverv1.RolloutTemplate{Auto: true, Steps: []*droverv1.RolloutStep{
			{Weight: 10, Agents: 1, Bake: durationpb.New(time.Minute), Gates: []*droverv1.Gate{{Name: "error_rate", Metric: "error_rate", Max: &maxErr}}},
			{Percent: 100},
		}},
		Timeout:     durationpb.New(90 * time.Minute),
		MaxAttempts: 3,
	}
}

func TestRetrainPolicyFile(t *testing.T) {
	got, err := parseRetrainPolicy("churn.yaml", []byte(churnPolicyYAML))
	if err != nil {
		t.Fatal(err)
	}
	if want := wantChurnPolicy(); !proto.Equal(got, want) {
		t.Fatalf("parsed\n%v\nwant\n%v", got, want)
	}

	// The same in JSON with lowerCamel names and protojson's durations.
	js := `{"name": "churn-weekly", "model": "churn",
	  "triggers": {"drift": {"consecutiveWindows": 3},
	    "accuracy": {"below": 0.75, "drop": 0.05, "window": "600s", "minRows": "200"}, "schedule": "0 3 * * 0"},
	  "cooldown": "21600s", "runner": "native", "params": {"l2": "0.1", "holdout": "0.2", "seed": "7"},
	  "dataset": {"base": "churn-train", "feedback": true, "target": "churned", "ignore": ["customer_id"], "collectTimeout": "45s"},
	  "placement": {"selector": {"site": "lab"}, "gpus": 1, "minFreeGpuMemoryBytes": "8589934592", "allowCpu": true},
	  "promotion": {"metric": "accuracy", "margin": 0.01},
	  "rollout": {"auto": true, "steps": [{"weight": 10, "agents": 1, "bake": "60s", "gates": [{"metric": "error_rate", "max": 0.02}]}, {"percent": 100}]},
	  "timeout": "5400s", "maxAttempts": 3}`
	got, err = parseRetrainPolicy("churn.json", []byte(js))
	if err != nil {
		t.Fatal(err)
	}
	if want := wantChurnPolicy(); !proto.Equal(got, want) {
		t.Fatalf("parsed JSON\n%v\nwant\n%v", got, want)
	}

	// What the hub sets is dropped, so that `show --json` output can be put back.
	stored := wantChurnPolicy()
	stored.Status = &droverv1.RetrainPolicyStatus{LastTrigger: "drift", LastJobId: "rj-1", LastTriggerTime: timestamppb.Now()}
	stored.CreateIndex, stored.ModifyIndex, stored.UpdateTime = 4, 9, timestamppb.Now()
	out, err := json.Marshal(json_{stored})
	if err != nil {
		t.Fatal(err)
	}
	got, err = parseRetrainPolicy("shown.json", out)
	if err != nil {
		t.Fatal(err)
	}
	if want := wantChurnPolicy(); !proto.Equal(got, want) {
		t.Fatalf("round trip\n%v\nwant\n%v", got, want)
	}

	// Fractional durations, and sizes.
	got, err = parseRetrainPolicy("p.yaml", []byte("cooldown: 1.5s\nplacement: {min_free_gpu_memory_bytes: 512 MiB}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got.GetCooldown().AsDuration() != 1500*time.Millisecond || got.GetPlacement().GetMinFreeGpuMemoryBytes() != 512<<20 {
		t.Fatalf("cooldown %v, memory %d", got.GetCooldown().AsDuration(), got.GetPlacement().GetMinFreeGpuMemoryBytes())
	}
}

// TestRetrainDocsPolicy parses the annotated example in docs/retraining.md,
// so that the guide's policy stays one the command takes.
func TestRetrainDocsPolicy(t *testing.T) {
	doc, err := os.ReadFile("../../docs/retraining.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/retraining.md has no yaml block")
	}
	p, err := parseRetrainPolicy("docs/retraining.md", m[1])
	if err != nil {
		t.Fatal(err)
	}
	tr, ds, pl, steps := p.GetTriggers(), p.GetDataset(), p.GetPlacement(), p.GetRollout().GetSteps()
	if p.GetName() != "churn-weekly" || p.GetModel() != "churn" || tr.GetDrift().GetConsecutiveWindows() != 3 ||
		tr.GetAccuracy().GetBelow() != 0.75 || tr.GetAccuracy().GetDrop() != 0.05 || tr.GetAccuracy().GetWindow().AsDuration() != 10*time.Minute ||
		tr.GetAccuracy().GetMinRows() != 200 || tr.GetSchedule() != "0 3 * * 0" || p.GetCooldown().AsDuration() != 6*time.Hour ||
		p.GetRunner() != "native" || p.GetParams()["l2"] != "0.1" || p.GetParams()["holdout"] != "0.2" || p.GetParams()["seed"] != "7" ||
		ds.GetBase() != "churn-train" || !ds.GetFeedback() || ds.GetTarget() != "churned" || strings.Join(ds.GetIgnore(), ",") != "customer_id" ||
		pl.GetSelector()["site"] != "lab" || pl.GetGpus() != 1 || pl.GetMinFreeGpuMemoryBytes() != 8<<30 || !pl.GetAllowCpu() ||
		p.GetPromotion().GetMetric() != "accuracy" || p.GetPromotion().GetMargin() != 0.01 || !p.GetRollout().GetAuto() ||
		len(steps) != 2 || steps[0].GetWeight() != 10 || steps[0].GetBake().AsDuration() != time.Minute ||
		steps[0].GetGates()[0].GetMetric() != "error_rate" || steps[0].GetGates()[0].GetName() != "error_rate" || steps[1].GetPercent() != 100 {
		t.Fatalf("the guide's policy parsed as\n%v", p)
	}
}

func TestRetrainPolicyFileErrors(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"name: x\ncooldwn: 1h\n", `p.yaml: unknown field "cooldwn" (did you mean "cooldown"?)`},
		{"triggers:\n  accuracy:\n    belw: 0.7\n", `p.yaml: unknown field "triggers.accuracy.belw" (did you mean "below"?)`},
		{"triggers: {drift: {consecutiveWindow: 3}}\n", `unknown field "triggers.drift.consecutiveWindow" (did you mean "consecutiveWindows"?)`},
		{"rollout:\n  steps:\n  - weight: 10\n    gates: [{metric: error_rate, maxx: 0.1}]\n", `unknown field "rollout.steps[0].gates[0].maxx" (did you mean "max"?)`},
		{"zzzqqq: 1\n", `unknown field "zzzqqq"`},
		{"cooldown: 6 hours\n", `cooldown: "6 hours" is not a duration`},
		{"cooldown: 3600\n", `cooldown: 3600 is not a duration: write it with a unit`},
		{"cooldown: -5m\n", `cooldown: "-5m": a duration must not be negative`},
		{"triggers: {accuracy: {window: soon}}\n", `triggers.accuracy.window: "soon" is not a duration`},
		{"placement: {gpus: one}\n", `invalid value for uint32 field gpus: "one"`},
		{"placement: {min_free_gpu_memory_bytes: lots}\n", `placement.min_free_gpu_memory_bytes: "lots" is not a size`},
		{"- name: x\n", "want a policy (name, model, triggers, ...), not a list"},
		{"", "p.yaml: empty"},
		{"name: [x\n", "p.yaml: "},
	} {
		_, err := parseRetrainPolicy("p.yaml", []byte(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to contain %q", tc.file, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "(line ") {
			t.Errorf("%q: error %q points into the converted JSON", tc.file, err)
		}
	}
}

func TestRetrainFlagValidation(t *testing.T) {
	dir := t.TempDir()
	nameless := writeFile(t, dir, "nameless.yaml", "model: churn\nrunner: native\n")
	modelless := writeFile(t, dir, "modelless.yaml", "name: p\n")
	typo := writeFile(t, dir, "typo.yaml", "name: p\nmodel: churn\nrunnr: native\n")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"retrain", "policies", "put"}, 2, "give the policy with -f"},
		{[]string{"retrain", "policies", "put", "-f", nameless}, 2, "the policy has no name"},
		{[]string{"retrain", "policies", "put", "-f", modelless}, 2, "the policy has no model"},
		{[]string{"retrain", "policies", "put", "-f", typo}, 1, `unknown field "runnr" (did you mean "runner"?)`},
		{[]string{"retrain", "policies", "put", "-f", filepath.Join(dir, "missing.yaml")}, 1, "no such file"},
		{[]string{"retrain", "policies", "put", "-f", nameless, "extra"}, 2, "unknown command"},
		{[]string{"retrain", "policies", "show"}, 2, "accepts 1 arg(s), received 0"},
		{[]string{"retrain", "policies", "delete", "a", "b"}, 2, "accepts 1 arg(s), received 2"},
		{[]string{"retrain", "run"}, 2, "accepts 1 arg(s), received 0"},
		{[]string{"retrain", "run", "p", "--forse"}, 2, "unknown flag: --forse"},
		{[]string{"retrain", "jobs", "list", "--limit", "0"}, 2, "--limit must be at least 1"},
		{[]string{"retrain", "jobs", "list", "--limit", "-1"}, 2, "invalid argument"},
		{[]string{"retrain", "jobs", "show"}, 2, "accepts 1 arg(s)"},
		{[]string{"retrain", "jobs", "watch", "a", "b"}, 2, "accepts 1 arg(s)"},
		{[]string{"retrain", "jobs", "logs"}, 2, "accepts 1 arg(s)"},
		{[]string{"retrain", "jobs", "cancel"}, 2, "accepts 1 arg(s)"},
	} {
		_, stderr, code := run(t, nil, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("drover %s: exit %d, %q; want exit %d and %q", strings.Join(tc.args, " "), code, stderr, tc.code, tc.want)
		}
	}
}

func TestRetrainHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 350 * time.Millisecond: "350ms", 42 * time.Second: "42s", 3*time.Minute + 20*time.Second: "3m20s",
		5 * time.Minute: "5m", 6 * time.Hour: "6h", 90 * time.Minute: "1h30m", 23*time.Hour + 59*time.Minute + 50*time.Second: "1d",
		52 * time.Hour: "2d4h", 7 * 24 * time.Hour: "7d", -2 * time.Second: "2s",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestRetrainNewLogLines(t *testing.T) {
	for _, tc := range []struct{ prev, cur, want []string }{
		{nil, []string{"a", "b"}, []string{"a", "b"}},
		{[]string{"a", "b"}, []string{"a", "b"}, []string{}},
		{[]string{"a", "b"}, []string{"a", "b", "c"}, []string{"c"}},
		// The tail is full: old lines fall off the front.
		{[]string{"a", "b", "c"}, []string{"b", "c", "d"}, []string{"d"}},
		{[]string{"a", "b", "c"}, []string{"c", "d", "e"}, []string{"d", "e"}},
		// It moved on by more than its length, or a new attempt began anew.
		{[]string{"a", "b", "c"}, []string{"x", "y", "z"}, []string{"x", "y", "z"}},
		// Repeated lines: the longest overlap.
		{[]string{"epoch", "epoch"}, []string{"epoch", "epoch", "epoch", "done"}, []string{"epoch", "done"}},
		{[]string{"a"}, nil, nil},
	} {
		got := newLogLines(tc.prev, tc.cur)
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("newLogLines(%q, %q) = %q, want %q", tc.prev, tc.cur, got, tc.want)
		}
	}
}

var (
	jobT0  = time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	jobNow = jobT0.Add(8 * time.Minute)
)

// wonJob is a job that ended: a second attempt after an agent was lost,
// a candidate that beat the champion, a rollout started.
func wonJob() *droverv1.RetrainJob {
	tp := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(jobT0.Add(d)) }
	return &droverv1.RetrainJob{
		Id: "rj-7f3a", Policy: "churn-weekly", Model: "churn", State: droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED,
		Trigger: "drift", TriggerDetail: "drift on churn:4 for 3 consecutive windows", ChampionVersion: 4,
		Spec:         wantChurnPolicy(),
		ExportAgents: []string{"ag-1", "ag-2", "ag-3"},
		Exports: []*droverv1.LabelledExport{
			{AgentId: "ag-1", Rows: 1200, Content: &droverv1.BlobRef{Digest: "sha256:aa"}},
			{AgentId: "ag-2", Error: "no labelled rows"},
		},
		Dataset: "churn-retrain", DatasetVersion: 7, DatasetContent: &droverv1.BlobRef{Digest: "sha256:dd"},
		Validation: &droverv1.DatasetValidation{Passed: true, Rows: 5200, Expectations: []*droverv1.DatasetExpectation{
			{Name: "rows", Passed: true}, {Name: "tenure.range", Column: "tenure", Passed: true}}},
		AgentId: "ag-7", AgentName: "gpu-7", Attempt: 2, ExcludedAgents: []string{"ag-3"},
		Attempts: []*droverv1.RetrainAttempt{
			{Attempt: 1, AgentId: "ag-3", AgentName: "gpu-3", StartTime: tp(time.Minute), EndTime: tp(3 * time.Minute), Outcome: "agent lost: no heartbeat for 30s"},
			{Attempt: 2, AgentId: "ag-7", AgentName: "gpu-7", StartTime: tp(3*time.Minute + 10*time.Second), EndTime: tp(6 * time.Minute), Outcome: "succeeded"},
		},
		Phase: "uploading", Progress: 1, Stage: "done", Metrics: map[string]float64{"accuracy": 0.842, "log_loss": 0.39},
		Log:   []string{"training on 4160 rows", "accuracy 0.842", "uploading model.json"},
		RunId: "run-12",
		Result: &droverv1.TrainingResult{Format: "drover-native", Artifact: &droverv1.BlobRef{Digest: "sha256:ab"},
			Metrics: map[string]float64{"accuracy": 0.842}, ChampionMetrics: map[string]float64{"accuracy": 0.826},
			Params: map[string]string{"l2": "0.1"}, TrainRows: 4160, HoldoutRows: 1040},
		Outcome: droverv1.RetrainOutcome_RETRAIN_OUTCOME_WON, Metric: "accuracy", CandidateScore: 0.842, ChampionScore: 0.826, Margin: 0.01,
		Version: 5, RolloutId: "r-91",
		CreatedBy:  &droverv1.Actor{Name: "retrain", TokenId: "hub"},
		CreateTime: tp(0), StartTime: tp(time.Minute), EndTime: tp(6*time.Minute + 30*time.Second), UpdateTime: tp(6*time.Minute + 30*time.Second),
	}
}

func TestRetrainJobRendering(t *testing.T) {
	j := wonJob()
	var buf bytes.Buffer
	printRetrainJob(&buf, j, jobNow)
	out := buf.String()
	for _, want := range []string{
		"Job:       rj-7f3a (succeeded, won)\n",
		"Policy:    churn-weekly, model churn\n",
		"Trigger:   drift: drift on churn:4 for 3 consecutive windows\n",
		"Champion:  churn:4\n",
		"Data set:  churn-retrain:7, 5200 rows, valid (2 expectations passed)\n",
		"Feedback:  1200 labelled rows from 2 of 3 agents: ag-1 1200 rows; ag-2 none (no labelled rows); ag-3 none (not in time)\n",
		"Agent:     gpu-7 (ag-7), attempt 2 of 3; excluded: ag-3\n",
		"Progress:  100% uploading done\n",
		"Metrics:   accuracy=0.842 log_loss=0.39\n",
		"Result:    accuracy: candidate 0.842, champion 0.826 (margin 0.01, higher is better): won: registered\n",
		"Trained:   4160 rows, 1040 held out; params l2=0.1\n",
		"Version:   churn:5\n",
		"Rollout:   r-91\n",
		"Run:       run-12\n",
		"took 5m30s\n",
		"ATTEMPT  AGENT  STARTED",
		"agent lost: no heartbeat for 30s\n",
		"2m50s  succeeded\n",
		"Log (the last 3 lines):\n  training on 4160 rows\n  accuracy 0.842\n  uploading model.json\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("jobs show lacks %q:\n%s", want, out)
		}
	}

	// A job whose data set failed validation lists every failed expectation.
	bad := &droverv1.RetrainJob{Id: "rj-2", Policy: "p", Model: "churn", State: droverv1.RetrainJobState_RETRAIN_JOB_STATE_FAILED,
		Trigger: "manual", Dataset: "churn-retrain", DatasetVersion: 8, Message: "the data set failed validation: 2 expectations",
		Validation: &droverv1.DatasetValidation{Rows: 40, Expectations: []*droverv1.DatasetExpectation{
			{Name: "rows", Passed: false, Detail: "40 rows, want at least 50"},
			{Name: "tenure.present", Column: "tenure", Passed: true},
			{Name: "plan.categories", Column: "plan", Passed: false, Detail: `"platinum" is not a category (3 rows)`},
		}}}
	buf.Reset()
	printRetrainJob(&buf, bad, jobNow)
	out = buf.String()
	for _, want := range []string{
		"Job:       rj-2 (failed)\n",
		"Champion:  none (the candidate is the first version)\n",
		"Data set:  churn-retrain:8, 40 rows, INVALID: 2 of 3 expectations failed (below)\n",
		"Message:   the data set failed validation: 2 expectations\n",
		"FAILED EXPECTATION  COLUMN  DETAIL\nrows                -       40 rows, want at least 50\nplan.categories     plan    \"platinum\" is not a category (3 rows)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("jobs show (failed) lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "tenure.present") {
		t.Errorf("a passed expectation is listed among the failed:\n%s", out)
	}

	// The table.
	running := &droverv1.RetrainJob{Id: "rj-3", Policy: "p", Model: "churn", State: droverv1.RetrainJobState_RETRAIN_JOB_STATE_RUNNING,
		Trigger: "schedule", AgentName: "gpu-2", Attempt: 1, Progress: 0.45, Phase: "training",
		CreateTime: timestamppb.New(jobT0), StartTime: timestamppb.New(jobT0.Add(time.Minute))}
	lost := &droverv1.RetrainJob{Id: "rj-4", Policy: "p", Model: "churn", State: droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED,
		Trigger: "accuracy", Outcome: droverv1.RetrainOutcome_RETRAIN_OUTCOME_LOST, Metric: "log_loss", CandidateScore: 0.41, ChampionScore: 0.39, ChampionVersion: 4}
	buf.Reset()
	printRetrainJobs(&buf, []*droverv1.RetrainJob{j, running, lost, bad}, jobNow)
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 5 || !regexp.MustCompile(`^ID +POLICY +MODEL +STATE +TRIGGER +AGENT +PROGRESS +RESULT +CREATED +TOOK$`).MatchString(lines[0]) {
		t.Fatalf("jobs list:\n%s", buf.String())
	}
	for i, want := range []string{
		`^rj-7f3a +churn-weekly +churn +succeeded +drift +gpu-7 \(#2\) +- +won → v5 \(accuracy 0.842 vs 0.826\) +\S+ \S+ +5m30s$`,
		`^rj-3 +p +churn +running +schedule +gpu-2 +45% training +- +\S+ \S+ +7m$`,
		`^rj-4 +p +churn +succeeded +accuracy +- +- +lost \(log_loss 0.41 vs 0.39\) +- +-$`,
		`^rj-2 +p +churn +failed +manual +- +- +the data set failed validation: 2 expectations +- +-$`,
	} {
		if !regexp.MustCompile(want).MatchString(lines[i+1]) {
			t.Errorf("jobs list row %d = %q, want %s", i+1, lines[i+1], want)
		}
	}

	// JSON: flat, snake_case, enums as words.
	raw, err := json.Marshal(retrainJobOf(j))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"id": "rj-7f3a", "state": "succeeded", "outcome": "won", "trigger": "drift", "champion_version": 4.0,
		"dataset": "churn-retrain", "dataset_version": 7.0, "dataset_digest": "sha256:dd", "agent_name": "gpu-7", "attempt": 2.0,
		"progress": 1.0, "metric": "accuracy", "candidate_score": 0.842, "champion_score": 0.826, "margin": 0.01, "version": 5.0,
		"rollout_id": "r-91", "run_id": "run-12", "create_time": "2026-03-01T03:00:00Z", "end_time": "2026-03-01T03:06:30Z"} {
		if got[k] != want {
			t.Errorf("job JSON %s = %v, want %v", k, got[k], want)
		}
	}
	if v := got["validation"].(map[string]any); v["passed"] != true || len(v["expectations"].([]any)) != 2 {
		t.Errorf("job JSON validation = %v", v)
	}
	if at := got["attempts"].([]any); len(at) != 2 || at[0].(map[string]any)["outcome"] != "agent lost: no heartbeat for 30s" {
		t.Errorf("job JSON attempts = %v", at)
	}
	if r := got["result"].(map[string]any); r["champion_metrics"].(map[string]any)["accuracy"] != 0.826 || r["train_rows"] != 4160.0 {
		t.Errorf("job JSON result = %v", r)
	}
	if s := got["spec"].(map[string]any); s["name"] != "churn-weekly" || s["cooldown"] != "21600s" {
		t.Errorf("job JSON spec = %v", s)
	}
	if e := got["exports"].([]any); len(e) != 2 || e[1].(map[string]any)["error"] != "no labelled rows" {
		t.Errorf("job JSON exports = %v", e)
	}
	// A job with nothing yet still has its lists and maps, empty.
	raw, _ = json.Marshal(retrainJobOf(&droverv1.RetrainJob{Id: "rj-5", State: droverv1.RetrainJobState_RETRAIN_JOB_STATE_PENDING}))
	for _, want := range []string{`"state":"pending"`, `"export_agents":[]`, `"exports":[]`, `"attempts":[]`, `"excluded_agents":[]`, `"metrics":{}`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("pending job JSON %s lacks %s", raw, want)
		}
	}
	if strings.Contains(string(raw), `"outcome"`) || strings.Contains(string(raw), `"result"`) {
		t.Errorf("pending job JSON has an outcome or result: %s", raw)
	}
}

func TestRetrainPolicyRendering(t *testing.T) {
	p := wantChurnPolicy()
	p.Status = &droverv1.RetrainPolicyStatus{LastTrigger: "drift", LastJobId: "rj-7f3a", LastTriggerTime: timestamppb.New(jobNow.Add(-2 * time.Hour))}
	var buf bytes.Buffer
	printRetrainPolicy(&buf, p, jobNow)
	out := buf.String()
	for _, want := range []string{
		"Policy:          churn-weekly (model churn)\n",
		"Triggers:        drift: the fleet's verdict on the champion is drift for 3 consecutive windows\n",
		"                 accuracy: live accuracy below 0.75 or down 0.05 from the accuracy it was registered with, over 10m (at least 200 labelled rows)\n",
		"                 schedule: \"0 3 * * 0\" (UTC)\n",
		"Cool-down:       6h\n",
		"Runner:          native holdout=0.2 l2=0.1 seed=7\n",
		"Data set:        churn-train (newest) + feedback (at most 10000 rows per agent, handed in within 45s) → churn-retrain; target churned, ignore customer_id; at least 50 rows\n",
		"Placement:       agents with site=lab, 1 GPU, 8.0 GiB free GPU memory, CPU-only agents allowed\n",
		"Promotion:       accuracy, higher is better: better than the champion by 0.01\n",
		"Rollout:         auto: 1) 1 agent, canary weight 10, bake 1m, gates error_rate max=0.02; 2) everyone\n",
		"Timeout:         1h30m\n",
		"Attempts:        3 at most\n",
		"Last triggered:  drift, 2h ago: job rj-7f3a\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("policies show lacks %q:\n%s", want, out)
		}
	}

	// Defaults are shown as such; no triggers means by hand only.
	zero := wantChurnPolicy()
	zero.Cooldown = durationpb.New(0)
	buf.Reset()
	printRetrainPolicy(&buf, zero, jobNow)
	if !strings.Contains(buf.String(), "Cool-down:  none\n") {
		t.Errorf("a zero cool-down:\n%s", buf.String())
	}
	bare := &droverv1.RetrainPolicy{Name: "bare", Model: "churn", Runner: "sklearn", Paused: true,
		Promotion: &droverv1.Promotion{Metric: "log_loss"}, Rollout: &droverv1.RolloutTemplate{Auto: true}}
	buf.Reset()
	printRetrainPolicy(&buf, bare, jobNow)
	out = buf.String()
	for _, want := range []string{
		"Policy:     bare (model churn) — paused: triggers nothing by itself\n",
		"Triggers:   none: only by hand (drover retrain run)\n",
		"Cool-down:  1h (default)\n",
		"Data set:   - → churn-retrain; target -; at least 50 rows\n",
		"Placement:  any ready agent\n",
		"Promotion:  log_loss, lower is better: at least as good as the champion\n",
		"Rollout:    auto: canary at weight 10 judged by its error rate for 1m, then everyone (default)\n",
		"Timeout:    1h (default)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("policies show (bare) lacks %q:\n%s", want, out)
		}
	}

	buf.Reset()
	printRetrainPolicies(&buf, []*droverv1.RetrainPolicy{p, bare}, jobNow)
	want := "NAME          MODEL  STATE   TRIGGERS                                        COOLDOWN      RUNNER   LAST TRIGGERED  LAST JOB\n" +
		"churn-weekly  churn  active  drift×3, accuracy<0.75/-0.05, cron \"0 3 * * 0\"  6h            native   drift 2h ago    rj-7f3a\n" +
		"bare          churn  paused  manual                                          1h (default)  sklearn  -               -\n"
	if buf.String() != want {
		t.Errorf("policies list:\n%s\nwant\n%s", buf.String(), want)
	}

	// JSON is the policy in protobuf's JSON mapping with the proto's names.
	raw, err := json.Marshal(json_{p})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"name":"churn-weekly"`, `"cooldown":"21600s"`, `"consecutive_windows":3`, `"min_free_gpu_memory_bytes":"8589934592"`,
		`"last_job_id":"rj-7f3a"`, `"allow_cpu":true`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("policy JSON %s lacks %s", raw, want)
		}
	}
}

// TestRetrainJobConsole checks how a watch draws a job: on a terminal, log
// lines and changes of state above a status line redrawn below them; off
// one, a line per change with the log lines beneath.
func TestRetrainJobConsole(t *testing.T) {
	clock := time.Date(2026, 3, 1, 3, 0, 0, 0, time.Local)
	now := func() time.Time { return clock }
	updates := []*droverv1.RetrainJob{
		{Id: "rj-1", Policy: "p", Model: "churn", Trigger: "manual", State: droverv1.RetrainJobState_RETRAIN_JOB_STATE_QUEUED},
		{Id: "rj-1", Policy: "p", Model: "churn", Trigger: "manual", State: droverv1.RetrainJobState_RETRAIN_JOB_STATE_RUNNING, AgentName: "gpu-7", Attempt: 1,
			Phase: "training", Progress: 0.5, Stage: "epoch 5/10", Log: []string{"loading", "epoch 5"}},
		{Id: "rj-1", Policy: "p", Model: "churn", Trigger: "manual", State: droverv1.RetrainJobState_RETRAIN_JOB_STATE_RUNNING, AgentName: "gpu-7", Attempt: 1,
			Phase: "training", Progress: 0.5, Stage: "epoch 5/10", Log: []string{"loading", "epoch 5"}, Metrics: map[string]float64{"loss": 0.25}},
		{Id: "rj-1", Policy: "p", Model: "churn", Trigger: "manual", State: droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED, AgentName: "gpu-7", Attempt: 1,
			Log: []string{"epoch 5", "done"}, Outcome: droverv1.RetrainOutcome_RETRAIN_OUTCOME_WON, Metric: "accuracy", CandidateScore: 0.84,
			ChampionScore: 0.82, ChampionVersion: 4, Margin: 0.01, Version: 5},
	}

	var buf bytes.Buffer
	c := &jobConsole{w: &buf, tty: true, width: 10, now: now}
	for _, j := range updates {
		c.update(j)
	}
	c.finish(updates[len(updates)-1])
	want := "Job rj-1: p retrains churn (manual)\n" +
		"03:00:00  queued  waiting for an agent\n" +
		"\rqueued  waiting for an agent\x1b[K" +
		"\r\x1b[K" + "loading\nepoch 5\n" +
		"03:00:00  running  on gpu-7  50%  training  epoch 5/10\n" +
		"\rrunning  on gpu-7  [=====>    ]   50%  training  epoch 5/10\x1b[K" +
		"\r\x1b[K" + "\rrunning  on gpu-7  [=====>    ]   50%  training  epoch 5/10  loss=0.25\x1b[K" +
		"\r\x1b[K" + "done\n" +
		"03:00:00  succeeded  won\n" +
		"Job rj-1 succeeded: accuracy: candidate 0.84, champion 0.82 (margin 0.01, higher is better): won: registered; churn:5\n"
	if got := buf.String(); got != want {
		t.Errorf("terminal:\n got %q\nwant %q", got, want)
	}

	buf.Reset()
	c = newJobConsole(&buf)
	c.now = now
	for _, j := range updates {
		c.update(j)
	}
	c.finish(updates[len(updates)-1])
	want = "Job rj-1: p retrains churn (manual)\n" +
		"03:00:00  queued  waiting for an agent\n" +
		"          loading\n          epoch 5\n" +
		"03:00:00  running  on gpu-7  50%  training  epoch 5/10\n" +
		"03:00:00  running  on gpu-7  50%  training  epoch 5/10  loss=0.25\n" +
		"          done\n" +
		"03:00:00  succeeded  won\n" +
		"Job rj-1 succeeded: accuracy: candidate 0.84, champion 0.82 (margin 0.01, higher is better): won: registered; churn:5\n"
	if got := buf.String(); got != want {
		t.Errorf("not a terminal:\n got %q\nwant %q", got, want)
	}
}

// fakeRetrain serves WatchJob from scripted streams: each call sends the
// next script's jobs and then ends (a script that does not end the job
// ends the stream early, as a stopping hub node does).
type fakeRetrain struct {
	droverv1connect.UnimplementedRetrainServiceHandler
	mu      sync.Mutex
	scripts [][]*droverv1.RetrainJob
	calls   int
}

func (f *fakeRetrain) WatchJob(_ context.Context, req *droverv1.WatchJobRequest, s droverv1connect.RetrainServiceWatchJobServerStream) error {
	f.mu.Lock()
	i := f.calls
	f.calls++
	f.mu.Unlock()
	if i >= len(f.scripts) {
		return connect.NewError(connect.CodeNotFound, "no job "+req.GetId())
	}
	for _, j := range f.scripts[i] {
		if err := s.Send(&droverv1.WatchJobResponse{Job: j}); err != nil {
			return err
		}
	}
	return nil
}

func startFakeRetrain(t *testing.T, f *fakeRetrain) string {
	t.Helper()
	server := connect.NewServer()
	droverv1connect.RegisterRetrainServiceHandler(server, f)
	mux := http.NewServeMux()
	connecthttp.Mount(mux, server)
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// TestRetrainWatchExit follows a job through a stream the hub cuts short
// (the watch reconnects and prints nothing twice) to its end: a failed job
// exits 1 with its message; --json prints one JSON object per line.
func TestRetrainWatchExit(t *testing.T) {
	job := func(state droverv1.RetrainJobState, log ...string) *droverv1.RetrainJob {
		return &droverv1.RetrainJob{Id: "rj-9", Policy: "p", Model: "churn", Trigger: "manual", State: state, AgentName: "gpu-1", Attempt: 1, Log: log}
	}
	running := droverv1.RetrainJobState_RETRAIN_JOB_STATE_RUNNING
	failed := job(droverv1.RetrainJobState_RETRAIN_JOB_STATE_FAILED, "a", "b", "Traceback: boom")
	failed.Message = "training failed: exit status 1"
	scripts := func() [][]*droverv1.RetrainJob {
		return [][]*droverv1.RetrainJob{
			{job(running, "a")},
			{job(running, "a", "b"), failed},
		}
	}

	f := &fakeRetrain{scripts: scripts()}
	env := map[string]string{"DROVER_ADDR": startFakeRetrain(t, f), "DROVER_TOKEN": ""}
	out, stderr, code := run(t, env, "retrain", "jobs", "watch", "rj-9")
	if code != 1 || !strings.Contains(stderr, "error: job rj-9 failed: training failed: exit status 1") {
		t.Fatalf("watch of a failed job: exit %d, stderr %q\n%s", code, stderr, out)
	}
	if f.calls != 2 {
		t.Errorf("WatchJob called %d times, want 2 (one reconnect)", f.calls)
	}
	for _, l := range []string{"a", "b", "Traceback: boom"} {
		if n := strings.Count(out, "          "+l+"\n"); n != 1 {
			t.Errorf("log line %q printed %d times:\n%s", l, n, out)
		}
	}
	if !strings.Contains(out, "  failed  training failed: exit status 1\n") {
		t.Errorf("no final status line:\n%s", out)
	}

	f = &fakeRetrain{scripts: scripts()}
	env["DROVER_ADDR"] = startFakeRetrain(t, f)
	out, stderr, code = run(t, env, "--json", "retrain", "jobs", "watch", "rj-9")
	if code != 1 || !strings.Contains(stderr, `"message":"job rj-9 failed: training failed: exit status 1"`) {
		t.Fatalf("watch --json of a failed job: exit %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("watch --json printed %d lines, want 3:\n%s", len(lines), out)
	}
	var last struct {
		State   string   `json:"state"`
		Log     []string `json:"log"`
		Message string   `json:"message"`
	}
	if err := json.Unmarshal([]byte(lines[2]), &last); err != nil || last.State != "failed" || len(last.Log) != 3 {
		t.Fatalf("last JSON line %q: %v %+v", lines[2], err, last)
	}

	// A job that succeeded exits 0, whether its candidate won or lost.
	lost := job(droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED)
	lost.Outcome, lost.Metric, lost.CandidateScore, lost.ChampionScore, lost.ChampionVersion = droverv1.RetrainOutcome_RETRAIN_OUTCOME_LOST, "accuracy", 0.8, 0.82, 4
	f = &fakeRetrain{scripts: [][]*droverv1.RetrainJob{{lost}}}
	env["DROVER_ADDR"] = startFakeRetrain(t, f)
	out = mustRun(t, env, "retrain", "jobs", "watch", "rj-9")
	if !strings.Contains(out, "Job rj-9 succeeded: accuracy: candidate 0.8, champion 0.82 (margin 0, higher is better): lost: recorded, not registered\n") {
		t.Errorf("watch of a lost job:\n%s", out)
	}

	// The error a watch ends with.
	cancelled := job(droverv1.RetrainJobState_RETRAIN_JOB_STATE_CANCELLED)
	for msg, want := range map[string]string{"cancelled: wrong data": "job rj-9 cancelled: wrong data", "by alice": "job rj-9 was cancelled: by alice"} {
		cancelled.Message = msg
		if err := retrainJobError(cancelled); err == nil || err.Error() != want {
			t.Errorf("retrainJobError(cancelled, %q) = %v, want %q", msg, err, want)
		}
	}
	if err := retrainJobError(lost); err != nil {
		t.Errorf("retrainJobError(succeeded) = %v", err)
	}

	// A refusal is not retried.
	f = &fakeRetrain{}
	env["DROVER_ADDR"] = startFakeRetrain(t, f)
	_, stderr, code = run(t, env, "retrain", "jobs", "watch", "rj-404")
	if code != 1 || !strings.Contains(stderr, "not_found: no job rj-404") || f.calls != 1 {
		t.Errorf("watch of an unknown job: exit %d, %q, %d calls", code, stderr, f.calls)
	}
}

// TestRetrainPolicyThroughHub puts a policy through a real in-process hub
// and reads it back.
func TestRetrainPolicyThroughHub(t *testing.T) {
	c := hubtest.StartCluster(t, 1, hubtest.Options{})
	env := map[string]string{"DROVER_ADDR": c.Nodes[0].HTTPAddr(), "DROVER_TOKEN": c.AdminToken}
	dir := t.TempDir()
	mustRun(t, env, "models", "create", "churn")
	mustRun(t, env, "datasets", "push", "churn-train", "--file", writeFile(t, dir, "train.csv", "tenure,churned\n1,0\n2,1\n"))
	file := writeFile(t, dir, "policy.yaml", churnPolicyYAML)

	out := mustRun(t, env, "retrain", "policies", "put", "-f", file, "--name", "churn-nightly", "--reason", "test")
	if !strings.Contains(out, "churn-nightly (model churn)") || !strings.Contains(out, "Cool-down:") {
		t.Fatalf("policies put printed:\n%s", out)
	}
	var list struct {
		Policies []struct {
			Name     string `json:"name"`
			Model    string `json:"model"`
			Cooldown string `json:"cooldown"`
			Triggers struct {
				Schedule string `json:"schedule"`
			} `json:"triggers"`
		} `json:"policies"`
	}
	runJSON(t, env, &list, "retrain", "policies", "list", "--model", "churn")
	if len(list.Policies) != 1 || list.Policies[0].Name != "churn-nightly" || list.Policies[0].Model != "churn" ||
		list.Policies[0].Cooldown != "21600s" || list.Policies[0].Triggers.Schedule != "0 3 * * 0" {
		t.Fatalf("policies list --json = %+v", list)
	}
	if out := mustRun(t, env, "retrain", "policies", "list"); !strings.Contains(out, "churn-nightly") {
		t.Fatalf("policies list:\n%s", out)
	}
}
