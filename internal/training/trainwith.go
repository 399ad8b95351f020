package training

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/droverhq/drover/plugins/exectrain"
	"github.com/droverhq/drover/plugins/sdk"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
)

// ChampionPrefix starts the names of the metrics in which a runner
// reports the champion's scores (TrainRequest.champion_artifact_path):
// champion_accuracy is the champion's accuracy on the runner's hold-out,
// the rows the candidate's accuracy was measured on.
const ChampionPrefix = "champion_"

// Trainer is a runner that trains: an exec trainer (exectrain.Trainer) in
// the process, or a runner plugin's client (sdk.Client) over go-plugin.
// Train streams log lines, progress and, last, the result through send.
type Trainer interface {
	Train(ctx context.Context, req *runnerv1.TrainRequest, send func(*runnerv1.TrainResponse) error) error
}

var (
	_ Trainer = (*exectrain.Trainer)(nil)
	_ Trainer = (*sdk.Client)(nil)
)

// Observer is told how a run goes, as it goes. Every field is optional;
// they are called from one goroutine at a time.
type Observer struct {
	// Log receives each line of the runner's output.
	Log func(line string)
	// Progress receives each progress event (an exec command's
	// drover:progress or drover:metric directive): the fraction done, the
	// stage, and the metrics reported with it.
	Progress func(p *runnerv1.TrainProgress)
	// Point receives each metric point of a progress event, numbered by
	// step from 0 per metric in the order the runner reported them.
	Point func(name string, value float64, step int64)
}

// TrainWith runs req on t, handing its log lines, progress and metric
// points to obs, and returns its result. When req names a champion
// (champion_artifact_path), the metrics the runner reported named
// champion_<metric> become the result's ChampionMetrics, without the
// prefix; without one, every metric is the candidate's. t's error is
// returned as it is.
func TrainWith(ctx context.Context, t Trainer, req *runnerv1.TrainRequest, obs Observer) (*Result, error) {
	steps := map[string]int64{} // each metric's next step
	var result *runnerv1.TrainResult
	err := t.Train(ctx, req, func(ev *runnerv1.TrainResponse) error {
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
		return nil, errors.New("the runner ended without a result")
	}
	res := &Result{Artifact: result.GetArtifactPath(), Format: result.GetFormat(),
		Metrics: result.GetMetrics(), ReferenceProfile: result.GetReferenceProfile()}
	if req.GetChampionArtifactPath() != "" {
		res.Metrics, res.ChampionMetrics = splitChampion(res.Metrics)
		if len(res.ChampionMetrics) == 0 && obs.Log != nil {
			obs.Log(fmt.Sprintf("warning: the runner was given a champion but reported no %s<metric> metrics; the champion is not scored",
				ChampionPrefix))
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
