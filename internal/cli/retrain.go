package cli

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect/v2"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"sigs.k8s.io/yaml"

	"github.com/droverhq/drover/internal/progress"
	"github.com/droverhq/drover/internal/training"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

func (a *app) retrainCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "retrain",
		Short: "Retraining: policies that retrain a model on drift, falling accuracy or a schedule, and their jobs",
		Long: `A retraining policy says when a model is retrained (persistent drift, falling
live accuracy, a cron schedule, or by hand with "retrain run"), on what data,
on which agents, and what happens to a candidate that beats the champion.
Each retraining is a job: its data set is assembled and validated, it is
placed on an agent, trained, judged against the champion on the same
hold-out, and a winner is registered and, if the policy says so, rolled out.
See docs/retraining.md.`,
	}
	policies := &cobra.Command{Use: "policies", Short: "Create, list, show and delete retraining policies"}
	policies.AddCommand(a.retrainPoliciesPut(), a.retrainPoliciesList(), a.retrainPoliciesShow(), a.retrainPoliciesDelete())
	jobs := &cobra.Command{Use: "jobs", Short: "Retraining jobs: list, show, follow, cancel, read their logs"}
	jobs.AddCommand(a.retrainJobsList(), a.retrainJobsShow(), a.retrainJobsWatch(), a.retrainJobsCancel(), a.retrainJobsLogs())
	cmd.AddCommand(policies, a.retrainRun(), jobs)
	return cmd
}

// ---- policies ----

