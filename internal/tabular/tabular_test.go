package tabular

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeFile writes content to name in a fresh directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// sameFloats compares with NaN equal to NaN.
func sameFloats(a, b []float64) bool {
	return slices.EqualFunc(a, b, func(x, y float64) bool { return x == y || math.IsNaN(x) && math.IsNaN(y) })
}

func TestReadCSVInfersTypesAndNulls(t *testing.T) {
	p := writeFile(t, "ref.csv", "\uFEFFage,plan,score,code\n"+
		"31,gold,0.5,1\n"+
		",silver,NaN,2\n"+
		"NA,NA,1e3,x\n"+
		" 42 ,null,-2,3\n"+
		"n/a,\"gold, plus\",None,4\n")
	tab, err := Read(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if tab.Rows != 5 || tab.Format != "csv" || tab.Path != p {
		t.Fatalf("table = %d rows, format %q, path %q", tab.Rows, tab.Format, tab.Path)
	}
	age := tab.Lookup("age") // the byte-order mark is not part of the name
	if age == nil || age.Kind != Numeric || age.Declared || age.Nulls != 3 {
		t.Fatalf("age = %+v", age)
	}
	if nan := math.NaN(); !sameFloats(age.Numbers, []float64{31, nan, nan, 42, nan}) {
		t.Fatalf("age numbers = %v", age.Numbers)
	}
	plan := tab.Lookup("plan")
	// In text, only an empty field is null: "NA" and "null" are values.
	if plan.Kind != Text || plan.Nulls != 0 || !slices.Equal(plan.Strings, []string{"gold", "silver", "NA", "null", "gold, plus"}) {
		t.Fatalf("plan = %+v", plan)
	}
	score := tab.Lookup("score")
	if score.Kind != Numeric || score.Nulls != 2 || !sameFloats(score.Numbers, []float64{0.5, math.NaN(), 1000, -2, math.NaN()}) {
		t.Fatalf("score = %+v", score)
	}
	if code := tab.Lookup("code"); code.Kind != Text || code.Strings[2] != "x" {
		t.Fatalf("code = %+v", code)
	}
	if tab.Lookup("nope") != nil {
		t.Fatal("Lookup found a column that is not there")
	}
}

func TestIsNullText(t *testing.T) {
	for _, s := range []string{"", " ", "NA", "na", "N/A", "NaN", "nan", "-NaN", "null", "NULL", "None", "#N/A", "<NA>", " null "} {
		if !IsNullText(s) {
			t.Errorf("IsNullText(%q) = false", s)
		}
	}
	for _, s := range []string{"0", "Nan0", "nil", "missing", "NAN!", "N"} {
		if IsNullText(s) {
			t.Errorf("IsNullText(%q) = true", s)
		}
	}
}

func TestReadCSVKindsFromSchema(t *testing.T) {
	p := writeFile(t, "ref.csv", "zip,age\n02134,31\n10001,40\n")
	tab, err := Read(p, Options{Kinds: map[string]Kind{"zip": Text, "age": Numeric, "absent": Numeric}})
	if err != nil {
		t.Fatal(err)
	}
	zip := tab.Lookup("zip")
	if zip.Kind != Text || !zip.Declared || !slices.Equal(zip.Strings, []string{"02134", "10001"}) {
		t.Fatalf("zip = %+v", zip)
	}
	if age := tab.Lookup("age"); age.Kind != Numeric || !age.Declared {
		t.Fatalf("age = %+v", age)
	}
}

func TestReadCSVIgnore(t *testing.T) {
	// An ignored column is not parsed, so its bad values do not matter.
	p := writeFile(t, "ref.csv", "id,age,empty\nabc,1,\ninf,2,\n")
	tab, err := Read(p, Options{Kinds: map[string]Kind{"id": Numeric}, Ignore: []string{"id", "empty", "other"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Columns) != 1 || tab.Columns[0].Name != "age" || !slices.Equal(tab.Ignored, []string{"id", "empty"}) {
		t.Fatalf("columns %+v, ignored %v", tab.Columns, tab.Ignored)
	}
}

func TestReadBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, file, content string
		opts                Options
		want                string // the whole message, with $ for the path
		row                 int
		column              string
	}{
		{name: "empty file", file: "a.csv", content: "",
			want: "$: empty file: no header row"},
		{name: "header only", file: "a.csv", content: "age,plan\n",
			want: "$: no data rows after the header"},
		{name: "text in a numeric column", file: "a.csv", content: "age,plan\n31,gold\nthirty,silver\n",
			opts: Options{Kinds: map[string]Kind{"age": Numeric}},
			want: `$: row 3, column "age": "thirty" is not a number, but the schema says the column is numeric`, row: 3, column: "age"},
		{name: "text in a numeric column after a blank line", file: "a.csv", content: "age\n31\n\nthirty\n",
			opts: Options{Kinds: map[string]Kind{"age": Numeric}},
			want: `$: row 3 (line 4), column "age": "thirty" is not a number, but the schema says the column is numeric`, row: 3, column: "age"},
		{name: "infinity", file: "a.csv", content: "age\n31\n-Inf\n",
			want: `$: row 3, column "age": "-Inf" is infinite; only finite numbers can be compared (leave the cell empty for null)`, row: 3, column: "age"},
		{name: "out of range", file: "a.csv", content: "age\n1e999\n",
			want: `$: row 2, column "age": "1e999" is out of the range of a 64-bit float`, row: 2, column: "age"},
		{name: "all null", file: "a.csv", content: "age,plan\n,gold\nNaN,silver\nNA,gold\n",
			want: `$: column "age": every one of the 3 values is null; nothing to compare (ignore the column to leave it out)`, column: "age"},
		{name: "all null text", file: "a.csv", content: "age,plan\n1,\n2,null\n",
			want: `$: column "plan": every one of the 2 values is null; nothing to compare (ignore the column to leave it out)`, column: "plan"},
		{name: "short row", file: "a.csv", content: "age,plan\n1,gold\n2\n",
			want: "$: row 3: 1 field, but the header has 2", row: 3},
		{name: "unnamed column", file: "a.csv", content: ",age\n0,1\n",
			want: "$: row 1: column 1 has no name in the header (a data frame's index? write the file without it)", row: 1},
		{name: "duplicate column", file: "a.csv", content: "age,plan,age\n1,a,2\n",
			want: `$: row 1: columns 1 and 3 are both named "age"`, row: 1},
		{name: "bad quoting", file: "a.csv", content: "age,plan\n1,go\"ld\n",
			want: `$: line 2, column 5: bare " in non-quoted-field`},
		{name: "unknown extension", file: "a.json", content: "{}",
			want: "$: unknown format: the name must end in .csv or .parquet"},
		{name: "empty parquet", file: "a.parquet", content: "",
			want: "$: empty file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, tc.file, tc.content)
			_, err := Read(p, tc.opts)
			if err == nil {
				t.Fatal("no error")
			}
			if want := strings.ReplaceAll(tc.want, "$", p); err.Error() != want {
				t.Fatalf("error\n got %s\nwant %s", err, want)
			}
			var te *Error
			if !errors.As(err, &te) || te.Path != p || te.Row != tc.row || te.Column != tc.column {
				t.Fatalf("error %#v: want *Error with row %d, column %q", err, tc.row, tc.column)
			}
		})
	}
}

