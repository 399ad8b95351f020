// Package gates judges the steps of a staged rollout. A rollout moves a
// model from a baseline version to a new one a few agents at a time; after
// each step its gates compare what the step's agents (the canary group)
// measured with what the agents still on the old version (the baseline
// group) measured, and with absolute limits: error rate, latency quantiles,
// drift, accuracy and log loss from feedback labels, GPU health and shadow
// agreement.
//
// A gate judges only with enough samples (MinSamples); below that its
// judgement is inconclusive, never a pass. A comparison with the baseline is
// either a fixed margin (MaxIncrease, absolute or relative) or a one-sided
// statistical test: Mann–Whitney U on the latency histograms, or a pooled
// two-proportion z-test on error, accuracy or agreement rates. A failing
// judgement counts against the gate only once it has repeated FailureLimit
// times in a row (Tracker), so that one noisy window does not roll back a
// release.
//
// Everything here is pure and deterministic: no clock, no I/O, no
// randomness. Judge and Evaluate never panic on bad input; a gate that does
// not validate, or a sample that makes no sense, yields an inconclusive
// judgement that says why. Every judgement carries its inputs, numbers and
// verdict, and marshals to JSON (it never holds NaN or ±Inf).
package gates

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Metric names what a gate measures.
type Metric string

// The metrics a gate can measure. Whether a higher or a lower value is the
// bad direction is fixed per metric (see Gate): higher is worse for all but
// accuracy and shadow agreement, and for feature drift it follows the
// gate's limit.
const (
	// ErrorRate is Errors/Requests, a share in [0, 1]. Higher is worse.
	ErrorRate Metric = "error_rate"
	// LatencyP50 is the median latency of answered requests, in seconds,
	// read from the latency histogram. Higher is worse.
	LatencyP50 Metric = "latency_p50"
	// LatencyP95 is the 95th percentile latency, in seconds. Higher is worse.
	LatencyP95 Metric = "latency_p95"
	// LatencyP99 is the 99th percentile latency, in seconds. Higher is worse.
	LatencyP99 Metric = "latency_p99"
	// DriftShare is the share of features judged drifted, in [0, 1].
	// Higher is worse.
	DriftShare Metric = "drift_share"
	// FeatureDrift is one feature's drift score (Gate.Feature). A gate with
	// Max reads it as a distance (higher is worse); a gate with Min reads it
	// as a p-value (lower is worse).
	FeatureDrift Metric = "feature_drift"
	// Accuracy is the share of predictions that matched their feedback
	// labels, in [0, 1]. Lower is worse.
	Accuracy Metric = "accuracy"
	// LogLoss is the mean log loss against feedback labels. Higher is worse.
	LogLoss Metric = "log_loss"
	// GPUHealth is the number of the group's agents with an unhealthy GPU
	// (from NVML). Higher is worse. It takes only an absolute Max.
	GPUHealth Metric = "gpu_unhealthy"
	// ShadowAgreement is the share of shadowed requests on which the new
	// version agreed with the serving one, in [0, 1]. Lower is worse.
	ShadowAgreement Metric = "shadow_agreement"
)

// The statistical tests a gate can use instead of a fixed margin.
const (
	// MannWhitney is the one-sided Mann–Whitney U test on the two groups'
	// latency histograms: it fails when the canary's latencies are
	// stochastically greater than the baseline's. For the latency metrics.
	MannWhitney = "mann_whitney"
	// TwoProportion is the one-sided pooled two-proportion z-test: it fails
	// when the canary's error rate is higher (or its accuracy or agreement
	// rate lower) than the baseline's. For error_rate, accuracy and
	// shadow_agreement.
	TwoProportion = "two_proportion"
)

// Defaults applied where a Gate leaves a field zero.
const (
	// DefaultAlpha is the significance level of a statistical test.
	DefaultAlpha = 0.05
	// DefaultMinSamples is the number of canary samples (requests, or
	// labelled or shadowed rows) below which a gate is inconclusive.
	DefaultMinSamples = 100
	// DefaultGPUMinSamples is MinSamples' default for GPUHealth, whose
	// samples are agents.
	DefaultGPUMinSamples = 1
	// DefaultFailureLimit is the number of consecutive failing judgements
	// after which a gate counts as failed: by default the first failure
	// counts (Argo Rollouts' failureLimit 0).
	DefaultFailureLimit = 1
)

// metricInfo is what Validate and Judge know about a metric.
type metricInfo struct {
	// max and min: the absolute limits the metric takes.
	max, min bool
	// share: values (and absolute limits) lie in [0, 1].
	share bool
	// lowerWorse: a lower value is the bad direction (for FeatureDrift it
	// is decided by the gate's limit instead).
	lowerWorse bool
	// baseline: the metric can be compared with the baseline.
	baseline bool
	// test: the statistical test the metric takes, if any.
	test string
	// samples names what MinSamples counts, for messages.
	samples string
}

