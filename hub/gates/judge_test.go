package gates

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// traffic is a sample of n requests, errs of them failed, the answered
// ones' latencies spread over buckets around centre as 50%, 45%, 4%, 1%.
func traffic(n, errs uint64, centre int) Sample {
	ok := n - errs
	h := map[int]uint64{centre: ok / 2, centre + 4: ok * 45 / 100, centre + 8: ok * 4 / 100}
	h[centre+12] = ok - h[centre] - h[centre+4] - h[centre+8]
	return Sample{Requests: n, Errors: errs, Latency: h, Agents: 4}
}

func TestJudgeEveryMetric(t *testing.T) {
	base := traffic(10000, 50, 28)
	labelled := func(acc, loss float64, rows uint64) Sample {
		return Sample{Requests: 1000, Accuracy: ptr(acc), LogLoss: ptr(loss), AccuracyRows: rows}
	}
	for _, c := range []struct {
		name   string
		g      Gate
		canary Sample
		want   Result
		say    string // in Limit for pass and fail, in Reason for inconclusive
	}{
		{"error pass", Gate{Metric: ErrorRate, Max: ptr(0.05)}, traffic(1000, 10, 40), Pass, "error_rate 0.01 ≤ max 0.05"},
		{"error fail", Gate{Metric: ErrorRate, Max: ptr(0.05)}, traffic(1000, 210, 40), Fail, "error_rate 0.21 > max 0.05"},
		{"error few", Gate{Metric: ErrorRate, Max: ptr(0.05)}, traffic(40, 30, 40), Inconclusive, "the canary has 40 requests, fewer than the 100 needed"},
		{"error none", Gate{Metric: ErrorRate, Max: ptr(0.05), MinSamples: 1}, Sample{}, Inconclusive, "the canary has 0 requests"},
		{"error nonsense", Gate{Metric: ErrorRate, Max: ptr(0.05)}, Sample{Requests: 100, Errors: 101}, Inconclusive, "more errors (101) than requests (100)"},
		{"p50 pass", Gate{Metric: LatencyP50, Max: ptr(0.005)}, traffic(1000, 0, 28), Pass, "latency_p50 3.2ms ≤ max 5ms"},
		{"p50 fail", Gate{Metric: LatencyP50, Max: ptr(0.002)}, traffic(1000, 0, 28), Fail, "latency_p50 3.2ms > max 2ms"},
		{"p95 pass", Gate{Metric: LatencyP95, Max: ptr(0.007)}, traffic(1000, 0, 28), Pass, "latency_p95 6.4ms ≤ max 7ms"},
		{"p95 fail", Gate{Metric: LatencyP95, Max: ptr(0.006)}, traffic(1000, 0, 28), Fail, "latency_p95 6.4ms > max 6ms"},
		{"p99 fail", Gate{Metric: LatencyP99, Max: ptr(0.01)}, traffic(1000, 0, 28), Fail, "latency_p99 12.8ms > max 10ms"},
		{"p99 few answered", Gate{Metric: LatencyP99, Max: ptr(0.03)}, Sample{Requests: 1000, Errors: 1000}, Inconclusive, "0 answered requests"},
		{"drift pass", Gate{Metric: DriftShare, Max: ptr(0.3)}, Sample{Requests: 500, DriftShare: ptr(0.1)}, Pass, "drift_share 0.1 ≤ max 0.3"},
		{"drift fail", Gate{Metric: DriftShare, Max: ptr(0.3)}, Sample{Requests: 500, DriftShare: ptr(0.5)}, Fail, "drift_share 0.5 > max 0.3"},
		{"drift unknown", Gate{Metric: DriftShare, Max: ptr(0.3)}, Sample{Requests: 500}, Inconclusive, "drift share is unknown"},
		{"drift NaN", Gate{Metric: DriftShare, Max: ptr(0.3)}, Sample{Requests: 500, DriftShare: ptr(math.NaN())}, Inconclusive, "not a finite number"},
		{"drift out of range", Gate{Metric: DriftShare, Max: ptr(0.3)}, Sample{Requests: 500, DriftShare: ptr(1.5)}, Inconclusive, "not between 0 and 1"},
		{"drift few", Gate{Metric: DriftShare, Max: ptr(0.3)}, Sample{Requests: 5, DriftShare: ptr(0.5)}, Inconclusive, "5 requests"},
		{"distance pass", Gate{Metric: FeatureDrift, Feature: "tenure", Max: ptr(0.1)}, Sample{Requests: 500, FeatureDrift: map[string]float64{"tenure": 0.05}}, Pass, "feature_drift(tenure) 0.05 ≤ max 0.1"},
		{"distance fail", Gate{Metric: FeatureDrift, Feature: "tenure", Max: ptr(0.1)}, Sample{Requests: 500, FeatureDrift: map[string]float64{"tenure": 0.71}}, Fail, "feature_drift(tenure) 0.71 > max 0.1"},
		{"p-value pass", Gate{Metric: FeatureDrift, Feature: "plan", Min: ptr(0.05)}, Sample{Requests: 500, FeatureDrift: map[string]float64{"plan": 0.4}}, Pass, "feature_drift(plan) 0.4 ≥ min 0.05"},
		{"p-value fail", Gate{Metric: FeatureDrift, Feature: "plan", Min: ptr(0.05)}, Sample{Requests: 500, FeatureDrift: map[string]float64{"plan": 0.001}}, Fail, "feature_drift(plan) 0.001 < min 0.05"},
		{"feature missing", Gate{Metric: FeatureDrift, Feature: "plan", Min: ptr(0.05)}, Sample{Requests: 500, FeatureDrift: map[string]float64{"tenure": 0.001}}, Inconclusive, `no drift score for feature "plan"`},
		{"accuracy pass", Gate{Metric: Accuracy, Min: ptr(0.9)}, labelled(0.93, 0.2, 400), Pass, "accuracy 0.93 ≥ min 0.9"},
		{"accuracy fail", Gate{Metric: Accuracy, Min: ptr(0.9)}, labelled(0.81, 0.2, 400), Fail, "accuracy 0.81 < min 0.9"},
		{"accuracy few rows", Gate{Metric: Accuracy, Min: ptr(0.9)}, labelled(0.5, 0.2, 99), Inconclusive, "99 labelled rows, fewer than the 100 needed"},
		{"accuracy no labels", Gate{Metric: Accuracy, Min: ptr(0.9)}, Sample{Requests: 1000, AccuracyRows: 200}, Inconclusive, "no feedback labels yet"},
		{"loss pass", Gate{Metric: LogLoss, Max: ptr(0.5)}, labelled(0.9, 0.31, 400), Pass, "log_loss 0.31 ≤ max 0.5"},
		{"loss fail", Gate{Metric: LogLoss, Max: ptr(0.5)}, labelled(0.9, 0.72, 400), Fail, "log_loss 0.72 > max 0.5"},
		{"loss few", Gate{Metric: LogLoss, Max: ptr(0.5), MinSamples: 1000}, labelled(0.9, 0.72, 400), Inconclusive, "400 labelled rows, fewer than the 1000 needed"},
		{"gpu pass", Gate{Metric: GPUHealth, Max: ptr(0)}, Sample{Agents: 3}, Pass, "gpu_unhealthy 0 ≤ max 0"},
		{"gpu fail", Gate{Metric: GPUHealth, Max: ptr(0)}, Sample{Agents: 3, GPUUnhealthy: 1}, Fail, "gpu_unhealthy 1 > max 0"},
		{"gpu no agents", Gate{Metric: GPUHealth, Max: ptr(0)}, Sample{}, Inconclusive, "0 agents, fewer than the 1 needed"},
		{"gpu nonsense", Gate{Metric: GPUHealth, Max: ptr(0)}, Sample{Agents: 1, GPUUnhealthy: 2}, Inconclusive, "more agents with an unhealthy GPU"},
		{"shadow pass", Gate{Metric: ShadowAgreement, Min: ptr(0.98)}, Sample{ShadowAgreement: ptr(0.995), ShadowRows: 5000}, Pass, "shadow_agreement 0.995 ≥ min 0.98"},
		{"shadow fail", Gate{Metric: ShadowAgreement, Min: ptr(0.98)}, Sample{ShadowAgreement: ptr(0.9), ShadowRows: 5000}, Fail, "shadow_agreement 0.9 < min 0.98"},
		{"shadow few", Gate{Metric: ShadowAgreement, Min: ptr(0.98)}, Sample{ShadowAgreement: ptr(0.9), ShadowRows: 50}, Inconclusive, "50 shadowed rows"},
		{"invalid gate", Gate{Metric: Accuracy, Max: ptr(0.9)}, labelled(0.5, 0.2, 400), Inconclusive, "invalid gate: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.g.Name = c.name
			j := Judge(c.g, c.canary, base)
			text := j.Limit
			if c.want == Inconclusive {
				text = j.Reason
			}
			if j.Result != c.want || !strings.Contains(text, c.say) {
				t.Errorf("%s, limit %q, reason %q; want %s saying %q", j.Result, j.Limit, j.Reason, c.want, c.say)
			}
			if j.Gate != c.name || j.Metric != c.g.Metric || j.HasBaseline || j.PValue != nil {
				t.Errorf("judgement %+v", j)
			}
			if c.want != Inconclusive && !j.HasCanary {
				t.Error("a judged canary has no value")
			}
			if c.want == Fail && !strings.Contains(j.Reason, "failed: "+c.say) {
				t.Errorf("reason %q does not name the failed check", j.Reason)
			}
		})
	}
}

