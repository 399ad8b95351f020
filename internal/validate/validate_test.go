package validate

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/internal/tabular"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

const (
	numeric     = droverv1.FeatureKind_FEATURE_KIND_NUMERIC
	categorical = droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL
	binary      = droverv1.FeatureKind_FEATURE_KIND_BINARY
)

// testSchema has a feature of each sort the rules tell apart.
func testSchema() *droverv1.FeatureSchema {
	return &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{
		{Name: "age", Datatype: "INT8", Kind: numeric, Min: proto.Float64(0), Max: proto.Float64(120)},
		{Name: "income", Datatype: "FP64", Kind: numeric, Min: proto.Float64(0), Nullable: true},
		{Name: "plan", Datatype: "BYTES", Kind: categorical, Categories: []string{"gold", "silver", "bronze"}},
		{Name: "active", Datatype: "BOOL"},
		{Name: "promo", Datatype: "BYTES", Kind: binary},
	}}
}

// readCSV reads CSV text as package tabular does a file, the categorical
// columns as text.
func readCSV(t *testing.T, text string) *tabular.Table {
	t.Helper()
	tab, err := tabular.ReadCSV(strings.NewReader(text), "data.csv", tabular.Options{
		Kinds: map[string]tabular.Kind{"plan": tabular.Text, "promo": tabular.Text, "active": tabular.Text, "label": tabular.Text}})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// csvRows returns a CSV with a header and n rows made by row.
func csvRows(header string, n int, row func(i int) string) string {
	var b strings.Builder
	b.WriteString(header + "\n")
	for i := range n {
		b.WriteString(row(i) + "\n")
	}
	return b.String()
}

const testHeader = "id,age,income,plan,active,promo,label"

// goodRow is row i of a data set that passes every expectation.
func goodRow(i int) string {
	return fmt.Sprintf("%d,%d,%d.5,%s,%s,%s,%s", i, 20+i%50, 1000+i, []string{"gold", "silver", "bronze"}[i%3],
		[]string{"true", "false"}[i%2], []string{"yes", "no"}[i%2], []string{"a", "b"}[i%2])
}

// byName indexes a report's results, failing on a repeated name.
func byName(t *testing.T, r *Report) map[string]Result {
	t.Helper()
	m := map[string]Result{}
	for _, x := range r.Expectations {
		if _, dup := m[x.Name]; dup {
			t.Fatalf("expectation %s listed twice", x.Name)
		}
		m[x.Name] = x
	}
	return m
}

func names(r *Report) []string {
	var out []string
	for _, x := range r.Expectations {
		out = append(out, x.Name)
	}
	return out
}

func TestCheckPasses(t *testing.T) {
	tab := readCSV(t, csvRows(testHeader, 40, goodRow))
	r := Check(tab, testSchema(), Expectations{MinRows: 10, MaxRows: 100, Target: "label", TargetClasses: []string{"a", "b"}})
	want := []string{
		"rows", "columns.unique",
		"age.present", "age.type", "age.integer", "age.range", "age.nulls",
		"income.present", "income.type", "income.range", "income.nulls",
		"plan.present", "plan.type", "plan.categories", "plan.nulls",
		"active.present", "active.type", "active.nulls",
		"promo.present", "promo.type", "promo.categories", "promo.nulls",
		"target.column", "target.non_null", "target.classes",
	}
	if got := names(r); !slices.Equal(got, want) {
		t.Fatalf("expectations\n%v\nwant\n%v", got, want)
	}
	if !r.Passed || r.Rows != 40 || r.Path != "data.csv" || r.Format != "csv" {
		t.Fatalf("report %+v", r)
	}
	for _, x := range r.Expectations {
		if !x.Passed || x.Failed != 0 || x.Detail == "" {
			t.Errorf("%+v", x)
		}
	}
	got := byName(t, r)
	for name, detail := range map[string]string{
		"rows":             "40 rows, within [10, 100]",
		"columns.unique":   "7 columns, each named once",
		"age.present":      "a numeric column",
		"age.type":         "40 values, all numbers",
		"age.integer":      "whole numbers within INT8's range [-128, 127]",
		"age.range":        "all within [0, 120]",
		"income.range":     "all at least 0",
		"plan.categories":  "every value is one of the 3 categories (gold, silver, bronze)",
		"plan.type":        "BYTES: any value goes",
		"active.type":      "40 values, all booleans",
		"promo.categories": `2 distinct values: "yes", "no"`,
		"target.classes":   "every label is one of the 2 classes (a, b)",
	} {
		if got[name].Detail != detail {
			t.Errorf("%s: %q, want %q", name, got[name].Detail, detail)
		}
	}
}

// TestCheckFailures has one data set break each rule, and checks that the
// report names every failure, with counts and examples, at once.
func TestCheckFailures(t *testing.T) {
	text := csvRows(testHeader, 30, func(i int) string {
		switch i {
		case 3: // row 5
			return "3,200,-1,platinum,maybe,yes,"
		case 4:
			return "4,2.5,10,gold,1,no,c"
		case 5:
			return "5,unknown,,gold,0,perhaps,a"
		case 6:
			return "6,-300,,gold,yes,no,a"
		}
		return goodRow(i)
	})
	e := Expectations{MinRows: 50, Target: "label", TargetClasses: []string{"a", "b"}}
	r := Check(readCSV(t, text), testSchema(), e)
	if r.Passed {
		t.Fatal("passed")
	}
	var failed []string
	for _, x := range r.Failures() {
		failed = append(failed, x.Name)
	}
	want := []string{"rows", "age.type", "age.integer", "age.range", "income.range", "plan.categories",
		"active.type", "promo.categories", "target.non_null", "target.classes"}
	if !slices.Equal(failed, want) {
		t.Fatalf("failed %v, want %v", failed, want)
	}
	got := byName(t, r)
	for _, tc := range []struct {
		name   string
		failed int
		detail string
	}{
		{"rows", 0, "30 rows, fewer than the 50 wanted"},
		{"age.type", 1, `1 value is not a finite number, as INT8 wants, e.g. row 7: "unknown"`},
		{"age.integer", 3, `1 value is not a whole number, as INT8 wants, e.g. row 6: 2.5; 2 values outside INT8's range [-128, 127], e.g. row 5: 200, row 8: -300`},
		{"age.range", 2, "1 value below min 0, e.g. row 8: -300; 1 value above max 120, e.g. row 5: 200"},
		{"plan.categories", 1, `1 value in 1 category not listed (gold, silver, bronze): "platinum" (1, first at row 5)`},
		{"active.type", 2, `2 values are not booleans (true/false or 1/0), as BOOL wants, e.g. row 5: "maybe", row 8: "yes"`},
		{"promo.categories", 1, `3 distinct values, where a binary feature takes at most 2: "no" (15, first at row 3), "yes" (14, first at row 2), "perhaps" (1, first at row 7)`},
		{"target.non_null", 1, "1 row has no label, e.g. row 5"},
		{"target.classes", 1, `1 label in 1 class not listed (a, b): "c" (1, first at row 6)`},
		// Nulls in a nullable feature pass.
		{"income.nulls", 0, "2 nulls (6.67% of 30 rows); the feature is nullable"},
		{"income.range", 1, "1 value below min 0, e.g. row 5: -1"},
	} {
		x := got[tc.name]
		if x.Failed != tc.failed || x.Detail != tc.detail {
			t.Errorf("%s: failed %d, %q\nwant failed %d, %q", tc.name, x.Failed, x.Detail, tc.failed, tc.detail)
		}
	}
	if got["income.range"].Passed {
		t.Error("income.range passed")
	}
}

func TestCheckNulls(t *testing.T) {
	text := csvRows("age,income,plan", 20, func(i int) string {
		if i%5 == 0 { // 4 of 20 rows
			return ",,"
		}
		return fmt.Sprintf("%d,%d,gold", i, i)
	})
	schema := &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{
		{Name: "age", Datatype: "FP64", Kind: numeric},
		{Name: "income", Datatype: "FP64", Kind: numeric, Nullable: true},
		{Name: "plan", Datatype: "BYTES", Kind: categorical},
	}}
	for _, tc := range []struct {
		name    string
		shares  map[string]float64
		age     string
		income  string
		plan    string
		passAll bool
	}{
		{"defaults", nil,
			"4 nulls (20% of 20 rows), where none are allowed, e.g. row 2, row 7, row 12, row 17",
			"4 nulls (20% of 20 rows); the feature is nullable",
			"4 nulls (20% of 20 rows), where none are allowed, e.g. row 2, row 7, row 12, row 17", false},
		{"shares", map[string]float64{"age": 0.2, "income": 0.1, "plan": 0.5},
			"4 nulls (20% of 20 rows), at most 20% allowed",
			"4 nulls (20% of 20 rows), above the 10% allowed, e.g. row 2, row 7, row 12, row 17",
			"4 nulls (20% of 20 rows), at most 50% allowed", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := tabular.ReadCSV(strings.NewReader(text), "n.csv", tabular.Options{Kinds: map[string]tabular.Kind{"plan": tabular.Text}})
			if err != nil {
				t.Fatal(err)
			}
			got := byName(t, Check(tab, schema, Expectations{MaxNullShare: tc.shares}))
			for name, want := range map[string]string{"age.nulls": tc.age, "income.nulls": tc.income, "plan.nulls": tc.plan} {
				x := got[name]
				if x.Detail != want || x.Passed != !strings.Contains(want, ", e.g.") {
					t.Errorf("%s: %+v, want %q", name, x, want)
				}
				if !x.Passed && x.Failed != 4 {
					t.Errorf("%s: failed %d, want 4", name, x.Failed)
				}
			}
		})
	}
}

