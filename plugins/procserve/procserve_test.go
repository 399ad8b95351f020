package procserve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/droverhq/drover/plugins/sdk"
	"github.com/droverhq/drover/plugins/sdk/sdktest"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

var _ sdk.Server = (*Server)(nil)

// binDir holds the test OIP server, built once for the whole run.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "procserve-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
)

// oipServer returns the path of the test OIP server in testdata/oipserver,
// building it on first use.
func oipServer(t *testing.T) string {
	t.Helper()
	path := filepath.Join(binDir, "oipserver")
	buildOnce.Do(func() {
		goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goCmd); err != nil {
			goCmd = "go"
		}
		out, err := exec.Command(goCmd, "build", "-o", path, "./testdata/oipserver").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building testdata/oipserver: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return path
}

// logRecorder is a slog handler that keeps every record's message and
// attributes, and logs them to t.Log while the test runs when
// DROVER_TEST_LOGS is set.
type logRecorder struct {
	attrs []slog.Attr
	*recorded
}

type recorded struct {
	t     testing.TB
	mu    sync.Mutex
	ended bool // t.Log must not be called any more
	lines []string
}

func newLogger(t testing.TB) (*slog.Logger, func() []string) {
	r := &recorded{t: t}
	t.Cleanup(func() {
		r.mu.Lock()
		r.ended = true
		r.mu.Unlock()
	})
	return slog.New(&logRecorder{recorded: r}), func() []string {
		r.mu.Lock()
		defer r.mu.Unlock()
		return slices.Clone(r.lines)
	}
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	for _, a := range h.attrs {
		b.WriteString(" " + a.String())
	}
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lines = append(h.lines, b.String())
	if !h.ended && os.Getenv("DROVER_TEST_LOGS") != "" {
		h.t.Log(b.String())
	}
	return nil
}

func (h *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logRecorder{attrs: append(slices.Clone(h.attrs), attrs...), recorded: h.recorded}
}

func (h *logRecorder) WithGroup(string) slog.Handler { return h }

// newServer returns a Server running the test OIP server with args, and
// unloads everything when the test ends.
func newServer(t *testing.T, cfg Config, args ...string) (*Server, func() []string) {
	t.Helper()
	logger, logs := newLogger(t)
	cfg.Command = append([]string{oipServer(t), "-port={port}", "-name={name}"}, args...)
	s := New(cfg, logger)
	s.backoffMin = 50 * time.Millisecond
	s.backoffMax = 200 * time.Millisecond
	s.probeEvery = 10 * time.Millisecond
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s, logs
}

func load(t *testing.T, s *Server, id string, params map[string]string) *runnerv1.LoadResponse {
	t.Helper()
	resp, err := s.Load(t.Context(), &runnerv1.LoadRequest{Id: id, ArtifactPath: "/artifacts/" + id, Format: "test-format", Params: params})
	if err != nil {
		t.Fatalf("load %s: %v", id, err)
	}
	return resp
}

// batch returns rows rows with inputs a (FP32, [rows, 2]: i, 2i), b (BOOL,
// [rows]: i odd) and c (BYTES, [rows]): row i sums to 3i + i%2.
func batch(id string, rows int) *runnerv1.PredictRequest {
	req := &runnerv1.PredictRequest{Id: id, Rows: int64(rows), Inputs: []*runnerv1.Tensor{
		{Name: "a", Datatype: "FP32", Shape: []int64{int64(rows), 2}},
		{Name: "b", Datatype: "BOOL", Shape: []int64{int64(rows)}},
		{Name: "c", Datatype: "BYTES", Shape: []int64{int64(rows)}},
	}}
	for i := range rows {
		req.Inputs[0].Numbers = append(req.Inputs[0].Numbers, float64(i), float64(2*i))
		req.Inputs[1].Numbers = append(req.Inputs[1].Numbers, float64(i%2))
		req.Inputs[2].Strings = append(req.Inputs[2].Strings, "row "+strconv.Itoa(i))
	}
	return req
}

// checkBatch checks the outputs for batch(id, rows).
func checkBatch(t *testing.T, resp *runnerv1.PredictResponse, rows int) {
	t.Helper()
	if len(resp.GetOutputs()) != 2 {
		t.Fatalf("outputs: %v", resp.GetOutputs())
	}
	sum, parity := resp.GetOutputs()[0], resp.GetOutputs()[1]
	if sum.GetName() != "sum" || sum.GetDatatype() != "FP64" || !slices.Equal(sum.GetShape(), []int64{int64(rows)}) {
		t.Fatalf("sum output: %v", sum)
	}
	if parity.GetName() != "parity" || parity.GetDatatype() != "BYTES" || !slices.Equal(parity.GetShape(), []int64{int64(rows)}) {
		t.Fatalf("parity output: %v", parity)
	}
	for i := range rows {
		want := float64(3*i + i%2)
		wantParity := map[bool]string{true: "even", false: "odd"}[int(want)%2 == 0]
		if sum.GetNumbers()[i] != want || parity.GetStrings()[i] != wantParity {
			t.Fatalf("row %d: sum %v, parity %q; want %v, %q", i, sum.GetNumbers()[i], parity.GetStrings()[i], want, wantParity)
		}
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readPid waits for a pid file and returns its pid.
func readPid(t *testing.T, path string) int {
	t.Helper()
	var pid int
	waitFor(t, 10*time.Second, "pid file "+path, func() bool {
		b, err := os.ReadFile(path)
		if err != nil || len(b) == 0 {
			return false
		}
		pid, err = strconv.Atoi(string(b))
		return err == nil
	})
	return pid
}

// gone reports whether the process has exited (a zombie left to a parent
// that does not reap counts as gone).
func gone(pid int) bool {
	if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	_, after, _ := strings.Cut(string(b), ") ")
	return strings.HasPrefix(after, "Z")
}

func TestLoadPredictUnload(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	t.Setenv("DROVER_TEST_AGENT_SECRET", "not for model servers")
	s, _ := newServer(t, Config{Env: []string{"EXTRA=1"}}, "-pid-file="+pidFile)

	schema := &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{{Name: "a", Datatype: "FP32", Shape: []int64{2}}}}
	resp, err := s.Load(t.Context(), &runnerv1.LoadRequest{Id: "m1", ArtifactPath: "/artifacts/m1", Format: "test-format",
		Schema: schema, Params: map[string]string{"model_name": "adder", "depth": "3"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetOutputs(); len(got) != 2 || got[0].GetName() != "sum" || got[0].GetDatatype() != "FP64" ||
		!slices.Equal(got[0].GetShape(), []int64{-1}) || got[1].GetName() != "parity" || got[1].GetDatatype() != "BYTES" {
		t.Fatalf("outputs from the model metadata: %v", got)
	}
	if !s.Alive("m1") || s.Alive("other") {
		t.Fatalf("Alive: m1 %v, other %v", s.Alive("m1"), s.Alive("other"))
	}

	for _, rows := range []int{1, 3, 100} {
		out, err := s.Predict(t.Context(), batch("m1", rows))
		if err != nil {
			t.Fatalf("%d rows: %v", rows, err)
		}
		checkBatch(t, out, rows)
	}

	// The environment: Drover's variables, the configured ones, and
	// nothing else of the agent's.
	p := s.models["m1"].current.Load()
	env := func(key string) (string, bool) {
		r, err := http.Get(p.baseURL + "/v2/env/" + key)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		var v struct {
			Value string
			Set   bool
		}
		if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
			t.Fatal(err)
		}
		return v.Value, v.Set
	}
	var gotSchema droverv1.FeatureSchema
	for key, want := range map[string]string{
		"DROVER_PORT":       strconv.Itoa(p.port),
		"DROVER_ARTIFACT":   "/artifacts/m1",
		"DROVER_MODEL":      "m1",
		"DROVER_MODEL_NAME": "adder",
		"DROVER_FORMAT":     "test-format",
		"DROVER_PARAMS":     `{"depth":"3","model_name":"adder"}`,
		"EXTRA":             "1",
		"PATH":              os.Getenv("PATH"),
	} {
		if got, _ := env(key); got != want {
			t.Errorf("%s=%q, want %q", key, got, want)
		}
	}
	if v, _ := env("DROVER_SCHEMA"); protojson.Unmarshal([]byte(v), &gotSchema) != nil || len(gotSchema.Inputs) != 1 || gotSchema.Inputs[0].Name != "a" {
		t.Errorf("DROVER_SCHEMA=%q", v)
	}
	if _, set := env("DROVER_TEST_AGENT_SECRET"); set {
		t.Error("the model server inherited an agent variable outside PATH, HOME and LANG")
	}

	pid := readPid(t, pidFile)
	if err := s.Unload(t.Context(), "m1"); err != nil {
		t.Fatal(err)
	}
	if !gone(pid) {
		t.Errorf("process %d still running after Unload", pid)
	}
	if s.Alive("m1") {
		t.Error("Alive after Unload")
	}
	if _, err := s.Predict(t.Context(), batch("m1", 1)); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("Predict after Unload: %v, want ErrNotLoaded", err)
	}
	if err := s.Unload(t.Context(), "m1"); err != nil {
		t.Errorf("second Unload: %v", err)
	}
}

func TestLoadRefusals(t *testing.T) {
	s, _ := newServer(t, Config{}, "-name=model")
	load(t, s, "m1", nil)
	if _, err := s.Load(t.Context(), &runnerv1.LoadRequest{Id: "m1"}); err == nil || !strings.Contains(err.Error(), "already loaded") {
		t.Errorf("loading m1 twice: %v", err)
	}
	for _, req := range []*runnerv1.LoadRequest{
		{Id: ""},
		{Id: "x", Params: map[string]string{"model_name": "../admin"}},
		{Id: "x", Params: map[string]string{"model_name": "-rf"}},
		{Id: "x", Format: "--exec=/bin/sh"},
	} {
		if _, err := s.Load(t.Context(), req); err == nil {
			t.Errorf("Load(%v) succeeded", req)
		}
	}
	if _, err := New(Config{}, nil).Load(t.Context(), &runnerv1.LoadRequest{Id: "x"}); err == nil {
		t.Error("Load with no command succeeded")
	}
	// The model the server does not know: it loads, with no outputs.
	resp := load(t, s, "m2", map[string]string{"model_name": "unknown"})
	if len(resp.GetOutputs()) != 0 {
		t.Errorf("outputs of a model without metadata: %v", resp.GetOutputs())
	}
}

func TestSlowReady(t *testing.T) {
	s, _ := newServer(t, Config{}, "-ready-after=300ms")
	start := time.Now()
	load(t, s, "m1", nil)
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("loaded in %v, before the server was ready", took)
	}
	if _, err := s.Predict(t.Context(), batch("m1", 2)); err != nil {
		t.Fatal(err)
	}
}

func TestNeverReadyTimesOut(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	s, _ := newServer(t, Config{ReadyTimeout: 500 * time.Millisecond}, "-never-ready", "-pid-file="+pidFile)
	start := time.Now()
	_, err := s.Load(t.Context(), &runnerv1.LoadRequest{Id: "m1"})
	if err == nil || !strings.Contains(err.Error(), "not ready within 500ms") || !strings.Contains(err.Error(), "oipserver: model model") {
		t.Fatalf("Load: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Load took %v", took)
	}
	if pid := readPid(t, pidFile); !gone(pid) {
		t.Errorf("process %d still running", pid)
	}
	if s.Alive("m1") || len(s.models) != 0 {
		t.Error("a failed load is still there")
	}
}

func TestLoadCanceled(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	s, _ := newServer(t, Config{}, "-never-ready", "-pid-file="+pidFile)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := s.Load(ctx, &runnerv1.LoadRequest{Id: "m1"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Load: %v, want the context's deadline", err)
	}
	if pid := readPid(t, pidFile); !gone(pid) {
		t.Errorf("process %d still running", pid)
	}
}

func TestExitAtStart(t *testing.T) {
	s, _ := newServer(t, Config{}, "-exit-at-start=3")
	_, err := s.Load(t.Context(), &runnerv1.LoadRequest{Id: "m1"})
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "cannot open the artifact: no such file") {
		t.Fatalf("Load: %v", err)
	}
	t.Log(err)

	s = New(Config{Command: []string{filepath.Join(t.TempDir(), "missing")}}, nil)
	if _, err := s.Load(t.Context(), &runnerv1.LoadRequest{Id: "m1"}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Load of a missing command: %v", err)
	}
}

func TestBindFailureRetried(t *testing.T) {
	s, logs := newServer(t, Config{}, "-fail-bind-once="+filepath.Join(t.TempDir(), "failed"))
	load(t, s, "m1", nil)
	if _, err := s.Predict(t.Context(), batch("m1", 1)); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(logs(), func(l string) bool { return strings.Contains(l, "could not bind its port") }) {
		t.Error("no log of the retried start")
	}
}

func TestCrashRestarts(t *testing.T) {
	s, logs := newServer(t, Config{}, "-crash-after=2", "-crash-once="+filepath.Join(t.TempDir(), "crashed"))
	s.backoffMin, s.backoffMax = 300*time.Millisecond, time.Second
	load(t, s, "m1", nil)
	if _, err := s.Predict(t.Context(), batch("m1", 2)); err != nil {
		t.Fatal(err)
	}
	// The second request crashes it.
	if _, err := s.Predict(t.Context(), batch("m1", 2)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Predict that crashed the server: %v, want ErrUnavailable", err)
	}
	waitFor(t, 5*time.Second, "Alive to turn false", func() bool { return !s.Alive("m1") })
	start := time.Now()
	if _, err := s.Predict(t.Context(), batch("m1", 2)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Predict while restarting: %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Errorf("Predict while restarting took %v; want it to fail fast", took)
	}
	waitFor(t, 10*time.Second, "the restart", func() bool { return s.Alive("m1") })
	out, err := s.Predict(t.Context(), batch("m1", 5))
	if err != nil {
		t.Fatal(err)
	}
	checkBatch(t, out, 5)
	l := logs()
	if !slices.ContainsFunc(l, func(l string) bool {
		return strings.Contains(l, "model server exited; restarting it") && strings.Contains(l, "crashing as told")
	}) {
		t.Errorf("no log of the crash with its output:\n%s", strings.Join(l, "\n"))
	}
}

func TestCrashLoopBacksOff(t *testing.T) {
	// Every start after the first exits at once: the server keeps trying,
	// further and further apart, and Unload ends it.
	dir := t.TempDir()
	script := filepath.Join(dir, "serve.sh")
	marker := filepath.Join(dir, "started")
	if err := os.WriteFile(script, []byte(`#!/bin/sh
if [ -e "$MARKER" ]; then echo "no GPU left" >&2; exit 1; fi
touch "$MARKER"
exec "$SERVER" -port="$DROVER_PORT" -crash-after=1
`), 0o755); err != nil {
		t.Fatal(err)
	}
	logger, logs := newLogger(t)
	s := New(Config{Command: []string{script}, Env: []string{"MARKER=" + marker, "SERVER=" + oipServer(t)}}, logger)
	s.backoffMin, s.backoffMax, s.probeEvery = 20*time.Millisecond, 80*time.Millisecond, 10*time.Millisecond
	load(t, s, "m1", nil)
	s.Predict(t.Context(), batch("m1", 1))
	count := func() int {
		n := 0
		for _, l := range logs() {
			if strings.Contains(l, "model server failed to start again") {
				n++
			}
		}
		return n
	}
	waitFor(t, 10*time.Second, "three failed restarts", func() bool { return count() >= 3 })
	if s.Alive("m1") {
		t.Error("Alive while it cannot start")
	}
	if err := s.Unload(t.Context(), "m1"); err != nil {
		t.Fatal(err)
	}
	n := count()
	time.Sleep(200 * time.Millisecond)
	if count() != n {
		t.Error("restarts went on after Unload")
	}
}

func TestBackoff(t *testing.T) {
	var got []time.Duration
	for n := range 9 {
		got = append(got, backoff(n, time.Second, time.Minute))
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i := range want {
		want[i] *= time.Second
	}
	if !slices.Equal(got, want) {
		t.Errorf("backoff: %v, want %v", got, want)
	}
	if d := backoff(1000, time.Second, time.Minute); d != time.Minute {
		t.Errorf("backoff(1000) = %v", d)
	}
}

func TestUnloadStopsProcessGroup(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ignoreTerm bool
	}{{"exits on SIGTERM", false}, {"ignores SIGTERM", true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			pidFile, childFile := filepath.Join(dir, "pid"), filepath.Join(dir, "child")
			args := []string{"-pid-file=" + pidFile, "-child=" + childFile}
			if tc.ignoreTerm {
				args = append(args, "-ignore-term")
			}
			s, _ := newServer(t, Config{StopTimeout: 300 * time.Millisecond}, args...)
			load(t, s, "m1", nil)
			pid, child := readPid(t, pidFile), readPid(t, childFile)
			start := time.Now()
			if err := s.Unload(t.Context(), "m1"); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			if !gone(pid) || !gone(child) {
				t.Errorf("after Unload: server %d gone %v, its child %d gone %v", pid, gone(pid), child, gone(child))
			}
			if tc.ignoreTerm && took < 300*time.Millisecond {
				t.Errorf("Unload took %v, less than the stop timeout, though the server ignores SIGTERM", took)
			}
			if !tc.ignoreTerm && took > 250*time.Millisecond {
				t.Errorf("Unload took %v for a server that exits on SIGTERM", took)
			}
		})
	}
}

func TestCrashKillsChildren(t *testing.T) {
	dir := t.TempDir()
	childFile := filepath.Join(dir, "child")
	s, _ := newServer(t, Config{}, "-child="+childFile, "-crash-after=1", "-crash-once="+filepath.Join(dir, "crashed"))
	load(t, s, "m1", nil)
	child := readPid(t, childFile)
	os.Remove(childFile)
	s.Predict(t.Context(), batch("m1", 1))
	waitFor(t, 5*time.Second, "the crashed server's child to be killed", func() bool { return gone(child) })
	waitFor(t, 10*time.Second, "the restart", func() bool { return s.Alive("m1") })
	if _, err := s.Predict(t.Context(), batch("m1", 1)); err != nil {
		t.Fatal(err)
	}
}

func TestPredictErrors(t *testing.T) {
	s, _ := newServer(t, Config{}, "-name=model")
	load(t, s, "m1", nil)

	// Refused by the server: 400, with its message.
	req := batch("m1", 3)
	req.Inputs[1].Shape, req.Inputs[1].Numbers = []int64{2}, []float64{0, 1}
	_, err := s.Predict(t.Context(), req)
	var se *ServerError
	if !errors.Is(err, ErrBadRequest) || !errors.As(err, &se) || se.Status != 400 ||
		se.Message != "input b: shape [2]: every input needs the same rows" {
		t.Errorf("mismatched rows: %v, want ErrBadRequest with the server's message", err)
	}

	// Failed in the server: 500, unavailable.
	req = batch("m1", 1)
	req.Inputs[0].Name = "boom"
	if _, err := s.Predict(t.Context(), req); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "the model failed") {
		t.Errorf("a failing model: %v, want ErrUnavailable with the server's message", err)
	}

	// Refused before it is sent: the data does not fill the shape.
	req = batch("m1", 2)
	req.Inputs[0].Numbers = req.Inputs[0].Numbers[:3]
	if _, err := s.Predict(t.Context(), req); !errors.Is(err, ErrBadRequest) {
		t.Errorf("short data: %v, want ErrBadRequest", err)
	}
	if _, err := s.Predict(t.Context(), &runnerv1.PredictRequest{Id: "m1"}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("no inputs: %v, want ErrBadRequest", err)
	}

	// The model is named wrong: the server's 404 is the request's fault.
	load(t, s, "m2", map[string]string{"model_name": "nope"})
	if _, err := s.Predict(t.Context(), batch("m2", 1)); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "no model nope") {
		t.Errorf("unknown model: %v", err)
	}

	if _, err := s.Predict(t.Context(), batch("nothing", 1)); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("unknown id: %v, want ErrNotLoaded", err)
	}
}

