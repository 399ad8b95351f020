package integration

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/parquet-go/parquet-go"

	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/internal/churn"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// churnTraffic sends the bundled churn model predictions for generated
// customers, each batch with an id, and the customers' true churn as
// feedback: what an application does when it learns who left.
type churnTraffic struct {
	t      *testing.T
	agents []string // serve addresses
	schema *droverv1.FeatureSchema
	mu     sync.Mutex
	sent   int
	errors []string
}

func (tr *churnTraffic) batch(seq int, agent string, customers []churn.Customer) {
	header := churn.Header()
	col := map[string]int{}
	for i, h := range header {
		col[h] = i
	}
	records := make([][]string, len(customers))
	for i := range customers {
		records[i] = customers[i].Record()
	}
	var inputs []string
	for _, f := range tr.schema.GetInputs() {
		var data []string
		for _, r := range records {
			v := r[col[f.GetName()]]
			if f.GetDatatype() == "BYTES" {
				v = strconv.Quote(v)
			}
			data = append(data, v)
		}
		inputs = append(inputs, fmt.Sprintf(`{"name":%q,"datatype":%q,"shape":[%d],"data":[%s]}`, f.GetName(), f.GetDatatype(), len(records), strings.Join(data, ",")))
	}
	id := fmt.Sprintf("req-%d", seq)
	resp, err := http.Post("http://"+agent+"/v2/models/churn/infer", "application/json", strings.NewReader(`{"id":"`+id+`","inputs":[`+strings.Join(inputs, ",")+`]}`))
	if err != nil {
		tr.fail(fmt.Sprintf("infer: %v", err))
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tr.fail(fmt.Sprintf("infer: %d", resp.StatusCode))
		return
	}
	labels := make([]string, len(records))
	for i, r := range records {
		labels[i] = r[col[churn.Target]]
	}
	fb, _ := json.Marshal(map[string]any{"model": "churn", "items": []any{map[string]any{"id": id, "labels": labels}}})
	resp, err = http.Post("http://"+agent+"/v1/feedback", "application/json", bytes.NewReader(fb))
	if err != nil {
		tr.fail(fmt.Sprintf("feedback: %v", err))
		return
	}
	resp.Body.Close()
	tr.mu.Lock()
	tr.sent++
	tr.mu.Unlock()
}

func (tr *churnTraffic) fail(msg string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.errors = append(tr.errors, msg)
}

// run sends drifted traffic to every agent until ctx ends.
func (tr *churnTraffic) run(ctx context.Context, drift float64) {
	for seq := 0; ctx.Err() == nil; seq++ {
		customers := churn.Generate(churn.Options{Rows: 40, Seed: uint64(1000 + seq), Drift: drift})
		tr.batch(seq, tr.agents[seq%len(tr.agents)], customers)
		select {
		case <-ctx.Done():
		case <-time.After(40 * time.Millisecond):
		}
	}
}

// waitJob waits for a policy's newest job to satisfy ok.
func waitJob(t *testing.T, cl retrainClient, policy string, timeout time.Duration, ok func(*droverv1.RetrainJob) error) *droverv1.RetrainJob {
	t.Helper()
	var job *droverv1.RetrainJob
	hubtest.WaitFor(t, timeout, func() error {
		resp, err := cl.ListJobs(context.Background(), &droverv1.ListJobsRequest{Policy: policy, Limit: 1})
		if err != nil {
			return err
		}
		if len(resp.GetJobs()) == 0 {
			return fmt.Errorf("no job of %s yet", policy)
		}
		full, err := cl.GetJob(context.Background(), &droverv1.GetJobRequest{Id: resp.GetJobs()[0].GetId()})
		if err != nil {
			return err
		}
		job = full.GetJob()
		return ok(job)
	})
	return job
}

type retrainClient interface {
	ListJobs(context.Context, *droverv1.ListJobsRequest) (*droverv1.ListJobsResponse, error)
	GetJob(context.Context, *droverv1.GetJobRequest) (*droverv1.GetJobResponse, error)
}

func ended(j *droverv1.RetrainJob) error {
	switch j.GetState() {
	case droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED, droverv1.RetrainJobState_RETRAIN_JOB_STATE_FAILED, droverv1.RetrainJobState_RETRAIN_JOB_STATE_CANCELLED:
		return nil
	}
	return fmt.Errorf("job %s is %v (%s %.2f): %s", j.GetId(), j.GetState(), j.GetPhase(), j.GetProgress(), j.GetMessage())
}

