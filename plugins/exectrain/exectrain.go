package exectrain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/droverhq/drover/plugins/sdk"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
)

// DefaultKillGrace is how long a cancelled command has between SIGTERM and
// SIGKILL when Config.KillGrace is zero.
const DefaultKillGrace = 10 * time.Second

// drainTimeout bounds how long Train waits for the end of the command's
// output once the command and its process group are gone: only a process
// that left the group (setsid) can still hold the output open.
const drainTimeout = 5 * time.Second

// The variables that carry a request's champion and the columns that are
// not features (TrainRequest's champion_artifact_path, champion_format and
// ignore), each set only when the request has it.
const (
	// ChampionArtifactVar holds the champion's artifact, an absolute path.
	ChampionArtifactVar = "DROVER_CHAMPION_ARTIFACT"
	// ChampionFormatVar holds the champion's artifact format.
	ChampionFormatVar = "DROVER_CHAMPION_FORMAT"
	// IgnoreVar holds the columns that are not features, as a JSON array.
	IgnoreVar = "DROVER_IGNORE"
)

// Config is the agent's configuration of an exec trainer. None of it comes
// from the hub.
type Config struct {
	// Command is the program and its arguments, e.g. {"python3", "train.py"}.
	// A program name without a slash is looked up in the agent's PATH.
	Command []string
	// Dir is the command's working directory; empty means the agent's.
	Dir string
	// Env holds extra KEY=VALUE variables for the command. They override
	// the inherited ones but not the DROVER_* variables of the contract.
	Env []string
	// Timeout bounds a training run; zero means none.
	Timeout time.Duration
	// Format is the artifact format the result declares when the metrics
	// file names none, e.g. "sklearn-pickle".
	Format string
	// KillGrace is how long a cancelled command has to exit after SIGTERM
	// before its process group is killed; zero means DefaultKillGrace.
	KillGrace time.Duration
}

// Trainer runs Config.Command for every training request. It implements
// sdk.Trainer; it is safe for concurrent use, each Train running its own
// process.
type Trainer struct {
	cfg    Config
	logger *slog.Logger
	drain  time.Duration // drainTimeout, shorter in tests
}

var _ sdk.Trainer = (*Trainer)(nil)

// New returns a Trainer that runs cfg.Command. A nil logger discards the
// trainer's own logs (the command's output goes to Train's send, not
// there).
func New(cfg Config, logger *slog.Logger) *Trainer {
	cfg.Command = slices.Clone(cfg.Command)
	cfg.Env = slices.Clone(cfg.Env)
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = DefaultKillGrace
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Trainer{cfg: cfg, logger: logger, drain: drainTimeout}
}

// RunError is a training run that failed once its command had started:
// what went wrong, and the last lines the command wrote.
type RunError struct {
	// Command is the configured command, for messages.
	Command string
	// Err is the cause: the command's exit, a problem with the metrics
	// file or the artifact, or why the run was stopped (the context's
	// cause: context.Canceled, a timeout wrapping
	// context.DeadlineExceeded, or an error from send).
	Err error
	// ExitCode is the command's exit status, or -1 when it did not exit by
	// itself (a signal killed it).
	ExitCode int
	// Tail holds the command's last lines of output, oldest first, each cut
	// to a few hundred bytes.
	Tail []string
}

func (e *RunError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "exectrain: %s: %v", e.Command, e.Err)
	if len(e.Tail) > 0 {
		b.WriteString("; its last lines of output:")
		for _, l := range e.Tail {
			b.WriteString("\n\t")
			b.WriteString(l)
		}
	}
	return b.String()
}

func (e *RunError) Unwrap() error { return e.Err }