func TestDecodeInferResponse(t *testing.T) {
	for name, body := range map[string]string{
		"not JSON":       `{"outputs": [`,
		"no outputs":     `{"model_name": "m", "outputs": []}`,
		"wrong rows":     `{"outputs": [{"name": "y", "datatype": "FP64", "shape": [3], "data": [1, 2, 3]}]}`,
		"short data":     `{"outputs": [{"name": "y", "datatype": "FP64", "shape": [2], "data": [1]}]}`,
		"strings in int": `{"outputs": [{"name": "y", "datatype": "INT64", "shape": [2], "data": ["a", "b"]}]}`,
	} {
		if _, err := decodeInferResponse([]byte(body), 2); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	resp, err := decodeInferResponse([]byte(`{"outputs": [{"name": "y", "datatype": "BOOL", "shape": [2, 1], "data": [[true], [false]]}]}`), 2)
	if err != nil || !slices.Equal(resp.Outputs[0].Numbers, []float64{1, 0}) {
		t.Errorf("nested BOOL output: %v, %v", resp, err)
	}
}

func TestLongLinesAreCut(t *testing.T) {
	s, logs := newServer(t, Config{}, "-long-line=100000")
	load(t, s, "m1", nil)
	var found bool
	for _, l := range logs() {
		if strings.Contains(l, "xxxxxxxx") {
			found = true
			if len(l) > maxLineBytes+200 {
				t.Errorf("a log line of %d bytes", len(l))
			}
			if !strings.Contains(l, "[…]") {
				t.Error("a cut line is not marked")
			}
		}
	}
	if !found {
		t.Error("the long line was not logged")
	}
	if !slices.ContainsFunc(logs(), func(l string) bool { return strings.Contains(l, "oipserver: model model on port") }) {
		t.Error("the line after the long one was lost")
	}
}

func TestConcurrentPredicts(t *testing.T) {
	s, _ := newServer(t, Config{})
	load(t, s, "m1", nil)
	load(t, s, "m2", nil)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			id := []string{"m1", "m2"}[g%2]
			for i := range 30 {
				rows := 1 + (g+i)%17
				out, err := s.Predict(t.Context(), batch(id, rows))
				if err != nil {
					t.Errorf("%s: %v", id, err)
					return
				}
				checkBatch(t, out, rows)
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			s.Alive("m1")
			time.Sleep(time.Millisecond)
		}
	})
	wg.Wait()
}

