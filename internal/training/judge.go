package training

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/droverhq/drover/plugins/native"
)

// LowerIsBetter reports whether a smaller value of a metric is better:
// the losses and errors (log_loss, rmse, mae); for any other metric
// (accuracy, f1, roc_auc, r2, ...) a larger one is.
func LowerIsBetter(metric string) bool {
	switch metric {
	case "log_loss", "rmse", "mae":
		return true
	}
	return false
}

// DefaultMetric is the metric a candidate and its champion are compared on
// when none is named: accuracy for a classifier, rmse for a regression.
func DefaultMetric(task native.Task) string {
	if task == native.Regression {
		return "rmse"
	}
	return "accuracy"
}

// ErrNoMetric is the error [Judge] wraps when the metric compared is
// missing from the candidate's or the champion's metrics.
var ErrNoMetric = errors.New("no such metric")

// Judge compares a candidate's metrics with its champion's on metric: the
// candidate wins when it is better (higher, or lower for a metric where
// [LowerIsBetter]) by at least margin, in the metric's unit. It returns
// both scores. A metric missing from either side, or not a finite number,
// is an error: there is nothing to compare.
func Judge(metric string, candidate, champion map[string]float64, margin float64) (cand, champ float64, won bool, err error) {
	cand, ok1 := candidate[metric]
	champ, ok2 := champion[metric]
	switch {
	case !ok1:
		return 0, 0, false, fmt.Errorf("metric %s: the candidate has %w (its metrics: %s)", metric, ErrNoMetric, strings.Join(slices.Sorted(maps.Keys(candidate)), ", "))
	case !ok2:
		return 0, 0, false, fmt.Errorf("metric %s: the champion has %w (its metrics: %s)", metric, ErrNoMetric, strings.Join(slices.Sorted(maps.Keys(champion)), ", "))
	case !isFinite(cand) || !isFinite(champ):
		return cand, champ, false, fmt.Errorf("metric %s: candidate %v, champion %v: not numbers that can be compared", metric, cand, champ)
	}
	gain := cand - champ
	if LowerIsBetter(metric) {
		gain = -gain
	}
	return cand, champ, gain >= margin, nil
}

// FiniteOnly splits metrics into the finite ones and the names of the
// others, sorted: a ROC AUC over a hold-out of one class is NaN, which
// neither JSON nor the hub take.
func FiniteOnly(m map[string]float64) (finite map[string]float64, dropped []string) {
	finite = make(map[string]float64, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !isFinite(m[k]) {
			dropped = append(dropped, k)
			continue
		}
		finite[k] = m[k]
	}
	return finite, dropped
}

func isFinite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
