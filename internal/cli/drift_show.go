package cli

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// driftFeatureView is one feature's drift as `drift show --json` prints it:
// the fields of `drift compare --json`, from the fleet's sketches.
type driftFeatureView struct {
	Name              string      `json:"name"`
	Type              string      `json:"type"`
	ReferenceRows     uint64      `json:"reference_rows"`
	CurrentRows       uint64      `json:"current_rows"`
	KS                *statPair   `json:"ks,omitempty"`
	WassersteinNormed *float64    `json:"wasserstein_normed,omitempty"`
	PSI               *float64    `json:"psi,omitempty"`
	JensenShannon     *float64    `json:"jensen_shannon,omitempty"`
	Hellinger         *float64    `json:"hellinger,omitempty"`
	Chi2              *statPair   `json:"chi2,omitempty"`
	Z                 *statPair   `json:"z,omitempty"`
	Bound             float64     `json:"bound,omitempty"`
	Method            string      `json:"method"`
	Score             float64     `json:"score"`
	Threshold         float64     `json:"threshold"`
	Drifted           bool        `json:"drifted"`
	Verdict           string      `json:"verdict"`
	Histogram         *histoPairs `json:"histogram,omitempty"`
}

type statPair struct {
	Statistic float64 `json:"statistic"`
	PValue    float64 `json:"p_value"`
}

// histoPairs is a feature's reference and current counts on the same
// bins (numeric: the reference's quantile bins, under- and overflow
// first and last; categorical: the reference's categories, then other
// and unseen).
type histoPairs struct {
	Labels    []string `json:"labels"`
	Reference []uint64 `json:"reference"`
	Current   []uint64 `json:"current"`
}

type driftView struct {
	Model   string     `json:"model"`
	Version uint64     `json:"version"`
	Agents  []string   `json:"agents"`
	From    *time.Time `json:"from"`
	To      *time.Time `json:"to"`
	Rows    uint64     `json:"rows"`
	Dataset struct {
		DriftShare      float64 `json:"drift_share"`
		Drifted         bool    `json:"drifted"`
		DriftedFeatures uint32  `json:"drifted_features"`
		Features        uint32  `json:"features"`
	} `json:"dataset"`
	Features []driftFeatureView `json:"features"`
}

func pair(s, p *float64) *statPair {
	if s == nil || p == nil {
		return nil
	}
	return &statPair{Statistic: *s, PValue: *p}
}

func driftViewOf(r *droverv1.GetDriftResponse) driftView {
	v := driftView{Model: r.GetModel(), Version: r.GetVersion(), Agents: r.GetAgents(), From: ts(r.GetFrom()), To: ts(r.GetTo()),
		Rows: r.GetRows(), Features: []driftFeatureView{}}
	if v.Agents == nil {
		v.Agents = []string{}
	}
	d := r.GetDataset()
	v.Dataset.DriftShare, v.Dataset.Drifted, v.Dataset.DriftedFeatures, v.Dataset.Features = d.GetDriftShare(), d.GetDrifted(), d.GetDriftedFeatures(), d.GetFeatures()
	refs := map[string]*droverv1.FeatureProfile{}
	for _, f := range r.GetReference().GetFeatures() {
		refs[f.GetName()] = f
	}
	curs := map[string]*droverv1.FeatureProfile{}
	for _, f := range r.GetCurrent().GetFeatures() {
		curs[f.GetName()] = f
	}
	for _, f := range r.GetFeatures() {
		fv := driftFeatureView{Name: f.GetName(), Type: f.GetType(), ReferenceRows: f.GetReferenceRows(), CurrentRows: f.GetCurrentRows(),
			KS: pair(f.KsStatistic, f.KsPValue), WassersteinNormed: f.WassersteinNormed, PSI: f.Psi, JensenShannon: f.JensenShannon,
			Hellinger: f.Hellinger, Chi2: pair(f.Chi2Statistic, f.Chi2PValue), Z: pair(f.ZStatistic, f.ZPValue), Bound: f.GetBound(),
			Method: f.GetMethod(), Score: f.GetScore(), Threshold: f.GetThreshold(), Drifted: f.GetDrifted(), Verdict: f.GetVerdict(),
			Histogram: histogramOf(refs[f.GetName()], curs[f.GetName()])}
		v.Features = append(v.Features, fv)
	}
	return v
}

