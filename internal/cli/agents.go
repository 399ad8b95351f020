package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/droverhq/drover/internal/progress"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

func (a *app) agentsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agents",
		Short: "The fleet: list and inspect agents, label, drain, assign and remove them",
	}
	cmd.AddCommand(a.agentsList(), a.agentsShow(), a.agentsLabel(), a.agentsDrain(), a.agentsAssign(), a.agentsUnassign(), a.agentsRemove())
	return cmd
}

type assignmentView struct {
	Model   string `json:"model"`
	Version uint64 `json:"version,omitempty"`
	Alias   string `json:"alias,omitempty"`
	Role    string `json:"role"`
	Weight  uint32 `json:"weight"`
	// Phase and Message are the agent's last report about it.
	Phase string `json:"phase,omitempty"`
	// Health is whether a ready version can answer: healthy or unhealthy.
	Health  string `json:"health,omitempty"`
	Message string `json:"message,omitempty"`
	// Running is the version answering now; PhaseVersion the one Phase is
	// about (a new one downloading, say, while Running still serves).
	Running      uint64 `json:"running_version,omitempty"`
	PhaseVersion uint64 `json:"phase_version,omitempty"`
}

// versions is the slot's versions as tables show them: "1", "-" when
// none serves, "1→2" while 2 is on its way or failed.
func (a assignmentView) versions() string {
	running := "-"
	if a.Running != 0 {
		running = fmt.Sprint(a.Running)
	}
	if a.PhaseVersion != 0 && a.PhaseVersion != a.Running {
		return running + "→" + fmt.Sprint(a.PhaseVersion)
	}
	return running
}

// phaseText is the phase as tables show it, with an unhealthy version
// marked.
func (a assignmentView) phaseText() string {
	if a.Health == "unhealthy" {
		return a.Phase + " (unhealthy)"
	}
	return dash(a.Phase)
}

type agentView struct {
	ID             string            `json:"id"`
	Name           string            `json:"name"`
	Status         string            `json:"status"`
	StatusTime     *time.Time        `json:"status_time"`
	Draining       bool              `json:"draining"`
	DiskPressure   bool              `json:"disk_pressure"`
	Labels         map[string]string `json:"labels"`
	Version        string            `json:"version"`
	GPUs           int               `json:"gpus"`
	GPUHealth      map[string]int    `json:"gpu_health"`
	Assignments    []assignmentView  `json:"assignments"`
	LastReportSeq  uint64            `json:"last_report_seq"`
	ReportsDropped uint64            `json:"reports_dropped,omitempty"`
	EnrollTime     *time.Time        `json:"enroll_time"`
	Inventory      json.RawMessage   `json:"inventory,omitempty"`
	GPUVerdicts    json.RawMessage   `json:"gpu_verdicts,omitempty"`
}

func agentOf(ag *droverv1.Agent, full bool) agentView {
	v := agentView{
		ID: ag.GetId(), Name: ag.GetName(), Status: enumName(ag.GetStatus().String(), "AGENT_STATUS_"), StatusTime: ts(ag.GetStatusTime()),
		Draining: ag.GetDraining(), DiskPressure: ag.GetDiskPressure(), Labels: ag.GetLabels(), Version: ag.GetVersion(), GPUs: len(ag.GetInventory().GetGpus()),
		GPUHealth: map[string]int{}, Assignments: []assignmentView{}, LastReportSeq: ag.GetLastReportSeq(),
		ReportsDropped: ag.GetReportsDropped(), EnrollTime: ts(ag.GetEnrollTime()),
	}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	for _, g := range ag.GetGpuHealth() {
		v.GPUHealth[g.GetHealth()]++
	}
	for _, as := range ag.GetAssignments() {
		av := assignmentView{Model: as.GetModel(), Version: as.GetVersion(), Alias: as.GetAlias(), Role: enumName(as.GetRole().String(), "ASSIGNMENT_ROLE_"), Weight: as.GetWeight()}
		for _, st := range ag.GetAssignmentStatuses() {
			if st.GetModel() == as.GetModel() && st.GetRole() == as.GetRole() {
				av.Phase, av.Message, av.Running, av.PhaseVersion = enumName(st.GetPhase().String(), "ASSIGNMENT_PHASE_"), st.GetMessage(), st.GetServingVersion(), st.GetVersion()
				if av.Running == 0 && st.GetPhase() == droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY {
					av.Running = st.GetVersion() // an agent from before serving_version
				}
				if st.GetHealth() != droverv1.ServingHealth_SERVING_HEALTH_UNSPECIFIED {
					av.Health = enumName(st.GetHealth().String(), "SERVING_HEALTH_")
				}
			}
		}
		v.Assignments = append(v.Assignments, av)
	}
	if full {
		opts := protojson.MarshalOptions{UseProtoNames: true}
		v.Inventory, _ = opts.Marshal(ag.GetInventory())
		gh := &droverv1.GpuHealthReport{Gpus: ag.GetGpuHealth()}
		v.GPUVerdicts, _ = opts.Marshal(gh)
	}
	return v
}