// TestCheckNoneIsACategory: in a text column, "none" and "NA" are values
// (categories), not nulls; only an empty field is null.
func TestCheckNoneIsACategory(t *testing.T) {
	schema := &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{
		{Name: "internet", Datatype: "BYTES", Kind: categorical, Categories: []string{"dsl", "none"}},
	}}
	tab, err := tabular.ReadCSV(strings.NewReader("internet\ndsl\nnone\nNA\n\"\"\n"), "i.csv", tabular.Options{Kinds: map[string]tabular.Kind{"internet": tabular.Text}})
	if err != nil {
		t.Fatal(err)
	}
	r := Check(tab, schema, Expectations{})
	byN := byName(t, r)
	if x := byN["internet.categories"]; x.Passed || !strings.Contains(x.Detail, `"NA"`) {
		t.Errorf("categories: %+v", x)
	}
	if x := byN["internet.nulls"]; x.Passed || x.Failed != 1 {
		t.Errorf("nulls: %+v", x)
	}
}

func TestCheckColumns(t *testing.T) {
	// Read as tabular would with --ignore notes.
	tab, err := tabular.ReadCSV(strings.NewReader(csvRows("id,age,notes,plan", 3, func(i int) string { return fmt.Sprintf("%d,%d,x,gold", i, i) })),
		"c.csv", tabular.Options{Ignore: []string{"notes"}})
	if err != nil {
		t.Fatal(err)
	}
	schema := &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{
		{Name: "age", Datatype: "FP64", Kind: numeric},
		{Name: "tenure", Datatype: "FP64", Kind: numeric},
		{Name: "notes", Datatype: "BYTES"},
	}}
	r := Check(tab, schema, Expectations{Target: "churn", MaxNullShare: map[string]float64{"id": 0, "comment": 0.5}})
	want := []string{"rows", "columns.unique", "age.present", "age.type", "age.nulls", "tenure.present", "notes.present",
		"comment.present", "id.present", "id.nulls", "target.column"}
	if got := names(r); !slices.Equal(got, want) {
		t.Fatalf("expectations %v, want %v", got, want)
	}
	got := byName(t, r)
	for name, detail := range map[string]string{
		"tenure.present":  `no column "tenure" in the file`,
		"notes.present":   `the column "notes" was left out (ignored) when the file was read`,
		"comment.present": `no column "comment" in the file`,
		"target.column":   `no column "churn" in the file`,
	} {
		if x := got[name]; x.Passed || x.Detail != detail {
			t.Errorf("%s: %+v, want failed: %q", name, x, detail)
		}
	}
	if x := got["id.nulls"]; !x.Passed {
		t.Errorf("id.nulls: %+v", x)
	}

	// A table made in memory may repeat a name; package tabular's files cannot.
	dup := &tabular.Table{Path: "mem", Rows: 1, Columns: []tabular.Column{
		{Name: "a", Kind: tabular.Numeric, Numbers: []float64{1}},
		{Name: "a", Kind: tabular.Numeric, Numbers: []float64{2}},
		{Name: "b", Kind: tabular.Text, Strings: []string{"x"}},
	}, Ignored: []string{"b"}}
	x := byName(t, Check(dup, schema, Expectations{}))["columns.unique"]
	if x.Passed || x.Failed != 2 || x.Detail != `2 names repeated: "a" (2 times), "b" (2 times)` {
		t.Errorf("columns.unique: %+v", x)
	}
}

