package exectrain

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// writeScript writes a shell script into a new temporary directory and
// returns its path. Scripts are run as `/bin/sh path`, never executed
// directly, so that a parallel fork cannot make the file "text busy".
func writeScript(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "train.sh")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// newRequest returns a request for a small data set, with an output
// directory that does not exist yet.
func newRequest(t *testing.T) *runnerv1.TrainRequest {
	t.Helper()
	dir := t.TempDir()
	dataset := filepath.Join(dir, "data.csv")
	if err := os.WriteFile(dataset, []byte("x,y\n1,0\n2,1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &runnerv1.TrainRequest{DatasetPath: dataset, OutputDir: filepath.Join(dir, "out", "run-1"), Target: "y"}
}

// recorder collects the events Train sends.
type recorder struct {
	mu     sync.Mutex
	events []*runnerv1.TrainResponse
	onLine func(string) // called for every log line, if set
}

func (r *recorder) send(ev *runnerv1.TrainResponse) error {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	if l, ok := ev.GetEvent().(*runnerv1.TrainResponse_LogLine); ok && r.onLine != nil {
		r.onLine(l.LogLine)
	}
	return nil
}

func (r *recorder) logLines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, ev := range r.events {
		if l, ok := ev.GetEvent().(*runnerv1.TrainResponse_LogLine); ok {
			out = append(out, l.LogLine)
		}
	}
	return out
}

func (r *recorder) result(t *testing.T) *runnerv1.TrainResult {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 || r.events[len(r.events)-1].GetResult() == nil {
		t.Fatalf("the last event is not a result: %v", r.events)
	}
	for _, ev := range r.events[:len(r.events)-1] {
		if ev.GetResult() != nil {
			t.Fatalf("more than one result")
		}
	}
	return r.events[len(r.events)-1].GetResult()
}

// describe writes an event compactly, for comparisons.
func describe(ev *runnerv1.TrainResponse) string {
	switch e := ev.GetEvent().(type) {
	case *runnerv1.TrainResponse_LogLine:
		return "log " + e.LogLine
	case *runnerv1.TrainResponse_Progress:
		s := fmt.Sprintf("progress %g %q", e.Progress.GetFraction(), e.Progress.GetStage())
		for k, v := range e.Progress.GetMetrics() {
			s += fmt.Sprintf(" %s=%g", k, v)
		}
		return s
	case *runnerv1.TrainResponse_Result:
		return "result " + filepath.Base(e.Result.GetArtifactPath())
	}
	return fmt.Sprintf("unknown %v", ev)
}

// succeed is shell that writes an artifact and a metrics file naming it.
const succeed = `
printf 'weights' > "$DROVER_OUTPUT_DIR/model.bin"
printf '{"metrics": {"accuracy": 0.9}, "artifact": "model.bin"}' > "$DROVER_METRICS_FILE"
`

// processGone reports whether pid has exited (a zombie counts as gone: in
// a container, nobody may reap an orphan).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(fields) > 0 && (fields[0] == "Z" || fields[0] == "X")
}

// readPID reads the process id a script wrote into path.
func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the script wrote no pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	return pid
}

