package gates

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Result is the verdict of a judgement, or of a step.
type Result string

// The verdicts.
const (
	// Pass: every check was made and none failed.
	Pass Result = "pass"
	// Fail: a check failed.
	Fail Result = "fail"
	// Inconclusive: too few samples, an unknown value, or nothing that
	// could be checked; never a pass.
	Inconclusive Result = "inconclusive"
)

// Judgement is one gate's judgement of one step: its inputs, the numbers
// it computed, what it checked and its verdict. It holds no NaN or ±Inf, so
// it always marshals to JSON.
type Judgement struct {
	// Gate is the gate's name.
	Gate string `json:"gate"`
	// Metric is what the gate measures; Feature, for FeatureDrift, which
	// feature's score.
	Metric  Metric `json:"metric"`
	Feature string `json:"feature,omitempty"`
	// Result is the verdict of this judgement alone; whether the gate
	// counts as failed also depends on its FailureLimit (GateFailed).
	Result Result `json:"result"`
	// Canary is the metric's value in the canary group, when HasCanary.
	Canary    float64 `json:"canary"`
	HasCanary bool    `json:"has_canary"`
	// Baseline is the metric's value in the baseline group, when
	// HasBaseline: the gate compares with the baseline and the baseline
	// had enough samples and a known value.
	Baseline    float64 `json:"baseline"`
	HasBaseline bool    `json:"has_baseline"`
	// Test is the statistical test used, if any; Statistic its statistic
	// (U for Mann–Whitney, z for the two-proportion test) and PValue its
	// one-sided p-value, compared with Alpha. Statistic is nil when every
	// value was tied (no variance, p = 1).
	Test      string   `json:"test,omitempty"`
	Statistic *float64 `json:"statistic,omitempty"`
	PValue    *float64 `json:"p_value,omitempty"`
	Alpha     float64  `json:"alpha,omitempty"`
	// Limit says, human readable, what was checked and how it came out,
	// one check after another separated by "; ", e.g. "error_rate 0.21 >
	// max 0.05" or "latency_p95 36ms vs baseline 12ms: Mann–Whitney
	// p=1.2e-09 < 0.05".
	Limit string `json:"limit"`
	// Samples is the canary's number of samples (see Gate.MinSamples),
	// BaselineSamples the baseline's, MinSamples the number needed.
	Samples         uint64 `json:"samples"`
	BaselineSamples uint64 `json:"baseline_samples"`
	MinSamples      uint64 `json:"min_samples"`
	// Reason says why the verdict is what it is: the failed checks, why
	// the gate could not judge, or why the baseline was not compared with.
	Reason string `json:"reason"`
	// Failures is the number of consecutive failing judgements of the gate,
	// this one included, and GateFailed whether that reached FailureLimit;
	// Evaluate sets them from its Tracker (Judge alone leaves them zero,
	// but for FailureLimit).
	Failures     int  `json:"failures"`
	FailureLimit int  `json:"failure_limit"`
	GateFailed   bool `json:"gate_failed"`
}

// empty reports whether the sample is of no group at all: no agents, no
// requests, no rows.
func (s Sample) empty() bool {
	return s.Agents == 0 && s.Requests == 0 && s.answered() == 0 && s.AccuracyRows == 0 && s.ShadowRows == 0
}

// measurement is a metric's value in one group.
type measurement struct {
	value   float64
	known   bool
	why     string // why the value is unknown
	samples uint64
}