// histogramOf pairs a feature's reference and current counts.
func histogramOf(ref, cur *droverv1.FeatureProfile) *histoPairs {
	if ref == nil || cur == nil {
		return nil
	}
	if n := ref.GetNumeric(); n != nil && len(n.GetBins()) > 0 {
		edges := n.GetEdges()
		h := &histoPairs{Reference: n.GetBins(), Current: cur.GetNumeric().GetBins()}
		for i := range len(edges) + 1 {
			switch {
			case i == 0:
				h.Labels = append(h.Labels, "<"+fmtEdge(edges[0]))
			case i == len(edges):
				h.Labels = append(h.Labels, "≥"+fmtEdge(edges[i-1]))
			default:
				h.Labels = append(h.Labels, fmtEdge(edges[i-1])+"–"+fmtEdge(edges[i]))
			}
		}
		if len(h.Current) != len(h.Reference) {
			h.Current = make([]uint64, len(h.Reference))
		}
		return h
	}
	rc, cc := ref.GetCategorical(), cur.GetCategorical()
	if rc == nil {
		return nil
	}
	h := &histoPairs{}
	for _, k := range slices.Sorted(maps.Keys(rc.GetCounts())) {
		h.Labels = append(h.Labels, k)
		h.Reference = append(h.Reference, rc.GetCounts()[k])
		h.Current = append(h.Current, cc.GetCounts()[k])
	}
	h.Labels = append(h.Labels, "(other)", "(unseen)")
	h.Reference = append(h.Reference, rc.GetOther(), 0)
	h.Current = append(h.Current, cc.GetOther(), cc.GetUnseen())
	return h
}

func fmtEdge(x float64) string { return strconv.FormatFloat(x, 'g', 4, 64) }

