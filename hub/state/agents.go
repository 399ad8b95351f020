package state

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/internal/progress"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// MaxAgentEvents is how many events the state keeps per agent.
const MaxAgentEvents = 200

func agentResource(name string) string { return "agent/" + name }

// ValidateLabels checks agent labels: keys are names, values short text.
func ValidateLabels(what string, labels map[string]string) error {
	if err := ValidateStringMap(what, labels); err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if err := ValidateName(what+" key", k); err != nil {
			return err
		}
	}
	return nil
}

func assignmentRoleName(r droverv1.AssignmentRole) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "ASSIGNMENT_ROLE_"))
}

func phaseName(p droverv1.AssignmentPhase) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "ASSIGNMENT_PHASE_"))
}

// effectiveLabels merges an agent's own labels with the operator's, which win.
func effectiveLabels(a *droverv1.Agent) map[string]string {
	out := make(map[string]string, len(a.GetReportedLabels())+len(a.GetOperatorLabels()))
	maps.Copy(out, a.GetReportedLabels())
	maps.Copy(out, a.GetOperatorLabels())
	return out
}

func getAgent(t *txn, id string) (*droverv1.Agent, error) {
	raw, err := t.First(tableAgents, "id", id)
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, NotFoundf("agent %q does not exist", id)
	}
	return proto.CloneOf(raw.(*droverv1.Agent)), nil
}

func putAgent(t *txn, a *droverv1.Agent) error {
	a.Labels = effectiveLabels(a)
	a.ModifyIndex = t.c.Index
	return t.Insert(tableAgents, a)
}

// EnrollAgent registers an agent, or re-registers one of the same name:
// that one keeps its id, assignments, operator labels, history and report
// sequence, and its earlier credentials are revoked. token is the agent's
// new credential.
func (s *Store) EnrollAgent(c Change, in *droverv1.Agent, token *fsmv1.TokenRecord) (*droverv1.Agent, error) {
	var out *droverv1.Agent
	err := s.write(c, func(t *txn) error {
		if err := ValidateName("agent name", in.GetName()); err != nil {
			return err
		}
		if err := ValidateLabels("labels", in.GetReportedLabels()); err != nil {
			return err
		}
		if err := ValidateText("version", in.GetVersion(), MaxKeyLen); err != nil {
			return err
		}
		if n := proto.Size(in.GetInventory()); n > MaxInventoryBytes {
			return Invalidf("inventory is %d bytes; the limit is %d", n, MaxInventoryBytes)
		}
		a := proto.CloneOf(in)
		verb := "agent.enroll"
		if raw, _ := t.First(tableAgents, "name", in.GetName()); raw != nil {
			old := raw.(*droverv1.Agent)
			verb = "agent.reenroll"
			a.Id = old.GetId()
			a.OperatorLabels = old.GetOperatorLabels()
			a.Assignments = old.GetAssignments()
			a.AssignmentStatuses = old.GetAssignmentStatuses()
			a.Draining = old.GetDraining()
			a.LastReportSeq = old.GetLastReportSeq()
			a.ReportsDropped = old.GetReportsDropped()
			a.CreateIndex = old.GetCreateIndex()
			// The old credentials go: only the new one speaks for the agent.
			it, err := t.Get(tableTokens, "agent", old.GetId())
			if err != nil {
				return err
			}
			for _, rec := range collect[*fsmv1.TokenRecord](it) {
				if err := t.Delete(tableTokens, rec); err != nil {
					return err
				}
			}
		} else {
			if raw, _ := t.First(tableAgents, "id", in.GetId()); raw != nil || in.GetId() == "" {
				return Invalidf("agent id %q is empty or taken", in.GetId())
			}
			a.CreateIndex = c.Index
		}
		a.Status = droverv1.AgentStatus_AGENT_STATUS_READY
		a.StatusTime = c.timestamp()
		a.EnrollTime = c.timestamp()
		if err := putAgent(t, a); err != nil {
			return err
		}
		if token != nil {
			token = proto.CloneOf(token)
			token.Token.AgentId = a.GetId()
			if err := insertToken(t, token); err != nil {
				return err
			}
		}
		out = a
		if err := addAgentEvent(t, a.GetId(), &droverv1.AgentEvent{Kind: "enroll", Message: fmt.Sprintf("enrolled (%s), %d GPUs", a.GetVersion(), len(a.GetInventory().GetGpus()))}); err != nil {
			return err
		}
		return t.audit(verb, agentResource(a.GetName()), fmt.Sprintf("agent %s (%s)", a.GetName(), a.GetId()))
	})
	return out, err
}