func TestReadMissingFile(t *testing.T) {
	_, err := Read(filepath.Join(t.TempDir(), "nope.csv"), Options{})
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
}

func TestCheckCompatible(t *testing.T) {
	read := func(name, content string) *Table {
		t.Helper()
		tab, err := Read(writeFile(t, name, content), Options{})
		if err != nil {
			t.Fatal(err)
		}
		return tab
	}
	ref := read("ref.csv", "age,plan,x\n1,a,1\n2,b,2\n")
	if err := CheckCompatible(ref, read("cur.csv", "plan,x,age\nc,3,3\n")); err != nil {
		t.Fatalf("reordered columns: %v", err)
	}

	cur := read("cur.csv", "age,plan,y,z\n1,a,1,1\n")
	err := CheckCompatible(ref, cur)
	want := `the files have different columns: "x" in ` + ref.Path + ` but not in ` + cur.Path +
		`; "y", "z" in ` + cur.Path + ` but not in ` + ref.Path
	if err == nil || err.Error() != want {
		t.Fatalf("missing columns:\n got %v\nwant %s", err, want)
	}

	cur = read("cur.csv", "age,plan,x\n1,a,1\nunknown,b,2\n")
	err = CheckCompatible(ref, cur)
	want = `column "age" is numeric in ` + ref.Path + ` but text in ` + cur.Path + ` (` + cur.Path +
		` row 3: "unknown" is not a number); fix the file, or give the column's type with a schema`
	if err == nil || err.Error() != want {
		t.Fatalf("kind mismatch:\n got %v\nwant %s", err, want)
	}
}
