package fsm

import (
	"crypto/sha256"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/hub/state"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

func agentToken(id string) *fsmv1.TokenRecord {
	h := sha256.Sum256([]byte("secret-" + id))
	return &fsmv1.TokenRecord{Token: &droverv1.Token{Id: id, Role: droverv1.Role_ROLE_AGENT}, SecretHash: h[:]}
}

func TestAgentLifecycle(t *testing.T) {
	h := newHarness(t)
	// A model with two versions and an alias, to assign.
	h.mustApply(&fsmv1.ModelCreate{Header: header(1), Name: "churn"})
	for i := range 2 {
		h.mustApply(&fsmv1.VersionCreate{Header: header(2 + i), Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob(string(rune('a' + i))), Format: "onnx"}})
	}
	h.mustApply(&fsmv1.AliasSet{Header: header(4), Model: "churn", Alias: "champion", Version: 1})

	a := h.mustApply(&fsmv1.AgentEnroll{Header: header(5), Token: agentToken("t1"), Agent: &droverv1.Agent{
		Id: "a1", Name: "gpu-1", ReportedLabels: map[string]string{"site": "lab", "rack": "r1"}}}).(*droverv1.Agent)
	if a.GetStatus() != droverv1.AgentStatus_AGENT_STATUS_READY || a.GetLabels()["site"] != "lab" {
		t.Fatalf("enrolled agent = %v", a)
	}
	view := h.f.State().Snapshot()
	if view.TokenByID("t1").GetToken().GetAgentId() != "a1" || view.Agent("gpu-1").GetId() != "a1" {
		t.Fatal("credential not bound, or agent not found by name")
	}

	// Operator labels override the agent's own.
	a = h.mustApply(&fsmv1.AgentLabelsSet{Header: header(6), AgentId: "a1", Set: map[string]string{"rack": "r9", "tier": "gold"}}).(*droverv1.Agent)
	if a.GetLabels()["rack"] != "r9" || a.GetLabels()["tier"] != "gold" || a.GetReportedLabels()["rack"] != "r1" {
		t.Fatalf("labels = %v", a.GetLabels())
	}
	h.refused(&fsmv1.AgentLabelsSet{Header: header(6), AgentId: "a1", Set: map[string]string{"Bad Key": "x"}}, state.KindInvalid)

	// Assignments, by version and by alias, validated.
	h.mustApply(&fsmv1.AssignmentSet{Header: header(7), AgentId: "a1", Assignment: &droverv1.Assignment{
		Model: "churn", Alias: "champion", Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY}})
	h.mustApply(&fsmv1.AssignmentSet{Header: header(8), AgentId: "a1", Assignment: &droverv1.Assignment{
		Model: "churn", Version: 2, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_CANARY, Weight: 10}})
	h.refused(&fsmv1.AssignmentSet{Header: header(9), AgentId: "a1", Assignment: &droverv1.Assignment{Model: "churn", Version: 9, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY}}, state.KindNotFound)
	h.refused(&fsmv1.AssignmentSet{Header: header(9), AgentId: "a1", Assignment: &droverv1.Assignment{Model: "churn", Version: 1, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY, Weight: 101}}, state.KindInvalid)
	h.refused(&fsmv1.AssignmentSet{Header: header(9), AgentId: "nope", Assignment: &droverv1.Assignment{Model: "churn", Version: 1, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY}}, state.KindNotFound)

	// The desired state follows the alias, and the watch fires when it moves.
	ws := memdb.NewWatchSet()
	d, err := h.f.State().Snapshot().DesiredState("a1", ws)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.GetAssignments()) != 2 || d.GetAssignments()[1].GetVersion() != 1 || d.GetAssignments()[1].GetWeight() != 100 ||
		d.GetAssignments()[0].GetVersion() != 2 || d.GetAssignments()[1].GetArtifact().GetDigest() == "" {
		t.Fatalf("desired = %v", d)
	}
	h.mustApply(&fsmv1.AliasSet{Header: header(10), Model: "churn", Alias: "champion", Version: 2})
	if ws.Watch(time.After(5 * time.Second)) {
		t.Fatal("the watch did not fire when the alias moved")
	}
	d2, _ := h.f.State().Snapshot().DesiredState("a1", nil)
	if d2.GetFingerprint() == d.GetFingerprint() || d2.GetAssignments()[1].GetVersion() != 2 {
		t.Fatalf("desired after the move = %v", d2)
	}
	// Draining empties it; undoing restores it.
	h.mustApply(&fsmv1.AgentDrain{Header: header(11), AgentId: "a1"})
	if d3, _ := h.f.State().Snapshot().DesiredState("a1", nil); len(d3.GetAssignments()) != 0 || !d3.GetDraining() {
		t.Fatalf("desired while draining = %v", d3)
	}
	h.mustApply(&fsmv1.AgentDrain{Header: header(12), AgentId: "a1", Undo: true})
	if d4, _ := h.f.State().Snapshot().DesiredState("a1", nil); d4.GetFingerprint() != d2.GetFingerprint() {
		t.Fatalf("desired after undrain = %v", d4)
	}

	// Reports: applied once each, in order; repeats are skipped.
	rep := func(seq uint64, phase droverv1.AssignmentPhase) *droverv1.Report {
		return &droverv1.Report{Seq: seq, Body: &droverv1.Report_Assignment{Assignment: &droverv1.AssignmentStatus{
			Model: "churn", Version: 2, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY, Phase: phase}}}
	}
	res := h.mustApply(&fsmv1.AgentReports{Header: header(13), AgentId: "a1", Reports: []*droverv1.Report{
		rep(1, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_DOWNLOADING), rep(2, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY),
		{Seq: 3, Body: &droverv1.Report_Telemetry{Telemetry: &droverv1.TelemetryWindow{}}},
		{Seq: 4, Body: &droverv1.Report_Dropped{Dropped: &droverv1.ReportsDropped{Dropped: 5}}},
	}}).(*fsmv1.AgentReportsResult)
	if res.GetAckedSeq() != 4 {
		t.Fatalf("acked %d, want 4", res.GetAckedSeq())
	}
	res = h.mustApply(&fsmv1.AgentReports{Header: header(14), AgentId: "a1", Reports: []*droverv1.Report{
		rep(2, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_FAILED), rep(5, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY)}}).(*fsmv1.AgentReportsResult)
	view = h.f.State().Snapshot()
	got := view.Agent("a1")
	if res.GetAckedSeq() != 5 || got.GetReportsDropped() != 5 || len(got.GetAssignmentStatuses()) != 1 ||
		got.GetAssignmentStatuses()[0].GetPhase() != droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY {
		t.Fatalf("after reports: acked %d, agent %v", res.GetAckedSeq(), got)
	}
	var kinds []string
	for _, e := range view.AgentEvents("a1", 100) {
		kinds = append(kinds, e.GetKind())
	}
	if want := []string{"enroll", "assignment", "assignment", "reports_dropped", "assignment"}; !equalStrings(kinds, want) {
		t.Fatalf("event kinds = %v, want %v (in time order)", kinds, want)
	}

	// Liveness.
	h.mustApply(&fsmv1.AgentStatusSet{Header: header(15), Status: droverv1.AgentStatus_AGENT_STATUS_DOWN, AgentIds: []string{"a1", "ghost"}})
	if h.f.State().Snapshot().Agent("a1").GetStatus() != droverv1.AgentStatus_AGENT_STATUS_DOWN {
		t.Fatal("status not set")
	}

	// Re-enrolling under the same name keeps the id, assignments and report
	// sequence, and revokes the old credential.
	a = h.mustApply(&fsmv1.AgentEnroll{Header: header(16), Token: agentToken("t2"), Agent: &droverv1.Agent{Id: "a-new", Name: "gpu-1"}}).(*droverv1.Agent)
	view = h.f.State().Snapshot()
	if a.GetId() != "a1" || len(a.GetAssignments()) != 2 || a.GetLastReportSeq() != 5 || a.GetOperatorLabels()["tier"] != "gold" ||
		a.GetStatus() != droverv1.AgentStatus_AGENT_STATUS_READY {
		t.Fatalf("re-enrolled = %v", a)
	}
	if view.TokenByID("t1") != nil || view.TokenByID("t2").GetToken().GetAgentId() != "a1" {
		t.Fatal("the old credential survived re-enrolment")
	}
	h.mustApply(&fsmv1.AssignmentDelete{Header: header(17), AgentId: "a1", Model: "churn", Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_CANARY})
	h.refused(&fsmv1.AssignmentDelete{Header: header(18), AgentId: "a1", Model: "churn", Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_CANARY}, state.KindNotFound)

	// Disk pressure: on with the agent's report that its store refuses
	// writes, off with the one that it writes again; each an event.
	space := func(seq uint64, low bool, free uint64) *droverv1.Report {
		return &droverv1.Report{Seq: seq, Body: &droverv1.Report_StoreSpace{StoreSpace: &droverv1.StoreSpaceReport{Low: low, FreeBytes: free, MinFreeBytes: 32 << 20}}}
	}
	h.mustApply(&fsmv1.AgentReports{Header: header(19), AgentId: "a1", Reports: []*droverv1.Report{space(6, true, 1<<20)}})
	if !h.f.State().Snapshot().Agent("a1").GetDiskPressure() {
		t.Fatal("no disk pressure after the agent said its store refuses writes")
	}
	h.mustApply(&fsmv1.AgentReports{Header: header(20), AgentId: "a1", Reports: []*droverv1.Report{space(7, false, 1<<30)}})
	view = h.f.State().Snapshot()
	if view.Agent("a1").GetDiskPressure() {
		t.Fatal("disk pressure after the agent said it writes again")
	}
	var msgs []string
	for _, e := range view.AgentEvents("a1", 100) {
		if e.GetKind() == "store_space" {
			msgs = append(msgs, e.GetMessage())
		}
	}
	if want := []string{"disk pressure: the store refuses writes, 1.0 MiB free of the 32.0 MiB it keeps in reserve", "disk pressure over: 1.0 GiB free"}; !equalStrings(msgs, want) {
		t.Fatalf("store_space events %q, want %q", msgs, want)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestDriftWindows keeps an agent's drift windows, judges each against the
// version's profile by the model's settings, and records a verdict change
// as a drift event and an agent event.
func TestDriftWindows(t *testing.T) {
	profile, windows := driftFixtures()
	h := newHarness(t)
	h.mustApply(&fsmv1.ModelCreate{Header: header(1), Name: "churn"})
	h.mustApply(&fsmv1.VersionCreate{Header: header(2), Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("a"), Format: "onnx", ReferenceProfile: profile}})
	h.mustApply(&fsmv1.AgentEnroll{Header: header(3), Token: agentToken("t1"), Agent: &droverv1.Agent{Id: "a1", Name: "gpu-1"}})
	h.refused(&fsmv1.DriftSettingsSet{Header: header(4), Settings: &droverv1.ModelDriftSettings{Model: "churn", Settings: &droverv1.DriftSettings{PValue: 2}}}, state.KindInvalid)
	h.refused(&fsmv1.DriftSettingsSet{Header: header(4), Settings: &droverv1.ModelDriftSettings{Model: "nope"}}, state.KindNotFound)
	h.mustApply(&fsmv1.DriftSettingsSet{Header: header(4), Settings: &droverv1.ModelDriftSettings{Model: "churn", Settings: &droverv1.DriftSettings{Distance: 0.2}}})

	seq := uint64(0)
	send := func(i int, w *droverv1.DriftWindow) {
		seq++
		w = proto.CloneOf(w)
		w.Model, w.Version = "churn", 1
		w.Start = timestamppb.New(time.Unix(int64(i)*60, 0))
		h.mustApply(&fsmv1.AgentReports{Header: header(10 + i), AgentId: "a1", Reports: []*droverv1.Report{{Seq: seq, Body: &droverv1.Report_Drift{Drift: w}}}})
	}
	send(0, windows[0]) // like the reference: no news
	send(1, windows[2]) // shifted: drift
	send(2, windows[3]) // still: no new event
	send(3, windows[1]) // back: no drift
	view := h.f.State().Snapshot()
	events := view.DriftEvents("churn", 0)
	if len(events) != 2 || events[0].GetVerdict() != "drift" || events[1].GetVerdict() != "no_drift" ||
		len(events[0].GetDriftedFeatures()) != 2 || events[0].GetAgentId() != "a1" {
		t.Fatalf("drift events: %v", events)
	}
	var agentEvents []string
	for _, e := range view.AgentEvents("a1", 100) {
		if e.GetKind() == "drift" {
			agentEvents = append(agentEvents, e.GetMessage())
		}
	}
	if len(agentEvents) != 2 || !strings.Contains(agentEvents[0], "churn:1 drift") {
		t.Fatalf("agent events: %v", agentEvents)
	}
	if ws := view.DriftWindows("churn", 1, nil, time.Unix(120, 0)); len(ws) != 2 {
		t.Errorf("%d windows since minute 2, want 2", len(ws))
	}
	if ws := view.DriftWindows("churn", 1, []string{"other"}, time.Time{}); len(ws) != 0 {
		t.Errorf("%d windows of another agent", len(ws))
	}
	// The newest MaxDriftWindows are kept.
	for i := range state.MaxDriftWindows + 5 {
		send(10+i, windows[0])
	}
	view = h.f.State().Snapshot()
	if ws := view.DriftWindows("churn", 1, nil, time.Time{}); len(ws) != state.MaxDriftWindows {
		t.Errorf("%d windows kept, want %d", len(ws), state.MaxDriftWindows)
	}
	if v := view.NewestDriftVersion("churn"); v != 1 {
		t.Errorf("newest version with windows %d", v)
	}
	// The prepared reference is shared by every view until the version
	// changes.
	r1, err := view.DriftReference("churn", 1)
	if err != nil || r1 == nil || len(r1.Profile().GetFeatures()) == 0 {
		t.Fatalf("DriftReference: %v, %v", r1, err)
	}
	if r2, _ := h.f.State().Snapshot().DriftReference("churn", 1); r2 != r1 {
		t.Error("a second view prepared the reference again")
	}
	if r, err := view.DriftReference("churn", 9); r != nil || err != nil {
		t.Errorf("DriftReference of a missing version: %v, %v", r, err)
	}
	if !view.VersionExists("churn", 1) || view.VersionExists("churn", 9) {
		t.Error("VersionExists is wrong")
	}
	// A window for a version the hub does not know is dropped.
	w := proto.CloneOf(windows[2])
	w.Model, w.Version = "churn", 9
	seq++
	h.mustApply(&fsmv1.AgentReports{Header: header(99), AgentId: "a1", Reports: []*droverv1.Report{{Seq: seq, Body: &droverv1.Report_Drift{Drift: w}}}})
	if ws := h.f.State().Snapshot().DriftWindows("churn", 9, nil, time.Time{}); len(ws) != 0 {
		t.Errorf("a window of an unknown version was kept")
	}

	// One batch whose windows change the verdict twice records both events.
	before := len(h.f.State().Snapshot().DriftEvents("churn", 0))
	h.mustApply(&fsmv1.VersionCreate{Header: header(100), Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("b"), Format: "onnx", ReferenceProfile: profile}})
	var batch []*droverv1.Report
	for i, w := range []*droverv1.DriftWindow{windows[2], windows[1]} {
		w = proto.CloneOf(w)
		w.Model, w.Version = "churn", 2
		w.Start = timestamppb.New(time.Unix(int64(1000+i)*60, 0))
		seq++
		batch = append(batch, &droverv1.Report{Seq: seq, Body: &droverv1.Report_Drift{Drift: w}})
	}
	h.mustApply(&fsmv1.AgentReports{Header: header(101), AgentId: "a1", Reports: batch})
	if after := h.f.State().Snapshot().DriftEvents("churn", 0); len(after) != before+2 {
		t.Errorf("%d drift events after a batch with two changes, want %d: %v", len(after), before+2, after[before:])
	}
}

