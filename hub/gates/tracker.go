package gates

// Tracker counts each gate's consecutive failing judgements across the
// judgements of a rollout, so that a gate fails only once its failures
// repeat FailureLimit times in a row. Its state is the exported map alone,
// so that the hub can keep it in its replicated state and a new leader
// carries on counting where the old one stopped. The zero Tracker is ready
// to use.
type Tracker struct {
	// Consecutive is, per gate name, the number of failing judgements
	// since the gate last passed. A gate without an entry has none.
	Consecutive map[string]int `json:"consecutive,omitempty"`
}

// Observe records a judgement of gate g and reports whether the gate now
// counts as failed: the judgement failed and Consecutive[g.Name] has
// reached the gate's FailureLimit. A Pass resets the count; an Inconclusive
// judgement leaves it as it was, neither a failure nor evidence of
// recovery, and reports false.
//
// A nil Tracker remembers nothing: every failing judgement fails its gate,
// whatever its FailureLimit.
func (t *Tracker) Observe(g Gate, j Judgement) (failed bool) {
	if t == nil {
		return j.Result == Fail
	}
	switch j.Result {
	case Fail:
		if t.Consecutive == nil {
			t.Consecutive = make(map[string]int)
		}
		t.Consecutive[g.Name]++
		return t.Consecutive[g.Name] >= g.failureLimit()
	case Pass:
		delete(t.Consecutive, g.Name)
	}
	return false
}

// failures is the gate's count of consecutive failing judgements after
// Observe recorded j.
func (t *Tracker) failures(g Gate, j Judgement) int {
	if t == nil {
		if j.Result == Fail {
			return 1
		}
		return 0
	}
	return t.Consecutive[g.Name]
}

// Evaluate judges a rollout step by all its gates, recording each
// judgement in t (which may be nil, see Observe) and in the judgement's
// Failures and GateFailed, and returns the step's
// verdict with the judgements in the order of gates. The verdict is Fail
// when any gate counts as failed (its FailureLimit reached), Pass when every
// gate's judgement passed, and Inconclusive otherwise: some gate could not
// judge yet, or failed fewer times in a row than its limit. A step without
// gates passes. Gate names should be unique (ValidateGates): gates sharing
// a name share a failure count.
func Evaluate(gates []Gate, canary, baseline Sample, t *Tracker) (verdict Result, judgements []Judgement) {
	judgements = make([]Judgement, 0, len(gates))
	failed, passed := false, 0
	for _, g := range gates {
		j := Judge(g, canary, baseline)
		j.GateFailed = t.Observe(g, j)
		j.Failures = t.failures(g, j)
		failed = failed || j.GateFailed
		if j.Result == Pass {
			passed++
		}
		judgements = append(judgements, j)
	}
	switch {
	case failed:
		return Fail, judgements
	case passed == len(gates):
		return Pass, judgements
	}
	return Inconclusive, judgements
}
