package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"sigs.k8s.io/yaml"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

func (a *app) rolloutsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollouts",
		Short: "Staged rollouts of a model version across the fleet, judged by health gates",
	}
	act := func(use, short string, action droverv1.RolloutAction) *cobra.Command {
		var reason string
		c := &cobra.Command{
			Use: use + " <rollout>", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.hub()
				if err != nil {
					return err
				}
				ctx, cancel := a.ctx(cmd)
				defer cancel()
				resp, err := c.Rollouts.ActOnRollout(ctx, &droverv1.ActOnRolloutRequest{Id: args[0], Action: action, Reason: reason})
				if err != nil {
					return err
				}
				v := rolloutOf(resp.GetRollout())
				return a.emit(v, func(w io.Writer) { fmt.Fprintf(w, "rollout %s: %s\n", v.ID, v.State) })
			},
		}
		c.Flags().StringVar(&reason, "reason", "", "why (kept in the audit trail and the rollout)")
		return c
	}
	cmd.AddCommand(a.rolloutsStart(), a.rolloutsStatus(), a.rolloutsList(), a.rolloutsWatch(),
		act("pause", "Freeze a running rollout where it stands", droverv1.RolloutAction_ROLLOUT_ACTION_PAUSE),
		act("resume", "Resume a paused rollout (its current step bakes again)", droverv1.RolloutAction_ROLLOUT_ACTION_RESUME),
		act("promote", "Skip the remaining steps: the new version goes to every agent of the rollout", droverv1.RolloutAction_ROLLOUT_ACTION_PROMOTE),
		act("abort", "Stop an active rollout and roll it back (the version is rejected)", droverv1.RolloutAction_ROLLOUT_ACTION_ABORT),
		act("rollback", "Roll a rollout back, active or finished (the version is rejected)", droverv1.RolloutAction_ROLLOUT_ACTION_ROLLBACK),
	)
	return cmd
}

// parseStep reads a --step flag: comma-separated key=value pairs (agents,
// percent, weight, shadow, bake, deadline, min-healthy).
func parseStep(s string) (*droverv1.RolloutStep, error) {
	st := &droverv1.RolloutStep{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok && k == "shadow" {
			v, ok = "true", true
		}
		if !ok {
			return nil, usagef("--step %q: want key=value pairs (agents, percent, weight, shadow, bake, deadline, min-healthy)", s)
		}
		var err error
		switch k {
		case "agents":
			var n uint64
			n, err = strconv.ParseUint(v, 10, 32)
			st.Agents = uint32(n)
		case "percent":
			st.Percent, err = strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
		case "weight":
			var n uint64
			n, err = strconv.ParseUint(v, 10, 32)
			st.Weight = uint32(n)
		case "shadow":
			st.Shadow, err = strconv.ParseBool(v)
		case "bake", "deadline":
			var d time.Duration
			if d, err = time.ParseDuration(v); err == nil {
				if k == "bake" {
					st.Bake = durationpb.New(d)
				} else {
					st.ProgressDeadline = durationpb.New(d)
				}
			}
		case "min-healthy":
			st.MinHealthyShare, err = strconv.ParseFloat(v, 64)
		default:
			return nil, usagef("--step %q: unknown key %q", s, k)
		}
		if err != nil {
			return nil, usagef("--step %q: %s: %v", s, k, err)
		}
	}
	return st, nil
}

// parseGate reads a --gate flag: a metric (or name=metric), then
// key=value pairs: max, min, max-increase, relative, test, alpha,
// min-samples, failure-limit, feature.
func parseGate(s string) (*droverv1.Gate, error) {
	parts := strings.Split(s, ",")
	g := &droverv1.Gate{}
	if name, metric, ok := strings.Cut(parts[0], "="); ok && !strings.ContainsAny(name, " ") && metric != "" && !isGateKey(name) {
		g.Name, g.Metric = name, metric
	} else {
		g.Metric, g.Name = parts[0], parts[0]
	}
	for _, kv := range parts[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok && k == "relative" {
			v, ok = "true", true
		}
		if !ok {
			return nil, usagef("--gate %q: want a metric, then key=value pairs", s)
		}
		num := func() (*float64, error) {
			x, err := strconv.ParseFloat(v, 64)
			return &x, err
		}
		var err error
		switch k {
		case "max":
			g.Max, err = num()
		case "min":
			g.Min, err = num()
		case "max-increase":
			g.MaxIncrease, err = num()
		case "relative":
			g.Relative, err = strconv.ParseBool(v)
		case "test":
			g.Test = v
		case "alpha":
			g.Alpha, err = strconv.ParseFloat(v, 64)
		case "min-samples":
			g.MinSamples, err = strconv.ParseUint(v, 10, 64)
		case "failure-limit":
			var n uint64
			n, err = strconv.ParseUint(v, 10, 32)
			g.FailureLimit = uint32(n)
		case "feature":
			g.Feature = v
		default:
			return nil, usagef("--gate %q: unknown key %q", s, k)
		}
		if err != nil {
			return nil, usagef("--gate %q: %s: %v", s, k, err)
		}
	}
	return g, nil
}

