package cli

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/droverhq/drover/internal/drift"
	"github.com/droverhq/drover/internal/tabular"
	"github.com/droverhq/drover/internal/validate"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// exitDrift is the exit status of `drift compare --fail-on-drift` when
// the data set drifted.
const exitDrift = 3

// driftFoundError is returned by `drift compare --fail-on-drift` when the
// data set drifted, after the report has been printed. ExitCode tells Main
// which status to exit with.
type driftFoundError struct{ ds drift.DatasetReport }

// Error says how many features drifted.
func (e driftFoundError) Error() string {
	return fmt.Sprintf("the data set drifted: %d of %d features", e.ds.DriftedFeatures, e.ds.Features)
}

// ExitCode is the process exit status for this error.
func (e driftFoundError) ExitCode() int { return exitDrift }

// driftCommand is the drift group. Each subcommand is one constructor
// added to the list below.
func (a *app) driftCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drift",
		Short: "Drift: the fleet's live traffic against training data, or two data files against each other",
	}
	cmd.AddCommand(
		a.driftShow(),
		a.driftEvents(),
		a.driftConfig(),
		a.driftCompare(),
	)
	return cmd
}

// driftCompareFlags are `drift compare`'s flags.
type driftCompareFlags struct {
	reference, current string
	schema             string
	ignore             []string
	target             string
	pValue             float64
	distance           float64
	datasetShare       float64
	correction         string
	html               string
	failOnDrift        bool
}

