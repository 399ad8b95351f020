package hub

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/hub/fsm"
	"github.com/droverhq/drover/internal/logging"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// rolloutHub is a one-node hub whose rollout controller runs, driven by
// commands applied directly and by metric windows put in its store.
type rolloutHub struct {
	t       *testing.T
	n       *Node
	seq     map[string]uint64
	windows atomic.Uint64
}

func startRolloutHub(t *testing.T, agents int) *rolloutHub {
	cfg := DefaultConfig()
	cfg.NodeName = "hub-1"
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr, cfg.RaftAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout, cfg.Raft.LeaderLeaseTimeout, cfg.Raft.CommitTimeout = 150*time.Millisecond, 150*time.Millisecond, 75*time.Millisecond, 5*time.Millisecond
	cfg.LeaderWait, cfg.ApplyTimeout = 2*time.Second, 5*time.Second
	cfg.AgentTimeout = time.Hour
	cfg.Bootstrap = true
	cfg.Logger = logging.Discard()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	deadline := time.Now().Add(10 * time.Second)
	for !n.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
	h := &rolloutHub{t: t, n: n, seq: map[string]uint64{}}
	for i := range 2 {
		h.do(&fsmv1.VersionCreate{Header: h.header(), CreateModel: i == 0, Version: &droverv1.ModelVersion{Model: "churn",
			Artifact: &droverv1.BlobRef{Digest: "sha256:" + strings.Repeat(fmt.Sprint(i+1), 64), SizeBytes: 1}, Format: "onnx"}})
	}
	for i := range agents {
		id := fmt.Sprintf("a%d", i+1)
		h.do(&fsmv1.AgentEnroll{Header: h.header(), Agent: &droverv1.Agent{Id: id, Name: "gpu-" + id}})
		h.do(&fsmv1.AssignmentSet{Header: h.header(), AgentId: id, Assignment: &droverv1.Assignment{Model: "churn", Version: 1, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY}})
	}
	return h
}

func (h *rolloutHub) header() *fsmv1.Header {
	return &fsmv1.Header{Actor: systemActor, Time: timestamppb.New(time.Now())}
}

func (h *rolloutHub) do(cmd fsm.Command) proto.Message {
	h.t.Helper()
	v, _, err := h.n.applyLocal(context.Background(), cmd)
	if err != nil {
		h.t.Fatalf("%T: %v", cmd, err)
	}
	return v
}

// report sends an agent's assignment status.
func (h *rolloutHub) report(agent string, st *droverv1.AssignmentStatus) {
	h.seq[agent]++
	h.do(&fsmv1.AgentReports{Header: h.header(), AgentId: agent, Reports: []*droverv1.Report{{Seq: h.seq[agent], Body: &droverv1.Report_Assignment{Assignment: st}}}})
}

func (h *rolloutHub) rollout() *droverv1.Rollout {
	return h.n.fsm.State().Snapshot().Rollout("r1")
}

