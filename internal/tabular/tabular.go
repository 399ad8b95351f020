// Package tabular reads a table of features from a CSV or Parquet file into
// typed columns: numbers or text, with nulls, checked cell by cell so that
// a bad value is reported with its file, row and column rather than
// silently skewing a statistic.
//
// The rules, the same for every caller:
//
//   - The format follows the file's extension: ".csv" or ".parquet" (in
//     any case). Any other extension is an error; compressed CSV is not
//     read.
//   - A CSV file's first record is its header. Rows are counted from the
//     header, which is row 1, so the first data row is row 2 (the file's
//     line number, unless blank lines or quoted line breaks intervene, in
//     which case the error names the line too). A Parquet file has no
//     header: its first row is row 1.
//   - Null: in CSV, an empty field; in a numeric column also, ignoring
//     case and surrounding spaces, NA, N/A, NaN, -NaN, null, None, #N/A or
//     <NA> (see [IsNullText]) — in a text column those are values, since
//     "none" or "NA" may be categories. In Parquet, a null value or an
//     empty string. A NaN in a numeric column is a null, in either format.
//   - Types: a column listed in [Options.Kinds] takes that kind; any
//     other CSV column is numeric when every non-null value parses as a
//     float and text otherwise. A Parquet column takes its physical
//     type: integers and floats are numbers (decimals scaled, unsigned
//     integers read as unsigned, dates and timestamps as their integer
//     encoding), booleans and byte arrays are text; INT96 and
//     fixed-length byte arrays are not supported.
//   - Errors, each a [*Error] naming the file and, where it applies, the
//     row and column: a text value in a column the schema says is
//     numeric, an infinite or out-of-range number, an empty file, a
//     header with no data rows, a row with the wrong number of fields, a
//     duplicate or unnamed column, and a column in which every value is
//     null (list it in [Options.Ignore] to leave it out).
package tabular

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Kind is a column's type.
type Kind int

const (
	// Inferred, in [Options.Kinds], leaves a column's kind to its values.
	Inferred Kind = iota
	// Numeric columns hold numbers, in [Column.Numbers].
	Numeric
	// Text columns hold strings (categories), in [Column.Strings].
	Text
)

// String returns "numeric", "text" or "inferred".
func (k Kind) String() string {
	switch k {
	case Numeric:
		return "numeric"
	case Text:
		return "text"
	case Inferred:
		return "inferred"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Options says how to read a table.
type Options struct {
	// Kinds gives columns their kinds, e.g. from a model's feature
	// schema. A column not listed, or listed as Inferred, takes the kind
	// its values (CSV) or its physical type (Parquet) suggest. A listed
	// name that is not a column of the file is not an error.
	Kinds map[string]Kind
	// Ignore names columns to leave out unread, e.g. an id. A name that
	// is not a column of the file is not an error; see [Table.Ignored].
	Ignore []string
}

// Table is a file's columns, all of the same length.
type Table struct {
	// Path is the file read.
	Path string
	// Format is "csv" or "parquet".
	Format string
	// Rows is the number of data rows (a CSV file's header not counted).
	Rows int
	// Columns are in the file's order, ignored columns left out.
	Columns []Column
	// Ignored lists the columns of the file that [Options.Ignore] left
	// out, in the file's order.
	Ignored []string
}

// Column is one column's values: Numbers for a numeric column (NaN is
// null), Strings for a text column ("" is null).
type Column struct {
	// Name is the column's name in the file.
	Name string
	// Kind is Numeric or Text.
	Kind Kind
	// Numbers holds a numeric column's values, NaN for null.
	Numbers []float64
	// Strings holds a text column's values, "" for null.
	Strings []string
	// Nulls counts the null values.
	Nulls int
	// Declared says Kind came from [Options.Kinds] or from the file's
	// own types (Parquet) rather than from the values.
	Declared bool

	// firstText is, for a CSV column inferred as text, the first value
	// that is not a number: evidence for a mismatch message.
	firstText *cellRef
}

// cellRef points at one cell of a file.
type cellRef struct {
	row, line int
	value     string
}

// Lookup returns the column named name, or nil.
func (t *Table) Lookup(name string) *Column {
	for i := range t.Columns {
		if t.Columns[i].Name == name {
			return &t.Columns[i]
		}
	}
	return nil
}

// Error is a problem with a file's contents.
type Error struct {
	// Path is the file.
	Path string
	// Row is the 1-based row (a CSV header is row 1), or 0 when the
	// problem is not in one row.
	Row int
	// Line is the CSV line where the row starts when it differs from
	// Row, or 0.
	Line int
	// Column names the column, or "" when the problem is not in one.
	Column string
	// Msg says what is wrong.
	Msg string
}

// Error returns "path: row R, column "c": msg", leaving out what does
// not apply.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Path)
	b.WriteString(": ")
	if e.Row > 0 {
		fmt.Fprintf(&b, "row %d", e.Row)
		if e.Line > 0 && e.Line != e.Row {
			fmt.Fprintf(&b, " (line %d)", e.Line)
		}
		if e.Column != "" {
			b.WriteString(", ")
		} else {
			b.WriteString(": ")
		}
	}
	if e.Column != "" {
		fmt.Fprintf(&b, "column %q: ", e.Column)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Read reads the CSV or Parquet file at path, choosing by its extension.
func Read(path string, opts Options) (*Table, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return ReadCSV(f, path, opts)
	case ".parquet":
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		return ReadParquet(f, st.Size(), path, opts)
	default:
		return nil, &Error{Path: path, Msg: "unknown format: the name must end in .csv or .parquet"}
	}
}

// nullTexts are the CSV spellings of null, lower case.
var nullTexts = map[string]bool{
	"": true, "na": true, "n/a": true, "nan": true, "-nan": true,
	"null": true, "none": true, "#n/a": true, "<na>": true,
}

// IsNullText reports whether a CSV field means null: empty, or (ignoring
// case and surrounding spaces) NA, N/A, NaN, -NaN, null, None, #N/A or
// <NA>.
func IsNullText(s string) bool {
	s = strings.TrimSpace(s)
	if len(s) > 4 {
		return false
	}
	return nullTexts[strings.ToLower(s)]
}

// errNotNumber marks text that is not a number.
var errNotNumber = errors.New("not a number")

// parseNumber parses a non-null field as a finite float. NaN spelled in
// any way ParseFloat accepts is returned as NaN (a null); infinities and
// values out of float64's range are errors.
func parseNumber(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("%q is out of the range of a 64-bit float", s)
		}
		return 0, errNotNumber
	}
	if math.IsInf(v, 0) {
		return 0, fmt.Errorf("%q is infinite; only finite numbers can be compared (leave the cell empty for null)", s)
	}
	return v, nil
}