// SetAgentLabels sets and removes operator labels.
func (s *Store) SetAgentLabels(c Change, agentID string, set map[string]string, remove []string) (*droverv1.Agent, error) {
	var out *droverv1.Agent
	err := s.write(c, func(t *txn) error {
		if err := ValidateLabels("labels", set); err != nil {
			return err
		}
		if len(remove) > MaxMapEntries {
			return Invalidf("remove names %d labels; the limit is %d", len(remove), MaxMapEntries)
		}
		for _, k := range remove {
			if err := ValidateName("label to remove", k); err != nil {
				return err
			}
		}
		a, err := getAgent(t, agentID)
		if err != nil {
			return err
		}
		labels := maps.Clone(a.GetOperatorLabels())
		if labels == nil {
			labels = map[string]string{}
		}
		maps.Copy(labels, set)
		for _, k := range remove {
			delete(labels, k)
		}
		a.OperatorLabels = labels
		if err := putAgent(t, a); err != nil {
			return err
		}
		out = a
		summary := kvSummary(set)
		if len(remove) > 0 {
			summary = strings.TrimSpace(summary + " -" + strings.Join(remove, " -"))
		}
		return t.audit("agent.label", agentResource(a.GetName()), summary)
	})
	return out, err
}

func kvSummary(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, " ")
}

// DrainAgent marks an agent draining, or, with undo, back in service.
func (s *Store) DrainAgent(c Change, agentID string, undo bool) (*droverv1.Agent, error) {
	var out *droverv1.Agent
	err := s.write(c, func(t *txn) error {
		a, err := getAgent(t, agentID)
		if err != nil {
			return err
		}
		if a.GetDraining() == !undo {
			out = a
			return nil
		}
		a.Draining = !undo
		if err := putAgent(t, a); err != nil {
			return err
		}
		out = a
		verb := "agent.drain"
		if undo {
			verb = "agent.undrain"
		}
		return t.audit(verb, agentResource(a.GetName()), strings.TrimPrefix(verb, "agent.")+"ed")
	})
	return out, err
}

// RemoveAgent forgets an agent: its record, credentials, events and drift
// windows and verdicts. It refuses while the agent takes part in an
// active rollout or runs a retraining job, and, unless force, while it
// has assignments.
func (s *Store) RemoveAgent(c Change, agentID string, force bool) (*droverv1.Agent, error) {
	var out *droverv1.Agent
	err := s.write(c, func(t *txn) error {
		a, err := getAgent(t, agentID)
		if err != nil {
			return err
		}
		if n := len(a.GetAssignments()); n > 0 && !force {
			return Preconditionf("agent %s has %d assignments: unassign them first, or remove it with force", a.GetName(), n)
		}
		rollouts, err := t.Get(tableRollouts, "id")
		if err != nil {
			return err
		}
		for _, r := range collect[*droverv1.Rollout](rollouts) {
			if rolloutActive(r) && slices.ContainsFunc(r.GetAgents(), func(ra *droverv1.RolloutAgent) bool { return ra.GetAgentId() == a.GetId() }) {
				return Preconditionf("agent %s takes part in rollout %s, which is %s: abort it or wait for it first", a.GetName(), r.GetId(), rolloutStateName(r.GetState()))
			}
		}
		jobs, err := t.Get(tableRetrainJobs, "id")
		if err != nil {
			return err
		}
		for _, j := range collect[*droverv1.RetrainJob](jobs) {
			if j.GetAgentId() == a.GetId() && (j.GetState() == stateRunning || j.GetState() == stateFinishing) {
				return Preconditionf("agent %s runs retraining job %s: cancel it or wait for it first", a.GetName(), j.GetId())
			}
		}
		// Its credentials, events, and drift windows and verdicts go with it.
		for _, q := range []struct {
			table, index string
			args         []any
			mine         func(any) bool
		}{
			{tableTokens, "agent", []any{a.GetId()}, nil},
			{tableAgentEvents, "id_prefix", []any{a.GetId()}, nil},
			{tableDriftWindows, "id", nil, func(o any) bool { return o.(*droverv1.AgentDriftWindow).GetAgentId() == a.GetId() }},
			{tableDriftVerdicts, "id", nil, func(o any) bool { return o.(*droverv1.DriftVerdictRecord).GetAgentId() == a.GetId() }},
		} {
			it, err := t.Get(q.table, q.index, q.args...)
			if err != nil {
				return err
			}
			var rows []any
			for o := it.Next(); o != nil; o = it.Next() {
				if q.mine == nil || q.mine(o) {
					rows = append(rows, o)
				}
			}
			for _, o := range rows {
				if err := t.Delete(q.table, o); err != nil {
					return err
				}
			}
		}
		if err := t.Delete(tableAgents, a); err != nil {
			return err
		}
		out = a
		summary := fmt.Sprintf("agent %s (%s) removed", a.GetName(), a.GetId())
		if n := len(a.GetAssignments()); n > 0 {
			summary += fmt.Sprintf(" with its %d assignments", n)
		}
		return t.audit("agent.remove", agentResource(a.GetName()), summary)
	})
	return out, err
}