// waitGone fails the test unless pid exits within a few seconds, and kills
// it if not.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d is still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTrainSucceeds(t *testing.T) {
	// Not parallel: t.Setenv. The agent's variable must not reach the command.
	t.Setenv("DROVER_TEST_SECRET", "hub-token")
	workDir := t.TempDir()
	script := writeScript(t, `set -eu
echo "dataset=$DROVER_DATASET"
echo "output=$DROVER_OUTPUT_DIR"
echo "target=$DROVER_TARGET"
echo "params=$DROVER_PARAMS"
echo "learning_rate=$DROVER_PARAM_LEARNING_RATE"
echo "trees=$DROVER_PARAM_N_TREES"
echo "schema=$DROVER_SCHEMA"
echo "metrics_file=$DROVER_METRICS_FILE"
echo "secret=${DROVER_TEST_SECRET:-unset}"
echo "extra=$EXTRA"
echo "pwd=$(pwd)"
echo "a warning" >&2
mkdir -p "$DROVER_OUTPUT_DIR/sub"
printf 'weights' > "$DROVER_OUTPUT_DIR/sub/model.bin"
printf '{"mean": 1.5}' > "$DROVER_OUTPUT_DIR/profile.json"
cat > "$DROVER_METRICS_FILE" <<EOF
{"metrics": {"accuracy": 0.9, "roc_auc": null, "holdout_rows": 2},
 "artifact": "$DROVER_OUTPUT_DIR/sub/model.bin", "reference_profile": "profile.json"}
EOF
`)
	tr := New(Config{
		Command: []string{"/bin/sh", script},
		Dir:     workDir,
		Env:     []string{"EXTRA=yes", "DROVER_DATASET=/not/this/one"},
		Format:  "test-format",
	}, nil)
	req := newRequest(t)
	req.Params = map[string]string{"learning-rate": "0.1", "n_trees": "3"}
	req.Schema = &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{{Name: "x", Datatype: "FP64", Kind: droverv1.FeatureKind_FEATURE_KIND_NUMERIC}}}
	var rec recorder
	if err := tr.Train(t.Context(), req, rec.send); err != nil {
		t.Fatal(err)
	}

	out := req.GetOutputDir()
	want := []string{
		"dataset=" + req.GetDatasetPath(),
		"output=" + out,
		"target=y",
		`params={"learning-rate":"0.1","n_trees":"3"}`,
		"learning_rate=0.1",
		"trees=3",
		`schema={"inputs":[{"name":"x","datatype":"FP64","kind":"FEATURE_KIND_NUMERIC"}]}`,
		"metrics_file=" + filepath.Join(out, "metrics.json"),
		"secret=unset",
		"extra=yes",
		"pwd=" + workDir,
		"a warning",
	}
	got := rec.logLines()
	// protojson's spacing is deliberately unstable; compare the schema
	// without it.
	for i, l := range got {
		if strings.HasPrefix(l, "schema=") {
			got[i] = strings.ReplaceAll(l, " ", "")
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("log lines:\n got %q\nwant %q", got, want)
	}
	res := rec.result(t)
	wantRes := &runnerv1.TrainResult{
		ArtifactPath:     filepath.Join(out, "sub", "model.bin"),
		Format:           "test-format",
		Metrics:          map[string]float64{"accuracy": 0.9, "holdout_rows": 2},
		ReferenceProfile: []byte(`{"mean": 1.5}`),
	}
	if !proto.Equal(res, wantRes) {
		t.Errorf("result:\n got %v\nwant %v", res, wantRes)
	}
}

// TestTrainChampionAndIgnoreVars checks the variables that carry the
// request's champion and ignored columns: the champion's artifact as an
// absolute path with its format, the columns as a JSON array, none of
// them overridden by Config.Env, and all unset when the request has none.
func TestTrainChampionAndIgnoreVars(t *testing.T) {
	t.Parallel()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	champion := filepath.Join(t.TempDir(), "champion.json")
	if err := os.WriteFile(champion, []byte("the champion"), 0o644); err != nil {
		t.Fatal(err)
	}
	relChampion, err := filepath.Rel(wd, champion)
	if err != nil {
		t.Fatal(err)
	}
	script := writeScript(t, `set -eu
echo "champion=${DROVER_CHAMPION_ARTIFACT-unset}"
echo "format=${DROVER_CHAMPION_FORMAT-unset}"
echo "ignore=${DROVER_IGNORE-unset}"
if [ -n "${DROVER_CHAMPION_ARTIFACT:-}" ]; then echo "content=$(cat "$DROVER_CHAMPION_ARTIFACT")"; fi
`+succeed)
	tr := New(Config{
		Command: []string{"/bin/sh", script},
		Env:     []string{"DROVER_CHAMPION_ARTIFACT=/not/this/one", "DROVER_IGNORE=[]"},
		Format:  "f",
	}, nil)

	req := newRequest(t)
	req.ChampionArtifactPath, req.ChampionFormat = relChampion, "centroid-json"
	req.Ignore = []string{"customer_id", "signup \"date\""}
	var rec recorder
	if err := tr.Train(t.Context(), req, rec.send); err != nil {
		t.Fatal(err)
	}
	want := []string{"champion=" + champion, "format=centroid-json", `ignore=["customer_id","signup \"date\""]`, "content=the champion"}
	if got := rec.logLines(); !slices.Equal(got, want) {
		t.Errorf("with a champion and ignored columns:\n got %q\nwant %q", got, want)
	}

	// Without them, the variables are unset, whatever Config.Env says.
	tr = New(Config{Command: []string{"/bin/sh", script}, Format: "f"}, nil)
	rec = recorder{}
	if err := tr.Train(t.Context(), newRequest(t), rec.send); err != nil {
		t.Fatal(err)
	}
	want = []string{"champion=unset", "format=unset", "ignore=unset"}
	if got := rec.logLines(); !slices.Equal(got, want) {
		t.Errorf("without:\n got %q\nwant %q", got, want)
	}
}