func TestJudgeAgainstBaseline(t *testing.T) {
	rate := func(errs uint64) Sample { return traffic(10000, errs, 40) }
	acc := func(a float64) Sample { return Sample{Accuracy: ptr(a), AccuracyRows: 1000} }
	pvalue := func(p float64) Sample { return Sample{Requests: 1000, FeatureDrift: map[string]float64{"f": p}} }
	for _, c := range []struct {
		name             string
		g                Gate
		canary, baseline Sample
		want             Result
		say              string
	}{
		{"absolute fail", Gate{Metric: ErrorRate, MaxIncrease: ptr(0.01)}, rate(300), rate(100), Fail,
			"error_rate 0.03 vs baseline 0.01: > baseline + 0.01 = 0.02"},
		{"absolute pass", Gate{Metric: ErrorRate, MaxIncrease: ptr(0.01)}, rate(150), rate(100), Pass,
			"error_rate 0.015 vs baseline 0.01: ≤ baseline + 0.01 = 0.02"},
		{"absolute better", Gate{Metric: ErrorRate, MaxIncrease: ptr(0)}, rate(50), rate(100), Pass, "≤ baseline + 0 = 0.01"},
		{"relative fail", Gate{Metric: LatencyP95, MaxIncrease: ptr(0.5), Relative: true}, traffic(1000, 0, 34), traffic(1000, 0, 28), Fail,
			"latency_p95 18.1ms vs baseline 6.4ms: > baseline·(1+0.5) = 9.6ms"},
		{"relative pass", Gate{Metric: LatencyP95, MaxIncrease: ptr(0.5), Relative: true}, traffic(1000, 0, 29), traffic(1000, 0, 28), Pass,
			"latency_p95 7.61ms vs baseline 6.4ms: ≤ baseline·(1+0.5) = 9.6ms"},
		{"relative on zero", Gate{Metric: ErrorRate, MaxIncrease: ptr(1), Relative: true}, rate(1), rate(0), Fail, "> baseline·(1+1) = 0"},
		{"latency absolute", Gate{Metric: LatencyP50, MaxIncrease: ptr(0.001)}, traffic(1000, 0, 30), traffic(1000, 0, 28), Fail,
			"latency_p50 4.53ms vs baseline 3.2ms: > baseline + 1ms = 4.2ms"},
		{"lower worse absolute fail", Gate{Metric: Accuracy, MaxIncrease: ptr(0.02)}, acc(0.85), acc(0.9), Fail,
			"accuracy 0.85 vs baseline 0.9: < baseline − 0.02 = 0.88"},
		{"lower worse absolute pass", Gate{Metric: Accuracy, MaxIncrease: ptr(0.02)}, acc(0.89), acc(0.9), Pass, "≥ baseline − 0.02 = 0.88"},
		{"lower worse relative pass", Gate{Metric: Accuracy, MaxIncrease: ptr(0.1), Relative: true}, acc(0.85), acc(0.9), Pass,
			"accuracy 0.85 vs baseline 0.9: ≥ baseline·(1−0.1) = 0.81"},
		{"lower worse relative fail", Gate{Metric: ShadowAgreement, MaxIncrease: ptr(0.01), Relative: true},
			Sample{ShadowAgreement: ptr(0.95), ShadowRows: 500}, Sample{ShadowAgreement: ptr(0.99), ShadowRows: 500}, Fail, "< baseline·(1−0.01) = 0.9801"},
		{"p-value score falls", Gate{Metric: FeatureDrift, Feature: "f", Min: ptr(0.01), MaxIncrease: ptr(0.5), Relative: true}, pvalue(0.02), pvalue(0.5), Fail,
			"feature_drift(f) 0.02 vs baseline 0.5: < baseline·(1−0.5) = 0.25"},
		{"distance rises", Gate{Metric: FeatureDrift, Feature: "f", Max: ptr(1), MaxIncrease: ptr(0.1)}, pvalue(0.5), pvalue(0.2), Fail,
			"feature_drift(f) 0.5 vs baseline 0.2: > baseline + 0.1 = 0.3"},
		{"drift share", Gate{Metric: DriftShare, MaxIncrease: ptr(0.2)}, Sample{Requests: 500, DriftShare: ptr(0.5)}, Sample{Requests: 500, DriftShare: ptr(0.4)}, Pass, "≤ baseline + 0.2"},
		{"log loss", Gate{Metric: LogLoss, MaxIncrease: ptr(0.1), Relative: true}, Sample{LogLoss: ptr(0.5), AccuracyRows: 200}, Sample{LogLoss: ptr(0.4), AccuracyRows: 200}, Fail, "> baseline·(1+0.1) = 0.44"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.g.Name = c.name
			j := Judge(c.g, c.canary, c.baseline)
			if j.Result != c.want || !strings.Contains(j.Limit, c.say) {
				t.Errorf("%s, limit %q, reason %q; want %s saying %q", j.Result, j.Limit, j.Reason, c.want, c.say)
			}
			if !j.HasBaseline || j.BaselineSamples == 0 {
				t.Errorf("no baseline recorded: %+v", j)
			}
		})
	}
}

