package state

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Rollouts: a rollout moves a model's selected agents from the version they
// run (the baseline) to a target version, step by step. Every decision —
// start, a step's agents ready, a judgement, the next step, a rollback —
// is a Raft command guarded by the step it was made for, so that a new
// leader continues a rollout from where it stood and a decision replayed
// or made twice changes nothing.

// MaxRolloutJudgements bounds the judgements a rollout keeps.
const MaxRolloutJudgements = 200

const (
	primaryRole = droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY
	canaryRole  = droverv1.AssignmentRole_ASSIGNMENT_ROLE_CANARY
	shadowRole  = droverv1.AssignmentRole_ASSIGNMENT_ROLE_SHADOW
)

// Active reports whether a rollout is still under way.
func rolloutActive(r *droverv1.Rollout) bool {
	return r.GetState() == droverv1.RolloutState_ROLLOUT_STATE_RUNNING || r.GetState() == droverv1.RolloutState_ROLLOUT_STATE_PAUSED
}

func rolloutResource(id string) string { return "rollouts/" + id }

const (
	// MaxGatesPerStep bounds the gates of one rollout step.
	MaxGatesPerStep = 32
	// MaxRolloutsKept is how many ended rollouts of each model the state
	// keeps, the newest; starting another drops the oldest.
	MaxRolloutsKept = 100
)

// ValidateRolloutSteps checks a rollout's steps.
func ValidateRolloutSteps(steps []*droverv1.RolloutStep) error {
	if len(steps) == 0 {
		return Invalidf("steps: a rollout needs at least one step")
	}
	if len(steps) > 20 {
		return Invalidf("steps: %d is more than 20", len(steps))
	}
	for i, s := range steps {
		switch {
		case s.GetAgents() > 0 && s.GetPercent() > 0:
			return Invalidf("steps[%d]: give agents or percent, not both", i)
		case s.GetPercent() < 0 || s.GetPercent() > 100:
			return Invalidf("steps[%d].percent: %g is not in [0, 100]", i, s.GetPercent())
		case s.GetWeight() > 100:
			return Invalidf("steps[%d].weight: %d is more than 100", i, s.GetWeight())
		case s.GetShadow() && s.GetWeight() > 0:
			return Invalidf("steps[%d]: a shadow step answers no requests; it takes no weight", i)
		case s.GetMinHealthyShare() < 0 || s.GetMinHealthyShare() > 1:
			return Invalidf("steps[%d].min_healthy_share: %g is not in [0, 1]", i, s.GetMinHealthyShare())
		case s.GetBake().AsDuration() < 0 || s.GetProgressDeadline().AsDuration() < 0:
			return Invalidf("steps[%d]: durations must not be negative", i)
		}
		if len(s.GetGates()) > MaxGatesPerStep {
			return Invalidf("steps[%d]: %d gates; the limit is %d", i, len(s.GetGates()), MaxGatesPerStep)
		}
		names := map[string]bool{}
		for j, g := range s.GetGates() {
			if err := ValidateText(fmt.Sprintf("steps[%d].gates[%d].name", i, j), g.GetName(), MaxKeyLen); err != nil {
				return err
			}
			if g.GetName() == "" {
				return Invalidf("steps[%d].gates[%d]: a gate needs a name", i, j)
			}
			if names[g.GetName()] {
				return Invalidf("steps[%d].gates[%d]: gate %q appears twice", i, j, g.GetName())
			}
			names[g.GetName()] = true
		}
	}
	if last := steps[len(steps)-1]; last.GetShadow() {
		return Invalidf("steps: the last step cannot be a shadow phase; the new version must end up serving")
	}
	return nil
}

// stepTargets is how many of n agents have joined by each step: the step's
// number or share, never fewer than the step before, every agent by the
// last step.
func stepTargets(steps []*droverv1.RolloutStep, n int) []int {
	out := make([]int, len(steps))
	prev := 0
	for i, s := range steps {
		k := n
		switch {
		case s.GetAgents() > 0:
			k = int(s.GetAgents())
		case s.GetPercent() > 0:
			k = int(math.Ceil(s.GetPercent() / 100 * float64(n)))
		case i < len(steps)-1:
			k = prev // a step that names no agents keeps the previous ones (e.g. a longer bake)
		}
		k = min(max(k, prev, 1), n)
		if i == len(steps)-1 {
			k = n
		}
		out[i], prev = k, k
	}
	return out
}