func TestTrainFails(t *testing.T) {
	t.Parallel()
	outside := filepath.Join(t.TempDir(), "outside.bin")
	if err := os.WriteFile(outside, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	metrics := func(json string) string {
		return fmt.Sprintf("printf 'w' > \"$DROVER_OUTPUT_DIR/model.bin\"\nprintf '%%s' '%s' > \"$DROVER_METRICS_FILE\"\n", json)
	}
	for _, tc := range []struct {
		name     string
		script   string
		format   string
		want     string // in the error
		exitCode int
	}{
		{name: "exit status", script: "echo one\necho two >&2\nexit 3\n", want: "exited with status 3", exitCode: 3},
		{name: "signal", script: "echo one\nkill -9 $$\n", want: "killed by signal 9 (killed)", exitCode: -1},
		{name: "no metrics file", script: "echo one\n", want: "exited 0 but wrote no metrics file"},
		{name: "invalid metrics file", script: "echo one\necho '{\"metrics\": ' > \"$DROVER_METRICS_FILE\"\n", want: "unexpected EOF"},
		{name: "trailing data", script: metrics(`{"artifact": "model.bin"} {}`), want: "data after the JSON object"},
		{name: "misspelt field", script: metrics(`{"artefact": "model.bin"}`), want: `unknown field "artefact"`},
		{name: "metric not a number", script: metrics(`{"artifact": "model.bin", "metrics": {"accuracy": "high"}}`), want: "cannot unmarshal string"},
		{name: "no artifact", script: metrics(`{"metrics": {"accuracy": 1}}`), want: "names no artifact"},
		{name: "no format", script: metrics(`{"artifact": "model.bin"}`), format: "-", want: "names no format"},
		{name: "missing artifact", script: metrics(`{"artifact": "nothing.bin"}`), want: "nothing.bin does not exist"},
		{name: "artifact above", script: metrics(`{"artifact": "../escape.bin"}`), want: "artifact ../escape.bin is outside the output directory"},
		{name: "artifact absolute", script: metrics(`{"artifact": "` + outside + `"}`), want: "is outside the output directory"},
		{name: "artifact a link", script: "ln -s " + outside + " \"$DROVER_OUTPUT_DIR/link.bin\"\n" + metrics(`{"artifact": "link.bin"}`),
			want: "is a symbolic link"},
		{name: "artifact through a link", script: "ln -s " + filepath.Dir(outside) + " \"$DROVER_OUTPUT_DIR/up\"\n" + metrics(`{"artifact": "up/outside.bin"}`),
			want: "path escapes"},
		{name: "artifact a directory", script: "mkdir \"$DROVER_OUTPUT_DIR/model\"\n" + metrics(`{"artifact": "model"}`), want: "is not a regular file"},
		{name: "metrics file a link", script: succeed + "rm \"$DROVER_METRICS_FILE\"\nln -s " + outside + " \"$DROVER_METRICS_FILE\"\n",
			want: "metrics file: openat metrics.json"},
		{name: "profile outside", script: metrics(`{"artifact": "model.bin", "reference_profile": "../p.json"}`), want: "reference profile ../p.json is outside"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			format := cmp.Or(tc.format, "test-format")
			if tc.format == "-" {
				format = ""
			}
			tr := New(Config{Command: []string{"/bin/sh", writeScript(t, tc.script)}, Format: format}, nil)
			req := newRequest(t)
			// A stale metrics file from an earlier run must not count.
			if err := os.MkdirAll(req.GetOutputDir(), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(req.GetOutputDir(), "model.bin"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(req.GetOutputDir(), MetricsFile), []byte(`{"artifact": "model.bin"}`), 0o644); err != nil {
				t.Fatal(err)
			}
			var rec recorder
			err := tr.Train(t.Context(), req, rec.send)
			if err == nil {
				t.Fatalf("no error; events %v", rec.events)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			var re *RunError
			if !errors.As(err, &re) {
				t.Fatalf("error %T is not a *RunError", err)
			}
			if re.ExitCode != tc.exitCode {
				t.Errorf("exit code %d, want %d", re.ExitCode, tc.exitCode)
			}
			if !slices.Equal(re.Tail, rec.logLines()) {
				t.Errorf("tail %q, want the lines written %q", re.Tail, rec.logLines())
			}
			if len(re.Tail) > 0 && !strings.Contains(err.Error(), "last lines of output:\n\t"+re.Tail[0]) {
				t.Errorf("error %q does not quote the output", err)
			}
			for _, ev := range rec.events {
				if ev.GetResult() != nil {
					t.Errorf("a failed run sent a result")
				}
			}
		})
	}
}

func TestTrainRefusesBadRequests(t *testing.T) {
	t.Parallel()
	script := writeScript(t, succeed)
	for _, tc := range []struct {
		name    string
		command []string
		edit    func(*runnerv1.TrainRequest)
		want    string
	}{
		{name: "no command", edit: func(*runnerv1.TrainRequest) {}, want: "no command configured"},
		{name: "no data set", edit: func(r *runnerv1.TrainRequest) { r.DatasetPath = "" }, want: "names no data set"},
		{name: "data set missing", edit: func(r *runnerv1.TrainRequest) { r.DatasetPath += ".gone" }, want: "no such file"},
		{name: "no output directory", edit: func(r *runnerv1.TrainRequest) { r.OutputDir = "" }, want: "names no output directory"},
		{name: "params collide", edit: func(r *runnerv1.TrainRequest) { r.Params = map[string]string{"max-depth": "1", "max_depth": "2"} },
			want: `params "max-depth" and "max_depth" would both be DROVER_PARAM_MAX_DEPTH`},
		{name: "empty param name", edit: func(r *runnerv1.TrainRequest) { r.Params = map[string]string{"": "1"} }, want: "empty name"},
		{name: "no such program", command: []string{filepath.Join(t.TempDir(), "nothing")}, edit: func(*runnerv1.TrainRequest) {},
			want: "starting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			command := tc.command
			if command == nil && tc.name != "no command" {
				command = []string{"/bin/sh", script}
			}
			req := newRequest(t)
			tc.edit(req)
			var rec recorder
			err := New(Config{Command: command, Format: "f"}, nil).Train(t.Context(), req, rec.send)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if len(rec.events) > 0 {
				t.Errorf("events sent: %v", rec.events)
			}
		})
	}
}

func TestTrainStreamsLogAndProgress(t *testing.T) {
	t.Parallel()
	script := writeScript(t, `
echo "drover:progress 0.25 reading the data"
echo "drover:metric loss 0.5"
echo "drover:progress 0.5"
# Until the test has seen the line above, this waits: the output must be
# streamed as it is written, not gathered at the end.
while [ ! -e "$DROVER_OUTPUT_DIR/go" ]; do sleep 0.01; done
echo "drover:progress 1.5 too far"
echo "drover:progress"
echo "drover:metric loss"
echo "drover:metric loss not-a-number"
echo "drover:unknown 1"
echo "  drover:progress 0.9 indented"
printf 'windows\r\n'
printf 'not utf-8: \377\n'
echo "drover:progress	1	done	now"
echo "from stderr" >&2
`+succeed+`printf 'no newline at the end'`)
	req := newRequest(t)
	rec := recorder{onLine: func(l string) {
		if l == "drover:progress 0.5" {
			if err := os.WriteFile(filepath.Join(req.GetOutputDir(), "go"), nil, 0o644); err != nil {
				t.Error(err)
			}
		}
	}}
	tr := New(Config{Command: []string{"/bin/sh", script}, Format: "f", Timeout: time.Minute}, nil)
	if err := tr.Train(t.Context(), req, rec.send); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range rec.events {
		got = append(got, describe(ev))
	}
	want := []string{
		"log drover:progress 0.25 reading the data",
		`progress 0.25 "reading the data"`,
		"log drover:metric loss 0.5",
		`progress 0.25 "reading the data" loss=0.5`,
		"log drover:progress 0.5",
		`progress 0.5 "reading the data"`,
		"log drover:progress 1.5 too far",
		"log drover:progress",
		"log drover:metric loss",
		"log drover:metric loss not-a-number",
		"log drover:unknown 1",
		"log   drover:progress 0.9 indented",
		"log windows",
		"log not utf-8: \uFFFD",
		"log drover:progress\t1\tdone\tnow",
		`progress 1 "done now"`,
		"log from stderr",
		"log no newline at the end",
		"result model.bin",
	}
	if !slices.Equal(got, want) {
		t.Errorf("events:\n got %q\nwant %q", got, want)
	}
}

func TestTrainBoundsAFlood(t *testing.T) {
	t.Parallel()
	const lines = 100_000
	script := writeScript(t, fmt.Sprintf(`
seq 1 %d
head -c 5000000 /dev/zero | tr '\0' x
echo
printf a; i=0; while [ $i -lt 10000 ]; do printf 'é'; i=$((i+1)); done; echo
`, lines)+succeed)
	var (
		count, longest int
		long           []string
	)
	send := func(ev *runnerv1.TrainResponse) error {
		if l, ok := ev.GetEvent().(*runnerv1.TrainResponse_LogLine); ok {
			count++
			longest = max(longest, len(l.LogLine))
			if len(l.LogLine) > 100 {
				long = append(long, l.LogLine)
			}
		}
		return nil
	}
	tr := New(Config{Command: []string{"/bin/sh", script}, Format: "f"}, nil)
	if err := tr.Train(t.Context(), newRequest(t), send); err != nil {
		t.Fatal(err)
	}
	if count != lines+2 {
		t.Errorf("%d log lines, want %d", count, lines+2)
	}
	if max := MaxLineBytes + len(cutMark); longest > max {
		t.Errorf("a log line of %d bytes, over %d", longest, max)
	}
	if len(long) != 2 {
		t.Fatalf("%d long lines, want 2", len(long))
	}
	if !strings.HasPrefix(long[0], "xxxxxxxx") || !strings.HasSuffix(long[0], cutMark) {
		t.Errorf("the 5 MB line was not cut and marked: %.40q...%q", long[0], long[0][len(long[0])-40:])
	}
	// The cut falls inside a two-byte rune; the half of it is dropped, not
	// turned into U+FFFD.
	if !utf8.ValidString(long[1]) || strings.ContainsRune(long[1], utf8.RuneError) || !strings.HasSuffix(long[1], "é"+cutMark) {
		t.Errorf("the long UTF-8 line was cut badly: ...%q", long[1][len(long[1])-60:])
	}
}

func TestTrainCancelKillsProcessTree(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		ignoreTerm bool // the whole tree ignores SIGTERM: only SIGKILL, after the grace period, stops it
	}{
		{name: "SIGTERM"},
		{name: "SIGKILL after the grace period", ignoreTerm: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			trap := ""
			if tc.ignoreTerm {
				trap = "trap '' TERM\n"
			}
			// The command (sh) starts a grandchild of the agent (sh -c, which
			// becomes sleep), then waits for it.
			script := writeScript(t, trap+`
sh -c 'echo $$ > "$DROVER_OUTPUT_DIR/grandchild.pid"; exec sleep 1000' &
while [ ! -s "$DROVER_OUTPUT_DIR/grandchild.pid" ]; do sleep 0.01; done
echo started
wait
`)
			req := newRequest(t)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			rec := recorder{onLine: func(l string) {
				if l == "started" {
					cancel()
				}
			}}
			grace := 300 * time.Millisecond
			tr := New(Config{Command: []string{"/bin/sh", script}, Format: "f", KillGrace: grace}, nil)
			start := time.Now()
			err := tr.Train(ctx, req, rec.send)
			took := time.Since(start)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("error %v, want context.Canceled", err)
			}
			if !strings.Contains(err.Error(), "stopped: context canceled") {
				t.Errorf("error %q does not say it was stopped", err)
			}
			waitGone(t, readPID(t, filepath.Join(req.GetOutputDir(), "grandchild.pid")))
			if tc.ignoreTerm && took < grace {
				t.Errorf("Train returned after %v, before the grace period of %v", took, grace)
			}
			if !tc.ignoreTerm && took > DefaultKillGrace {
				t.Errorf("Train took %v: SIGTERM was not enough?", took)
			}
		})
	}
}

