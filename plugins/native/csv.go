package native

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// CSVOptions say how ReadCSV reads a file's columns.
type CSVOptions struct {
	// Task decides how the target is read: class labels (text) for
	// Classification, the default, numbers for Regression.
	Task Task
	// Categorical names columns read as categories even where every
	// value is a number (codes, zip codes, 0/1 flags meant as classes).
	Categorical []string
	// Ignore names columns that are not features, such as identifiers.
	Ignore []string
}

// ReadCSV reads a data set from CSV with a header line: the column named
// target becomes the Dataset's target, every other column not in
// opts.Ignore a feature, in the file's order. A feature column is numeric
// when every non-empty value in it is a finite number (surrounding spaces
// allowed), and categorical when it is named in opts.Categorical or holds
// any other text. A numeric column cannot hold an empty value: Dataset has
// no missing numbers, so ReadCSV refuses the file, naming the line.
//
// Errors name the line and column at fault: rows with more or fewer
// fields than the header, a target missing from the header, an empty
// file, an empty class label, a regression target that is not a number.
func ReadCSV(r io.Reader, target string, opts CSVOptions) (*Dataset, error) {
	if opts.Task == "" {
		opts.Task = Classification
	}
	if opts.Task != Classification && opts.Task != Regression {
		return nil, fmt.Errorf("native: CSV: unknown task %q", opts.Task)
	}
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1 // ragged rows are reported below, with their line
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("native: CSV: the file is empty, with no header line")
	}
	if err != nil {
		return nil, fmt.Errorf("native: CSV: %w", err)
	}
	header[0] = strings.TrimPrefix(header[0], "\uFEFF") // a byte-order mark
	if err := checkHeader(header, target, opts); err != nil {
		return nil, err
	}

	var records [][]string
	var lines []int // each record's line in the file, for errors
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("native: CSV: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if len(rec) != len(header) {
			return nil, fmt.Errorf("native: CSV line %d: %s, where the header has %d", line, plural(len(rec), "field"), len(header))
		}
		records = append(records, rec)
		lines = append(lines, line)
	}
	if len(records) == 0 {
		return nil, errors.New("native: CSV: no rows after the header")
	}

	ds := new(Dataset)
	for j, name := range header {
		if slices.Contains(opts.Ignore, name) {
			continue
		}
		if name == target {
			col, err := readTarget(records, lines, j, name, opts.Task)
			if err != nil {
				return nil, err
			}
			ds.Target = col
			continue
		}
		categorical := slices.Contains(opts.Categorical, name) || !numeric(records, j)
		col := Column{Name: name, Categorical: categorical}
		if categorical {
			col.Strings = make([]string, len(records))
			for i, rec := range records {
				col.Strings[i] = rec[j]
			}
		} else {
			col.Numbers = make([]float64, len(records))
			for i, rec := range records {
				v, ok := parseNumber(rec[j])
				if !ok { // only an empty value gets here
					return nil, fmt.Errorf("native: CSV line %d, column %s: an empty value in a numeric column", lines[i], name)
				}
				col.Numbers[i] = v
			}
		}
		ds.Features = append(ds.Features, col)
	}
	if len(ds.Features) == 0 {
		return nil, fmt.Errorf("native: CSV: no feature columns besides the target %s", target)
	}
	return ds, nil
}

// checkHeader refuses a header without the target, with a column named
// twice, or that lacks a column the options name (most likely a typo).
func checkHeader(header []string, target string, opts CSVOptions) error {
	seen := make(map[string]bool, len(header))
	for j, name := range header {
		if seen[name] {
			return fmt.Errorf("native: CSV line 1: column %d, %q, is named twice", j+1, name)
		}
		seen[name] = true
	}
	if !seen[target] {
		return fmt.Errorf("native: CSV line 1: no target column %q in the header", target)
	}
	if slices.Contains(opts.Ignore, target) {
		return fmt.Errorf("native: CSV: the target %s cannot be ignored", target)
	}
	for _, names := range [][]string{opts.Categorical, opts.Ignore} {
		for _, name := range names {
			if !seen[name] {
				return fmt.Errorf("native: CSV line 1: no column %q in the header", name)
			}
		}
	}
	return nil
}

func readTarget(records [][]string, lines []int, j int, name string, task Task) (Column, error) {
	col := Column{Name: name, Categorical: task == Classification}
	for i, rec := range records {
		v := rec[j]
		if task == Classification {
			if v == "" {
				return Column{}, fmt.Errorf("native: CSV line %d, column %s: an empty class label", lines[i], name)
			}
			col.Strings = append(col.Strings, v)
			continue
		}
		x, ok := parseNumber(v)
		if !ok {
			return Column{}, fmt.Errorf("native: CSV line %d, column %s: regression target %q is not a number", lines[i], name, v)
		}
		col.Numbers = append(col.Numbers, x)
	}
	return col, nil
}

// numeric reports whether every non-empty value of column j is a number,
// and at least one is.
func numeric(records [][]string, j int) bool {
	found := false
	for _, rec := range records {
		if strings.TrimSpace(rec[j]) == "" {
			continue
		}
		if _, ok := parseNumber(rec[j]); !ok {
			return false
		}
		found = true
	}
	return found
}

// parseNumber parses a finite number, allowing surrounding spaces.
func parseNumber(s string) (float64, bool) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, false
	}
	return v, true
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
