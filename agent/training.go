package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/agent/store"
	"github.com/droverhq/drover/internal/training"
	"github.com/droverhq/drover/plugins/exectrain"
	"github.com/droverhq/drover/plugins/native"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Retraining: the hub hands the agent training tasks and export tasks in
// its desired state.
//
// A training task (job id and attempt) runs in a goroutine of its own,
// from the desired state that names it until it ends or the desired state
// stops naming it (the job was cancelled or went elsewhere), or its
// deadline passes: it downloads the data set and the champion through the
// verified artifact cache into a work directory (DataDir/training/<job
// id>-<attempt>, removed at the end), trains with the native runner, one
// of the agent's exec trainers (--trainer NAME=COMMAND) or a runner
// plugin that trains (by its Describe name; an exec trainer of the same
// name wins) through package training — the code path of `drover
// train` — builds the reference
// profile, uploads the artifact, and reports: progress as it goes (log
// lines and metric points batched, at most a report a second) and the
// result or the failure at the end.
//
// The final report goes into the outbox in the same transaction as a
// marker (store key training/<job id>/<attempt>), so that an agent that
// restarts with the task still in its stored desired state does not train
// again. A task interrupted by a crash or a shutdown has no marker and is
// simply started again. Markers of tasks the desired state no longer
// names are removed.
//
// An export task hands in the labelled rows the agent kept for a model
// (the journal labelled/<model>, the CSV of GET /v1/labelled): uploaded as
// a blob and reported once per job (marker export/<job id>).

// Retraining's bounds and timings.
const (
	// trainingFlushInterval is how often a running task's log lines and
	// metric points go to the hub, at most.
	trainingFlushInterval = time.Second
	// maxReportLines and maxReportPoints bound one progress report;
	// what comes beyond in one interval is dropped and counted.
	maxReportLines  = 100
	maxReportPoints = 1000
	// maxConcurrentTraining is how many tasks train at once; the hub
	// limits them too.
	maxConcurrentTraining = 4
	// trainingKillGrace is how long a stopped exec trainer has between
	// SIGTERM and SIGKILL.
	trainingKillGrace = exectrain.DefaultKillGrace
	// maxFailureMessage bounds a failed task's message.
	maxFailureMessage = 4096
	// trainingMarkers and exportMarkers prefix the store keys that mark
	// a task as reported.
	trainingMarkers = "training/"
	exportMarkers   = "export/"
)

// errTaskWithdrawn stops a task the desired state no longer names.
var errTaskWithdrawn = errors.New("the job is no longer in this agent's desired state (cancelled, or moved to another agent)")

// trainerNames returns the runners an agent with these exec trainers and
// training plugins (by runner name) can train with: native first, then the
// others by name, each once.
func trainerNames(trainers map[string][]string, plugins []string) []string {
	names := slices.Collect(maps.Keys(trainers))
	for _, p := range plugins {
		if p != training.NativeRunner {
			names = append(names, p)
		}
	}
	slices.Sort(names)
	return append([]string{training.NativeRunner}, slices.Compact(names)...)
}

// logShadowedTrainers says, once at the agent's start, which training
// plugins are not used for their name: native is always the built-in
// runner, and an exec trainer of the same name wins over a plugin.
func logShadowedTrainers(logger *slog.Logger, trainers map[string][]string, plugins *pluginHost) {
	for _, name := range plugins.trainerNames() {
		hp := plugins.forTrainer(name)
		switch _, exec := trainers[name]; {
		case name == training.NativeRunner:
			logger.Warn("a runner plugin trains as native, the built-in runner's name; retraining jobs for native train with the built-in runner",
				"plugin", hp.p.File)
		case exec:
			logger.Warn("a runner plugin trains under the name of an exec trainer (--trainer); retraining jobs for it train with the exec trainer",
				"runner", name, "plugin", hp.p.File, "command", strings.Join(trainers[name], " "))
		}
	}
}

// checkTrainers checks the exec trainers' configuration.
func checkTrainers(trainers map[string][]string) error {
	for name, command := range trainers {
		switch {
		case name == "" || strings.ContainsAny(name, " \t\n="):
			return fmt.Errorf("trainer %q: a name is one word without '='", name)
		case name == training.NativeRunner:
			return fmt.Errorf("trainer %q: native is the built-in runner; give the exec trainer another name", name)
		case len(command) == 0:
			return fmt.Errorf("trainer %s: no command", name)
		}
	}
	return nil
}