func TestTrainTimeout(t *testing.T) {
	t.Parallel()
	script := writeScript(t, "echo started\nsleep 1000\n")
	tr := New(Config{Command: []string{"/bin/sh", script}, Format: "f", Timeout: 300 * time.Millisecond}, nil)
	var rec recorder
	err := tr.Train(t.Context(), newRequest(t), rec.send)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want context.DeadlineExceeded", err)
	}
	if want := "stopped: timed out after 300ms"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if !strings.Contains(err.Error(), "\tstarted") {
		t.Errorf("error %q does not quote the output", err)
	}
}

func TestTrainKillsWhatTheCommandLeavesBehind(t *testing.T) {
	t.Parallel()
	// The background sleep keeps the output open, and would run for ever.
	script := writeScript(t, `
sh -c 'echo $$ > "$DROVER_OUTPUT_DIR/left.pid"; exec sleep 1000' &
while [ ! -s "$DROVER_OUTPUT_DIR/left.pid" ]; do sleep 0.01; done
`+succeed)
	req := newRequest(t)
	var rec recorder
	start := time.Now()
	if err := New(Config{Command: []string{"/bin/sh", script}, Format: "f"}, nil).Train(t.Context(), req, rec.send); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > drainTimeout {
		t.Errorf("Train took %v: it waited for the output of a process it should have killed", took)
	}
	rec.result(t)
	waitGone(t, readPID(t, filepath.Join(req.GetOutputDir(), "left.pid")))
}

