package training

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
)

// The columns of a labelled CSV, as an agent's GET /v1/labelled writes it
// (and hands in for a job): the request id and the version that answered,
// the features, then the truth — label for a classifier, value for a
// regression — last.
const (
	LabelledID      = "id"
	LabelledVersion = "version"
	LabelledLabel   = "label"
	LabelledValue   = "value"
)

// Assemble writes one CSV to w: the base data set (a CSV with a header,
// target among its columns; nil for none), then the rows of each labelled
// CSV, and returns the number of data rows written.
//
// The output's columns are the base's, or, without a base, those of the
// first labelled file with a row, without id and version and with its
// label (or value) column renamed target. A labelled file's columns are
// matched to them by name: its last column, label or value, is the target;
// id and version are kept only where the output has such columns; a column
// the file lacks is an empty cell, and a column the output lacks is
// dropped. Labelled files with a header only, or nothing at all, add no
// rows.
//
// A malformed file is an error that names it — "base" or "labelled[i]",
// i counting from 0 — and the line.
func Assemble(w io.Writer, base io.Reader, labelled []io.Reader, target string) (rows int, err error) {
	if target == "" {
		return 0, errors.New("assemble: no target column named")
	}
	var columns []string // the output's
	var baseRows *csv.Reader
	if base != nil {
		r := newCSVReader(base)
		header, err := r.Read()
		if errors.Is(err, io.EOF) {
			return 0, errors.New("assemble: base: the data set is empty; it needs a header")
		}
		if err != nil {
			return 0, fmt.Errorf("assemble: base: %w", err)
		}
		if err := checkHeader(header); err != nil {
			line, _ := r.FieldPos(0)
			return 0, fmt.Errorf("assemble: base, line %d: %w", line, err)
		}
		if !slices.Contains(header, target) {
			return 0, fmt.Errorf("assemble: base: no target column %q among its columns %q", target, header)
		}
		columns, baseRows = slices.Clone(header), r
	}

	// Read every labelled file's header first: without a base, the
	// columns come from the first that has a row.
	type labelledFile struct {
		r      *csv.Reader
		header []string
		first  []string // the first data row, read to know there is one
	}
	files := make([]labelledFile, len(labelled))
	for i, in := range labelled {
		if in == nil {
			continue
		}
		r := newCSVReader(in)
		header, err := r.Read()
		if errors.Is(err, io.EOF) {
			continue // nothing at all
		}
		if err != nil {
			return 0, fmt.Errorf("assemble: labelled[%d]: %w", i, err)
		}
		if err := checkLabelledHeader(header); err != nil {
			line, _ := r.FieldPos(0)
			return 0, fmt.Errorf("assemble: labelled[%d], line %d: %w", i, line, err)
		}
		first, err := r.Read()
		if errors.Is(err, io.EOF) {
			continue // a header only
		}
		if err != nil {
			return 0, fmt.Errorf("assemble: labelled[%d]: %w", i, err)
		}
		files[i] = labelledFile{r: r, header: header, first: first}
		if columns == nil {
			for _, name := range header[:len(header)-1] {
				if name != LabelledID && name != LabelledVersion && name != target {
					columns = append(columns, name)
				}
			}
			columns = append(columns, target)
		}
	}
	if columns == nil {
		return 0, nil // no base, no labelled rows: nothing to write
	}

	out := csv.NewWriter(w)
	if err := out.Write(columns); err != nil {
		return 0, fmt.Errorf("assemble: %w", err)
	}
	if baseRows != nil {
		for {
			rec, err := baseRows.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return rows, fmt.Errorf("assemble: base: %w", err)
			}
			if err := out.Write(rec); err != nil {
				return rows, fmt.Errorf("assemble: %w", err)
			}
			rows++
		}
	}
	rec := make([]string, len(columns))
	for i, f := range files {
		if f.r == nil {
			continue
		}
		// where[j] is the file's column for output column j, or -1.
		where := make([]int, len(columns))
		last := len(f.header) - 1
		for j, name := range columns {
			where[j] = -1
			if name == target {
				where[j] = last
				continue
			}
			if k := slices.Index(f.header[:last], name); k >= 0 {
				where[j] = k
			}
		}
		for row := f.first; ; {
			for j, k := range where {
				rec[j] = ""
				if k >= 0 {
					rec[j] = row[k]
				}
			}
			if err := out.Write(rec); err != nil {
				return rows, fmt.Errorf("assemble: %w", err)
			}
			rows++
			var err error
			if row, err = f.r.Read(); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return rows, fmt.Errorf("assemble: labelled[%d]: %w", i, err)
			}
		}
	}
	out.Flush()
	if err := out.Error(); err != nil {
		return rows, fmt.Errorf("assemble: %w", err)
	}
	return rows, nil
}

// newCSVReader reads records that must all have the header's number of
// fields; a record that has not is an error naming its line.
func newCSVReader(r io.Reader) *csv.Reader {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 0
	return cr
}

// checkHeader refuses a header with an empty or repeated column name.
func checkHeader(header []string) error {
	seen := make(map[string]bool, len(header))
	for i, name := range header {
		switch {
		case name == "":
			return fmt.Errorf("column %d of the header has no name", i+1)
		case seen[name]:
			return fmt.Errorf("column %q appears twice in the header", name)
		}
		seen[name] = true
	}
	return nil
}

// checkLabelledHeader checks a labelled file's header: named columns,
// each once, the last label or value.
func checkLabelledHeader(header []string) error {
	if err := checkHeader(header); err != nil {
		return err
	}
	if last := header[len(header)-1]; last != LabelledLabel && last != LabelledValue {
		return fmt.Errorf("the last column is %q; a labelled file ends with %s or %s (as GET /v1/labelled writes it)",
			last, LabelledLabel, LabelledValue)
	}
	return nil
}