func healthSummary(h map[string]int) string {
	var parts []string
	for _, s := range []string{"healthy", "degraded", "unhealthy", "unknown"} {
		if h[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", h[s], s))
		}
	}
	return dash(strings.Join(parts, ", "))
}

func (a *app) agentsList() *cobra.Command {
	var selector []string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List agents",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sel, err := parseKV("selector", selector)
			if err != nil {
				return err
			}
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Agents.ListAgents(ctx, &droverv1.ListAgentsRequest{Read: a.read(), Selector: sel})
			if err != nil {
				return err
			}
			views := []agentView{}
			for _, ag := range resp.GetAgents() {
				views = append(views, agentOf(ag, true))
			}
			return a.emit(map[string]any{"agents": views}, func(w io.Writer) {
				t := newTable(w)
				fmt.Fprintln(t, "NAME\tID\tSTATUS\tGPUS\tHEALTH\tASSIGNMENTS\tLABELS\tVERSION")
				for _, v := range views {
					status := v.Status
					if v.Draining {
						status += ",draining"
					}
					if v.DiskPressure {
						status += ",disk-pressure"
					}
					var as []string
					for _, x := range v.Assignments {
						as = append(as, fmt.Sprintf("%s:%s %s", x.Model, x.versions(), x.phaseText()))
					}
					fmt.Fprintf(t, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", v.Name, v.ID, status, v.GPUs, healthSummary(v.GPUHealth),
						dash(strings.Join(as, ", ")), dash(kvString(v.Labels)), v.Version)
				}
				t.Flush()
			})
		},
	}
	cmd.Flags().StringArrayVar(&selector, "selector", nil, "only agents with this label, key=value (repeatable)")
	return cmd
}