// ValidateAssignment checks an assignment as a caller gives it.
func ValidateAssignment(a *droverv1.Assignment) error {
	if err := ValidateName("model name", a.GetModel()); err != nil {
		return err
	}
	switch {
	case a.GetVersion() == 0 && a.GetAlias() == "":
		return Invalidf("an assignment names a version or an alias")
	case a.GetVersion() != 0 && a.GetAlias() != "":
		return Invalidf("an assignment names a version or an alias, not both")
	case a.GetAlias() != "":
		if err := ValidateAlias(a.GetAlias()); err != nil {
			return err
		}
	}
	switch a.GetRole() {
	case droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY, droverv1.AssignmentRole_ASSIGNMENT_ROLE_CANARY, droverv1.AssignmentRole_ASSIGNMENT_ROLE_SHADOW:
	default:
		return Invalidf("role %v is not primary, canary or shadow", a.GetRole())
	}
	if a.GetWeight() > 100 {
		return Invalidf("weight %d is over 100", a.GetWeight())
	}
	return ValidateText("reason", a.GetReason(), MaxReasonLen)
}

// SetAssignment makes an agent run a version (or follow an alias) in a role,
// replacing what it ran in that role for that model.
func (s *Store) SetAssignment(c Change, agentID string, in *droverv1.Assignment) (*droverv1.Agent, error) {
	var out *droverv1.Agent
	err := s.write(c, func(t *txn) error {
		if err := ValidateAssignment(in); err != nil {
			return err
		}
		a, err := getAgent(t, agentID)
		if err != nil {
			return err
		}
		m, err := getModel(t, in.GetModel())
		if err != nil {
			return err
		}
		target := fmt.Sprint(in.GetVersion())
		if in.GetAlias() != "" {
			if raw, _ := t.First(tableAliases, "id", m.GetName(), in.GetAlias()); raw == nil {
				return NotFoundf("model %q has no alias %q", m.GetName(), in.GetAlias())
			}
			target = in.GetAlias()
		} else if raw, _ := t.First(tableVersions, "id", m.GetName(), in.GetVersion()); raw == nil {
			return NotFoundf("model %q has no version %d", m.GetName(), in.GetVersion())
		}
		as := proto.CloneOf(in)
		as.SetBy, as.SetTime, as.Reason = c.Actor, c.timestamp(), c.Reason
		if as.GetWeight() == 0 && as.GetRole() == droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY {
			as.Weight = 100
		}
		a.Assignments = slices.DeleteFunc(a.Assignments, func(x *droverv1.Assignment) bool {
			return x.GetModel() == as.GetModel() && x.GetRole() == as.GetRole()
		})
		a.Assignments = append(a.Assignments, as)
		slices.SortFunc(a.Assignments, func(x, y *droverv1.Assignment) int {
			return strings.Compare(x.GetModel()+"/"+x.GetRole().String(), y.GetModel()+"/"+y.GetRole().String())
		})
		if err := putAgent(t, a); err != nil {
			return err
		}
		out = a
		return t.audit("assignment.set", agentResource(a.GetName())+"/assignment/"+as.GetModel(),
			fmt.Sprintf("%s %s:%s weight %d", assignmentRoleName(as.GetRole()), as.GetModel(), target, as.GetWeight()))
	})
	return out, err
}

