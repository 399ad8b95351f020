package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/agent/store"
	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/internal/churn"
	"github.com/droverhq/drover/internal/digest"
	"github.com/droverhq/drover/internal/training"
	"github.com/droverhq/drover/plugins/native"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// fakeBlobs stands in for the artifact cache and the hub's blob store:
// blobs put are fetched from disk, uploads are kept by digest.
type fakeBlobs struct {
	dir string

	mu        sync.Mutex
	files     map[string]string // digest → path
	uploads   map[string][]byte
	fetches   int
	uploadErr error
}

func newFakeBlobs(t *testing.T) *fakeBlobs {
	return &fakeBlobs{dir: t.TempDir(), files: map[string]string{}, uploads: map[string][]byte{}}
}

func (f *fakeBlobs) put(t *testing.T, content []byte) *droverv1.BlobRef {
	t.Helper()
	d := digest.FromBytes(content)
	path := filepath.Join(f.dir, d.Hex())
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.files[d.String()] = path
	f.mu.Unlock()
	return &droverv1.BlobRef{Digest: d.String(), SizeBytes: int64(len(content))}
}

func (f *fakeBlobs) fetch(ctx context.Context, ref *droverv1.BlobRef) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetches++
	path, ok := f.files[ref.GetDigest()]
	if !ok {
		return "", fmt.Errorf("blob %s: not found", ref.GetDigest())
	}
	return path, ctx.Err()
}

func (f *fakeBlobs) upload(_ context.Context, path string) (*droverv1.BlobRef, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.uploadErr != nil {
		return nil, f.uploadErr
	}
	d := digest.FromBytes(b).String()
	f.uploads[d] = b
	return &droverv1.BlobRef{Digest: d, SizeBytes: int64(len(b))}, nil
}

func (f *fakeBlobs) fetchCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fetches
}

// sentReports records the progress reports a task runner sends.
type sentReports struct {
	mu      sync.Mutex
	reports []*droverv1.TrainingReport
}

func (s *sentReports) send(r *droverv1.TrainingReport) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reports = append(s.reports, proto.CloneOf(r))
}

func (s *sentReports) all() []*droverv1.TrainingReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reports)
}

// phases lists the phases reported, each once, in order.
func phases(reports []*droverv1.TrainingReport) []string {
	var out []string
	for _, r := range reports {
		p := strings.TrimPrefix(r.GetPhase().String(), "TRAINING_PHASE_")
		if len(out) == 0 || out[len(out)-1] != p {
			out = append(out, p)
		}
	}
	return out
}

func logLines(reports []*droverv1.TrainingReport) string {
	var lines []string
	for _, r := range reports {
		lines = append(lines, r.GetLogLines()...)
	}
	return strings.Join(lines, "\n")
}

func newTestRunner(t *testing.T, blobs *fakeBlobs, sent *sentReports, trainers map[string][]string) *taskRunner {
	return &taskRunner{
		fetch: blobs.fetch, upload: blobs.upload, send: sent.send, trainers: func() map[string][]string { return trainers },
		dir: filepath.Join(t.TempDir(), "training"), logger: hubtest.Logger(t, "training"), now: time.Now,
		flushEvery: 20 * time.Millisecond, killGrace: time.Second,
	}
}