func TestTrainStopsReadingAnEscapedProcess(t *testing.T) {
	t.Parallel()
	// setsid takes the sleep out of the command's process group, so it
	// escapes the kill, and it holds the output open.
	script := writeScript(t, `
setsid sh -c 'echo $$ > "$DROVER_OUTPUT_DIR/escaped.pid"; exec sleep 1000' &
while [ ! -s "$DROVER_OUTPUT_DIR/escaped.pid" ]; do sleep 0.01; done
echo done
`+succeed)
	req := newRequest(t)
	tr := New(Config{Command: []string{"/bin/sh", script}, Format: "f"}, nil)
	tr.drain = 200 * time.Millisecond
	var rec recorder
	err := tr.Train(t.Context(), req, rec.send)
	pid := readPID(t, filepath.Join(req.GetOutputDir(), "escaped.pid"))
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if err != nil {
		t.Fatalf("the command succeeded, but Train says %v", err)
	}
	if got := rec.logLines(); !slices.Equal(got, []string{"done"}) {
		t.Errorf("log lines %q, want done", got)
	}
	rec.result(t)
}

func TestTrainStopsWhenSendFails(t *testing.T) {
	t.Parallel()
	script := writeScript(t, `
sh -c 'echo $$ > "$DROVER_OUTPUT_DIR/child.pid"; exec sleep 1000' &
while [ ! -s "$DROVER_OUTPUT_DIR/child.pid" ]; do sleep 0.01; done
echo hello
wait
`)
	req := newRequest(t)
	errGone := errors.New("the hub went away")
	sends := 0
	send := func(*runnerv1.TrainResponse) error {
		sends++
		return errGone
	}
	err := New(Config{Command: []string{"/bin/sh", script}, Format: "f"}, nil).Train(t.Context(), req, send)
	if !errors.Is(err, errGone) {
		t.Fatalf("error %v, want the send error", err)
	}
	if sends != 1 {
		t.Errorf("send called %d times after failing", sends)
	}
	waitGone(t, readPID(t, filepath.Join(req.GetOutputDir(), "child.pid")))
}

