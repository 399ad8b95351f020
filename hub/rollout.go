package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/hub/gates"
	"github.com/droverhq/drover/hub/state"
	"github.com/droverhq/drover/internal/sketch"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// The rollout controller runs on the leader. Every tick it looks at each
// running rollout and makes at most one decision, as a Raft command
// guarded by the step it was made for: the step's agents are ready (its
// bake begins), a judgement of its gates, the next step, or a rollback.
// A new leader picks up from the replicated state: a step's bake began at
// the recorded time, and a command for a step already left is refused as
// stale, so nothing is applied twice or skipped.

// Controller timing.
const (
	rolloutTick             = 250 * time.Millisecond
	rolloutJudgeEvery       = time.Second
	defaultProgressDeadline = 10 * time.Minute
	// loadAttempts is how many failed attempts make an agent's load a
	// failure of the rollout (the agent retries with back-off meanwhile).
	loadAttempts = 3
	// unhealthyFor is how long a step agent's runner may stay unhealthy
	// (crash-looping) before the rollout rolls back.
	unhealthyFor = 30 * time.Second
)

// metricStore holds agents' recent metric windows, on the leader, in
// memory: what gates judge. A new leader starts empty and fills from the
// next reports (gates are inconclusive meanwhile, never passing).
type metricStore struct {
	mu      sync.Mutex
	windows map[string][]*droverv1.MetricWindow // by agent
	lastSeq map[string]uint64
}

const metricKeep = 600 // per agent: ten minutes of one-second windows, ten hours of minutes

func newMetricStore() *metricStore {
	return &metricStore{windows: map[string][]*droverv1.MetricWindow{}, lastSeq: map[string]uint64{}}
}

func (s *metricStore) add(agentID string, seq uint64, w *droverv1.MetricWindow) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq <= s.lastSeq[agentID] {
		return
	}
	s.lastSeq[agentID] = seq
	ws := append(s.windows[agentID], w)
	if len(ws) > metricKeep {
		ws = ws[len(ws)-metricKeep:]
	}
	s.windows[agentID] = ws
}

// sample sums the agents' windows of a model version that began at or
// after since, and says when the newest of them ended (zero: none).
func (s *metricStore) sample(agents []string, model string, version uint64, since time.Time) (gates.Sample, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := gates.Sample{Latency: map[int]uint64{}}
	var newest time.Time
	var shadowAgreed, correct, logLossRows uint64
	var logLoss float64
	for _, id := range agents {
		for _, w := range s.windows[id] {
			if w.GetModel() != model || w.GetVersion() != version || w.GetStart().AsTime().Before(since) {
				continue
			}
			if end := w.GetStart().AsTime().Add(w.GetLength().AsDuration()); end.After(newest) {
				newest = end
			}
			out.Requests += w.GetRequests()
			out.Errors += w.GetServerErrors()
			for b, n := range w.GetLatency() {
				out.Latency[int(b)] += n
			}
			out.ShadowRows += w.GetShadowRows()
			shadowAgreed += w.GetShadowAgreed()
			out.AccuracyRows += w.GetLabeledRows()
			correct += w.GetCorrectRows()
			logLoss += w.GetLogLossSum()
			logLossRows += w.GetLogLossRows()
		}
	}
	if out.ShadowRows > 0 {
		a := float64(shadowAgreed) / float64(out.ShadowRows)
		out.ShadowAgreement = &a
	}
	if out.AccuracyRows > 0 {
		a := float64(correct) / float64(out.AccuracyRows)
		out.Accuracy = &a
	}
	if logLossRows > 0 {
		ll := logLoss / float64(logLossRows)
		out.LogLoss = &ll
	}
	return out, newest
}

// runRollouts drives the running rollouts until leadership ends.
func (n *Node) runRollouts(ctx context.Context) {
	tick := time.NewTicker(rolloutTick)
	defer tick.Stop()
	c := &rolloutMemory{judged: map[string]time.Time{}, unhealthy: map[string]time.Time{}}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		active := map[string]bool{}
		for _, r := range n.fsm.State().Snapshot().Rollouts("", true) {
			active[r.GetId()] = true
			if r.GetState() != droverv1.RolloutState_ROLLOUT_STATE_RUNNING {
				continue
			}
			if err := n.driveRollout(ctx, r, c); err != nil && ctx.Err() == nil && state.KindOf(err) != state.KindFailedPrecondition {
				n.logger.Warn("rollout controller", "rollout", r.GetId(), "err", err)
			}
		}
		c.forget(active)
	}
}