// CreateRollout starts a rollout: it resolves the target and the selected
// agents, checks that no other rollout of the model is active, orders the
// agents, and applies the first step, all at once.
func (s *Store) CreateRollout(c Change, in *droverv1.Rollout) (*droverv1.Rollout, error) {
	var out *droverv1.Rollout
	err := s.write(c, func(t *txn) error {
		r, err := createRollout(t, in)
		if err != nil {
			return err
		}
		out = r
		return t.audit("rollout.start", rolloutResource(r.GetId()), fmt.Sprintf("%s from %d to %d on %d agents in %d steps", r.GetModel(), r.GetFromVersion(), r.GetToVersion(), len(r.Agents), len(r.GetSteps())))
	})
	return out, err
}

// createRollout starts a rollout within a write.
func createRollout(t *txn, in *droverv1.Rollout) (*droverv1.Rollout, error) {
	c := t.c
	if err := ValidateRolloutSteps(in.GetSteps()); err != nil {
		return nil, err
	}
	if err := ValidateLabels("selector", in.GetSelector()); err != nil {
		return nil, err
	}
	if raw, _ := t.First(tableRollouts, "id", in.GetId()); raw != nil {
		return nil, AlreadyExistsf("rollout %s exists", in.GetId())
	}
	if _, err := getModel(t, in.GetModel()); err != nil {
		return nil, err
	}
	it, err := t.Get(tableRollouts, "model", in.GetModel())
	if err != nil {
		return nil, err
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if other := raw.(*droverv1.Rollout); rolloutActive(other) {
			return nil, Preconditionf("rollout %s of %s is %s; promote, abort or wait for it first", other.GetId(), other.GetModel(), rolloutStateName(other.GetState()))
		}
	}
	raw, err := t.First(tableVersions, "id", in.GetModel(), in.GetToVersion())
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, NotFoundf("model %q has no version %d", in.GetModel(), in.GetToVersion())
	}
	switch mv := raw.(*droverv1.ModelVersion); mv.GetState() {
	case droverv1.VersionState_VERSION_STATE_ARCHIVED:
		return nil, Preconditionf("%s:%d is archived", in.GetModel(), in.GetToVersion())
	case droverv1.VersionState_VERSION_STATE_REJECTED:
		if !in.GetForce() {
			return nil, Preconditionf("%s:%d was rejected (%s); roll it out again with --force", in.GetModel(), in.GetToVersion(), mv.GetStateReason())
		}
	}
	r := proto.CloneOf(in)
	r.State, r.Step, r.Revision = droverv1.RolloutState_ROLLOUT_STATE_RUNNING, 0, 1
	r.CreatedBy, r.CreateTime, r.UpdateTime, r.StepStartTime = c.Actor, c.timestamp(), c.timestamp(), c.timestamp()
	r.Agents, r.Judgements = nil, nil
	// The agents: those selected that run the model as primary.
	agentsIt, err := t.Get(tableAgents, "id")
	if err != nil {
		return nil, err
	}
	baseline := map[uint64]int{}
	for raw := agentsIt.Next(); raw != nil; raw = agentsIt.Next() {
		a := raw.(*droverv1.Agent)
		if !matches(a.GetLabels(), r.GetSelector()) || a.GetDraining() {
			continue // a draining agent runs nothing: it could never be ready
		}
		i := slices.IndexFunc(a.GetAssignments(), func(x *droverv1.Assignment) bool {
			return x.GetModel() == r.GetModel() && x.GetRole() == primaryRole
		})
		if i < 0 {
			continue
		}
		as := a.GetAssignments()[i]
		prev := as.GetVersion()
		if as.GetAlias() != "" {
			if ar, _ := t.First(tableAliases, "id", r.GetModel(), as.GetAlias()); ar != nil {
				prev = ar.(*droverv1.Alias).GetVersion()
			}
		}
		baseline[prev]++
		r.Agents = append(r.Agents, &droverv1.RolloutAgent{AgentId: a.GetId(), Name: a.GetName(),
			PreviousVersion: prev, PreviousAlias: as.GetAlias(), Phase: droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_WAITING})
	}
	if len(r.Agents) == 0 {
		which := "no agent"
		if len(r.GetSelector()) > 0 {
			which = "no agent matching " + Clip(kvSummary(r.GetSelector()), MaxReasonLen)
		}
		return nil, Preconditionf("%s runs %s as primary; assign it first", which, r.GetModel())
	}
	// The baseline is the version most of them run.
	for v, n := range baseline {
		if n > baseline[r.FromVersion] || n == baseline[r.FromVersion] && v > r.FromVersion {
			r.FromVersion = v
		}
	}
	if r.FromVersion == r.GetToVersion() && len(baseline) == 1 {
		return nil, Preconditionf("every selected agent already runs %s:%d", r.GetModel(), r.GetToVersion())
	}
	// A deterministic shuffle, so that a step's agents are not always
	// the same machines (the first by name) from rollout to rollout.
	slices.SortFunc(r.Agents, func(a, b *droverv1.RolloutAgent) int {
		return cmp.Compare(agentOrder(r.GetId(), a.GetAgentId()), agentOrder(r.GetId(), b.GetAgentId()))
	})
	targets := stepTargets(r.GetSteps(), len(r.Agents))
	for i, a := range r.Agents {
		a.Step = uint32(slices.IndexFunc(targets, func(k int) bool { return i < k }))
	}
	if err := applyRolloutStep(t, r); err != nil {
		return nil, err
	}
	if err := t.Insert(tableRollouts, r); err != nil {
		return nil, err
	}
	return r, trimRollouts(t, r.GetModel())
}