func TestCheckRows(t *testing.T) {
	tab := readCSV(t, csvRows(testHeader, 40, goodRow))
	for _, tc := range []struct {
		e      Expectations
		passed bool
		detail string
	}{
		{Expectations{}, true, "40 rows, at least 1"},
		{Expectations{MinRows: 40, MaxRows: 40}, true, "40 rows, within [40, 40]"},
		{Expectations{MinRows: 41}, false, "40 rows, fewer than the 41 wanted"},
		{Expectations{MaxRows: 39}, false, "40 rows, more than the 39 allowed"},
	} {
		x := byName(t, Check(tab, testSchema(), tc.e))["rows"]
		if x.Passed != tc.passed || x.Detail != tc.detail {
			t.Errorf("%+v: %+v, want %q", tc.e, x, tc.detail)
		}
	}
	x := checkRows(0, Expectations{})
	if x.Passed || x.Detail != "0 rows, fewer than the 1 wanted" {
		t.Errorf("no rows: %+v", x)
	}
}

func TestCheckCategoriesExamples(t *testing.T) {
	// Seven unlisted categories, c6 the most frequent: the detail names the
	// five most frequent and counts the rest.
	text := csvRows("plan", 40, func(i int) string {
		switch {
		case i < 20:
			return "gold"
		case i < 26:
			return "c6"
		}
		return fmt.Sprintf("c%d", i%7)
	})
	tab, err := tabular.ReadCSV(strings.NewReader(text), "p.csv", tabular.Options{})
	if err != nil {
		t.Fatal(err)
	}
	schema := &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{{Name: "plan", Datatype: "BYTES", Kind: categorical, Categories: []string{"gold", "silver"}}}}
	x := byName(t, Check(tab, schema, Expectations{}))["plan.categories"]
	want := `20 values in 7 categories not listed (gold, silver): "c6" (8, first at row 22), "c5" (2, first at row 28), ` +
		`"c0" (2, first at row 30), "c1" (2, first at row 31), "c2" (2, first at row 32), and 2 more`
	if x.Passed || x.Failed != 20 || x.Detail != want {
		t.Fatalf("%+v\nwant %q", x, want)
	}
}