// TestReportsOverLimits takes reports past the limits on what an agent
// reports without refusing the batch (the agent would resend it for ever):
// text is cut, labels and an inventory that cannot be kept are dropped
// with an event saying so.
func TestReportsOverLimits(t *testing.T) {
	h := newHarness(t)
	h.mustApply(&fsmv1.AgentEnroll{Header: header(1), Token: agentToken("t1"), Agent: &droverv1.Agent{Id: "a1", Name: "gpu-1", ReportedLabels: map[string]string{"site": "lab"}}})
	h.refused(&fsmv1.AgentEnroll{Header: header(2), Token: agentToken("t2"), Agent: &droverv1.Agent{Id: "a2", Name: "gpu-2", Version: strings.Repeat("v", 200)}}, state.KindInvalid)
	huge := &droverv1.Inventory{DriverVersion: strings.Repeat("d", state.MaxInventoryBytes)}
	h.refused(&fsmv1.AgentEnroll{Header: header(2), Token: agentToken("t2"), Agent: &droverv1.Agent{Id: "a2", Name: "gpu-2", Inventory: huge}}, state.KindInvalid)

	h.mustApply(&fsmv1.AgentReports{Header: header(3), AgentId: "a1", Reports: []*droverv1.Report{
		{Seq: 1, Body: &droverv1.Report_Event{Event: &droverv1.AgentEvent{Kind: strings.Repeat("k", 500), Message: strings.Repeat("m", 3*state.MaxReportText)}}},
		{Seq: 2, Body: &droverv1.Report_Labels{Labels: &droverv1.LabelsReport{Labels: map[string]string{"bad key =": "x"}}}},
		{Seq: 3, Body: &droverv1.Report_Inventory{Inventory: huge}},
	}})
	view := h.f.State().Snapshot()
	a := view.Agent("a1")
	if a.GetLastReportSeq() != 3 || a.GetReportedLabels()["site"] != "lab" || a.GetInventory().GetDriverVersion() != "" {
		t.Fatalf("agent after oversized reports: seq %d, labels %v, driver %q…", a.GetLastReportSeq(), a.GetReportedLabels(), truncated(a.GetInventory().GetDriverVersion()))
	}
	var kinds []string
	for _, e := range view.AgentEvents("a1", 100) {
		if len(e.GetKind()) > state.MaxReportKind || len(e.GetMessage()) > state.MaxReportText {
			t.Errorf("an event of %d+%d bytes was kept", len(e.GetKind()), len(e.GetMessage()))
		}
		if strings.Contains(e.GetMessage(), "not taken") {
			kinds = append(kinds, e.GetKind())
		}
	}
	if !slices.Equal(kinds, []string{"labels", "inventory"}) {
		t.Errorf("events for what was not taken: %v", kinds)
	}
}