// measure reads the gate's metric from a sample.
func (g Gate) measure(s Sample) measurement {
	ratio := func(v *float64, rows uint64, unknown string) measurement {
		m := measurement{samples: rows}
		switch {
		case v == nil:
			m.why = unknown
		case math.IsNaN(*v) || math.IsInf(*v, 0):
			m.why = fmt.Sprintf("%s %v is not a finite number", g.Metric, *v)
		case metrics[g.Metric].share && (*v < 0 || *v > 1):
			m.why = fmt.Sprintf("%s %v is not between 0 and 1", g.Metric, *v)
		default:
			m.value, m.known = *v, true
		}
		return m
	}
	switch g.Metric {
	case ErrorRate:
		m := measurement{samples: s.Requests}
		switch {
		case s.Requests == 0:
			m.why = "no requests"
		case s.Errors > s.Requests:
			m.why = fmt.Sprintf("more errors (%d) than requests (%d)", s.Errors, s.Requests)
		default:
			m.value, m.known = float64(s.Errors)/float64(s.Requests), true
		}
		return m
	case LatencyP50, LatencyP95, LatencyP99:
		m := measurement{samples: s.answered()}
		if m.samples == 0 {
			m.why = "no answered requests"
			return m
		}
		q := map[Metric]float64{LatencyP50: 0.5, LatencyP95: 0.95, LatencyP99: 0.99}[g.Metric]
		m.value, m.known = s.LatencyQuantile(q), true
		return m
	case DriftShare:
		return ratio(s.DriftShare, s.Requests, "drift share is unknown")
	case FeatureDrift:
		v, ok := s.FeatureDrift[g.Feature]
		if !ok {
			return measurement{samples: s.Requests, why: fmt.Sprintf("no drift score for feature %q", g.Feature)}
		}
		return ratio(&v, s.Requests, "drift score is unknown")
	case Accuracy:
		return ratio(s.Accuracy, s.AccuracyRows, "accuracy is unknown (no feedback labels yet)")
	case LogLoss:
		return ratio(s.LogLoss, s.AccuracyRows, "log loss is unknown (no feedback labels yet)")
	case ShadowAgreement:
		return ratio(s.ShadowAgreement, s.ShadowRows, "shadow agreement is unknown")
	case GPUHealth:
		m := measurement{samples: s.Agents}
		switch {
		case s.Agents == 0:
			m.why = "no agents"
		case s.GPUUnhealthy > s.Agents:
			m.why = fmt.Sprintf("more agents with an unhealthy GPU (%d) than agents (%d)", s.GPUUnhealthy, s.Agents)
		default:
			m.value, m.known = float64(s.GPUUnhealthy), true
		}
		return m
	}
	return measurement{why: fmt.Sprintf("unknown metric %q", g.Metric)}
}