// trainChampion trains a native model on the churn data and returns its
// artifact and metrics.
func trainChampion(t *testing.T) ([]byte, map[string]float64) {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "train.csv")
	if err := os.WriteFile(data, churn.TrainCSV(), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, _, err := training.NativeOptions(nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := training.TrainNative(t.Context(), training.NativeRequest{Dataset: data, Target: churn.Target,
		Ignore: []string{churn.IDColumn}, OutputDir: filepath.Join(dir, "out"), Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(res.Artifact)
	if err != nil {
		t.Fatal(err)
	}
	return b, res.Metrics
}

// TestTrainingNativeWithChampion runs a native task with a champion on the
// churn data: the candidate and the champion scored on the same hold-out,
// the artifact uploaded, a reference profile with predictions, the phases
// and log lines reported, the work directory gone.
func TestTrainingNativeWithChampion(t *testing.T) {
	blobs := newFakeBlobs(t)
	var sent sentReports
	r := newTestRunner(t, blobs, &sent, nil)
	champArtifact, champMetrics := trainChampion(t)
	task := &droverv1.TrainingTask{
		JobId: "job-1", Attempt: 1, Model: "churn", Runner: "native", Params: map[string]string{"l2": "0.5"},
		Dataset: blobs.put(t, churn.TrainCSV()), Target: churn.Target, Ignore: []string{churn.IDColumn},
		ChampionVersion: 1, ChampionArtifact: blobs.put(t, champArtifact), ChampionFormat: training.NativeFormat, Metric: "accuracy",
	}
	final := r.run(t.Context(), task)
	if final.GetPhase() != droverv1.TrainingPhase_TRAINING_PHASE_SUCCEEDED || final.GetJobId() != "job-1" || final.GetAttempt() != 1 {
		t.Fatalf("final report %v", final)
	}
	res := final.GetResult()
	if res.GetFormat() != training.NativeFormat || res.GetMetrics()["accuracy"] < 0.75 || res.GetTrainRows() != 3200 || res.GetHoldoutRows() != 800 {
		t.Fatalf("result %v", res)
	}
	// Trained with holdout 0.2 and seed 1 like the champion, on the same
	// rows: the champion scores as it did when it was trained.
	if res.GetChampionMetrics()["accuracy"] != champMetrics["accuracy"] {
		t.Fatalf("champion %v on the candidate's hold-out, %v at its training", res.GetChampionMetrics(), champMetrics)
	}
	want := map[string]string{"task": "classification", "l2": "0.5", "holdout": "0.2", "seed": "1"}
	if !maps.Equal(res.GetParams(), want) {
		t.Fatalf("params %v, want %v", res.GetParams(), want)
	}
	uploaded, ok := blobs.uploads[res.GetArtifact().GetDigest()]
	if !ok || int64(len(uploaded)) != res.GetArtifact().GetSizeBytes() {
		t.Fatalf("artifact %v not uploaded", res.GetArtifact())
	}
	if m, err := native.LoadArtifact(uploaded); err != nil || m.Encoder.Width() == 0 {
		t.Fatalf("the uploaded artifact: %v", err)
	}
	var p droverv1.ReferenceProfile
	if err := proto.Unmarshal(res.GetReferenceProfile(), &p); err != nil || p.GetPrediction() == nil || p.GetRows() != 4000 {
		t.Fatalf("reference profile: %v, prediction %v, rows %d", err, p.GetPrediction() != nil, p.GetRows())
	}
	reports := sent.all()
	if got := strings.Join(phases(reports), " "); got != "DOWNLOADING TRAINING EVALUATING UPLOADING" {
		t.Errorf("phases reported: %s", got)
	}
	for _, want := range []string{"read 4000 rows, 10 features", "trained in ", "the champion on the same 800 hold-out rows"} {
		if !strings.Contains(logLines(reports)+"\n"+strings.Join(final.GetLogLines(), "\n"), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if entries, err := os.ReadDir(r.dir); err != nil || len(entries) != 0 {
		t.Errorf("work directories left: %v %v", entries, err)
	}
}

// writeTrainer writes an exec trainer script and returns its command.
func writeTrainer(t *testing.T, body string) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "train.sh")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"/bin/sh", path}
}

// TestTrainingExecTrainer runs an exec trainer with a champion: it finds
// the champion and the ignored columns in its environment and reports the
// champion's accuracy as champion_accuracy.
func TestTrainingExecTrainer(t *testing.T) {
	blobs := newFakeBlobs(t)
	var sent sentReports
	command := writeTrainer(t, `set -e
test "$(cat "$DROVER_CHAMPION_ARTIFACT")" = "old model"
test "$DROVER_CHAMPION_FORMAT" = "sklearn-pickle"
test "$DROVER_IGNORE" = '["customer_id"]'
test "$DROVER_PARAM_DEPTH" = 3
head -1 "$DROVER_DATASET"
echo "drover:progress 0.5 fitting"
echo "drover:metric loss 0.7"
echo "drover:metric loss 0.4"
echo "new model" > "$DROVER_OUTPUT_DIR/model.pkl"
printf '{"metrics": {"accuracy": 0.83, "holdout_rows": 1000, "champion_accuracy": 0.81}, "artifact": "model.pkl", "format": "sklearn-pickle"}' > "$DROVER_METRICS_FILE"
`)
	r := newTestRunner(t, blobs, &sent, map[string][]string{"sklearn": command})
	task := &droverv1.TrainingTask{
		JobId: "job-2", Attempt: 2, Model: "churn", Runner: "sklearn", Params: map[string]string{"depth": "3"},
		Dataset: blobs.put(t, churn.TrainCSV()), Target: churn.Target, Ignore: []string{churn.IDColumn},
		ChampionVersion: 4, ChampionArtifact: blobs.put(t, []byte("old model\n")), ChampionFormat: "sklearn-pickle",
	}
	final := r.run(t.Context(), task)
	if final.GetPhase() != droverv1.TrainingPhase_TRAINING_PHASE_SUCCEEDED {
		t.Fatalf("final report %v", final)
	}
	res := final.GetResult()
	if res.GetFormat() != "sklearn-pickle" || res.GetMetrics()["accuracy"] != 0.83 || len(res.GetChampionMetrics()) != 1 ||
		res.GetChampionMetrics()["accuracy"] != 0.81 || res.GetMetrics()["champion_accuracy"] != 0 {
		t.Fatalf("result %v", res)
	}
	if res.GetHoldoutRows() != 1000 || res.GetTrainRows() != 3000 || !maps.Equal(res.GetParams(), map[string]string{"depth": "3"}) {
		t.Fatalf("rows %d/%d, params %v", res.GetTrainRows(), res.GetHoldoutRows(), res.GetParams())
	}
	if !bytes.Equal(blobs.uploads[res.GetArtifact().GetDigest()], []byte("new model\n")) {
		t.Fatal("the artifact was not uploaded")
	}
	var p droverv1.ReferenceProfile
	if err := proto.Unmarshal(res.GetReferenceProfile(), &p); err != nil || len(p.GetFeatures()) != 10 || p.GetPrediction() != nil {
		t.Fatalf("reference profile: %v, %d features", err, len(p.GetFeatures()))
	}
	reports := append(sent.all(), final)
	if !strings.Contains(logLines(reports), strings.Join(churn.Header(), ",")) {
		t.Errorf("the command's output is not in the log lines:\n%s", logLines(reports))
	}
	var points []string
	var fraction float64
	for _, rep := range reports {
		for _, pt := range rep.GetPoints() {
			points = append(points, fmt.Sprintf("%s@%d=%g", pt.GetName(), pt.GetStep(), pt.GetValue()))
		}
		if rep.GetPhase() == droverv1.TrainingPhase_TRAINING_PHASE_TRAINING && rep.GetStage() == "fitting" {
			fraction = rep.GetFraction()
		}
	}
	if strings.Join(points, " ") != "loss@0=0.7 loss@1=0.4" || fraction != 0.5 {
		t.Errorf("points %q, fraction %g", points, fraction)
	}
}

func TestTrainingFailures(t *testing.T) {
	blobs := newFakeBlobs(t)
	var sent sentReports
	r := newTestRunner(t, blobs, &sent, map[string][]string{
		"sklearn": {"/bin/true"},
		"broken":  {"/bin/sh", "-c", "echo 'CUDA out of memory' >&2; exit 2"},
	})
	data := blobs.put(t, churn.TrainCSV())
	for _, tc := range []struct {
		name string
		task *droverv1.TrainingTask
		want string
	}{
		{"unknown runner", &droverv1.TrainingTask{JobId: "j", Runner: "torch", Dataset: data, Target: "churn"},
			`this agent has no trainer "torch"; it has native, broken, sklearn`},
		{"bad parameter", &droverv1.TrainingTask{JobId: "j", Runner: "native", Dataset: data, Target: "churn", Params: map[string]string{"depth": "3"}},
			`training: the native runner has no parameter "depth"`},
		{"no data set", &droverv1.TrainingTask{JobId: "j", Target: "churn"}, "the task names no data set"},
		{"data set not there", &droverv1.TrainingTask{JobId: "j", Dataset: &droverv1.BlobRef{Digest: digest.FromBytes([]byte("x")).String()}, Target: "churn"},
			"downloading the data set sha256:"},
		{"wrong target", &droverv1.TrainingTask{JobId: "j", Dataset: data, Target: "churned", Ignore: []string{churn.IDColumn}},
			`training: `},
		{"failing command", &droverv1.TrainingTask{JobId: "j", Runner: "broken", Dataset: data, Target: "churn"},
			"training: exectrain: /bin/sh -c echo 'CUDA out of memory' >&2; exit 2: exited with status 2; its last lines of output:\n\tCUDA out of memory"},
	} {
		final := r.run(t.Context(), tc.task)
		if final.GetPhase() != droverv1.TrainingPhase_TRAINING_PHASE_FAILED || !strings.Contains(final.GetMessage(), tc.want) || final.GetResult() != nil {
			t.Errorf("%s: %v %q, want FAILED with %q", tc.name, final.GetPhase(), final.GetMessage(), tc.want)
		}
	}
	// An upload that fails is the task's failure.
	blobs.uploadErr = errors.New("permission_denied: no running job")
	final := r.run(t.Context(), &droverv1.TrainingTask{JobId: "j", Dataset: data, Target: churn.Target, Ignore: []string{churn.IDColumn}})
	if !strings.Contains(final.GetMessage(), "uploading the artifact: permission_denied: no running job") {
		t.Errorf("upload failure: %q", final.GetMessage())
	}
	if m := failureMessage(errors.New(strings.Repeat("é", 5000))); len(m) > maxFailureMessage+10 || !strings.HasSuffix(m, "é [...]") {
		t.Errorf("a long message is not cut cleanly: %d bytes, ends %q", len(m), m[len(m)-12:])
	}
}

// alive reports whether a process is running (a zombie is not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// readPID waits for a script to write its pid file.
func readPID(t *testing.T, path string) int {
	t.Helper()
	var pid int
	hubtest.WaitFor(t, 10*time.Second, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err
	})
	return pid
}

// sleeper is an exec trainer that writes its pid and its child's to the
// directory in the parameter piddir, then waits.
const sleeper = `echo $$ > "$DROVER_PARAM_PIDDIR/sh.pid.tmp"; mv "$DROVER_PARAM_PIDDIR/sh.pid.tmp" "$DROVER_PARAM_PIDDIR/sh.pid"
sleep 60 &
echo $! > "$DROVER_PARAM_PIDDIR/sleep.pid.tmp"; mv "$DROVER_PARAM_PIDDIR/sleep.pid.tmp" "$DROVER_PARAM_PIDDIR/sleep.pid"
echo waiting
wait
`

// TestTrainingCancelKillsTrainer cancels a running exec trainer: the task
// fails with the cause, and the command and its child are gone.
func TestTrainingCancelKillsTrainer(t *testing.T) {
	blobs := newFakeBlobs(t)
	var sent sentReports
	r := newTestRunner(t, blobs, &sent, map[string][]string{"slow": writeTrainer(t, sleeper)})
	pids := t.TempDir()
	ctx, cancel := context.WithCancelCause(t.Context())
	done := make(chan *droverv1.TrainingReport, 1)
	go func() {
		done <- r.run(ctx, &droverv1.TrainingTask{JobId: "job-3", Attempt: 1, Runner: "slow", Dataset: blobs.put(t, churn.TrainCSV()),
			Target: churn.Target, Params: map[string]string{"piddir": pids}})
	}()
	sh, sleep := readPID(t, filepath.Join(pids, "sh.pid")), readPID(t, filepath.Join(pids, "sleep.pid"))
	cancel(errTaskWithdrawn)
	var final *droverv1.TrainingReport
	select {
	case final = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the cancelled task did not end")
	}
	if final.GetPhase() != droverv1.TrainingPhase_TRAINING_PHASE_FAILED || !strings.Contains(final.GetMessage(), "stopped: "+errTaskWithdrawn.Error()) {
		t.Fatalf("final report %v", final)
	}
	hubtest.WaitFor(t, 5*time.Second, func() error {
		for _, pid := range []int{sh, sleep} {
			if alive(pid) {
				return fmt.Errorf("process %d still runs", pid)
			}
		}
		return nil
	})
}

// TestReportBatching checks that a task's output goes to the hub at most
// once an interval, at most 100 lines a report, with a note of what was
// dropped, and that a phase change is reported at once.
func TestReportBatching(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var sent sentReports
		b := newReportBatcher(&droverv1.TrainingTask{JobId: "job-4", Attempt: 3}, time.Now, sent.send)
		b.setPhase(droverv1.TrainingPhase_TRAINING_PHASE_TRAINING)
		stop := b.every(t.Context(), time.Second)
		defer stop()

		for i := range 150 {
			b.log(fmt.Sprintf("line %d", i))
		}
		b.point("loss", 0.5, 0)
		b.point("loss", 0.4, 1)
		b.progress(0.3, "epoch 1")
		synctest.Wait()
		if n := len(sent.all()); n != 1 {
			t.Fatalf("%d reports before the interval, want the phase's only", n)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		reports := sent.all()
		if len(reports) != 2 {
			t.Fatalf("%d reports after an interval, want 2", len(reports))
		}
		r := reports[1]
		if r.GetJobId() != "job-4" || r.GetAttempt() != 3 || r.GetPhase() != droverv1.TrainingPhase_TRAINING_PHASE_TRAINING ||
			r.GetFraction() != 0.3 || r.GetStage() != "epoch 1" || len(r.GetPoints()) != 2 || len(r.GetLogLines()) != maxReportLines {
			t.Fatalf("report %v", r)
		}
		if r.GetLogLines()[98] != "line 98" || !strings.Contains(r.GetLogLines()[99], "51 lines of output not sent") {
			t.Fatalf("the report's last lines: %q", r.GetLogLines()[97:])
		}

		// Nothing new, nothing sent; new lines go in the next interval's.
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if n := len(sent.all()); n != 2 {
			t.Fatalf("%d reports with nothing new, want 2", n)
		}
		b.log("line 150")
		b.log("line 151")
		time.Sleep(time.Second)
		synctest.Wait()
		reports = sent.all()
		if len(reports) != 3 || !slices.Equal(reports[2].GetLogLines(), []string{"line 150", "line 151"}) || len(reports[2].GetPoints()) != 0 {
			t.Fatalf("reports %v", reports)
		}

		// A phase change goes at once, after what its phase left; the
		// final report takes what is left.
		b.log("trained")
		b.setPhase(droverv1.TrainingPhase_TRAINING_PHASE_UPLOADING)
		b.log("done")
		final := b.final(droverv1.TrainingPhase_TRAINING_PHASE_SUCCEEDED, "", &droverv1.TrainingResult{Format: "f"})
		reports = sent.all()
		if len(reports) != 5 || reports[3].GetPhase() != droverv1.TrainingPhase_TRAINING_PHASE_TRAINING ||
			!slices.Equal(reports[3].GetLogLines(), []string{"trained"}) ||
			reports[4].GetPhase() != droverv1.TrainingPhase_TRAINING_PHASE_UPLOADING || len(reports[4].GetLogLines()) != 0 {
			t.Fatalf("phase reports %v", reports[3:])
		}
		if !slices.Equal(final.GetLogLines(), []string{"done"}) || final.GetFraction() != 1 || final.GetResult().GetFormat() != "f" {
			t.Fatalf("final report %v", final)
		}
	})
}