func truncated(s string) string { return state.Clip(s, 20) }

// TestAgentEventsKeepTheNewest keeps an agent's newest MaxAgentEvents
// events by time: a flapping agent's many status changes, made by the hub,
// do not push out the reports that come after them.
func TestAgentEventsKeepTheNewest(t *testing.T) {
	h := newHarness(t)
	h.mustApply(&fsmv1.AgentEnroll{Header: header(1), Token: agentToken("t1"), Agent: &droverv1.Agent{Id: "a1", Name: "gpu-1"}})
	for i := range state.MaxAgentEvents + 20 {
		status := droverv1.AgentStatus_AGENT_STATUS_DOWN
		if i%2 == 1 {
			status = droverv1.AgentStatus_AGENT_STATUS_READY
		}
		h.mustApply(&fsmv1.AgentStatusSet{Header: header(10 + i), Status: status, AgentIds: []string{"a1"}})
	}
	at := header(10 + state.MaxAgentEvents + 20)
	h.mustApply(&fsmv1.AgentReports{Header: at, AgentId: "a1", Reports: []*droverv1.Report{
		{Seq: 1, Time: at.GetTime(), Body: &droverv1.Report_Event{Event: &droverv1.AgentEvent{Kind: "started", Message: "agent started"}}}}})
	evs := h.f.State().Snapshot().AgentEvents("a1", 1000)
	if len(evs) != state.MaxAgentEvents {
		t.Fatalf("%d events kept, want %d", len(evs), state.MaxAgentEvents)
	}
	if last := evs[len(evs)-1]; last.GetKind() != "started" {
		t.Fatalf("the newest event is %s %q, want the agent's report", last.GetKind(), last.GetMessage())
	}
	if evs[0].GetKind() != "status" {
		t.Fatalf("the oldest kept is %s, want a status change (the enrolment went first)", evs[0].GetKind())
	}
}