func TestCloseStopsEverything(t *testing.T) {
	dir := t.TempDir()
	s, _ := newServer(t, Config{})
	var pids []int
	for i := range 3 {
		pidFile := filepath.Join(dir, strconv.Itoa(i))
		s.cfg.Command = append(slices.Clone(s.cfg.Command[:3]), "-pid-file="+pidFile)
		load(t, s, "m"+strconv.Itoa(i), nil)
		pids = append(pids, readPid(t, pidFile))
	}
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if !gone(pid) {
			t.Errorf("process %d still running after Close", pid)
		}
	}
}

// systemPython is the Python with scikit-learn: the pyenv python3 first on
// PATH in development images lacks it.
const systemPython = sdktest.Python

// TestScikitLearnServer serves a scikit-learn Pipeline trained by
// plugins/examples/sklearn/train.py (or, without it, inline) with the
// example's serve.py, through the process server. It is skipped where
// Python has no scikit-learn, unless DROVER_REQUIRE_SKLEARN=1.
func TestScikitLearnServer(t *testing.T) {
	sdktest.RequireSklearn(t)
	example, err := filepath.Abs("../examples/sklearn")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	trained := filepath.Join(dir, "trained")
	if err := os.Mkdir(trained, 0o755); err != nil {
		t.Fatal(err)
	}
	trainChurn(t, example, dir, trained)

	// As the agent's artifact cache holds it: model.pkl alone, under a
	// name of its own, the features named by the version's schema.
	cached := filepath.Join(dir, "artifact-0123abcd")
	b, err := os.ReadFile(filepath.Join(trained, "model.pkl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cached, b, 0o644); err != nil {
		t.Fatal(err)
	}
	schema := &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{
		{Name: "tenure", Datatype: "FP64", Kind: droverv1.FeatureKind_FEATURE_KIND_NUMERIC},
		{Name: "plan", Datatype: "BYTES", Kind: droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL},
		{Name: "monthly", Datatype: "FP32", Kind: droverv1.FeatureKind_FEATURE_KIND_NUMERIC},
	}}

	logger, logs := newLogger(t)
	s := New(Config{
		Command:      []string{systemPython, filepath.Join(example, "serve.py"), "--port={port}", "--artifact={artifact}", "--name={name}"},
		ReadyTimeout: 60 * time.Second,
	}, logger)
	t.Cleanup(func() { s.Close(context.Background()) })

	req := &runnerv1.PredictRequest{Rows: 4, Inputs: []*runnerv1.Tensor{
		{Name: "tenure", Datatype: "FP64", Shape: []int64{4}, Numbers: []float64{1, 60, 3, 48}},
		{Name: "plan", Datatype: "BYTES", Shape: []int64{4, 1}, Strings: []string{"basic", "pro", "basic", "never seen"}},
		{Name: "monthly", Datatype: "FP32", Shape: []int64{4}, Numbers: []float64{80, 20, 95, 30}},
	}}
	want := directPredictions(t, filepath.Join(trained, "model.pkl"), req)

	for _, tc := range []struct {
		name     string
		artifact string
		schema   *droverv1.FeatureSchema
	}{
		{"directory with model.json", trained, nil},
		{"cached model.pkl with a schema", cached, schema},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			resp, err := s.Load(t.Context(), &runnerv1.LoadRequest{Id: "churn", ArtifactPath: tc.artifact,
				Format: "sklearn-pickle", Schema: tc.schema, Params: map[string]string{"model_name": "churn"}})
			if err != nil {
				t.Fatalf("%v\nlog:\n%s", err, strings.Join(logs(), "\n"))
			}
			t.Logf("loaded in %v", time.Since(start).Round(time.Millisecond))
			defer s.Unload(context.Background(), "churn")
			if o := resp.GetOutputs(); len(o) != 2 || o[0].GetName() != "label" || o[0].GetDatatype() != "BYTES" ||
				o[1].GetName() != "probabilities" || !slices.Equal(o[1].GetShape(), []int64{-1, 2}) {
				t.Fatalf("outputs: %v", o)
			}

			req.Id = "churn"
			out, err := s.Predict(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			label, proba := out.GetOutputs()[0], out.GetOutputs()[1]
			if !slices.Equal(label.GetShape(), []int64{4}) || !slices.Equal(proba.GetShape(), []int64{4, 2}) {
				t.Fatalf("shapes: label %v, probabilities %v", label.GetShape(), proba.GetShape())
			}
			if !slices.Equal(label.GetStrings(), want.Labels) {
				t.Errorf("labels %v, scikit-learn says %v", label.GetStrings(), want.Labels)
			}
			for i, p := range proba.GetNumbers() {
				if math.Abs(p-want.Probabilities[i]) > 1e-12 {
					t.Errorf("probabilities %v, scikit-learn says %v", proba.GetNumbers(), want.Probabilities)
					break
				}
			}

			bad := &runnerv1.PredictRequest{Id: "churn", Rows: 1, Inputs: []*runnerv1.Tensor{
				{Name: "tenure", Datatype: "FP64", Shape: []int64{1}, Numbers: []float64{1}},
				{Name: "plan", Datatype: "BYTES", Shape: []int64{1}, Strings: []string{"basic"}},
			}}
			if _, err := s.Predict(t.Context(), bad); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "no input for feature monthly") {
				t.Errorf("a missing feature: %v, want ErrBadRequest naming it", err)
			}
		})
	}
}