func isGateKey(k string) bool {
	switch k {
	case "max", "min", "max-increase", "relative", "test", "alpha", "min-samples", "failure-limit", "feature":
		return true
	}
	return false
}

func (a *app) rolloutsStart() *cobra.Command {
	var (
		stepFlags, gateFlags, selector []string
		file, reason                   string
		force, watch                   bool
	)
	cmd := &cobra.Command{
		Use:   "start <model>:<version|alias>",
		Short: "Start a staged rollout of a version to the agents running the model",
		Long: `Start a rollout: the selected agents that run the model move to the target
version step by step. Give the steps with --step (repeatable, in order) and
the gates every step is judged by with --gate (repeatable), or the whole
plan with --file (YAML or JSON: steps, with their gates, as in
docs/rollouts.md). Examples:

  drover rollouts start churn:4 --step agents=1,bake=5m --step percent=10,bake=10m --step percent=100 \
      --gate error_rate,max=0.02 --gate latency_p95,test=mann_whitney
  drover rollouts start churn:candidate --step agents=1,shadow,bake=10m --step percent=100,weight=100,bake=5m \
      --gate shadow_agreement,min=0.95`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			model, ref, ok := strings.Cut(args[0], ":")
			if !ok || model == "" || ref == "" {
				return usagef("%q: want <model>:<version|alias>", args[0])
			}
			req := &droverv1.StartRolloutRequest{Model: model, Force: force, Reason: reason}
			if v, err := strconv.ParseUint(ref, 10, 64); err == nil {
				req.Version = v
			} else {
				req.Alias = ref
			}
			sel, err := parseKV("selector", selector)
			if err != nil {
				return err
			}
			req.Selector = sel
			if file != "" {
				if len(stepFlags) > 0 {
					return usagef("--file and --step both give the steps: use one")
				}
				raw, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				js, err := yaml.YAMLToJSON(raw)
				if err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
				plan := &droverv1.StartRolloutRequest{}
				if err := protojson.Unmarshal(js, plan); err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
				req.Steps = plan.GetSteps()
			}
			for _, s := range stepFlags {
				st, err := parseStep(s)
				if err != nil {
					return err
				}
				req.Steps = append(req.Steps, st)
			}
			if len(req.Steps) == 0 {
				req.Steps = []*droverv1.RolloutStep{{Percent: 100}}
			}
			for _, s := range gateFlags {
				g, err := parseGate(s)
				if err != nil {
					return err
				}
				for _, st := range req.Steps {
					st.Gates = append(st.Gates, proto.CloneOf(g))
				}
			}
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Rollouts.StartRollout(ctx, req)
			if err != nil {
				return err
			}
			if watch {
				return a.watchRollout(cmd, resp.GetRollout().GetId())
			}
			v := rolloutOf(resp.GetRollout())
			return a.emit(v, func(w io.Writer) {
				fmt.Fprintf(w, "rollout %s started: %s %d → %d on %d agents in %d steps\n", v.ID, v.Model, v.From, v.To, len(v.Agents), len(v.Steps))
			})
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&stepFlags, "step", nil, "a step, key=value,...: agents=N or percent=P, weight=W (1-99 canary, 100 blue-green), shadow, bake=D, deadline=D, min-healthy=S (repeatable, in order)")
	f.StringArrayVar(&gateFlags, "gate", nil, "a gate for every step: metric[,max=X][,min=X][,max-increase=X][,relative][,test=mann_whitney|two_proportion][,alpha=A][,min-samples=N][,failure-limit=N][,feature=F] (repeatable)")
	f.StringVar(&file, "file", "", "the steps and their gates, YAML or JSON (see docs/rollouts.md)")
	f.StringArrayVar(&selector, "selector", nil, "only agents with this label, key=value (repeatable)")
	f.BoolVar(&force, "force", false, "roll out a version that was rejected")
	f.BoolVar(&watch, "watch", false, "follow the rollout until it ends")
	f.StringVar(&reason, "reason", "", "why (kept in the audit trail)")
	return cmd
}