// fetchFunc makes a blob available on disk, verified, and returns its path.
type fetchFunc func(ctx context.Context, ref *droverv1.BlobRef) (string, error)

// uploadFunc uploads a file as a blob to the hub and returns its reference.
type uploadFunc func(ctx context.Context, path string) (*droverv1.BlobRef, error)

// taskRunner runs one training task from start to final report. It knows
// nothing of the hub: blobs come through fetch and go through upload, and
// progress reports go to send.
type taskRunner struct {
	fetch  fetchFunc
	upload uploadFunc
	// send takes a progress report (not the final one, which run returns).
	send func(*droverv1.TrainingReport)
	// trainers returns the exec trainers by name, as configured now.
	trainers func() map[string][]string
	// plugins hosts the runner plugins, the training ones among them (by
	// runner name, after the exec trainers); nil without a plugin
	// directory.
	plugins *pluginHost
	// dir holds the tasks' work directories.
	dir        string
	logger     *slog.Logger
	now        func() time.Time
	flushEvery time.Duration
	killGrace  time.Duration
}

// run runs the task and returns its final report: SUCCEEDED with the
// result, or FAILED with why. When ctx ends, the training stops (an exec
// trainer's process group is killed) and the report says why, as ctx's
// cause.
func (r *taskRunner) run(ctx context.Context, t *droverv1.TrainingTask) *droverv1.TrainingReport {
	logger := r.logger.With("job", t.GetJobId(), "attempt", t.GetAttempt(), "model", t.GetModel(), "runner", t.GetRunner())
	b := newReportBatcher(t, r.now, r.send)
	stop := b.every(ctx, r.flushEvery)
	started := r.now()
	logger.Info("training task started")
	res, err := r.train(ctx, t, b, logger)
	stop()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("stopped: %w", context.Cause(ctx))
		}
		msg := failureMessage(err)
		logger.Warn("training task failed", "duration", r.now().Sub(started).Round(time.Millisecond), "err", msg)
		return b.final(droverv1.TrainingPhase_TRAINING_PHASE_FAILED, msg, nil)
	}
	logger.Info("training task succeeded", "duration", r.now().Sub(started).Round(time.Millisecond),
		"artifact", res.GetArtifact().GetDigest(), "metrics", res.GetMetrics())
	return b.final(droverv1.TrainingPhase_TRAINING_PHASE_SUCCEEDED, "", res)
}

// failureMessage is an error as a report's message: valid UTF-8, bounded.
func failureMessage(err error) string {
	msg := strings.ToValidUTF8(err.Error(), "\uFFFD")
	if len(msg) > maxFailureMessage {
		cut := maxFailureMessage
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + " [...]"
	}
	return msg
}