// Train runs the command on req's data set and streams its output through
// send: a log_line event per line, progress events for its directives,
// and, once it has exited 0 and its metrics file checks out, the result.
// It returns when the command and everything it started are gone.
func (t *Trainer) Train(ctx context.Context, req *runnerv1.TrainRequest, send func(*runnerv1.TrainResponse) error) error {
	if len(t.cfg.Command) == 0 {
		return errors.New("exectrain: no command configured")
	}
	run, err := t.prepare(req)
	if err != nil {
		return fmt.Errorf("exectrain: %w", err)
	}
	command := strings.Join(t.cfg.Command, " ")

	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	if t.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, t.cfg.Timeout,
			fmt.Errorf("timed out after %s: %w", t.cfg.Timeout, context.DeadlineExceeded))
		defer cancel()
	}

	// One pipe for stdout and stderr keeps their lines in the order written.
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("exectrain: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(t.cfg.Command[0], t.cfg.Command[1:]...)
	cmd.Dir = t.cfg.Dir
	cmd.Env = run.env
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	w.Close() // the command holds its own copy; ours would keep the pipe from ending
	if err != nil {
		return fmt.Errorf("exectrain: starting %s: %w", command, err)
	}
	pgid := cmd.Process.Pid
	started := time.Now()
	t.logger.Info("training command started", "command", command, "pid", pgid,
		"dataset", run.dataset, "output_dir", run.outputDir)

	out := &output{send: send, failed: func(err error) {
		stop(fmt.Errorf("sending a training event: %w", err))
	}}
	waitErr, readErr := t.supervise(ctx, cmd, r, out)

	fail := func(err error) error {
		code := -1
		if cmd.ProcessState != nil {
			code = cmd.ProcessState.ExitCode()
		}
		t.logger.Info("training command failed", "command", command, "pid", pgid, "exit_code", code,
			"duration", time.Since(started).Round(time.Millisecond), "err", err)
		return &RunError{Command: command, Err: err, ExitCode: code, Tail: out.lastLines()}
	}
	switch {
	case ctx.Err() != nil:
		return fail(fmt.Errorf("stopped: %w", context.Cause(ctx)))
	case waitErr != nil:
		return fail(exitCause(waitErr))
	case readErr != nil:
		return fail(fmt.Errorf("reading its output: %w", readErr))
	}
	result, err := readResult(run.outputDir, t.cfg.Format)
	if err != nil {
		return fail(err)
	}
	t.logger.Info("training command succeeded", "command", command, "pid", pgid,
		"duration", time.Since(started).Round(time.Millisecond), "artifact", result.GetArtifactPath())
	return send(&runnerv1.TrainResponse{Event: &runnerv1.TrainResponse_Result{Result: result}})
}

// supervise reads the started command's output into out while it runs,
// stops it if ctx ends, and returns once it has exited and its output has
// ended: the error of its Wait, and of reading its output.
func (t *Trainer) supervise(ctx context.Context, cmd *exec.Cmd, r *os.File, out *output) (waitErr, readErr error) {
	pgid := cmd.Process.Pid
	readDone := make(chan error, 1)
	go func() { readDone <- out.copy(r) }()

	exited := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t.stopOnCancel(ctx, pgid, exited)
	}()
	waitErr = cmd.Wait()
	close(exited)
	<-stopped
	// Whatever the command left running in its group goes with it.
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err == nil {
		t.logger.Warn("killed processes the training command left running", "pgid", pgid)
	}

	drain := time.NewTimer(t.drain)
	defer drain.Stop()
	select {
	case readErr = <-readDone:
	case <-drain.C:
		t.logger.Warn("a process outside the training command's group still holds its output; no longer reading it",
			"pgid", pgid, "waited", t.drain)
		_ = r.SetReadDeadline(time.Now())
		if readErr = <-readDone; errors.Is(readErr, os.ErrDeadlineExceeded) {
			readErr = nil
		}
	}
	return waitErr, readErr
}