func (a *app) driftShow() *cobra.Command {
	var agent string
	var selector []string
	var window time.Duration
	var histograms bool
	cmd := &cobra.Command{
		Use:   "show <model>[:version]",
		Short: "Show a model version's drift across the fleet, from the agents' windows",
		Long: `Merge the drift windows the agents reported for a model version (the newest
version with windows unless one is named) over the last --window, and judge
each feature against the version's reference profile: per-feature statistics
and verdicts, the data set's verdict, and a histogram of reference against
current per feature.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			model, ver, _ := strings.Cut(args[0], ":")
			var version uint64
			if ver != "" {
				var err error
				if version, err = strconv.ParseUint(ver, 10, 64); err != nil {
					return usagef("%q: want <model>[:version], the version a number", args[0])
				}
			}
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
			resp, err := c.Drift.GetDrift(ctx, &droverv1.GetDriftRequest{Model: model, Version: version, Agent: agent, Selector: sel,
				Window: durationpb.New(window), Read: a.read()})
			if err != nil {
				return err
			}
			v := driftViewOf(resp)
			return a.emit(v, func(w io.Writer) { printDrift(w, v, histograms) })
		},
	}
	cmd.Flags().StringVar(&agent, "agent", "", "only this agent's windows (name or id)")
	cmd.Flags().StringArrayVar(&selector, "selector", nil, "only agents with this label, key=value (repeatable)")
	cmd.Flags().DurationVar(&window, "window", time.Hour, "how far back to merge windows")
	cmd.Flags().BoolVar(&histograms, "histograms", true, "draw each feature's histogram of reference against current")
	return cmd
}

func printDrift(w io.Writer, v driftView, histograms bool) {
	verdict := "no drift"
	if v.Dataset.Drifted {
		verdict = "DRIFT"
	}
	fmt.Fprintf(w, "%s:%d — %s: %d of %d features drifted (%.0f%%), %d rows from %d agents, %s to %s\n\n",
		v.Model, v.Version, verdict, v.Dataset.DriftedFeatures, v.Dataset.Features, 100*v.Dataset.DriftShare,
		v.Rows, len(v.Agents), fmtTimeP(v.From), fmtTimeP(v.To))
	t := newTable(w)
	fmt.Fprintln(t, "FEATURE\tTYPE\tMETHOD\tSCORE\tTHRESHOLD\tVERDICT\tROWS")
	for _, f := range v.Features {
		fmt.Fprintf(t, "%s\t%s\t%s\t%.4g\t%.4g\t%s\t%d\n", f.Name, f.Type, f.Method, f.Score, f.Threshold, strings.ReplaceAll(f.Verdict, "_", " "), f.CurrentRows)
	}
	t.Flush()
	if !histograms {
		return
	}
	for _, f := range v.Features {
		if f.Histogram == nil {
			continue
		}
		fmt.Fprintf(w, "\n%s (%s)\n", f.Name, strings.ReplaceAll(f.Verdict, "_", " "))
		fmt.Fprint(w, barPairs(f.Histogram.Labels, f.Histogram.Reference, f.Histogram.Current, 30))
	}
}

// barPairs draws reference against current shares, one line per bin.
func barPairs(labels []string, ref, cur []uint64, width int) string {
	share := func(c []uint64) []float64 {
		var total uint64
		for _, n := range c {
			total += n
		}
		out := make([]float64, len(c))
		for i, n := range c {
			if total > 0 {
				out[i] = float64(n) / float64(total)
			}
		}
		return out
	}
	rs, cs := share(ref), share(cur)
	top := max(slices.Max(append(slices.Clone(rs), 0)), slices.Max(append(slices.Clone(cs), 0)))
	bar := func(x float64) string {
		if top == 0 {
			return ""
		}
		return strings.Repeat("█", int(x/top*float64(width)+0.5))
	}
	lw := 0
	for _, l := range labels {
		lw = max(lw, len([]rune(l)))
	}
	var b strings.Builder
	for i, l := range labels {
		pad := strings.Repeat(" ", lw-len([]rune(l)))
		fmt.Fprintf(&b, "  %s%s ref %5.1f%% %s\n", pad, l, 100*rs[i], bar(rs[i]))
		fmt.Fprintf(&b, "  %s cur %5.1f%% %s\n", strings.Repeat(" ", lw), 100*cs[i], bar(cs[i]))
	}
	return b.String()
}

func (a *app) driftEvents() *cobra.Command {
	var limit uint32
	cmd := &cobra.Command{
		Use:   "events [model]",
		Short: "List changes of drift verdict, per agent and model version",
		Args:  cobra.MaximumNArgs(1),
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
			resp, err := c.Drift.ListDriftEvents(ctx, &droverv1.ListDriftEventsRequest{Model: model, Limit: limit, Read: a.read()})
			if err != nil {
				return err
			}
			type event struct {
				Model           string     `json:"model"`
				Version         uint64     `json:"version"`
				Agent           string     `json:"agent_id"`
				Verdict         string     `json:"verdict"`
				DriftShare      float64    `json:"drift_share"`
				DriftedFeatures []string   `json:"drifted_features"`
				Window          *time.Time `json:"window_start"`
			}
			out := struct {
				Events []event `json:"events"`
			}{Events: []event{}}
			for _, e := range resp.GetEvents() {
				out.Events = append(out.Events, event{Model: e.GetModel(), Version: e.GetVersion(), Agent: e.GetAgentId(), Verdict: e.GetVerdict(),
					DriftShare: e.GetDriftShare(), DriftedFeatures: append([]string{}, e.GetDriftedFeatures()...), Window: ts(e.GetTime())})
			}
			return a.emit(out, func(w io.Writer) {
				t := newTable(w)
				fmt.Fprintln(t, "WINDOW\tMODEL\tAGENT\tVERDICT\tDRIFTED FEATURES")
				for _, e := range out.Events {
					fmt.Fprintf(t, "%s\t%s:%d\t%s\t%s\t%s\n", fmtTimeP(e.Window), e.Model, e.Version, e.Agent, strings.ReplaceAll(e.Verdict, "_", " "), dash(strings.Join(e.DriftedFeatures, ", ")))
				}
				t.Flush()
			})
		},
	}
	cmd.Flags().Uint32Var(&limit, "limit", 100, "at most this many, the newest")
	return cmd
}

func (a *app) driftConfig() *cobra.Command {
	var s droverv1.DriftSettings
	var methods, thresholds []string
	cmd := &cobra.Command{
		Use:   "config <model>",
		Short: "Set a model's drift thresholds (zero or empty: the default)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := parseKV("method", methods)
			if err != nil {
				return err
			}
			s.Methods = m
			th, err := parseKV("threshold", thresholds)
			if err != nil {
				return err
			}
			for f, v := range th {
				x, err := strconv.ParseFloat(v, 64)
				if err != nil {
					return usagef("--threshold %s=%s: want a number", f, v)
				}
				if s.Thresholds == nil {
					s.Thresholds = map[string]float64{}
				}
				s.Thresholds[f] = x
			}
			c, err := a.hub()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			resp, err := c.Drift.SetDriftSettings(ctx, &droverv1.SetDriftSettingsRequest{Model: args[0], Settings: &s})
			if err != nil {
				return err
			}
			set := resp.GetSettings().GetSettings()
			out := map[string]any{"model": args[0], "small_reference": set.GetSmallReference(), "p_value": set.GetPValue(),
				"distance": set.GetDistance(), "dataset_share": set.GetDatasetShare(), "min_rows": set.GetMinRows(),
				"correction": set.GetCorrection(), "methods": nonNil(set.GetMethods()), "thresholds": nonNil(set.GetThresholds())}
			return a.emit(out, func(w io.Writer) { fmt.Fprintf(w, "drift settings of %s set\n", args[0]) })
		},
	}
	f := cmd.Flags()
	f.Uint32Var(&s.SmallReference, "small-reference", 0, "reference rows at or below which p-value tests decide (default 1000)")
	f.Float64Var(&s.PValue, "p-value", 0, "the p-value below which a test says drift (default 0.05)")
	f.Float64Var(&s.Distance, "distance", 0, "the distance at or above which a feature drifts, large references (default 0.1)")
	f.Float64Var(&s.DatasetShare, "dataset-share", 0, "the share of drifted features that makes the data set drift (default 0.5)")
	f.Uint32Var(&s.MinRows, "min-rows", 0, "current rows below which a verdict is insufficient data (default 30)")
	f.StringVar(&s.Correction, "correction", "", "none, bonferroni or fdr: correct p-values for testing many features")
	f.StringArrayVar(&methods, "method", nil, "feature=method: ks, wasserstein, psi, jensen_shannon, hellinger, chi2 or z (repeatable)")
	f.StringArrayVar(&thresholds, "threshold", nil, "feature=threshold (repeatable)")
	return cmd
}

func nonNil[V any](m map[string]V) map[string]V {
	if m == nil {
		return map[string]V{}
	}
	return m
}