// forget drops what is remembered of rollouts no longer active.
func (m *rolloutMemory) forget(active map[string]bool) {
	for id := range m.judged {
		if !active[id] {
			delete(m.judged, id)
		}
	}
	for key := range m.unhealthy {
		if id, _, _ := strings.Cut(key, "/"); !active[id] {
			delete(m.unhealthy, key)
		}
	}
}

// rolloutMemory is what the controller remembers between ticks, on this
// leader only: when it last judged each rollout, and since when each
// agent's runner has been unhealthy. A new leader starts afresh, which can
// only delay a decision.
type rolloutMemory struct {
	judged    map[string]time.Time // by rollout
	unhealthy map[string]time.Time // by rollout/agent
}

// stepRole is the role the new version has on a step's agents.
func stepRole(s *droverv1.RolloutStep) droverv1.AssignmentRole {
	switch {
	case s.GetShadow():
		return droverv1.AssignmentRole_ASSIGNMENT_ROLE_SHADOW
	case s.GetWeight() == 0:
		return droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY
	}
	return droverv1.AssignmentRole_ASSIGNMENT_ROLE_CANARY
}

// unhealthyPrefix marks the message of an agent whose runner is down;
// agentDownMessage that of an agent that stopped heartbeating.
const (
	unhealthyPrefix  = "unhealthy: "
	agentDownMessage = "agent down: no heartbeat"
)

// agentPhases reads the phases of a rollout's agents from their reports.
func agentPhases(view *state.Snapshot, r *droverv1.Rollout) {
	for _, ra := range r.GetAgents() {
		if ra.GetPhase() == droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_WAITING || ra.GetPhase() == droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_ROLLED_BACK {
			continue
		}
		step := r.GetStep()
		if int(step) >= len(r.GetSteps()) {
			step = uint32(len(r.GetSteps()) - 1)
		}
		role := stepRole(r.GetSteps()[step])
		if r.GetState() == droverv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
			role = droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY
		}
		a := view.Agent(ra.GetAgentId())
		if a == nil {
			ra.Phase, ra.Message = droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_FAILED, "agent deregistered"
			continue
		}
		for _, st := range a.GetAssignmentStatuses() {
			if st.GetModel() != r.GetModel() || st.GetRole() != role || st.GetVersion() != r.GetToVersion() {
				continue
			}
			switch st.GetPhase() {
			case droverv1.AssignmentPhase_ASSIGNMENT_PHASE_DOWNLOADING:
				ra.Phase = droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_DOWNLOADING
			case droverv1.AssignmentPhase_ASSIGNMENT_PHASE_PENDING, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_LOADING:
				ra.Phase = droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_LOADING
			case droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY:
				ra.Phase = droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_SERVING
				if role == droverv1.AssignmentRole_ASSIGNMENT_ROLE_SHADOW {
					ra.Phase = droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_READY
				}

			case droverv1.AssignmentPhase_ASSIGNMENT_PHASE_FAILED:
				ra.Phase = droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_FAILED
			}
			ra.Message = st.GetMessage()
			if st.GetHealth() == droverv1.ServingHealth_SERVING_HEALTH_UNHEALTHY {
				ra.Message = unhealthyPrefix + st.GetMessage()
			}
			if st.GetPhase() == droverv1.AssignmentPhase_ASSIGNMENT_PHASE_FAILED && st.GetAttempts() < loadAttempts {
				ra.Phase = droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_LOADING // still retrying
			}
		}
		if a.GetStatus() == droverv1.AgentStatus_AGENT_STATUS_DOWN {
			// Its last report may say ready, but it is not answering now.
			ra.Message = agentDownMessage
		}
	}
}