func TestCheckIntegerRanges(t *testing.T) {
	for _, tc := range []struct {
		datatype string
		values   []float64
		failed   int
		detail   string
	}{
		{"UINT8", []float64{0, 255}, 0, "whole numbers within UINT8's range [0, 255]"},
		{"UINT8", []float64{-1, 256, 3}, 2, "2 values outside UINT8's range [0, 255], e.g. row 1: -1, row 2: 256"},
		{"INT16", []float64{-32769, 0.25}, 2, "1 value is not a whole number, as INT16 wants, e.g. row 2: 0.25; 1 value outside INT16's range [-32768, 32767], e.g. row 1: -32769"},
		{"INT64", []float64{1 << 53, 1 << 54}, 1, "1 value outside INT64's range [-9007199254740992, 9007199254740992], e.g. row 2: 1.8014398509481984e+16"},
		{"UINT32", []float64{math.MaxUint32}, 0, "whole numbers within UINT32's range [0, 4294967295]"},
	} {
		// A Parquet table: rows are numbered from 1.
		tab := &tabular.Table{Path: "x.parquet", Format: "parquet", Rows: len(tc.values),
			Columns: []tabular.Column{{Name: "n", Kind: tabular.Numeric, Numbers: tc.values}}}
		schema := &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{{Name: "n", Datatype: tc.datatype}}}
		x := byName(t, Check(tab, schema, Expectations{}))["n.integer"]
		if x.Failed != tc.failed || x.Passed != (tc.failed == 0) || x.Detail != tc.detail {
			t.Errorf("%s %v: %+v\nwant %q", tc.datatype, tc.values, x, tc.detail)
		}
	}
}