// checkNotAllNull fails when a column has rows and every one is null.
func checkNotAllNull(path string, c *Column, rows int) error {
	if rows > 0 && c.Nulls == rows {
		return &Error{Path: path, Column: c.Name,
			Msg: fmt.Sprintf("every one of the %d values is null; nothing to compare (ignore the column to leave it out)", rows)}
	}
	return nil
}

// ignoreSet returns opts.Ignore as a set.
func ignoreSet(opts Options) map[string]bool {
	s := make(map[string]bool, len(opts.Ignore))
	for _, n := range opts.Ignore {
		s[n] = true
	}
	return s
}

// CheckCompatible checks that cur has the same columns as ref, each of the
// same kind; column order may differ. Its error names both files and the
// columns.
func CheckCompatible(ref, cur *Table) error {
	var onlyRef, onlyCur []string
	for _, c := range ref.Columns {
		if cur.Lookup(c.Name) == nil {
			onlyRef = append(onlyRef, strconv.Quote(c.Name))
		}
	}
	for _, c := range cur.Columns {
		if ref.Lookup(c.Name) == nil {
			onlyCur = append(onlyCur, strconv.Quote(c.Name))
		}
	}
	if len(onlyRef)+len(onlyCur) > 0 {
		var parts []string
		if len(onlyRef) > 0 {
			parts = append(parts, fmt.Sprintf("%s in %s but not in %s", strings.Join(onlyRef, ", "), ref.Path, cur.Path))
		}
		if len(onlyCur) > 0 {
			parts = append(parts, fmt.Sprintf("%s in %s but not in %s", strings.Join(onlyCur, ", "), cur.Path, ref.Path))
		}
		return fmt.Errorf("the files have different columns: %s", strings.Join(parts, "; "))
	}
	for i := range ref.Columns {
		r := &ref.Columns[i]
		c := cur.Lookup(r.Name)
		if r.Kind == c.Kind {
			continue
		}
		msg := fmt.Sprintf("column %q is %s in %s but %s in %s", r.Name, r.Kind, ref.Path, c.Kind, cur.Path)
		if ev := textEvidence(r, c, ref.Path, cur.Path); ev != "" {
			msg += " (" + ev + ")"
		}
		return errors.New(msg + "; fix the file, or give the column's type with a schema")
	}
	return nil
}

// textEvidence points at the first non-number of whichever column was
// inferred as text, e.g. `cur.csv row 17: "unknown"`.
func textEvidence(r, c *Column, refPath, curPath string) string {
	path, ref := refPath, r.firstText
	if ref == nil {
		path, ref = curPath, c.firstText
	}
	if ref == nil {
		return ""
	}
	s := fmt.Sprintf("%s row %d", path, ref.row)
	if ref.line > 0 && ref.line != ref.row {
		s += fmt.Sprintf(" (line %d)", ref.line)
	}
	return s + fmt.Sprintf(": %q is not a number", ref.value)
}
