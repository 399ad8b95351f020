package training

import (
	"context"
	"log/slog"

	"github.com/droverhq/drover/plugins/exectrain"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// The variables in which exectrain gives an exec command, beside the rest
// of its DROVER_* contract, the champion it is to score on its own
// hold-out and the columns that are not features.
const (
	ChampionArtifactVar = exectrain.ChampionArtifactVar
	ChampionFormatVar   = exectrain.ChampionFormatVar
	IgnoreVar           = exectrain.IgnoreVar
)

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

// TrainExec runs the configured command through package exectrain on the
// data set with [TrainWith], handing its output and progress to obs, and
// returns its result once it has exited 0 and its metrics file checks
// out. When ctx ends, the command's process group is stopped (SIGTERM,
// then SIGKILL after Config.KillGrace) and the error says so.
func TrainExec(ctx context.Context, req ExecRequest, obs Observer) (*Result, error) {
	return TrainWith(ctx, exectrain.New(req.Config, req.Logger), &runnerv1.TrainRequest{
		DatasetPath: req.Dataset, OutputDir: req.OutputDir, Target: req.Target, Params: req.Params, Schema: req.Schema,
		Ignore: req.Ignore, ChampionArtifactPath: req.ChampionArtifact, ChampionFormat: req.ChampionFormat,
	}, obs)
}
