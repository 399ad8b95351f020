package cli

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/internal/churn"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// writeChurnSchema writes the bundled churn data set's feature schema,
// built from churn.Features(), as JSON, and returns its path.
func writeChurnSchema(t *testing.T, dir string) string {
	t.Helper()
	fs := &droverv1.FeatureSchema{}
	for _, f := range churn.Features() {
		in := &droverv1.Feature{Name: f.Name, Datatype: "FP64", Kind: droverv1.FeatureKind_FEATURE_KIND_NUMERIC, Description: f.Description}
		switch {
		case f.Categorical:
			in.Datatype, in.Kind, in.Categories = "BYTES", droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL, f.Categories
		default:
			if f.Integer {
				in.Datatype = "INT64"
			}
			in.Min = proto.Float64(f.Min)
			if f.Max != 0 {
				in.Max = proto.Float64(f.Max)
			}
		}
		fs.Inputs = append(fs.Inputs, in)
	}
	raw, err := protojson.Marshal(fs)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, "schema.json", string(raw))
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// churnRecords returns the bundled training split's records, header first.
func churnRecords(t *testing.T) [][]string {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(churn.TrainCSV())).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func writeCSVRecords(t *testing.T, dir, name string, recs [][]string) string {
	t.Helper()
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	if err := w.WriteAll(recs); err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, name, b.String())
}

type validationReport struct {
	Path         string `json:"path"`
	Format       string `json:"format"`
	Rows         int    `json:"rows"`
	Passed       bool   `json:"passed"`
	Expectations []struct {
		Name   string `json:"name"`
		Column string `json:"column"`
		Passed bool   `json:"passed"`
		Detail string `json:"detail"`
		Failed int    `json:"failed"`
	} `json:"expectations"`
}

func TestDatasetsValidateChurn(t *testing.T) {
	dir := t.TempDir()
	schema := writeChurnSchema(t, dir)
	data := writeFile(t, dir, "churn_train.csv", string(churn.TrainCSV()))
	classes := strings.Join(churn.Classes(), ",")

	var rep validationReport
	runJSON(t, nil, &rep, "datasets", "validate", data, "--schema", schema, "--target", churn.Target,
		"--classes", classes, "--min-rows", "1000", "--ignore", churn.IDColumn)
	if !rep.Passed || rep.Rows != churn.TrainRows || rep.Path != data || rep.Format != "csv" {
		t.Fatalf("report %+v", rep)
	}
	var got []string
	for _, x := range rep.Expectations {
		got = append(got, x.Name)
		if !x.Passed {
			t.Errorf("%+v", x)
		}
	}
	// Every feature is present, typed and null-free; the bounded ones are
	// in range, the categorical ones within their categories.
	for _, f := range churn.Features() {
		for _, rule := range []string{".present", ".type", ".nulls"} {
			if !slices.Contains(got, f.Name+rule) {
				t.Errorf("no %s%s in %v", f.Name, rule, got)
			}
		}
		if want := f.Name + ".categories"; f.Categorical != slices.Contains(got, want) {
			t.Errorf("%s listed: %v", want, !f.Categorical)
		}
		if want := f.Name + ".integer"; f.Integer != slices.Contains(got, want) {
			t.Errorf("%s listed: %v", want, !f.Integer)
		}
	}
	for _, want := range []string{"rows", "columns.unique", "target.column", "target.non_null", "target.classes"} {
		if !slices.Contains(got, want) {
			t.Errorf("no %s in %v", want, got)
		}
	}

	// The category "none" is a value, not a null.
	for _, x := range rep.Expectations {
		if x.Name == "internet_service.nulls" && x.Detail != "no nulls" {
			t.Errorf("%+v", x)
		}
	}

	// The text report: a line per expectation, each PASS.
	out := mustRun(t, nil, "datasets", "validate", data, "--schema", schema, "--target", churn.Target)
	if !strings.HasPrefix(out, data+" (csv, 4000 rows): PASSED all ") || strings.Contains(out, "FAIL") ||
		!strings.Contains(out, "tenure_months.range           PASS    all within [0, 72]") {
		t.Fatalf("%s", out)
	}
}