// trimRollouts drops a model's oldest ended rollouts beyond
// MaxRolloutsKept.
func trimRollouts(t *txn, model string) error {
	it, err := t.Get(tableRollouts, "model", model)
	if err != nil {
		return err
	}
	var ended []*droverv1.Rollout
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if r := raw.(*droverv1.Rollout); !rolloutActive(r) {
			ended = append(ended, r)
		}
	}
	if len(ended) <= MaxRolloutsKept {
		return nil
	}
	slices.SortFunc(ended, func(a, b *droverv1.Rollout) int {
		if c := a.GetCreateTime().AsTime().Compare(b.GetCreateTime().AsTime()); c != 0 {
			return c
		}
		return strings.Compare(a.GetId(), b.GetId())
	})
	for _, r := range ended[:len(ended)-MaxRolloutsKept] {
		if err := t.Delete(tableRollouts, r); err != nil {
			return err
		}
	}
	return nil
}

// agentOrder is an agent's place in a rollout's order.
func agentOrder(rolloutID, agentID string) uint64 {
	h := sha256.Sum256([]byte(rolloutID + "/" + agentID))
	return binary.BigEndian.Uint64(h[:8])
}

// matches reports whether labels include every pair of selector.
func matches(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// applyRolloutStep gives every agent that has joined by the rollout's
// current step the step's assignments.
func applyRolloutStep(t *txn, r *droverv1.Rollout) error {
	step := r.GetSteps()[r.GetStep()]
	for _, ra := range r.GetAgents() {
		if ra.GetStep() > r.GetStep() {
			continue
		}
		a, err := getAgent(t, ra.GetAgentId())
		if err != nil {
			continue // deregistered since: nothing to assign
		}
		switch {
		case step.GetShadow():
			setRole(t, a, r.GetModel(), shadowRole, r.GetToVersion(), "", 0)
			removeRole(a, r.GetModel(), canaryRole)
		case step.GetWeight() == 0:
			setRole(t, a, r.GetModel(), primaryRole, r.GetToVersion(), "", 100)
			removeRole(a, r.GetModel(), canaryRole)
			removeRole(a, r.GetModel(), shadowRole)
		default:
			setRole(t, a, r.GetModel(), canaryRole, r.GetToVersion(), "", step.GetWeight())
			removeRole(a, r.GetModel(), shadowRole)
		}
		if ra.Phase == droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_WAITING {
			ra.Phase = droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_ASSIGNED
		}
		if err := putAgent(t, a); err != nil {
			return err
		}
	}
	return nil
}

// finishRollout makes the new version primary on every agent of the
// rollout, and drops its canary and shadow.
func finishRollout(t *txn, r *droverv1.Rollout) error {
	for _, ra := range r.GetAgents() {
		a, err := getAgent(t, ra.GetAgentId())
		if err != nil {
			continue
		}
		setRole(t, a, r.GetModel(), primaryRole, r.GetToVersion(), "", 100)
		removeRole(a, r.GetModel(), canaryRole)
		removeRole(a, r.GetModel(), shadowRole)
		if err := putAgent(t, a); err != nil {
			return err
		}
	}
	r.State, r.Step = droverv1.RolloutState_ROLLOUT_STATE_SUCCEEDED, uint32(len(r.GetSteps()))
	r.EndTime = t.c.timestamp()
	return nil
}

// rollBack returns every agent that joined the rollout to what it ran
// before, rejects the target version with the reason, and ends the
// rollout.
func rollBack(t *txn, r *droverv1.Rollout, reason string) error {
	for _, ra := range r.GetAgents() {
		if ra.GetPhase() == droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_WAITING {
			continue
		}
		a, err := getAgent(t, ra.GetAgentId())
		if err != nil {
			continue
		}
		if ra.GetPreviousVersion() != 0 || ra.GetPreviousAlias() != "" {
			setRole(t, a, r.GetModel(), primaryRole, ra.GetPreviousVersion(), ra.GetPreviousAlias(), 100)
			if ra.GetPreviousAlias() != "" {
				// Follow the alias again, not the version it pointed at.
				for _, as := range a.Assignments {
					if as.GetModel() == r.GetModel() && as.GetRole() == primaryRole {
						as.Version = 0
					}
				}
			}
		}
		removeRole(a, r.GetModel(), canaryRole)
		removeRole(a, r.GetModel(), shadowRole)
		if err := putAgent(t, a); err != nil {
			return err
		}
		ra.Phase = droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_ROLLED_BACK
	}
	raw, err := t.First(tableVersions, "id", r.GetModel(), r.GetToVersion())
	if err != nil {
		return err
	}
	if raw != nil && raw.(*droverv1.ModelVersion).GetState() != droverv1.VersionState_VERSION_STATE_ARCHIVED { // archived stays archived
		v := proto.CloneOf(raw.(*droverv1.ModelVersion))
		v.State, v.StateReason = droverv1.VersionState_VERSION_STATE_REJECTED, "rollout "+r.GetId()+": "+reason
		v.UpdateTime, v.ModifyIndex = t.c.timestamp(), t.c.Index
		if err := t.Insert(tableVersions, v); err != nil {
			return err
		}
	}
	r.State, r.Reason, r.EndTime = droverv1.RolloutState_ROLLOUT_STATE_ROLLED_BACK, reason, t.c.timestamp()
	return nil
}

// setRole sets one role's assignment of a model on an agent (not stored).
func setRole(t *txn, a *droverv1.Agent, model string, role droverv1.AssignmentRole, version uint64, alias string, weight uint32) {
	as := &droverv1.Assignment{Model: model, Version: version, Alias: alias, Role: role, Weight: weight,
		SetBy: t.c.Actor, SetTime: t.c.timestamp(), Reason: t.c.Reason}
	if alias != "" {
		as.Version = 0
	}
	a.Assignments = slices.DeleteFunc(a.Assignments, func(x *droverv1.Assignment) bool {
		return x.GetModel() == model && x.GetRole() == role
	})
	a.Assignments = append(a.Assignments, as)
	slices.SortFunc(a.Assignments, func(x, y *droverv1.Assignment) int {
		return strings.Compare(x.GetModel()+"/"+x.GetRole().String(), y.GetModel()+"/"+y.GetRole().String())
	})
}

func removeRole(a *droverv1.Agent, model string, role droverv1.AssignmentRole) {
	a.Assignments = slices.DeleteFunc(a.Assignments, func(x *droverv1.Assignment) bool {
		return x.GetModel() == model && x.GetRole() == role
	})
}

// updateRollout runs fn on a rollout guarded by its state, step and
// revision: a command made for another step, at another revision (0:
// any), or for a rollout no longer running, is refused as stale (and
// changes nothing).
func (s *Store) updateRollout(c Change, id string, step uint32, revision uint64, verb string, fn func(t *txn, r *droverv1.Rollout) (string, error)) (*droverv1.Rollout, error) {
	var out *droverv1.Rollout
	err := s.write(c, func(t *txn) error {
		raw, err := t.First(tableRollouts, "id", id)
		if err != nil {
			return err
		}
		if raw == nil {
			return NotFoundf("no rollout %s", id)
		}
		r := proto.CloneOf(raw.(*droverv1.Rollout))
		if r.GetState() != droverv1.RolloutState_ROLLOUT_STATE_RUNNING || r.GetStep() != step {
			return Preconditionf("stale: rollout %s is %s at step %d, not running at step %d", id, rolloutStateName(r.GetState()), r.GetStep(), step)
		}
		if revision != 0 && r.GetRevision() != revision {
			return Preconditionf("stale: decision about rollout %s made at revision %d, now %d", id, revision, r.GetRevision())
		}
		summary, err := fn(t, r)
		if err != nil {
			return err
		}
		r.Revision++
		r.UpdateTime = c.timestamp()
		if err := t.Insert(tableRollouts, r); err != nil {
			return err
		}
		out = r
		return t.audit(verb, rolloutResource(id), summary)
	})
	return out, err
}

// RolloutStepReady starts the step's bake: its agents are ready; a decision
// made at the rollout's revision (0: any).
func (s *Store) RolloutStepReady(c Change, id string, step uint32, revision uint64) (*droverv1.Rollout, error) {
	return s.updateRollout(c, id, step, revision, "rollout.step_ready", func(t *txn, r *droverv1.Rollout) (string, error) {
		if r.GetStepReadyTime() != nil {
			return "", Preconditionf("stale: step %d of rollout %s is already baking", step, id)
		}
		r.StepReadyTime = c.timestamp()
		return fmt.Sprintf("step %d of %d ready; baking %s", step+1, len(r.GetSteps()), r.GetSteps()[step].GetBake().AsDuration()), nil
	})
}

// RolloutJudge records judgements of the current step, made at the
// rollout's revision (0: any).
func (s *Store) RolloutJudge(c Change, id string, step uint32, revision uint64, js []*droverv1.Judgement) (*droverv1.Rollout, error) {
	return s.updateRollout(c, id, step, revision, "rollout.judge", func(t *txn, r *droverv1.Rollout) (string, error) {
		var parts []string
		for _, j := range js {
			j = proto.CloneOf(j)
			j.Step, j.Time, j.Revision = step, c.timestamp(), r.GetRevision()+1
			r.Judgements = append(r.Judgements, j)
			parts = append(parts, j.GetGate()+" "+j.GetResult())
		}
		if n := len(r.Judgements); n > MaxRolloutJudgements {
			r.Judgements = r.Judgements[n-MaxRolloutJudgements:]
		}
		return fmt.Sprintf("step %d: %s", step+1, strings.Join(parts, ", ")), nil
	})
}

// RolloutAdvance moves a rollout from a passed step to the next, or
// finishes it after the last; a decision made at the rollout's revision
// (0: any), for a step that is baking.
func (s *Store) RolloutAdvance(c Change, id string, step uint32, revision uint64) (*droverv1.Rollout, error) {
	return s.updateRollout(c, id, step, revision, "rollout.advance", func(t *txn, r *droverv1.Rollout) (string, error) {
		if r.GetStepReadyTime() == nil {
			return "", Preconditionf("stale: step %d of rollout %s is not baking (its agents are not ready)", step, id)
		}
		if int(step)+1 >= len(r.GetSteps()) {
			if err := finishRollout(t, r); err != nil {
				return "", err
			}
			return fmt.Sprintf("every step passed: %s:%d is primary on %d agents", r.GetModel(), r.GetToVersion(), len(r.GetAgents())), nil
		}
		r.Step = step + 1
		r.StepStartTime, r.StepReadyTime = c.timestamp(), nil
		if err := applyRolloutStep(t, r); err != nil {
			return "", err
		}
		return fmt.Sprintf("step %d passed; step %d of %d begins", step+1, step+2, len(r.GetSteps())), nil
	})
}

// RolloutFail rolls a running rollout back by itself, for the reason
// given (a gate, load failures, a crash-looping runner, a deadline); a
// decision made at the rollout's revision (0: any).
func (s *Store) RolloutFail(c Change, id string, step uint32, revision uint64, reason string) (*droverv1.Rollout, error) {
	return s.updateRollout(c, id, step, revision, "rollout.rollback", func(t *txn, r *droverv1.Rollout) (string, error) {
		if err := rollBack(t, r, reason); err != nil {
			return "", err
		}
		return fmt.Sprintf("rolled back at step %d: %s; %s:%d rejected", step+1, reason, r.GetModel(), r.GetToVersion()), nil
	})
}

// RolloutPause freezes a running rollout for a reason (the controller's,
// when its gates stay inconclusive), made at its revision (0: any).
func (s *Store) RolloutPause(c Change, id string, step uint32, revision uint64, reason string) (*droverv1.Rollout, error) {
	return s.updateRollout(c, id, step, revision, "rollout.pause", func(t *txn, r *droverv1.Rollout) (string, error) {
		r.State, r.Reason = droverv1.RolloutState_ROLLOUT_STATE_PAUSED, reason
		return "paused at step " + fmt.Sprint(step+1) + ": " + reason, nil
	})
}

// ActOnRollout applies an operator's action.
func (s *Store) ActOnRollout(c Change, id string, action droverv1.RolloutAction) (*droverv1.Rollout, error) {
	var out *droverv1.Rollout
	err := s.write(c, func(t *txn) error {
		raw, err := t.First(tableRollouts, "id", id)
		if err != nil {
			return err
		}
		if raw == nil {
			return NotFoundf("no rollout %s", id)
		}
		r := proto.CloneOf(raw.(*droverv1.Rollout))
		state := r.GetState()
		verb, summary := "", ""
		switch action {
		case droverv1.RolloutAction_ROLLOUT_ACTION_PAUSE:
			if state != droverv1.RolloutState_ROLLOUT_STATE_RUNNING {
				return Preconditionf("rollout %s is %s; only a running rollout pauses", id, rolloutStateName(state))
			}
			r.State, r.Reason, verb, summary = droverv1.RolloutState_ROLLOUT_STATE_PAUSED, "paused by hand", "rollout.pause", "paused by hand"
		case droverv1.RolloutAction_ROLLOUT_ACTION_RESUME:
			if state != droverv1.RolloutState_ROLLOUT_STATE_PAUSED {
				return Preconditionf("rollout %s is %s; only a paused rollout resumes", id, rolloutStateName(state))
			}
			// The bake starts again: what was judged before the pause is
			// not the traffic after it, and its failures no longer count.
			r.State, r.Reason, verb, summary = droverv1.RolloutState_ROLLOUT_STATE_RUNNING, "", "rollout.resume", "resumed"
			r.StepStartTime, r.StepReadyTime = c.timestamp(), nil
			r.ResumeRevision = r.GetRevision() + 1
		case droverv1.RolloutAction_ROLLOUT_ACTION_PROMOTE:
			if !rolloutActive(r) {
				return Preconditionf("rollout %s is %s; only an active rollout is promoted", id, rolloutStateName(state))
			}
			if err := finishRollout(t, r); err != nil {
				return err
			}
			verb, summary = "rollout.promote", fmt.Sprintf("promoted: %s:%d is primary on %d agents", r.GetModel(), r.GetToVersion(), len(r.GetAgents()))
		case droverv1.RolloutAction_ROLLOUT_ACTION_ABORT, droverv1.RolloutAction_ROLLOUT_ACTION_ROLLBACK:
			if action == droverv1.RolloutAction_ROLLOUT_ACTION_ABORT && !rolloutActive(r) {
				return Preconditionf("rollout %s is %s; abort stops an active rollout (rollback returns a finished one)", id, rolloutStateName(state))
			}
			if state == droverv1.RolloutState_ROLLOUT_STATE_ROLLED_BACK {
				return Preconditionf("rollout %s is already rolled back", id)
			}
			if action == droverv1.RolloutAction_ROLLOUT_ACTION_ROLLBACK && state == droverv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
				// Only the model's newest rollout returns: rolling back an
				// older one would pull the ground from under what came
				// after it.
				if other, err := laterRollout(t, r); err != nil {
					return err
				} else if other != nil {
					return Preconditionf("rollout %s of %s started after this one and is %s; roll that one back instead", other.GetId(), r.GetModel(), rolloutStateName(other.GetState()))
				}
				for _, ra := range r.GetAgents() { // every agent took part
					if ra.Phase == droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_WAITING {
						ra.Phase = droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_ASSIGNED
					}
				}
			}
			reason := "rolled back by hand"
			if c.Reason != "" {
				reason += ": " + c.Reason
			}
			if err := rollBack(t, r, reason); err != nil {
				return err
			}
			verb, summary = "rollout.rollback", fmt.Sprintf("%s; %s:%d rejected", reason, r.GetModel(), r.GetToVersion())
		default:
			return Invalidf("action %v: want pause, resume, promote, abort or rollback", action)
		}
		r.Revision++
		r.UpdateTime = c.timestamp()
		if err := t.Insert(tableRollouts, r); err != nil {
			return err
		}
		out = r
		return t.audit(verb, rolloutResource(id), summary)
	})
	return out, err
}