// driveRollout makes the next decision for a running rollout, if one is
// due.
func (n *Node) driveRollout(ctx context.Context, r *droverv1.Rollout, mem *rolloutMemory) error {
	view := n.fsm.State().Snapshot()
	r = proto.CloneOf(r)
	agentPhases(view, r)
	step := r.GetSteps()[r.GetStep()]
	header := func(reason string) *fsmv1.Header {
		return &fsmv1.Header{Actor: systemActor, Time: now(n), Reason: reason}
	}
	var stepAgents, ready, failed, unhealthy []string
	for _, ra := range r.GetAgents() {
		if ra.GetStep() > r.GetStep() {
			continue
		}
		if view.Agent(ra.GetAgentId()).GetDraining() {
			// Drained since the rollout began: it runs nothing, so it
			// counts neither as ready nor as failed (skipped).
			continue
		}
		stepAgents = append(stepAgents, ra.GetAgentId())
		switch ra.GetPhase() {
		case droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_READY, droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_SERVING:
			if ra.GetMessage() != agentDownMessage { // an agent offline is not ready, whatever it last said
				ready = append(ready, ra.GetAgentId())
			}
		case droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_FAILED:
			failed = append(failed, fmt.Sprintf("%s (%s)", ra.GetName(), ra.GetMessage()))
		}
		key := r.GetId() + "/" + ra.GetAgentId()
		if strings.HasPrefix(ra.GetMessage(), unhealthyPrefix) {
			if _, ok := mem.unhealthy[key]; !ok {
				mem.unhealthy[key] = n.now()
			}
			if n.now().Sub(mem.unhealthy[key]) >= unhealthyFor {
				unhealthy = append(unhealthy, fmt.Sprintf("%s (%s)", ra.GetName(), strings.TrimPrefix(ra.GetMessage(), unhealthyPrefix)))
			}
		} else {
			delete(mem.unhealthy, key)
		}
	}
	needed := healthyNeeded(len(stepAgents), step.GetMinHealthyShare())
	allowed := len(stepAgents) - needed
	fail := func(reason string) error {
		_, _, err := n.applyLocal(ctx, &fsmv1.RolloutFail{Header: header(reason), Id: r.GetId(), Step: r.GetStep(), Revision: r.GetRevision(), Reason: reason})
		if err == nil {
			n.logger.Warn("rollout rolled back", "rollout", r.GetId(), "model", r.GetModel(), "version", r.GetToVersion(), "reason", reason)
		}
		return err
	}
	if len(unhealthy) > allowed {
		return fail(fmt.Sprintf("the new version's runner has been unhealthy for %s on %d of %d agents of step %d: %s", unhealthyFor, len(unhealthy), len(stepAgents), r.GetStep()+1, strings.Join(unhealthy, "; ")))
	}
	if len(failed) > allowed {
		return fail(fmt.Sprintf("the new version failed on %d of %d agents of step %d: %s", len(failed), len(stepAgents), r.GetStep()+1, strings.Join(failed, "; ")))
	}
	at := n.now()
	deadline := step.GetProgressDeadline().AsDuration()
	if deadline <= 0 {
		deadline = defaultProgressDeadline
	}
	if r.GetStepReadyTime() == nil {
		switch {
		case len(ready) == len(stepAgents):
		case at.Sub(r.GetStepStartTime().AsTime()) > deadline && len(ready) >= needed && len(ready) > 0:
			n.logger.Info("rollout step going on without its late agents", "rollout", r.GetId(), "ready", len(ready), "agents", len(stepAgents))
		case at.Sub(r.GetStepStartTime().AsTime()) > deadline:
			return fail(fmt.Sprintf("only %d of %d agents of step %d were ready by the progress deadline (%s)", len(ready), len(stepAgents), r.GetStep()+1, deadline))
		default:
			return nil
		}
		v, _, err := n.applyLocal(ctx, &fsmv1.RolloutStepReady{Header: header(""), Id: r.GetId(), Step: r.GetStep(), Revision: r.GetRevision()})
		if err != nil || len(step.GetGates()) > 0 || step.GetBake().AsDuration() > 0 {
			return err
		}
		// Nothing to wait for or judge: the next step at once.
		r = v.(*droverv1.Rollout)
	}
	// Baking: judge the gates, at most once a judging interval.
	if len(step.GetGates()) > 0 {
		if at.Sub(mem.judged[r.GetId()]) < rolloutJudgeEvery {
			return nil
		}
		mem.judged[r.GetId()] = at
	}
	since := r.GetStepReadyTime().AsTime()
	// A judgement counts (is recorded, and its failure adds to the
	// gate's failures in a row) only when windows newer than those the
	// step's last judgement saw have arrived: the same windows judged
	// again each second are not new failures. Otherwise the step stands
	// as its last judgements left it.
	last, seen := stepJudgements(r)
	verdict, js := recordedVerdict(step, last), []*droverv1.Judgement(nil)
	for _, g := range step.GetGates() {
		if j := last[g.GetName()]; j != nil {
			js = append(js, j)
		}
	}
	if len(step.GetGates()) > 0 {
		v, newJs, dataEnd := n.judgeStep(view, r, step, stepAgents, since)
		if dataEnd.After(seen) {
			res, _, err := n.applyLocal(ctx, &fsmv1.RolloutJudge{Header: header(""), Id: r.GetId(), Step: r.GetStep(), Revision: r.GetRevision(), Judgements: newJs})
			if err != nil {
				return err
			}
			r, verdict, js = res.(*droverv1.Rollout), v, newJs
		}
	}
	if verdict == gates.Fail {
		var why []string
		for _, j := range js {
			if j.GetResult() == string(gates.Fail) {
				why = append(why, fmt.Sprintf("gate %s: %s", j.GetGate(), j.GetDetail()))
			}
		}
		return fail(strings.Join(why, "; "))
	}
	if at.Before(since.Add(step.GetBake().AsDuration())) {
		return nil
	}
	if verdict == gates.Pass || len(step.GetGates()) == 0 {
		_, _, err := n.applyLocal(ctx, &fsmv1.RolloutAdvance{Header: header(""), Id: r.GetId(), Step: r.GetStep(), Revision: r.GetRevision()})
		return err
	}
	if at.After(since.Add(step.GetBake().AsDuration() + deadline)) {
		reason := fmt.Sprintf("the gates of step %d stayed inconclusive (too few samples) for %s after the bake", r.GetStep()+1, deadline)
		_, _, err := n.applyLocal(ctx, &fsmv1.RolloutFail{Header: header(reason), Id: r.GetId(), Step: r.GetStep(), Revision: r.GetRevision(), Reason: reason, Pause: true})
		return err
	}
	return nil
}