func (a *app) driftCompare() *cobra.Command {
	var f driftCompareFlags
	cmd := &cobra.Command{
		Use:   "compare --reference FILE --current FILE",
		Short: "Compare two data files (CSV or Parquet) feature by feature and report drift",
		Long: `Compare a reference data set (e.g. the training data) with a current one
(e.g. last week's requests), column by column, computing every statistic
exactly from the raw values: for numeric columns the Kolmogorov–Smirnov test,
the normalised Wasserstein distance, PSI, Jensen–Shannon and Hellinger; for
categorical ones the chi-square test, PSI, Jensen–Shannon and Hellinger, and
for two-category ones the two-proportion z-test. Each feature is decided by
Evidently's default method: with at most 1000 reference values a p-value test
(KS, chi-square or z), otherwise a distance (Wasserstein or Jensen–Shannon).
The data set drifts when at least --dataset-share of its features drift.

Files are read by their extension, .csv or .parquet. A CSV column is numeric
when every non-null value is a number; --schema (a model's feature schema, as
'models push --schema' takes) fixes the types instead. Empty fields are null;
in a numeric column so are NA, N/A, NaN, null, None, #N/A, <NA> and a NaN
(in a text column they are values). Nulls are counted, not compared. An infinite number, a text value in a column the schema calls
numeric, an all-null column, an empty file or columns that differ between the
two files are errors naming the file, row and column.

The exit status is 0 whether or not drift is found, unless --fail-on-drift.`,
		Example: `  drover drift compare --reference train.csv --current week42.parquet --ignore id
  drover drift compare --reference train.csv --current today.csv --schema schema.yaml --html drift.html
  drover drift compare --reference train.csv --current today.csv --json | jq '.features[] | select(.drifted)'`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("drift compare takes no arguments (give the files with --reference and --current)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runDriftCompare(f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.reference, "reference", "", "the reference data, a .csv or .parquet file (required)")
	fl.StringVar(&f.current, "current", "", "the current data, a .csv or .parquet file (required)")
	fl.StringVar(&f.schema, "schema", "", "a feature schema, JSON or YAML, that fixes the columns' types (see docs/cli.md)")
	fl.StringSliceVar(&f.ignore, "ignore", nil, "columns to leave out, e.g. an id (comma-separated or repeated)")
	fl.StringVar(&f.target, "target", "", "the target (label) column: it must be in both files and is compared like any feature")
	fl.Float64Var(&f.pValue, "p-value", 0.05, "the p-value tests' threshold: drift when p < it")
	fl.Float64Var(&f.distance, "distance", 0.1, "the distances' threshold: drift when the distance is ≥ it")
	fl.Float64Var(&f.datasetShare, "dataset-share", 0.5, "the share of features that must drift for the data set to drift")
	fl.StringVar(&f.correction, "correction", "none", "multiple-testing correction of the p-values: none, bonferroni or fdr")
	fl.StringVar(&f.html, "html", "", "also write a self-contained HTML report to this file")
	fl.BoolVar(&f.failOnDrift, "fail-on-drift", false, fmt.Sprintf("exit with status %d when the data set drifted", exitDrift))
	return cmd
}

// options checks the flags and returns the verdict options.
func (f *driftCompareFlags) options() (drift.Options, error) {
	if f.reference == "" || f.current == "" {
		return drift.Options{}, usagef("drift compare needs both --reference and --current")
	}
	if !(f.pValue > 0 && f.pValue <= 1) {
		return drift.Options{}, usagef("--p-value %v: want a number in (0, 1]", f.pValue)
	}
	if !(f.distance > 0) || math.IsInf(f.distance, 0) {
		return drift.Options{}, usagef("--distance %v: want a positive number", f.distance)
	}
	if !(f.datasetShare > 0 && f.datasetShare <= 1) {
		return drift.Options{}, usagef("--dataset-share %v: want a number in (0, 1]", f.datasetShare)
	}
	opts := drift.Options{PValue: f.pValue, Distance: f.distance, DatasetShare: f.datasetShare}
	switch f.correction {
	case "none", "":
		opts.Correction = drift.CorrectionNone
	case "bonferroni":
		opts.Correction = drift.CorrectionBonferroni
	case "fdr":
		opts.Correction = drift.CorrectionFDR
	default:
		return drift.Options{}, usagef("--correction %q: want none, bonferroni or fdr", f.correction)
	}
	for _, name := range f.ignore {
		if name == f.target && name != "" {
			return drift.Options{}, usagef("--target %q is also in --ignore", name)
		}
	}
	return opts, nil
}

func (a *app) runDriftCompare(f driftCompareFlags) error {
	opts, err := f.options()
	if err != nil {
		return err
	}
	readOpts := tabular.Options{Ignore: f.ignore}
	var schema *droverv1.FeatureSchema
	if f.schema != "" {
		if schema, err = readSchema(f.schema); err != nil {
			return err
		}
		readOpts.Kinds = validate.SchemaKinds(schema)
	}
	ref, err := tabular.Read(f.reference, readOpts)
	if err != nil {
		return err
	}
	cur, err := tabular.Read(f.current, readOpts)
	if err != nil {
		return err
	}
	if err := checkCompareColumns(f, schema, ref, cur); err != nil {
		return err
	}

	refCols, curCols := make([]drift.Column, len(ref.Columns)), make([]drift.Column, len(ref.Columns))
	for i := range ref.Columns {
		refCols[i] = driftColumnOf(&ref.Columns[i])
		curCols[i] = driftColumnOf(cur.Lookup(ref.Columns[i].Name))
	}
	rep, err := drift.Compare(refCols, curCols, opts)
	if err != nil {
		return fmt.Errorf("comparing %s with %s: %w", ref.Path, cur.Path, err)
	}

	view := newCompareReportView(rep, opts, compareSourceOf(ref), compareSourceOf(cur), f.target)
	hists := make([]compareHistogram, len(refCols))
	for i := range refCols {
		hists[i] = compareHistogramOf(refCols[i], curCols[i])
	}
	if f.html != "" {
		if err := writeCompareHTML(f.html, view, hists); err != nil {
			return err
		}
	}
	if err := a.emit(view, func(w io.Writer) {
		writeCompareText(w, view, hists)
		if f.html != "" {
			fmt.Fprintf(w, "\nHTML report: %s\n", f.html)
		}
	}); err != nil {
		return err
	}
	if f.failOnDrift && rep.Dataset.Drifted {
		return driftFoundError{rep.Dataset}
	}
	return nil
}

// checkCompareColumns checks what the two tables hold against the flags and
// the schema: every --ignore name and the --target are columns, every
// schema input is in both files, and the files have the same columns.
func checkCompareColumns(f driftCompareFlags, schema *droverv1.FeatureSchema, ref, cur *tabular.Table) error {
	for _, name := range f.ignore {
		if !slices.Contains(ref.Ignored, name) && !slices.Contains(cur.Ignored, name) {
			return usagef("--ignore %q: no such column in %s or %s", name, ref.Path, cur.Path)
		}
	}
	for _, in := range schema.GetInputs() {
		if slices.Contains(f.ignore, in.GetName()) {
			continue
		}
		for _, t := range []*tabular.Table{ref, cur} {
			if t.Lookup(in.GetName()) == nil {
				return fmt.Errorf("%s: the schema's input %q is not a column of %s (ignore it to leave it out)", f.schema, in.GetName(), t.Path)
			}
		}
	}
	if f.target != "" {
		for _, t := range []*tabular.Table{ref, cur} {
			if t.Lookup(f.target) == nil {
				return fmt.Errorf("--target %q is not a column of %s", f.target, t.Path)
			}
		}
	}
	if err := tabular.CheckCompatible(ref, cur); err != nil {
		return err
	}
	if len(ref.Columns) == 0 {
		return usagef("no columns left to compare in %s and %s", ref.Path, cur.Path)
	}
	return nil
}

// driftColumnOf hands a table's column to package drift.
func driftColumnOf(c *tabular.Column) drift.Column {
	if c.Kind == tabular.Text {
		return drift.Column{Name: c.Name, Categorical: true, Strings: c.Strings}
	}
	return drift.Column{Name: c.Name, Numbers: c.Numbers}
}

// The views below are `drift compare --json`: a documented, stable
// contract (docs/cli.md), built field by field from package drift's report
// so that a new field there is not a silent change here.

// compareReportView is the whole report.
type compareReportView struct {
	Reference compareSourceView    `json:"reference"`
	Current   compareSourceView    `json:"current"`
	Target    string               `json:"target,omitempty"`
	Dataset   compareDatasetView   `json:"dataset"`
	Features  []compareFeatureView `json:"features"`
}

// compareSourceView describes one side of the comparison.
type compareSourceView struct {
	Path   string `json:"path"`
	Format string `json:"format"`
	Rows   int    `json:"rows"`
}

func compareSourceOf(t *tabular.Table) compareSourceView {
	return compareSourceView{Path: t.Path, Format: t.Format, Rows: t.Rows}
}

// compareDatasetView is the data set's verdict.
type compareDatasetView struct {
	DriftShare      jsonNumber `json:"drift_share"`
	Threshold       jsonNumber `json:"threshold"`
	Drifted         bool       `json:"drifted"`
	DriftedFeatures int        `json:"drifted_features"`
	Features        int        `json:"features"`
}

// compareFeatureView is one feature. Statistics that do not apply to the
// feature's type are absent; one that applies but could not be computed is
// null.
type compareFeatureView struct {
	Name           string `json:"name"`
	Type           string `json:"type"`
	ReferenceRows  int    `json:"reference_rows"`
	CurrentRows    int    `json:"current_rows"`
	ReferenceNulls int    `json:"reference_nulls"`
	CurrentNulls   int    `json:"current_nulls"`

	KS                *compareKSView   `json:"ks,omitempty"`
	WassersteinNormed *jsonNumber      `json:"wasserstein_normed,omitempty"`
	Chi2              *compareChi2View `json:"chi2,omitempty"`
	Z                 *compareZView    `json:"z,omitempty"`
	PSI               *jsonNumber      `json:"psi"`
	JensenShannon     *jsonNumber      `json:"jensen_shannon"`
	Hellinger         *jsonNumber      `json:"hellinger"`

	Method    string     `json:"method"`
	Score     jsonNumber `json:"score"`
	Threshold jsonNumber `json:"threshold"`
	Drifted   bool       `json:"drifted"`
	Verdict   string     `json:"verdict"`
}

type compareKSView struct {
	Statistic jsonNumber `json:"statistic"`
	PValue    jsonNumber `json:"p_value"`
	Method    string     `json:"method"`
}

type compareChi2View struct {
	Statistic jsonNumber `json:"statistic"`
	PValue    jsonNumber `json:"p_value"`
	DOF       int        `json:"dof"`
}

type compareZView struct {
	Statistic jsonNumber `json:"statistic"`
	PValue    jsonNumber `json:"p_value"`
}

// jsonNumber is a float that prints as null when it is NaN or infinite,
// which JSON cannot hold.
type jsonNumber float64

// MarshalJSON writes the number, or null.
func (n jsonNumber) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(n)) || math.IsInf(float64(n), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(n))
}