// rolloutView is a rollout as the CLI prints it.
type rolloutView struct {
	ID         string            `json:"id"`
	Model      string            `json:"model"`
	From       uint64            `json:"from_version"`
	To         uint64            `json:"to_version"`
	State      string            `json:"state"`
	Step       uint32            `json:"step"`
	Steps      []json_           `json:"steps"`
	Selector   map[string]string `json:"selector"`
	Reason     string            `json:"reason,omitempty"`
	Agents     []rolloutAgent    `json:"agents"`
	Judgements []json_           `json:"judgements"`
	Created    *time.Time        `json:"create_time"`
	Ended      *time.Time        `json:"end_time,omitempty"`
	BakeFrom   *time.Time        `json:"step_ready_time,omitempty"`
}

// json_ is a protobuf message printed with protojson's field names.
type json_ struct{ m proto.Message }

func (j json_) MarshalJSON() ([]byte, error) {
	return protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false}.Marshal(j.m)
}

type rolloutAgent struct {
	Name    string `json:"name"`
	ID      string `json:"agent_id"`
	Step    uint32 `json:"step"`
	Phase   string `json:"phase"`
	Message string `json:"message,omitempty"`
}

func rolloutOf(r *droverv1.Rollout) rolloutView {
	v := rolloutView{ID: r.GetId(), Model: r.GetModel(), From: r.GetFromVersion(), To: r.GetToVersion(),
		State: enumName(r.GetState().String(), "ROLLOUT_STATE_"), Step: r.GetStep(), Selector: r.GetSelector(), Reason: r.GetReason(),
		Created: ts(r.GetCreateTime()), Ended: ts(r.GetEndTime()), BakeFrom: ts(r.GetStepReadyTime()),
		Steps: []json_{}, Agents: []rolloutAgent{}, Judgements: []json_{}}
	if v.Selector == nil {
		v.Selector = map[string]string{}
	}
	for _, s := range r.GetSteps() {
		v.Steps = append(v.Steps, json_{s})
	}
	for _, ra := range r.GetAgents() {
		v.Agents = append(v.Agents, rolloutAgent{Name: ra.GetName(), ID: ra.GetAgentId(), Step: ra.GetStep(),
			Phase: enumName(ra.GetPhase().String(), "ROLLOUT_AGENT_PHASE_"), Message: ra.GetMessage()})
	}
	for _, j := range r.GetJudgements() {
		v.Judgements = append(v.Judgements, json_{j})
	}
	return v
}

// stepText describes a step.
func stepText(s *droverv1.RolloutStep) string {
	var parts []string
	switch {
	case s.GetAgents() > 0:
		parts = append(parts, fmt.Sprintf("%d agents", s.GetAgents()))
	case s.GetPercent() > 0:
		parts = append(parts, fmt.Sprintf("%g%%", s.GetPercent()))
	}
	switch {
	case s.GetShadow():
		parts = append(parts, "shadow")
	case s.GetWeight() == 100:
		parts = append(parts, "blue-green")
	case s.GetWeight() > 0:
		parts = append(parts, fmt.Sprintf("canary %d%%", s.GetWeight()))
	}
	if s.GetBake().AsDuration() > 0 {
		parts = append(parts, "bake "+s.GetBake().AsDuration().String())
	}
	return strings.Join(parts, ", ")
}

func printRollout(w io.Writer, r *droverv1.Rollout) {
	v := rolloutOf(r)
	t := newTable(w)
	fmt.Fprintf(t, "Rollout:\t%s\n", v.ID)
	fmt.Fprintf(t, "Model:\t%s: %d → %d\n", v.Model, v.From, v.To)
	step := fmt.Sprintf("%d of %d", min(int(v.Step)+1, len(v.Steps)), len(v.Steps))
	fmt.Fprintf(t, "State:\t%s, step %s%s\n", v.State, step, map[bool]string{true: " — " + v.Reason}[v.Reason != ""])
	for i, s := range r.GetSteps() {
		mark := " "
		switch {
		case uint32(i) < r.GetStep():
			mark = "✓"
		case uint32(i) == r.GetStep() && r.GetState() == droverv1.RolloutState_ROLLOUT_STATE_RUNNING:
			mark = "▶"
		}
		fmt.Fprintf(t, "  %s step %d:\t%s\n", mark, i+1, stepText(s))
	}
	t.Flush()
	t = newTable(w)
	fmt.Fprintln(t, "\nAGENT\tSTEP\tPHASE\tMESSAGE")
	for _, ag := range v.Agents {
		fmt.Fprintf(t, "%s\t%d\t%s\t%s\n", ag.Name, ag.Step+1, ag.Phase, dash(ag.Message))
	}
	t.Flush()
	if js := r.GetJudgements(); len(js) > 0 {
		t = newTable(w)
		fmt.Fprintln(t, "\nTIME\tSTEP\tGATE\tRESULT\tDETAIL")
		for _, j := range js[max(0, len(js)-10):] {
			fmt.Fprintf(t, "%s\t%d\t%s\t%s\t%s\n", fmtTimeP(ts(j.GetTime())), j.GetStep()+1, j.GetGate(), j.GetResult(), j.GetDetail())
		}
		t.Flush()
	}
}