// healthyNeeded is how many of a step's n agents must be ready (or may
// not fail) under its min-healthy share (0: all): the share of n rounded
// up, so that 0.8 of 5 is 4, not 3 by floating-point error.
func healthyNeeded(n int, share float64) int {
	if share <= 0 {
		return n
	}
	return min(n, int(math.Ceil(share*float64(n)-1e-9)))
}

// stepJudgements returns the last judgement of each gate of the current
// step recorded since the rollout last resumed (failures before a pause
// do not carry over), and the end of the newest window they saw.
func stepJudgements(r *droverv1.Rollout) (map[string]*droverv1.Judgement, time.Time) {
	last := map[string]*droverv1.Judgement{}
	var seen time.Time
	for _, j := range r.GetJudgements() {
		if j.GetStep() != r.GetStep() || j.GetRevision() < r.GetResumeRevision() {
			continue
		}
		last[j.GetGate()] = j
		if end := j.GetDataEnd().AsTime(); j.GetDataEnd() != nil && end.After(seen) {
			seen = end
		}
	}
	return last, seen
}

// recordedVerdict is the step's verdict from its gates' last judgements:
// fail if a gate reached its failure limit, pass if every gate passed,
// inconclusive otherwise (a gate not judged yet included).
func recordedVerdict(step *droverv1.RolloutStep, last map[string]*droverv1.Judgement) gates.Result {
	verdict := gates.Pass
	for _, g := range step.GetGates() {
		j := last[g.GetName()]
		switch {
		case j == nil:
			verdict = gates.Inconclusive
		case j.GetResult() == string(gates.Fail) && j.GetConsecutiveFailures() >= max(g.GetFailureLimit(), gates.DefaultFailureLimit):
			return gates.Fail
		case j.GetResult() != string(gates.Pass):
			verdict = gates.Inconclusive
		}
	}
	return verdict
}

