package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect/v2"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/internal/digest"
	"github.com/droverhq/drover/internal/progress"
	"github.com/droverhq/drover/internal/training"
	"github.com/droverhq/drover/plugins/exectrain"
	"github.com/droverhq/drover/plugins/native"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// The built-in runners `drover train` can train with.
const (
	runnerNative = training.NativeRunner
	runnerExec   = "exec"
)

// nativeFormat is the native runner's artifact format.
const nativeFormat = training.NativeFormat

// runLogInterval is how often the metric points of a tracked run are sent
// to the hub while it trains.
const runLogInterval = 5 * time.Second

// trainFlags are `drover train`'s flags.
type trainFlags struct {
	runner, dataset, target, model, out string
	params, ignore                      []string
	holdout                             float64
	seed                                uint64
	execCommand, schema, format         string
	track, push, create                 bool
	parent                              uint64
	// champion is the version the candidate must beat (on the same
	// hold-out) by margin on metric to be pushed.
	champion uint64
	metric   string
	margin   float64
}

func (a *app) trainCommand() *cobra.Command {
	var f trainFlags
	cmd := &cobra.Command{
		Use:   "train --runner native|exec --dataset <file> --target <column> --out <dir>",
		Short: "Train a model locally with a built-in runner, track the run at the hub, and register the result",
		Long: `Train a model on this machine with a built-in runner and write its artifact
and metrics file (metrics.json) into --out.

  native  a linear model (logistic or ridge regression) trained in-process on a
          CSV file; --param task=classification|regression (default
          classification), l2=<penalty> (default 1), max_iterations=<n>;
          --holdout rows are kept out of training and evaluated, split by --seed.
          Columns the --schema calls categorical or binary are read as categories.
  exec    runs --exec-command (split on spaces, no shell) with the data set,
          --out, the target, the parameters, the schema and --ignore in
          DROVER_* variables, as the agent's exec trainer does (docs/runners.md); its
          output is streamed to stderr, its drover:progress lines drawn as a
          progress bar on a terminal.

--track records the run at the hub (--model is required): its parameters,
runner, host and user, the data set's digest, every drover:metric point as it
comes (the native runner's final metrics at step 0), and how it ended — a
failure with its error, and still a non-zero exit. --push (which implies
--track) also uploads the artifact and registers it as the model's next
version, with the metrics, parameters, schema, the run and data set in its
lineage, and a reference profile for drift (the exec command's own, or one
built from the data set); --create creates the model first if need be.`,
		Example: `  drover train --runner native --dataset train.csv --target churn --ignore customer_id --out out/
  drover train --runner native --dataset train.csv --target churn --ignore customer_id --param l2=0.5 \
      --model churn --push --create --out out/
  drover train --runner exec --exec-command "python3 train.py" --dataset train.csv --target churn \
      --schema schema.yaml --model churn --push --out out/ --json`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("train takes no arguments, only flags (got %q)", args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return a.runTrain(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.runner, "runner", runnerNative, "the runner that trains: native or exec")
	fl.StringVar(&f.dataset, "dataset", "", "the training data (required; CSV for the native runner)")
	fl.StringVar(&f.target, "target", "", "the column to predict (required)")
	fl.StringVar(&f.out, "out", "", "the output directory for the artifact and metrics.json (required)")
	fl.StringVar(&f.model, "model", "", "the model the run trains (required with --track and --push)")
	fl.StringArrayVar(&f.params, "param", nil, "a training parameter, key=value (repeatable)")
	fl.Float64Var(&f.holdout, "holdout", 0.2, "native: the fraction of rows held out for evaluation")
	fl.Uint64Var(&f.seed, "seed", 1, "native: the seed of the hold-out split")
	fl.StringVar(&f.execCommand, "exec-command", "", `exec: the training command, split on spaces, e.g. "python3 train.py"`)
	fl.StringVar(&f.schema, "schema", "", "the feature schema, a JSON or YAML file (see docs/cli.md)")
	fl.StringSliceVar(&f.ignore, "ignore", nil, "columns that are not features, e.g. an id")
	fl.StringVar(&f.format, "format", "", "exec: the artifact's format when the command's metrics file names none")
	fl.BoolVar(&f.track, "track", false, "record the run at the hub")
	fl.BoolVar(&f.push, "push", false, "register the artifact as the model's next version (implies --track)")
	fl.BoolVar(&f.create, "create", false, "with --push: create the model if it does not exist")
	fl.Uint64Var(&f.parent, "parent", 0, "the version this run retrains (recorded in the run and the lineage)")
	fl.Uint64Var(&f.champion, "champion", 0, "native: score this version of --model on the same hold-out; push only a candidate that beats it by --margin")
	fl.StringVar(&f.metric, "metric", "", "with --champion: the metric compared (default accuracy, or rmse for a regression)")
	fl.Float64Var(&f.margin, "margin", 0, "with --champion: how much better the candidate must be (in the metric's unit)")
	return cmd
}

// trainPlan is what the flags ask for, checked.
type trainPlan struct {
	// params are the run's parameters: for the native runner, the
	// effective ones (defaults, hold-out and seed included).
	params  map[string]string
	native  native.TrainOptions // the native runner's
	command []string            // the exec runner's
	track   bool
}

// plan checks the flags and reads the parameters; its errors are usage
// errors.
func (f *trainFlags) plan(cmd *cobra.Command) (*trainPlan, error) {
	switch {
	case f.dataset == "":
		return nil, usagef("--dataset is required: the training data")
	case f.target == "":
		return nil, usagef("--target is required: the column to predict")
	case f.out == "":
		return nil, usagef("--out is required: the directory for the artifact and metrics.json")
	case (f.track || f.push) && f.model == "":
		return nil, usagef("--track and --push need --model: the model the run trains")
	case f.create && !f.push:
		return nil, usagef("--create goes with --push")
	case f.parent != 0 && !f.track && !f.push:
		return nil, usagef("--parent goes with --track or --push")
	case f.champion != 0 && (f.model == "" || f.runner != runnerNative):
		return nil, usagef("--champion needs --model and the native runner")
	case f.champion == 0 && (cmd.Flags().Changed("metric") || cmd.Flags().Changed("margin")):
		return nil, usagef("--metric and --margin go with --champion")
	}
	params, err := parseKV("param", f.params)
	if err != nil {
		return nil, err
	}
	p := &trainPlan{params: params, track: f.track || f.push || f.champion != 0}
	switch f.runner {
	case runnerNative:
		if f.execCommand != "" {
			return nil, usagef("--exec-command goes with --runner exec")
		}
		if f.format != "" && f.format != nativeFormat {
			return nil, usagef("the native runner's artifacts are %s, not %s", nativeFormat, f.format)
		}
		if f.holdout <= 0 || f.holdout >= 1 {
			return nil, usagef("--holdout %g: want a fraction between 0 and 1", f.holdout)
		}
		p.native, p.params, err = nativeOptions(params, f.holdout, f.seed)
		if err != nil {
			return nil, err
		}
	case runnerExec:
		if p.command = strings.Fields(f.execCommand); len(p.command) == 0 {
			return nil, usagef(`--runner exec needs --exec-command, e.g. "python3 train.py"`)
		}
		for _, name := range []string{"holdout", "seed"} {
			if cmd.Flags().Changed(name) {
				return nil, usagef("--%s is the native runner's; give an exec command its own with --param", name)
			}
		}
	default:
		return nil, usagef("--runner %q: want native or exec", f.runner)
	}
	return p, nil
}

// nativeOptions reads the native runner's parameters (task, l2,
// max_iterations; the hold-out and seed come from their flags) and returns
// its options with the parameters it trains with, defaults included, for
// the run and the version. Its errors are usage errors.
func nativeOptions(params map[string]string, holdout float64, seed uint64) (native.TrainOptions, map[string]string, error) {
	all := make(map[string]string, len(params)+2)
	for k, v := range params {
		switch k {
		case "holdout", "seed":
			return native.TrainOptions{}, nil, usagef("--param %s=%s: give the native runner's %s with --%s", k, v, k, k)
		}
		all[k] = v
	}
	all["holdout"] = strconv.FormatFloat(holdout, 'g', -1, 64)
	all["seed"] = strconv.FormatUint(seed, 10)
	o, effective, err := training.NativeOptions(all)
	var pe *training.ParamError
	switch {
	case errors.As(err, &pe) && pe.Want == "":
		return o, nil, usagef("the native runner has no parameter %q; it takes task, l2 and max_iterations", pe.Name)
	case errors.As(err, &pe):
		return o, nil, usagef("--param %s=%s: %s", pe.Name, pe.Value, pe.Want)
	case err != nil:
		return o, nil, usageError{err}
	}
	return o, effective, nil
}

// trainResult is what a runner produced.
type trainResult struct {
	artifact string // the artifact's path
	format   string
	metrics  map[string]float64
	// champion is the champion's score on the same hold-out, when asked.
	champion *championView
	// profile is the reference profile the exec command wrote, if any.
	profile []byte
}

// trainView is `drover train`'s result, as --json prints it.
type trainView struct {
	RunID         string             `json:"run_id"`
	Model         string             `json:"model,omitempty"`
	Runner        string             `json:"runner"`
	Metrics       map[string]float64 `json:"metrics"`
	Artifact      string             `json:"artifact"`
	Format        string             `json:"format"`
	Version       uint64             `json:"version"`
	DatasetDigest string             `json:"dataset_digest"`
	// ArtifactDigest is the pushed artifact's digest.
	ArtifactDigest string `json:"artifact_digest,omitempty"`
	// Champion is the comparison with --champion.
	Champion *championView `json:"champion,omitempty"`
}

// championView is a candidate's comparison with the champion, on the same
// hold-out rows.
type championView struct {
	Version   uint64             `json:"version"`
	Metrics   map[string]float64 `json:"metrics"`
	Metric    string             `json:"metric"`
	Candidate float64            `json:"candidate"`
	Score     float64            `json:"champion"`
	Margin    float64            `json:"margin"`
	// Won is whether the candidate beat the champion by the margin; only
	// a winner is pushed.
	Won bool `json:"won"`
}

// lowerIsBetter reports whether a smaller value of a metric is better.
func lowerIsBetter(metric string) bool { return training.LowerIsBetter(metric) }

// judgeChampion compares the candidate's metrics with the champion's.
func judgeChampion(c *championView, candidate map[string]float64) error {
	var err error
	c.Candidate, c.Score, c.Won, err = training.Judge(c.Metric, candidate, c.Metrics, c.Margin)
	if errors.Is(err, training.ErrNoMetric) {
		return usageError{fmt.Errorf("--%w", err)}
	}
	return err
}

// runTrain trains as the flags say, tracking and pushing when asked.
func (a *app) runTrain(cmd *cobra.Command, f trainFlags) error {
	plan, err := f.plan(cmd)
	if err != nil {
		return err
	}
	var schema *droverv1.FeatureSchema
	if f.schema != "" {
		if schema, err = readSchema(f.schema); err != nil {
			return err
		}
	}
	// Ctrl-C stops the training command and ends a tracked run as failed,
	// rather than leaving it running at the hub forever; a second Ctrl-C
	// kills at once.
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	cmd.SetContext(ctx)

	bar := progress.New(a.stderr, "hashing the data set")
	datasetDigest, _, err := client.HashFile(f.dataset, bar.Update)
	bar.Done()
	if err != nil {
		return fmt.Errorf("data set: %w", err)
	}
	view := trainView{Model: f.model, Runner: f.runner, DatasetDigest: datasetDigest.String()}

	var c *client.Client
	var tracked *trackedRun
	if plan.track {
		if c, err = a.hub(); err != nil {
			return err
		}
		if tracked, err = a.startRun(cmd, c, f, plan, view.DatasetDigest); err != nil {
			return err
		}
		view.RunID = tracked.id
	}

	res, version, err := a.trainAndPush(cmd, c, f, plan, schema, tracked, view.DatasetDigest)
	if err != nil {
		if tracked != nil {
			a.endFailedRun(tracked, err)
		}
		return err
	}
	view.Metrics, view.Artifact, view.Format, view.Champion = res.metrics, res.artifact, res.format, res.champion
	if version != nil {
		view.Version, view.ArtifactDigest = version.GetVersion(), version.GetArtifact().GetDigest()
	}
	if tracked != nil {
		end := &droverv1.LogRunRequest{EndState: droverv1.RunState_RUN_STATE_SUCCEEDED, Metrics: res.metrics}
		if c := res.champion; c != nil {
			end.Message = fmt.Sprintf("candidate %s %.4g, champion v%d %.4g on the same hold-out, margin %g: %s",
				c.Metric, c.Candidate, c.Version, c.Score, c.Margin, map[bool]string{true: "won", false: "lost, not registered"}[c.Won])
		}
		if version != nil {
			end.Artifact, end.Version = version.GetArtifact(), version.GetVersion()
		}
		callCtx, cancel := a.ctx(cmd)
		defer cancel()
		if err := tracked.end(callCtx, end); err != nil {
			if version != nil {
				return fmt.Errorf("registered %s:%d, but recording the end of run %s at the hub failed: %w",
					f.model, version.GetVersion(), tracked.id, err)
			}
			return fmt.Errorf("recording the end of run %s at the hub: %w", tracked.id, err)
		}
	}
	return a.emit(view, func(w io.Writer) { printTrainSummary(w, view) })
}

// trainAndPush trains and, with --push, registers the artifact.
func (a *app) trainAndPush(cmd *cobra.Command, c *client.Client, f trainFlags, plan *trainPlan, schema *droverv1.FeatureSchema,
	tracked *trackedRun, datasetDigest string) (*trainResult, *droverv1.ModelVersion, error) {
	var res *trainResult
	var err error
	var champ *native.Model
	if f.champion != 0 {
		if champ, err = a.fetchChampion(cmd, c, f); err != nil {
			return nil, nil, err
		}
	}
	if f.runner == runnerNative {
		res, err = trainNative(cmd.Context(), f, plan.native, schema, champ)
		if err == nil && tracked != nil {
			for _, name := range sortedKeys(res.metrics) {
				tracked.point(name, res.metrics[name], 0)
			}
		}
	} else {
		res, err = a.trainExec(cmd.Context(), f, plan, schema, tracked)
	}
	if err != nil {
		return nil, nil, err
	}
	res.metrics = a.finiteMetrics(res.metrics)
	if res.champion != nil {
		res.champion.Version, res.champion.Margin, res.champion.Metric = f.champion, f.margin, f.metric
		if res.champion.Metric == "" {
			res.champion.Metric = training.DefaultMetric(plan.native.Task)
		}
		if err := judgeChampion(res.champion, res.metrics); err != nil {
			return nil, nil, err
		}
		if tracked != nil {
			outcome := map[bool]string{true: "won", false: "lost"}[res.champion.Won]
			tracked.tag("champion", fmt.Sprint(f.champion))
			tracked.tag("outcome", outcome)
			for k, v := range res.champion.Metrics {
				res.metrics["champion_"+k] = v
			}
		}
		if !res.champion.Won {
			return res, nil, nil // a loser is recorded, not registered
		}
	}
	if !f.push {
		return res, nil, nil
	}
	version, err := a.pushTrained(cmd, c, f, plan, schema, res, tracked.id, datasetDigest)
	if err != nil {
		return nil, nil, fmt.Errorf("training succeeded (artifact %s) but pushing it failed: %w", res.artifact, err)
	}
	return res, version, nil
}

// fetchChampion downloads the champion version's artifact and loads it.
func (a *app) fetchChampion(cmd *cobra.Command, c *client.Client, f trainFlags) (*native.Model, error) {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	resp, err := c.Models.GetVersion(ctx, &droverv1.GetVersionRequest{Model: f.model, Selector: &droverv1.GetVersionRequest_Version{Version: f.champion}})
	if err != nil {
		return nil, fmt.Errorf("the champion %s:%d: %w", f.model, f.champion, err)
	}
	mv := resp.GetVersion()
	if mv.GetFormat() != nativeFormat {
		return nil, fmt.Errorf("the champion %s:%d is %s; only a %s champion can be scored here", f.model, f.champion, mv.GetFormat(), nativeFormat)
	}
	d, err := digest.Parse(mv.GetArtifact().GetDigest())
	if err != nil {
		return nil, err
	}
	path := filepath.Join(f.out, fmt.Sprintf("champion-v%d.json", f.champion))
	if err := os.MkdirAll(f.out, 0o755); err != nil {
		return nil, err
	}
	bar := progress.New(a.stderr, "downloading the champion")
	err = c.DownloadFile(ctx, d, mv.GetArtifact().GetSizeBytes(), path, bar.Update)
	bar.Done()
	if err != nil {
		return nil, fmt.Errorf("the champion's artifact: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return native.LoadArtifact(b)
}

// trainNative trains a native linear model on the CSV data set and writes
// its artifact and a metrics file in exectrain's format into the output
// directory.
func trainNative(ctx context.Context, f trainFlags, o native.TrainOptions, schema *droverv1.FeatureSchema, champion *native.Model) (*trainResult, error) {
	r, err := training.TrainNative(ctx, training.NativeRequest{
		Dataset: f.dataset, Target: f.target, Ignore: f.ignore, Schema: schema, OutputDir: f.out, Options: o, Champion: champion,
	})
	if err != nil {
		return nil, err
	}
	res := &trainResult{artifact: r.Artifact, format: r.Format, metrics: r.Metrics}
	if r.ChampionMetrics != nil {
		res.champion = &championView{Metrics: r.ChampionMetrics}
	}
	return res, nil
}

// trainExec runs the exec command through exectrain, streaming its output
// to the terminal and its metric points to the tracked run.
func (a *app) trainExec(ctx context.Context, f trainFlags, plan *trainPlan, schema *droverv1.FeatureSchema, tracked *trackedRun) (*trainResult, error) {
	console := newTrainConsole(a.stderr)
	defer console.done()
	if tracked != nil {
		stopFlushing := tracked.flushEvery(ctx, runLogInterval, a.timeout, func(err error) {
			console.log(fmt.Sprintf("warning: sending metric points of run %s to the hub: %v (will retry)", tracked.id, err))
		})
		defer stopFlushing()
	}
	obs := training.Observer{Log: console.log, Progress: console.progress}
	if tracked != nil {
		obs.Point = tracked.point
	}
	r, err := training.TrainExec(ctx, training.ExecRequest{
		Config:  exectrain.Config{Command: plan.command, Format: f.format},
		Dataset: f.dataset, OutputDir: f.out, Target: f.target, Params: plan.params, Schema: schema, Ignore: f.ignore,
	}, obs)
	if err != nil {
		return nil, err
	}
	return &trainResult{artifact: r.Artifact, format: r.Format, metrics: r.Metrics, profile: r.ReferenceProfile}, nil
}

// finiteMetrics drops the metrics that are not finite numbers (a ROC AUC
// over a hold-out of one class), which neither JSON nor the hub take,
// saying so on stderr.
func (a *app) finiteMetrics(m map[string]float64) map[string]float64 {
	finite, dropped := training.FiniteOnly(m)
	for _, k := range dropped {
		fmt.Fprintf(a.stderr, "warning: metric %s is %v; it is not recorded\n", k, m[k])
	}
	return finite
}

// pushTrained uploads the artifact and registers it as the model's next
// version, with the run and the data set in its lineage.
func (a *app) pushTrained(cmd *cobra.Command, c *client.Client, f trainFlags, plan *trainPlan, schema *droverv1.FeatureSchema,
	res *trainResult, runID, datasetDigest string) (*droverv1.ModelVersion, error) {
	req := &droverv1.CreateVersionRequest{
		Model: f.model, Format: res.format, Params: plan.params, Metrics: res.metrics, Schema: schema,
		CreateModel: f.create, ReferenceProfile: res.profile,
		Lineage: &droverv1.Lineage{RunId: runID, DatasetDigest: datasetDigest, ParentVersion: cmp.Or(f.parent, f.champion)},
	}
	if f.runner == runnerNative {
		req.Runner = runnerNative
	}
	if req.ReferenceProfile == nil {
		var err error
		if req.ReferenceProfile, _, err = training.Profile(f.dataset, f.target, f.ignore, schema, res.format, res.artifact); err != nil {
			return nil, fmt.Errorf("reference profile: %w", err)
		}
	}
	up, err := a.upload(cmd, c, res.artifact)
	if err != nil {
		return nil, err
	}
	req.Artifact = up.BlobRef()
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	resp, err := c.Models.CreateVersion(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.GetVersion(), nil
}

// startRun records the run at the hub before it trains, creating the model
// first with --create (a run belongs to an existing model).
func (a *app) startRun(cmd *cobra.Command, c *client.Client, f trainFlags, plan *trainPlan, datasetDigest string) (*trackedRun, error) {
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	if f.create {
		_, err := c.Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: f.model})
		if err != nil && connect.CodeOf(err) != connect.CodeAlreadyExists {
			return nil, fmt.Errorf("creating model %s: %w", f.model, err)
		}
	}
	tags := map[string]string{}
	if host, err := os.Hostname(); err == nil && host != "" {
		tags["host"] = host
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		tags["user"] = u.Username
	} else if name := os.Getenv("USER"); name != "" {
		tags["user"] = name
	}
	if f.runner == runnerExec {
		tags["command"] = f.execCommand
	}
	resp, err := c.Runs.CreateRun(ctx, &droverv1.CreateRunRequest{
		Model: f.model, Runner: f.runner, Params: plan.params, Tags: tags,
		DatasetDigest: datasetDigest, ParentVersion: f.parent,
	})
	if err != nil {
		return nil, fmt.Errorf("starting a run of %s at the hub: %w", f.model, err)
	}
	return &trackedRun{runs: c.Runs, id: resp.GetRun().GetId()}, nil
}

// endFailedRun ends a tracked run as failed with cause as its message. It
// runs even when the command was interrupted; a failure to record it is a
// warning, the cause being the error that matters.
func (a *app) endFailedRun(tracked *trackedRun, cause error) {
	timeout := a.timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	msg := cause.Error()
	if len(msg) > 4096 {
		msg = msg[:4096] + " [...]"
	}
	req := &droverv1.LogRunRequest{EndState: droverv1.RunState_RUN_STATE_FAILED, Message: strings.ToValidUTF8(msg, "\uFFFD")}
	if err := tracked.end(ctx, req); err != nil {
		fmt.Fprintf(a.stderr, "warning: recording the failure of run %s at the hub: %v\n", tracked.id, err)
	}
}

// runLogger is the part of the hub's RunService a tracked run calls.
type runLogger interface {
	LogRun(context.Context, *droverv1.LogRunRequest) (*droverv1.LogRunResponse, error)
}

// trackedRun is a run recorded at the hub: it keeps the metric points not
// yet sent, and sends them now and then and when the run ends.
type trackedRun struct {
	runs runLogger
	id   string

	mu      sync.Mutex
	pending []*droverv1.MetricPoint
	tags    map[string]string // sent with the run's end
}

// tag sets a tag, sent with the run's end.
func (r *trackedRun) tag(k, v string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tags == nil {
		r.tags = map[string]string{}
	}
	r.tags[k] = v
}

// point adds a metric point, to be sent with the next LogRun. A value
// that is not finite is dropped: the hub refuses it.
func (r *trackedRun) point(name string, value float64, step int64) {
	if math.IsNaN(value) || math.IsInf(value, 0) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending = append(r.pending, &droverv1.MetricPoint{Name: name, Value: value, Step: step, Time: timestamppb.Now()})
}

// take removes the pending points and returns them.
func (r *trackedRun) take() []*droverv1.MetricPoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending
	r.pending = nil
	return p
}

// putBack returns points that could not be sent, ahead of newer ones.
func (r *trackedRun) putBack(p []*droverv1.MetricPoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending = append(p, r.pending...)
}

// log sends req with the pending points; on failure they stay pending.
func (r *trackedRun) log(ctx context.Context, req *droverv1.LogRunRequest) error {
	req.Id = r.id
	req.Points = r.take()
	if _, err := r.runs.LogRun(ctx, req); err != nil {
		r.putBack(req.Points)
		return err
	}
	return nil
}

// flushEvery sends the pending points every interval until the returned
// function is called, each call bounded by timeout (if positive); failed
// calls are reported to warn and their points retried.
func (r *trackedRun) flushEvery(ctx context.Context, interval, timeout time.Duration, warn func(error)) (stop func()) {
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
			}
			r.mu.Lock()
			idle := len(r.pending) == 0
			r.mu.Unlock()
			if idle {
				continue
			}
			callCtx, callCancel := ctx, context.CancelFunc(func() {})
			if timeout > 0 {
				callCtx, callCancel = context.WithTimeout(ctx, timeout)
			}
			err := r.log(callCtx, &droverv1.LogRunRequest{})
			callCancel()
			if err != nil && ctx.Err() == nil {
				warn(err)
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// end ends the run as req says, with the points still pending.
func (r *trackedRun) end(ctx context.Context, req *droverv1.LogRunRequest) error {
	r.mu.Lock()
	req.Tags = r.tags
	r.mu.Unlock()
	return r.log(ctx, req)
}

// trainConsole shows a training command's output on stderr: its log lines
// as they come and, on a terminal, a status line below them with a
// progress bar, the stage and the latest metrics (the drover:progress and
// drover:metric lines it draws are then not repeated as log lines).
type trainConsole struct {
	mu       sync.Mutex // the trainer's events and the run's warnings come from two goroutines
	w        io.Writer
	tty      bool
	width    int // of the bar
	fraction float64
	stage    string
	metrics  map[string]float64
	drawn    bool // the status line is on the screen
}

func newTrainConsole(w io.Writer) *trainConsole {
	f, ok := w.(*os.File)
	return &trainConsole{w: w, tty: ok && term.IsTerminal(int(f.Fd())), width: 30, metrics: map[string]float64{}}
}

// log prints one line of the command's output above the status line.
func (c *trainConsole) log(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tty && (strings.HasPrefix(line, "drover:progress ") || strings.HasPrefix(line, "drover:metric ")) {
		return
	}
	if c.drawn {
		fmt.Fprint(c.w, "\r\x1b[K")
	}
	fmt.Fprintln(c.w, line)
	if c.drawn {
		c.draw()
	}
}

// progress updates the status line.
func (c *trainConsole) progress(p *runnerv1.TrainProgress) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fraction, c.stage = p.GetFraction(), p.GetStage()
	for k, v := range p.GetMetrics() {
		c.metrics[k] = v
	}
	if c.tty {
		c.draw()
	}
}

func (c *trainConsole) draw() {
	full := int(math.Round(c.fraction * float64(c.width)))
	bar := strings.Repeat("=", full)
	if full < c.width {
		bar += ">" + strings.Repeat(" ", c.width-full-1)
	}
	line := fmt.Sprintf("training [%s] %3.0f%%", bar, c.fraction*100)
	if c.stage != "" {
		line += " " + c.stage
	}
	for _, k := range sortedKeys(c.metrics) {
		line += fmt.Sprintf(" %s=%.4g", k, c.metrics[k])
	}
	fmt.Fprint(c.w, "\r"+line+"\x1b[K")
	c.drawn = true
}

// done ends the status line, if one is drawn.
func (c *trainConsole) done() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.drawn {
		fmt.Fprintln(c.w)
		c.drawn = false
	}
}

// printTrainSummary prints the result of `drover train`.
func printTrainSummary(w io.Writer, v trainView) {
	fmt.Fprintf(w, "Trained with the %s runner: %s artifact %s\n", v.Runner, v.Format, v.Artifact)
	t := newTable(w)
	fmt.Fprintln(t, "METRIC\tVALUE")
	for _, k := range sortedKeys(v.Metrics) {
		fmt.Fprintf(t, "%s\t%.4g\n", k, v.Metrics[k])
	}
	t.Flush()
	t = newTable(w)
	fmt.Fprintf(t, "Data set:\t%s\n", v.DatasetDigest)
	if v.RunID != "" {
		fmt.Fprintf(t, "Run:\t%s (%s)\n", v.RunID, v.Model)
	}
	if c := v.Champion; c != nil {
		verdict := "lost: not registered"
		if c.Won {
			verdict = "won"
		}
		fmt.Fprintf(t, "Champion:\t%s:%d %s %.4g, candidate %.4g, margin %g: %s\n", v.Model, c.Version, c.Metric, c.Score, c.Candidate, c.Margin, verdict)
	}
	if v.Version != 0 {
		fmt.Fprintf(t, "Version:\t%s:%d %s\n", v.Model, v.Version, v.ArtifactDigest)
	}
	t.Flush()
}
