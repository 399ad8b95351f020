package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/internal/demo"
)

func (a *app) demoCommand() *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Show the whole product working on this machine: a hub, three agents, drift, retraining and rollouts",
		Long: `demo runs the whole loop on this machine with nothing else installed, in 20-25
seconds on two cores, in a temporary directory:

  1. starts a one-node hub and three agents (two with simulated DGX H100s, one
     CPU-only) as child processes of this binary, each logging to a file;
  2. trains churn:1 on 150 rows of the bundled customer-churn data, with a heavy
     penalty (a weak first model), registers it with its schema and reference
     profile, and puts a retraining policy;
  3. rolls churn:1 out to the three agents;
  4. sends them predictions (the Open Inference Protocol) and feedback labels;
  5. shifts the customers until the fleet's drift verdict turns "drift", and
     draws the most drifted feature against its reference;
  6. the policy starts a retraining job, which runs on a GPU agent; the
     candidate beats churn:1 on the same hold-out and is registered;
  7. the winner goes out as a 50% canary judged by its error rate and accuracy,
     and is promoted to every agent;
  8. a deliberately broken version (labels flipped) is rolled out with an
     accuracy gate, which rolls it back.

It ends with a summary; --json prints the summary as one JSON object instead
(progress then goes to stderr, and only on a terminal). Without --keep every
child is stopped and the directory removed at the end, on failure (after the
last lines of the relevant logs are shown) and on Ctrl-C. With --keep the hub
and agents keep running after the summary, with the commands to reach them
(DROVER_ADDR, DROVER_TOKEN), until Ctrl-C; the directory is kept.
See docs/demo.md.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("demo takes no arguments (got %q)", args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return a.runDemo(cmd, keep) },
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "leave the hub and agents running after the summary, until Ctrl-C, and keep the directory")
	return cmd
}

func (a *app) runDemo(cmd *cobra.Command, keep bool) error {
	// Ctrl-C stops the demo, which stops its children and removes its
	// directory; a second Ctrl-C exits at once (the kernel then stops the
	// children, the directory stays).
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)

	// The story goes to stdout, or with --json to stderr if that is a
	// terminal, and nowhere otherwise.
	var out io.Writer = a.stdout
	if a.json {
		out = nil
		if demoIsTerminal(a.stderr) {
			out = a.stderr
		}
	}
	con := newDemoConsole(out)
	con.intro(keep)
	res, err := demo.Run(ctx, demo.Options{Keep: keep, Events: con.event})
	con.clearStatus()
	sum := res.Summary
	if err != nil {
		var de *demo.Error
		if errors.As(err, &de) && len(de.Logs) > 0 {
			printDemoLogs(a.stderr, de.Logs, sum.Kept)
		}
		if a.json {
			_ = a.printJSON(sum)
		}
		if res.Cluster != nil {
			fmt.Fprintf(a.stderr, "error: %v\n", err)
			a.keepDemoRunning(ctx, res.Cluster, a.stderr)
		}
		return err
	}
	if a.json {
		if err := a.printJSON(sum); err != nil {
			return err
		}
	} else {
		printDemoSummary(a.stdout, sum)
	}
	if res.Cluster != nil {
		w := a.stdout
		if a.json {
			w = a.stderr
		}
		a.keepDemoRunning(ctx, res.Cluster, w)
	}
	return nil
}

// keepDemoRunning tells how to reach the cluster the demo left running, waits
// for Ctrl-C (or for every child to exit) and stops it.
func (a *app) keepDemoRunning(ctx context.Context, c *demo.Cluster, w io.Writer) {
	fmt.Fprintf(w, "\nThe hub and agents keep running (--keep). In another terminal:\n\n")
	fmt.Fprintf(w, "  export %s=%s %s=%s\n", client.EnvAddr, c.HubAddr, client.EnvToken, c.Token)
	fmt.Fprintf(w, "  drover agents list\n  drover models show churn\n  drover drift show churn\n  drover rollouts list\n  drover retrain jobs list\n")
	if len(c.Agents) > 0 {
		fmt.Fprintf(w, "  curl -s http://%s/v2/models/churn\n", c.Agents[0].Addr)
	}
	fmt.Fprintf(w, "\n(drover is this binary: go build -o drover ./cmd/drover, or go run ./cmd/drover in its place.)\n\n")
	t := newTable(w)
	fmt.Fprintf(t, "  %s\tpid %d\t%s\t%s\n", c.Hub.Name, c.Hub.PID, c.Hub.Addr, c.Hub.Log)
	for _, p := range c.Agents {
		fmt.Fprintf(t, "  %s\tpid %d\t%s\t%s\n", p.Name, p.PID, p.Addr, p.Log)
	}
	t.Flush()
	var pids []string
	for _, p := range c.PIDs() {
		pids = append(pids, fmt.Sprint(p))
	}
	fmt.Fprintf(w, "\nCtrl-C here stops them (or: kill %s). Their data and logs stay in %s.\n", strings.Join(pids, " "), c.Dir)
	c.Wait(ctx)
	fmt.Fprintln(w, "stopping the hub and agents…")
	c.Stop()
	fmt.Fprintf(w, "stopped; data and logs are in %s (rm -rf it when done)\n", c.Dir)
}

func demoIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// demoConsole draws the demo's events: a line per stage and per thing
// that happened, and on a terminal a status line, redrawn in place, of
// what it waits for.
type demoConsole struct {
	mu     sync.Mutex
	w      io.Writer // nil: silent
	tty    bool
	shown  bool // a status line is on the screen
	frame  int
	width  int
	stages int
}

func newDemoConsole(w io.Writer) *demoConsole {
	c := &demoConsole{w: w, width: 100}
	if w != nil && demoIsTerminal(w) {
		c.tty = true
		if f, ok := w.(*os.File); ok {
			if width, _, err := term.GetSize(int(f.Fd())); err == nil && width > 20 {
				c.width = width
			}
		}
	}
	return c
}

func (c *demoConsole) intro(keep bool) {
	if c.w == nil {
		return
	}
	fmt.Fprintln(c.w, "drover demo: a hub and three agents on this machine, and the churn model's whole life —")
	fmt.Fprintln(c.w, "training, rollout, drift, retraining on a GPU agent, a canary, and a bad version rolled back.")
	if !keep {
		fmt.Fprintln(c.w, "(Everything stops and is removed at the end; --keep leaves it running. Ctrl-C stops it.)")
	}
}

var demoSpinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

func demoStamp(d time.Duration) string { return fmt.Sprintf("[%5.1fs]", d.Seconds()) }

// event draws one event.
func (c *demoConsole) event(e demo.Event) {
	if c.w == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	at := demoStamp(e.Elapsed)
	switch e.Kind {
	case demo.Status:
		if !c.tty {
			return
		}
		c.frame++
		line := fmt.Sprintf("%s    %s %s", at, demoSpinner[c.frame%len(demoSpinner)], e.Text)
		if e.HasFraction {
			line = fmt.Sprintf("%s    %s %s %s", at, demoSpinner[c.frame%len(demoSpinner)], demoBar(e.Fraction, 20), e.Text)
		}
		if r := []rune(line); len(r) > c.width-1 {
			line = string(r[:c.width-2]) + "…"
		}
		fmt.Fprint(c.w, "\r"+line+"\x1b[K")
		c.shown = true
		return
	case demo.StageStart:
		c.clear()
		c.stages = e.Stages
		fmt.Fprintf(c.w, "\n%s ━━ %d/%d %s\n", at, e.Stage, e.Stages, e.Title)
	case demo.StageEnd:
		c.clear()
		fmt.Fprintf(c.w, "%s    ✓ done in %.1fs\n", at, e.Took.Seconds())
	case demo.Note:
		c.clear()
		if e.Stage == 0 {
			fmt.Fprintf(c.w, "%s %s\n", at, e.Text)
		} else {
			fmt.Fprintf(c.w, "%s    %s\n", at, e.Text)
		}
	case demo.DriftView:
		c.clear()
		fmt.Fprintf(c.w, "%s    %s\n", at, e.Text)
		if e.Feature != "" && e.Drift != nil {
			c.histogram(e)
		}
	case demo.JobChange:
		c.clear()
		fmt.Fprintf(c.w, "%s    job %s: %s\n", at, e.Job.GetId(), e.Text)
	case demo.RolloutChange:
		c.clear()
		fmt.Fprintf(c.w, "%s    rollout %s: %s\n", at, e.Rollout.GetId(), e.Text)
	case demo.Judged:
		c.clear()
		mark := map[string]string{"pass": "✓", "fail": "✗"}[e.Judgement.GetResult()]
		if mark == "" {
			mark = "…"
		}
		fmt.Fprintf(c.w, "%s      %s %s\n", at, mark, e.Text)
	}
}

// histogram draws the most drifted feature, reference against current,
// as `drover drift show` does.
func (c *demoConsole) histogram(e demo.Event) {
	v := driftViewOf(e.Drift)
	for _, f := range v.Features {
		if f.Name != e.Feature || f.Histogram == nil {
			continue
		}
		fmt.Fprintf(c.w, "\n           the most drifted feature, %s (%s %s %.3g, threshold %.3g; %d rows against %d in the reference):\n",
			f.Name, f.Method, map[bool]string{true: "p-value", false: "score"}[demoIsPValue(f.Method)], f.Score, f.Threshold, f.CurrentRows, f.ReferenceRows)
		// Bins empty on both sides (no "other" or unseen category) say nothing.
		var labels []string
		var ref, cur []uint64
		for i, l := range f.Histogram.Labels {
			if f.Histogram.Reference[i] > 0 || f.Histogram.Current[i] > 0 {
				labels, ref, cur = append(labels, l), append(ref, f.Histogram.Reference[i]), append(cur, f.Histogram.Current[i])
			}
		}
		for _, line := range strings.Split(strings.TrimRight(barPairs(labels, ref, cur, 30), "\n"), "\n") {
			fmt.Fprintf(c.w, "         %s\n", line)
		}
		fmt.Fprintln(c.w)
	}
}

func demoIsPValue(method string) bool { return method == "ks" || method == "chi2" || method == "z" }

// demoBar draws a fraction as a bar of width characters.
func demoBar(f float64, width int) string {
	f = math.Max(0, math.Min(1, f))
	full := int(math.Round(f * float64(width)))
	s := strings.Repeat("=", full)
	if full < width {
		s += ">" + strings.Repeat(" ", width-full-1)
	}
	return fmt.Sprintf("[%s] %3.0f%%", s, 100*f)
}

// clear removes the status line, if one is drawn (the lock held).
func (c *demoConsole) clear() {
	if c.shown {
		fmt.Fprint(c.w, "\r\x1b[K")
		c.shown = false
	}
}

// clearStatus removes the status line, if one is drawn.
func (c *demoConsole) clearStatus() {
	if c.w == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clear()
}

// printDemoLogs shows the end of the logs that explain a failure.
func printDemoLogs(w io.Writer, logs []demo.LogTail, kept bool) {
	for _, l := range logs {
		where := l.Path
		if !kept {
			where += ", removed with the directory"
		}
		fmt.Fprintf(w, "\n----- the last lines of %s's log (%s):\n", l.Name, where)
		for _, line := range l.Lines {
			fmt.Fprintln(w, "  "+line)
		}
	}
	fmt.Fprintln(w)
}

// printDemoSummary prints the demo's summary.
func printDemoSummary(w io.Writer, s demo.Summary) {
	fmt.Fprintf(w, "\nSummary — the whole loop in %.1fs\n\n", s.DurationSeconds)
	t := newTable(w)
	fmt.Fprintln(t, "VERSION\tSTATE\tACC ON ITS HOLD-OUT\tLIVE ACC (REFERENCE / DRIFTED CUSTOMERS)\tORIGIN")
	acc := func(p *float64, rows int) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprintf("%.3f (%s)", *p, demo.Thousands(rows))
	}
	for _, v := range s.Versions {
		h := "-"
		if v.HoldoutAccuracy != nil {
			h = fmt.Sprintf("%.3f", *v.HoldoutAccuracy)
		}
		fmt.Fprintf(t, "churn:%d\t%s\t%s\t%s / %s\t%s\n", v.Version, v.State, h, acc(v.LiveAccuracy, v.LiveRows),
			acc(v.LiveAccuracyDrifted, v.LiveRowsDrifted), v.Origin)
	}
	t.Flush()
	fmt.Fprintln(w)
	t = newTable(w)
	if d := s.Drift; d != nil {
		fmt.Fprintf(t, "Drift:\tchurn:%d %s — %d of %d features (%s), the most drifted %s; %s rows from %d agents\n",
			d.Version, strings.ReplaceAll(d.Verdict, "_", " "), len(d.DriftedFeatures), d.Features, strings.Join(d.DriftedFeatures, ", "),
			d.MostDrifted, demo.Thousands(d.Rows), len(d.Agents))
	}
	if j := s.Job; j != nil {
		gpus := "no GPU"
		if j.AgentGPUs > 0 {
			gpus = fmt.Sprintf("%d GPUs", j.AgentGPUs)
		}
		fmt.Fprintf(t, "Retraining:\tjob %s of policy %s, started by %s, ran on %s (%s) in %.1fs: %s, %s\n",
			j.ID, j.Policy, j.Trigger, j.Agent, gpus, j.Seconds, j.State, j.Outcome)
		fmt.Fprintf(t, "\ton %s (%s rows): %s %.3f against churn:%d's %.3f on the same hold-out, margin %g → churn:%d\n",
			j.Dataset, demo.Thousands(j.DatasetRows), j.Metric, j.CandidateScore, j.ChampionVersion, j.ChampionScore, j.Margin, j.Version)
	}
	for i, r := range s.Rollouts {
		label := ""
		if i == 0 {
			label = "Rollouts:"
		}
		line := fmt.Sprintf("%s\t%s churn:%d → %d (%s): %s in %.1fs", label, r.ID, r.FromVersion, r.ToVersion, r.StartedBy,
			strings.ReplaceAll(r.State, "_", " "), r.Seconds)
		if r.State == "rolled_back" {
			line += " — " + demo.Tidy(r.Reason)
		}
		fmt.Fprintln(t, line)
	}
	tr := s.Traffic
	fmt.Fprintf(t, "Traffic:\t%s requests for %s customers, %d failed; the labels of %s joined to their predictions as feedback\n",
		demo.Thousands(tr.Requests), demo.Thousands(tr.Rows), tr.Failed, demo.Thousands(tr.FeedbackJoined))
	var stages []string
	for _, st := range s.Stages {
		stages = append(stages, fmt.Sprintf("%.1fs", st.Seconds))
	}
	fmt.Fprintf(t, "Time:\t%.1fs in all; the stages %s\n", s.DurationSeconds, strings.Join(stages, ", "))
	t.Flush()
}