func (a *app) rolloutsStatus() *cobra.Command {
	return &cobra.Command{
		Use: "status <rollout>", Short: "Show a rollout: steps, agents and the gates' judgements", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Rollouts.GetRollout(ctx, &droverv1.GetRolloutRequest{Id: args[0], Read: a.read()})
			if err != nil {
				return err
			}
			return a.emit(rolloutOf(resp.GetRollout()), func(w io.Writer) { printRollout(w, resp.GetRollout()) })
		},
	}
}

func (a *app) rolloutsList() *cobra.Command {
	var model string
	var active bool
	cmd := &cobra.Command{
		Use: "list", Short: "List rollouts, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Rollouts.ListRollouts(ctx, &droverv1.ListRolloutsRequest{Model: model, Active: active, Read: a.read()})
			if err != nil {
				return err
			}
			out := struct {
				Rollouts []rolloutView `json:"rollouts"`
			}{Rollouts: []rolloutView{}}
			for _, r := range resp.GetRollouts() {
				out.Rollouts = append(out.Rollouts, rolloutOf(r))
			}
			return a.emit(out, func(w io.Writer) {
				t := newTable(w)
				fmt.Fprintln(t, "ID\tMODEL\tVERSIONS\tSTATE\tSTEP\tAGENTS\tSTARTED\tREASON")
				for _, v := range out.Rollouts {
					fmt.Fprintf(t, "%s\t%s\t%d→%d\t%s\t%d/%d\t%d\t%s\t%s\n", v.ID, v.Model, v.From, v.To, v.State,
						min(int(v.Step)+1, len(v.Steps)), len(v.Steps), len(v.Agents), fmtTimeP(v.Created), dash(v.Reason))
				}
				t.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "only this model's")
	cmd.Flags().BoolVar(&active, "active", false, "only running or paused ones")
	return cmd
}

func (a *app) rolloutsWatch() *cobra.Command {
	return &cobra.Command{
		Use: "watch <rollout>", Short: "Follow a rollout until it ends, a line per change (JSON lines with --json)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return a.watchRollout(cmd, args[0]) },
	}
}

// watchRollout prints a rollout's changes until it ends; it fails when the
// rollout ends rolled back, so that scripts can tell.
func (a *app) watchRollout(cmd *cobra.Command, id string) error {
	c, err := a.hub()
	if err != nil {
		return err
	}
	stream, err := c.Rollouts.WatchRollout(cmd.Context(), &droverv1.WatchRolloutRequest{Id: id})
	if err != nil {
		return err
	}
	defer stream.Close()
	var last *droverv1.Rollout
	seen := 0
	for {
		msg, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		r := msg.GetRollout()
		last = r
		if a.json {
			if err := a.printJSONLine(rolloutOf(r)); err != nil {
				return err
			}
			continue
		}
		ready := 0
		in := 0
		for _, ra := range r.GetAgents() {
			if ra.GetStep() <= r.GetStep() {
				in++
				if ra.GetPhase() == droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_SERVING || ra.GetPhase() == droverv1.RolloutAgentPhase_ROLLOUT_AGENT_PHASE_READY {
					ready++
				}
			}
		}
		step := min(int(r.GetStep())+1, len(r.GetSteps()))
		fmt.Fprintf(a.stdout, "%s  %s  step %d/%d  agents ready %d/%d  %s\n", time.Now().Format("15:04:05"),
			enumName(r.GetState().String(), "ROLLOUT_STATE_"), step, len(r.GetSteps()), ready, in, r.GetReason())
		for _, j := range r.GetJudgements()[min(seen, len(r.GetJudgements())):] {
			fmt.Fprintf(a.stdout, "          gate %s (step %d): %s — %s\n", j.GetGate(), j.GetStep()+1, j.GetResult(), j.GetDetail())
		}
		seen = len(r.GetJudgements())
	}
	if last.GetState() == droverv1.RolloutState_ROLLOUT_STATE_ROLLED_BACK {
		return fmt.Errorf("rollout %s rolled back: %s", id, last.GetReason())
	}
	return nil
}
