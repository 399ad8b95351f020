package gates

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestTrackerCountsConsecutiveFailures(t *testing.T) {
	g := Gate{Name: "errors", Metric: ErrorRate, Max: ptr(0.05), FailureLimit: 3}
	fail, pass, unsure := Judgement{Result: Fail}, Judgement{Result: Pass}, Judgement{Result: Inconclusive}
	var tr Tracker
	steps := []struct {
		j      Judgement
		failed bool
		count  int
	}{
		{fail, false, 1},
		{fail, false, 2},
		{pass, false, 0}, // a pass resets
		{fail, false, 1},
		{unsure, false, 1}, // inconclusive keeps the count
		{fail, false, 2},
		{unsure, false, 2},
		{fail, true, 3}, // the third failure in a row, counting across inconclusive ones
		{fail, true, 4},
		{unsure, false, 4},
		{pass, false, 0},
	}
	for i, s := range steps {
		if got := tr.Observe(g, s.j); got != s.failed || tr.Consecutive[g.Name] != s.count {
			t.Fatalf("step %d (%s): failed %v with %d in a row, want %v with %d", i, s.j.Result, got, tr.Consecutive[g.Name], s.failed, s.count)
		}
	}
	if len(tr.Consecutive) != 0 {
		t.Errorf("a pass left %v", tr.Consecutive)
	}

	// By default the first failure counts.
	g.FailureLimit = 0
	if !tr.Observe(g, fail) {
		t.Error("default failure limit: the first failure did not fail the gate")
	}
	// Gates count apart.
	other := Gate{Name: "p95", FailureLimit: 2}
	if tr.Observe(other, fail) || tr.Consecutive["errors"] != 1 || tr.Consecutive["p95"] != 1 {
		t.Errorf("two gates: %v", tr.Consecutive)
	}
	// A nil tracker remembers nothing: every failure fails.
	var none *Tracker
	if !none.Observe(Gate{Name: "x", FailureLimit: 5}, fail) || none.Observe(g, pass) || none.Observe(g, unsure) {
		t.Error("nil tracker")
	}
}

func TestTrackerSurvivesJSON(t *testing.T) {
	tr := Tracker{}
	g := Gate{Name: "errors", FailureLimit: 2}
	tr.Observe(g, Judgement{Result: Fail})
	b, err := json.Marshal(tr)
	if err != nil {
		t.Fatal(err)
	}
	var back Tracker
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, tr) || !back.Observe(g, Judgement{Result: Fail}) {
		t.Errorf("after a round trip through %s: %+v", b, back)
	}
}

func TestEvaluate(t *testing.T) {
	baseline := traffic(10000, 50, 28)
	good, bad, few := traffic(1000, 5, 28), traffic(1000, 300, 28), traffic(50, 0, 28)
	errorsGate := Gate{Name: "errors", Metric: ErrorRate, Max: ptr(0.05), FailureLimit: 2}
	latencyGate := Gate{Name: "p95", Metric: LatencyP95, Test: MannWhitney}
	gates := []Gate{errorsGate, latencyGate}

	var tr Tracker
	verdict, js := Evaluate(gates, good, baseline, &tr)
	if verdict != Pass || len(js) != 2 || js[0].Gate != "errors" || js[1].Gate != "p95" || js[0].Result != Pass || js[1].Result != Pass {
		t.Fatalf("all good: %s %+v", verdict, js)
	}
	verdict, js = Evaluate(gates, bad, baseline, &tr)
	if verdict != Inconclusive || js[0].Result != Fail || js[0].Failures != 1 || js[0].FailureLimit != 2 || js[0].GateFailed {
		t.Fatalf("first failure of a gate with limit 2: %s %+v", verdict, js[0])
	}
	verdict, js = Evaluate(gates, few, baseline, &tr)
	if verdict != Inconclusive || js[0].Result != Inconclusive || js[0].Failures != 1 || js[1].Result != Inconclusive {
		t.Fatalf("too few samples: %s %+v", verdict, js)
	}
	verdict, js = Evaluate(gates, bad, baseline, &tr)
	if verdict != Fail || !js[0].GateFailed || js[0].Failures != 2 || js[1].GateFailed {
		t.Fatalf("second failure in a row: %s %+v", verdict, js)
	}
	verdict, js = Evaluate(gates, good, baseline, &tr)
	if verdict != Pass || js[0].Failures != 0 || len(tr.Consecutive) != 0 {
		t.Fatalf("recovered: %s %+v %v", verdict, js, tr.Consecutive)
	}

	// A nil tracker: the first failure fails.
	if verdict, js := Evaluate(gates, bad, baseline, nil); verdict != Fail || js[0].Failures != 1 || !js[0].GateFailed {
		t.Errorf("nil tracker: %s %+v", verdict, js[0])
	}
	// One inconclusive gate holds an otherwise passing step.
	withLabels := append(gates, Gate{Name: "acc", Metric: Accuracy, Min: ptr(0.9)})
	if verdict, js := Evaluate(withLabels, good, baseline, &Tracker{}); verdict != Inconclusive || js[2].Result != Inconclusive {
		t.Errorf("no labels yet: %s %+v", verdict, js[2])
	}
	// An invalid gate cannot pass.
	if verdict, _ := Evaluate([]Gate{{Name: "x", Metric: "bogus", Max: ptr(1)}}, good, baseline, &Tracker{}); verdict != Inconclusive {
		t.Errorf("invalid gate: %s", verdict)
	}
	// No gates: nothing holds the step.
	if verdict, js := Evaluate(nil, good, baseline, &Tracker{}); verdict != Pass || len(js) != 0 {
		t.Errorf("no gates: %s %v", verdict, js)
	}
}