func (a *app) agentsShow() *cobra.Command {
	return &cobra.Command{
		Use:   "show <agent>",
		Short: "Show an agent: hardware, GPU health, assignments and recent events",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Agents.GetAgent(ctx, &droverv1.GetAgentRequest{Agent: args[0], Read: a.read()})
			if err != nil {
				return err
			}
			v := agentOf(resp.GetAgent(), true)
			type event struct {
				Seq     uint64     `json:"seq"`
				Time    *time.Time `json:"time"`
				Kind    string     `json:"kind"`
				Message string     `json:"message"`
			}
			out := struct {
				agentView
				Events []event `json:"events"`
			}{agentView: v, Events: []event{}}
			for _, e := range resp.GetEvents() {
				out.Events = append(out.Events, event{Seq: e.GetSeq(), Time: ts(e.GetTime()), Kind: e.GetKind(), Message: e.GetMessage()})
			}
			return a.emit(out, func(w io.Writer) {
				ag := resp.GetAgent()
				inv := ag.GetInventory()
				t := newTable(w)
				fmt.Fprintf(t, "Agent:\t%s (%s)\n", v.Name, v.ID)
				fmt.Fprintf(t, "Status:\t%s since %s%s%s\n", v.Status, fmtTimeP(v.StatusTime), map[bool]string{true: ", draining"}[v.Draining],
					map[bool]string{true: ", disk pressure (its store refuses writes)"}[v.DiskPressure])
				fmt.Fprintf(t, "Labels:\t%s\n", dash(kvString(v.Labels)))
				fmt.Fprintf(t, "Version:\t%s, enrolled %s\n", v.Version, fmtTimeP(v.EnrollTime))
				fmt.Fprintf(t, "Host:\t%s, %s/%s, %d CPUs (%s), %s\n", inv.GetHost().GetHostname(), inv.GetHost().GetOs(), inv.GetHost().GetArch(),
					inv.GetHost().GetCpus(), dash(inv.GetHost().GetCpuModel()), progress.Bytes(int64(inv.GetHost().GetMemoryBytes())))
				if inv.GetNvmlError() != "" {
					fmt.Fprintf(t, "GPUs:\tnone (%s)\n", inv.GetNvmlError())
				} else {
					fmt.Fprintf(t, "GPUs:\t%d, driver %s, CUDA %s\n", len(inv.GetGpus()), inv.GetDriverVersion(), inv.GetCudaDriverVersion())
				}
				fmt.Fprintf(t, "Reports:\tup to #%d taken%s\n", v.LastReportSeq, map[bool]string{true: fmt.Sprintf(", %d dropped while the hub was away", v.ReportsDropped)}[v.ReportsDropped > 0])
				t.Flush()
				health := map[int32]*droverv1.GpuHealth{}
				for _, g := range ag.GetGpuHealth() {
					health[g.GetIndex()] = g
				}
				if len(inv.GetGpus()) > 0 {
					fmt.Fprintln(w)
					t = newTable(w)
					fmt.Fprintln(t, "GPU\tNAME\tMEMORY\tHEALTH\tREASONS")
					for _, g := range inv.GetGpus() {
						h := health[g.GetIndex()]
						fmt.Fprintf(t, "%d\t%s\t%s\t%s\t%s\n", g.GetIndex(), g.GetName(), progress.Bytes(int64(g.GetMemoryBytes())), dash(h.GetHealth()), dash(strings.Join(h.GetReasons(), "; ")))
					}
					t.Flush()
				}
				fmt.Fprintln(w)
				t = newTable(w)
				fmt.Fprintln(t, "MODEL\tROLE\tWANTS\tWEIGHT\tRUNNING\tPHASE\tMESSAGE")
				for _, x := range v.Assignments {
					want := fmt.Sprint(x.Version)
					if x.Alias != "" {
						want = x.Alias
					}
					fmt.Fprintf(t, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", x.Model, x.Role, want, x.Weight, x.versions(), x.phaseText(), dash(x.Message))
				}
				t.Flush()
				fmt.Fprintln(w)
				t = newTable(w)
				fmt.Fprintln(t, "TIME\tEVENT\tMESSAGE")
				for _, e := range out.Events {
					fmt.Fprintf(t, "%s\t%s\t%s\n", fmtTimeP(e.Time), e.Kind, e.Message)
				}
				t.Flush()
			})
		},
	}
}

func (a *app) agentsLabel() *cobra.Command {
	var remove []string
	cmd := &cobra.Command{
		Use:   "label <agent> [key=value ...] [--remove key ...]",
		Short: "Set or remove operator labels (they override the agent's own)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, err := parseKV("label", args[1:])
			if err != nil {
				return err
			}
			if len(set) == 0 && len(remove) == 0 {
				return usagef("give labels to set (key=value) or --remove")
			}
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Agents.SetAgentLabels(ctx, &droverv1.SetAgentLabelsRequest{Agent: args[0], Set: set, Remove: remove})
			if err != nil {
				return err
			}
			v := agentOf(resp.GetAgent(), false)
			return a.emit(v, func(w io.Writer) { fmt.Fprintf(w, "%s: %s\n", v.Name, dash(kvString(v.Labels))) })
		},
	}
	cmd.Flags().StringArrayVar(&remove, "remove", nil, "a label key to remove (repeatable)")
	return cmd
}