func (a *app) retrainPoliciesPut() *cobra.Command {
	var file, name, model, reason string
	cmd := &cobra.Command{
		Use:   "put -f <policy.yaml>",
		Short: "Create a policy, or replace the one of the same name, from a YAML or JSON file",
		Long: `Create a retraining policy, or replace the one of the same name (what it last
triggered is kept). The file is YAML or JSON: drover.v1.RetrainPolicy in
protobuf's JSON mapping, with snake_case or lowerCamel field names, durations
as "30s", "10m" or "6h", and min_free_gpu_memory_bytes also as "8GiB". A
field that does not exist is an error naming it. --name and --model override
the file's. "-f -" reads standard input. See docs/retraining.md.

  drover retrain policies put -f churn-policy.yaml --reason "weekly plus drift"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usagef("give the policy with -f <file> (YAML or JSON)")
			}
			var raw []byte
			var err error
			if file == "-" {
				raw, err = io.ReadAll(cmd.InOrStdin())
			} else {
				raw, err = os.ReadFile(file)
			}
			if err != nil {
				return err
			}
			p, err := parseRetrainPolicy(file, raw)
			if err != nil {
				return err
			}
			if name != "" {
				p.Name = name
			}
			if model != "" {
				p.Model = model
			}
			if p.GetName() == "" {
				return usagef("%s: the policy has no name: give one in the file (name:) or with --name", file)
			}
			if p.GetModel() == "" {
				return usagef("%s: the policy has no model: give one in the file (model:) or with --model", file)
			}
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Retrain.PutPolicy(ctx, &droverv1.PutPolicyRequest{Policy: p, Reason: reason})
			if err != nil {
				return err
			}
			stored := resp.GetPolicy()
			return a.emit(json_{stored}, func(w io.Writer) { printRetrainPolicy(w, stored, time.Now()) })
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "the policy, YAML or JSON (- for standard input)")
	f.StringVar(&name, "name", "", "the policy's name (overrides the file's)")
	f.StringVar(&model, "model", "", "the model it retrains (overrides the file's)")
	f.StringVar(&reason, "reason", "", "why (kept in the audit trail)")
	return cmd
}

// protojsonPosition is the "(line 1:23): " protojson puts in its errors;
// after YAML is turned into JSON those positions point nowhere useful.
var protojsonPosition = regexp.MustCompile(`^proto:[\s\x{a0}]*(\(line \d+:\d+\):[\s\x{a0}]*)?`)

// parseRetrainPolicy reads a policy file: YAML or JSON, in protobuf's JSON
// mapping of RetrainPolicy (snake_case or lowerCamel names). Unknown
// fields are errors naming them, with their path; durations may also be
// written as Go writes them ("6h", "1m30s") and byte sizes as "8GiB"; map
// and string values that YAML reads as numbers or booleans are taken as
// written; a gate without a name is named after its metric. What the hub
// sets (status, times, indexes) is cleared, so that a policy printed with
// --json can be put back.
func parseRetrainPolicy(file string, raw []byte) (*droverv1.RetrainPolicy, error) {
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if doc == nil {
		return nil, fmt.Errorf("%s: empty: want a policy (name, model, triggers, ...)", file)
	}
	if _, ok := doc.(map[string]any); !ok {
		return nil, fmt.Errorf("%s: want a policy (name, model, triggers, ...), not a %s", file, jsonKind(doc))
	}
	p := &droverv1.RetrainPolicy{}
	doc, err = normalizeProtoJSON(doc, p.ProtoReflect().Descriptor(), "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	js, err = json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, p); err != nil {
		return nil, fmt.Errorf("%s: %s", file, protojsonPosition.ReplaceAllString(err.Error(), ""))
	}
	p.Status, p.UpdatedBy, p.CreateTime, p.UpdateTime, p.CreateIndex, p.ModifyIndex = nil, nil, nil, nil, 0, 0
	// A gate is named after its metric unless named, as --gate does.
	for _, st := range p.GetRollout().GetSteps() {
		for _, g := range st.GetGates() {
			if g.GetName() == "" {
				g.Name = g.GetMetric()
			}
		}
	}
	return p, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case []any:
		return "list"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return "object"
}

// normalizeProtoJSON walks a decoded JSON value against a message's
// descriptor: it refuses unknown fields, naming them by path (with the
// nearest real field), and rewrites what protojson refuses but people
// write (see parseRetrainPolicy). Type errors it leaves to protojson.
func normalizeProtoJSON(v any, md protoreflect.MessageDescriptor, path string) (any, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return v, nil
	}
	fields := md.Fields()
	for k, fv := range obj {
		fd := fields.ByJSONName(k)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(k))
		}
		fpath := k
		if path != "" {
			fpath = path + "." + k
		}
		if fd == nil {
			if s := nearestField(k, fields); s != "" {
				return nil, fmt.Errorf("unknown field %q (did you mean %q?)", fpath, s)
			}
			return nil, fmt.Errorf("unknown field %q", fpath)
		}
		var err error
		switch {
		case fd.IsMap():
			m, ok := fv.(map[string]any)
			if !ok {
				continue
			}
			for mk, mv := range m {
				if m[mk], err = normalizeValue(mv, fd.MapValue(), fmt.Sprintf("%s[%s]", fpath, mk)); err != nil {
					return nil, err
				}
			}
		case fd.IsList():
			l, ok := fv.([]any)
			if !ok {
				continue
			}
			for i, lv := range l {
				if l[i], err = normalizeValue(lv, fd, fmt.Sprintf("%s[%d]", fpath, i)); err != nil {
					return nil, err
				}
			}
		default:
			if obj[k], err = normalizeValue(fv, fd, fpath); err != nil {
				return nil, err
			}
		}
	}
	return obj, nil
}

// normalizeValue normalizes one value of a field (an element, for lists
// and maps).
func normalizeValue(v any, fd protoreflect.FieldDescriptor, path string) (any, error) {
	if v == nil {
		return v, nil
	}
	if md := fd.Message(); md != nil {
		if md.FullName() == "google.protobuf.Duration" {
			return normalizeDuration(v, path)
		}
		if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
			return v, nil
		}
		return normalizeProtoJSON(v, md, path)
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		// YAML reads `seed: 7` and `gpu: true` as a number and a boolean.
		switch x := v.(type) {
		case json.Number:
			return x.String(), nil
		case bool:
			return strconv.FormatBool(x), nil
		}
	case protoreflect.Uint64Kind, protoreflect.Int64Kind, protoreflect.Uint32Kind, protoreflect.Int32Kind:
		if s, ok := v.(string); ok && strings.HasSuffix(string(fd.Name()), "_bytes") {
			if n, ok := parseByteSize(s); ok {
				return json.Number(strconv.FormatUint(n, 10)), nil
			}
			if _, err := strconv.ParseUint(s, 10, 64); err != nil {
				return nil, fmt.Errorf("%s: %q is not a size: write bytes, or e.g. \"512MiB\", \"8GiB\"", path, s)
			}
		}
	}
	return v, nil
}

// normalizeDuration turns "6h" or "1m30s" into protojson's "21600s".
func normalizeDuration(v any, path string) (any, error) {
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("%s: %v is not a duration: write it with a unit, e.g. \"30s\", \"10m\", \"6h\"", path, v)
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("%s: %q is not a duration: write e.g. \"30s\", \"10m\", \"6h\"", path, s)
	}
	if d < 0 {
		return nil, fmt.Errorf("%s: %q: a duration must not be negative", path, s)
	}
	secs, nanos := int64(d/time.Second), int64(d%time.Second)
	if nanos == 0 {
		return fmt.Sprintf("%ds", secs), nil
	}
	return strings.TrimRight(fmt.Sprintf("%d.%09d", secs, nanos), "0") + "s", nil
}

// parseByteSize reads "8GiB", "512 MiB", "8G" (binary units) or "1.5GB"
// (decimal ones).
func parseByteSize(s string) (uint64, bool) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i <= 0 {
		return 0, false
	}
	x, err := strconv.ParseFloat(s[:i], 64)
	if err != nil {
		return 0, false
	}
	units := map[string]float64{"b": 1,
		"k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}
	mult, ok := units[strings.ToLower(strings.TrimSpace(s[i:]))]
	if !ok || x < 0 || x*mult > math.MaxUint64/2 {
		return 0, false
	}
	return uint64(math.Round(x * mult)), true
}

// nearestField is the field name (as written in the proto, or its
// lowerCamel form, whichever is closer) nearest to a misspelt one, or ""
// when none is near.
func nearestField(name string, fields protoreflect.FieldDescriptors) string {
	best, bestD := "", math.MaxInt
	for i := range fields.Len() {
		fd := fields.Get(i)
		for _, cand := range []string{string(fd.Name()), fd.JSONName()} {
			if d := editDistance(strings.ToLower(name), strings.ToLower(cand)); d < bestD {
				best, bestD = cand, d
			}
		}
	}
	if bestD <= max(2, len(name)/3) {
		return best
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (a *app) retrainPoliciesList() *cobra.Command {
	var model string
	cmd := &cobra.Command{
		Use: "list", Short: "List retraining policies", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Retrain.ListPolicies(ctx, &droverv1.ListPoliciesRequest{Model: model, Read: a.read()})
			if err != nil {
				return err
			}
			out := struct {
				Policies []json_ `json:"policies"`
			}{Policies: []json_{}}
			for _, p := range resp.GetPolicies() {
				out.Policies = append(out.Policies, json_{p})
			}
			return a.emit(out, func(w io.Writer) { printRetrainPolicies(w, resp.GetPolicies(), time.Now()) })
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "only this model's")
	return cmd
}

func (a *app) retrainPoliciesShow() *cobra.Command {
	return &cobra.Command{
		Use: "show <policy>", Short: "Show a policy: triggers, data set, placement, promotion, rollout, what it last did", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Retrain.GetPolicy(ctx, &droverv1.GetPolicyRequest{Name: args[0], Read: a.read()})
			if err != nil {
				return err
			}
			p := resp.GetPolicy()
			return a.emit(json_{p}, func(w io.Writer) { printRetrainPolicy(w, p, time.Now()) })
		},
	}
}

func (a *app) retrainPoliciesDelete() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use: "delete <policy>", Short: "Delete a policy; its jobs are kept and run on", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			if _, err := c.Retrain.DeletePolicy(ctx, &droverv1.DeletePolicyRequest{Name: args[0], Reason: reason}); err != nil {
				return err
			}
			return a.emit(map[string]any{"name": args[0], "deleted": true}, func(w io.Writer) {
				fmt.Fprintf(w, "Deleted policy %s (its jobs are kept)\n", args[0])
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept in the audit trail)")
	return cmd
}

// printRetrainPolicies prints policies as a table.
func printRetrainPolicies(w io.Writer, ps []*droverv1.RetrainPolicy, now time.Time) {
	t := newTable(w)
	fmt.Fprintln(t, "NAME\tMODEL\tSTATE\tTRIGGERS\tCOOLDOWN\tRUNNER\tLAST TRIGGERED\tLAST JOB")
	for _, p := range ps {
		state := "active"
		if p.GetPaused() {
			state = "paused"
		}
		st := p.GetStatus()
		last := "-"
		if st.GetLastTriggerTime() != nil {
			last = strings.TrimSpace(st.GetLastTrigger() + " " + humanAgo(st.GetLastTriggerTime().AsTime(), now))
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.GetName(), p.GetModel(), state, retrainTriggersShort(p.GetTriggers()),
			cooldownText(p), dash(p.GetRunner()), last, dash(st.GetLastJobId()))
	}
	t.Flush()
}

// retrainTriggersShort is a policy's triggers in a few words.
func retrainTriggersShort(tr *droverv1.RetrainTriggers) string {
	var parts []string
	if d := tr.GetDrift(); d != nil {
		parts = append(parts, fmt.Sprintf("drift×%d", cmp.Or(d.GetConsecutiveWindows(), 3)))
	}
	if ac := tr.GetAccuracy(); ac != nil {
		var s []string
		if ac.Below != nil {
			s = append(s, fmt.Sprintf("<%g", ac.GetBelow()))
		}
		if ac.Drop != nil {
			s = append(s, fmt.Sprintf("-%g", ac.GetDrop()))
		}
		parts = append(parts, "accuracy"+strings.Join(s, "/"))
	}
	if s := tr.GetSchedule(); s != "" {
		parts = append(parts, "cron "+strconv.Quote(s))
	}
	if len(parts) == 0 {
		return "manual"
	}
	return strings.Join(parts, ", ")
}

// retrainTriggersText is a policy's triggers in full.
func retrainTriggersText(tr *droverv1.RetrainTriggers) []string {
	var out []string
	if d := tr.GetDrift(); d != nil {
		out = append(out, fmt.Sprintf("drift: the fleet's verdict on the champion is drift for %d consecutive windows", cmp.Or(d.GetConsecutiveWindows(), 3)))
	}
	if ac := tr.GetAccuracy(); ac != nil {
		var s []string
		if ac.Below != nil {
			s = append(s, fmt.Sprintf("below %g", ac.GetBelow()))
		}
		if ac.Drop != nil {
			s = append(s, fmt.Sprintf("down %g from the accuracy it was registered with", ac.GetDrop()))
		}
		window := durationOr(ac.GetWindow().AsDuration(), ac.GetWindow() != nil, "10m")
		out = append(out, fmt.Sprintf("accuracy: live accuracy %s, over %s (at least %d labelled rows)",
			dash(strings.Join(s, " or ")), window, cmp.Or(ac.GetMinRows(), 100)))
	}
	if s := tr.GetSchedule(); s != "" {
		out = append(out, fmt.Sprintf("schedule: %q (UTC)", s))
	}
	if len(out) == 0 {
		out = append(out, "none: only by hand (drover retrain run)")
	}
	return out
}

// printRetrainPolicy prints one policy in full.
func printRetrainPolicy(w io.Writer, p *droverv1.RetrainPolicy, now time.Time) {
	t := newTable(w)
	state := ""
	if p.GetPaused() {
		state = " — paused: triggers nothing by itself"
	}
	fmt.Fprintf(t, "Policy:\t%s (model %s)%s\n", p.GetName(), p.GetModel(), state)
	for i, s := range retrainTriggersText(p.GetTriggers()) {
		label := "Triggers:"
		if i > 0 {
			label = ""
		}
		fmt.Fprintf(t, "%s\t%s\n", label, s)
	}
	fmt.Fprintf(t, "Cool-down:\t%s\n", cooldownText(p))
	fmt.Fprintf(t, "Runner:\t%s\n", strings.TrimSpace(dash(p.GetRunner())+" "+kvString(p.GetParams())))
	fmt.Fprintf(t, "Data set:\t%s\n", datasetRecipeText(p.GetDataset(), p.GetModel()))
	fmt.Fprintf(t, "Placement:\t%s\n", placementText(p.GetPlacement()))
	fmt.Fprintf(t, "Promotion:\t%s\n", promotionText(p.GetPromotion()))
	fmt.Fprintf(t, "Rollout:\t%s\n", rolloutTemplateText(p.GetRollout()))
	fmt.Fprintf(t, "Timeout:\t%s\n", durationOr(p.GetTimeout().AsDuration(), p.GetTimeout() != nil, "1h"))
	fmt.Fprintf(t, "Attempts:\t%d at most\n", cmp.Or(p.GetMaxAttempts(), 3))
	if st := p.GetStatus(); st.GetLastTriggerTime() != nil || st.GetLastJobId() != "" {
		last := dash(st.GetLastTrigger())
		if st.GetLastTriggerTime() != nil {
			last += ", " + humanAgo(st.GetLastTriggerTime().AsTime(), now)
		}
		if st.GetLastJobId() != "" {
			last += ": job " + st.GetLastJobId()
		}
		fmt.Fprintf(t, "Last triggered:\t%s\n", last)
	}
	if st := p.GetStatus(); st.GetLastScheduleTime() != nil {
		fmt.Fprintf(t, "Last scheduled:\t%s\n", fmtTime(st.GetLastScheduleTime()))
	}
	if p.GetUpdateTime() != nil {
		fmt.Fprintf(t, "Updated:\t%s by %s\n", fmtTime(p.GetUpdateTime()), actor(p.GetUpdatedBy()))
	}
	t.Flush()
}

func datasetRecipeText(d *droverv1.DatasetRecipe, model string) string {
	var src []string
	if d.GetBase() != "" {
		v := "newest"
		if d.GetBaseVersion() != 0 {
			v = fmt.Sprintf("version %d", d.GetBaseVersion())
		}
		src = append(src, fmt.Sprintf("%s (%s)", d.GetBase(), v))
	}
	if d.GetFeedback() {
		collect := 30 * time.Second
		if d.GetCollectTimeout().AsDuration() > 0 {
			collect = d.GetCollectTimeout().AsDuration()
		}
		src = append(src, fmt.Sprintf("feedback (at most %d rows per agent, handed in within %s)",
			cmp.Or(d.GetFeedbackMaxRows(), 10000), humanDuration(collect)))
	}
	out := d.GetOutput()
	if out == "" {
		out = model + "-retrain"
	}
	s := dash(strings.Join(src, " + ")) + " → " + out
	s += "; target " + dash(d.GetTarget())
	if len(d.GetIgnore()) > 0 {
		s += ", ignore " + strings.Join(d.GetIgnore(), ", ")
	}
	s += fmt.Sprintf("; at least %d rows", cmp.Or(d.GetMinRows(), 50))
	return s
}

func placementText(p *droverv1.Placement) string {
	var parts []string
	if len(p.GetSelector()) > 0 {
		parts = append(parts, "agents with "+kvString(p.GetSelector()))
	}
	if p.GetGpus() > 0 {
		g := fmt.Sprintf("%d GPU", p.GetGpus())
		if p.GetGpus() > 1 {
			g += "s"
		}
		parts = append(parts, g)
	}
	if p.GetMinFreeGpuMemoryBytes() > 0 {
		parts = append(parts, progress.Bytes(int64(min(p.GetMinFreeGpuMemoryBytes(), math.MaxInt64)))+" free GPU memory")
	}
	if p.GetAllowCpu() {
		parts = append(parts, "CPU-only agents allowed")
	}
	if len(parts) == 0 {
		return "any ready agent"
	}
	return strings.Join(parts, ", ")
}

func promotionText(p *droverv1.Promotion) string {
	metric := p.GetMetric()
	if metric == "" {
		metric = "accuracy (rmse for a regression)"
	}
	dir := "higher is better"
	if training.LowerIsBetter(p.GetMetric()) {
		dir = "lower is better"
	}
	if p.GetMargin() == 0 {
		return fmt.Sprintf("%s, %s: at least as good as the champion", metric, dir)
	}
	return fmt.Sprintf("%s, %s: better than the champion by %g", metric, dir, p.GetMargin())
}

func rolloutTemplateText(r *droverv1.RolloutTemplate) string {
	if !r.GetAuto() {
		return "none: a winner is registered, not rolled out"
	}
	s := "auto"
	if len(r.GetSelector()) > 0 {
		s += " to agents with " + kvString(r.GetSelector())
	}
	if len(r.GetSteps()) == 0 {
		return s + ": canary at weight 10 judged by its error rate for 1m, then everyone (default)"
	}
	var steps []string
	for i, st := range r.GetSteps() {
		steps = append(steps, fmt.Sprintf("%d) %s", i+1, retrainStepText(st)))
	}
	return s + ": " + strings.Join(steps, "; ")
}

// retrainStepText describes a rollout step with its gates.
func retrainStepText(s *droverv1.RolloutStep) string {
	var parts []string
	switch {
	case s.GetAgents() == 1:
		parts = append(parts, "1 agent")
	case s.GetAgents() > 0:
		parts = append(parts, fmt.Sprintf("%d agents", s.GetAgents()))
	case s.GetPercent() > 0 && s.GetPercent() < 100:
		parts = append(parts, fmt.Sprintf("%g%%", s.GetPercent()))
	default:
		parts = append(parts, "everyone")
	}
	switch {
	case s.GetShadow():
		parts = append(parts, "shadow")
	case s.GetWeight() == 100:
		parts = append(parts, "blue-green")
	case s.GetWeight() > 0:
		parts = append(parts, fmt.Sprintf("canary weight %d", s.GetWeight()))
	}
	if d := s.GetBake().AsDuration(); d > 0 {
		parts = append(parts, "bake "+humanDuration(d))
	}
	var gates []string
	for _, g := range s.GetGates() {
		gates = append(gates, gateText(g))
	}
	if len(gates) > 0 {
		parts = append(parts, "gates "+strings.Join(gates, ", "))
	}
	return strings.Join(parts, ", ")
}

func gateText(g *droverv1.Gate) string {
	s := g.GetMetric()
	if g.GetFeature() != "" {
		s += "(" + g.GetFeature() + ")"
	}
	if g.Max != nil {
		s += fmt.Sprintf(" max=%g", g.GetMax())
	}
	if g.Min != nil {
		s += fmt.Sprintf(" min=%g", g.GetMin())
	}
	if g.MaxIncrease != nil {
		s += fmt.Sprintf(" max-increase=%g", g.GetMaxIncrease())
		if g.GetRelative() {
			s += " relative"
		}
	}
	if g.GetTest() != "" {
		s += " test=" + g.GetTest()
	}
	return s
}

// ---- run ----

func (a *app) retrainRun() *cobra.Command {
	var reason string
	var force, watch bool
	cmd := &cobra.Command{
		Use:   "run <policy>",
		Short: "Start a job of a policy by hand (the cool-down applies unless --force)",
		Long: `Start a retraining job of a policy now. The policy's cool-down applies unless
--force; a policy that already has an active job is refused either way.
With --watch, follow the job as "retrain jobs watch" does.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Retrain.TriggerRetrain(ctx, &droverv1.TriggerRetrainRequest{Policy: args[0], Force: force, Reason: reason})
			if err != nil {
				return err
			}
			j := resp.GetJob()
			if watch {
				if !a.json {
					fmt.Fprintf(a.stdout, "Started job %s of policy %s (%s)\n", j.GetId(), j.GetPolicy(), j.GetModel())
				}
				return a.watchRetrainJob(cmd, j.GetId())
			}
			return a.emit(retrainJobOf(j), func(w io.Writer) {
				fmt.Fprintf(w, "Started job %s of policy %s (%s): %s\n", j.GetId(), j.GetPolicy(), j.GetModel(), retrainStateName(j.GetState()))
				fmt.Fprintf(w, "Follow it with: drover retrain jobs watch %s\n", j.GetId())
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&force, "force", false, "ignore the policy's cool-down (an active job still refuses)")
	f.StringVar(&reason, "reason", "", "why (kept in the audit trail and the job)")
	f.BoolVar(&watch, "watch", false, "follow the job until it ends")
	return cmd
}

// ---- jobs ----

// retrainJobView is a job as the CLI prints it with --json.
type retrainJobView struct {
	ID              string                 `json:"id"`
	Policy          string                 `json:"policy"`
	Model           string                 `json:"model"`
	State           string                 `json:"state"`
	Trigger         string                 `json:"trigger"`
	TriggerDetail   string                 `json:"trigger_detail,omitempty"`
	ChampionVersion uint64                 `json:"champion_version"`
	ExportAgents    []string               `json:"export_agents"`
	Exports         []retrainExportView    `json:"exports"`
	Dataset         string                 `json:"dataset,omitempty"`
	DatasetVersion  uint64                 `json:"dataset_version,omitempty"`
	DatasetDigest   string                 `json:"dataset_digest,omitempty"`
	Validation      *retrainValidationView `json:"validation,omitempty"`
	AgentID         string                 `json:"agent_id,omitempty"`
	AgentName       string                 `json:"agent_name,omitempty"`
	Attempt         uint32                 `json:"attempt"`
	Attempts        []retrainAttemptView   `json:"attempts"`
	ExcludedAgents  []string               `json:"excluded_agents"`
	Phase           string                 `json:"phase,omitempty"`
	Progress        float64                `json:"progress"`
	Stage           string                 `json:"stage,omitempty"`
	Metrics         map[string]float64     `json:"metrics"`
	Log             []string               `json:"log,omitempty"`
	RunID           string                 `json:"run_id,omitempty"`
	Result          *retrainResultView     `json:"result,omitempty"`
	Outcome         string                 `json:"outcome,omitempty"`
	Metric          string                 `json:"metric,omitempty"`
	CandidateScore  float64                `json:"candidate_score"`
	ChampionScore   float64                `json:"champion_score"`
	Margin          float64                `json:"margin"`
	Version         uint64                 `json:"version,omitempty"`
	RolloutID       string                 `json:"rollout_id,omitempty"`
	Message         string                 `json:"message,omitempty"`
	CreatedBy       actorView              `json:"created_by"`
	CreateTime      *time.Time             `json:"create_time"`
	UpdateTime      *time.Time             `json:"update_time,omitempty"`
	StartTime       *time.Time             `json:"start_time,omitempty"`
	EndTime         *time.Time             `json:"end_time,omitempty"`
	Spec            *json_                 `json:"spec,omitempty"`
}

type retrainExportView struct {
	AgentID string `json:"agent_id"`
	Rows    uint64 `json:"rows"`
	Digest  string `json:"digest,omitempty"`
	Error   string `json:"error,omitempty"`
}

type retrainValidationView struct {
	Passed       bool                     `json:"passed"`
	Rows         uint64                   `json:"rows"`
	Expectations []retrainExpectationView `json:"expectations"`
}

type retrainExpectationView struct {
	Name   string `json:"name"`
	Column string `json:"column,omitempty"`
	Passed bool   `json:"passed"`
	Detail string `json:"detail,omitempty"`
}

type retrainAttemptView struct {
	Attempt   uint32     `json:"attempt"`
	AgentID   string     `json:"agent_id"`
	AgentName string     `json:"agent_name"`
	StartTime *time.Time `json:"start_time,omitempty"`
	EndTime   *time.Time `json:"end_time,omitempty"`
	Outcome   string     `json:"outcome,omitempty"`
}

type retrainResultView struct {
	Artifact        string             `json:"artifact,omitempty"`
	Format          string             `json:"format,omitempty"`
	Metrics         map[string]float64 `json:"metrics"`
	ChampionMetrics map[string]float64 `json:"champion_metrics"`
	Params          map[string]string  `json:"params"`
	TrainRows       uint64             `json:"train_rows"`
	HoldoutRows     uint64             `json:"holdout_rows"`
}

func retrainStateName(s droverv1.RetrainJobState) string {
	return enumName(s.String(), "RETRAIN_JOB_STATE_")
}

func retrainOutcomeName(o droverv1.RetrainOutcome) string {
	if o == droverv1.RetrainOutcome_RETRAIN_OUTCOME_UNSPECIFIED {
		return ""
	}
	return enumName(o.String(), "RETRAIN_OUTCOME_")
}

// retrainJobEnded reports whether a job is in a final state.
func retrainJobEnded(s droverv1.RetrainJobState) bool {
	switch s {
	case droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED, droverv1.RetrainJobState_RETRAIN_JOB_STATE_FAILED,
		droverv1.RetrainJobState_RETRAIN_JOB_STATE_CANCELLED:
		return true
	}
	return false
}

func retrainJobOf(j *droverv1.RetrainJob) retrainJobView {
	v := retrainJobView{ID: j.GetId(), Policy: j.GetPolicy(), Model: j.GetModel(), State: retrainStateName(j.GetState()),
		Trigger: j.GetTrigger(), TriggerDetail: j.GetTriggerDetail(), ChampionVersion: j.GetChampionVersion(),
		ExportAgents: nonNilSlice(j.GetExportAgents()), Exports: []retrainExportView{},
		Dataset: j.GetDataset(), DatasetVersion: j.GetDatasetVersion(), DatasetDigest: j.GetDatasetContent().GetDigest(),
		AgentID: j.GetAgentId(), AgentName: j.GetAgentName(), Attempt: j.GetAttempt(), Attempts: []retrainAttemptView{},
		ExcludedAgents: nonNilSlice(j.GetExcludedAgents()), Phase: j.GetPhase(), Progress: j.GetProgress(), Stage: j.GetStage(),
		Metrics: nonNil(j.GetMetrics()), Log: j.GetLog(), RunID: j.GetRunId(), Outcome: retrainOutcomeName(j.GetOutcome()),
		Metric: j.GetMetric(), CandidateScore: j.GetCandidateScore(), ChampionScore: j.GetChampionScore(), Margin: j.GetMargin(),
		Version: j.GetVersion(), RolloutID: j.GetRolloutId(), Message: j.GetMessage(), CreatedBy: actor(j.GetCreatedBy()),
		CreateTime: ts(j.GetCreateTime()), UpdateTime: ts(j.GetUpdateTime()), StartTime: ts(j.GetStartTime()), EndTime: ts(j.GetEndTime())}
	for _, e := range j.GetExports() {
		v.Exports = append(v.Exports, retrainExportView{AgentID: e.GetAgentId(), Rows: e.GetRows(), Digest: e.GetContent().GetDigest(), Error: e.GetError()})
	}
	if val := j.GetValidation(); val != nil {
		vv := &retrainValidationView{Passed: val.GetPassed(), Rows: val.GetRows(), Expectations: []retrainExpectationView{}}
		for _, e := range val.GetExpectations() {
			vv.Expectations = append(vv.Expectations, retrainExpectationView{Name: e.GetName(), Column: e.GetColumn(), Passed: e.GetPassed(), Detail: e.GetDetail()})
		}
		v.Validation = vv
	}
	for _, at := range j.GetAttempts() {
		v.Attempts = append(v.Attempts, retrainAttemptView{Attempt: at.GetAttempt(), AgentID: at.GetAgentId(), AgentName: at.GetAgentName(),
			StartTime: ts(at.GetStartTime()), EndTime: ts(at.GetEndTime()), Outcome: at.GetOutcome()})
	}
	if r := j.GetResult(); r != nil {
		v.Result = &retrainResultView{Artifact: r.GetArtifact().GetDigest(), Format: r.GetFormat(), Metrics: nonNil(r.GetMetrics()),
			ChampionMetrics: nonNil(r.GetChampionMetrics()), Params: nonNil(r.GetParams()), TrainRows: r.GetTrainRows(), HoldoutRows: r.GetHoldoutRows()}
	}
	if j.GetSpec() != nil {
		v.Spec = &json_{j.GetSpec()}
	}
	return v
}

func nonNilSlice[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (a *app) retrainJobsList() *cobra.Command {
	var policy, model string
	var active bool
	var limit uint32
	cmd := &cobra.Command{
		Use: "list", Short: "List retraining jobs, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit == 0 {
				return usagef("--limit must be at least 1")
			}
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Retrain.ListJobs(ctx, &droverv1.ListJobsRequest{Policy: policy, Model: model, Active: active, Limit: limit, Read: a.read()})
			if err != nil {
				return err
			}
			out := struct {
				Jobs []retrainJobView `json:"jobs"`
			}{Jobs: []retrainJobView{}}
			for _, j := range resp.GetJobs() {
				out.Jobs = append(out.Jobs, retrainJobOf(j))
			}
			return a.emit(out, func(w io.Writer) { printRetrainJobs(w, resp.GetJobs(), time.Now()) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&policy, "policy", "", "only this policy's")
	f.StringVar(&model, "model", "", "only this model's")
	f.BoolVar(&active, "active", false, "only jobs that have not ended")
	f.Uint32Var(&limit, "limit", 100, "at most this many, the newest")
	return cmd
}

// printRetrainJobs prints jobs as a table.
func printRetrainJobs(w io.Writer, jobs []*droverv1.RetrainJob, now time.Time) {
	t := newTable(w)
	fmt.Fprintln(t, "ID\tPOLICY\tMODEL\tSTATE\tTRIGGER\tAGENT\tPROGRESS\tRESULT\tCREATED\tTOOK")
	for _, j := range jobs {
		prog := "-"
		if j.GetState() == droverv1.RetrainJobState_RETRAIN_JOB_STATE_RUNNING || j.GetState() == droverv1.RetrainJobState_RETRAIN_JOB_STATE_FINISHING {
			prog = strings.TrimSpace(fmt.Sprintf("%3.0f%% %s", j.GetProgress()*100, j.GetPhase()))
		}
		agent := dash(j.GetAgentName())
		if j.GetAttempt() > 1 {
			agent += fmt.Sprintf(" (#%d)", j.GetAttempt())
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.GetId(), j.GetPolicy(), j.GetModel(), retrainStateName(j.GetState()),
			dash(j.GetTrigger()), agent, prog, retrainResultShort(j), fmtTime(j.GetCreateTime()), retrainTook(j, now))
	}
	t.Flush()
}

// retrainTook is how long a job ran (or has been running), from its start
// (or creation) to its end (or now).
func retrainTook(j *droverv1.RetrainJob, now time.Time) string {
	from := j.GetStartTime()
	if from == nil {
		from = j.GetCreateTime()
	}
	if from == nil {
		return "-"
	}
	to := now
	if j.GetEndTime() != nil {
		to = j.GetEndTime().AsTime()
	}
	return humanDuration(to.Sub(from.AsTime()))
}

// retrainResultShort is a job's result in a few words.
func retrainResultShort(j *droverv1.RetrainJob) string {
	switch j.GetState() {
	case droverv1.RetrainJobState_RETRAIN_JOB_STATE_FAILED, droverv1.RetrainJobState_RETRAIN_JOB_STATE_CANCELLED:
		return dash(truncateText(j.GetMessage(), 48))
	}
	switch j.GetOutcome() {
	case droverv1.RetrainOutcome_RETRAIN_OUTCOME_WON:
		s := "won"
		if j.GetVersion() != 0 {
			s += fmt.Sprintf(" → v%d", j.GetVersion())
		}
		if j.GetChampionVersion() != 0 && j.GetMetric() != "" {
			s += fmt.Sprintf(" (%s %.4g vs %.4g)", j.GetMetric(), j.GetCandidateScore(), j.GetChampionScore())
		}
		return s
	case droverv1.RetrainOutcome_RETRAIN_OUTCOME_LOST:
		return fmt.Sprintf("lost (%s %.4g vs %.4g)", j.GetMetric(), j.GetCandidateScore(), j.GetChampionScore())
	}
	return "-"
}

func truncateText(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func (a *app) retrainJobsShow() *cobra.Command {
	return &cobra.Command{
		Use:   "show <job>",
		Short: "Show a job: trigger, champion, data set and its validation, agent and attempts, progress, result, log",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Retrain.GetJob(ctx, &droverv1.GetJobRequest{Id: args[0], Read: a.read()})
			if err != nil {
				return err
			}
			j := resp.GetJob()
			return a.emit(retrainJobOf(j), func(w io.Writer) { printRetrainJob(w, j, time.Now()) })
		},
	}
}

// printRetrainJob prints one job in full.
func printRetrainJob(w io.Writer, j *droverv1.RetrainJob, now time.Time) {
	t := newTable(w)
	state := retrainStateName(j.GetState())
	if o := retrainOutcomeName(j.GetOutcome()); o != "" {
		state += ", " + o
	}
	fmt.Fprintf(t, "Job:\t%s (%s)\n", j.GetId(), state)
	fmt.Fprintf(t, "Policy:\t%s, model %s\n", j.GetPolicy(), j.GetModel())
	trig := dash(j.GetTrigger())
	if j.GetTriggerDetail() != "" {
		trig += ": " + j.GetTriggerDetail()
	}
	fmt.Fprintf(t, "Trigger:\t%s\n", trig)
	if j.GetChampionVersion() != 0 {
		fmt.Fprintf(t, "Champion:\t%s:%d\n", j.GetModel(), j.GetChampionVersion())
	} else {
		fmt.Fprintf(t, "Champion:\tnone (the candidate is the first version)\n")
	}
	fmt.Fprintf(t, "Data set:\t%s\n", retrainDatasetText(j))
	if len(j.GetExportAgents()) > 0 || len(j.GetExports()) > 0 {
		fmt.Fprintf(t, "Feedback:\t%s\n", retrainExportsText(j))
	}
	if j.GetAgentName() != "" || j.GetAgentId() != "" || j.GetAttempt() > 0 {
		ag := dash(j.GetAgentName())
		if j.GetAgentId() != "" && j.GetAgentId() != j.GetAgentName() {
			ag += " (" + j.GetAgentId() + ")"
		}
		ag += fmt.Sprintf(", attempt %d of %d", j.GetAttempt(), cmp.Or(j.GetSpec().GetMaxAttempts(), 3))
		if len(j.GetExcludedAgents()) > 0 {
			ag += "; excluded: " + strings.Join(j.GetExcludedAgents(), ", ")
		}
		fmt.Fprintf(t, "Agent:\t%s\n", ag)
	}
	if j.GetPhase() != "" || j.GetProgress() > 0 || j.GetStage() != "" {
		fmt.Fprintf(t, "Progress:\t%s\n", strings.TrimSpace(fmt.Sprintf("%.0f%% %s %s", j.GetProgress()*100, j.GetPhase(), j.GetStage())))
	}
	if len(j.GetMetrics()) > 0 {
		fmt.Fprintf(t, "Metrics:\t%s\n", metricsText(j.GetMetrics()))
	}
	if r := retrainResultText(j); r != "" {
		fmt.Fprintf(t, "Result:\t%s\n", r)
	}
	if res := j.GetResult(); res != nil && (res.GetTrainRows() > 0 || res.GetHoldoutRows() > 0) {
		fmt.Fprintf(t, "Trained:\t%d rows, %d held out%s\n", res.GetTrainRows(), res.GetHoldoutRows(),
			map[bool]string{true: "; params " + kvString(res.GetParams())}[len(res.GetParams()) > 0])
	}
	if j.GetVersion() != 0 {
		fmt.Fprintf(t, "Version:\t%s:%d\n", j.GetModel(), j.GetVersion())
	}
	if j.GetRolloutId() != "" {
		fmt.Fprintf(t, "Rollout:\t%s\n", j.GetRolloutId())
	}
	if j.GetRunId() != "" {
		fmt.Fprintf(t, "Run:\t%s\n", j.GetRunId())
	}
	if j.GetMessage() != "" {
		fmt.Fprintf(t, "Message:\t%s\n", j.GetMessage())
	}
	created := fmtTime(j.GetCreateTime())
	if by := actor(j.GetCreatedBy()).String(); by != "" {
		created += " by " + by
	}
	fmt.Fprintf(t, "Created:\t%s\n", created)
	if j.GetEndTime() != nil {
		fmt.Fprintf(t, "Ended:\t%s, took %s\n", fmtTime(j.GetEndTime()), retrainTook(j, now))
	} else if j.GetStartTime() != nil {
		fmt.Fprintf(t, "Started:\t%s, running for %s\n", fmtTime(j.GetStartTime()), retrainTook(j, now))
	}
	t.Flush()

	if val := j.GetValidation(); val != nil && !val.GetPassed() {
		t = newTable(w)
		fmt.Fprintln(t, "\nFAILED EXPECTATION\tCOLUMN\tDETAIL")
		for _, e := range val.GetExpectations() {
			if !e.GetPassed() {
				fmt.Fprintf(t, "%s\t%s\t%s\n", e.GetName(), dash(e.GetColumn()), dash(e.GetDetail()))
			}
		}
		t.Flush()
	}
	if ats := j.GetAttempts(); len(ats) > 0 {
		t = newTable(w)
		fmt.Fprintln(t, "\nATTEMPT\tAGENT\tSTARTED\tTOOK\tOUTCOME")
		for _, at := range ats {
			took := "-"
			if at.GetStartTime() != nil {
				end := now
				if at.GetEndTime() != nil {
					end = at.GetEndTime().AsTime()
				}
				took = humanDuration(end.Sub(at.GetStartTime().AsTime()))
			}
			outcome := at.GetOutcome()
			if outcome == "" && at.GetEndTime() == nil {
				outcome = "running"
			}
			fmt.Fprintf(t, "%d\t%s\t%s\t%s\t%s\n", at.GetAttempt(), dash(at.GetAgentName()), fmtTime(at.GetStartTime()), took, dash(outcome))
		}
		t.Flush()
	}
	if lines := j.GetLog(); len(lines) > 0 {
		fmt.Fprintf(w, "\nLog (the last %d lines):\n", len(lines))
		for _, l := range lines {
			fmt.Fprintln(w, "  "+l)
		}
	}
}

func retrainDatasetText(j *droverv1.RetrainJob) string {
	if j.GetDataset() == "" {
		switch j.GetState() {
		case droverv1.RetrainJobState_RETRAIN_JOB_STATE_PENDING, droverv1.RetrainJobState_RETRAIN_JOB_STATE_COLLECTING:
			return "being assembled"
		}
		return "-"
	}
	s := j.GetDataset()
	if j.GetDatasetVersion() != 0 {
		s += fmt.Sprintf(":%d", j.GetDatasetVersion())
	}
	if val := j.GetValidation(); val != nil {
		failed := 0
		for _, e := range val.GetExpectations() {
			if !e.GetPassed() {
				failed++
			}
		}
		s += fmt.Sprintf(", %d rows", val.GetRows())
		if val.GetPassed() {
			s += fmt.Sprintf(", valid (%d expectations passed)", len(val.GetExpectations()))
		} else {
			s += fmt.Sprintf(", INVALID: %d of %d expectations failed (below)", failed, len(val.GetExpectations()))
		}
	}
	return s
}

// retrainExportsText is what the agents asked for labelled rows handed in.
func retrainExportsText(j *droverv1.RetrainJob) string {
	byAgent := map[string]*droverv1.LabelledExport{}
	for _, e := range j.GetExports() {
		byAgent[e.GetAgentId()] = e
	}
	var rows uint64
	var parts []string
	seen := map[string]bool{}
	describe := func(id string, e *droverv1.LabelledExport) string {
		switch {
		case e == nil && j.GetState() == droverv1.RetrainJobState_RETRAIN_JOB_STATE_COLLECTING:
			return id + " waiting"
		case e == nil:
			return id + " none (not in time)"
		case e.GetError() != "":
			return fmt.Sprintf("%s none (%s)", id, e.GetError())
		}
		rows += e.GetRows()
		return fmt.Sprintf("%s %d rows", id, e.GetRows())
	}
	for _, id := range j.GetExportAgents() {
		seen[id] = true
		parts = append(parts, describe(id, byAgent[id]))
	}
	for _, e := range j.GetExports() {
		if !seen[e.GetAgentId()] {
			parts = append(parts, describe(e.GetAgentId(), e))
		}
	}
	return fmt.Sprintf("%d labelled rows from %d of %d agents: %s", rows, len(j.GetExports()), max(len(j.GetExportAgents()), len(j.GetExports())), strings.Join(parts, "; "))
}

// retrainResultText is the champion/challenger verdict.
func retrainResultText(j *droverv1.RetrainJob) string {
	switch j.GetOutcome() {
	case droverv1.RetrainOutcome_RETRAIN_OUTCOME_WON, droverv1.RetrainOutcome_RETRAIN_OUTCOME_LOST:
	default:
		return ""
	}
	outcome := "won: registered"
	if j.GetOutcome() == droverv1.RetrainOutcome_RETRAIN_OUTCOME_LOST {
		outcome = "lost: recorded, not registered"
	}
	if j.GetChampionVersion() == 0 {
		return fmt.Sprintf("%s %.4g, no champion to beat: %s", dash(j.GetMetric()), j.GetCandidateScore(), outcome)
	}
	dir := "higher"
	if training.LowerIsBetter(j.GetMetric()) {
		dir = "lower"
	}
	return fmt.Sprintf("%s: candidate %.4g, champion %.4g (margin %g, %s is better): %s",
		dash(j.GetMetric()), j.GetCandidateScore(), j.GetChampionScore(), j.GetMargin(), dir, outcome)
}

func (a *app) retrainJobsWatch() *cobra.Command {
	return &cobra.Command{
		Use:   "watch <job>",
		Short: "Follow a job until it ends: progress and new log lines (JSON lines with --json); fails if the job does",
		Long: `Follow a job until it ends. On a terminal: new log lines as they arrive, above a
status line with a progress bar, the phase and the stage. Otherwise: a line
per change, and the new log lines. With --json: the job as a JSON object on
one line each time it changes. Exits 0 when the job succeeded (whether its
candidate won or lost), 1 when it failed or was cancelled.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return a.watchRetrainJob(cmd, args[0]) },
	}
}

// watchRetrainJob follows a job until it ends, reconnecting when the
// stream is cut (a hub node stopping ends its streams) before it does.
func (a *app) watchRetrainJob(cmd *cobra.Command, id string) error {
	c, err := a.hub()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	var con *jobConsole
	if !a.json {
		con = newJobConsole(a.stdout)
	}
	var last *droverv1.RetrainJob
	for failures := 0; ; {
		stream, err := c.Retrain.WatchJob(ctx, &droverv1.WatchJobRequest{Id: id})
		if err == nil {
			for {
				msg, rerr := stream.Receive()
				if rerr != nil {
					err = rerr
					break
				}
				failures = 0
				last = msg.GetJob()
				if a.json {
					if err := a.printJSONLine(retrainJobOf(last)); err != nil {
						_ = stream.Close()
						return err
					}
				} else {
					con.update(last)
				}
				if retrainJobEnded(last.GetState()) {
					break
				}
			}
			_ = stream.Close()
		}
		if retrainJobEnded(last.GetState()) {
			break
		}
		// Cut short: try again unless the hub refused outright.
		if !errors.Is(err, io.EOF) && connect.CodeOf(err) != connect.CodeUnavailable {
			if con != nil {
				con.stop()
			}
			return err
		}
		if failures++; failures > 5 {
			if con != nil {
				con.stop()
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("job %s: the hub ended the stream before the job ended", id)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(failures) * time.Second):
		}
	}
	if con != nil {
		con.finish(last)
	}
	return retrainJobError(last)
}

// retrainJobError is the error a watch ends with: nil when the job
// succeeded, whatever its outcome.
func retrainJobError(j *droverv1.RetrainJob) error {
	switch j.GetState() {
	case droverv1.RetrainJobState_RETRAIN_JOB_STATE_FAILED:
		return fmt.Errorf("job %s failed: %s", j.GetId(), dash(j.GetMessage()))
	case droverv1.RetrainJobState_RETRAIN_JOB_STATE_CANCELLED:
		if msg := j.GetMessage(); strings.HasPrefix(msg, "cancelled") {
			return fmt.Errorf("job %s %s", j.GetId(), msg)
		}
		return fmt.Errorf("job %s was cancelled: %s", j.GetId(), dash(j.GetMessage()))
	}
	return nil
}

// jobConsole shows a watched job. On a terminal: new log lines, and
// changes of state, above a status line that is redrawn below them.
// Otherwise: a timestamped line whenever what it would show changes, and
// the new log lines indented beneath.
type jobConsole struct {
	w     io.Writer
	tty   bool
	width int // of the bar
	now   func() time.Time

	prev     *droverv1.RetrainJob
	lastLine string // off a terminal: the last status printed
	drawn    bool   // on a terminal: the status line is on the screen
}

func newJobConsole(w io.Writer) *jobConsole {
	f, ok := w.(*os.File)
	return &jobConsole{w: w, tty: ok && term.IsTerminal(int(f.Fd())), width: 30, now: time.Now}
}

// update shows a new state of the job.
func (c *jobConsole) update(j *droverv1.RetrainJob) {
	var prevLog []string
	if c.prev != nil {
		prevLog = c.prev.GetLog()
	}
	fresh := newLogLines(prevLog, j.GetLog())
	if c.tty {
		if c.drawn {
			fmt.Fprint(c.w, "\r\x1b[K")
			c.drawn = false
		}
		if c.prev == nil {
			fmt.Fprintf(c.w, "Job %s: %s retrains %s (%s)\n", j.GetId(), j.GetPolicy(), j.GetModel(), retrainTriggerText(j))
		}
		for _, l := range fresh {
			fmt.Fprintln(c.w, l)
		}
		if c.prev == nil || c.prev.GetState() != j.GetState() || c.prev.GetAttempt() != j.GetAttempt() {
			fmt.Fprintf(c.w, "%s  %s\n", c.stamp(j), retrainStatusText(j, false, 0))
		}
		if !retrainJobEnded(j.GetState()) {
			fmt.Fprint(c.w, "\r"+retrainStatusText(j, true, c.width)+"\x1b[K")
			c.drawn = true
		}
	} else {
		line := retrainStatusText(j, false, 0)
		if c.prev == nil {
			fmt.Fprintf(c.w, "Job %s: %s retrains %s (%s)\n", j.GetId(), j.GetPolicy(), j.GetModel(), retrainTriggerText(j))
		}
		for _, l := range fresh {
			fmt.Fprintln(c.w, "          "+l)
		}
		if line != c.lastLine {
			fmt.Fprintf(c.w, "%s  %s\n", c.stamp(j), line)
			c.lastLine = line
		}
	}
	c.prev = j
}

// stamp is when the job last changed (or now), as a clock time.
func (c *jobConsole) stamp(j *droverv1.RetrainJob) string {
	t := c.now()
	if j.GetUpdateTime() != nil {
		t = j.GetUpdateTime().AsTime()
	}
	return t.Local().Format("15:04:05")
}

// stop ends the status line, if one is drawn.
func (c *jobConsole) stop() {
	if c.drawn {
		fmt.Fprintln(c.w)
		c.drawn = false
	}
}

// finish ends the watch with a line on how the job ended.
func (c *jobConsole) finish(j *droverv1.RetrainJob) {
	c.stop()
	if j == nil {
		return
	}
	switch j.GetState() {
	case droverv1.RetrainJobState_RETRAIN_JOB_STATE_SUCCEEDED:
		s := fmt.Sprintf("Job %s succeeded", j.GetId())
		if r := retrainResultText(j); r != "" {
			s += ": " + r
		}
		if j.GetVersion() != 0 {
			s += fmt.Sprintf("; %s:%d", j.GetModel(), j.GetVersion())
		}
		if j.GetRolloutId() != "" {
			s += "; rollout " + j.GetRolloutId() + " (drover rollouts watch " + j.GetRolloutId() + ")"
		}
		fmt.Fprintln(c.w, s)
	}
	// A failed or cancelled job is reported by the error the watch returns.
}

func retrainTriggerText(j *droverv1.RetrainJob) string {
	s := dash(j.GetTrigger())
	if j.GetTriggerDetail() != "" {
		s += ": " + j.GetTriggerDetail()
	}
	return s
}

// retrainStatusText is a job's status in one line; with bar, a progress
// bar of that width while it trains.
func retrainStatusText(j *droverv1.RetrainJob, bar bool, width int) string {
	state := retrainStateName(j.GetState())
	parts := []string{state}
	switch j.GetState() {
	case droverv1.RetrainJobState_RETRAIN_JOB_STATE_PENDING:
		parts = append(parts, "assembling the data set")
	case droverv1.RetrainJobState_RETRAIN_JOB_STATE_COLLECTING:
		parts = append(parts, fmt.Sprintf("labelled rows from %d of %d agents", len(j.GetExports()), len(j.GetExportAgents())))
	case droverv1.RetrainJobState_RETRAIN_JOB_STATE_QUEUED:
		s := "waiting for an agent"
		if j.GetAttempt() > 0 {
			s += fmt.Sprintf(" (attempt %d next)", j.GetAttempt()+1)
		}
		parts = append(parts, s)
	case droverv1.RetrainJobState_RETRAIN_JOB_STATE_RUNNING, droverv1.RetrainJobState_RETRAIN_JOB_STATE_FINISHING:
		on := "on " + dash(j.GetAgentName())
		if j.GetAttempt() > 1 {
			on += fmt.Sprintf(" (attempt %d)", j.GetAttempt())
		}
		parts = append(parts, on)
		frac := min(max(j.GetProgress(), 0), 1)
		if bar {
			full := int(math.Round(frac * float64(width)))
			b := strings.Repeat("=", full)
			if full < width {
				b += ">" + strings.Repeat(" ", width-full-1)
			}
			parts = append(parts, "["+b+"]")
		}
		if bar {
			parts = append(parts, fmt.Sprintf("%3.0f%%", frac*100))
		} else {
			parts = append(parts, fmt.Sprintf("%.0f%%", frac*100))
		}
		if j.GetPhase() != "" {
			parts = append(parts, j.GetPhase())
		}
		if j.GetStage() != "" {
			parts = append(parts, j.GetStage())
		}
		if len(j.GetMetrics()) > 0 {
			parts = append(parts, metricsText(j.GetMetrics()))
		}
	default:
		if o := retrainOutcomeName(j.GetOutcome()); o != "" {
			parts = append(parts, o)
		}
		if j.GetMessage() != "" {
			parts = append(parts, j.GetMessage())
		}
	}
	return strings.Join(parts, "  ")
}

// newLogLines returns the lines of a log tail that were not in the tail
// before it. The tail keeps the newest lines, so the old one's end
// overlaps the new one's start: the longest such overlap is what was
// seen. No overlap at all (the tail moved on by more than its length, or
// a new attempt began a new log) means every line is new.
func newLogLines(prev, cur []string) []string {
	for k := min(len(prev), len(cur)); k > 0; k-- {
		if equalLines(prev[len(prev)-k:], cur[:k]) {
			return cur[k:]
		}
	}
	return cur
}

func equalLines(a, b []string) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (a *app) retrainJobsCancel() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use: "cancel <job>", Short: "Cancel a job that has not ended (its agent kills the training)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Retrain.CancelJob(ctx, &droverv1.CancelJobRequest{Id: args[0], Reason: reason})
			if err != nil {
				return err
			}
			j := resp.GetJob()
			return a.emit(retrainJobOf(j), func(w io.Writer) {
				fmt.Fprintf(w, "job %s: %s\n", j.GetId(), retrainStateName(j.GetState()))
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept in the audit trail and the job)")
	return cmd
}

func (a *app) retrainJobsLogs() *cobra.Command {
	return &cobra.Command{
		Use: "logs <job>", Short: "Print a job's log: the newest lines its agent streamed", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Retrain.GetJob(ctx, &droverv1.GetJobRequest{Id: args[0], Read: a.read()})
			if err != nil {
				return err
			}
			j := resp.GetJob()
			out := map[string]any{"id": j.GetId(), "state": retrainStateName(j.GetState()), "log": nonNilSlice(j.GetLog())}
			return a.emit(out, func(w io.Writer) {
				if len(j.GetLog()) == 0 {
					fmt.Fprintf(a.stderr, "job %s (%s) has no log lines\n", j.GetId(), retrainStateName(j.GetState()))
				}
				for _, l := range j.GetLog() {
					fmt.Fprintln(w, l)
				}
			})
		},
	}
}

// ---- helpers ----

// cooldownText is a policy's cool-down: unset is the default, zero none.
func cooldownText(p *droverv1.RetrainPolicy) string {
	if p.GetCooldown() != nil && p.GetCooldown().AsDuration() == 0 {
		return "none"
	}
	return durationOr(p.GetCooldown().AsDuration(), p.GetCooldown() != nil, "1h")
}

// durationOr is a duration humanely, or def (marked the default) when it
// was not set.
func durationOr(d time.Duration, set bool, def string) string {
	if !set || d == 0 {
		return def + " (default)"
	}
	return humanDuration(d)
}

// humanDuration writes a duration in at most two units: "350ms", "42s",
// "3m20s", "6h", "1h30m", "2d4h".
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	switch {
	case d == 0:
		return "0s"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Round(time.Millisecond)/time.Millisecond)
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second))
	}
	two := func(a int64, ua string, b int64, ub string) string {
		if b == 0 {
			return fmt.Sprintf("%d%s", a, ua)
		}
		return fmt.Sprintf("%d%s%d%s", a, ua, b, ub)
	}
	switch {
	case d < time.Hour:
		d = d.Round(time.Second)
		return two(int64(d/time.Minute), "m", int64(d%time.Minute/time.Second), "s")
	case d < 24*time.Hour:
		d = d.Round(time.Minute)
		if d >= 24*time.Hour {
			return "1d"
		}
		return two(int64(d/time.Hour), "h", int64(d%time.Hour/time.Minute), "m")
	}
	d = d.Round(time.Hour)
	return two(int64(d/(24*time.Hour)), "d", int64(d%(24*time.Hour)/time.Hour), "h")
}

// humanAgo is how long before now t was: "5m ago", or "in 5m".
func humanAgo(t, now time.Time) string {
	if t.After(now) {
		return "in " + humanDuration(t.Sub(now))
	}
	return humanDuration(now.Sub(t)) + " ago"
}