// TestRetrainingLoop closes the loop with a real hub and two real agents,
// one with (fake) GPUs and one without: drifted traffic with feedback
// makes the fleet's drift verdict on v1 "drift"; the policy starts a job;
// both agents hand in their labelled rows; the data set (the registry's
// base plus those rows) is registered and validated; the job runs on the
// GPU agent; the candidate beats v1 on the same hold-out, is registered
// with its lineage, goes out as a canary and is promoted. The drift that
// persists starts no second job (the cool-down). Then: a candidate that
// does not beat the champion by the margin is recorded and not
// registered; a data set that fails validation stops its job with the
// report; and a job whose agent is killed mid-training is retried on the
// other agent.
func TestRetrainingLoop(t *testing.T) {
	c := startCluster(t, 1, "--agent-timeout", "2s")
	cl := c.client()
	ctx := context.Background()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	schema := churnSchema()
	schemaJSON, _ := protojson.Marshal(schema)
	schemaFile := write("schema.json", schemaJSON)
	train := write("train.csv", churn.TrainCSV())
	// v1 is trained on few rows, with a heavy penalty: a weak champion.
	lines := strings.SplitAfter(string(churn.TrainCSV()), "\n")
	small := write("small.csv", []byte(strings.Join(lines[:151], "")))
	var v1 struct {
		Version uint64 `json:"version"`
	}
	c.cli(t, &v1, "train", "--runner", "native", "--dataset", small, "--target", churn.Target, "--ignore", churn.IDColumn,
		"--schema", schemaFile, "--param", "l2=100", "--model", "churn", "--push", "--create", "--out", filepath.Join(dir, "v1"))
	c.cli(t, nil, "datasets", "push", "churn-train", "--file", train)

	var tok struct {
		Token string `json:"token"`
	}
	c.cli(t, &tok, "tokens", "create", "--role", "agent", "--name", "fleet")
	slow := slowTrainer(t, dir)
	common := []string{"--hub", c.hubs[0].httpAddr, "--join-token", tok.Token, "--heartbeat-interval", "300ms", "--sample-rate", "1",
		"--drift-window", "1s", "--drift-evaluation", "2s", "--drift-report-interval", "1s", "--metric-window", "1s",
		"--trainer", "slow=sh " + slow}
	gpu := newAgent(t, dir, "gpu-1", append(common, "--fake-gpus", "dgxh100")...)
	cpu := newAgent(t, dir, "cpu-1", common...)
	gpu.start()
	cpu.start()
	hubtest.WaitFor(t, 30*time.Second, func() error {
		if l := c.agents(t); len(l.Agents) != 2 {
			return fmt.Errorf("%d agents enrolled", len(l.Agents))
		}
		return nil
	})
	agentIDs := map[string]string{}
	list, err := cl.Agents.ListAgents(ctx, &droverv1.ListAgentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range list.GetAgents() {
		agentIDs[a.GetName()] = a.GetId()
	}
	for _, name := range []string{"gpu-1", "cpu-1"} {
		c.cli(t, nil, "agents", "assign", name, fmt.Sprintf("churn:%d", v1.Version))
	}
	for _, name := range []string{"gpu-1", "cpu-1"} {
		c.waitRunning(t, name, "churn", v1.Version, 30*time.Second)
	}

	gib := uint64(1 << 30)
	_, err = cl.Retrain.PutPolicy(ctx, &droverv1.PutPolicyRequest{Policy: &droverv1.RetrainPolicy{
		Name: "on-drift", Model: "churn", Runner: "native", Params: map[string]string{"l2": "1"},
		Triggers: &droverv1.RetrainTriggers{Drift: &droverv1.DriftTrigger{ConsecutiveWindows: 2}},
		Cooldown: durationpb.New(time.Hour),
		Dataset: &droverv1.DatasetRecipe{Base: "churn-train", Feedback: true, Target: churn.Target, Ignore: []string{churn.IDColumn},
			MinRows: 100, CollectTimeout: durationpb.New(10 * time.Second)},
		Placement: &droverv1.Placement{Gpus: 1, MinFreeGpuMemoryBytes: 8 * gib},
		Promotion: &droverv1.Promotion{Metric: "accuracy", Margin: 0.01},
		Rollout: &droverv1.RolloutTemplate{Auto: true, Steps: []*droverv1.RolloutStep{
			{Agents: 1, Weight: 50, Bake: durationpb.New(2 * time.Second),
				Gates: []*droverv1.Gate{{Name: "errors", Metric: "error_rate", Max: proto.Float64(0.05), MinSamples: 5}}},
			{Percent: 100},
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}

	// Drifted traffic, with feedback, on both agents, until the test ends.
	tr := &churnTraffic{t: t, agents: []string{gpu.serveAddr, cpu.serveAddr}, schema: schema}
	tctx, stopTraffic := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { tr.run(tctx, 1) })
	defer func() {
		stopTraffic()
		wg.Wait()
	}()

	job := waitJob(t, cl.Retrain, "on-drift", 120*time.Second, ended)
	if job.GetState() != droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED || job.GetOutcome() != droverv1.RetrainOutcome_RETRAIN_OUTCOME_WON {
		t.Fatalf("the drift job ended %v (%v): %s\nlog: %s", job.GetState(), job.GetOutcome(), job.GetMessage(), strings.Join(job.GetLog(), "\n"))
	}
	t.Logf("drift job %s: %s", job.GetId(), job.GetMessage())
	if job.GetTrigger() != "drift" || job.GetChampionVersion() != v1.Version {
		t.Errorf("trigger %q (%s), champion %d", job.GetTrigger(), job.GetTriggerDetail(), job.GetChampionVersion())
	}
	if job.GetAgentId() != agentIDs["gpu-1"] || len(job.GetAttempts()) != 1 {
		t.Errorf("ran on %s (%s), attempts %v; want the GPU agent", job.GetAgentName(), job.GetAgentId(), job.GetAttempts())
	}
	if len(job.GetExportAgents()) != 2 || !job.GetValidation().GetPassed() || job.GetDataset() != "churn-retrain" {
		t.Errorf("data: asked %v, validation %v, data set %s:%d", job.GetExportAgents(), job.GetValidation(), job.GetDataset(), job.GetDatasetVersion())
	}
	baseRows := uint64(len(lines) - 2)
	if job.GetValidation().GetRows() <= baseRows {
		t.Errorf("the data set has %d rows; the base alone has %d: no labelled rows were added", job.GetValidation().GetRows(), baseRows)
	}
	if job.GetCandidateScore() < job.GetChampionScore()+0.01 {
		t.Errorf("won with %v vs %v", job.GetCandidateScore(), job.GetChampionScore())
	}
	v2 := job.GetVersion()
	mv, err := cl.Models.GetVersion(ctx, &droverv1.GetVersionRequest{Model: "churn", Selector: &droverv1.GetVersionRequest_Version{Version: v2}})
	if err != nil {
		t.Fatal(err)
	}
	if l := mv.GetVersion().GetLineage(); l.GetParentVersion() != v1.Version || l.GetRunId() != job.GetRunId() || l.GetDataset() != "churn-retrain" || l.GetDatasetDigest() != job.GetDatasetContent().GetDigest() {
		t.Errorf("v%d's lineage: %v", v2, l)
	}
	run, err := cl.Runs.GetRun(ctx, &droverv1.GetRunRequest{Id: job.GetRunId()})
	if err != nil {
		t.Fatal(err)
	}
	if run.GetRun().GetState() != droverv1.RunState_RUN_STATE_SUCCEEDED || run.GetRun().GetVersion() != v2 || run.GetRun().GetMetrics()["champion_accuracy"] == 0 {
		t.Errorf("run: %v", run.GetRun())
	}
	// The canary goes out and is promoted.
	hubtest.WaitFor(t, 60*time.Second, func() error {
		r, err := cl.Rollouts.GetRollout(ctx, &droverv1.GetRolloutRequest{Id: job.GetRolloutId()})
		if err != nil {
			return err
		}
		switch r.GetRollout().GetState() {
		case droverv1.RolloutState_ROLLOUT_STATE_SUCCEEDED:
			return nil
		case droverv1.RolloutState_ROLLOUT_STATE_ROLLED_BACK:
			t.Fatalf("the winner's rollout rolled back: %s", r.GetRollout().GetReason())
		}
		return fmt.Errorf("rollout %s is %v at step %d", job.GetRolloutId(), r.GetRollout().GetState(), r.GetRollout().GetStep())
	})
	for _, name := range []string{"gpu-1", "cpu-1"} {
		c.waitRunning(t, name, "churn", v2, 30*time.Second)
	}
	// The drift persists, but the cool-down holds: no second job.
	time.Sleep(3 * time.Second)
	if jobs, _ := cl.Retrain.ListJobs(ctx, &droverv1.ListJobsRequest{Policy: "on-drift"}); len(jobs.GetJobs()) != 1 {
		t.Errorf("%d jobs of on-drift: a retraining storm", len(jobs.GetJobs()))
	}

	// A candidate that does not beat the champion by the margin: recorded,
	// not registered, not rolled out.
	manual := func(name string, mutate func(*droverv1.RetrainPolicy)) *droverv1.RetrainJob {
		t.Helper()
		p := &droverv1.RetrainPolicy{Name: name, Model: "churn", Runner: "native",
			Dataset:   &droverv1.DatasetRecipe{Base: "churn-train", Target: churn.Target, Ignore: []string{churn.IDColumn}},
			Placement: &droverv1.Placement{AllowCpu: true}, Rollout: &droverv1.RolloutTemplate{Auto: true}}
		mutate(p)
		if _, err := cl.Retrain.PutPolicy(ctx, &droverv1.PutPolicyRequest{Policy: p}); err != nil {
			t.Fatal(err)
		}
		var out struct {
			ID string `json:"id"`
		}
		c.cli(t, &out, "retrain", "run", name)
		return waitJob(t, cl.Retrain, name, 60*time.Second, ended)
	}
	versions := func() int {
		resp, err := cl.Models.GetModel(ctx, &droverv1.GetModelRequest{Name: "churn"})
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.GetVersions())
	}
	before := versions()
	j := manual("strict", func(p *droverv1.RetrainPolicy) { p.Promotion = &droverv1.Promotion{Margin: 0.5} })
	if j.GetState() != droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED || j.GetOutcome() != droverv1.RetrainOutcome_RETRAIN_OUTCOME_LOST ||
		j.GetVersion() != 0 || j.GetRolloutId() != "" || j.GetChampionVersion() != v2 {
		t.Errorf("the strict job: %v %v v%d rollout %q champion %d: %s", j.GetState(), j.GetOutcome(), j.GetVersion(), j.GetRolloutId(), j.GetChampionVersion(), j.GetMessage())
	}
	if versions() != before {
		t.Error("a losing candidate was registered")
	}

	// A data set that fails validation stops the job with the report.
	// (The schema lists the contracts there are; "weekly" is not one.)
	bad := "customer_id,tenure_months,contract,monthly_charges,total_charges,support_calls,internet_service,payment_method,paperless_billing,senior_citizen,num_products,churn\n"
	for i := range 60 {
		bad += fmt.Sprintf("X%d,%d,weekly,50,100,1,dsl,credit-card,yes,0,1,%s\n", i, 100+i, []string{"yes", "no", ""}[i%3])
	}
	c.cli(t, nil, "datasets", "push", "churn-bad", "--file", write("bad.csv", []byte(bad)))
	j = manual("bad-data", func(p *droverv1.RetrainPolicy) { p.Dataset.Base = "churn-bad" })
	if j.GetState() != droverv1.RetrainJobState_RETRAIN_JOB_STATE_FAILED || j.GetValidation().GetPassed() || j.GetAgentId() != "" {
		t.Fatalf("the bad-data job: %v on %q: %s", j.GetState(), j.GetAgentName(), j.GetMessage())
	}
	for _, want := range []string{"contract.categories", "target.non_null"} {
		if !strings.Contains(j.GetMessage(), want) {
			t.Errorf("the failure does not name %s: %s", want, j.GetMessage())
		}
	}

	// A job whose agent is killed mid-training is retried on the other.
	slowJob := func() *droverv1.RetrainJob {
		p := &droverv1.RetrainPolicy{Name: "slow", Model: "churn", Runner: "slow",
			Dataset:   &droverv1.DatasetRecipe{Base: "churn-train", Target: churn.Target, Ignore: []string{churn.IDColumn}},
			Placement: &droverv1.Placement{AllowCpu: true}}
		if _, err := cl.Retrain.PutPolicy(ctx, &droverv1.PutPolicyRequest{Policy: p}); err != nil {
			t.Fatal(err)
		}
		resp, err := cl.Retrain.TriggerRetrain(ctx, &droverv1.TriggerRetrainRequest{Policy: "slow"})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetJob()
	}()
	waitJob(t, cl.Retrain, "slow", 60*time.Second, func(j *droverv1.RetrainJob) error {
		if j.GetState() == droverv1.RetrainJobState_RETRAIN_JOB_STATE_RUNNING && j.GetPhase() == "training" && j.GetProgress() > 0 {
			return nil
		}
		return fmt.Errorf("job %s is %v on %s, %s %.2f", j.GetId(), j.GetState(), j.GetAgentName(), j.GetPhase(), j.GetProgress())
	})
	j = waitJob(t, cl.Retrain, "slow", time.Second, func(*droverv1.RetrainJob) error { return nil })
	if j.GetAgentId() != agentIDs["gpu-1"] {
		t.Fatalf("the slow job went to %s first; want the GPU agent", j.GetAgentName())
	}
	stopTraffic()
	wg.Wait()
	gpu.kill()
	j = waitJob(t, cl.Retrain, "slow", 90*time.Second, ended)
	if j.GetId() != slowJob.GetId() || j.GetState() != droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED || j.GetAgentId() != agentIDs["cpu-1"] ||
		len(j.GetAttempts()) != 2 || !strings.HasPrefix(j.GetAttempts()[0].GetOutcome(), "agent lost") || j.GetOutcome() != droverv1.RetrainOutcome_RETRAIN_OUTCOME_WON {
		t.Fatalf("the slow job: %v on %s, attempts %v, outcome %v: %s", j.GetState(), j.GetAgentName(), j.GetAttempts(), j.GetOutcome(), j.GetMessage())
	}
	if len(tr.errors) > 0 {
		t.Errorf("%d traffic errors, e.g. %s", len(tr.errors), tr.errors[0])
	}
}

// slowTrainer writes the exec trainer the tests configure as "slow": ten
// seconds of progress, then the champion handed back as a candidate with
// metrics that beat it.
func slowTrainer(t *testing.T, dir string) string {
	p := filepath.Join(dir, "slow.sh")
	if err := os.WriteFile(p, []byte(`#!/bin/sh
set -e
for f in 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1; do
  echo "drover:progress $f epoch"
  sleep 1
done
cp "$DROVER_CHAMPION_ARTIFACT" "$DROVER_OUTPUT_DIR/model.json"
printf '{"metrics":{"accuracy":0.9,"champion_accuracy":0.5},"artifact":"model.json","format":"%s"}\n' "$DROVER_CHAMPION_FORMAT" > "$DROVER_OUTPUT_DIR/metrics.json"
`), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRetrainJobsSurviveLeaderFailover runs two jobs on a three-node hub
// that lets one run at a time, and kills the leader while the first
// trains: the new leader picks both up from the replicated state, the
// first finishes on its agent (no second attempt), the second runs after
// it, and each winner is registered exactly once.
func TestRetrainJobsSurviveLeaderFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a hub leader during training; skipped with -short")
	}
	c := startCluster(t, 3, "--agent-timeout", "3s", "--retrain-max-jobs", "1")
	cl := c.client()
	ctx := context.Background()
	dir := t.TempDir()
	train := filepath.Join(dir, "train.csv")
	if err := os.WriteFile(train, churn.TrainCSV(), 0o644); err != nil {
		t.Fatal(err)
	}
	// A champion without a schema: the data set is validated as a whole.
	c.cli(t, nil, "train", "--runner", "native", "--dataset", train, "--target", churn.Target, "--ignore", churn.IDColumn,
		"--model", "churn", "--push", "--create", "--out", filepath.Join(dir, "v1"))
	// The base data set is Parquet: the hub reads it into the CSV it
	// assembles.
	c.cli(t, nil, "datasets", "push", "churn-train", "--file", churnParquet(t, dir))
	var tok struct {
		Token string `json:"token"`
	}
	c.cli(t, &tok, "tokens", "create", "--role", "agent", "--name", "fleet")
	a := newAgent(t, dir, "gpu-1", "--hub", strings.Join(c.addrs(), ","), "--join-token", tok.Token, "--heartbeat-interval", "300ms",
		"--fake-gpus", "dgxh100", "--trainer", "slow=sh "+slowTrainer(t, dir))
	a.start()
	hubtest.WaitFor(t, 30*time.Second, func() error {
		if l := c.agents(t); len(l.Agents) != 1 {
			return fmt.Errorf("%d agents enrolled", len(l.Agents))
		}
		return nil
	})
	c.cli(t, nil, "agents", "assign", "gpu-1", "churn:1")
	c.waitRunning(t, "gpu-1", "churn", 1, 30*time.Second)

	for _, name := range []string{"slow-a", "slow-b"} {
		p := &droverv1.RetrainPolicy{Name: name, Model: "churn", Runner: "slow",
			Dataset:   &droverv1.DatasetRecipe{Base: "churn-train", Target: churn.Target, Ignore: []string{churn.IDColumn}},
			Placement: &droverv1.Placement{Gpus: 1}}
		if _, err := cl.Retrain.PutPolicy(ctx, &droverv1.PutPolicyRequest{Policy: p}); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Retrain.TriggerRetrain(ctx, &droverv1.TriggerRetrainRequest{Policy: name}); err != nil {
			t.Fatal(err)
		}
	}
	// One trains, the other waits its turn.
	var first, second string
	hubtest.WaitFor(t, 60*time.Second, func() error {
		resp, err := cl.Retrain.ListJobs(ctx, &droverv1.ListJobsRequest{Model: "churn"})
		if err != nil {
			return err
		}
		first, second = "", ""
		var states []string
		for _, j := range resp.GetJobs() {
			states = append(states, fmt.Sprintf("%s %v %s %.1f", j.GetId(), j.GetState(), j.GetPhase(), j.GetProgress()))
			switch j.GetState() {
			case droverv1.RetrainJobState_RETRAIN_JOB_STATE_RUNNING:
				if j.GetPhase() == "training" && j.GetProgress() > 0 {
					first = j.GetId()
				}
			case droverv1.RetrainJobState_RETRAIN_JOB_STATE_QUEUED:
				second = j.GetId()
			}
		}
		if first == "" || second == "" {
			return fmt.Errorf("jobs: %v", states)
		}
		return nil
	})
	leader := c.leader()
	leader.kill()
	t.Logf("killed the leader %s while job %s trained and %s waited", leader.name, first, second)

	for _, id := range []string{first, second} {
		var j *droverv1.RetrainJob
		hubtest.WaitFor(t, 90*time.Second, func() error {
			resp, err := cl.Retrain.GetJob(ctx, &droverv1.GetJobRequest{Id: id})
			if err != nil {
				return err
			}
			j = resp.GetJob()
			return ended(j)
		})
		if j.GetState() != droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED || j.GetOutcome() != droverv1.RetrainOutcome_RETRAIN_OUTCOME_WON || len(j.GetAttempts()) != 1 {
			t.Fatalf("job %s: %v %v, attempts %v: %s", id, j.GetState(), j.GetOutcome(), j.GetAttempts(), j.GetMessage())
		}
	}
	a1, _ := cl.Retrain.GetJob(ctx, &droverv1.GetJobRequest{Id: first})
	a2, _ := cl.Retrain.GetJob(ctx, &droverv1.GetJobRequest{Id: second})
	if end, start := a1.GetJob().GetAttempts()[0].GetEndTime().AsTime(), a2.GetJob().GetAttempts()[0].GetStartTime().AsTime(); start.Before(end) {
		t.Errorf("the second job started at %v, before the first ended at %v: more than --retrain-max-jobs ran", start, end)
	}
	m, err := cl.Models.GetModel(ctx, &droverv1.GetModelRequest{Name: "churn"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(m.GetVersions()); n != 3 {
		t.Errorf("%d versions; want v1 and one per job", n)
	}
	if a1.GetJob().GetVersion() == a2.GetJob().GetVersion() {
		t.Errorf("both jobs registered as v%d", a1.GetJob().GetVersion())
	}
}

// churnRow is a row of the bundled churn data set as Parquet stores it.
type churnRow struct {
	CustomerID       string  `parquet:"customer_id"`
	TenureMonths     int64   `parquet:"tenure_months"`
	Contract         string  `parquet:"contract"`
	MonthlyCharges   float64 `parquet:"monthly_charges"`
	TotalCharges     float64 `parquet:"total_charges"`
	SupportCalls     int64   `parquet:"support_calls"`
	InternetService  string  `parquet:"internet_service"`
	PaymentMethod    string  `parquet:"payment_method"`
	PaperlessBilling string  `parquet:"paperless_billing"`
	SeniorCitizen    int64   `parquet:"senior_citizen"`
	NumProducts      int64   `parquet:"num_products"`
	Churn            string  `parquet:"churn"`
}

// churnParquet writes the bundled training split as a Parquet file.
func churnParquet(t *testing.T, dir string) string {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(churn.TrainCSV())).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	num := func(s string) float64 {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	var rows []churnRow
	for _, r := range recs[1:] {
		rows = append(rows, churnRow{r[0], int64(num(r[1])), r[2], num(r[3]), num(r[4]), int64(num(r[5])), r[6], r[7], r[8], int64(num(r[9])), int64(num(r[10])), r[11]})
	}
	p := filepath.Join(dir, "train.parquet")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := parquet.Write(f, rows); err != nil {
		t.Fatal(err)
	}
	return p
}
