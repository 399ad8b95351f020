package cli

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

func (a *app) runsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "runs",
		Short: "Training runs: parameters, metrics over steps, lineage (drover train records them)",
	}
	cmd.AddCommand(a.runsList(), a.runsShow(), a.runsCompare())
	return cmd
}

// runView is a run as the CLI prints it.
type runView struct {
	ID             string             `json:"id"`
	Model          string             `json:"model"`
	State          string             `json:"state"`
	Runner         string             `json:"runner"`
	Params         map[string]string  `json:"params"`
	Tags           map[string]string  `json:"tags"`
	Metrics        map[string]float64 `json:"metrics"`
	DatasetDigest  string             `json:"dataset_digest,omitempty"`
	Dataset        string             `json:"dataset,omitempty"`
	DatasetVersion uint64             `json:"dataset_version,omitempty"`
	Parent         uint64             `json:"parent_version,omitempty"`
	Artifact       string             `json:"artifact,omitempty"`
	Version        uint64             `json:"version,omitempty"`
	Message        string             `json:"message,omitempty"`
	Start          *time.Time         `json:"start_time"`
	End            *time.Time         `json:"end_time,omitempty"`
	History        []pointView        `json:"history,omitempty"`
}

type pointView struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Step  int64   `json:"step"`
}

func runOf(r *droverv1.Run) runView {
	v := runView{ID: r.GetId(), Model: r.GetModel(), State: enumName(r.GetState().String(), "RUN_STATE_"), Runner: r.GetRunner(),
		Params: nonNil(r.GetParams()), Tags: nonNil(r.GetTags()), Metrics: nonNil(r.GetMetrics()),
		DatasetDigest: r.GetDatasetDigest(), Dataset: r.GetDataset(), DatasetVersion: r.GetDatasetVersion(), Parent: r.GetParentVersion(),
		Artifact: r.GetArtifact().GetDigest(), Version: r.GetVersion(), Message: r.GetMessage(), Start: ts(r.GetStartTime()), End: ts(r.GetEndTime())}
	for _, p := range r.GetHistory() {
		v.History = append(v.History, pointView{Name: p.GetName(), Value: p.GetValue(), Step: p.GetStep()})
	}
	return v
}

func (a *app) runsList() *cobra.Command {
	var limit uint32
	cmd := &cobra.Command{
		Use: "list [model]", Short: "List training runs, newest first", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			model := ""
			if len(args) == 1 {
				model = args[0]
			}
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Runs.ListRuns(ctx, &droverv1.ListRunsRequest{Model: model, Limit: limit, Read: a.read()})
			if err != nil {
				return err
			}
			out := struct {
				Runs []runView `json:"runs"`
			}{Runs: []runView{}}
			for _, r := range resp.GetRuns() {
				out.Runs = append(out.Runs, runOf(r))
			}
			return a.emit(out, func(w io.Writer) {
				t := newTable(w)
				fmt.Fprintln(t, "ID\tMODEL\tSTATE\tRUNNER\tVERSION\tSTARTED\tMETRICS")
				for _, v := range out.Runs {
					ver := "-"
					if v.Version != 0 {
						ver = fmt.Sprint(v.Version)
					}
					fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.Model, v.State, dash(v.Runner), ver, fmtTimeP(v.Start), metricsText(v.Metrics))
				}
				t.Flush()
			})
		},
	}
	cmd.Flags().Uint32Var(&limit, "limit", 100, "at most this many, the newest")
	return cmd
}

// metricsText is a few metrics, sorted by name.
func metricsText(m map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%.4g", k, m[k]))
	}
	return dash(strings.Join(parts, " "))
}

func (a *app) runsShow() *cobra.Command {
	return &cobra.Command{
		Use: "show <run>", Short: "Show a run: parameters, tags, lineage, final metrics and their history", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Runs.GetRun(ctx, &droverv1.GetRunRequest{Id: args[0], Read: a.read()})
			if err != nil {
				return err
			}
			v := runOf(resp.GetRun())
			return a.emit(v, func(w io.Writer) {
				t := newTable(w)
				fmt.Fprintf(t, "Run:\t%s (%s)\n", v.ID, v.State)
				fmt.Fprintf(t, "Model:\t%s, runner %s\n", v.Model, dash(v.Runner))
				fmt.Fprintf(t, "Data set:\t%s\n", dash(strings.TrimSpace(fmt.Sprintf("%s %s", v.Dataset, v.DatasetDigest))))
				if v.Parent != 0 {
					fmt.Fprintf(t, "Parent:\t%s:%d\n", v.Model, v.Parent)
				}
				if v.Version != 0 {
					fmt.Fprintf(t, "Registered:\t%s:%d (%s)\n", v.Model, v.Version, v.Artifact)
				}
				fmt.Fprintf(t, "Params:\t%s\n", dash(kvString(v.Params)))
				fmt.Fprintf(t, "Tags:\t%s\n", dash(kvString(v.Tags)))
				fmt.Fprintf(t, "Metrics:\t%s\n", metricsText(v.Metrics))
				fmt.Fprintf(t, "Time:\t%s to %s\n", fmtTimeP(v.Start), fmtTimeP(v.End))
				if v.Message != "" {
					fmt.Fprintf(t, "Message:\t%s\n", v.Message)
				}
				t.Flush()
				if len(v.History) > 0 {
					t = newTable(w)
					fmt.Fprintln(t, "\nSTEP\tMETRIC\tVALUE")
					for _, p := range v.History[max(0, len(v.History)-20):] {
						fmt.Fprintf(t, "%d\t%s\t%.6g\n", p.Step, p.Name, p.Value)
					}
					t.Flush()
				}
			})
		},
	}
}

func (a *app) runsCompare() *cobra.Command {
	return &cobra.Command{
		Use: "compare <run> <run>...", Short: "Compare runs side by side: parameters and final metrics", Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			var views []runView
			for _, id := range args {
				resp, err := c.Runs.GetRun(ctx, &droverv1.GetRunRequest{Id: id, Read: a.read()})
				if err != nil {
					return err
				}
				v := runOf(resp.GetRun())
				v.History = nil
				views = append(views, v)
			}
			out := struct {
				Runs []runView `json:"runs"`
			}{views}
			return a.emit(out, func(w io.Writer) {
				keys := map[string]bool{}
				metrics := map[string]bool{}
				for _, v := range views {
					for k := range v.Params {
						keys[k] = true
					}
					for k := range v.Metrics {
						metrics[k] = true
					}
				}
				t := newTable(w)
				head := []string{""}
				for _, v := range views {
					head = append(head, v.ID)
				}
				fmt.Fprintln(t, strings.Join(head, "\t"))
				row := func(name string, cell func(runView) string) {
					cells := []string{name}
					for _, v := range views {
						cells = append(cells, cell(v))
					}
					fmt.Fprintln(t, strings.Join(cells, "\t"))
				}
				row("state", func(v runView) string { return v.State })
				row("version", func(v runView) string {
					if v.Version == 0 {
						return "-"
					}
					return fmt.Sprint(v.Version)
				})
				for _, k := range slices.Sorted(maps.Keys(keys)) {
					row("param "+k, func(v runView) string { return dash(v.Params[k]) })
				}
				for _, k := range slices.Sorted(maps.Keys(metrics)) {
					row(k, func(v runView) string {
						if x, ok := v.Metrics[k]; ok {
							return fmt.Sprintf("%.4g", x)
						}
						return "-"
					})
				}
				t.Flush()
			})
		},
	}
}
