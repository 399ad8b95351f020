package training

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/droverhq/drover/internal/tabular"
	"github.com/droverhq/drover/internal/validate"
	"github.com/droverhq/drover/plugins/exectrain"
	"github.com/droverhq/drover/plugins/native"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// The native runner: its name, the format of its artifacts, and the
// artifact's file in the output directory (beside exectrain.MetricsFile,
// so that both runners leave the same contract behind).
const (
	NativeRunner       = "native"
	NativeFormat       = "drover-native"
	NativeArtifactFile = "model.json"
)

// The native runner's defaults for the parameters holdout and seed.
const (
	DefaultHoldOut = 0.2
	DefaultSeed    = 1
)

// NativeParams are the parameters the native runner takes.
var NativeParams = []string{"task", "l2", "max_iterations", "holdout", "seed"}

// ParamError is a native runner parameter that is unknown or has a value
// it cannot take.
type ParamError struct {
	// Name and Value are the parameter as given.
	Name, Value string
	// Want says what the parameter takes; empty for an unknown parameter.
	Want string
}

func (e *ParamError) Error() string {
	if e.Want == "" {
		return fmt.Sprintf("the native runner has no parameter %q; it takes %s", e.Name, strings.Join(NativeParams, ", "))
	}
	return fmt.Sprintf("parameter %s=%s: %s", e.Name, e.Value, e.Want)
}

// NativeOptions reads the native runner's parameters — task
// (classification or regression, default classification), l2 (a positive
// penalty, default 1), max_iterations (a positive whole number), holdout
// (the fraction of rows held out, default 0.2) and seed (of the hold-out
// split, default 1) — and returns its options with the parameters it
// trains with, defaults included, for the run and the version. An unknown
// parameter or a bad value is a *ParamError.
func NativeOptions(params map[string]string) (native.TrainOptions, map[string]string, error) {
	o := native.TrainOptions{Task: native.Classification, L2: 1, HoldOut: DefaultHoldOut, Seed: DefaultSeed}
	for _, k := range slices.Sorted(maps.Keys(params)) {
		v := params[k]
		bad := func(want string) error { return &ParamError{Name: k, Value: v, Want: want} }
		switch k {
		case "task":
			o.Task = native.Task(v)
			if o.Task != native.Classification && o.Task != native.Regression {
				return o, nil, bad("want classification or regression")
			}
		case "l2":
			l2, err := strconv.ParseFloat(v, 64)
			if err != nil || !(l2 > 0) || math.IsInf(l2, 0) {
				return o, nil, bad("want a positive number")
			}
			o.L2 = l2
		case "max_iterations":
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return o, nil, bad("want a positive whole number")
			}
			o.MaxIterations = n
		case "holdout":
			h, err := strconv.ParseFloat(v, 64)
			if err != nil || !(h > 0 && h < 1) {
				return o, nil, bad("want a fraction between 0 and 1")
			}
			o.HoldOut = h
		case "seed":
			s, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return o, nil, bad("want a whole number, 0 or more")
			}
			o.Seed = s
		default:
			return o, nil, &ParamError{Name: k, Value: v}
		}
	}
	out := map[string]string{
		"task":    string(o.Task),
		"l2":      strconv.FormatFloat(o.L2, 'g', -1, 64),
		"holdout": strconv.FormatFloat(o.HoldOut, 'g', -1, 64),
		"seed":    strconv.FormatUint(o.Seed, 10),
	}
	if o.MaxIterations != 0 {
		out["max_iterations"] = strconv.Itoa(o.MaxIterations)
	}
	return o, out, nil
}

// NativeRequest is a native training run.
type NativeRequest struct {
	// Dataset is the training data, a CSV file with a header.
	Dataset string
	// Target is the column to predict; Ignore the columns that are not
	// features (an id). Columns the Schema calls categorical or binary are
	// read as categories, even where they look like numbers.
	Target string
	Ignore []string
	Schema *droverv1.FeatureSchema
	// OutputDir receives NativeArtifactFile and exectrain.MetricsFile; it
	// is created if missing.
	OutputDir string
	// Options are the runner's, from [NativeOptions].
	Options native.TrainOptions
	// Champion, if set, is scored on the candidate's hold-out rows: the
	// same rows, so that the two are compared on equal terms.
	Champion *native.Model
	// Log, if set, receives a few lines on how the run goes: what was
	// read, how long training took and what it scored.
	Log func(line string)
}