func (h *rolloutHub) waitFor(d time.Duration, what string, ok func(r *droverv1.Rollout) bool) *droverv1.Rollout {
	h.t.Helper()
	deadline := time.Now().Add(d)
	for {
		r := h.rollout()
		if ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s: %v", what, r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// badWindow adds a one-minute metric window of churn:2 with a 10% error
// rate.
func (h *rolloutHub) badWindow(agent string, start time.Time) {
	h.n.metricWindows.add(agent, 1000+h.windows.Add(1), &droverv1.MetricWindow{Model: "churn", Version: 2, Start: timestamppb.New(start),
		Length: durationpb.New(time.Minute), Requests: 200, ServerErrors: 20})
}

func readyStatus(role droverv1.AssignmentRole) *droverv1.AssignmentStatus {
	return &droverv1.AssignmentStatus{Model: "churn", Version: 2, Role: role,
		Phase: droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY, Health: droverv1.ServingHealth_SERVING_HEALTH_HEALTHY}
}

// errorGateSteps is a canary step on one agent, baking an hour under an
// error-rate gate with a failure limit, then every agent.
func errorGateSteps(limit uint32) []*droverv1.RolloutStep {
	return []*droverv1.RolloutStep{{Agents: 1, Weight: 10, Bake: durationpb.New(time.Hour),
		Gates: []*droverv1.Gate{{Name: "errors", Metric: "error_rate", Max: proto.Float64(0.05), FailureLimit: limit}}}, {Percent: 100}}
}

// lastJudgement is the rollout's newest judgement.
func lastJudgement(r *droverv1.Rollout) *droverv1.Judgement {
	js := r.GetJudgements()
	if len(js) == 0 {
		return nil
	}
	return js[len(js)-1]
}

// TestGateJudgedOncePerWindow: gates are looked at every second but agents
// send a window a minute; a failing judgement counts once per new window,
// so failure-limit 3 rolls back on the third bad window, not three seconds
// after the first.
func TestGateJudgedOncePerWindow(t *testing.T) {
	h := startRolloutHub(t, 2)
	h.do(&fsmv1.RolloutCreate{Header: h.header(), Rollout: &droverv1.Rollout{Id: "r1", Model: "churn", ToVersion: 2, Steps: errorGateSteps(3)}})
	first := h.rollout().GetAgents()[0].GetAgentId()
	h.report(first, readyStatus(droverv1.AssignmentRole_ASSIGNMENT_ROLE_CANARY))
	r := h.waitFor(5*time.Second, "the step ready", func(r *droverv1.Rollout) bool { return r.GetStepReadyTime() != nil })
	start := r.GetStepReadyTime().AsTime()
	for i := range 2 {
		h.badWindow(first, start.Add(time.Duration(i)*time.Minute))
		r = h.waitFor(5*time.Second, fmt.Sprintf("failure %d", i+1), func(r *droverv1.Rollout) bool {
			return lastJudgement(r).GetConsecutiveFailures() == uint32(i+1)
		})
		time.Sleep(3 * rolloutJudgeEvery) // judged again and again, on the same window
		r = h.rollout()
		if r.GetState() != droverv1.RolloutState_ROLLOUT_STATE_RUNNING {
			t.Fatalf("after %d bad windows: %v (%s)", i+1, r.GetState(), r.GetReason())
		}
		if got := lastJudgement(r).GetConsecutiveFailures(); got != uint32(i+1) {
			t.Fatalf("after %d bad windows the gate counts %d failures in a row", i+1, got)
		}
		if end := lastJudgement(r).GetDataEnd().AsTime(); !end.Equal(start.Add(time.Duration(i+1) * time.Minute)) {
			t.Errorf("judgement saw data until %v", end)
		}
	}
	if n := len(r.GetJudgements()); n != 2 {
		t.Errorf("%d judgements recorded for two windows", n)
	}
	h.badWindow(first, start.Add(2*time.Minute))
	r = h.waitFor(5*time.Second, "the rollback", func(r *droverv1.Rollout) bool { return r.GetState() == droverv1.RolloutState_ROLLOUT_STATE_ROLLED_BACK })
	if !strings.Contains(r.GetReason(), "gate errors") {
		t.Errorf("reason %q", r.GetReason())
	}
}

// TestResumeForgetsGateFailures: resume bakes the step again from the
// start, and the failures judged before the pause no longer count.
func TestResumeForgetsGateFailures(t *testing.T) {
	h := startRolloutHub(t, 2)
	h.do(&fsmv1.RolloutCreate{Header: h.header(), Rollout: &droverv1.Rollout{Id: "r1", Model: "churn", ToVersion: 2, Steps: errorGateSteps(50)}})
	first := h.rollout().GetAgents()[0].GetAgentId()
	h.report(first, readyStatus(droverv1.AssignmentRole_ASSIGNMENT_ROLE_CANARY))
	r := h.waitFor(5*time.Second, "the step ready", func(r *droverv1.Rollout) bool { return r.GetStepReadyTime() != nil })
	for i := range 2 {
		h.badWindow(first, r.GetStepReadyTime().AsTime().Add(time.Duration(i)*time.Minute))
		h.waitFor(5*time.Second, "a failure", func(r *droverv1.Rollout) bool { return lastJudgement(r).GetConsecutiveFailures() == uint32(i+1) })
	}
	h.do(&fsmv1.RolloutAct{Header: h.header(), Id: "r1", Action: droverv1.RolloutAction_ROLLOUT_ACTION_PAUSE})
	resumed := h.do(&fsmv1.RolloutAct{Header: h.header(), Id: "r1", Action: droverv1.RolloutAction_ROLLOUT_ACTION_RESUME}).(*droverv1.Rollout)
	before := len(resumed.GetJudgements())
	r = h.waitFor(5*time.Second, "the step ready again", func(r *droverv1.Rollout) bool { return r.GetStepReadyTime() != nil })
	h.badWindow(first, r.GetStepReadyTime().AsTime().Add(3*time.Minute)) // newer than those judged before
	r = h.waitFor(5*time.Second, "a judgement after the resume", func(r *droverv1.Rollout) bool { return len(r.GetJudgements()) > before })
	if j := r.GetJudgements()[before]; j.GetResult() != "fail" || j.GetConsecutiveFailures() != 1 {
		t.Errorf("first judgement after the resume: %s, %d failures in a row; want fail, 1", j.GetResult(), j.GetConsecutiveFailures())
	}
}

// TestMinHealthyShareRoundsUp: min-healthy 0.8 of 5 agents is 4, for the
// failures allowed as for readiness (int(5*(1-0.8)) is 0 in floating
// point).
func TestMinHealthyShareRoundsUp(t *testing.T) {
	for _, c := range []struct {
		n     int
		share float64
		want  int
	}{{5, 0.8, 4}, {5, 0, 5}, {5, 1, 5}, {3, 0.6, 2}, {10, 0.7, 7}, {3, 0.5, 2}, {1, 0.01, 1}, {0, 0.5, 0}, {10, 0.3, 3}} {
		if got := healthyNeeded(c.n, c.share); got != c.want {
			t.Errorf("healthyNeeded(%d, %g) = %d, want %d", c.n, c.share, got, c.want)
		}
	}
	h := startRolloutHub(t, 5)
	h.do(&fsmv1.RolloutCreate{Header: h.header(), Rollout: &droverv1.Rollout{Id: "r1", Model: "churn", ToVersion: 2,
		Steps: []*droverv1.RolloutStep{{Percent: 100, MinHealthyShare: 0.8, Bake: durationpb.New(time.Hour)}}}})
	for i, ra := range h.rollout().GetAgents() {
		st := readyStatus(droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY)
		if i == 0 {
			st.Phase, st.Attempts, st.Message, st.Health = droverv1.AssignmentPhase_ASSIGNMENT_PHASE_FAILED, 3, "disk full", 0
		}
		h.report(ra.GetAgentId(), st)
	}
	time.Sleep(4 * rolloutTick)
	if r := h.rollout(); r.GetState() != droverv1.RolloutState_ROLLOUT_STATE_RUNNING {
		t.Errorf("one failed agent of 5 under min-healthy 0.8: %v (%s)", r.GetState(), r.GetReason())
	}
}

// TestAgentDrainedMidRolloutIsSkipped: an agent drained after the rollout
// began runs nothing; the step goes on without it rather than wait out
// its deadline, roll back and reject the version.
func TestAgentDrainedMidRolloutIsSkipped(t *testing.T) {
	h := startRolloutHub(t, 2)
	h.do(&fsmv1.RolloutCreate{Header: h.header(), Rollout: &droverv1.Rollout{Id: "r1", Model: "churn", ToVersion: 2,
		Steps: []*droverv1.RolloutStep{{Percent: 100, ProgressDeadline: durationpb.New(2 * time.Second)}}}})
	h.do(&fsmv1.AgentDrain{Header: h.header(), AgentId: "a2"})
	h.report("a1", readyStatus(droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY))
	r := h.waitFor(10*time.Second, "the end", func(r *droverv1.Rollout) bool { return r.GetState() != droverv1.RolloutState_ROLLOUT_STATE_RUNNING })
	if r.GetState() != droverv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Errorf("rollout %v (%s)", r.GetState(), r.GetReason())
	}
}

// TestForwardedCommandTakesLeaderTime: a command a follower forwards is
// applied at the leader's time, not the follower's: a follower whose clock
// is 11 minutes behind does not start a rollout past its 10-minute
// progress deadline.
func TestForwardedCommandTakesLeaderTime(t *testing.T) {
	h := startRolloutHub(t, 2)
	behind := &fsmv1.Header{Actor: systemActor, Time: timestamppb.New(time.Now().Add(-11 * time.Minute))}
	data, err := fsm.Encode(&fsmv1.RolloutCreate{Header: behind, Rollout: &droverv1.Rollout{Id: "r1", Model: "churn", ToVersion: 2,
		Steps: []*droverv1.RolloutStep{{Percent: 100}}}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&peerService{n: h.n}).Apply(t.Context(), &droverv1.ApplyRequest{Command: data})
	if err != nil || resp.GetError() != nil {
		t.Fatal(err, resp.GetError())
	}
	if d := time.Since(h.rollout().GetStepStartTime().AsTime()); d > time.Minute || d < 0 {
		t.Fatalf("the step started %s ago", d)
	}
	time.Sleep(4 * rolloutTick)
	if r := h.rollout(); r.GetState() != droverv1.RolloutState_ROLLOUT_STATE_RUNNING {
		t.Errorf("rollout %v (%s)", r.GetState(), r.GetReason())
	}
}
