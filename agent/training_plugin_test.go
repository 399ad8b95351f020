package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/agent/plugins"
	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/plugins/sdk/sdktest"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// startExamplePlugin builds the example runner plugin (centroid, which
// serves and trains) into a plugin directory and hosts it.
func startExamplePlugin(t testing.TB) *pluginHost {
	t.Helper()
	dir := t.TempDir()
	_, sum, err := sdktest.BuildExample(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(sum+"  centroid\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	host, err := newPluginHost(context.Background(), dir, hubtest.Logger(t, "plugins"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(host.close)
	return host
}

// centroidData is a data set of 20 rows for the centroid runner: class a
// near (1, 1), class b near (11, 11), alternating, and an id column that
// is not a feature (and not a number). The runner holds out every 5th row:
// the 5th, 10th, 15th and 20th, two of each class.
func centroidData() []byte {
	var b bytes.Buffer
	b.WriteString("id,x,y,class\n")
	for i := 1; i <= 20; i++ {
		x, y, class := float64(i%4), float64((i*3)%4), "a"
		if i%2 == 0 {
			x, y, class = 10+float64(i%4), 10+float64((i*7)%4), "b"
		}
		fmt.Fprintf(&b, "c-%d,%g,%g,%s\n", i, x, y, class)
	}
	return b.Bytes()
}

// TestTrainingThroughPlugin runs a training task whose runner is the
// example plugin's name through the task runner: the plugin trains with
// the ignored column left out, scores the champion (a centroid artifact
// that answers a to everything) on its hold-out, and the task succeeds
// with both sets of metrics, the row counts, the artifact uploaded and a
// reference profile. The same name as an exec trainer trains with the
// exec trainer; a plugin that is down fails the task and says so.
func TestTrainingThroughPlugin(t *testing.T) {
	host := startExamplePlugin(t)
	if got := host.trainerNames(); !slices.Equal(got, []string{"centroid"}) {
		t.Fatalf("training plugins %q", got)
	}
	if host.forTrainer("nothing") != nil || (*pluginHost)(nil).forTrainer("centroid") != nil || (*pluginHost)(nil).trainerNames() != nil {
		t.Fatal("forTrainer found a trainer that is not there")
	}
	blobs := newFakeBlobs(t)
	var sent sentReports
	r := newTestRunner(t, blobs, &sent, map[string][]string{"sklearn": {"/bin/false"}})
	r.plugins = host

	champion := []byte(`{"format":"centroid-json","features":["x","y"],"classes":["a","b"],"centroids":[[5,5],[100,100]]}`)
	task := &droverv1.TrainingTask{
		JobId: "job-p", Attempt: 1, Model: "points", Runner: "centroid", Params: map[string]string{"k": "v"},
		Dataset: blobs.put(t, centroidData()), Target: "class", Ignore: []string{"id"},
		ChampionVersion: 3, ChampionArtifact: blobs.put(t, champion), ChampionFormat: "centroid-json", Metric: "accuracy",
	}
	final := r.run(t.Context(), task)
	if final.GetPhase() != droverv1.TrainingPhase_TRAINING_PHASE_SUCCEEDED {
		t.Fatalf("final report %v", final)
	}
	res := final.GetResult()
	wantMetrics := map[string]float64{"accuracy": 1, "train_accuracy": 1, "train_rows": 16, "holdout_rows": 4}
	if res.GetFormat() != "centroid-json" || !maps.Equal(res.GetMetrics(), wantMetrics) ||
		!maps.Equal(res.GetChampionMetrics(), map[string]float64{"accuracy": 0.5}) {
		t.Fatalf("result: format %s, metrics %v, champion %v", res.GetFormat(), res.GetMetrics(), res.GetChampionMetrics())
	}
	if res.GetTrainRows() != 16 || res.GetHoldoutRows() != 4 || !maps.Equal(res.GetParams(), map[string]string{"k": "v"}) {
		t.Fatalf("rows %d/%d, params %v", res.GetTrainRows(), res.GetHoldoutRows(), res.GetParams())
	}
	var a struct {
		Format   string   `json:"format"`
		Features []string `json:"features"`
		Classes  []string `json:"classes"`
	}
	uploaded, ok := blobs.uploads[res.GetArtifact().GetDigest()]
	if !ok || json.Unmarshal(uploaded, &a) != nil || a.Format != "centroid-json" ||
		!slices.Equal(a.Features, []string{"x", "y"}) || !slices.Equal(a.Classes, []string{"a", "b"}) {
		t.Fatalf("the uploaded artifact: %s", uploaded)
	}
	var p droverv1.ReferenceProfile
	if err := proto.Unmarshal(res.GetReferenceProfile(), &p); err != nil || p.GetRows() != 20 {
		t.Fatalf("reference profile: %v, %d rows", err, p.GetRows())
	}
	reports := append(sent.all(), final)
	if got := strings.Join(phases(reports), " "); got != "DOWNLOADING TRAINING EVALUATING UPLOADING SUCCEEDED" {
		t.Errorf("phases reported: %s", got)
	}
	for _, want := range []string{"20 rows (16 trained on, 4 held out), 2 classes", "the champion on the same 4 hold-out rows: accuracy 0.5"} {
		if !strings.Contains(logLines(reports), want) {
			t.Errorf("log lacks %q:\n%s", want, logLines(reports))
		}
	}
	var stages []string
	for _, rep := range reports {
		if rep.GetPhase() == droverv1.TrainingPhase_TRAINING_PHASE_TRAINING && rep.GetStage() != "" &&
			(len(stages) == 0 || stages[len(stages)-1] != rep.GetStage()) {
			stages = append(stages, rep.GetStage())
		}
	}
	if len(stages) == 0 || stages[len(stages)-1] != "written" {
		t.Errorf("training stages reported %q, want them to end with written", stages)
	}
	if entries, err := os.ReadDir(r.dir); err != nil || len(entries) != 0 {
		t.Errorf("work directories left: %v %v", entries, err)
	}

	// A champion of another format is not scored, and the log says why.
	other := proto.CloneOf(task)
	other.JobId, other.ChampionArtifact, other.ChampionFormat = "job-q", blobs.put(t, []byte("pickle")), "sklearn-pickle"
	final = r.run(t.Context(), other)
	if final.GetPhase() != droverv1.TrainingPhase_TRAINING_PHASE_SUCCEEDED || len(final.GetResult().GetChampionMetrics()) != 0 {
		t.Fatalf("a champion of another format: %v", final)
	}
	if l := logLines(append(sent.all(), final)); !strings.Contains(l, "the champion is sklearn-pickle, not centroid-json: it is not scored") ||
		!strings.Contains(l, "reported no champion_<metric> metrics") {
		t.Errorf("log:\n%s", l)
	}

	// An unknown runner: the error lists native, the exec trainers and
	// the training plugins.
	unknown := &droverv1.TrainingTask{JobId: "j", Runner: "torch", Dataset: task.GetDataset(), Target: "class"}
	if final := r.run(t.Context(), unknown); final.GetPhase() != droverv1.TrainingPhase_TRAINING_PHASE_FAILED ||
		!strings.Contains(final.GetMessage(), `this agent has no trainer "torch"; it has native, centroid, sklearn`) ||
		!strings.Contains(final.GetMessage(), "--plugin-dir") {
		t.Errorf("unknown runner: %v %q", final.GetPhase(), final.GetMessage())
	}

	// The plugin's error is the task's, naming the plugin.
	wrong := &droverv1.TrainingTask{JobId: "j", Runner: "centroid", Dataset: task.GetDataset(), Target: "label"}
	if final := r.run(t.Context(), wrong); final.GetPhase() != droverv1.TrainingPhase_TRAINING_PHASE_FAILED ||
		final.GetMessage() != `training: runner plugin centroid: data set: no column "label"` {
		t.Errorf("the plugin's error: %v %q", final.GetPhase(), final.GetMessage())
	}

	// The same name as an exec trainer: the exec trainer trains.
	exec := newTestRunner(t, blobs, &sent, map[string][]string{"centroid": writeTrainer(t, `set -e
echo "exec trainer"
echo m > "$DROVER_OUTPUT_DIR/m.bin"
printf '{"metrics": {"accuracy": 0.7, "champion_accuracy": 0.6}, "artifact": "m.bin", "format": "exec-format"}' > "$DROVER_METRICS_FILE"
`)})
	exec.plugins = host
	if final := exec.run(t.Context(), task); final.GetResult().GetFormat() != "exec-format" || final.GetResult().GetChampionMetrics()["accuracy"] != 0.6 {
		t.Errorf("exec trainer and plugin of the same name: %v", final)
	}

	// The plugin down: the task fails at once, saying so.
	hp := host.forTrainer("centroid")
	hp.mu.Lock()
	pid := hp.client.Pid()
	hp.mu.Unlock()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for hp.alive() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	down := proto.CloneOf(task)
	down.JobId = "job-down"
	final = r.run(t.Context(), down)
	if final.GetPhase() != droverv1.TrainingPhase_TRAINING_PHASE_FAILED ||
		!strings.Contains(final.GetMessage(), "training: runner plugin centroid exited; it is being restarted") {
		t.Errorf("plugin down: %v %q", final.GetPhase(), final.GetMessage())
	}
}

// TestShadowedTrainers checks the warnings at the agent's start about
// training plugins whose name an exec trainer or the native runner takes,
// and the trainers listed in the inventory: native first, each once.
func TestShadowedTrainers(t *testing.T) {
	host := &pluginHost{byTrainer: map[string]*hostedPlugin{
		"sklearn":  {p: plugins.Plugin{File: "sk-plugin"}},
		"native":   {p: plugins.Plugin{File: "native-plugin"}},
		"centroid": {p: plugins.Plugin{File: "centroid"}},
	}}
	trainers := map[string][]string{"sklearn": {"python3", "train.py"}, "torch": {"python3", "torch.py"}}
	var buf bytes.Buffer
	logShadowedTrainers(slog.New(slog.NewTextHandler(&buf, nil)), trainers, host)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "plugin=native-plugin") ||
		!strings.Contains(lines[1], "runner=sklearn plugin=sk-plugin") || !strings.Contains(lines[1], "train with the exec trainer") {
		t.Errorf("warnings:\n%s", buf.String())
	}
	if got := trainerNames(trainers, host.trainerNames()); !slices.Equal(got, []string{"native", "centroid", "sklearn", "torch"}) {
		t.Errorf("trainerNames = %q", got)
	}
	buf.Reset()
	logShadowedTrainers(slog.New(slog.NewTextHandler(&buf, nil)), trainers, nil)
	if buf.Len() != 0 {
		t.Errorf("warnings without plugins: %s", buf.String())
	}
}

// TestArtifactInside checks where a plugin's artifact may be: a regular
// file in the output directory, named relative to it or absolute; not
// outside it, by ".." or a symbolic link, and not missing.
func TestArtifactInside(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	for name, content := range map[string]string{"model.json": "m", "sub/model.bin": "b"} {
		path := filepath.Join(dir, name)
		_ = os.MkdirAll(filepath.Dir(path), 0o700)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600)
	_ = os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "link"))
	_ = os.Symlink(outside, filepath.Join(dir, "away"))
	for _, tc := range []struct{ artifact, want string }{
		{"model.json", filepath.Join(dir, "model.json")},
		{filepath.Join(dir, "sub", "model.bin"), filepath.Join(dir, "sub", "model.bin")},
		{"", "reported no artifact"},
		{filepath.Join(outside, "secret"), "outside the output directory"},
		{"../secret", "outside the output directory"},
		{"link", "not a regular file"},
		{"away/secret", "away/secret"},
		{"sub", "not a regular file"},
		{"missing.json", "missing.json"},
	} {
		got, err := artifactInside(dir, tc.artifact)
		switch {
		case err == nil && got != tc.want:
			t.Errorf("%q: %q, want %q", tc.artifact, got, tc.want)
		case err != nil && !strings.Contains(err.Error(), tc.want):
			t.Errorf("%q: %v, want an error saying %q", tc.artifact, err, tc.want)
		case err == nil && !filepath.IsAbs(tc.want):
			t.Errorf("%q: accepted as %q", tc.artifact, got)
		}
	}
}