var metrics = map[Metric]metricInfo{
	ErrorRate:       {max: true, share: true, baseline: true, test: TwoProportion, samples: "requests"},
	LatencyP50:      {max: true, baseline: true, test: MannWhitney, samples: "answered requests"},
	LatencyP95:      {max: true, baseline: true, test: MannWhitney, samples: "answered requests"},
	LatencyP99:      {max: true, baseline: true, test: MannWhitney, samples: "answered requests"},
	DriftShare:      {max: true, share: true, baseline: true, samples: "requests"},
	FeatureDrift:    {max: true, min: true, baseline: true, samples: "requests"},
	Accuracy:        {min: true, share: true, lowerWorse: true, baseline: true, test: TwoProportion, samples: "labelled rows"},
	LogLoss:         {max: true, baseline: true, samples: "labelled rows"},
	GPUHealth:       {max: true, samples: "agents"},
	ShadowAgreement: {min: true, share: true, lowerWorse: true, baseline: true, test: TwoProportion, samples: "shadowed rows"},
}

// Metrics lists the known metrics, sorted by name.
func Metrics() []Metric {
	out := make([]Metric, 0, len(metrics))
	for m := range metrics {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

// Gate is one health check of a rollout step.
//
// A gate fails a judgement when the canary breaks an absolute limit (Max,
// Min) or, when it has one, its baseline comparison (MaxIncrease, or Test).
// The bad direction is fixed per metric: higher is worse for error rate,
// latencies, drift share, log loss and unhealthy GPUs; lower is worse for
// accuracy and shadow agreement; for feature drift a gate with Max treats
// the score as a distance (higher is worse) and one with Min as a p-value
// (lower is worse).
type Gate struct {
	// Name identifies the gate within a rollout; the Tracker counts its
	// consecutive failures by it. Required.
	Name string `json:"name"`
	// Metric is what the gate measures.
	Metric Metric `json:"metric"`
	// Feature is the feature whose drift score a FeatureDrift gate reads
	// (Sample.FeatureDrift). Only for FeatureDrift, where it is required.
	Feature string `json:"feature,omitempty"`
	// Max fails the canary when its value is above it: for the metrics
	// where higher is worse (and FeatureDrift read as a distance).
	// Latencies are in seconds, GPUHealth in agents.
	Max *float64 `json:"max,omitempty"`
	// Min fails the canary when its value is below it: for accuracy,
	// shadow agreement and FeatureDrift read as a p-value.
	Min *float64 `json:"min,omitempty"`
	// MaxIncrease compares the canary with the baseline by a fixed margin,
	// in the metric's unit: it fails when the canary is worse than the
	// baseline by more than MaxIncrease (canary − baseline > MaxIncrease
	// where higher is worse, baseline − canary > MaxIncrease where lower is
	// worse). With Relative the margin is a fraction of the baseline: fail
	// when canary > baseline·(1+MaxIncrease), or canary <
	// baseline·(1−MaxIncrease) where lower is worse. Not for GPUHealth.
	MaxIncrease *float64 `json:"max_increase,omitempty"`
	// Relative makes MaxIncrease a fraction of the baseline's value.
	Relative bool `json:"relative,omitempty"`
	// Test compares the canary with the baseline by a one-sided
	// statistical test instead of a fixed margin: MannWhitney (latency
	// metrics) or TwoProportion (error rate, accuracy, shadow agreement).
	// The judgement fails when the p-value is below Alpha. A test and
	// MaxIncrease exclude each other.
	Test string `json:"test,omitempty"`
	// Alpha is the test's significance level, in (0, 1); zero means
	// DefaultAlpha. Only with Test.
	Alpha float64 `json:"alpha,omitempty"`
	// MinSamples is the number of samples each group needs before the
	// gate judges it: requests for error rate and drift, answered requests
	// for latency, labelled rows for accuracy and log loss, shadowed rows
	// for agreement, agents for GPUHealth. Below it the canary's judgement
	// is inconclusive, and the baseline is not compared with. Zero means
	// DefaultMinSamples (DefaultGPUMinSamples for GPUHealth).
	MinSamples uint64 `json:"min_samples,omitempty"`
	// FailureLimit is the number of consecutive failing judgements after
	// which the gate counts as failed; zero means DefaultFailureLimit (the
	// first failure counts). Note the offset from Argo Rollouts, whose
	// failureLimit counts the failures tolerated: its failureLimit n is
	// FailureLimit n+1 here.
	FailureLimit int `json:"failure_limit,omitempty"`
}

// alpha is the gate's significance level, its default applied.
func (g Gate) alpha() float64 {
	if g.Alpha == 0 {
		return DefaultAlpha
	}
	return g.Alpha
}

// minSamples is the gate's sample minimum, its default applied.
func (g Gate) minSamples() uint64 {
	switch {
	case g.MinSamples > 0:
		return g.MinSamples
	case g.Metric == GPUHealth:
		return DefaultGPUMinSamples
	default:
		return DefaultMinSamples
	}
}

// failureLimit is the gate's failure limit, its default applied.
func (g Gate) failureLimit() int {
	if g.FailureLimit <= 0 {
		return DefaultFailureLimit
	}
	return g.FailureLimit
}

// lowerWorse reports whether a lower value of the gate's metric is the bad
// direction.
func (g Gate) lowerWorse() bool {
	if g.Metric == FeatureDrift {
		return g.Min != nil
	}
	return metrics[g.Metric].lowerWorse
}

// compares reports whether the gate compares the canary with the baseline.
func (g Gate) compares() bool { return g.MaxIncrease != nil || g.Test != "" }

// Validate reports what is wrong with the gate, if anything: one error
// naming the gate and listing every problem found, separated by "; ".
func (g Gate) Validate() error {
	var errs []string
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Sprintf(format, args...))
	}
	if g.Name == "" {
		bad("a gate needs a name (failures are counted by it)")
	}
	info, known := metrics[g.Metric]
	switch {
	case g.Metric == "":
		bad("no metric")
	case !known:
		bad("unknown metric %q (known: %v)", g.Metric, Metrics())
	}
	if g.Metric == FeatureDrift && g.Feature == "" {
		bad("feature_drift needs a feature")
	}
	if g.Metric != FeatureDrift && g.Feature != "" {
		bad("feature %q given, but only feature_drift reads a feature", g.Feature)
	}
	limit := func(name string, v *float64, allowed bool) {
		switch {
		case v == nil:
		case !known:
		case !allowed && info.min:
			bad("%s takes no %s: a lower %s is the bad direction, so use Min", g.Metric, name, g.Metric)
		case !allowed:
			bad("%s takes no %s: a higher %s is the bad direction, so use Max", g.Metric, name, g.Metric)
		case math.IsNaN(*v) || math.IsInf(*v, 0):
			bad("%s %v is not a finite number", name, *v)
		case *v < 0:
			bad("%s %v is negative", name, *v)
		case (info.share || g.Metric == FeatureDrift && name == "min") && *v > 1:
			bad("%s %v is above 1, but %s is a share between 0 and 1", name, *v, g.scoreName())
		}
	}
	limit("max", g.Max, info.max)
	limit("min", g.Min, info.min)
	if g.Metric == FeatureDrift && g.Max != nil && g.Min != nil {
		bad("feature_drift takes Max (a distance) or Min (a p-value), not both")
	}
	if g.Metric == FeatureDrift && g.Max == nil && g.Min == nil {
		bad("feature_drift needs Max (the score is a distance: higher is worse) or Min (a p-value: lower is worse)")
	}
	if known && g.compares() && !info.baseline {
		bad("%s cannot be compared with the baseline (an agent's GPU health does not depend on its peers): use Max", g.Metric)
	}
	if g.MaxIncrease != nil {
		switch v := *g.MaxIncrease; {
		case math.IsNaN(v) || math.IsInf(v, 0):
			bad("max increase %v is not a finite number", v)
		case v < 0:
			bad("max increase %v is negative", v)
		case g.Relative && g.lowerWorse() && v >= 1:
			bad("relative max increase %v of %s can never fail: a lower value is worse, and canary < baseline·(1−%v) is impossible", v, g.Metric, v)
		}
	}
	if g.Relative && g.MaxIncrease == nil {
		bad("relative without max increase")
	}
	switch {
	case g.Test == "":
		if g.Alpha != 0 {
			bad("alpha %v without a test", g.Alpha)
		}
	case g.Test != MannWhitney && g.Test != TwoProportion:
		bad("unknown test %q (known: %s, %s)", g.Test, MannWhitney, TwoProportion)
	case known && info.test != g.Test:
		if info.test == "" {
			bad("test %s does not apply to %s, which takes no test: use max increase", g.Test, g.Metric)
		} else {
			bad("test %s does not apply to %s: use %s", g.Test, g.Metric, info.test)
		}
	}
	if g.Test != "" && g.MaxIncrease != nil {
		bad("a test and a max increase exclude each other: the test replaces the fixed margin")
	}
	if g.Alpha != 0 && !(g.Alpha > 0 && g.Alpha < 1) {
		bad("alpha %v is not between 0 and 1", g.Alpha)
	}
	if g.FailureLimit < 0 {
		bad("failure limit %d is negative", g.FailureLimit)
	}
	if known && g.Max == nil && g.Min == nil && !g.compares() {
		bad("nothing to check: give an absolute limit (max or min), a max increase over the baseline, or a test")
	}
	if len(errs) == 0 {
		return nil
	}
	name := g.Name
	if name == "" {
		name = string(g.Metric)
	}
	return fmt.Errorf("gate %q: %s", name, strings.Join(errs, "; "))
}

// scoreName is the gate's metric as messages name it: a feature's drift
// score names the feature.
func (g Gate) scoreName() string {
	if g.Metric == FeatureDrift {
		return fmt.Sprintf("feature_drift(%s)", g.Feature)
	}
	return string(g.Metric)
}

// ValidateGates validates each gate of a rollout, and that their names are
// unique (the Tracker counts failures by name).
func ValidateGates(gates []Gate) error {
	var errs []error
	seen := make(map[string]bool, len(gates))
	for _, g := range gates {
		if err := g.Validate(); err != nil {
			errs = append(errs, err)
		}
		if g.Name != "" && seen[g.Name] {
			errs = append(errs, fmt.Errorf("gate %q: the name is used twice", g.Name))
		}
		seen[g.Name] = true
	}
	return errors.Join(errs...)
}