// train does the work of run.
func (r *taskRunner) train(ctx context.Context, t *droverv1.TrainingTask, b *reportBatcher, logger *slog.Logger) (*droverv1.TrainingResult, error) {
	switch {
	case t.GetJobId() == "":
		return nil, errors.New("the task has no job id")
	case t.GetDataset().GetDigest() == "":
		return nil, errors.New("the task names no data set")
	case t.GetTarget() == "":
		return nil, errors.New("the task names no target column")
	}
	runner := cmp.Or(t.GetRunner(), training.NativeRunner)
	isNative := runner == training.NativeRunner
	// The runner: native, else an exec trainer, else a training plugin.
	var command []string
	var plugin *hostedPlugin
	if !isNative {
		var ok bool
		trainers := r.trainers()
		if command, ok = trainers[runner]; !ok {
			if plugin = r.plugins.forTrainer(runner); plugin == nil {
				return nil, fmt.Errorf("this agent has no trainer %q; it has %s (exec trainers are configured with --trainer NAME=COMMAND, training plugins come from --plugin-dir)",
					runner, strings.Join(trainerNames(trainers, r.plugins.trainerNames()), ", "))
			}
		}
	}
	var opts native.TrainOptions
	params := maps.Clone(t.GetParams())
	if isNative {
		var err error
		if opts, params, err = training.NativeOptions(t.GetParams()); err != nil {
			return nil, fmt.Errorf("training: %w", err)
		}
	}

	b.setPhase(droverv1.TrainingPhase_TRAINING_PHASE_DOWNLOADING)
	// Absolute: a plugin does not share the agent's working directory.
	work, err := filepath.Abs(filepath.Join(r.dir, workDirName(t)))
	if err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	if err := os.RemoveAll(work); err != nil { // a crashed attempt's
		return nil, fmt.Errorf("work directory: %w", err)
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	defer func() {
		if err := os.RemoveAll(work); err != nil {
			logger.Warn("cannot remove the training work directory", "dir", work, "err", err)
		}
	}()
	// Copies, not the cache's files: a training command may write to what
	// it is given, and the data set needs its .csv to be read by name.
	dataset := filepath.Join(work, "dataset.csv")
	if err := r.fetchInto(ctx, t.GetDataset(), dataset); err != nil {
		return nil, fmt.Errorf("downloading the data set %s: %w", t.GetDataset().GetDigest(), err)
	}
	var champion string
	if ref := t.GetChampionArtifact(); ref.GetDigest() != "" {
		champion = filepath.Join(work, "champion", "artifact")
		if err := r.fetchInto(ctx, ref, champion); err != nil {
			return nil, fmt.Errorf("downloading the champion (version %d) %s: %w", t.GetChampionVersion(), ref.GetDigest(), err)
		}
	}

	b.setPhase(droverv1.TrainingPhase_TRAINING_PHASE_TRAINING)
	out := filepath.Join(work, "out")
	var res *training.Result
	obs := training.Observer{
		Log:      b.log,
		Progress: func(p *runnerv1.TrainProgress) { b.progress(p.GetFraction(), p.GetStage()) },
		Point:    b.point,
	}
	switch {
	case isNative:
		var champ *native.Model
		switch {
		case champion == "":
		case t.GetChampionFormat() == training.NativeFormat:
			if champ, err = training.LoadNativeArtifact(champion); err != nil {
				return nil, fmt.Errorf("the champion (version %d): %w", t.GetChampionVersion(), err)
			}
		default:
			b.log(fmt.Sprintf("the champion (version %d) is %s: the native runner scores only %s champions, so it is not scored here",
				t.GetChampionVersion(), t.GetChampionFormat(), training.NativeFormat))
		}
		b.progress(0, "training")
		res, err = training.TrainNative(ctx, training.NativeRequest{
			Dataset: dataset, Target: t.GetTarget(), Ignore: t.GetIgnore(), Schema: t.GetSchema(),
			OutputDir: out, Options: opts, Champion: champ, Log: b.log,
		})
		if err == nil {
			b.progress(1, "trained")
			for _, name := range slices.Sorted(maps.Keys(res.Metrics)) {
				b.point(name, res.Metrics[name], 0) // as drover train --track records them
			}
		}
	case plugin != nil:
		res, err = r.trainPlugin(ctx, plugin, &runnerv1.TrainRequest{
			DatasetPath: dataset, OutputDir: out, Params: params, Schema: t.GetSchema(), Target: t.GetTarget(), Ignore: t.GetIgnore(),
		}, champion, t.GetChampionFormat(), obs)
	default:
		req := training.ExecRequest{
			Config:  exectrain.Config{Command: command, KillGrace: r.killGrace},
			Dataset: dataset, OutputDir: out, Target: t.GetTarget(), Ignore: t.GetIgnore(), Params: params, Schema: t.GetSchema(),
			Logger: logger,
		}
		if champion != "" {
			req.ChampionArtifact, req.ChampionFormat = champion, t.GetChampionFormat()
		}
		res, err = training.TrainExec(ctx, req, obs)
	}
	if err != nil {
		return nil, fmt.Errorf("training: %w", err)
	}

	b.setPhase(droverv1.TrainingPhase_TRAINING_PHASE_EVALUATING)
	metrics, dropped := training.FiniteOnly(res.Metrics)
	if len(dropped) > 0 {
		b.log(fmt.Sprintf("metrics %s are not finite numbers; they are not reported", strings.Join(dropped, ", ")))
	}
	result := &droverv1.TrainingResult{Format: res.Format, Metrics: metrics, Params: params,
		TrainRows: uint64(res.TrainRows), HoldoutRows: uint64(res.HoldoutRows)}
	if res.ChampionMetrics != nil {
		result.ChampionMetrics, _ = training.FiniteOnly(res.ChampionMetrics)
	}
	rows := 0
	if result.ReferenceProfile = res.ReferenceProfile; result.ReferenceProfile == nil {
		if result.ReferenceProfile, rows, err = training.Profile(dataset, t.GetTarget(), t.GetIgnore(), t.GetSchema(), res.Format, res.Artifact); err != nil {
			return nil, fmt.Errorf("building the reference profile: %w", err)
		}
	}
	if !isNative {
		// An exec command or a plugin says how many rows it used, if it
		// does, in its metrics.
		result.HoldoutRows = rowCount(res.Metrics["holdout_rows"])
		if result.TrainRows = rowCount(res.Metrics["train_rows"]); result.TrainRows == 0 && rows > 0 && uint64(rows) > result.HoldoutRows {
			result.TrainRows = uint64(rows) - result.HoldoutRows
		}
	}

	b.setPhase(droverv1.TrainingPhase_TRAINING_PHASE_UPLOADING)
	if result.Artifact, err = r.upload(ctx, res.Artifact); err != nil {
		return nil, fmt.Errorf("uploading the artifact: %w", err)
	}
	return result, nil
}

// trainPlugin trains through a training plugin, given the champion's
// artifact (if not empty) and format to score on the same hold-out, and
// checks that the artifact it reports is a regular file in the output
// directory, with a format.
func (r *taskRunner) trainPlugin(ctx context.Context, plugin *hostedPlugin, req *runnerv1.TrainRequest, champion, championFormat string,
	obs training.Observer) (*training.Result, error) {
	if champion != "" {
		req.ChampionArtifactPath, req.ChampionFormat = champion, championFormat
	}
	// The runner protocol has the runner write into the output directory;
	// it need not create it.
	if err := os.MkdirAll(req.GetOutputDir(), 0o700); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	res, err := training.TrainWith(ctx, plugin, req, obs)
	if err != nil {
		return nil, err
	}
	if res.Format == "" {
		return nil, fmt.Errorf("%s reported an artifact without a format", plugin)
	}
	if res.Artifact, err = artifactInside(req.GetOutputDir(), res.Artifact); err != nil {
		return nil, fmt.Errorf("%s: %w", plugin, err)
	}
	return res, nil
}

// artifactInside checks that a runner's artifact, a path absolute or
// relative to the output directory dir, is a regular file inside dir
// (neither ".." nor a symbolic link out of it: the agent uploads it), and
// returns its path.
func artifactInside(dir, artifact string) (string, error) {
	if artifact == "" {
		return "", errors.New("it reported no artifact")
	}
	rel := filepath.Clean(artifact)
	if filepath.IsAbs(artifact) {
		var err error
		if rel, err = filepath.Rel(dir, artifact); err != nil {
			rel = artifact
		}
	}
	if !filepath.IsLocal(rel) {
		return "", fmt.Errorf("its artifact %s is outside the output directory %s", artifact, dir)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", fmt.Errorf("output directory: %w", err)
	}
	defer root.Close()
	fi, err := root.Lstat(rel)
	switch {
	case err != nil:
		return "", fmt.Errorf("its artifact %s: %w", artifact, err)
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("its artifact %s is not a regular file in the output directory (%s)", artifact, fi.Mode().Type())
	}
	return filepath.Join(dir, rel), nil
}

// rowCount reads a row count reported as a metric: 0 unless a whole
// number that fits.
func rowCount(v float64) uint64 {
	if v >= 0 && v < 1<<53 && v == math.Trunc(v) {
		return uint64(v)
	}
	return 0
}

// fetchInto fetches a blob through r.fetch and copies it to path.
func (r *taskRunner) fetchInto(ctx context.Context, ref *droverv1.BlobRef, path string) error {
	src, err := r.fetch(ctx, ref)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return copyFile(src, path)
}

// copyFile copies src to a new file dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// workDirName is a task's work directory under DataDir/training: its job
// id, made safe for a file name, and its attempt.
func workDirName(t *droverv1.TrainingTask) string {
	id := strings.Map(func(c rune) rune {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
			return c
		}
		return '_'
	}, t.GetJobId())
	if len(id) > 100 {
		id = id[:100]
	}
	return fmt.Sprintf("%s-%d", id, t.GetAttempt())
}