func TestJudgeWithoutBaseline(t *testing.T) {
	canary := traffic(1000, 10, 40)
	both := Gate{Name: "errors", Metric: ErrorRate, Max: ptr(0.05), MaxIncrease: ptr(0.001)}
	// The last step: nobody is left on the old version.
	j := Judge(both, canary, Sample{})
	if j.Result != Pass || j.HasBaseline || j.Limit != "error_rate 0.01 ≤ max 0.05" ||
		j.Reason != "no baseline group (no agent left on the old version): not compared with" {
		t.Errorf("absolute limits only: %+v", j)
	}
	j = Judge(both, traffic(1000, 100, 40), traffic(30, 0, 40))
	if j.Result != Fail || j.HasBaseline || !strings.Contains(j.Reason, "failed: error_rate 0.1 > max 0.05; the baseline has 30 requests") {
		t.Errorf("absolute limit broken, baseline too small: %+v", j)
	}
	only := Gate{Name: "errors", Metric: ErrorRate, Test: TwoProportion}
	j = Judge(only, canary, Sample{Requests: 50, Agents: 2})
	if j.Result != Inconclusive || j.Limit != "" || !strings.Contains(j.Reason, "the baseline has 50 requests, fewer than the 100 needed: not compared with; no absolute limit to judge by instead") {
		t.Errorf("comparison only, quiet baseline: %+v", j)
	}
	j = Judge(only, canary, Sample{Agents: 2})
	if j.Result != Inconclusive {
		t.Errorf("comparison only, silent baseline: %+v", j)
	}
	j = Judge(only, canary, Sample{})
	if j.Result != Pass || j.Limit != "" || j.HasBaseline || j.Reason != "no baseline group (no agent left on the old version): not compared with" {
		t.Errorf("comparison only, no baseline group: %+v", j)
	}
	j = Judge(only, traffic(50, 0, 28), Sample{})
	if j.Result != Inconclusive {
		t.Errorf("comparison only, no baseline group, too few canary requests: %+v", j)
	}
	acc := Gate{Name: "acc", Metric: Accuracy, Min: ptr(0.8), MaxIncrease: ptr(0.05)}
	j = Judge(acc, Sample{Accuracy: ptr(0.9), AccuracyRows: 300}, Sample{AccuracyRows: 300})
	if j.Result != Pass || !strings.Contains(j.Reason, "in the baseline group, accuracy is unknown (no feedback labels yet): not compared with") {
		t.Errorf("baseline without labels: %+v", j)
	}
}