// judgeStep measures the step's agents (the canary group) and the agents
// still on the old version, and the old version's traffic on the step's
// agents (the baseline group), and judges the step's gates. It returns
// the end of the newest window it judged, which the judgements record.
func (n *Node) judgeStep(view *state.Snapshot, r *droverv1.Rollout, step *droverv1.RolloutStep, stepAgents []string, since time.Time) (gates.Result, []*droverv1.Judgement, time.Time) {
	var all []string
	for _, ra := range r.GetAgents() {
		all = append(all, ra.GetAgentId())
	}
	canary, dataEnd := n.metricWindows.sample(stepAgents, r.GetModel(), r.GetToVersion(), since)
	baseline, baselineEnd := n.metricWindows.sample(all, r.GetModel(), r.GetFromVersion(), since)
	if baselineEnd.After(dataEnd) {
		dataEnd = baselineEnd
	}
	canary.Agents, baseline.Agents = uint64(len(stepAgents)), uint64(len(all)-len(stepAgents))
	for _, id := range stepAgents {
		if a := view.Agent(id); a != nil && slices.ContainsFunc(a.GetGpuHealth(), func(g *droverv1.GpuHealth) bool { return g.GetHealth() == "unhealthy" }) {
			canary.GPUUnhealthy++
		}
	}
	// Drift of the new version's traffic on the step's agents (none
	// measured when its reference profile is missing or unreadable).
	if ref, _ := view.DriftReference(r.GetModel(), r.GetToVersion()); ref != nil {
		var parts []*droverv1.DriftWindow
		for _, w := range view.DriftWindows(r.GetModel(), r.GetToVersion(), stepAgents, since) {
			parts = append(parts, w.GetWindow())
			if end := w.GetWindow().GetStart().AsTime().Add(w.GetWindow().GetLength().AsDuration()); end.After(dataEnd) {
				dataEnd = end
			}
		}
		if merged, err := sketch.MergeWindows(parts...); err == nil && len(parts) > 0 {
			rep := ref.Evaluate(merged, state.DriftOptions(view.DriftSettings(r.GetModel())))
			share := rep.Dataset.DriftShare
			canary.DriftShare = &share
			canary.FeatureDrift = map[string]float64{}
			for _, f := range rep.Features {
				canary.FeatureDrift[f.Name] = f.Score
			}
		}
	}
	// The failure counts so far, from the step's last judgements since
	// the rollout last resumed.
	tracker := &gates.Tracker{Consecutive: map[string]int{}}
	last, _ := stepJudgements(r)
	for gate, j := range last {
		tracker.Consecutive[gate] = int(j.GetConsecutiveFailures())
	}
	gs := make([]gates.Gate, len(step.GetGates()))
	for i, g := range step.GetGates() {
		gs[i] = gateOf(g)
	}
	verdict, judged := gates.Evaluate(gs, canary, baseline, tracker)
	out := make([]*droverv1.Judgement, len(judged))
	for i, j := range judged {
		pj := &droverv1.Judgement{Step: r.GetStep(), Gate: j.Gate, Metric: string(j.Metric), Result: string(j.Result),
			PValue: j.PValue, Samples: j.Samples, Detail: j.Limit, ConsecutiveFailures: uint32(tracker.Consecutive[j.Gate])}
		if !dataEnd.IsZero() {
			pj.DataEnd = timestamppb.New(dataEnd)
		}
		if j.Reason != "" && j.Reason != j.Limit {
			pj.Detail = strings.TrimSpace(j.Limit + " " + j.Reason)
			// "x > max 1 failed: x > max 1" says it twice.
			if rest, ok := strings.CutPrefix(j.Reason, "failed: "+j.Limit); ok && j.Limit != "" {
				pj.Detail = j.Limit + ": failed" + rest
			}
		}
		if j.HasCanary {
			pj.Canary = proto.Float64(j.Canary)
		}
		if j.HasBaseline {
			pj.Baseline = proto.Float64(j.Baseline)
		}
		out[i] = pj
	}
	return verdict, out, dataEnd
}

// gateOf is a gate as package gates takes it.
func gateOf(g *droverv1.Gate) gates.Gate {
	return gates.Gate{Name: g.GetName(), Metric: gates.Metric(g.GetMetric()), Feature: g.GetFeature(), Max: g.Max, Min: g.Min,
		MaxIncrease: g.MaxIncrease, Relative: g.GetRelative(), Test: g.GetTest(), Alpha: g.GetAlpha(),
		MinSamples: g.GetMinSamples(), FailureLimit: int(g.GetFailureLimit())}
}

// rolloutService serves RolloutService.
type rolloutService struct {
	droverv1connect.UnimplementedRolloutServiceHandler
	n *Node
}