// statOrNull returns p as a present jsonNumber: NaN (null) when nil.
func statOrNull(p *float64) *jsonNumber {
	v := jsonNumber(math.NaN())
	if p != nil {
		v = jsonNumber(*p)
	}
	return &v
}

func newCompareReportView(rep *drift.Report, opts drift.Options, ref, cur compareSourceView, target string) compareReportView {
	v := compareReportView{
		Reference: ref,
		Current:   cur,
		Target:    target,
		Dataset: compareDatasetView{
			DriftShare:      jsonNumber(rep.Dataset.DriftShare),
			Threshold:       jsonNumber(opts.DatasetShare),
			Drifted:         rep.Dataset.Drifted,
			DriftedFeatures: rep.Dataset.DriftedFeatures,
			Features:        rep.Dataset.Features,
		},
		Features: make([]compareFeatureView, 0, len(rep.Features)),
	}
	for _, f := range rep.Features {
		fv := compareFeatureView{
			Name: f.Name, Type: f.Type,
			ReferenceRows: f.ReferenceRows, CurrentRows: f.CurrentRows,
			ReferenceNulls: f.ReferenceNulls, CurrentNulls: f.CurrentNulls,
			PSI: statOrNull(f.PSI), JensenShannon: statOrNull(f.JensenShannon), Hellinger: statOrNull(f.Hellinger),
			Method: f.Method, Score: jsonNumber(f.Score), Threshold: jsonNumber(f.Threshold),
			Drifted: f.Drifted, Verdict: f.Verdict,
		}
		if f.Type == drift.TypeNumeric {
			fv.KS = &compareKSView{Statistic: jsonNumber(math.NaN()), PValue: jsonNumber(math.NaN())}
			if f.KS != nil {
				fv.KS = &compareKSView{Statistic: jsonNumber(f.KS.Statistic), PValue: jsonNumber(f.KS.PValue), Method: f.KS.Method}
			}
			fv.WassersteinNormed = statOrNull(f.WassersteinNormed)
		} else {
			fv.Chi2 = &compareChi2View{Statistic: jsonNumber(math.NaN()), PValue: jsonNumber(math.NaN())}
			if f.Chi2 != nil {
				fv.Chi2 = &compareChi2View{Statistic: jsonNumber(f.Chi2.Statistic), PValue: jsonNumber(f.Chi2.PValue), DOF: f.Chi2.DOF}
			}
		}
		if f.Type == drift.TypeBinary {
			fv.Z = &compareZView{Statistic: jsonNumber(math.NaN()), PValue: jsonNumber(math.NaN())}
			if f.Z != nil {
				fv.Z = &compareZView{Statistic: jsonNumber(f.Z.Statistic), PValue: jsonNumber(f.Z.PValue)}
			}
		}
		v.Features = append(v.Features, fv)
	}
	return v
}