// DeleteAssignment stops an agent running a model in a role.
func (s *Store) DeleteAssignment(c Change, agentID, model string, role droverv1.AssignmentRole) (*droverv1.Agent, error) {
	var out *droverv1.Agent
	err := s.write(c, func(t *txn) error {
		a, err := getAgent(t, agentID)
		if err != nil {
			return err
		}
		n := len(a.Assignments)
		a.Assignments = slices.DeleteFunc(a.Assignments, func(x *droverv1.Assignment) bool {
			return x.GetModel() == model && x.GetRole() == role
		})
		if len(a.Assignments) == n {
			return NotFoundf("agent %s has no %s assignment of %q", a.GetName(), assignmentRoleName(role), model)
		}
		if err := putAgent(t, a); err != nil {
			return err
		}
		out = a
		return t.audit("assignment.delete", agentResource(a.GetName())+"/assignment/"+model, assignmentRoleName(role)+" "+model)
	})
	return out, err
}

// ApplyAgentReports takes an agent's reports: those at or below the agent's
// last sequence number were taken before and are skipped. It returns the
// sequence number the hub has now taken up to.
func (s *Store) ApplyAgentReports(c Change, agentID string, reports []*droverv1.Report) (uint64, error) {
	var acked uint64
	err := s.write(c, func(t *txn) error {
		a, err := getAgent(t, agentID)
		if err != nil {
			return err
		}
		changed := false
		for _, r := range reports {
			if r.GetSeq() <= a.GetLastReportSeq() {
				continue
			}
			a.LastReportSeq = r.GetSeq()
			changed = true
			ev := &droverv1.AgentEvent{Seq: r.GetSeq(), Time: r.GetTime()}
			switch b := r.GetBody().(type) {
			case *droverv1.Report_Assignment:
				st := b.Assignment
				if len(st.GetMessage()) > MaxReportText {
					st = proto.CloneOf(st)
					st.Message = Clip(st.GetMessage(), MaxReportText)
				}
				a.AssignmentStatuses = slices.DeleteFunc(a.AssignmentStatuses, func(x *droverv1.AssignmentStatus) bool {
					return x.GetModel() == st.GetModel() && x.GetRole() == st.GetRole()
				})
				if st.GetPhase() != droverv1.AssignmentPhase_ASSIGNMENT_PHASE_REMOVED {
					a.AssignmentStatuses = append(a.AssignmentStatuses, st)
				}
				ev.Kind = "assignment"
				ev.Message = fmt.Sprintf("%s %s:%d %s", assignmentRoleName(st.GetRole()), st.GetModel(), st.GetVersion(), phaseName(st.GetPhase()))
				if st.GetHealth() == droverv1.ServingHealth_SERVING_HEALTH_UNHEALTHY {
					ev.Message += " (unhealthy)"
				}
				if st.GetMessage() != "" {
					ev.Message += ": " + st.GetMessage()
				}
			case *droverv1.Report_GpuHealth:
				a.GpuHealth = b.GpuHealth.GetGpus()
				ev.Kind, ev.Message = "gpu_health", gpuHealthSummary(b.GpuHealth.GetGpus())
			case *droverv1.Report_Inventory:
				ev.Kind = "inventory"
				if n := proto.Size(b.Inventory); n > MaxInventoryBytes {
					ev.Message = fmt.Sprintf("inventory not taken: %d bytes; the limit is %d", n, MaxInventoryBytes)
					break
				}
				a.Inventory = b.Inventory
				ev.Message = fmt.Sprintf("%d GPUs, driver %s", len(b.Inventory.GetGpus()), b.Inventory.GetDriverVersion())
			case *droverv1.Report_Labels:
				ev.Kind = "labels"
				if err := ValidateLabels("labels", b.Labels.GetLabels()); err != nil {
					ev.Message = fmt.Sprintf("labels not taken: %v", err)
					break
				}
				a.ReportedLabels = b.Labels.GetLabels()
				ev.Message = kvSummary(b.Labels.GetLabels())
			case *droverv1.Report_Dropped:
				a.ReportsDropped += b.Dropped.GetDropped()
				ev.Kind = "reports_dropped"
				ev.Message = fmt.Sprintf("%d reports dropped and %d telemetry windows merged while the hub was away", b.Dropped.GetDropped(), b.Dropped.GetSummarised())
			case *droverv1.Report_Event:
				ev.Kind, ev.Message = b.Event.GetKind(), b.Event.GetMessage()
				if v := b.Event.GetAgentVersion(); v != "" && ValidateText("version", v, MaxKeyLen) == nil {
					a.Version = v // an agent upgraded in place
				}
			case *droverv1.Report_StoreSpace:
				a.DiskPressure = b.StoreSpace.GetLow()
				ev.Kind = "store_space"
				if a.DiskPressure {
					ev.Message = fmt.Sprintf("disk pressure: the store refuses writes, %s free of the %s it keeps in reserve",
						progress.Bytes(int64(b.StoreSpace.GetFreeBytes())), progress.Bytes(int64(b.StoreSpace.GetMinFreeBytes())))
				} else {
					ev.Message = fmt.Sprintf("disk pressure over: %s free", progress.Bytes(int64(b.StoreSpace.GetFreeBytes())))
				}
			case *droverv1.Report_Drift:
				de, err := addDriftWindow(t, a, b.Drift)
				if err != nil {
					return err
				}
				if de == nil {
					continue
				}
				ev.Kind, ev.Message = de.GetKind(), de.GetMessage()
			case *droverv1.Report_Training:
				te, err := applyTrainingReport(t, a, b.Training)
				if err != nil {
					return err
				}
				if te == nil {
					continue
				}
				ev.Kind, ev.Message = te.GetKind(), te.GetMessage()
			case *droverv1.Report_Export:
				xe, err := applyExport(t, a, b.Export)
				if err != nil {
					return err
				}
				if xe == nil {
					continue
				}
				ev.Kind, ev.Message = xe.GetKind(), xe.GetMessage()
			default:
				continue // telemetry: kept by the leader in memory
			}
			if err := addAgentEvent(t, a.GetId(), ev); err != nil {
				return err
			}
		}
		acked = a.GetLastReportSeq()
		if !changed {
			return nil
		}
		return putAgent(t, a)
	})
	return acked, err
}