// format writes a value of the gate's metric for people: latencies as
// durations, the rest with four significant digits.
func (g Gate) format(v float64) string {
	switch g.Metric {
	case LatencyP50, LatencyP95, LatencyP99:
		return formatSeconds(v)
	case GPUHealth:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// formatSeconds writes seconds with three significant digits in a fitting
// unit: "12.5ms", "840µs", "1.41s".
func formatSeconds(s float64) string {
	unit, scale := "s", 1.0
	switch a := math.Abs(s); {
	case a == 0:
	case a < 1e-3:
		unit, scale = "µs", 1e6
	case a < 1:
		unit, scale = "ms", 1e3
	}
	return strconv.FormatFloat(s*scale, 'g', 3, 64) + unit
}

// formatP writes a p-value.
func formatP(p float64) string { return strconv.FormatFloat(p, 'g', 3, 64) }

// Judge judges one gate on one step: the canary group's measure against the
// gate's absolute limits and, when the gate has one, its comparison with
// the baseline group.
//
// The judgement is Inconclusive when the gate is invalid (see Validate) or
// when the canary has fewer than MinSamples samples or no known value.
// Otherwise it is Fail when any check failed, and Pass when none did.
//
// The baseline is compared with only when it too has MinSamples samples
// and a known value; otherwise the gate judges by its absolute limits
// alone. A gate without absolute limits then depends on why: a baseline
// group that exists but is too quiet (or lacks labels) leaves it
// Inconclusive, to be judged again with more traffic; an empty baseline
// group (the zero Sample: no agents, requests or rows, as at the last step
// of a rollout, when every agent runs the new version) has nothing to
// compare with, and the gate passes, saying so in Reason.
func Judge(g Gate, canary, baseline Sample) Judgement {
	j := Judgement{
		Gate:         g.Name,
		Metric:       g.Metric,
		Feature:      g.Feature,
		Result:       Inconclusive,
		MinSamples:   g.minSamples(),
		FailureLimit: g.failureLimit(),
	}
	if err := g.Validate(); err != nil {
		j.Reason = "invalid gate: " + err.Error()
		return j
	}
	name := g.scoreName()
	c := g.measure(canary)
	j.Samples, j.Canary, j.HasCanary = c.samples, c.value, c.known
	if c.samples < j.MinSamples {
		j.Reason = fmt.Sprintf("the canary has %d %s, fewer than the %d needed", c.samples, metrics[g.Metric].samples, j.MinSamples)
		return j
	}
	if !c.known {
		j.Reason = "in the canary group, " + c.why
		return j
	}

	var checks, failed, notes []string
	absent := false // the baseline group is empty
	check := func(bad bool, format string, args ...any) {
		s := fmt.Sprintf(format, args...)
		checks = append(checks, s)
		if bad {
			failed = append(failed, s)
		}
	}
	if g.Max != nil {
		if c.value > *g.Max {
			check(true, "%s %s > max %s", name, g.format(c.value), g.format(*g.Max))
		} else {
			check(false, "%s %s ≤ max %s", name, g.format(c.value), g.format(*g.Max))
		}
	}
	if g.Min != nil {
		if c.value < *g.Min {
			check(true, "%s %s < min %s", name, g.format(c.value), g.format(*g.Min))
		} else {
			check(false, "%s %s ≥ min %s", name, g.format(c.value), g.format(*g.Min))
		}
	}

	if g.compares() {
		b := g.measure(baseline)
		j.BaselineSamples = b.samples
		switch {
		case baseline.empty():
			absent = true
			notes = append(notes, "no baseline group (no agent left on the old version): not compared with")
		case b.samples < j.MinSamples:
			notes = append(notes, fmt.Sprintf("the baseline has %d %s, fewer than the %d needed: not compared with", b.samples, metrics[g.Metric].samples, j.MinSamples))
		case !b.known:
			notes = append(notes, "in the baseline group, "+b.why+": not compared with")
		default:
			j.Baseline, j.HasBaseline = b.value, true
			vs := fmt.Sprintf("%s %s vs baseline %s", name, g.format(c.value), g.format(b.value))
			if g.Test != "" {
				g.test(&j, canary, baseline, vs, check)
			} else {
				g.margin(c.value, b.value, vs, check)
			}
		}
	}

	j.Limit = strings.Join(checks, "; ")
	switch {
	case len(failed) > 0:
		j.Result = Fail
		notes = append([]string{"failed: " + strings.Join(failed, "; ")}, notes...)
	case len(checks) > 0 || absent:
		j.Result = Pass
	default:
		notes = append(notes, "no absolute limit to judge by instead")
	}
	j.Reason = strings.Join(notes, "; ")
	return j
}

// margin checks the canary's value c against the baseline's b by the
// gate's MaxIncrease, absolute or relative, in the metric's bad direction.
func (g Gate) margin(c, b float64, vs string, check func(bool, string, ...any)) {
	m := *g.MaxIncrease
	switch {
	case g.Relative && !g.lowerWorse():
		limit := b * (1 + m)
		check(c > limit, "%s: %s baseline·(1+%g) = %s", vs, cmp(c > limit, ">", "≤"), m, g.format(limit))
	case g.Relative:
		limit := b * (1 - m)
		check(c < limit, "%s: %s baseline·(1−%g) = %s", vs, cmp(c < limit, "<", "≥"), m, g.format(limit))
	case !g.lowerWorse():
		bad := c-b > m
		check(bad, "%s: %s baseline + %s = %s", vs, cmp(bad, ">", "≤"), g.format(m), g.format(b+m))
	default:
		bad := b-c > m
		check(bad, "%s: %s baseline − %s = %s", vs, cmp(bad, "<", "≥"), g.format(m), g.format(b-m))
	}
}

// cmp picks the comparison sign to show.
func cmp(bad bool, ifBad, ifGood string) string {
	if bad {
		return ifBad
	}
	return ifGood
}

// test runs the gate's one-sided statistical test of the canary being worse
// than the baseline, and records it in j.
func (g Gate) test(j *Judgement, canary, baseline Sample, vs string, check func(bool, string, ...any)) {
	var (
		r     testResult
		ok    bool
		title string
	)
	switch g.Test {
	case MannWhitney:
		title = "Mann–Whitney"
		x, y := canary.histogram(), baseline.histogram()
		r, ok = mannWhitneyGreater(x[:], y[:])
	case TwoProportion:
		title = "two-proportion"
		kc, nc := g.badCount(canary)
		kb, nb := g.badCount(baseline)
		r, ok = twoProportionGreater(kc, nc, kb, nb)
	}
	if !ok { // Judge checked both groups' samples; kept for safety
		j.HasBaseline = false
		return
	}
	alpha := g.alpha()
	j.Test, j.Alpha = g.Test, alpha
	j.PValue = finite(r.p)
	if !math.IsNaN(r.z) {
		j.Statistic = finite(r.stat)
	}
	tied := ""
	if math.IsNaN(r.z) {
		tied = " (no variance: every value tied)"
	}
	bad := r.p < alpha
	check(bad, "%s: %s p=%s %s %s%s", vs, title, formatP(r.p), cmp(bad, "<", "≥"), formatP(alpha), tied)
}

// badCount is, for the two-proportion test, how many of a group's samples
// went wrong, and of how many: errors of requests, wrong predictions of
// labelled rows, disagreements of shadowed rows.
func (g Gate) badCount(s Sample) (bad, n float64) {
	switch g.Metric {
	case ErrorRate:
		return float64(s.Errors), float64(s.Requests)
	case Accuracy:
		if s.Accuracy != nil {
			return (1 - *s.Accuracy) * float64(s.AccuracyRows), float64(s.AccuracyRows)
		}
	case ShadowAgreement:
		if s.ShadowAgreement != nil {
			return (1 - *s.ShadowAgreement) * float64(s.ShadowRows), float64(s.ShadowRows)
		}
	}
	return 0, 0
}

// finite returns a pointer to v, or nil when v is NaN or infinite.
func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}