// reportBatcher gathers a running task's log lines, progress and metric
// points, and hands them to send as one progress report per flush.
type reportBatcher struct {
	jobID   string
	attempt uint32
	now     func() time.Time

	mu            sync.Mutex // also serialises send, so that reports go in order
	send          func(*droverv1.TrainingReport)
	phase         droverv1.TrainingPhase
	fraction      float64
	stage         string
	moved         bool // fraction or stage changed since the last report
	lines         []string
	droppedLines  int
	points        []*droverv1.MetricPoint
	droppedPoints int
}

func newReportBatcher(t *droverv1.TrainingTask, now func() time.Time, send func(*droverv1.TrainingReport)) *reportBatcher {
	return &reportBatcher{jobID: t.GetJobId(), attempt: t.GetAttempt(), now: now, send: send}
}

// log adds a line of output.
func (b *reportBatcher) log(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.lines) < maxReportLines {
		b.lines = append(b.lines, line)
	} else {
		b.droppedLines++
	}
}

// progress notes how far training is.
func (b *reportBatcher) progress(fraction float64, stage string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if fraction != b.fraction || stage != b.stage {
		b.fraction, b.stage, b.moved = fraction, stage, true
	}
}

// point adds a metric point; one that is not a finite number is dropped,
// as the hub would refuse it.
func (b *reportBatcher) point(name string, value float64, step int64) {
	if math.IsNaN(value) || math.IsInf(value, 0) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.points) < maxReportPoints {
		b.points = append(b.points, &droverv1.MetricPoint{Name: name, Value: value, Step: step, Time: timestamppb.New(b.now())})
	} else {
		b.droppedPoints++
	}
}