// appendLabelled keeps labelled rows of a model, as feedback does.
func appendLabelled(t *testing.T, st *store.Store, model string, rows ...LabelledRow) {
	t.Helper()
	j, err := st.Journal("labelled/"+model, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows {
		b, err := json.Marshal(row)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := j.Append(b); err != nil {
			t.Fatal(err)
		}
	}
}

func openStore(t *testing.T, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(dir, store.Options{}, hubtest.Logger(t, "store"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Sync(0); err != nil { // no hub: nothing delivered yet
		t.Fatal(err)
	}
	return st
}

// TestExportLabelled hands in a model's newest labelled rows, which
// training.Assemble then reads into a data set.
func TestExportLabelled(t *testing.T) {
	st := openStore(t, t.TempDir())
	defer st.Close()
	blobs := newFakeBlobs(t)
	logger := hubtest.Logger(t, "export")
	for i := range 5 {
		label := []string{"no", "yes"}[i%2]
		appendLabelled(t, st, "churn", LabelledRow{ID: fmt.Sprintf("r%d", i), Version: "3",
			Features: map[string]any{"tenure_months": float64(10 + i), "contract": "month-to-month"}, Label: &label})
	}
	dir := filepath.Join(t.TempDir(), "training")
	e := exportLabelled(t.Context(), st, 100, dir, blobs.upload, &droverv1.ExportTask{JobId: "job-5", Model: "churn", MaxRows: 3}, logger)
	if e.GetError() != "" || e.GetRows() != 3 || e.GetJobId() != "job-5" || e.GetModel() != "churn" {
		t.Fatalf("export %v", e)
	}
	content := string(blobs.uploads[e.GetContent().GetDigest()])
	want := "id,version,contract,tenure_months,label\nr2,3,month-to-month,12,no\nr3,3,month-to-month,13,yes\nr4,3,month-to-month,14,no\n"
	if content != want {
		t.Fatalf("exported CSV:\n%s\nwant:\n%s", content, want)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files left behind: %v", entries)
	}
	var out strings.Builder
	rows, err := training.Assemble(&out, strings.NewReader("customer_id,tenure_months,contract,churn\nC1,5,two-year,no\n"),
		[]io.Reader{strings.NewReader(content)}, "churn")
	if err != nil || rows != 4 || !strings.HasSuffix(out.String(), "\n,14,month-to-month,no\n") {
		t.Fatalf("assembled %d rows, %v:\n%s", rows, err, out.String())
	}

	// All rows; none; no model; an upload that fails.
	if e := exportLabelled(t.Context(), st, 100, dir, blobs.upload, &droverv1.ExportTask{JobId: "j", Model: "churn"}, logger); e.GetRows() != 5 {
		t.Errorf("all rows: %v", e)
	}
	uploads := len(blobs.uploads)
	if e := exportLabelled(t.Context(), st, 100, dir, blobs.upload, &droverv1.ExportTask{JobId: "j", Model: "fraud"}, logger); e.GetRows() != 0 || e.GetContent() != nil || e.GetError() != "" || len(blobs.uploads) != uploads {
		t.Errorf("no rows: %v", e)
	}
	if e := exportLabelled(t.Context(), st, 100, dir, blobs.upload, &droverv1.ExportTask{JobId: "j"}, logger); e.GetError() != "the export task names no model" {
		t.Errorf("no model: %v", e)
	}
	blobs.uploadErr = errors.New("unavailable: the hub is away")
	if e := exportLabelled(t.Context(), st, 100, dir, blobs.upload, &droverv1.ExportTask{JobId: "j", Model: "churn"}, logger); e.GetError() != "uploading the labelled rows: unavailable: the hub is away" || e.GetContent() != nil || e.GetRows() != 0 {
		t.Errorf("upload failure: %v", e)
	}
}

// outboxTraining returns the training and export reports in the outbox.
func outboxTraining(t *testing.T, st *store.Store) (trainingReports []*droverv1.TrainingReport, exports []*droverv1.LabelledExport) {
	t.Helper()
	pending, err := st.Pending(100_000, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range pending {
		if tr := r.GetTraining(); tr != nil {
			trainingReports = append(trainingReports, tr)
		}
		if e := r.GetExport(); e != nil {
			exports = append(exports, e)
		}
	}
	return trainingReports, exports
}

func finals(reports []*droverv1.TrainingReport) []*droverv1.TrainingReport {
	var out []*droverv1.TrainingReport
	for _, r := range reports {
		if p := r.GetPhase(); p == droverv1.TrainingPhase_TRAINING_PHASE_SUCCEEDED || p == droverv1.TrainingPhase_TRAINING_PHASE_FAILED {
			out = append(out, r)
		}
	}
	return out
}

// newTestRetrainer builds a retrainer over a store, reporting to its
// outbox as the agent does.
func newTestRetrainer(t *testing.T, st *store.Store, blobs *fakeBlobs, trainers map[string][]string, dir string) *retrainer {
	logger := hubtest.Logger(t, "training")
	runner := &taskRunner{
		fetch: blobs.fetch, upload: blobs.upload, trainers: func() map[string][]string { return trainers }, dir: dir, logger: logger, now: time.Now,
		flushEvery: 20 * time.Millisecond, killGrace: time.Second,
		send: func(r *droverv1.TrainingReport) {
			_ = st.Append(time.Now(), &droverv1.Report{Body: &droverv1.Report_Training{Training: r}})
		},
	}
	export := func(ctx context.Context, task *droverv1.ExportTask) *droverv1.LabelledExport {
		return exportLabelled(ctx, st, 100, dir, blobs.upload, task, logger)
	}
	return newRetrainer(st, runner, export, logger, time.Now)
}

// TestRetrainerRestart runs a desired state's training and export tasks,
// then restarts with the same desired state: nothing runs or is reported
// twice. A desired state without them forgets their markers.
func TestRetrainerRestart(t *testing.T) {
	dataDir, work := t.TempDir(), filepath.Join(t.TempDir(), "training")
	blobs := newFakeBlobs(t)
	st := openStore(t, dataDir)
	label := "yes"
	appendLabelled(t, st, "churn", LabelledRow{ID: "r1", Version: "1", Features: map[string]any{"x": 1.0}, Label: &label})
	desired := &droverv1.DesiredState{
		Training: []*droverv1.TrainingTask{{JobId: "job-6", Attempt: 1, Model: "churn", Dataset: blobs.put(t, churn.TrainCSV()),
			Target: churn.Target, Ignore: []string{churn.IDColumn}}},
		Exports: []*droverv1.ExportTask{{JobId: "job-7", Model: "churn"}},
	}
	m := newTestRetrainer(t, st, blobs, nil, work)
	m.sync(desired) // before begin: kept for it
	m.begin(t.Context())
	m.wait()
	reports, exports := outboxTraining(t, st)
	if f := finals(reports); len(f) != 1 || f[0].GetPhase() != droverv1.TrainingPhase_TRAINING_PHASE_SUCCEEDED {
		t.Fatalf("final reports %v", f)
	}
	if len(exports) != 1 || exports[0].GetRows() != 1 {
		t.Fatalf("exports %v", exports)
	}
	fetches := blobs.fetchCount()
	st.Close()

	// The agent restarts with the same desired state stored.
	st = openStore(t, dataDir)
	defer st.Close()
	m = newTestRetrainer(t, st, blobs, nil, work)
	m.begin(t.Context())
	m.sync(desired)
	m.wait()
	reports2, exports2 := outboxTraining(t, st)
	if len(reports2) != len(reports) || len(exports2) != 1 || blobs.fetchCount() != fetches {
		t.Fatalf("after a restart: %d training reports (had %d), %d exports, %d fetches (had %d)",
			len(reports2), len(reports), len(exports2), blobs.fetchCount(), fetches)
	}
	// The marker holds the final report.
	raw, err := st.Get(trainingMarker(desired.GetTraining()[0]))
	var marked droverv1.TrainingReport
	if err != nil || proto.Unmarshal(raw, &marked) != nil || marked.GetResult().GetFormat() != training.NativeFormat {
		t.Fatalf("marker: %v %v", &marked, err)
	}

	// The hub is done with them: their markers go.
	m.sync(&droverv1.DesiredState{})
	for _, prefix := range []string{trainingMarkers, exportMarkers} {
		if names, err := st.Names(prefix); err != nil || len(names) != 0 {
			t.Errorf("markers left: %q %v", names, err)
		}
	}
}

// TestRetrainerStops checks what ends a running task: withdrawn from the
// desired state (reported, not marked), the agent stopping (neither: it
// runs again), and a deadline that passed (reported and marked).
func TestRetrainerStops(t *testing.T) {
	st := openStore(t, t.TempDir())
	defer st.Close()
	blobs := newFakeBlobs(t)
	trainers := map[string][]string{"slow": writeTrainer(t, sleeper)}
	data := blobs.put(t, churn.TrainCSV())
	task := func(job, pids string) *droverv1.TrainingTask {
		return &droverv1.TrainingTask{JobId: job, Attempt: 1, Runner: "slow", Dataset: data, Target: churn.Target,
			Params: map[string]string{"piddir": pids}}
	}

	// Withdrawn.
	ctx, stopAgent := context.WithCancel(t.Context())
	defer stopAgent()
	m := newTestRetrainer(t, st, blobs, trainers, filepath.Join(t.TempDir(), "training"))
	m.begin(ctx)
	pids := t.TempDir()
	withdrawn := task("job-8", pids)
	m.sync(&droverv1.DesiredState{Training: []*droverv1.TrainingTask{withdrawn}})
	sh := readPID(t, filepath.Join(pids, "sh.pid"))
	m.sync(&droverv1.DesiredState{})
	m.wait()
	reports, _ := outboxTraining(t, st)
	if f := finals(reports); len(f) != 1 || !strings.Contains(f[0].GetMessage(), errTaskWithdrawn.Error()) {
		t.Fatalf("withdrawn: final reports %v", f)
	}
	if _, err := st.Get(trainingMarker(withdrawn)); !errors.Is(err, store.ErrNotFound) || alive(sh) {
		t.Fatalf("withdrawn: marker %v, trainer alive %v", err, alive(sh))
	}

	// The agent stops: no final report, no marker.
	pids = t.TempDir()
	interrupted := task("job-9", pids)
	m.sync(&droverv1.DesiredState{Training: []*droverv1.TrainingTask{interrupted}})
	readPID(t, filepath.Join(pids, "sh.pid"))
	stopAgent()
	m.wait()
	reports, _ = outboxTraining(t, st)
	if f := finals(reports); len(f) != 1 {
		t.Fatalf("interrupted: final reports %v", f)
	}
	if _, err := st.Get(trainingMarker(interrupted)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("interrupted: marker %v", err)
	}

	// A deadline that passed.
	m = newTestRetrainer(t, st, blobs, trainers, filepath.Join(t.TempDir(), "training"))
	m.begin(t.Context())
	late := task("job-10", t.TempDir())
	late.Deadline = timestamppb.New(time.Now().Add(-time.Minute))
	m.sync(&droverv1.DesiredState{Training: []*droverv1.TrainingTask{late}})
	m.wait()
	reports, _ = outboxTraining(t, st)
	if f := finals(reports); len(f) != 2 || !strings.Contains(f[1].GetMessage(), "deadline") || !strings.Contains(f[1].GetMessage(), "passed") {
		t.Fatalf("late: final reports %v", f)
	}
	if _, err := st.Get(trainingMarker(late)); err != nil {
		t.Fatalf("late: marker %v", err)
	}
}

func TestTrainerNames(t *testing.T) {
	if got := trainerNames(map[string][]string{"torch": {"x"}, "sklearn": {"y"}}, nil); !slices.Equal(got, []string{"native", "sklearn", "torch"}) {
		t.Errorf("trainerNames = %q", got)
	}
	// Training plugins too, each name once, native first.
	if got := trainerNames(map[string][]string{"torch": {"x"}}, []string{"centroid", "native", "torch"}); !slices.Equal(got, []string{"native", "centroid", "torch"}) {
		t.Errorf("trainerNames with plugins = %q", got)
	}
	for _, tc := range []struct {
		trainers map[string][]string
		want     string
	}{
		{map[string][]string{"native": {"x"}}, "native is the built-in runner"},
		{map[string][]string{"sk": nil}, "trainer sk: no command"},
		{map[string][]string{"a b": {"x"}}, "a name is one word"},
	} {
		if err := checkTrainers(tc.trainers); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.trainers, err, tc.want)
		}
	}
	if err := checkTrainers(map[string][]string{"sklearn": {"python3", "train.py"}}); err != nil {
		t.Error(err)
	}
}

// churnFeatureSchema is the churn data's schema.
func churnFeatureSchema() *droverv1.FeatureSchema {
	fs := &droverv1.FeatureSchema{}
	for _, f := range churn.Features() {
		in := &droverv1.Feature{Name: f.Name, Datatype: "FP64", Kind: droverv1.FeatureKind_FEATURE_KIND_NUMERIC}
		if f.Categorical {
			in.Datatype, in.Kind, in.Categories = "BYTES", droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL, f.Categories
		}
		fs.Inputs = append(fs.Inputs, in)
	}
	return fs
}

// TestRetrainingThroughHub runs a retraining job end to end on one hub and
// one agent: the agent reports its trainers, the hub assembles the data set
// and places the job, and the agent downloads it and the champion, trains
// natively, uploads the candidate and reports the result the hub judges.
func TestRetrainingThroughHub(t *testing.T) {
	c := hubtest.StartCluster(t, 1, hubtest.Options{})
	cl := c.Client()
	ctx := t.Context()
	join := joinToken(t, cl)
	cfg := agentConfig(t, c, join, t.TempDir(), nil)
	cfg.Trainers = map[string][]string{"sklearn": {"/bin/false"}}
	startAgent(t, cfg)
	hubtest.WaitFor(t, 10*time.Second, func() error {
		r, err := cl.Agents.GetAgent(ctx, &droverv1.GetAgentRequest{Agent: "gpu-1"})
		if err != nil {
			return err
		}
		if got := r.GetAgent().GetInventory().GetTrainers(); !slices.Equal(got, []string{"native", "sklearn"}) {
			return fmt.Errorf("trainers %q", got)
		}
		return nil
	})

	// The base data set and a native champion.
	data := churn.TrainCSV()
	up, err := cl.Upload(ctx, bytes.NewReader(data), int64(len(data)), digest.FromBytes(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Datasets.CreateDatasetVersion(ctx, &droverv1.CreateDatasetVersionRequest{
		Dataset: "churn-train", Content: up.BlobRef(), Format: "csv", Rows: 4000}); err != nil {
		t.Fatal(err)
	}
	champ, champMetrics := trainChampion(t)
	up, err = cl.Upload(ctx, bytes.NewReader(champ), int64(len(champ)), digest.FromBytes(champ), nil)
	if err != nil {
		t.Fatal(err)
	}
	v1, err := cl.Models.CreateVersion(ctx, &droverv1.CreateVersionRequest{Model: "churn", CreateModel: true, Artifact: up.BlobRef(),
		Format: training.NativeFormat, Runner: training.NativeRunner, Schema: churnFeatureSchema(),
		Metrics: map[string]float64{"accuracy": champMetrics["accuracy"]}})
	if err != nil {
		t.Fatal(err)
	}

	if _, err := cl.Retrain.PutPolicy(ctx, &droverv1.PutPolicyRequest{Policy: &droverv1.RetrainPolicy{
		Name: "churn", Model: "churn", Runner: "native", Params: map[string]string{"l2": "0.5"},
		Dataset:   &droverv1.DatasetRecipe{Base: "churn-train", Target: churn.Target, Ignore: []string{churn.IDColumn}},
		Placement: &droverv1.Placement{AllowCpu: true},
		Promotion: &droverv1.Promotion{Metric: "accuracy"},
	}}); err != nil {
		t.Fatal(err)
	}
	resp, err := cl.Retrain.TriggerRetrain(ctx, &droverv1.TriggerRetrainRequest{Policy: "churn", Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetJob().GetId()
	var job *droverv1.RetrainJob
	hubtest.WaitFor(t, 60*time.Second, func() error {
		r, err := cl.Retrain.GetJob(ctx, &droverv1.GetJobRequest{Id: id})
		if err != nil {
			return err
		}
		job = r.GetJob()
		switch job.GetState() {
		case droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED, droverv1.RetrainJobState_RETRAIN_JOB_STATE_FAILED,
			droverv1.RetrainJobState_RETRAIN_JOB_STATE_CANCELLED:
			return nil
		}
		return fmt.Errorf("job %s is %v (%s)", id, job.GetState(), job.GetPhase())
	})
	if job.GetState() != droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED {
		t.Fatalf("job ended %v: %s\nlog:\n%s", job.GetState(), job.GetMessage(), strings.Join(job.GetLog(), "\n"))
	}
	res := job.GetResult()
	if job.GetChampionVersion() != v1.GetVersion().GetVersion() || res.GetFormat() != training.NativeFormat ||
		res.GetChampionMetrics()["accuracy"] != champMetrics["accuracy"] || res.GetMetrics()["accuracy"] < 0.75 ||
		res.GetTrainRows() != 3200 || res.GetParams()["l2"] != "0.5" || len(res.GetReferenceProfile()) == 0 {
		t.Fatalf("job %s: result %v", id, res)
	}
}

// TestReloadTrainers changes the exec trainers as SIGHUP does: the hub's
// inventory names the new set, a set that does not check out is refused
// whole, and a task asks for trainers as they are at its start.
func TestReloadTrainers(t *testing.T) {
	c := hubtest.StartCluster(t, 1, hubtest.Options{})
	cl := c.Client()
	ctx := t.Context()
	join := joinToken(t, cl)
	cfg := agentConfig(t, c, join, t.TempDir(), nil)
	cfg.Trainers = map[string][]string{"sklearn": {"/bin/false"}}
	a := startAgent(t, cfg)
	hubTrainers := func(want ...string) {
		t.Helper()
		hubtest.WaitFor(t, 10*time.Second, func() error {
			r, err := cl.Agents.GetAgent(ctx, &droverv1.GetAgentRequest{Agent: "gpu-1"})
			if err != nil {
				return err
			}
			if got := r.GetAgent().GetInventory().GetTrainers(); !slices.Equal(got, want) {
				return fmt.Errorf("trainers %q, want %q", got, want)
			}
			return nil
		})
	}
	hubTrainers("native", "sklearn")

	next := cfg
	next.Trainers = map[string][]string{"sklearn": {"/bin/false"}, "xgb": {"/bin/true", "--fit"}}
	a.Reload(next)
	hubTrainers("native", "sklearn", "xgb")
	if got := a.trainersNow()["xgb"]; !slices.Equal(got, []string{"/bin/true", "--fit"}) {
		t.Errorf("xgb's command %q", got)
	}

	bad := cfg
	bad.Trainers = map[string][]string{"native": {"/bin/true"}, "lgbm": {"/bin/true"}}
	a.Reload(bad)
	if _, ok := a.trainersNow()["lgbm"]; ok {
		t.Error("a trainer set with a bad entry was applied in part")
	}
	hubTrainers("native", "sklearn", "xgb")
}