// Result is what a training run produced.
type Result struct {
	// Artifact is the artifact's path, in the output directory; Format
	// its format.
	Artifact string
	Format   string
	// Metrics are the candidate's on the hold-out, as the runner gave them
	// (see [FiniteOnly] before recording them).
	Metrics map[string]float64
	// ChampionMetrics are the champion's on the same hold-out; nil when
	// no champion was scored.
	ChampionMetrics map[string]float64
	// ReferenceProfile is the reference profile an exec command wrote,
	// if any (see [Profile] for one built from the data set).
	ReferenceProfile []byte
	// TrainRows and HoldoutRows count the rows trained on and held out;
	// zero when the runner did not say.
	TrainRows, HoldoutRows int
}

// TrainNative trains a native linear model on the CSV data set and writes
// its artifact and a metrics file in exectrain's format into the output
// directory; given a champion, it scores it on the same hold-out rows.
// When ctx ends first, training stops (the optimiser looks at ctx after
// every evaluation of its objective) and TrainNative returns ctx's cause,
// nothing written.
func TrainNative(ctx context.Context, req NativeRequest) (*Result, error) {
	logf := func(format string, args ...any) {
		if req.Log != nil {
			req.Log(fmt.Sprintf(format, args...))
		}
	}
	if ext := strings.ToLower(filepath.Ext(req.Dataset)); ext == ".parquet" {
		return nil, fmt.Errorf("%s: the native runner reads CSV files only", req.Dataset)
	}
	file, err := os.Open(req.Dataset)
	if err != nil {
		return nil, fmt.Errorf("data set: %w", err)
	}
	defer file.Close()
	o := req.Options
	ds, err := native.ReadCSV(file, req.Target, native.CSVOptions{
		Task: o.Task, Ignore: req.Ignore, Categorical: categoricalInputs(req.Schema, req.Target, req.Ignore),
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", req.Dataset, err)
	}
	rows := len(ds.Target.Strings) + len(ds.Target.Numbers)
	logf("read %d rows, %d features from %s", rows, len(ds.Features), filepath.Base(req.Dataset))

	started := time.Now()
	model, metrics, err := native.TrainContext(ctx, ds, o)
	if err != nil {
		return nil, err
	}
	logf("trained in %s: %s", time.Since(started).Round(time.Millisecond), summary(metrics))
	res := &Result{
		Artifact: filepath.Join(req.OutputDir, NativeArtifactFile), Format: NativeFormat, Metrics: metrics,
		HoldoutRows: int(metrics["holdout_rows"]),
	}
	res.TrainRows = rows - res.HoldoutRows
	if req.Champion != nil {
		holdout, err := native.HoldOutRows(rows, o.HoldOut, o.Seed)
		if err != nil {
			return nil, err
		}
		cm, err := req.Champion.Evaluate(ds, holdout)
		if err != nil {
			return nil, fmt.Errorf("scoring the champion on the hold-out: %w", err)
		}
		res.ChampionMetrics = cm
		logf("the champion on the same %d hold-out rows: %s", len(holdout), summary(cm))
	}
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	artifact, err := model.MarshalArtifact()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(req.OutputDir, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	if err := os.WriteFile(res.Artifact, artifact, 0o644); err != nil {
		return nil, fmt.Errorf("writing the artifact: %w", err)
	}
	finite, _ := FiniteOnly(metrics) // JSON has no NaN
	mf, err := json.MarshalIndent(struct {
		Metrics  map[string]float64 `json:"metrics"`
		Artifact string             `json:"artifact"`
		Format   string             `json:"format"`
	}{finite, NativeArtifactFile, NativeFormat}, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(req.OutputDir, exectrain.MetricsFile), append(mf, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("writing the metrics file: %w", err)
	}
	return res, nil
}

// LoadNativeArtifact reads a native model's artifact from a file: the
// champion a candidate is scored against.
func LoadNativeArtifact(path string) (*native.Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return native.LoadArtifact(b)
}

// summary formats the headline metrics for a log line: the scores, not
// the row counts, in name order.
func summary(m map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if strings.HasPrefix(k, "holdout_") {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%.4g", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// categoricalInputs returns the schema's inputs that are categories (by
// kind or datatype), which the native runner must not read as numbers
// even where they look like them.
func categoricalInputs(schema *droverv1.FeatureSchema, target string, ignore []string) []string {
	kinds := validate.SchemaKinds(&droverv1.FeatureSchema{Inputs: schema.GetInputs()})
	var names []string
	for _, name := range slices.Sorted(maps.Keys(kinds)) {
		if kinds[name] == tabular.Text && name != target && !slices.Contains(ignore, name) {
			names = append(names, name)
		}
	}
	return names
}