// laterRollout returns another rollout of r's model that is active, or
// that started after r and succeeded, or nil.
func laterRollout(t *txn, r *droverv1.Rollout) (*droverv1.Rollout, error) {
	it, err := t.Get(tableRollouts, "model", r.GetModel())
	if err != nil {
		return nil, err
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		o := raw.(*droverv1.Rollout)
		if o.GetId() != r.GetId() && (rolloutActive(o) ||
			o.GetState() == droverv1.RolloutState_ROLLOUT_STATE_SUCCEEDED && o.GetCreateTime().AsTime().After(r.GetCreateTime().AsTime())) {
			return o, nil
		}
	}
	return nil, nil
}

func rolloutStateName(s droverv1.RolloutState) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(s.String(), "ROLLOUT_STATE_"), "_", " "))
}

// Rollout returns a rollout, or nil.
func (v *Snapshot) Rollout(id string) *droverv1.Rollout {
	raw, _ := v.txn.First(tableRollouts, "id", id)
	if raw == nil {
		return nil
	}
	return raw.(*droverv1.Rollout)
}

// Rollouts returns rollouts (a model's, or every model's; only active
// ones when asked), newest first.
func (v *Snapshot) Rollouts(model string, active bool) []*droverv1.Rollout {
	it := v.all(tableRollouts, "id")
	if model != "" {
		it = v.all(tableRollouts, "model", model)
	}
	var out []*droverv1.Rollout
	for raw := it.Next(); raw != nil; raw = it.Next() {
		r := raw.(*droverv1.Rollout)
		if !active || rolloutActive(r) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *droverv1.Rollout) int {
		return b.GetCreateTime().AsTime().Compare(a.GetCreateTime().AsTime())
	})
	return out
}

// WatchRollout returns a rollout and a channel closed when it changes.
func (v *Snapshot) WatchRollout(id string) (*droverv1.Rollout, <-chan struct{}) {
	ch, raw, _ := v.txn.FirstWatch(tableRollouts, "id", id)
	if raw == nil {
		return nil, ch
	}
	return raw.(*droverv1.Rollout), ch
}

// activeRolloutOf returns the active rollout whose target is a model's
// version, or nil.
func activeRolloutOf(t *txn, model string, version uint64) (*droverv1.Rollout, error) {
	it, err := t.Get(tableRollouts, "model", model)
	if err != nil {
		return nil, err
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if r := raw.(*droverv1.Rollout); rolloutActive(r) && r.GetToVersion() == version {
			return r, nil
		}
	}
	return nil, nil
}