func TestJudgeStatisticalTests(t *testing.T) {
	errorsTest := Gate{Name: "errors", Metric: ErrorRate, Test: TwoProportion}
	j := Judge(errorsTest, traffic(1000, 200, 40), traffic(10000, 50, 28))
	if j.Result != Fail || j.Test != TwoProportion || j.PValue == nil || *j.PValue >= 1e-9 || j.Statistic == nil || *j.Statistic < 10 || j.Alpha != 0.05 ||
		!strings.Contains(j.Limit, "error_rate 0.2 vs baseline 0.005: two-proportion p=") || !strings.Contains(j.Limit, " < 0.05") {
		t.Errorf("20%% vs 0.5%%: %+v", j)
	}
	j = Judge(errorsTest, traffic(1000, 5, 40), traffic(10000, 50, 28))
	if j.Result != Pass || j.PValue == nil || *j.PValue < 0.4 || !strings.Contains(j.Limit, "≥ 0.05") {
		t.Errorf("equal rates: %+v", j)
	}
	// "slightly worse" of the golden cases: p = 0.334.
	loose := errorsTest
	loose.Alpha = 0.5
	for g, want := range map[*Gate]Result{&errorsTest: Pass, &loose: Fail} {
		if j := Judge(*g, traffic(1000, 12, 40), traffic(1000, 10, 40)); j.Result != want || math.Abs(*j.PValue-0.3340467011585201) > 1e-9 {
			t.Errorf("alpha %g: %+v, want %s", g.Alpha, j, want)
		}
	}
	none := traffic(1000, 0, 40)
	if j := Judge(errorsTest, none, none); j.Result != Pass || *j.PValue != 1 || j.Statistic != nil || !strings.Contains(j.Limit, "every value tied") {
		t.Errorf("no errors anywhere: %+v", j)
	}

	mw := Gate{Name: "p95", Metric: LatencyP95, Test: MannWhitney}
	j = Judge(mw, traffic(1000, 0, 32), traffic(5000, 0, 28))
	if j.Result != Fail || j.Test != MannWhitney || *j.PValue > 1e-9 || j.Statistic == nil ||
		!strings.Contains(j.Limit, "latency_p95 12.8ms vs baseline 6.4ms: Mann–Whitney p=") {
		t.Errorf("twice as slow: %+v", j)
	}
	j = Judge(mw, traffic(5000, 0, 28), traffic(1000, 0, 32))
	if j.Result != Pass || *j.PValue < 0.99 {
		t.Errorf("twice as fast: %+v", j)
	}
	flat := Sample{Requests: 500, Latency: map[int]uint64{40: 500}}
	if j := Judge(mw, flat, flat); j.Result != Pass || *j.PValue != 1 || j.Statistic != nil {
		t.Errorf("one bucket: %+v", j)
	}
	both := Gate{Name: "p95", Metric: LatencyP95, Test: MannWhitney, Max: ptr(0.015)}
	if j := Judge(both, traffic(1000, 0, 29), traffic(1000, 0, 29)); j.Result != Pass || !strings.Contains(j.Limit, "latency_p95 7.61ms ≤ max 15ms; latency_p95 7.61ms vs baseline 7.61ms: Mann–Whitney p=") {
		t.Errorf("limit and test: %+v", j)
	}

	accTest := Gate{Name: "acc", Metric: Accuracy, Test: TwoProportion}
	if j := Judge(accTest, Sample{Accuracy: ptr(0.8), AccuracyRows: 1000}, Sample{Accuracy: ptr(0.9), AccuracyRows: 1000}); j.Result != Fail || *j.PValue > 1e-6 {
		t.Errorf("accuracy 80%% vs 90%%: %+v", j)
	}
	if j := Judge(accTest, Sample{Accuracy: ptr(0.92), AccuracyRows: 1000}, Sample{Accuracy: ptr(0.9), AccuracyRows: 1000}); j.Result != Pass {
		t.Errorf("accuracy 92%% vs 90%%: %+v", j)
	}
	agree := Gate{Name: "shadow", Metric: ShadowAgreement, Test: TwoProportion}
	if j := Judge(agree, Sample{ShadowAgreement: ptr(0.95), ShadowRows: 2000}, Sample{ShadowAgreement: ptr(0.99), ShadowRows: 2000}); j.Result != Fail {
		t.Errorf("agreement 95%% vs 99%%: %+v", j)
	}
}

