package tabular

import (
	"bytes"
	"math"
	"testing"
)

// TestWriteCSVRoundTrip: a Parquet table written as CSV reads back to
// the same columns, values and nulls.
func TestWriteCSVRoundTrip(t *testing.T) {
	var rows []parquetRow
	for i := range 12 {
		r := parquetRow{ID: string(rune('a' + i)), Count: int64(i) * 7, Ratio: float32(i) / 3, Code: int32(i % 4), Small: ptr(int32(i))}
		if i%4 != 0 {
			r.Age = ptr(float64(i) + 0.1)
			r.Plan = ptr([]string{"gold", "silver, with a comma", "\"quoted\""}[i%3])
		}
		rows = append(rows, r)
	}
	p := writeParquet(t, "in.parquet", rows, 5)
	in, err := Read(p, Options{Kinds: map[string]Kind{"code": Text}})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteCSV(&buf, in); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]Kind{}
	for _, c := range in.Columns {
		kinds[c.Name] = c.Kind
	}
	out, err := ReadCSV(&buf, "out.csv", Options{Kinds: kinds})
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if out.Rows != in.Rows || len(out.Columns) != len(in.Columns) {
		t.Fatalf("%d rows, %d columns; want %d, %d", out.Rows, len(out.Columns), in.Rows, len(in.Columns))
	}
	for i, c := range in.Columns {
		o := out.Columns[i]
		if o.Name != c.Name || o.Kind != c.Kind || o.Nulls != c.Nulls {
			t.Fatalf("column %s: %s %v %d nulls; want %v %d", c.Name, o.Name, o.Kind, o.Nulls, c.Kind, c.Nulls)
		}
		for r := range in.Rows {
			if c.Kind == Numeric {
				if a, b := c.Numbers[r], o.Numbers[r]; a != b && !(math.IsNaN(a) && math.IsNaN(b)) {
					t.Fatalf("%s[%d] = %v, want %v", c.Name, r, b, a)
				}
			} else if c.Strings[r] != o.Strings[r] {
				t.Fatalf("%s[%d] = %q, want %q", c.Name, r, o.Strings[r], c.Strings[r])
			}
		}
	}
}