// take returns a report of the phase with what gathered since the last
// one, and starts afresh. b.mu is held.
func (b *reportBatcher) take() *droverv1.TrainingReport {
	lines := b.lines
	if b.droppedLines > 0 || b.droppedPoints > 0 {
		// The last line says what did not fit.
		dropped := b.droppedLines
		if len(lines) >= maxReportLines {
			lines, dropped = lines[:maxReportLines-1], dropped+1
		}
		var what []string
		if dropped > 0 {
			what = append(what, fmt.Sprintf("%d lines of output", dropped))
		}
		if b.droppedPoints > 0 {
			what = append(what, fmt.Sprintf("%d metric points", b.droppedPoints))
		}
		lines = append(lines, fmt.Sprintf("[drover: %s not sent: a report carries at most %d lines and %d points, one report a second]",
			strings.Join(what, " and "), maxReportLines, maxReportPoints))
	}
	r := &droverv1.TrainingReport{JobId: b.jobID, Attempt: b.attempt, Phase: b.phase, Fraction: b.fraction, Stage: b.stage,
		LogLines: lines, Points: b.points}
	b.lines, b.points, b.droppedLines, b.droppedPoints, b.moved = nil, nil, 0, 0, false
	return r
}

// pending reports whether anything is new since the last report. b.mu is
// held.
func (b *reportBatcher) pending() bool {
	return len(b.lines) > 0 || len(b.points) > 0 || b.droppedLines > 0 || b.droppedPoints > 0 || b.moved
}

// flush sends a report if anything is new since the last.
func (b *reportBatcher) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending() {
		b.send(b.take())
	}
}

// setPhase reports what gathered in the phase it leaves, if anything, and
// the new phase, at once.
func (b *reportBatcher) setPhase(p droverv1.TrainingPhase) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending() && b.phase != p && b.phase != droverv1.TrainingPhase_TRAINING_PHASE_UNSPECIFIED {
		b.send(b.take())
	}
	b.phase = p
	b.send(b.take())
}