// stopOnCancel stops the command's process group when ctx ends before the
// command exits: SIGTERM, then SIGKILL if the command has not exited within
// the grace period.
func (t *Trainer) stopOnCancel(ctx context.Context, pgid int, exited <-chan struct{}) {
	select {
	case <-exited:
		return
	case <-ctx.Done():
	}
	t.logger.Info("stopping the training command", "pgid", pgid, "cause", context.Cause(ctx))
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	grace := time.NewTimer(t.cfg.KillGrace)
	defer grace.Stop()
	select {
	case <-exited:
	case <-grace.C:
		t.logger.Warn("the training command outlived its grace period; killing it", "pgid", pgid, "grace", t.cfg.KillGrace)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

// exitCause says how a command that did not succeed ended.
func exitCause(err error) error {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return err
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Errorf("killed by signal %d (%s)", int(ws.Signal()), ws.Signal())
	}
	return fmt.Errorf("exited with status %d", ee.ExitCode())
}

// run is what one training run needs before its command starts.
type run struct {
	dataset   string // absolute
	outputDir string // absolute
	env       []string
}

// prepare checks req, creates the output directory, removes a stale
// metrics file and builds the command's environment.
func (t *Trainer) prepare(req *runnerv1.TrainRequest) (*run, error) {
	if req.GetDatasetPath() == "" {
		return nil, errors.New("the request names no data set")
	}
	if req.GetOutputDir() == "" {
		return nil, errors.New("the request names no output directory")
	}
	// Absolute, because the command runs in Config.Dir, not the agent's
	// working directory.
	dataset, err := filepath.Abs(req.GetDatasetPath())
	if err != nil {
		return nil, fmt.Errorf("data set: %w", err)
	}
	if _, err := os.Stat(dataset); err != nil {
		return nil, fmt.Errorf("data set: %w", err)
	}
	outputDir, err := filepath.Abs(req.GetOutputDir())
	if err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	if err := os.MkdirAll(outputDir, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	metricsFile := filepath.Join(outputDir, MetricsFile)
	if err := os.Remove(metricsFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing the previous metrics file: %w", err)
	}

	env := make([]string, 0, 16)
	for _, k := range []string{"PATH", "HOME", "LANG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	env = append(env, "PYTHONUNBUFFERED=1")
	env = append(env, t.cfg.Env...)

	params := req.GetParams()
	if params == nil {
		params = map[string]string{}
	}
	paramsJSON, err := json.Marshal(params)
	if err != nil {
		return nil, fmt.Errorf("params: %w", err)
	}
	env = append(env,
		"DROVER_DATASET="+dataset,
		"DROVER_OUTPUT_DIR="+outputDir,
		"DROVER_TARGET="+req.GetTarget(),
		"DROVER_PARAMS="+string(paramsJSON),
		"DROVER_METRICS_FILE="+metricsFile,
	)
	if s := req.GetSchema(); s != nil {
		b, err := protojson.Marshal(s)
		if err != nil {
			return nil, fmt.Errorf("schema: %w", err)
		}
		env = append(env, "DROVER_SCHEMA="+string(b))
	}
	if c := req.GetChampionArtifactPath(); c != "" {
		champion, err := filepath.Abs(c)
		if err != nil {
			return nil, fmt.Errorf("the champion's artifact: %w", err)
		}
		env = append(env, ChampionArtifactVar+"="+champion, ChampionFormatVar+"="+req.GetChampionFormat())
	}
	if ignore := req.GetIgnore(); len(ignore) > 0 {
		b, err := json.Marshal(ignore)
		if err != nil {
			return nil, fmt.Errorf("ignore: %w", err)
		}
		env = append(env, IgnoreVar+"="+string(b))
	}
	byVar := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(params)) {
		v, err := ParamVar(name)
		if err != nil {
			return nil, err
		}
		if other, dup := byVar[v]; dup {
			return nil, fmt.Errorf("params %q and %q would both be %s", other, name, v)
		}
		byVar[v] = name
		env = append(env, v+"="+params[name])
	}
	return &run{dataset: dataset, outputDir: outputDir, env: env}, nil
}

// ParamVar returns the environment variable that carries the parameter
// name: DROVER_PARAM_ and the name upper-cased, with every character other
// than an ASCII letter or digit replaced by "_" (learning-rate becomes
// DROVER_PARAM_LEARNING_RATE).
func ParamVar(name string) (string, error) {
	if name == "" {
		return "", errors.New("a parameter has an empty name")
	}
	b := []byte("DROVER_PARAM_")
	for _, c := range name {
		switch {
		case c >= 'a' && c <= 'z':
			b = append(b, byte(c-'a'+'A'))
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			b = append(b, byte(c))
		default:
			b = append(b, '_')
		}
	}
	return string(b), nil
}
