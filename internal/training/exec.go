package training

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/droverhq/drover/plugins/exectrain"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// The variables this package gives an exec command beside exectrain's
// DROVER_* contract: the champion it is to score on its own hold-out, and
// the columns that are not features.
const (
	ChampionArtifactVar = "DROVER_CHAMPION_ARTIFACT"
	ChampionFormatVar   = "DROVER_CHAMPION_FORMAT"
	IgnoreVar           = "DROVER_IGNORE"
)

// ChampionPrefix starts the names of the metrics in which an exec command
// reports the champion's scores: champion_accuracy is the champion's
// accuracy on the command's hold-out.
const ChampionPrefix = "champion_"

// ExecRequest is a training run of an exec command.
type ExecRequest struct {
	// Config is the command and how it runs: the agent's or the CLI's
	// configuration, never a hub's request.
	Config exectrain.Config
	// Dataset, OutputDir, Target, Params and Schema are the run's, handed
	// to the command in exectrain's DROVER_* variables.
	Dataset   string
	OutputDir string
	Target    string
	Params    map[string]string
	Schema    *droverv1.FeatureSchema
	// Ignore names the columns that are not features (an id), given to
	// the command in DROVER_IGNORE as a JSON array; unset when empty.
	Ignore []string
	// ChampionArtifact, if set, is the path of the champion's artifact,
	// given to the command in DROVER_CHAMPION_ARTIFACT (an absolute path)
	// with ChampionFormat in DROVER_CHAMPION_FORMAT. The metrics the
	// command reports named champion_<metric> become the result's
	// ChampionMetrics, without the prefix.
	ChampionArtifact string
	ChampionFormat   string
	// Logger receives exectrain's own logs; nil discards them.
	Logger *slog.Logger
}

// Observer is told how an exec run goes, as it goes. Every field is
// optional; they are called from one goroutine at a time.
type Observer struct {
	// Log receives each line of the command's output.
	Log func(line string)
	// Progress receives each drover:progress or drover:metric directive:
	// the fraction done, the stage, and the metric a drover:metric line
	// reported.
	Progress func(p *runnerv1.TrainProgress)
	// Point receives each metric point, numbered by step from 0 per
	// metric in the order the command reported them.
	Point func(name string, value float64, step int64)
}

// TrainExec runs the configured command through package exectrain on the
// data set, handing its output and progress to obs, and returns its
// result once it has exited 0 and its metrics file checks out. When ctx
// ends, the command's process group is stopped (SIGTERM, then SIGKILL
// after Config.KillGrace) and the error says so.
func TrainExec(ctx context.Context, req ExecRequest, obs Observer) (*Result, error) {
	cfg := req.Config
	cfg.Env = slices.Clone(cfg.Env)
	if req.ChampionArtifact != "" {
		abs, err := filepath.Abs(req.ChampionArtifact)
		if err != nil {
			return nil, fmt.Errorf("the champion's artifact: %w", err)
		}
		cfg.Env = append(cfg.Env, ChampionArtifactVar+"="+abs, ChampionFormatVar+"="+req.ChampionFormat)
	}
	if len(req.Ignore) > 0 {
		b, err := json.Marshal(req.Ignore)
		if err != nil {
			return nil, err
		}
		cfg.Env = append(cfg.Env, IgnoreVar+"="+string(b))
	}
	trainer := exectrain.New(cfg, req.Logger)
	steps := map[string]int64{} // each metric's next step
	var result *runnerv1.TrainResult
	err := trainer.Train(ctx, &runnerv1.TrainRequest{
		DatasetPath: req.Dataset, OutputDir: req.OutputDir, Target: req.Target, Params: req.Params, Schema: req.Schema,
	}, func(ev *runnerv1.TrainResponse) error {
		switch ev := ev.GetEvent().(type) {
		case *runnerv1.TrainResponse_LogLine:
			if obs.Log != nil {
				obs.Log(ev.LogLine)
			}
		case *runnerv1.TrainResponse_Progress:
			if obs.Progress != nil {
				obs.Progress(ev.Progress)
			}
			if obs.Point != nil {
				for _, name := range slices.Sorted(maps.Keys(ev.Progress.GetMetrics())) {
					obs.Point(name, ev.Progress.GetMetrics()[name], steps[name])
					steps[name]++
				}
			}
		case *runnerv1.TrainResponse_Result:
			result = ev.Result
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if result == nil {
		return nil, errors.New("the exec trainer ended without a result")
	}
	res := &Result{Artifact: result.GetArtifactPath(), Format: result.GetFormat(),
		Metrics: result.GetMetrics(), ReferenceProfile: result.GetReferenceProfile()}
	if req.ChampionArtifact != "" {
		res.Metrics, res.ChampionMetrics = splitChampion(res.Metrics)
		if len(res.ChampionMetrics) == 0 && obs.Log != nil {
			obs.Log(fmt.Sprintf("warning: the command was given a champion (%s) but reported no %s<metric> metrics; the champion is not scored",
				ChampionArtifactVar, ChampionPrefix))
		}
	}
	return res, nil
}

// splitChampion separates the champion's metrics (champion_<metric>) from
// the candidate's.
func splitChampion(m map[string]float64) (candidate, champion map[string]float64) {
	candidate, champion = map[string]float64{}, map[string]float64{}
	for k, v := range m {
		if name, ok := strings.CutPrefix(k, ChampionPrefix); ok && name != "" {
			champion[name] = v
		} else {
			candidate[k] = v
		}
	}
	return candidate, champion
}
