package tabular

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// ReadCSV reads a comma-separated table with a header from r; path names
// the file in errors. See the package documentation for the rules.
func ReadCSV(r io.Reader, path string, opts Options) (*Table, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1 // checked here, with a clearer message
	cr.ReuseRecord = true

	header, err := cr.Read()
	if err == io.EOF {
		return nil, &Error{Path: path, Msg: "empty file: no header row"}
	}
	if err != nil {
		return nil, csvError(path, err)
	}
	header = append([]string(nil), header...)
	header[0] = strings.TrimPrefix(header[0], "\uFEFF") // a byte-order mark, as Excel writes

	ignore := ignoreSet(opts)
	t := &Table{Path: path, Format: "csv"}
	keep := make([]int, 0, len(header)) // the header's index of each kept column
	seen := make(map[string]int, len(header))
	for i, name := range header {
		if strings.TrimSpace(name) == "" {
			return nil, &Error{Path: path, Row: 1, Msg: fmt.Sprintf(
				"column %d has no name in the header (a data frame's index? write the file without it)", i+1)}
		}
		if j, dup := seen[name]; dup {
			return nil, &Error{Path: path, Row: 1, Msg: fmt.Sprintf("columns %d and %d are both named %q", j+1, i+1, name)}
		}
		seen[name] = i
		if ignore[name] {
			t.Ignored = append(t.Ignored, name)
			continue
		}
		keep = append(keep, i)
	}

	cells := make([][]string, len(keep)) // the raw text, column by column
	var lines []int                      // each data row's first line
	row := 1
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, csvError(path, err)
		}
		row++
		line, _ := cr.FieldPos(0)
		if len(rec) != len(header) {
			return nil, &Error{Path: path, Row: row, Line: line,
				Msg: fmt.Sprintf("%s, but the header has %d", plural(len(rec), "field"), len(header))}
		}
		for k, i := range keep {
			cells[k] = append(cells[k], strings.Clone(rec[i]))
		}
		lines = append(lines, line)
	}
	t.Rows = row - 1
	if t.Rows == 0 {
		return nil, &Error{Path: path, Msg: "no data rows after the header"}
	}

	for k, i := range keep {
		c, err := textColumn(path, header[i], cells[k], opts.Kinds[header[i]], func(n int) (int, int) {
			return n + 2, lines[n] // data row n (0-based) is row n+2
		})
		if err != nil {
			return nil, err
		}
		cells[k] = nil
		t.Columns = append(t.Columns, *c)
	}
	return t, nil
}

// csvError wraps encoding/csv's error with the file's name.
func csvError(path string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &Error{Path: path, Msg: fmt.Sprintf("line %d, column %d: %v", pe.Line, pe.Column, pe.Err)}
	}
	return fmt.Errorf("%s: %w", path, err)
}

// textColumn turns one column's text into a typed column: of kind want,
// or inferred when want is Inferred. pos maps a 0-based value index to
// its row and line for errors. Nulls are IsNullText's spellings in a
// numeric column, and only empty fields in a text one.
func textColumn(path, name string, vals []string, want Kind, pos func(int) (row, line int)) (*Column, error) {
	c := &Column{Name: name, Kind: want, Declared: want != Inferred}
	if want == Inferred {
		c.Kind = Numeric
		for i, s := range vals {
			if IsNullText(s) {
				continue
			}
			if _, err := parseNumber(s); err == errNotNumber {
				row, line := pos(i)
				c.Kind = Text
				c.firstText = &cellRef{row: row, line: line, value: s}
				break
			}
		}
	}
	switch c.Kind {
	case Numeric:
		c.Numbers = make([]float64, len(vals))
		for i, s := range vals {
			if IsNullText(s) {
				c.Numbers[i] = math.NaN()
				c.Nulls++
				continue
			}
			v, err := parseNumber(s)
			if err != nil {
				row, line := pos(i)
				msg := err.Error()
				if err == errNotNumber {
					msg = fmt.Sprintf("%q is not a number, but the schema says the column is numeric", s)
				}
				return nil, &Error{Path: path, Row: row, Line: line, Column: name, Msg: msg}
			}
			if math.IsNaN(v) {
				c.Nulls++
			}
			c.Numbers[i] = v
		}
	case Text:
		// In text, only an empty field is null: "none" or "NA" may well
		// be categories (no internet service, North America).
		c.Strings = make([]string, len(vals))
		for i, s := range vals {
			if strings.TrimSpace(s) == "" {
				c.Nulls++
				continue
			}
			c.Strings[i] = s
		}
	default:
		return nil, &Error{Path: path, Column: name, Msg: fmt.Sprintf("unknown kind %v", c.Kind)}
	}
	if err := checkNotAllNull(path, c, len(vals)); err != nil {
		return nil, err
	}
	return c, nil
}

// plural returns "1 field" or "n fields".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