// compareHistogram is one feature's reference and current distributions
// over the same bins, for the terminal and HTML charts. Numeric: Edges
// holds len(Ref)+1 bin edges. Categorical: Labels names each bin.
type compareHistogram struct {
	Numeric  bool
	Edges    []float64
	Labels   []string
	Ref, Cur []float64
}

// compareHistogramBins is the number of equal-width bins of a numeric chart.
const compareHistogramBins = 20

// compareHistogramCategories is the most categories a chart shows; the rest
// are summed into one bar.
const compareHistogramCategories = 20

// compareHistogramOf bins raw values for display: numeric values into equal-width
// bins over the range of both samples (nulls left out), categories by
// their total count, most frequent first, the rest summed as "(other)".
func compareHistogramOf(ref, cur drift.Column) compareHistogram {
	if ref.Categorical {
		return compareCategoryHistogram(ref.Strings, cur.Strings)
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, xs := range [][]float64{ref.Numbers, cur.Numbers} {
		for _, x := range xs {
			if !math.IsNaN(x) {
				lo, hi = min(lo, x), max(hi, x)
			}
		}
	}
	h := compareHistogram{Numeric: true}
	if lo > hi { // no values at all
		return h
	}
	bins := compareHistogramBins
	if lo == hi {
		bins = 1
	}
	h.Edges = make([]float64, bins+1)
	for i := range h.Edges {
		h.Edges[i] = lo + (hi-lo)*float64(i)/float64(bins)
	}
	h.Edges[bins] = hi
	count := func(xs []float64) []float64 {
		c := make([]float64, bins)
		for _, x := range xs {
			if math.IsNaN(x) {
				continue
			}
			i := 0
			if hi > lo {
				i = min(int((x-lo)/(hi-lo)*float64(bins)), bins-1)
			}
			c[i]++
		}
		return c
	}
	h.Ref, h.Cur = count(ref.Numbers), count(cur.Numbers)
	return h
}

func compareCategoryHistogram(ref, cur []string) compareHistogram {
	type cat struct {
		name     string
		ref, cur float64
	}
	index := map[string]int{}
	var cats []cat
	add := func(xs []string, isRef bool) {
		for _, s := range xs {
			if s == "" {
				continue
			}
			i, ok := index[s]
			if !ok {
				i = len(cats)
				index[s] = i
				cats = append(cats, cat{name: s})
			}
			if isRef {
				cats[i].ref++
			} else {
				cats[i].cur++
			}
		}
	}
	add(ref, true)
	add(cur, false)
	slices.SortFunc(cats, func(a, b cat) int {
		return cmp.Or(cmp.Compare(b.ref+b.cur, a.ref+a.cur), strings.Compare(a.name, b.name))
	})
	if len(cats) > compareHistogramCategories {
		other := cat{name: fmt.Sprintf("(%d others)", len(cats)-compareHistogramCategories+1)}
		for _, c := range cats[compareHistogramCategories-1:] {
			other.ref += c.ref
			other.cur += c.cur
		}
		cats = append(cats[:compareHistogramCategories-1], other)
	}
	h := compareHistogram{}
	for _, c := range cats {
		h.Labels = append(h.Labels, c.name)
		h.Ref = append(h.Ref, c.ref)
		h.Cur = append(h.Cur, c.cur)
	}
	return h
}

// countShares returns counts divided by their sum (all zero when the sum is 0).
func countShares(counts []float64) []float64 {
	total := 0.0
	for _, c := range counts {
		total += c
	}
	out := make([]float64, len(counts))
	if total > 0 {
		for i, c := range counts {
			out[i] = c / total
		}
	}
	return out
}

// histogramBlocks are the eighths of a character cell, lowest first.
var histogramBlocks = []rune("▁▂▃▄▅▆▇█")

// terminalHistogram draws two histograms over the same bins, e.g. a
// reference's and a current sample's, as one line of block characters
// each (▁▂▃▄▅▆▇█, one character per bin). Each is scaled to shares of its
// own total, so samples of different sizes compare, and both to the same
// height: the largest share of either is a full block. An empty bin is a
// space; any non-empty bin shows at least ▁.
func terminalHistogram(ref, cur []float64) (refLine, curLine string) {
	rs, cs := countShares(ref), countShares(cur)
	top := 0.0
	for _, s := range slices.Concat(rs, cs) {
		top = max(top, s)
	}
	draw := func(s []float64) string {
		var b strings.Builder
		for _, v := range s {
			if v <= 0 || top == 0 {
				b.WriteRune(' ')
				continue
			}
			i := int(math.Ceil(v/top*float64(len(histogramBlocks)))) - 1
			b.WriteRune(histogramBlocks[max(0, min(i, len(histogramBlocks)-1))])
		}
		return b.String()
	}
	return draw(rs), draw(cs)
}

// formatStat prints a score or statistic compactly.
func formatStat(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// compareDriftedText is a feature's DRIFTED column.
func compareDriftedText(f compareFeatureView) string {
	switch {
	case f.Verdict == drift.VerdictInsufficientData:
		return "insufficient data"
	case f.Drifted:
		return "yes"
	}
	return "no"
}

// writeCompareText prints the report for a terminal: the two sources, a
// table of features, the data set's verdict, and each numeric feature's
// histograms (hists, parallel to v.Features; may be nil).
func writeCompareText(w io.Writer, v compareReportView, hists []compareHistogram) {
	fmt.Fprintf(w, "reference  %s (%s, %d rows)\n", v.Reference.Path, v.Reference.Format, v.Reference.Rows)
	fmt.Fprintf(w, "current    %s (%s, %d rows)\n\n", v.Current.Path, v.Current.Format, v.Current.Rows)
	t := newTable(w)
	fmt.Fprintln(t, "FEATURE\tTYPE\tMETHOD\tSCORE\tTHRESHOLD\tDRIFTED")
	for _, f := range v.Features {
		score := formatStat(float64(f.Score))
		if f.Verdict == drift.VerdictInsufficientData {
			score = "-"
		}
		name := f.Name
		if name == v.Target {
			name += " (target)"
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\n", name, f.Type, f.Method, score, formatStat(float64(f.Threshold)), compareDriftedText(f))
	}
	t.Flush()
	verdict := "no drift"
	if v.Dataset.Drifted {
		verdict = "DRIFT"
	}
	fmt.Fprintf(w, "\ndata set: %s: %d of %d features drifted (share %s, threshold %s)\n", verdict,
		v.Dataset.DriftedFeatures, v.Dataset.Features, formatStat(float64(v.Dataset.DriftShare)), formatStat(float64(v.Dataset.Threshold)))

	first := true
	for i, f := range v.Features {
		if i >= len(hists) || !hists[i].Numeric || len(hists[i].Edges) < 2 {
			continue
		}
		if first {
			fmt.Fprintln(w, "\nhistograms (equal-width bins, share of each file's non-null values):")
			first = false
		}
		h := hists[i]
		r, c := terminalHistogram(h.Ref, h.Cur)
		mark := ""
		if f.Drifted {
			mark = "  drifted"
		}
		fmt.Fprintf(w, "\n%s  [%s, %s]%s\n", f.Name, formatStat(h.Edges[0]), formatStat(h.Edges[len(h.Edges)-1]), mark)
		fmt.Fprintf(w, "  reference  │%s│\n", r)
		fmt.Fprintf(w, "  current    │%s│\n", c)
	}
}
