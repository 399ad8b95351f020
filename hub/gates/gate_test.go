package gates

import (
	"math"
	"strings"
	"testing"
)

func TestValidateAcceptsSensibleGates(t *testing.T) {
	for _, g := range []Gate{
		{Name: "errors", Metric: ErrorRate, Max: ptr(0.05)},
		{Name: "errors-vs", Metric: ErrorRate, Test: TwoProportion},
		{Name: "errors-both", Metric: ErrorRate, Max: ptr(0.05), Test: TwoProportion, Alpha: 0.01, MinSamples: 500, FailureLimit: 3},
		{Name: "p50", Metric: LatencyP50, Max: ptr(0.1)},
		{Name: "p95", Metric: LatencyP95, MaxIncrease: ptr(0.5), Relative: true},
		{Name: "p99", Metric: LatencyP99, Test: MannWhitney},
		{Name: "drift", Metric: DriftShare, Max: ptr(0.3), MaxIncrease: ptr(0.1)},
		{Name: "tenure", Metric: FeatureDrift, Feature: "tenure", Max: ptr(0.1)},
		{Name: "tenure-p", Metric: FeatureDrift, Feature: "tenure", Min: ptr(0.01), MaxIncrease: ptr(0.5), Relative: true},
		{Name: "acc", Metric: Accuracy, Min: ptr(0.9), MaxIncrease: ptr(0.02)},
		{Name: "acc-test", Metric: Accuracy, Test: TwoProportion},
		{Name: "loss", Metric: LogLoss, Max: ptr(0.7), MaxIncrease: ptr(0.1), Relative: true},
		{Name: "gpu", Metric: GPUHealth, Max: ptr(0)},
		{Name: "shadow", Metric: ShadowAgreement, Min: ptr(0.98)},
		{Name: "shadow-test", Metric: ShadowAgreement, Test: TwoProportion},
	} {
		if err := g.Validate(); err != nil {
			t.Errorf("%+v: %v", g, err)
		}
	}
}

func TestValidateRefusesNonsense(t *testing.T) {
	for _, c := range []struct {
		g    Gate
		want string
	}{
		{Gate{Metric: ErrorRate, Max: ptr(0.1)}, "needs a name"},
		{Gate{Name: "x", Max: ptr(0.1)}, "no metric"},
		{Gate{Name: "x", Metric: "throughput", Max: ptr(0.1)}, `unknown metric "throughput"`},
		{Gate{Name: "x", Metric: ErrorRate}, "nothing to check"},
		{Gate{Name: "x", Metric: ErrorRate, Min: ptr(0.1)}, "error_rate takes no min"},
		{Gate{Name: "x", Metric: LatencyP95, Min: ptr(0.1)}, "latency_p95 takes no min"},
		{Gate{Name: "x", Metric: Accuracy, Max: ptr(0.9)}, "accuracy takes no max: a lower accuracy is the bad direction, so use Min"},
		{Gate{Name: "x", Metric: ShadowAgreement, Max: ptr(0.9)}, "shadow_agreement takes no max"},
		{Gate{Name: "x", Metric: ErrorRate, Max: ptr(-0.1)}, "max -0.1 is negative"},
		{Gate{Name: "x", Metric: ErrorRate, Max: ptr(math.NaN())}, "not a finite number"},
		{Gate{Name: "x", Metric: LatencyP50, Max: ptr(math.Inf(1))}, "not a finite number"},
		{Gate{Name: "x", Metric: ErrorRate, Max: ptr(5)}, "above 1"},
		{Gate{Name: "x", Metric: Accuracy, Min: ptr(90)}, "above 1"},
		{Gate{Name: "x", Metric: FeatureDrift, Feature: "f", Min: ptr(2)}, "above 1"},
		{Gate{Name: "x", Metric: FeatureDrift, Max: ptr(0.1)}, "feature_drift needs a feature"},
		{Gate{Name: "x", Metric: ErrorRate, Feature: "f", Max: ptr(0.1)}, `feature "f" given`},
		{Gate{Name: "x", Metric: FeatureDrift, Feature: "f", Max: ptr(0.1), Min: ptr(0.05)}, "not both"},
		{Gate{Name: "x", Metric: FeatureDrift, Feature: "f", MaxIncrease: ptr(0.1)}, "feature_drift needs Max"},
		{Gate{Name: "x", Metric: GPUHealth, MaxIncrease: ptr(1)}, "gpu_unhealthy cannot be compared with the baseline"},
		{Gate{Name: "x", Metric: ErrorRate, MaxIncrease: ptr(-0.01)}, "max increase -0.01 is negative"},
		{Gate{Name: "x", Metric: ErrorRate, MaxIncrease: ptr(math.NaN())}, "max increase NaN is not a finite number"},
		{Gate{Name: "x", Metric: Accuracy, MaxIncrease: ptr(1), Relative: true}, "can never fail"},
		{Gate{Name: "x", Metric: ErrorRate, Max: ptr(0.1), Relative: true}, "relative without max increase"},
		{Gate{Name: "x", Metric: ErrorRate, Test: "t_test"}, `unknown test "t_test"`},
		{Gate{Name: "x", Metric: ErrorRate, Test: MannWhitney}, "test mann_whitney does not apply to error_rate: use two_proportion"},
		{Gate{Name: "x", Metric: LatencyP99, Test: TwoProportion}, "use mann_whitney"},
		{Gate{Name: "x", Metric: DriftShare, Test: TwoProportion}, "takes no test"},
		{Gate{Name: "x", Metric: LatencyP95, Test: MannWhitney, MaxIncrease: ptr(0.01)}, "exclude each other"},
		{Gate{Name: "x", Metric: LatencyP95, Test: MannWhitney, Alpha: 1.5}, "alpha 1.5 is not between 0 and 1"},
		{Gate{Name: "x", Metric: LatencyP95, Test: MannWhitney, Alpha: -0.05}, "not between 0 and 1"},
		{Gate{Name: "x", Metric: LatencyP95, Max: ptr(1), Alpha: 0.01}, "alpha 0.01 without a test"},
		{Gate{Name: "x", Metric: ErrorRate, Max: ptr(0.1), FailureLimit: -1}, "failure limit -1 is negative"},
	} {
		err := c.g.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error containing %q", c.g, err, c.want)
		}
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	err := Gate{Name: "bad", Metric: Accuracy, Max: ptr(2), Test: MannWhitney, FailureLimit: -2}.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{`gate "bad": `, "takes no max", "use two_proportion", "failure limit -2"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q does not say %q", msg, want)
		}
	}
}

func TestValidateGates(t *testing.T) {
	ok := []Gate{
		{Name: "errors", Metric: ErrorRate, Max: ptr(0.05)},
		{Name: "p95", Metric: LatencyP95, Test: MannWhitney},
	}
	if err := ValidateGates(ok); err != nil {
		t.Error(err)
	}
	if err := ValidateGates(nil); err != nil {
		t.Error(err)
	}
	err := ValidateGates(append(ok, Gate{Name: "errors", Metric: ErrorRate, Max: ptr(0.1)}, Gate{Name: "x", Metric: "nope"}))
	if err == nil || !strings.Contains(err.Error(), `gate "errors": the name is used twice`) || !strings.Contains(err.Error(), `unknown metric "nope"`) {
		t.Errorf("duplicate and unknown: %v", err)
	}
}

func TestMetrics(t *testing.T) {
	ms := Metrics()
	if len(ms) != 10 || ms[0] != Accuracy {
		t.Errorf("Metrics() = %v", ms)
	}
}