// TestDatasetsValidateCorrupted breaks a copy of the churn data in many
// ways and checks that one run names every failure.
func TestDatasetsValidateCorrupted(t *testing.T) {
	dir := t.TempDir()
	schema := writeChurnSchema(t, dir)
	recs := churnRecords(t)
	col := func(name string) int { return slices.Index(recs[0], name) }
	set := func(dataRow int, name, v string) { recs[dataRow+1][col(name)] = v } // data row i is file row i+2
	set(10, "tenure_months", "80")
	set(11, "tenure_months", "95")
	set(20, "contract", "annual")
	set(30, "monthly_charges", "")
	set(40, "support_calls", "2.5")
	set(50, "num_products", "many")
	set(60, churn.Target, "")
	set(70, churn.Target, "maybe")
	set(80, "total_charges", "-5")
	// payment_method is gone.
	pm := col("payment_method")
	for i := range recs {
		recs[i] = slices.Delete(recs[i], pm, pm+1)
	}
	data := writeCSVRecords(t, dir, "corrupt.csv", recs)

	args := []string{"datasets", "validate", data, "--schema", schema, "--target", churn.Target, "--classes", "no,yes", "--max-rows", "3000"}
	out, errOut, code := run(t, nil, args...)
	wantFailed := []string{"rows", "tenure_months.range", "contract.categories", "monthly_charges.nulls", "total_charges.range",
		"support_calls.integer", "payment_method.present", "num_products.type", "target.non_null", "target.classes"}
	if code != exitInvalid || errOut != "error: the data set failed 10 of 46 expectations: "+strings.Join(wantFailed, ", ")+"\n" {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	for _, line := range []string{
		data + " (csv, 4000 rows): FAILED 10 of 46 expectations",
		"rows                          FAIL    4000 rows, more than the 3000 allowed",
		"tenure_months.range           FAIL    2 values above max 72, e.g. row 12: 80, row 13: 95",
		`contract.categories           FAIL    1 value in 1 category not listed (month-to-month, one-year, two-year): "annual" (1, first at row 22)`,
		"monthly_charges.nulls         FAIL    1 null (0.025% of 4000 rows), where none are allowed, e.g. row 32",
		"total_charges.range           FAIL    1 value below min 0, e.g. row 82: -5",
		"support_calls.integer         FAIL    1 value is not a whole number, as INT64 wants, e.g. row 42: 2.5",
		`payment_method.present        FAIL    no column "payment_method" in the file`,
		`num_products.type             FAIL    1 value is not a finite number, as INT64 wants, e.g. row 52: "many"`,
		"target.non_null               FAIL    1 row has no label, e.g. row 62",
		`target.classes                FAIL    1 label in 1 class not listed (no, yes): "maybe" (1, first at row 72)`,
		"tenure_months.integer         PASS    ",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("no line %q in\n%s", line, out)
		}
	}

	// With --json, the report on stdout and the error on stderr, as JSON.
	out, errOut, code = run(t, nil, append([]string{"--json"}, args...)...)
	var rep validationReport
	var e struct {
		Error struct{ Message string } `json:"error"`
	}
	if code != exitInvalid || json.Unmarshal([]byte(out), &rep) != nil || json.Unmarshal([]byte(errOut), &e) != nil ||
		rep.Passed || !strings.HasPrefix(e.Error.Message, "the data set failed 10 of 46 expectations: rows, ") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	var failed []string
	for _, x := range rep.Expectations {
		if !x.Passed {
			failed = append(failed, x.Name)
		}
		if x.Name == "tenure_months.range" && (x.Column != "tenure_months" || x.Failed != 2) {
			t.Errorf("%+v", x)
		}
	}
	if !slices.Equal(failed, wantFailed) {
		t.Errorf("failed %v, want %v", failed, wantFailed)
	}
	if (validationFailedError{}).ExitCode() != 4 {
		t.Error("a failed validation exits with status 4")
	}
}

// TestDatasetsValidateAllNullColumn checks that a column in which every
// value is null, which package tabular refuses to read, is judged by the
// null expectations: this depends on the wording of tabular's error.
func TestDatasetsValidateAllNullColumn(t *testing.T) {
	dir := t.TempDir()
	schema := writeFile(t, dir, "schema.yaml", `inputs:
- {name: age, datatype: FP64, kind: FEATURE_KIND_NUMERIC}
- {name: plan, datatype: BYTES, kind: FEATURE_KIND_CATEGORICAL, nullable: true}
- {name: score, datatype: FP32, kind: FEATURE_KIND_NUMERIC, nullable: true}
`)
	data := writeFile(t, dir, "nulls.csv", "age,plan,score\n,,NA\n,,\n")
	var rep validationReport
	out, errOut, code := run(t, nil, "--json", "datasets", "validate", data, "--schema", schema)
	if code != exitInvalid || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	details := map[string]string{}
	for _, x := range rep.Expectations {
		details[x.Name] = x.Detail
	}
	for name, want := range map[string]string{
		"age.nulls":   "2 nulls (100% of 2 rows), where none are allowed, e.g. row 2, row 3",
		"plan.nulls":  "2 nulls (100% of 2 rows); the feature is nullable",
		"score.nulls": "2 nulls (100% of 2 rows); the feature is nullable",
		"age.present": "a numeric column",
	} {
		if details[name] != want {
			t.Errorf("%s: %q, want %q", name, details[name], want)
		}
	}
	if !strings.Contains(errOut, "the data set failed 1 of ") {
		t.Errorf("stderr: %s", errOut)
	}
}

type validateParquetRow struct {
	Age  string `parquet:"age"` // numbers written as strings
	Plan int64  `parquet:"plan"`
}