// final returns the final report, with what gathered since the last one.
func (b *reportBatcher) final(p droverv1.TrainingPhase, msg string, res *droverv1.TrainingResult) *droverv1.TrainingReport {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.phase = p
	if p == droverv1.TrainingPhase_TRAINING_PHASE_SUCCEEDED {
		b.fraction = 1
	}
	r := b.take()
	r.Message, r.Result = msg, res
	return r
}

// every flushes every interval until ctx ends or the returned function is
// called; that function returns once the flushing has stopped.
func (b *reportBatcher) every(ctx context.Context, interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				b.flush()
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// retrainer runs the training and export tasks of the desired state.
type retrainer struct {
	store  *store.Store
	runner *taskRunner
	// export hands in a model's labelled rows for an export task.
	export func(context.Context, *droverv1.ExportTask) *droverv1.LabelledExport
	logger *slog.Logger
	now    func() time.Time

	mu        sync.Mutex
	ctx       context.Context        // the agent's run; nil until begin
	pending   *droverv1.DesiredState // a desired state that came before begin
	running   map[string]context.CancelCauseFunc
	exporting map[string]bool
	slots     chan struct{} // maxConcurrentTraining
	wg        sync.WaitGroup
}

func newRetrainer(st *store.Store, runner *taskRunner, export func(context.Context, *droverv1.ExportTask) *droverv1.LabelledExport,
	logger *slog.Logger, now func() time.Time) *retrainer {
	return &retrainer{store: st, runner: runner, export: export, logger: logger, now: now,
		running: map[string]context.CancelCauseFunc{}, exporting: map[string]bool{}, slots: make(chan struct{}, maxConcurrentTraining)}
}

func trainingMarker(t *droverv1.TrainingTask) string {
	return fmt.Sprintf("%s%s/%d", trainingMarkers, t.GetJobId(), t.GetAttempt())
}

func exportMarker(t *droverv1.ExportTask) string { return exportMarkers + t.GetJobId() }

// begin starts running tasks, until ctx ends: those of a desired state set
// before, and then of each one set. What a crash left of work
// directories is removed first.
func (m *retrainer) begin(ctx context.Context) {
	if err := os.RemoveAll(m.runner.dir); err != nil {
		m.logger.Warn("cannot remove old training work directories", "dir", m.runner.dir, "err", err)
	}
	if err := os.MkdirAll(m.runner.dir, 0o700); err != nil {
		m.logger.Error("cannot create the training work directory", "dir", m.runner.dir, "err", err)
	}
	m.mu.Lock()
	m.ctx = ctx
	d := m.pending
	m.pending = nil
	m.mu.Unlock()
	if d != nil {
		m.sync(d)
	}
}

// wait returns once every task has ended (they end when the agent's
// context does).
func (m *retrainer) wait() { m.wg.Wait() }

// sync converges on a desired state: it starts the tasks it names that
// neither run nor have been reported, stops those it no longer names, and
// forgets the markers of tasks it no longer names.
func (m *retrainer) sync(d *droverv1.DesiredState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx == nil {
		m.pending = d
		return
	}
	if m.ctx.Err() != nil {
		return // stopping
	}
	keep := map[string]bool{}
	for _, t := range d.GetTraining() {
		key := trainingMarker(t)
		keep[key] = true
		if _, ok := m.running[key]; ok || m.reported(key) {
			continue
		}
		m.startTraining(key, t)
	}
	for key, cancel := range m.running {
		if !keep[key] {
			cancel(errTaskWithdrawn)
		}
	}
	for _, t := range d.GetExports() {
		key := exportMarker(t)
		keep[key] = true
		if m.exporting[key] || m.reported(key) {
			continue
		}
		m.startExport(key, t)
	}
	for _, prefix := range []string{trainingMarkers, exportMarkers} {
		names, err := m.store.Names(prefix)
		if err != nil {
			m.logger.Warn("cannot list the task markers", "err", err)
			continue
		}
		for _, name := range names {
			if !keep[name] {
				if err := m.store.Delete(name); err != nil {
					m.logger.Warn("cannot remove a task marker", "marker", name, "err", err)
				}
			}
		}
	}
}

// reported reports whether a task's final report is in the outbox (or
// delivered) already.
func (m *retrainer) reported(key string) bool {
	_, err := m.store.Get(key)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		m.logger.Warn("cannot read a task marker; running the task", "marker", key, "err", err)
	}
	return err == nil
}