func gpuHealthSummary(gpus []*droverv1.GpuHealth) string {
	counts := map[string]int{}
	var bad []string
	for _, g := range gpus {
		counts[g.GetHealth()]++
		if g.GetHealth() != "healthy" {
			bad = append(bad, fmt.Sprintf("GPU %d %s: %s", g.GetIndex(), g.GetHealth(), strings.Join(g.GetReasons(), "; ")))
		}
	}
	if len(bad) == 0 {
		return fmt.Sprintf("%d GPUs healthy", len(gpus))
	}
	return strings.Join(bad, ", ")
}

// addAgentEvent stores an event, dropping the agent's oldest beyond
// MaxAgentEvents. Events without a report sequence number (the hub's own)
// are numbered after the agent's last one.
func addAgentEvent(t *txn, agentID string, ev *droverv1.AgentEvent) error {
	ev = proto.CloneOf(ev)
	ev.AgentId = agentID
	ev.Kind, ev.Message = Clip(ev.GetKind(), MaxReportKind), Clip(ev.GetMessage(), MaxReportText)
	if ev.GetTime() == nil {
		ev.Time = t.c.timestamp()
	}
	it, err := t.Get(tableAgentEvents, "id_prefix", agentID)
	if err != nil {
		return err
	}
	existing := collect[*droverv1.AgentEvent](it)
	if ev.GetSeq() == 0 {
		// Hub-made events sort after everything seen so far, in a range of
		// their own (high bit set) so that they never collide with reports.
		ev.Seq = 1<<63 | t.c.Index
	}
	if err := t.Insert(tableAgentEvents, ev); err != nil {
		return err
	}
	if len(existing)+1 <= MaxAgentEvents {
		return nil
	}
	// The oldest go, by time: in the key's order the hub's own events
	// (status changes) come after every report, so a flapping agent's
	// would have pushed out each new report as it came.
	all := append(existing, ev)
	sortEvents(all)
	for _, old := range all[:len(all)-MaxAgentEvents] {
		if err := t.Delete(tableAgentEvents, old); err != nil {
			return err
		}
	}
	return nil
}

// sortEvents orders an agent's events by time, reports before the hub's
// own at the same instant and reports in their order.
func sortEvents(evs []*droverv1.AgentEvent) {
	slices.SortStableFunc(evs, func(a, b *droverv1.AgentEvent) int {
		if c := a.GetTime().AsTime().Compare(b.GetTime().AsTime()); c != 0 {
			return c
		}
		return cmp.Compare(a.GetSeq(), b.GetSeq())
	})
}