func (a *app) agentsRemove() *cobra.Command {
	var reason string
	var force bool
	cmd := &cobra.Command{
		Use:   "remove <agent>",
		Short: "Forget an agent for good (a machine decommissioned): its record, events and credentials",
		Long: `Forget an agent for good: its record, events, drift windows and credentials.
Refused while it has assignments (unassign them, or --force to remove them
with it), takes part in an active rollout, or runs a retraining job. Stop
the agent first: one still running finds its credential refused and enrols
again with its join token, as a new agent.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Agents.RemoveAgent(ctx, &droverv1.RemoveAgentRequest{Agent: args[0], Reason: reason, Force: force})
			if err != nil {
				return err
			}
			v := agentOf(resp.GetAgent(), false)
			return a.emit(v, func(w io.Writer) {
				fmt.Fprintf(w, "removed agent %s (%s)\n", v.Name, v.ID)
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the audit trail")
	cmd.Flags().BoolVar(&force, "force", false, "remove it with its assignments")
	return cmd
}

func (a *app) agentsDrain() *cobra.Command {
	var reason string
	var undo bool
	cmd := &cobra.Command{
		Use:   "drain <agent>",
		Short: "Take an agent out of service (it unloads everything) or, with --undo, back in",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Agents.DrainAgent(ctx, &droverv1.DrainAgentRequest{Agent: args[0], Reason: reason, Undo: undo})
			if err != nil {
				return err
			}
			v := agentOf(resp.GetAgent(), false)
			return a.emit(v, func(w io.Writer) {
				if v.Draining {
					fmt.Fprintf(w, "%s is draining: it unloads its models and takes no new work\n", v.Name)
				} else {
					fmt.Fprintf(w, "%s is back in service\n", v.Name)
				}
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept in the audit trail)")
	cmd.Flags().BoolVar(&undo, "undo", false, "put the agent back in service")
	return cmd
}

func roleFlag(s string) (droverv1.AssignmentRole, error) {
	r, ok := droverv1.AssignmentRole_value["ASSIGNMENT_ROLE_"+strings.ToUpper(s)]
	if !ok || r == 0 {
		return 0, usagef("--role %q: want primary, canary or shadow", s)
	}
	return droverv1.AssignmentRole(r), nil
}

func (a *app) agentsAssign() *cobra.Command {
	var (
		role, reason string
		weight       uint32
	)
	cmd := &cobra.Command{
		Use:   "assign <agent> <model>:<version|alias>",
		Short: "Make an agent run a model version (or follow an alias) in a role",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := parseRef(args[1])
			if !ref.selected() {
				return usagef("give the version or alias as <model>:<version|alias>")
			}
			r, err := roleFlag(role)
			if err != nil {
				return err
			}
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Agents.SetAssignment(ctx, &droverv1.SetAssignmentRequest{
				Agent: args[0], Model: ref.model, Version: ref.version, Alias: ref.alias, Role: r, Weight: weight, Reason: reason,
			})
			if err != nil {
				return err
			}
			v := agentOf(resp.GetAgent(), false)
			return a.emit(v, func(w io.Writer) { fmt.Fprintf(w, "%s now runs %s as %s\n", v.Name, args[1], role) })
		},
	}
	cmd.Flags().StringVar(&role, "role", "primary", "primary, canary or shadow")
	cmd.Flags().Uint32Var(&weight, "weight", 0, "the share of requests, 0-100 (primary default 100)")
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept in the audit trail)")
	return cmd
}

func (a *app) agentsUnassign() *cobra.Command {
	var role, reason string
	cmd := &cobra.Command{
		Use:   "unassign <agent> <model>",
		Short: "Stop an agent running a model in a role",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := roleFlag(role)
			if err != nil {
				return err
			}
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Agents.DeleteAssignment(ctx, &droverv1.DeleteAssignmentRequest{Agent: args[0], Model: args[1], Role: r, Reason: reason})
			if err != nil {
				return err
			}
			v := agentOf(resp.GetAgent(), false)
			return a.emit(v, func(w io.Writer) { fmt.Fprintf(w, "%s no longer runs %s as %s\n", v.Name, args[1], role) })
		},
	}
	cmd.Flags().StringVar(&role, "role", "primary", "primary, canary or shadow")
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept in the audit trail)")
	return cmd
}