func TestDatasetsValidateParquet(t *testing.T) {
	dir := t.TempDir()
	schema := writeFile(t, dir, "schema.yaml", `inputs:
- {name: age, datatype: INT32, kind: FEATURE_KIND_NUMERIC, min: 0}
- {name: plan, datatype: INT64, kind: FEATURE_KIND_CATEGORICAL, categories: ["1", "2"]}
`)
	path := filepath.Join(dir, "data.parquet")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := parquet.Write(f, []validateParquetRow{{"30", 1}, {"-4", 2}, {"old", 3}}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := run(t, nil, "datasets", "validate", path, "--schema", schema)
	if code != exitInvalid || errOut != "error: the data set failed 3 of 12 expectations: age.type, age.range, plan.categories\n" {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	for _, line := range []string{
		path + " (parquet, 3 rows): FAILED 3 of 12 expectations",
		`age.type         FAIL    1 value is not a finite number, as INT32 wants, e.g. row 3: "old"`,
		"age.range        FAIL    1 value below min 0, e.g. row 2: -4",
		`plan.categories  FAIL    1 value in 1 category not listed (1, 2): "3" (1, first at row 3)`,
	} {
		if !strings.Contains(out, line) {
			t.Errorf("no line %q in\n%s", line, out)
		}
	}
}

func TestDatasetsValidateBadInput(t *testing.T) {
	dir := t.TempDir()
	schema := writeFile(t, dir, "schema.yaml", "inputs:\n- {name: age, datatype: FP64, kind: FEATURE_KIND_NUMERIC}\n")
	data := writeFile(t, dir, "data.csv", "id,age,label\n1,30,a\n2,40,b\n")
	noSchema := writeFile(t, dir, "empty.yaml", "outputs: []\n")
	badSchema := writeFile(t, dir, "bad.yaml", "inputs:\n- {name: age, datatype: FLOAT}\n")
	notYAML := writeFile(t, dir, "notyaml.yaml", "inputs: [\n")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no file", []string{"--schema", schema}, 2, "datasets validate takes one data file, .csv or .parquet (got 0 arguments)"},
		{"no schema", []string{data}, 2, "datasets validate needs --schema"},
		{"missing file", []string{filepath.Join(dir, "nope.csv"), "--schema", schema}, 1, "nope.csv: no such file or directory"},
		{"unknown format", []string{schema, "--schema", schema}, 1, schema + ": unknown format: the name must end in .csv or .parquet"},
		{"missing schema", []string{data, "--schema", filepath.Join(dir, "nope.yaml")}, 1, "nope.yaml: no such file or directory"},
		{"schema not YAML", []string{data, "--schema", notYAML}, 1, "schema " + notYAML + ": "},
		{"schema without inputs", []string{data, "--schema", noSchema}, 1, noSchema + ": schema: no inputs"},
		{"bad datatype", []string{data, "--schema", badSchema}, 1, badSchema + `: schema: input age: datatype "FLOAT" is not one of the protocol's datatypes`},
		{"bad max-null", []string{data, "--schema", schema, "--max-null", "age=2"}, 2, "--max-null age=2: want a share in [0, 1], e.g. 0.05"},
		{"max-null without share", []string{data, "--schema", schema, "--max-null", "age"}, 2, `--max-null "age": want key=value`},
		{"classes without target", []string{data, "--schema", schema, "--classes", "a,b"}, 2, "target classes are given without a target"},
		{"crossed rows", []string{data, "--schema", schema, "--min-rows", "10", "--max-rows", "5"}, 2, "the minimum row count 10 is above the maximum 5"},
		{"ignore an input", []string{data, "--schema", schema, "--ignore", "age"}, 2, `--ignore "age" is an input of the schema, which must be checked`},
		{"ignore the target", []string{data, "--schema", schema, "--target", "label", "--ignore", "label"}, 2, `--ignore "label" is the --target, which must be checked`},
		{"ignore an unknown column", []string{data, "--schema", schema, "--ignore", "idd"}, 2, `--ignore "idd": no such column in ` + data},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := run(t, nil, append([]string{"datasets", "validate"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.want) || out != "" {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s\nwant: %s", code, tc.code, out, errOut, tc.want)
			}
		})
	}
	// A file that fails with a bad value in a way tabular reports is an
	// error too, not a report.
	inf := writeFile(t, dir, "inf.csv", "age\n1\ninf\n")
	if _, errOut, code := run(t, nil, "datasets", "validate", inf, "--schema", schema); code != 1 ||
		!strings.Contains(errOut, inf+`: row 3, column "age": "inf" is infinite`) {
		t.Fatalf("exit %d, %s", code, errOut)
	}
	// The ignored id is fine; the file passes.
	mustRun(t, nil, "datasets", "validate", data, "--schema", schema, "--ignore", "id", "--target", "label", "--classes", "a,b")
}