// SetAgentStatus records a liveness change for agents; agents already in
// that state are left alone.
func (s *Store) SetAgentStatus(c Change, status droverv1.AgentStatus, ids []string) error {
	return s.write(c, func(t *txn) error {
		for _, id := range ids {
			raw, err := t.First(tableAgents, "id", id)
			if err != nil {
				return err
			}
			if raw == nil || raw.(*droverv1.Agent).GetStatus() == status {
				continue
			}
			a := proto.CloneOf(raw.(*droverv1.Agent))
			a.Status, a.StatusTime = status, c.timestamp()
			if err := putAgent(t, a); err != nil {
				return err
			}
			msg := strings.ToLower(strings.TrimPrefix(status.String(), "AGENT_STATUS_"))
			if c.Reason != "" {
				msg += ": " + c.Reason
			}
			if err := addAgentEvent(t, id, &droverv1.AgentEvent{Kind: "status", Message: msg}); err != nil {
				return err
			}
		}
		return nil
	})
}

// Agents returns every agent whose effective labels include selector, by id.
func (v *Snapshot) Agents(selector map[string]string) []*droverv1.Agent {
	var out []*droverv1.Agent
	for _, a := range collect[*droverv1.Agent](v.all(tableAgents, "id")) {
		if matches(a.GetLabels(), selector) {
			out = append(out, a)
		}
	}
	return out
}

// Agent finds an agent by id or by name, or returns nil.
func (v *Snapshot) Agent(ref string) *droverv1.Agent {
	if raw := v.first(tableAgents, ref); raw != nil {
		return raw.(*droverv1.Agent)
	}
	raw, err := v.txn.First(tableAgents, "name", ref)
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*droverv1.Agent)
}

// AgentEvents returns an agent's newest events, oldest first, by time.
func (v *Snapshot) AgentEvents(agentID string, limit int) []*droverv1.AgentEvent {
	all := collect[*droverv1.AgentEvent](v.all(tableAgentEvents, "id_prefix", agentID))
	sortEvents(all)
	if len(all) > limit {
		all = all[len(all)-limit:]
	}
	return all
}

// DesiredState resolves what an agent should run: its assignments, with
// aliases followed to versions and each version's artifact, format, runner
// and schema; nothing while it drains. Assignments that no longer resolve
// (an alias deleted, say) are left out. If ws is not nil it is given a
// channel for everything the answer depends on, so that a caller can wait
// for the answer to change.
func (v *Snapshot) DesiredState(agentID string, ws memdb.WatchSet) (*droverv1.DesiredState, error) {
	ch, raw, err := v.txn.FirstWatch(tableAgents, "id", agentID)
	if err != nil {
		return nil, err
	}
	ws.Add(ch)
	if raw == nil {
		return nil, NotFoundf("agent %q does not exist", agentID)
	}
	a := raw.(*droverv1.Agent)
	d := &droverv1.DesiredState{AgentId: agentID, Draining: a.GetDraining(), Assignments: []*droverv1.DesiredAssignment{}}
	if !a.GetDraining() {
		for _, as := range a.GetAssignments() {
			version := as.GetVersion()
			if as.GetAlias() != "" {
				ch, raw, err := v.txn.FirstWatch(tableAliases, "id", as.GetModel(), as.GetAlias())
				if err != nil {
					return nil, err
				}
				ws.Add(ch)
				if raw == nil {
					continue
				}
				version = raw.(*droverv1.Alias).GetVersion()
			}
			ch, raw, err := v.txn.FirstWatch(tableVersions, "id", as.GetModel(), version)
			if err != nil {
				return nil, err
			}
			ws.Add(ch)
			if raw == nil {
				continue
			}
			mv := raw.(*droverv1.ModelVersion)
			d.Assignments = append(d.Assignments, &droverv1.DesiredAssignment{
				Model: mv.GetModel(), Version: mv.GetVersion(), Role: as.GetRole(), Weight: as.GetWeight(),
				Artifact: mv.GetArtifact(), Format: mv.GetFormat(), Runner: mv.GetRunner(), Schema: mv.GetSchema(), Params: mv.GetParams(),
				ReferenceProfile: mv.GetReferenceProfile(),
			})
		}
	}
	if !a.GetDraining() {
		if err := v.desiredWork(d, agentID, ws); err != nil {
			return nil, err
		}
	}
	d.Fingerprint = Fingerprint(d)
	return d, nil
}

// Fingerprint digests a desired state's content (not its fingerprint field).
func Fingerprint(d *droverv1.DesiredState) string {
	c := proto.CloneOf(d)
	c.Fingerprint = ""
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}