// startTraining runs a training task in a goroutine. m.mu is held.
func (m *retrainer) startTraining(key string, t *droverv1.TrainingTask) {
	ctx, cancel := context.WithCancelCause(m.ctx)
	m.running[key] = cancel
	stopAtDeadline := func() bool { return false }
	if dl := t.GetDeadline(); dl != nil {
		deadline := dl.AsTime()
		timer := time.AfterFunc(deadline.Sub(m.now()), func() {
			cancel(fmt.Errorf("the job's deadline (%s) passed", deadline.UTC().Format(time.RFC3339)))
		})
		stopAtDeadline = timer.Stop
	}
	m.wg.Go(func() {
		defer stopAtDeadline()
		defer cancel(nil)
		var final *droverv1.TrainingReport
		select {
		case m.slots <- struct{}{}:
			final = m.runner.run(ctx, t)
			<-m.slots
		case <-ctx.Done():
			final = &droverv1.TrainingReport{JobId: t.GetJobId(), Attempt: t.GetAttempt(),
				Phase: droverv1.TrainingPhase_TRAINING_PHASE_FAILED, Message: failureMessage(fmt.Errorf("stopped before it started: %w", context.Cause(ctx)))}
		}
		m.finish(ctx, key, final)
	})
}

// finish records a training task's final report: with its marker, unless
// the agent is stopping (the task runs again when it starts) or the task
// was withdrawn (nothing to remember).
func (m *retrainer) finish(ctx context.Context, key string, final *droverv1.TrainingReport) {
	defer func() {
		m.mu.Lock()
		delete(m.running, key)
		m.mu.Unlock()
	}()
	report := &droverv1.Report{Body: &droverv1.Report_Training{Training: final}}
	switch {
	case final.GetPhase() == droverv1.TrainingPhase_TRAINING_PHASE_FAILED && m.ctx.Err() != nil:
		m.logger.Info("training task interrupted by the agent's stop; it starts again with the agent", "job", final.GetJobId(), "attempt", final.GetAttempt())
		return
	case final.GetPhase() == droverv1.TrainingPhase_TRAINING_PHASE_FAILED && errors.Is(context.Cause(ctx), errTaskWithdrawn):
		if err := m.store.Append(m.now(), report); err != nil {
			m.logger.Error("cannot store a report", "err", err)
		}
		return
	}
	b, err := proto.Marshal(final)
	if err == nil {
		err = m.store.AppendAndPut(m.now(), key, b, report)
	}
	if err != nil {
		m.logger.Error("cannot store a training task's final report", "job", final.GetJobId(), "attempt", final.GetAttempt(), "err", err)
	}
}

// startExport runs an export task in a goroutine. m.mu is held.
func (m *retrainer) startExport(key string, t *droverv1.ExportTask) {
	m.exporting[key] = true
	ctx := m.ctx
	m.wg.Go(func() {
		defer func() {
			m.mu.Lock()
			delete(m.exporting, key)
			m.mu.Unlock()
		}()
		e := m.export(ctx, t)
		if ctx.Err() != nil {
			return // the agent is stopping: it exports again when it starts
		}
		b, err := proto.Marshal(e)
		if err == nil {
			err = m.store.AppendAndPut(m.now(), key, b, &droverv1.Report{Body: &droverv1.Report_Export{Export: e}})
		}
		if err != nil {
			m.logger.Error("cannot store an export report", "job", t.GetJobId(), "err", err)
		}
	})
}