// newID is a fresh random id with a prefix: "r-5f2c1a09b3e4".
func newID(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

func (s *rolloutService) StartRollout(ctx context.Context, req *droverv1.StartRolloutRequest) (*droverv1.StartRolloutResponse, error) {
	if err := state.ValidateName("model", req.GetModel()); err != nil {
		return nil, err
	}
	if err := state.ValidateText("reason", req.GetReason(), state.MaxReasonLen); err != nil {
		return nil, err
	}
	if err := state.ValidateLabels("selector", req.GetSelector()); err != nil {
		return nil, err
	}
	if err := state.ValidateRolloutSteps(req.GetSteps()); err != nil {
		return nil, err
	}
	for i, st := range req.GetSteps() {
		for j, g := range st.GetGates() {
			if err := gateOf(g).Validate(); err != nil {
				return nil, state.Invalidf("steps[%d].gates[%d]: %v", i, j, err)
			}
		}
	}
	view, _, err := s.n.read(ctx, nil)
	if err != nil {
		return nil, err
	}
	mv, err := view.ResolveVersion(req.GetModel(), req.GetVersion(), req.GetAlias())
	if err != nil {
		return nil, err
	}
	r := &droverv1.Rollout{Id: newID("r"), Model: req.GetModel(), ToVersion: mv.GetVersion(), Selector: req.GetSelector(),
		Steps: req.GetSteps(), Force: req.GetForce()}
	v, _, err := s.n.apply(ctx, &fsmv1.RolloutCreate{Header: s.n.header(ctx, req.GetReason()), Rollout: r})
	if err != nil {
		return nil, err
	}
	return &droverv1.StartRolloutResponse{Rollout: v.(*droverv1.Rollout)}, nil
}

func (s *rolloutService) GetRollout(ctx context.Context, req *droverv1.GetRolloutRequest) (*droverv1.GetRolloutResponse, error) {
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	r := view.Rollout(req.GetId())
	if r == nil {
		return nil, state.NotFoundf("no rollout %s", req.GetId())
	}
	r = proto.CloneOf(r)
	agentPhases(view, r)
	return &droverv1.GetRolloutResponse{Rollout: r, Meta: meta}, nil
}

func (s *rolloutService) ListRollouts(ctx context.Context, req *droverv1.ListRolloutsRequest) (*droverv1.ListRolloutsResponse, error) {
	view, meta, err := s.n.read(ctx, req.GetRead())
	if err != nil {
		return nil, err
	}
	out := &droverv1.ListRolloutsResponse{Meta: meta}
	for _, r := range view.Rollouts(req.GetModel(), req.GetActive()) {
		r = proto.CloneOf(r)
		agentPhases(view, r)
		out.Rollouts = append(out.Rollouts, r)
	}
	return out, nil
}

// WatchRollout streams the rollout whenever it (or one of its agents'
// reports) changes, until it ends.
func (s *rolloutService) WatchRollout(ctx context.Context, req *droverv1.WatchRolloutRequest, stream droverv1connect.RolloutServiceWatchRolloutServerStream) error {
	var last []byte
	for {
		view := s.n.fsm.State().Snapshot()
		r, ch := view.WatchRollout(req.GetId())
		if r == nil {
			return state.NotFoundf("no rollout %s", req.GetId())
		}
		r = proto.CloneOf(r)
		agentPhases(view, r)
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if string(b) != string(last) {
			if err := stream.Send(&droverv1.WatchRolloutResponse{Rollout: r}); err != nil {
				return err
			}
			last = b
		}
		if r.GetState() == droverv1.RolloutState_ROLLOUT_STATE_SUCCEEDED || r.GetState() == droverv1.RolloutState_ROLLOUT_STATE_ROLLED_BACK {
			return nil
		}
		// Agents' phases change without the rollout changing: look again
		// at least every half second.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.n.streams.Done():
			return unavailable("the node is shutting down")
		case <-ch:
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (s *rolloutService) ActOnRollout(ctx context.Context, req *droverv1.ActOnRolloutRequest) (*droverv1.ActOnRolloutResponse, error) {
	if err := state.ValidateText("reason", req.GetReason(), state.MaxReasonLen); err != nil {
		return nil, err
	}
	v, _, err := s.n.apply(ctx, &fsmv1.RolloutAct{Header: s.n.header(ctx, req.GetReason()), Id: req.GetId(), Action: req.GetAction()})
	if err != nil {
		return nil, err
	}
	return &droverv1.ActOnRolloutResponse{Rollout: v.(*droverv1.Rollout)}, nil
}