// TestJudgementJSON judges random, often absurd, samples and gates and
// checks that every judgement marshals (no NaN or ±Inf) and says why.
func TestJudgementJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	odd := []float64{math.NaN(), math.Inf(1), math.Inf(-1), -1, 0, 0.5, 1, 2, 1e308}
	pick := func() *float64 {
		if rng.IntN(4) == 0 {
			return nil
		}
		return ptr(odd[rng.IntN(len(odd))])
	}
	count := func() uint64 { return []uint64{0, 1, 99, 100, 5000, math.MaxUint32}[rng.IntN(6)] }
	sample := func() Sample {
		s := Sample{
			Requests: count(), Errors: count(), Latency: map[int]uint64{rng.IntN(120) - 8: count(), rng.IntN(104): count()},
			DriftShare: pick(), FeatureDrift: map[string]float64{"f": odd[rng.IntN(len(odd))]},
			Accuracy: pick(), AccuracyRows: count(), LogLoss: pick(),
			GPUUnhealthy: count(), Agents: count(), ShadowAgreement: pick(), ShadowRows: count(),
		}
		return s
	}
	metrics := append(Metrics(), "bogus")
	tests := []string{"", "", MannWhitney, TwoProportion, "bogus"}
	for i := range 5000 {
		g := Gate{
			Name: "g", Metric: metrics[rng.IntN(len(metrics))], Max: pick(), Min: pick(),
			MaxIncrease: pick(), Relative: rng.IntN(2) == 0, Test: tests[rng.IntN(len(tests))],
		}
		if g.Metric == FeatureDrift {
			g.Feature = "f"
		}
		j := Judge(g, sample(), sample())
		b, err := json.Marshal(j)
		if err != nil {
			t.Fatalf("case %d: %+v: %v", i, j, err)
		}
		if j.Reason == "" && j.Result != Pass {
			t.Fatalf("case %d: %s without a reason: %s", i, j.Result, b)
		}
		var back Judgement
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
	}
}
