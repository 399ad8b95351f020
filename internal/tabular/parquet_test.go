package tabular

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
)

// writeParquet writes rows to a Parquet file named name, in row groups of
// at most groupRows rows, and returns its path.
func writeParquet[T any](t *testing.T, name string, rows []T, groupRows int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	w := parquet.NewGenericWriter[T](f)
	for len(rows) > 0 {
		n := min(groupRows, len(rows))
		if _, err := w.Write(rows[:n]); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil { // ends the row group
			t.Fatal(err)
		}
		rows = rows[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

type parquetRow struct {
	ID       string   `parquet:"id"`
	Age      *float64 `parquet:"age,optional"`
	Count    int64    `parquet:"count"`
	Small    *int32   `parquet:"small,optional"`
	Ratio    float32  `parquet:"ratio"`
	Plan     *string  `parquet:"plan,optional"`
	Active   bool     `parquet:"active"`
	Code     int32    `parquet:"code"`
	Unsigned uint64   `parquet:"unsigned"`
}

func ptr[T any](v T) *T { return &v }

func TestReadParquetRoundTrip(t *testing.T) {
	var rows []parquetRow
	for i := range 25 {
		r := parquetRow{
			ID: strings.Repeat("x", i%3+1), Count: int64(i) * 1000, Ratio: float32(i) / 4,
			Active: i%2 == 0, Code: int32(i % 4), Unsigned: math.MaxUint64 - uint64(i),
		}
		if i%5 != 0 {
			r.Age = ptr(float64(i) + 0.5)
			r.Small = ptr(int32(-i))
			r.Plan = ptr([]string{"gold", "silver", ""}[i%3])
		}
		if i == 7 {
			r.Age = ptr(math.NaN()) // a null too
		}
		rows = append(rows, r)
	}
	p := writeParquet(t, "ref.parquet", rows, 10) // three row groups
	tab, err := Read(p, Options{Ignore: []string{"id"}, Kinds: map[string]Kind{"code": Text}})
	if err != nil {
		t.Fatal(err)
	}
	if tab.Rows != 25 || tab.Format != "parquet" || !slices.Equal(tab.Ignored, []string{"id"}) {
		t.Fatalf("table: %d rows, format %q, ignored %v", tab.Rows, tab.Format, tab.Ignored)
	}
	var names []string
	for _, c := range tab.Columns {
		names = append(names, c.Name)
	}
	if want := []string{"age", "count", "small", "ratio", "plan", "active", "code", "unsigned"}; !slices.Equal(names, want) {
		t.Fatalf("columns %v, want %v", names, want)
	}
	for i, r := range rows {
		age, small, plan := math.NaN(), math.NaN(), ""
		if r.Age != nil {
			age, small, plan = *r.Age, float64(*r.Small), *r.Plan
		}
		for _, check := range []struct {
			col  string
			got  any
			want any
		}{
			{"age", tab.Lookup("age").Numbers[i], age},
			{"count", tab.Lookup("count").Numbers[i], float64(r.Count)},
			{"small", tab.Lookup("small").Numbers[i], small},
			{"ratio", tab.Lookup("ratio").Numbers[i], float64(r.Ratio)},
			{"plan", tab.Lookup("plan").Strings[i], plan},
			{"active", tab.Lookup("active").Strings[i], map[bool]string{true: "true", false: "false"}[r.Active]},
			{"code", tab.Lookup("code").Strings[i], []string{"0", "1", "2", "3"}[r.Code]},
			{"unsigned", tab.Lookup("unsigned").Numbers[i], float64(r.Unsigned)},
		} {
			g, gf := check.got.(float64)
			w, _ := check.want.(float64)
			if check.got != check.want && !(gf && math.IsNaN(g) && math.IsNaN(w)) {
				t.Fatalf("row %d, %s = %v, want %v", i+1, check.col, check.got, check.want)
			}
		}
	}
	kinds := map[string]Kind{"age": Numeric, "plan": Text, "active": Text, "code": Text, "count": Numeric}
	for name, k := range kinds {
		if c := tab.Lookup(name); c.Kind != k || !c.Declared {
			t.Errorf("%s: kind %v, declared %v; want %v", name, c.Kind, c.Declared, k)
		}
	}
	// 5 real nulls, one NaN; plan: 5 nulls and the empty strings.
	if age, plan := tab.Lookup("age"), tab.Lookup("plan"); age.Nulls != 6 || plan.Nulls != 5+6 {
		t.Fatalf("nulls: age %d, plan %d", age.Nulls, plan.Nulls)
	}
}

func TestReadParquetErrors(t *testing.T) {
	type numbers struct {
		X *float64 `parquet:"x,optional"`
		S *string  `parquet:"s,optional"`
	}
	inf := writeParquet(t, "inf.parquet", []numbers{{X: ptr(1.0), S: ptr("a")}, {X: ptr(math.Inf(1)), S: ptr("b")}}, 10)
	allNull := writeParquet(t, "null.parquet", []numbers{{S: ptr("a")}, {X: ptr(math.NaN()), S: ptr("b")}}, 10)
	text := writeParquet(t, "text.parquet", []numbers{{X: ptr(1.0), S: ptr("1.5")}, {X: ptr(2.0), S: ptr("NA")}, {X: ptr(3.0), S: ptr("many")}}, 10)
	empty := writeParquet(t, "empty.parquet", []numbers{}, 10)
	junk := writeFile(t, "junk.parquet", "this is not parquet")
	type nested struct {
		X    float64   `parquet:"x"`
		List []float64 `parquet:"list,list"`
	}
	list := writeParquet(t, "nested.parquet", []nested{{X: 1, List: []float64{1, 2}}}, 10)

	for _, tc := range []struct {
		path string
		opts Options
		want string
	}{
		{inf, Options{}, inf + `: row 2, column "x": +Inf is infinite; only finite numbers can be compared (write null instead)`},
		{allNull, Options{}, allNull + `: column "x": every one of the 2 values is null; nothing to compare (ignore the column to leave it out)`},
		{text, Options{Kinds: map[string]Kind{"s": Numeric}}, text + `: row 3, column "s": "many" is not a number, but the schema says the column is numeric`},
		{empty, Options{}, empty + ": no data rows"},
		{list, Options{}, list + `: column "list": a nested or repeated field; only flat columns can be compared (ignore it to leave it out)`},
	} {
		_, err := Read(tc.path, tc.opts)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Read(%s):\n got %v\nwant %s", filepath.Base(tc.path), err, tc.want)
		}
	}
	if _, err := Read(junk, Options{}); err == nil || !strings.HasPrefix(err.Error(), junk+": not a readable Parquet file: ") {
		t.Errorf("junk: %v", err)
	}
	// Ignoring the nested column makes the file readable.
	if tab, err := Read(list, Options{Ignore: []string{"list"}}); err != nil || len(tab.Columns) != 1 {
		t.Errorf("nested, ignored: %v", err)
	}
	// Text forced to numbers: the CSV spellings of null are null.
	good := writeParquet(t, "good.parquet", []numbers{{X: ptr(1.0), S: ptr("1.5")}, {X: ptr(2.0), S: ptr("NA")}}, 10)
	tab, err := Read(good, Options{Kinds: map[string]Kind{"s": Numeric}})
	if err != nil {
		t.Fatal(err)
	}
	if s := tab.Lookup("s"); s.Kind != Numeric || s.Nulls != 1 || !sameFloats(s.Numbers, []float64{1.5, math.NaN()}) {
		t.Fatalf("s = %+v", s)
	}
}
