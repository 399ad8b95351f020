package cli

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
)

// driftData is a generated data set: a column per feature.
type driftData struct {
	age, income []float64
	plan, flag  []string
}

// makeDriftData draws n rows. shift moves age; the other features keep
// their distribution.
func makeDriftData(seed uint64, n int, shift float64) driftData {
	r := rand.New(rand.NewPCG(seed, 1))
	var d driftData
	for i := range n {
		d.age = append(d.age, 20+40*r.Float64()+shift)
		d.income = append(d.income, float64(1000+i%50*10)) // the same multiset in every sample of equal size
		d.plan = append(d.plan, []string{"gold", "silver", "bronze"}[i%3])
		d.flag = append(d.flag, []string{"yes", "no"}[i%2])
	}
	r.Shuffle(n, func(i, j int) { d.income[i], d.income[j] = d.income[j], d.income[i] })
	return d
}

// driftHeader is the CSV header; "<script>" tests that the HTML escapes
// feature names.
var driftHeader = []string{"id", "age", "income", "plan", "<script>"}

func (d driftData) writeCSV(t *testing.T, path string) {
	t.Helper()
	var b strings.Builder
	b.WriteString(strings.Join(driftHeader, ",") + "\n")
	for i := range d.age {
		fmt.Fprintf(&b, "%d,%s,%s,%s,%s\n", i, strconv.FormatFloat(d.age[i], 'g', -1, 64),
			strconv.FormatFloat(d.income[i], 'g', -1, 64), d.plan[i], d.flag[i])
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

type driftParquetRow struct {
	ID     int64   `parquet:"id"`
	Age    float64 `parquet:"age"`
	Income float64 `parquet:"income"`
	Plan   string  `parquet:"plan"`
	Flag   string  `parquet:"<script>"`
}

func (d driftData) writeParquet(t *testing.T, path string) {
	t.Helper()
	rows := make([]driftParquetRow, len(d.age))
	for i := range rows {
		rows[i] = driftParquetRow{ID: int64(i), Age: d.age[i], Income: d.income[i], Plan: d.plan[i], Flag: d.flag[i]}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := parquet.Write(f, rows); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// driftFiles writes a reference CSV, a current CSV with age shifted, and
// the same current data as Parquet.
func driftFiles(t *testing.T) (ref, cur, curParquet string) {
	t.Helper()
	dir := t.TempDir()
	ref, cur, curParquet = filepath.Join(dir, "ref.csv"), filepath.Join(dir, "cur.csv"), filepath.Join(dir, "cur.parquet")
	makeDriftData(1, 300, 0).writeCSV(t, ref)
	c := makeDriftData(2, 200, 15)
	c.writeCSV(t, cur)
	c.writeParquet(t, curParquet)
	return ref, cur, curParquet
}

func keys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

func TestDriftCompareJSON(t *testing.T) {
	ref, cur, curParquet := driftFiles(t)
	for _, current := range []string{cur, curParquet} {
		t.Run(filepath.Ext(current), func(t *testing.T) {
			var got map[string]any
			runJSON(t, nil, &got, "drift", "compare", "--reference", ref, "--current", current, "--ignore", "id")

			if want := []string{"current", "dataset", "features", "reference"}; !slices.Equal(keys(got), want) {
				t.Fatalf("top-level keys %v, want %v", keys(got), want)
			}
			if r := got["reference"].(map[string]any); r["path"] != ref || r["format"] != "csv" || r["rows"] != 300.0 {
				t.Fatalf("reference = %v", r)
			}
			ds := got["dataset"].(map[string]any)
			if want := []string{"drift_share", "drifted", "drifted_features", "features", "threshold"}; !slices.Equal(keys(ds), want) {
				t.Fatalf("dataset keys %v, want %v", keys(ds), want)
			}
			if ds["drifted_features"] != 1.0 || ds["features"] != 4.0 || ds["drift_share"] != 0.25 || ds["drifted"] != false || ds["threshold"] != 0.5 {
				t.Fatalf("dataset = %v", ds)
			}

			common := []string{"current_nulls", "current_rows", "drifted", "hellinger", "jensen_shannon", "method",
				"name", "psi", "reference_nulls", "reference_rows", "score", "threshold", "type", "verdict"}
			wantKeys := map[string][]string{
				"numeric":     slices.Sorted(slices.Values(append(slices.Clone(common), "ks", "wasserstein_normed"))),
				"categorical": slices.Sorted(slices.Values(append(slices.Clone(common), "chi2"))),
				"binary":      slices.Sorted(slices.Values(append(slices.Clone(common), "chi2", "z"))),
			}
			type expect struct {
				typ, method string
				drifted     bool
			}
			want := map[string]expect{
				"age":      {"numeric", "ks", true},
				"income":   {"numeric", "ks", false},
				"plan":     {"categorical", "chi2", false},
				"<script>": {"binary", "z", false},
			}
			features := got["features"].([]any)
			var names []string
			for _, x := range features {
				f := x.(map[string]any)
				name := f["name"].(string)
				names = append(names, name)
				w := want[name]
				if f["type"] != w.typ || f["method"] != w.method || f["drifted"] != w.drifted {
					t.Errorf("%s: type %v, method %v, drifted %v; want %+v", name, f["type"], f["method"], f["drifted"], w)
				}
				if !slices.Equal(keys(f), wantKeys[w.typ]) {
					t.Errorf("%s (%s): keys %v\nwant %v", name, w.typ, keys(f), wantKeys[w.typ])
				}
				if f["reference_rows"] != 300.0 || f["current_rows"] != 200.0 || f["threshold"] != 0.05 {
					t.Errorf("%s: rows %v/%v, threshold %v", name, f["reference_rows"], f["current_rows"], f["threshold"])
				}
				if verdict := map[bool]string{true: "drift", false: "no_drift"}[w.drifted]; f["verdict"] != verdict {
					t.Errorf("%s: verdict %v", name, f["verdict"])
				}
				if ks, ok := f["ks"].(map[string]any); ok && !slices.Equal(keys(ks), []string{"method", "p_value", "statistic"}) {
					t.Errorf("%s: ks keys %v", name, keys(ks))
				}
				if chi2, ok := f["chi2"].(map[string]any); ok && !slices.Equal(keys(chi2), []string{"dof", "p_value", "statistic"}) {
					t.Errorf("%s: chi2 keys %v", name, keys(chi2))
				}
				if z, ok := f["z"].(map[string]any); ok && !slices.Equal(keys(z), []string{"p_value", "statistic"}) {
					t.Errorf("%s: z keys %v", name, keys(z))
				}
			}
			if want := []string{"age", "income", "plan", "<script>"}; !slices.Equal(names, want) {
				t.Fatalf("features %v, want %v (the reference's order, id ignored)", names, want)
			}
		})
	}
}

func TestDriftCompareText(t *testing.T) {
	ref, cur, _ := driftFiles(t)
	out := mustRun(t, nil, "drift", "compare", "--reference", ref, "--current", cur, "--ignore", "id", "--target", "plan")
	for _, want := range []string{
		"reference  " + ref + " (csv, 300 rows)",
		"FEATURE", "METHOD", "THRESHOLD", "DRIFTED",
		"plan (target)",
		"data set: no drift: 1 of 4 features drifted (share 0.25, threshold 0.5)",
		"age  [", "income  [",
		"  reference  │", "  current    │",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The histograms are for numeric features only.
	if strings.Count(out, "  reference  │") != 2 {
		t.Errorf("want 2 histograms:\n%s", out)
	}
	// age drifted, the others did not.
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && (f[0] == "age" || f[0] == "income") && len(f) == 6 {
			if want := map[string]string{"age": "yes", "income": "no"}[f[0]]; f[5] != want {
				t.Errorf("%s drifted %q, want %q", f[0], f[5], want)
			}
		}
	}
}

func TestDriftCompareHTML(t *testing.T) {
	ref, cur, _ := driftFiles(t)
	report := filepath.Join(t.TempDir(), "report.html")
	var got map[string]any
	runJSON(t, nil, &got, "drift", "compare", "--reference", ref, "--current", cur, "--ignore", "id", "--html", report)
	raw, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	page := string(raw)
	if n := strings.Count(page, "<svg"); n != 4 {
		t.Errorf("%d <svg> charts, want one per feature (4)", n)
	}
	for _, bad := range []string{"http://", "https://", "<script", "src=", "@import"} {
		if strings.Contains(strings.ToLower(page), bad) {
			t.Errorf("the page contains %q", bad)
		}
	}
	if !strings.Contains(page, "&lt;script&gt;") {
		t.Error("the feature named <script> is not escaped")
	}
	if !strings.Contains(page, `<section class="feature drift" id="f0">`) || strings.Count(page, `class="feature drift"`) != 1 {
		t.Error("the drifted feature (age) is not highlighted, or others are")
	}
	if !strings.Contains(page, "No data set drift") {
		t.Error("the data-set verdict is missing")
	}
	if entries, _ := os.ReadDir(filepath.Dir(report)); len(entries) != 1 {
		t.Errorf("the report's directory holds %d files, want 1 (no temporary file left)", len(entries))
	}
}

func TestDriftCompareFailOnDrift(t *testing.T) {
	ref, cur, _ := driftFiles(t)
	args := []string{"drift", "compare", "--reference", ref, "--current", cur, "--ignore", "id"}
	// One feature of four drifted: below the data set's share, so no failure.
	mustRun(t, nil, append(args, "--fail-on-drift")...)
	out, errOut, code := run(t, nil, append(args, "--fail-on-drift", "--dataset-share", "0.25")...)
	if code == 0 || !strings.Contains(errOut, "the data set drifted: 1 of 4 features") || !strings.Contains(out, "data set: DRIFT") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if (driftFoundError{}).ExitCode() != 3 {
		t.Fatal("a drift exits with status 3")
	}
}

func TestDriftCompareBadInput(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rows := func(header string, n int, row func(i int) string) string {
		var b strings.Builder
		b.WriteString(header + "\n")
		for i := range n {
			b.WriteString(row(i) + "\n")
		}
		return b.String()
	}
	ref := file("ref.csv", rows("age,plan", 40, func(i int) string { return fmt.Sprintf("%d,p%d", i, i%3) }))
	other := file("other.csv", rows("age,tier", 40, func(i int) string { return fmt.Sprintf("%d,t%d", i, i%3) }))
	textAge := file("text.csv", rows("age,plan", 40, func(i int) string {
		if i == 7 {
			return "unknown,p1"
		}
		return fmt.Sprintf("%d,p%d", i, i%3)
	}))
	empty := file("empty.csv", "")
	inf := file("inf.csv", rows("age,plan", 40, func(i int) string {
		if i == 30 {
			return "inf,p1"
		}
		return fmt.Sprintf("%d,p%d", i, i%3)
	}))
	tenure := file("tenure.json", `{"inputs": [{"name": "tenure", "datatype": "FP64"}]}`)
	schema := file("schema.yaml", "inputs:\n- name: age\n  datatype: FP64\n  kind: FEATURE_KIND_NUMERIC\n")

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no files", nil, 2, "error: drift compare needs both --reference and --current"},
		{"an argument", []string{"--reference", ref, "--current", ref, "extra"}, 2, "takes no arguments"},
		{"bad correction", []string{"--reference", ref, "--current", ref, "--correction", "holm"}, 2, `--correction "holm": want none, bonferroni or fdr`},
		{"bad p-value", []string{"--reference", ref, "--current", ref, "--p-value", "0"}, 2, "--p-value 0: want a number in (0, 1]"},
		{"unknown ignore", []string{"--reference", ref, "--current", ref, "--ignore", "idd"}, 2,
			fmt.Sprintf(`--ignore "idd": no such column in %s or %s`, ref, ref)},
		{"different columns", []string{"--reference", ref, "--current", other}, 1,
			fmt.Sprintf(`the files have different columns: "plan" in %s but not in %s; "tier" in %s but not in %s`, ref, other, other, ref)},
		{"text in a numeric column", []string{"--reference", ref, "--current", textAge}, 1,
			fmt.Sprintf(`column "age" is numeric in %s but text in %s (%s row 9: "unknown" is not a number)`, ref, textAge, textAge)},
		{"text in a schema's numeric column", []string{"--reference", ref, "--current", textAge, "--schema", schema}, 1,
			fmt.Sprintf(`%s: row 9, column "age": "unknown" is not a number, but the schema says the column is numeric`, textAge)},
		{"empty file", []string{"--reference", ref, "--current", empty}, 1, empty + ": empty file: no header row"},
		{"infinity", []string{"--reference", inf, "--current", ref}, 1, inf + `: row 32, column "age": "inf" is infinite`},
		{"schema input missing", []string{"--reference", ref, "--current", ref, "--schema", tenure}, 1,
			fmt.Sprintf(`%s: the schema's input "tenure" is not a column of %s (ignore it to leave it out)`, tenure, ref)},
		{"missing target", []string{"--reference", ref, "--current", ref, "--target", "churn"}, 1, `--target "churn" is not a column of ` + ref},
		{"all ignored", []string{"--reference", ref, "--current", ref, "--ignore", "age,plan"}, 2, "no columns left to compare"},
		{"unknown extension", []string{"--reference", schema, "--current", ref}, 1, schema + ": unknown format: the name must end in .csv or .parquet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := run(t, nil, append([]string{"drift", "compare"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.want) || out != "" {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s\nwant: %s", code, tc.code, out, errOut, tc.want)
			}
		})
	}

	// With --json, the error is JSON on stderr.
	_, errOut, code := run(t, nil, "--json", "drift", "compare", "--reference", ref, "--current", empty)
	var e struct {
		Error struct{ Message string } `json:"error"`
	}
	if code != 1 || json.Unmarshal([]byte(errOut), &e) != nil || e.Error.Message != empty+": empty file: no header row" {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
}

func TestDriftCompareNullsAndSmallSamples(t *testing.T) {
	dir := t.TempDir()
	ref, cur := filepath.Join(dir, "ref.csv"), filepath.Join(dir, "cur.csv")
	var b strings.Builder
	b.WriteString("age,plan\n")
	for i := range 40 {
		fmt.Fprintf(&b, "%d,p%d\n", i, i%3)
	}
	if err := os.WriteFile(ref, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	// Ten rows, three of them NaN or null: too few to judge (30 needed).
	if err := os.WriteFile(cur, []byte("age,plan\n1,p1\nNaN,p2\n3,\n,p0\n5,p1\nnan,p2\n7,p0\n8,p1\n9,p2\n10,p0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Dataset  compareDatasetView
		Features []map[string]any
	}
	runJSON(t, nil, &got, "drift", "compare", "--reference", ref, "--current", cur)
	if got.Dataset.Features != 0 || got.Dataset.Drifted {
		t.Errorf("dataset = %+v, want no features decided", got.Dataset)
	}
	age, plan := got.Features[0], got.Features[1]
	if age["verdict"] != "insufficient_data" || age["current_rows"] != 7.0 || age["current_nulls"] != 3.0 || age["drifted"] != false {
		t.Errorf("age = %v", age)
	}
	if plan["verdict"] != "insufficient_data" || plan["current_rows"] != 9.0 || plan["current_nulls"] != 1.0 {
		t.Errorf("plan = %v", plan)
	}
	out := mustRun(t, nil, "drift", "compare", "--reference", ref, "--current", cur)
	if !strings.Contains(out, "insufficient data") || !strings.Contains(out, "0 of 0 features drifted") {
		t.Errorf("text output:\n%s", out)
	}
}

func TestTerminalHistogram(t *testing.T) {
	for _, tc := range []struct {
		ref, cur         []float64
		wantRef, wantCur string
	}{
		{[]float64{1, 2, 4, 8}, []float64{8, 4, 2, 1}, "▁▂▄█", "█▄▂▁"},
		// Shares, not counts: ten times the rows draw the same.
		{[]float64{0, 10, 30}, []float64{0, 1, 3}, " ▃█", " ▃█"},
		{[]float64{0, 0}, []float64{0, 0}, "  ", "  "},
		{nil, nil, "", ""},
	} {
		r, c := terminalHistogram(tc.ref, tc.cur)
		if r != tc.wantRef || c != tc.wantCur {
			t.Errorf("terminalHistogram(%v, %v) = %q, %q; want %q, %q", tc.ref, tc.cur, r, c, tc.wantRef, tc.wantCur)
		}
	}
}