func TestParamVar(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		"n_estimators":  "DROVER_PARAM_N_ESTIMATORS",
		"learning-rate": "DROVER_PARAM_LEARNING_RATE",
		"MaxDepth2":     "DROVER_PARAM_MAXDEPTH2",
		"a.b c/d":       "DROVER_PARAM_A_B_C_D",
		"größe":         "DROVER_PARAM_GR__E",
	} {
		if got, err := ParamVar(name); err != nil || got != want {
			t.Errorf("ParamVar(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	if _, err := ParamVar(""); err == nil {
		t.Error("ParamVar accepted an empty name")
	}
}

func TestOutputTail(t *testing.T) {
	t.Parallel()
	o := &output{send: func(*runnerv1.TrainResponse) error { return nil }}
	if got := o.lastLines(); len(got) != 0 {
		t.Errorf("lastLines of nothing = %q", got)
	}
	for i := range tailLines + 5 {
		o.remember(strconv.Itoa(i))
	}
	got := o.lastLines()
	if len(got) != tailLines || got[0] != "5" || got[tailLines-1] != strconv.Itoa(tailLines+4) {
		t.Errorf("lastLines = %q, want 5 to %d", got, tailLines+4)
	}
	o.remember(strings.Repeat("ü", tailLineBytes))
	if l := o.lastLines()[tailLines-1]; len(l) > tailLineBytes+10 || !utf8.ValidString(l) || !strings.HasSuffix(l, " [...]") {
		t.Errorf("a long line is remembered as %q", l)
	}
}
