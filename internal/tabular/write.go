package tabular

import (
	"encoding/csv"
	"io"
	"math"
	"strconv"
)

// WriteCSV writes a table as CSV with a header: numbers as the shortest
// text that reads back the same, text as it is, nulls as empty cells. A
// Parquet data set becomes a CSV one that reads back to the same table.
func WriteCSV(w io.Writer, t *Table) error {
	cw := csv.NewWriter(w)
	header := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		header[i] = c.Name
	}
	if err := cw.Write(header); err != nil {
		return err
	}
	rec := make([]string, len(t.Columns))
	for r := range t.Rows {
		for i, c := range t.Columns {
			switch {
			case c.Kind == Numeric && math.IsNaN(c.Numbers[r]):
				rec[i] = ""
			case c.Kind == Numeric:
				rec[i] = strconv.FormatFloat(c.Numbers[r], 'g', -1, 64)
			default:
				rec[i] = c.Strings[r]
			}
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