// exportLabelled hands in the newest max_rows (0: all) labelled rows the
// agent kept of the task's model: written as CSV (as GET /v1/labelled
// writes them) to a temporary file in dir, uploaded, and described. With
// no rows there is nothing to upload; an error is the report's error.
func exportLabelled(ctx context.Context, st *store.Store, keep int, dir string, upload uploadFunc, t *droverv1.ExportTask, logger *slog.Logger) *droverv1.LabelledExport {
	e := &droverv1.LabelledExport{JobId: t.GetJobId(), Model: t.GetModel()}
	fail := func(err error) *droverv1.LabelledExport {
		e.Content, e.Rows, e.Error = nil, 0, failureMessage(err)
		logger.Warn("export of labelled rows failed", "job", t.GetJobId(), "model", t.GetModel(), "err", e.Error)
		return e
	}
	if t.GetModel() == "" {
		return fail(errors.New("the export task names no model"))
	}
	rows, err := readLabelled(st, t.GetModel(), keep, int(t.GetMaxRows()))
	if err != nil {
		return fail(fmt.Errorf("reading the labelled rows of %s: %w", t.GetModel(), err))
	}
	if len(rows) == 0 {
		logger.Info("no labelled rows to export", "job", t.GetJobId(), "model", t.GetModel())
		return e
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(err)
	}
	f, err := os.CreateTemp(dir, "export-*.csv")
	if err != nil {
		return fail(err)
	}
	defer os.Remove(f.Name())
	err = writeLabelledCSV(f, rows)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail(fmt.Errorf("writing the labelled rows: %w", err))
	}
	if e.Content, err = upload(ctx, f.Name()); err != nil {
		return fail(fmt.Errorf("uploading the labelled rows: %w", err))
	}
	e.Rows = uint64(len(rows))
	logger.Info("labelled rows exported", "job", t.GetJobId(), "model", t.GetModel(), "rows", e.Rows, "content", e.Content.GetDigest())
	return e
}

// retry calls f until it succeeds, fails for good, ctx ends, or it has
// been tried a few times, waiting with jittered back-off in between.
func retry[T any](ctx context.Context, f func() (T, error)) (T, error) {
	b := backoff{min: time.Second, max: 15 * time.Second}
	for attempt := 1; ; attempt++ {
		v, err := f()
		if err == nil || attempt == 5 || !transient(err) || ctx.Err() != nil {
			return v, err
		}
		if !sleep(ctx, b.next()) {
			return v, err
		}
	}
}

// transient reports whether an error from the hub may go away by itself:
// the hub is away, overloaded or between leaders. A refusal is not.
func transient(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnknown, connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeResourceExhausted,
		connect.CodeAborted, connect.CodeInternal:
		return !errors.Is(err, context.Canceled)
	}
	return false
}

// fetchBlob fetches a blob through the verified artifact cache.
func (a *Agent) fetchBlob(ctx context.Context, ref *droverv1.BlobRef) (string, error) {
	return retry(ctx, func() (string, error) { return a.cache.Fetch(ctx, ref) })
}

// uploadBlob uploads a file to the hub with the agent's credential.
func (a *Agent) uploadBlob(ctx context.Context, path string) (*droverv1.BlobRef, error) {
	return retry(ctx, func() (*droverv1.BlobRef, error) {
		c := a.hubClient()
		if c == nil {
			return nil, connect.NewError(connect.CodeUnavailable, "not enrolled with the hub yet")
		}
		res, err := c.UploadFile(ctx, path, nil, nil)
		if err != nil {
			return nil, err
		}
		return res.BlobRef(), nil
	})
}

// sendTrainingReport puts a training task's progress in the outbox.
func (a *Agent) sendTrainingReport(r *droverv1.TrainingReport) {
	a.report(&droverv1.Report{Body: &droverv1.Report_Training{Training: r}})
}

// newRetrainer builds the agent's retrainer.
func (a *Agent) newRetrainer() *retrainer {
	logger := a.logger.With("component", "training")
	dir := filepath.Join(a.cfg.DataDir, "training")
	runner := &taskRunner{
		fetch: a.fetchBlob, upload: a.uploadBlob, send: a.sendTrainingReport, trainers: a.trainersNow, plugins: a.plugins,
		dir: dir, logger: logger, now: a.now, flushEvery: trainingFlushInterval, killGrace: trainingKillGrace,
	}
	logShadowedTrainers(logger, a.cfg.Trainers, a.plugins)
	export := func(ctx context.Context, t *droverv1.ExportTask) *droverv1.LabelledExport {
		return exportLabelled(ctx, a.store, a.labelledKeep(), dir, a.uploadBlob, t, logger)
	}
	return newRetrainer(a.store, runner, export, logger, a.now)
}
