package training

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/internal/churn"
	"github.com/droverhq/drover/plugins/exectrain"
	"github.com/droverhq/drover/plugins/native"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// writeChurn writes the bundled churn training split into dir.
func writeChurn(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "churn_train.csv")
	if err := os.WriteFile(path, churn.TrainCSV(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// churnSchema is the churn data's schema: its categorical features named
// as such, senior_citizen (0 or 1) among them.
func churnSchema() *droverv1.FeatureSchema {
	s := &droverv1.FeatureSchema{}
	for _, f := range churn.Features() {
		in := &droverv1.Feature{Name: f.Name, Datatype: "FP64", Kind: droverv1.FeatureKind_FEATURE_KIND_NUMERIC}
		if f.Categorical || f.Name == "senior_citizen" {
			in.Datatype, in.Kind = "BYTES", droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL
		}
		s.Inputs = append(s.Inputs, in)
	}
	return s
}

func TestNativeOptions(t *testing.T) {
	o, params, err := NativeOptions(nil)
	if err != nil || o.Task != native.Classification || o.L2 != 1 || o.HoldOut != DefaultHoldOut || o.Seed != DefaultSeed || o.MaxIterations != 0 {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
	want := map[string]string{"task": "classification", "l2": "1", "holdout": "0.2", "seed": "1"}
	if !equal(params, want) {
		t.Fatalf("default params %v, want %v", params, want)
	}
	o, params, err = NativeOptions(map[string]string{"task": "regression", "l2": "0.5", "max_iterations": "50", "holdout": "0.25", "seed": "7"})
	if err != nil || o.Task != native.Regression || o.L2 != 0.5 || o.MaxIterations != 50 || o.HoldOut != 0.25 || o.Seed != 7 {
		t.Fatalf("given: %+v, %v", o, err)
	}
	if params["max_iterations"] != "50" || params["holdout"] != "0.25" || params["seed"] != "7" {
		t.Fatalf("given params %v", params)
	}
	for _, tc := range []struct {
		params map[string]string
		want   string
	}{
		{map[string]string{"task": "clustering"}, "parameter task=clustering: want classification or regression"},
		{map[string]string{"l2": "-1"}, "parameter l2=-1: want a positive number"},
		{map[string]string{"l2": "Inf"}, "parameter l2=Inf: want a positive number"},
		{map[string]string{"max_iterations": "0"}, "parameter max_iterations=0: want a positive whole number"},
		{map[string]string{"holdout": "1"}, "parameter holdout=1: want a fraction between 0 and 1"},
		{map[string]string{"seed": "-3"}, "parameter seed=-3: want a whole number"},
		{map[string]string{"depth": "3"}, `the native runner has no parameter "depth"; it takes task, l2, max_iterations, holdout, seed`},
	} {
		_, _, err := NativeOptions(tc.params)
		var pe *ParamError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want a ParamError saying %q", tc.params, err, tc.want)
		}
	}
}

func equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestTrainNativeWithChampion trains a champion, then a candidate that is
// scored beside it on the same hold-out rows, and builds the candidate's
// reference profile.
func TestTrainNativeWithChampion(t *testing.T) {
	dir := t.TempDir()
	data := writeChurn(t, dir)
	schema := churnSchema()
	opts, _, err := NativeOptions(nil)
	if err != nil {
		t.Fatal(err)
	}
	champOut := filepath.Join(dir, "champion")
	champ, err := TrainNative(t.Context(), NativeRequest{Dataset: data, Target: churn.Target, Ignore: []string{churn.IDColumn},
		Schema: schema, OutputDir: champOut, Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	if champ.ChampionMetrics != nil || champ.TrainRows != 3200 || champ.HoldoutRows != 800 || champ.Format != NativeFormat {
		t.Fatalf("champion run: %+v", champ)
	}
	if _, err := os.Stat(filepath.Join(champOut, exectrain.MetricsFile)); err != nil {
		t.Fatal(err)
	}
	model, err := LoadNativeArtifact(champ.Artifact)
	if err != nil {
		t.Fatal(err)
	}
	// senior_citizen, written 0/1, is a category as the schema says.
	for _, f := range model.Encoder.Features {
		if f.Name == "senior_citizen" && !f.Categorical {
			t.Fatal("senior_citizen was read as a number despite the schema")
		}
	}

	opts.L2 = 0.1
	var lines []string
	cand, err := TrainNative(t.Context(), NativeRequest{Dataset: data, Target: churn.Target, Ignore: []string{churn.IDColumn},
		Schema: schema, OutputDir: filepath.Join(dir, "candidate"), Options: opts, Champion: model,
		Log: func(l string) { lines = append(lines, l) }})
	if err != nil {
		t.Fatal(err)
	}
	// The champion scored on the same rows as when it was trained: its
	// metrics are those it was trained with.
	if cand.ChampionMetrics["accuracy"] != champ.Metrics["accuracy"] || cand.ChampionMetrics["holdout_rows"] != 800 {
		t.Fatalf("champion on the candidate's hold-out %v, at training %v", cand.ChampionMetrics, champ.Metrics)
	}
	if c, ch, _, err := Judge("accuracy", cand.Metrics, cand.ChampionMetrics, 0); err != nil || c < 0.75 || ch < 0.75 {
		t.Fatalf("judge: %v %v %v", c, ch, err)
	}
	text := strings.Join(lines, "\n")
	for _, want := range []string{"read 4000 rows, 10 features from churn_train.csv", "trained in ", "accuracy=", "the champion on the same 800 hold-out rows: accuracy="} {
		if !strings.Contains(text, want) {
			t.Errorf("log lacks %q:\n%s", want, text)
		}
	}

	// The reference profile: the schema's inputs and the model's labels.
	b, rows, err := Profile(data, churn.Target, []string{churn.IDColumn}, schema, cand.Format, cand.Artifact)
	if err != nil {
		t.Fatal(err)
	}
	var p droverv1.ReferenceProfile
	if err := proto.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	if rows != 4000 || len(p.GetFeatures()) != len(schema.GetInputs()) || p.GetPrediction() == nil || p.GetRows() != 4000 {
		t.Fatalf("profile: %d rows, %d features, prediction %v", rows, len(p.GetFeatures()), p.GetPrediction() != nil)
	}
	// Without the model, the features only.
	b, _, err = Profile(data, churn.Target, []string{churn.IDColumn}, nil, "sklearn-pickle", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(b, &p); err != nil || p.GetPrediction() != nil || len(p.GetFeatures()) != 10 {
		t.Fatalf("profile without a native model: %v, %d features", err, len(p.GetFeatures()))
	}
}

func TestTrainNativeErrors(t *testing.T) {
	dir := t.TempDir()
	data := writeChurn(t, dir)
	opts, _, _ := NativeOptions(nil)
	for _, tc := range []struct {
		req  NativeRequest
		want string
	}{
		{NativeRequest{Dataset: filepath.Join(dir, "missing.csv"), Target: "churn"}, "missing.csv: no such file"},
		{NativeRequest{Dataset: filepath.Join(dir, "x.parquet"), Target: "churn"}, "reads CSV files only"},
		{NativeRequest{Dataset: data, Target: "churned"}, `no target column "churned"`},
	} {
		tc.req.Options, tc.req.OutputDir = opts, filepath.Join(dir, "out")
		if _, err := TrainNative(t.Context(), tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.req, err, tc.want)
		}
	}

	// Cancelled: the cause, and nothing written.
	ctx, cancel := context.WithCancelCause(t.Context())
	cause := errors.New("the job was cancelled")
	cancel(cause)
	out := filepath.Join(dir, "cancelled")
	if _, err := TrainNative(ctx, NativeRequest{Dataset: data, Target: churn.Target, Ignore: []string{churn.IDColumn},
		OutputDir: out, Options: opts}); !errors.Is(err, cause) {
		t.Fatalf("cancelled: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a cancelled run wrote its output: %v", err)
	}
}

// TestTrainExecChampion runs a command that checks the champion it is
// given and reports its score as champion_accuracy.
func TestTrainExecChampion(t *testing.T) {
	dir := t.TempDir()
	data := writeChurn(t, dir)
	champion := filepath.Join(dir, "champion.bin")
	if err := os.WriteFile(champion, []byte("the champion"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "train.sh")
	if err := os.WriteFile(script, []byte(`set -e
test "$(cat "$DROVER_CHAMPION_ARTIFACT")" = "the champion"
echo "champion format $DROVER_CHAMPION_FORMAT"
echo "drover:progress 0.5 fitting"
echo "drover:metric loss 0.9"
echo "drover:metric loss 0.5"
echo "drover:progress 1 done"
echo model > "$DROVER_OUTPUT_DIR/model.bin"
printf '{"metrics": {"accuracy": 0.82, "champion_accuracy": 0.8, "champion_log_loss": 0.45}, "artifact": "model.bin", "format": "test-format"}' > "$DROVER_METRICS_FILE"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lines, stages []string
	var points []string
	obs := Observer{
		Log:      func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() },
		Progress: func(p *runnerv1.TrainProgress) { mu.Lock(); stages = append(stages, p.GetStage()); mu.Unlock() },
		Point: func(name string, v float64, step int64) {
			mu.Lock()
			points = append(points, fmt.Sprintf("%s@%d", name, step))
			mu.Unlock()
		},
	}
	res, err := TrainExec(t.Context(), ExecRequest{
		Config:  exectrain.Config{Command: []string{"/bin/sh", script}},
		Dataset: data, OutputDir: filepath.Join(dir, "out"), Target: churn.Target,
		ChampionArtifact: champion, ChampionFormat: "test-format",
	}, obs)
	if err != nil {
		t.Fatal(err)
	}
	if res.Format != "test-format" || res.Metrics["accuracy"] != 0.82 || len(res.Metrics) != 1 ||
		res.ChampionMetrics["accuracy"] != 0.8 || res.ChampionMetrics["log_loss"] != 0.45 || filepath.Base(res.Artifact) != "model.bin" {
		t.Fatalf("result %+v", res)
	}
	if !strings.Contains(strings.Join(lines, "\n"), "champion format test-format") {
		t.Errorf("log lines %q", lines)
	}
	if strings.Join(points, " ") != "loss@0 loss@1" || len(stages) != 4 {
		t.Errorf("points %q, stages %q", points, stages)
	}

	// Without a champion, champion_ metrics are the command's own and
	// stay where they are; a failure is the command's error.
	res, err = TrainExec(t.Context(), ExecRequest{
		Config:  exectrain.Config{Command: []string{"/bin/sh", "-c", `echo m > "$DROVER_OUTPUT_DIR/m"; echo '{"metrics": {"champion_x": 1}, "artifact": "m", "format": "f"}' > "$DROVER_METRICS_FILE"`}},
		Dataset: data, OutputDir: filepath.Join(dir, "out2"),
	}, Observer{})
	if err != nil || res.Metrics["champion_x"] != 1 || res.ChampionMetrics != nil {
		t.Fatalf("no champion: %+v, %v", res, err)
	}
	_, err = TrainExec(t.Context(), ExecRequest{
		Config:  exectrain.Config{Command: []string{"/bin/sh", "-c", "echo 'out of memory' >&2; exit 3"}},
		Dataset: data, OutputDir: filepath.Join(dir, "out3"),
	}, Observer{})
	var re *exectrain.RunError
	if !errors.As(err, &re) || re.ExitCode != 3 || !strings.Contains(err.Error(), "out of memory") {
		t.Fatalf("failing command: %v", err)
	}
}

// fakeTrainer is a Trainer that sends the events it was given, records
// the request, and fails with err after them.
type fakeTrainer struct {
	events []*runnerv1.TrainResponse
	err    error
	req    *runnerv1.TrainRequest
}

func (f *fakeTrainer) Train(_ context.Context, req *runnerv1.TrainRequest, send func(*runnerv1.TrainResponse) error) error {
	f.req = req
	for _, ev := range f.events {
		if err := send(ev); err != nil {
			return err
		}
	}
	return f.err
}

func logEvent(line string) *runnerv1.TrainResponse {
	return &runnerv1.TrainResponse{Event: &runnerv1.TrainResponse_LogLine{LogLine: line}}
}

func progressEvent(f float64, stage string, metrics map[string]float64) *runnerv1.TrainResponse {
	return &runnerv1.TrainResponse{Event: &runnerv1.TrainResponse_Progress{Progress: &runnerv1.TrainProgress{Fraction: f, Stage: stage, Metrics: metrics}}}
}

func resultEvent(metrics map[string]float64) *runnerv1.TrainResponse {
	return &runnerv1.TrainResponse{Event: &runnerv1.TrainResponse_Result{Result: &runnerv1.TrainResult{
		ArtifactPath: "/out/model.json", Format: "centroid-json", Metrics: metrics, ReferenceProfile: []byte("profile"),
	}}}
}

// TestTrainWith runs a fake Trainer: its log lines, progress and metric
// points reach the Observer; given a champion, its champion_<metric>
// metrics become the champion's; without one, they stay the candidate's;
// its error and a missing result are errors.
func TestTrainWith(t *testing.T) {
	var lines, progress, points []string
	obs := Observer{
		Log: func(l string) { lines = append(lines, l) },
		Progress: func(p *runnerv1.TrainProgress) {
			progress = append(progress, fmt.Sprintf("%g %s", p.GetFraction(), p.GetStage()))
		},
		Point: func(name string, v float64, step int64) {
			points = append(points, fmt.Sprintf("%s@%d=%g", name, step, v))
		},
	}
	ft := &fakeTrainer{events: []*runnerv1.TrainResponse{
		logEvent("reading"),
		progressEvent(0.25, "read", nil),
		progressEvent(0.5, "fitting", map[string]float64{"loss": 0.9, "acc": 0.6}),
		progressEvent(0.75, "fitting", map[string]float64{"loss": 0.5}),
		logEvent("scored"),
		resultEvent(map[string]float64{"accuracy": 0.9, "holdout_rows": 20, "champion_accuracy": 0.8, "champion_log_loss": 0.4, "champion_": 1}),
	}}
	req := &runnerv1.TrainRequest{DatasetPath: "/data.csv", OutputDir: "/out", Target: "class", Ignore: []string{"id"},
		ChampionArtifactPath: "/champion.json", ChampionFormat: "centroid-json"}
	res, err := TrainWith(t.Context(), ft, req, obs)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(ft.req, req) {
		t.Errorf("the trainer got %v, want %v", ft.req, req)
	}
	wantMetrics := map[string]float64{"accuracy": 0.9, "holdout_rows": 20, "champion_": 1}
	wantChampion := map[string]float64{"accuracy": 0.8, "log_loss": 0.4}
	if !maps.Equal(res.Metrics, wantMetrics) || !maps.Equal(res.ChampionMetrics, wantChampion) ||
		res.Artifact != "/out/model.json" || res.Format != "centroid-json" || string(res.ReferenceProfile) != "profile" {
		t.Errorf("result %+v", res)
	}
	if got := strings.Join(lines, "|"); got != "reading|scored" {
		t.Errorf("log lines %q", got)
	}
	if got := strings.Join(progress, "|"); got != "0.25 read|0.5 fitting|0.75 fitting" {
		t.Errorf("progress %q", got)
	}
	if got := strings.Join(points, " "); got != "acc@0=0.6 loss@0=0.9 loss@1=0.5" {
		t.Errorf("points %q", got)
	}

	// A champion given but not scored: said so, and no champion metrics.
	lines = nil
	ft = &fakeTrainer{events: []*runnerv1.TrainResponse{resultEvent(map[string]float64{"accuracy": 0.9})}}
	res, err = TrainWith(t.Context(), ft, req, obs)
	if err != nil || len(res.ChampionMetrics) != 0 || res.Metrics["accuracy"] != 0.9 {
		t.Fatalf("champion not scored: %+v %v", res, err)
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "reported no champion_<metric> metrics") {
		t.Errorf("log lines %q", lines)
	}

	// Without a champion, champion_ metrics are the runner's own; an
	// Observer without functions is fine.
	ft = &fakeTrainer{events: []*runnerv1.TrainResponse{logEvent("x"), progressEvent(1, "done", map[string]float64{"loss": 1}),
		resultEvent(map[string]float64{"champion_x": 1})}}
	res, err = TrainWith(t.Context(), ft, &runnerv1.TrainRequest{DatasetPath: "/data.csv"}, Observer{})
	if err != nil || res.Metrics["champion_x"] != 1 || res.ChampionMetrics != nil {
		t.Fatalf("no champion: %+v %v", res, err)
	}

	// The trainer's error as it is; no result is an error.
	boom := errors.New("plugin exited")
	if _, err := TrainWith(t.Context(), &fakeTrainer{events: []*runnerv1.TrainResponse{resultEvent(nil)}, err: boom}, req, obs); !errors.Is(err, boom) {
		t.Errorf("failing trainer: %v", err)
	}
	if _, err := TrainWith(t.Context(), &fakeTrainer{events: []*runnerv1.TrainResponse{logEvent("x")}}, req, obs); err == nil ||
		!strings.Contains(err.Error(), "without a result") {
		t.Errorf("no result: %v", err)
	}
}

func TestJudge(t *testing.T) {
	cand := map[string]float64{"accuracy": 0.82, "rmse": 1.0, "nan": math.NaN()}
	champ := map[string]float64{"accuracy": 0.80, "rmse": 1.2, "nan": 1}
	for _, tc := range []struct {
		metric string
		margin float64
		won    bool
	}{
		{"accuracy", 0, true},
		{"accuracy", 0.01, true},
		{"accuracy", 0.05, false},
		{"rmse", 0.1, true}, // lower is better: 0.2 less
		{"rmse", 0.3, false},
	} {
		c, ch, won, err := Judge(tc.metric, cand, champ, tc.margin)
		if err != nil || won != tc.won || c != cand[tc.metric] || ch != champ[tc.metric] {
			t.Errorf("%s margin %g: %v %v %v %v, want won=%v", tc.metric, tc.margin, c, ch, won, err, tc.won)
		}
	}
	// A loser against itself with a positive margin; a tie wins at 0.
	if _, _, won, _ := Judge("accuracy", champ, champ, 0); !won {
		t.Error("a tie does not win at margin 0")
	}
	if _, _, _, err := Judge("f1", cand, champ, 0); !errors.Is(err, ErrNoMetric) || !strings.Contains(err.Error(), "the candidate has no such metric (its metrics: accuracy, nan, rmse)") {
		t.Errorf("missing metric: %v", err)
	}
	if _, _, _, err := Judge("nan", cand, champ, 0); err == nil || errors.Is(err, ErrNoMetric) {
		t.Errorf("NaN: %v", err)
	}
	if DefaultMetric(native.Regression) != "rmse" || DefaultMetric(native.Classification) != "accuracy" || DefaultMetric("") != "accuracy" {
		t.Error("DefaultMetric")
	}
	finite, dropped := FiniteOnly(map[string]float64{"a": 1, "b": math.NaN(), "c": math.Inf(1)})
	if len(finite) != 1 || finite["a"] != 1 || strings.Join(dropped, ",") != "b,c" {
		t.Errorf("FiniteOnly: %v %v", finite, dropped)
	}
}