// TestAgentVersionFollowsUpgrades: an agent upgraded in place (it does not
// enrol again) reports its version as it starts, and the hub's record
// follows.
func TestAgentVersionFollowsUpgrades(t *testing.T) {
	h := newHarness(t)
	h.mustApply(&fsmv1.AgentEnroll{Header: header(1), Token: agentToken("t1"), Agent: &droverv1.Agent{Id: "a1", Name: "gpu-1", Version: "1.2.3"}})
	h.mustApply(&fsmv1.AgentReports{Header: header(2), AgentId: "a1", Reports: []*droverv1.Report{
		{Seq: 1, Body: &droverv1.Report_Event{Event: &droverv1.AgentEvent{Kind: "started", Message: "agent 1.2.4 started", AgentVersion: "1.2.4"}}}}})
	if v := h.f.State().Snapshot().Agent("a1").GetVersion(); v != "1.2.4" {
		t.Fatalf("the hub says the agent runs %q, want 1.2.4", v)
	}
}

// TestRemoveAgent forgets an agent with its credentials, events and drift
// windows; it is refused while the agent has assignments (unless forced)
// or takes part in an active rollout.
func TestRemoveAgent(t *testing.T) {
	profile, windows := driftFixtures()
	h := newHarness(t)
	h.mustApply(&fsmv1.VersionCreate{Header: header(1), CreateModel: true, Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("a"), Format: "onnx", ReferenceProfile: profile}})
	h.mustApply(&fsmv1.VersionCreate{Header: header(1), Version: &droverv1.ModelVersion{Model: "churn", Artifact: blob("b"), Format: "onnx"}})
	for _, id := range []string{"a1", "a2"} {
		h.mustApply(&fsmv1.AgentEnroll{Header: header(2), Token: agentToken("t" + id), Agent: &droverv1.Agent{Id: id, Name: "gpu-" + id}})
	}
	w := proto.CloneOf(windows[0])
	w.Model, w.Version = "churn", 1
	h.mustApply(&fsmv1.AgentReports{Header: header(3), AgentId: "a1", Reports: []*droverv1.Report{{Seq: 1, Body: &droverv1.Report_Drift{Drift: w}}}})
	h.mustApply(&fsmv1.AssignmentSet{Header: header(4), AgentId: "a1", Assignment: &droverv1.Assignment{Model: "churn", Version: 1, Role: droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY}})
	h.refused(&fsmv1.AgentRemove{Header: header(5), AgentId: "a1"}, state.KindFailedPrecondition)
	h.mustApply(&fsmv1.RolloutCreate{Header: header(6), Rollout: &droverv1.Rollout{Id: "r1", Model: "churn", ToVersion: 2, Steps: []*droverv1.RolloutStep{{Percent: 100}}}})
	h.refused(&fsmv1.AgentRemove{Header: header(7), AgentId: "a1", Force: true}, state.KindFailedPrecondition)
	h.mustApply(&fsmv1.RolloutAct{Header: header(8), Id: "r1", Action: droverv1.RolloutAction_ROLLOUT_ACTION_ABORT})

	h.mustApply(&fsmv1.AgentRemove{Header: header(9), AgentId: "a1", Force: true})
	view := h.f.State().Snapshot()
	if view.Agent("a1") != nil || view.Agent("gpu-a1") != nil || len(view.AgentEvents("a1", 100)) != 0 ||
		len(view.DriftWindows("churn", 1, []string{"a1"}, time.Time{})) != 0 {
		t.Fatal("a removed agent's record, events or drift windows are left")
	}
	hash := sha256.Sum256([]byte("secret-ta1"))
	if view.TokenByHash(hash[:]) != nil {
		t.Fatal("a removed agent's credential still works")
	}
	if view.Agent("a2") == nil {
		t.Fatal("another agent went too")
	}
	h.refused(&fsmv1.AgentRemove{Header: header(10), AgentId: "a1"}, state.KindNotFound)
	// The same name enrols again, as a new agent.
	h.mustApply(&fsmv1.AgentEnroll{Header: header(11), Token: agentToken("t3"), Agent: &droverv1.Agent{Id: "a3", Name: "gpu-a1"}})
}
