package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/internal/churn"
	"github.com/droverhq/drover/internal/digest"
	"github.com/droverhq/drover/plugins/native"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// trainOutput is `drover train --json`'s answer.
type trainOutput struct {
	RunID          string             `json:"run_id"`
	Model          string             `json:"model"`
	Runner         string             `json:"runner"`
	Metrics        map[string]float64 `json:"metrics"`
	Artifact       string             `json:"artifact"`
	Format         string             `json:"format"`
	Version        uint64             `json:"version"`
	DatasetDigest  string             `json:"dataset_digest"`
	ArtifactDigest string             `json:"artifact_digest"`
}

// writeChurnTrain writes the bundled churn training split and returns its
// path and digest.
func writeChurnTrain(t *testing.T, dir string) (string, string) {
	t.Helper()
	return writeFile(t, dir, "churn_train.csv", string(churn.TrainCSV())), digest.FromBytes(churn.TrainCSV()).String()
}

// writeTrainScript writes a training command for the exec runner that
// follows exectrain's contract: a log line, progress, three loss points,
// an artifact and the metrics file, in the format "test-format".
func writeTrainScript(t *testing.T, dir string) string {
	t.Helper()
	return writeFile(t, dir, "train.sh", `set -e
echo "training on $(basename "$DROVER_DATASET") for $DROVER_TARGET with depth=$DROVER_PARAM_DEPTH"
echo "drover:progress 0.25 fitting"
echo "drover:metric loss 0.9"
echo "drover:metric loss 0.6"
echo "drover:metric loss 0.4"
echo "drover:progress 1 done"
echo "a model" > "$DROVER_OUTPUT_DIR/model.bin"
printf '{"metrics": {"accuracy": 0.875}, "artifact": "model.bin", "format": "test-format"}' > "$DROVER_METRICS_FILE"
`)
}