// trainChurn writes model.pkl and model.json into out: with the example's
// train.py on a small synthetic churn data set when it is there, inline
// otherwise.
func trainChurn(t *testing.T, example, dir, out string) {
	t.Helper()
	var csv strings.Builder
	csv.WriteString("customer_id,tenure,plan,monthly,churn\n")
	plans := []string{"basic", "pro", "team"}
	for i := range 240 {
		tenure := (i * 37) % 72
		plan := plans[(i*7)%3]
		monthly := 20 + (i*53)%80
		churn := "no"
		if tenure < 12 && monthly > 50 || plan == "basic" && tenure < 24 {
			churn = "yes"
		}
		fmt.Fprintf(&csv, "c%d,%d,%s,%d,%s\n", i, tenure, plan, monthly, churn)
	}
	data := filepath.Join(dir, "churn.csv")
	if err := os.WriteFile(data, []byte(csv.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	var cmd *exec.Cmd
	how := "train.py"
	if train := filepath.Join(example, "train.py"); fileExists(train) {
		cmd = exec.Command(systemPython, train)
		cmd.Env = append(os.Environ(), "DROVER_DATASET="+data, "DROVER_OUTPUT_DIR="+out, "DROVER_TARGET=churn",
			`DROVER_PARAMS={"n_estimators": "20", "n_jobs": "1"}`, "DROVER_METRICS_FILE="+filepath.Join(dir, "metrics.json"))
	} else {
		how = "an inline LogisticRegression"
		cmd = exec.Command(systemPython, "-c", `
import csv, json, os, pickle, sys
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
data, out = sys.argv[1], sys.argv[2]
with open(data) as f:
    rows = list(csv.DictReader(f))
features = ["tenure", "plan", "monthly"]
X = np.array([[float(r["tenure"]), r["plan"], float(r["monthly"])] for r in rows], dtype=object)
y = np.array([r["churn"] for r in rows], dtype=object)
model = Pipeline([("encode", ColumnTransformer([("numeric", StandardScaler(), [0, 2]),
    ("categorical", OneHotEncoder(handle_unknown="ignore"), [1])])), ("model", LogisticRegression())]).fit(X, y)
with open(os.path.join(out, "model.pkl"), "wb") as f:
    pickle.dump(model, f)
with open(os.path.join(out, "model.json"), "w") as f:
    json.dump({"features": features, "categorical": ["plan"], "classes": [str(c) for c in model.classes_]}, f)
`, data, out)
	}
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("training: %v\n%s", err, b)
	}
	t.Logf("trained with %s in %v", how, time.Since(start).Round(time.Millisecond))
}

// prediction is what scikit-learn itself predicts for a request.
type prediction struct {
	Labels        []string  `json:"labels"`
	Probabilities []float64 `json:"probabilities"`
}

// directPredictions asks the pickled Pipeline itself for req's rows (the
// columns in model.json's order, tenure, plan, monthly).
func directPredictions(t *testing.T, pkl string, req *runnerv1.PredictRequest) prediction {
	t.Helper()
	in, _ := json.Marshal(map[string]any{"tenure": req.Inputs[0].Numbers, "plan": req.Inputs[1].Strings, "monthly": req.Inputs[2].Numbers})
	cmd := exec.Command(systemPython, "-c", `
import json, pickle, sys
import numpy as np
with open(sys.argv[1], "rb") as f:
    model = pickle.load(f)
cols = json.loads(sys.argv[2])
X = np.empty((len(cols["tenure"]), 3), dtype=object)
X[:, 0], X[:, 1], X[:, 2] = cols["tenure"], cols["plan"], cols["monthly"]
p = model.predict_proba(X)
print(json.dumps({"labels": [str(model.classes_[j]) for j in p.argmax(axis=1)], "probabilities": p.ravel().tolist()}))
`, pkl, string(in))
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("predicting with scikit-learn directly: %v", err)
	}
	var p prediction
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return p
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