func TestCheckTextNumbers(t *testing.T) {
	// A Parquet file may hold numbers as strings: they are numbers, and
	// what is not a number fails the type.
	tab := &tabular.Table{Path: "x.parquet", Format: "parquet", Rows: 4, Columns: []tabular.Column{
		{Name: "n", Kind: tabular.Text, Strings: []string{"1", " 2.5 ", "inf", "x"}},
		{Name: "b", Kind: tabular.Numeric, Numbers: []float64{0, 1, 2, math.NaN()}, Nulls: 1},
	}}
	schema := &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{
		{Name: "n", Datatype: "FP32", Max: proto.Float64(2)},
		{Name: "b", Datatype: "BOOL", Nullable: true},
	}}
	got := byName(t, Check(tab, schema, Expectations{}))
	for name, want := range map[string]string{
		"n.type":  `2 values are not finite numbers, as FP32 wants, e.g. row 3: "inf", row 4: "x"`,
		"n.range": `1 value above max 2, e.g. row 2: " 2.5 "`,
		"b.type":  "1 value is not a boolean (true/false or 1/0), as BOOL wants, e.g. row 3: 2",
	} {
		if x := got[name]; x.Passed || x.Detail != want {
			t.Errorf("%s: %+v\nwant %q", name, x, want)
		}
	}
}

func TestCheckBadArguments(t *testing.T) {
	// Nothing here may panic; each problem is a failed expectation.
	r := Check(nil, nil, Expectations{MinRows: -1})
	if r.Passed || !slices.Equal(names(r), []string{"schema", "expectations", "rows"}) {
		t.Fatalf("%+v", r)
	}
	bad := &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{
		{Name: "a", Datatype: "FP64", Min: proto.Float64(2), Max: proto.Float64(1)},
		{Name: "a", Datatype: "FP64"},
		{Name: "", Datatype: "FP64"},
		{Name: "m", Datatype: "FLOAT"},
		{Name: "v", Datatype: "FP64", Shape: []int64{3}},
		{Name: "nan", Datatype: "FP64", Min: proto.Float64(math.NaN())},
	}}
	err := CheckSchema(bad)
	want := `schema: input a: min 2 is above max 1
schema: input a appears twice
schema: input 2 has no name
schema: input m: datatype "FLOAT" is not one of the protocol's datatypes
schema: input v: shape [3] is not a scalar's; a column holds one value per row
schema: input nan: a bound is not a number`
	if err == nil || err.Error() != want {
		t.Fatalf("CheckSchema: %v\nwant\n%s", err, want)
	}
	tab := &tabular.Table{Rows: 2, Columns: []tabular.Column{
		{Name: "a", Kind: tabular.Numeric, Numbers: []float64{1, 2}},
		{Name: "m", Kind: tabular.Text, Strings: []string{"x", ""}},
		// A column shorter than the table is read as far as it goes.
		{Name: "v", Kind: tabular.Numeric, Numbers: []float64{1}},
		{Name: "nan", Kind: tabular.Kind(7)},
	}}
	r = Check(tab, bad, Expectations{MaxNullShare: map[string]float64{"m": math.NaN()}})
	if r.Passed || r.Expectations[0].Name != "schema" || r.Expectations[1].Name != "expectations" {
		t.Fatalf("%+v", r)
	}
	if x := byName(t, r)["m.nulls"]; x.Passed {
		t.Errorf("a NaN share allowed nulls: %+v", x)
	}

	if err := (Expectations{MinRows: 5, MaxRows: 4, MaxNullShare: map[string]float64{"x": 1.5},
		TargetClasses: []string{"a", "a", ""}}).Validate(); err == nil || err.Error() != `the minimum row count 5 is above the maximum 4
the null share 1.5 allowed for "x" is not in [0, 1]
target classes are given without a target
the target class "a" is listed twice
a target class is empty` {
		t.Errorf("Validate: %v", err)
	}
	if err := CheckSchema(nil); err == nil || err.Error() != "schema: no inputs" {
		t.Errorf("CheckSchema(nil): %v", err)
	}
	if err := CheckSchema(testSchema()); err != nil {
		t.Error(err)
	}
}

func TestReportJSON(t *testing.T) {
	r := Check(readCSV(t, csvRows(testHeader, 3, goodRow)), testSchema(), Expectations{MinRows: 10})
	raw, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, []string{"expectations", "format", "passed", "path", "rows"}) {
		t.Fatalf("keys %v", keys)
	}
	first := got["expectations"].([]any)[0].(map[string]any)
	if keys := slices.Sorted(maps.Keys(first)); !slices.Equal(keys, []string{"column", "detail", "failed", "name", "passed"}) {
		t.Fatalf("result keys %v", keys)
	}
	if first["name"] != "rows" || first["passed"] != false || first["column"] != "" || first["failed"] != 0.0 ||
		got["passed"] != false || got["rows"] != 3.0 {
		t.Fatalf("%s", raw)
	}
}