func TestTrainNative(t *testing.T) {
	dir := t.TempDir()
	data, dataDigest := writeChurnTrain(t, dir)
	out := filepath.Join(dir, "out")

	var got trainOutput
	runJSON(t, nil, &got, "train", "--runner", "native", "--dataset", data, "--target", churn.Target,
		"--ignore", churn.IDColumn, "--out", out)
	if got.Metrics["accuracy"] <= 0.75 || got.Metrics["holdout_rows"] != 800 || got.Format != "drover-native" ||
		got.Artifact != filepath.Join(out, "model.json") || got.DatasetDigest != dataDigest || got.RunID != "" || got.Version != 0 {
		t.Fatalf("train --json = %+v", got)
	}

	// The artifact loads; the metrics file follows exectrain's contract.
	raw, err := os.ReadFile(got.Artifact)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := native.LoadArtifact(raw); err != nil || m.Task != native.Classification || len(m.Classes) != 2 {
		t.Fatalf("model.json: %v, %+v", err, m)
	}
	var mf struct {
		Metrics  map[string]float64 `json:"metrics"`
		Artifact string             `json:"artifact"`
		Format   string             `json:"format"`
	}
	raw, err = os.ReadFile(filepath.Join(out, "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &mf); err != nil {
		t.Fatal(err)
	}
	if mf.Artifact != "model.json" || mf.Format != "drover-native" || mf.Metrics["accuracy"] != got.Metrics["accuracy"] {
		t.Fatalf("metrics.json = %s", raw)
	}

	// The text summary; a regression with its own parameters.
	text := mustRun(t, nil, "train", "--dataset", data, "--target", "monthly_charges", "--ignore", churn.IDColumn,
		"--param", "task=regression", "--param", "l2=0.5", "--holdout", "0.25", "--seed", "7", "--out", out)
	for _, want := range []string{"Trained with the native runner: drover-native artifact " + filepath.Join(out, "model.json"),
		"METRIC", "rmse", "r2", "holdout_rows  1000", "Data set:  " + dataDigest} {
		if !strings.Contains(text, want) {
			t.Errorf("summary lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "Run:") || strings.Contains(text, "Version:") {
		t.Errorf("an untracked run's summary names a run or version:\n%s", text)
	}
}

func TestTrainExec(t *testing.T) {
	dir := t.TempDir()
	data, _ := writeChurnTrain(t, dir)
	script := writeTrainScript(t, dir)
	out := filepath.Join(dir, "out")

	args := []string{"--json", "train", "--runner", "exec", "--exec-command", "/bin/sh " + script, "--dataset", data,
		"--target", churn.Target, "--param", "depth=3", "--out", out}
	stdout, stderr, code := run(t, nil, args...)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	var got trainOutput
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout)
	}
	if got.Format != "test-format" || got.Metrics["accuracy"] != 0.875 || got.Runner != "exec" ||
		filepath.Base(got.Artifact) != "model.bin" || !strings.HasPrefix(got.DatasetDigest, "sha256:") {
		t.Fatalf("train --json = %+v", got)
	}
	// The command's output goes to stderr, as it came (not a terminal).
	for _, want := range []string{"training on churn_train.csv for churn with depth=3\n", "drover:metric loss 0.6\n"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}

	// A command that fails: its cause and last lines, exit 1.
	bad := writeFile(t, dir, "fail.sh", "echo 'loading data'\necho 'out of memory' >&2\nexit 3\n")
	_, stderr, code = run(t, nil, "train", "--runner", "exec", "--exec-command", "/bin/sh "+bad, "--dataset", data,
		"--target", churn.Target, "--out", out)
	if code != 1 || !strings.Contains(stderr, "exited with status 3") || !strings.Contains(stderr, "out of memory") {
		t.Fatalf("failing command: exit %d\n%s", code, stderr)
	}
}

func TestTrainTrackAndPush(t *testing.T) {
	c := hubtest.StartCluster(t, 1, hubtest.Options{})
	env := map[string]string{"DROVER_ADDR": c.Nodes[0].HTTPAddr(), "DROVER_TOKEN": c.AdminToken}
	hc, err := client.New(client.Config{Addrs: []string{c.Nodes[0].HTTPAddr()}, Token: c.AdminToken})
	if err != nil {
		t.Fatal(err)
	}
	getRun := func(id string) *droverv1.Run {
		t.Helper()
		resp, err := hc.Runs.GetRun(t.Context(), &droverv1.GetRunRequest{Id: id})
		if err != nil {
			t.Fatalf("GetRun %s: %v", id, err)
		}
		return resp.GetRun()
	}
	getVersion := func(model string, v uint64) *droverv1.ModelVersion {
		t.Helper()
		resp, err := hc.Models.GetVersion(t.Context(), &droverv1.GetVersionRequest{Model: model,
			Selector: &droverv1.GetVersionRequest_Version{Version: v}})
		if err != nil {
			t.Fatalf("GetVersion %s:%d: %v", model, v, err)
		}
		return resp.GetVersion()
	}

	dir := t.TempDir()
	data, dataDigest := writeChurnTrain(t, dir)
	schema := writeChurnSchema(t, dir)
	out := filepath.Join(dir, "out")

	// The native runner, pushed as the first version of a new model.
	var got trainOutput
	runJSON(t, env, &got, "train", "--dataset", data, "--target", churn.Target, "--ignore", churn.IDColumn,
		"--schema", schema, "--model", "churn", "--push", "--create", "--track", "--out", out)
	if got.RunID == "" || got.Version != 1 || got.Metrics["accuracy"] <= 0.75 || !strings.HasPrefix(got.ArtifactDigest, "sha256:") {
		t.Fatalf("train --push = %+v", got)
	}
	v := getVersion("churn", 1)
	if l := v.GetLineage(); l.GetRunId() != got.RunID || l.GetDatasetDigest() != dataDigest || l.GetParentVersion() != 0 {
		t.Errorf("lineage %v, want run %s, data set %s", l, got.RunID, dataDigest)
	}
	if v.GetFormat() != "drover-native" || v.GetRunner() != "native" || v.GetReferenceProfileSize() == 0 ||
		v.GetMetrics()["accuracy"] != got.Metrics["accuracy"] || v.GetParams()["task"] != "classification" ||
		v.GetParams()["l2"] != "1" || len(v.GetSchema().GetInputs()) != len(churn.Features()) ||
		v.GetArtifact().GetDigest() != got.ArtifactDigest {
		t.Errorf("version %v", v)
	}
	r := getRun(got.RunID)
	if r.GetState() != droverv1.RunState_RUN_STATE_SUCCEEDED || r.GetVersion() != 1 || r.GetModel() != "churn" ||
		r.GetRunner() != "native" || r.GetMetrics()["accuracy"] != got.Metrics["accuracy"] ||
		r.GetArtifact().GetDigest() != got.ArtifactDigest || r.GetDatasetDigest() != dataDigest ||
		r.GetParams()["holdout"] != "0.2" || r.GetParams()["seed"] != "1" || r.GetTags()["host"] == "" {
		t.Errorf("run %v", r)
	}
	if len(r.GetHistory()) != len(got.Metrics) || r.GetHistory()[0].GetStep() != 0 {
		t.Errorf("history %v, want the %d final metrics at step 0", r.GetHistory(), len(got.Metrics))
	}

	// A retraining, its parent recorded; the text summary names both.
	text := mustRun(t, env, "train", "--dataset", data, "--target", churn.Target, "--ignore", churn.IDColumn,
		"--param", "l2=0.1", "--model", "churn", "--push", "--parent", "1", "--out", out)
	if !strings.Contains(text, "Run:") || !strings.Contains(text, "Version:   churn:2 sha256:") {
		t.Fatalf("summary:\n%s", text)
	}
	if l := getVersion("churn", 2).GetLineage(); l.GetParentVersion() != 1 || getRun(l.GetRunId()).GetParentVersion() != 1 {
		t.Errorf("retrained lineage %v", l)
	}

	// Champion and challenger: version 2 is scored on the candidate's own
	// hold-out. The same training again cannot beat it by 0.05: the run is
	// recorded as lost, and nothing is registered.
	var duel struct {
		trainOutput
		Champion struct {
			Version   uint64  `json:"version"`
			Metric    string  `json:"metric"`
			Candidate float64 `json:"candidate"`
			Score     float64 `json:"champion"`
			Won       bool    `json:"won"`
		} `json:"champion"`
	}
	runJSON(t, env, &duel, "train", "--dataset", data, "--target", churn.Target, "--ignore", churn.IDColumn,
		"--param", "l2=0.1", "--model", "churn", "--push", "--champion", "2", "--margin", "0.05", "--out", out)
	if c := duel.Champion; c.Won || c.Version != 2 || c.Metric != "accuracy" || c.Score != c.Candidate || duel.Version != 0 {
		t.Fatalf("a candidate no better than the champion: %+v", duel)
	}
	if r := getRun(duel.RunID); r.GetVersion() != 0 || r.GetTags()["outcome"] != "lost" || r.GetMetrics()["champion_accuracy"] != duel.Champion.Score ||
		!strings.Contains(r.GetMessage(), "lost") {
		t.Errorf("the losing run %v", r)
	}
	// With a margin it can meet, it wins and becomes version 3, its parent
	// the champion.
	runJSON(t, env, &duel, "train", "--dataset", data, "--target", churn.Target, "--ignore", churn.IDColumn,
		"--param", "l2=0.1", "--model", "churn", "--push", "--champion", "2", "--margin", "0", "--out", out)
	if !duel.Champion.Won || duel.Version != 3 || getVersion("churn", 3).GetLineage().GetParentVersion() != 2 {
		t.Fatalf("a winning candidate: %+v", duel)
	}

	// The exec runner, tracked only: each drover:metric is a point, each
	// metric counting its own steps.
	script := writeTrainScript(t, dir)
	runJSON(t, env, &got, "train", "--runner", "exec", "--exec-command", "/bin/sh "+script, "--dataset", data,
		"--target", churn.Target, "--param", "depth=3", "--model", "churn", "--track", "--out", out)
	r = getRun(got.RunID)
	if r.GetState() != droverv1.RunState_RUN_STATE_SUCCEEDED || r.GetRunner() != "exec" || r.GetVersion() != 0 ||
		r.GetParams()["depth"] != "3" || r.GetMetrics()["accuracy"] != 0.875 || r.GetTags()["command"] != "/bin/sh "+script {
		t.Errorf("exec run %v", r)
	}
	var steps []int64
	var values []float64
	for _, p := range r.GetHistory() {
		if p.GetName() == "loss" {
			steps, values = append(steps, p.GetStep()), append(values, p.GetValue())
		}
	}
	if len(steps) != 3 || steps[0] != 0 || steps[2] != 2 || values[0] != 0.9 || values[2] != 0.4 {
		t.Errorf("loss history: steps %v, values %v", steps, values)
	}

	// The exec runner, pushed: the command's format, a profile built from
	// the data set.
	runJSON(t, env, &got, "train", "--runner", "exec", "--exec-command", "/bin/sh "+script, "--dataset", data,
		"--target", churn.Target, "--ignore", churn.IDColumn, "--model", "churn", "--push", "--out", out)
	v = getVersion("churn", got.Version)
	if got.Version != 4 || v.GetFormat() != "test-format" || v.GetRunner() != "" || v.GetReferenceProfileSize() == 0 ||
		v.GetLineage().GetRunId() != got.RunID {
		t.Errorf("pushed exec version %v (train said %+v)", v, got)
	}

	// A failed run ends FAILED with the error, and the command fails.
	bad := writeFile(t, dir, "fail.sh", "echo 'out of memory'\nexit 3\n")
	_, stderr, code := run(t, env, "train", "--runner", "exec", "--exec-command", "/bin/sh "+bad, "--dataset", data,
		"--target", churn.Target, "--model", "churn", "--push", "--out", out)
	if code != 1 || !strings.Contains(stderr, "exited with status 3") {
		t.Fatalf("failing command: exit %d\n%s", code, stderr)
	}
	runs, err := hc.Runs.ListRuns(t.Context(), &droverv1.ListRunsRequest{Model: "churn", Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if last := runs.GetRuns()[0]; last.GetState() != droverv1.RunState_RUN_STATE_FAILED ||
		!strings.Contains(last.GetMessage(), "exited with status 3") || !strings.Contains(last.GetMessage(), "out of memory") {
		t.Errorf("failed run %v", last)
	}

	// Tracking a run of a model that does not exist, without --create.
	_, stderr, code = run(t, env, "train", "--dataset", data, "--target", churn.Target, "--model", "nope", "--track", "--out", out)
	if code != 1 || !strings.Contains(stderr, "not_found") {
		t.Fatalf("unknown model: exit %d\n%s", code, stderr)
	}
}

func TestTrainBadInput(t *testing.T) {
	dir := t.TempDir()
	data, _ := writeChurnTrain(t, dir)
	base := []string{"--dataset", data, "--target", churn.Target, "--out", filepath.Join(dir, "out")}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--target", "churn", "--out", dir}, "--dataset is required"},
		{[]string{"--dataset", data, "--out", dir}, "--target is required"},
		{[]string{"--dataset", data, "--target", "churn"}, "--out is required"},
		{append([]string{"--runner", "torch"}, base...), `--runner "torch": want native or exec`},
		{append([]string{"--runner", "exec"}, base...), "--runner exec needs --exec-command"},
		{append([]string{"--exec-command", "python3 train.py"}, base...), "--exec-command goes with --runner exec"},
		{append([]string{"--track"}, base...), "--track and --push need --model"},
		{append([]string{"--push"}, base...), "--track and --push need --model"},
		{append([]string{"--create"}, base...), "--create goes with --push"},
		{append([]string{"--parent", "2"}, base...), "--parent goes with --track or --push"},
		{append([]string{"--holdout", "1.5"}, base...), "--holdout 1.5: want a fraction between 0 and 1"},
		{append([]string{"--param", "depth=3"}, base...), `the native runner has no parameter "depth"`},
		{append([]string{"--param", "task=clustering"}, base...), "--param task=clustering: want classification or regression"},
		{append([]string{"--param", "l2=-1"}, base...), "--param l2=-1: want a positive number"},
		{append([]string{"--param", "l2"}, base...), `--param "l2": want key=value`},
		{append([]string{"--format", "onnx"}, base...), "the native runner's artifacts are drover-native, not onnx"},
		{append([]string{"--runner", "exec", "--exec-command", "true", "--seed", "3"}, base...), "--seed is the native runner's"},
		{append([]string{"extra"}, base...), "train takes no arguments"},
	} {
		_, stderr, code := run(t, nil, append([]string{"train"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("train %q: exit %d, %q; want exit 2 and %q", tc.args, code, stderr, tc.want)
		}
	}

	// Not usage errors, but clear ones: exit 1.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--dataset", filepath.Join(dir, "missing.csv"), "--target", "churn", "--out", dir}, "missing.csv: no such file"},
		{[]string{"--dataset", data, "--target", "churned", "--out", dir}, `no target column "churned"`},
		{[]string{"--dataset", data, "--target", "churn", "--schema", filepath.Join(dir, "nope.yaml"), "--out", dir}, "nope.yaml"},
	} {
		_, stderr, code := run(t, nil, append([]string{"train"}, tc.args...)...)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("train %q: exit %d, %q; want exit 1 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

// TestTrainConsole checks the terminal view of an exec run: log lines
// above a status line that is redrawn below them, the directives folded
// into it; and plain lines off a terminal.
func TestTrainConsole(t *testing.T) {
	var buf bytes.Buffer
	c := &trainConsole{w: &buf, tty: true, width: 10, metrics: map[string]float64{}}
	c.log("loading")
	c.log("drover:progress 0.5 fitting")
	c.progress(&runnerv1.TrainProgress{Fraction: 0.5, Stage: "fitting"})
	c.progress(&runnerv1.TrainProgress{Fraction: 0.5, Stage: "fitting", Metrics: map[string]float64{"loss": 0.25}})
	c.log("epoch 1")
	c.done()
	want := "loading\n" +
		"\rtraining [=====>    ]  50% fitting\x1b[K" +
		"\rtraining [=====>    ]  50% fitting loss=0.25\x1b[K" +
		"\r\x1b[Kepoch 1\n" +
		"\rtraining [=====>    ]  50% fitting loss=0.25\x1b[K" +
		"\n"
	if got := buf.String(); got != want {
		t.Fatalf("terminal:\n got %q\nwant %q", got, want)
	}

	buf.Reset()
	c = newTrainConsole(&buf)
	c.log("loading")
	c.log("drover:progress 0.5 fitting")
	c.progress(&runnerv1.TrainProgress{Fraction: 0.5})
	c.done()
	if got := buf.String(); got != "loading\ndrover:progress 0.5 fitting\n" {
		t.Fatalf("not a terminal: %q", got)
	}
}
