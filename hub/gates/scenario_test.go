package gates

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

// fleet simulates n requests of a group: each fails with probability
// errRate, and answered ones take a log-normal-ish latency around median
// seconds, scaled by slow.
func fleet(rng *rand.Rand, n int, errRate, median float64, agents uint64) Sample {
	s := Sample{Latency: map[int]uint64{}, Agents: agents}
	for range n {
		s.Requests++
		if rng.Float64() < errRate {
			s.Errors++
			continue
		}
		lat := median * (1 + 0.3*rng.NormFloat64())
		if rng.Float64() < 0.03 {
			lat *= 4 // a slow tail
		}
		s.Latency[LatencyBucket(lat)]++
	}
	return s
}

// TestScenario judges a step as a rollout would: a broken canary fails
// the error gates, a slow one the latency gates, an identical one passes.
func TestScenario(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	gates := []Gate{
		{Name: "errors", Metric: ErrorRate, Max: ptr(0.05)},
		{Name: "errors-vs-baseline", Metric: ErrorRate, Test: TwoProportion},
		{Name: "p95", Metric: LatencyP95, Max: ptr(0.25), MaxIncrease: ptr(0.5), Relative: true},
		{Name: "latency-vs-baseline", Metric: LatencyP95, Test: MannWhitney},
		{Name: "gpu", Metric: GPUHealth, Max: ptr(0)},
	}
	if err := ValidateGates(gates); err != nil {
		t.Fatal(err)
	}
	baseline := fleet(rng, 20000, 0.005, 0.040, 18)

	failing := func(js []Judgement) []string {
		var names []string
		for _, j := range js {
			if j.Result == Fail {
				names = append(names, j.Gate)
			}
		}
		return names
	}

	broken := fleet(rng, 2000, 0.20, 0.040, 2)
	verdict, js := Evaluate(gates, broken, baseline, &Tracker{})
	if got := strings.Join(failing(js), ","); verdict != Fail || got != "errors,errors-vs-baseline" {
		t.Errorf("20%% errors: %s, failing %s", verdict, got)
	}

	slow := fleet(rng, 2000, 0.005, 0.120, 2)
	verdict, js = Evaluate(gates, slow, baseline, &Tracker{})
	if got := strings.Join(failing(js), ","); verdict != Fail || got != "p95,latency-vs-baseline" {
		t.Errorf("3× slower: %s, failing %s", verdict, got)
	}
	if !strings.Contains(js[2].Limit, "> baseline·(1+0.5)") || js[3].PValue == nil || *js[3].PValue > 1e-12 {
		t.Errorf("3× slower: %+v %+v", js[2], js[3])
	}

	same := fleet(rng, 2000, 0.005, 0.040, 2)
	verdict, js = Evaluate(gates, same, baseline, &Tracker{})
	if verdict != Pass {
		b, _ := json.MarshalIndent(js, "", "  ")
		t.Errorf("identical canary: %s\n%s", verdict, b)
	}

	// The last step: everyone is on the new version, no baseline group is
	// left; the absolute limits alone judge.
	var all Sample
	all.Add(same)
	all.Add(fleet(rng, 20000, 0.005, 0.040, 18))
	verdict, js = Evaluate(gates, all, Sample{}, &Tracker{})
	if verdict != Pass || js[1].Limit != "" || js[3].Limit != "" || js[2].Limit != "latency_p95 72.4ms ≤ max 250ms" {
		t.Errorf("no baseline: %s %+v", verdict, js)
	}
	all.Errors = all.Requests / 10
	if verdict, js = Evaluate(gates, all, Sample{}, &Tracker{}); verdict != Fail || js[0].Result != Fail {
		t.Errorf("no baseline, 10%% errors: %s %+v", verdict, js)
	}
	// A baseline that exists but went quiet holds the step instead.
	verdict, js = Evaluate(gates, same, Sample{Agents: 18, Requests: 20}, &Tracker{})
	if verdict != Inconclusive || js[1].Result != Inconclusive || js[3].Result != Inconclusive {
		t.Errorf("quiet baseline: %s %+v", verdict, js)
	}

	sick := same
	sick.GPUUnhealthy = 1
	if verdict, js := Evaluate(gates, sick, baseline, &Tracker{}); verdict != Fail || js[4].Result != Fail {
		t.Errorf("an unhealthy GPU: %s %+v", verdict, js[4])
	}
}
