package tabular

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"
)

// ReadParquet reads a flat Parquet file of the given size from r; path
// names the file in errors. Each top-level field is a column; nested and
// repeated fields must be ignored. See the package documentation for the
// types and nulls.
func ReadParquet(r io.ReaderAt, size int64, path string, opts Options) (*Table, error) {
	if size == 0 {
		return nil, &Error{Path: path, Msg: "empty file"}
	}
	f, err := parquet.OpenFile(r, size)
	if err != nil {
		return nil, &Error{Path: path, Msg: fmt.Sprintf("not a readable Parquet file: %v", err)}
	}
	if len(f.Schema().Fields()) == 0 {
		return nil, &Error{Path: path, Msg: "empty file: no columns"}
	}
	ignore := ignoreSet(opts)
	t := &Table{Path: path, Format: "parquet", Rows: int(f.NumRows())}
	type source struct {
		name  string
		index int // the leaf column's index in each row group
		typ   parquet.Type
	}
	var sources []source
	for _, field := range f.Schema().Fields() {
		name := field.Name()
		if ignore[name] {
			t.Ignored = append(t.Ignored, name)
			continue
		}
		if !field.Leaf() || field.Repeated() {
			return nil, &Error{Path: path, Column: name, Msg: "a nested or repeated field; only flat columns can be compared (ignore it to leave it out)"}
		}
		leaf, ok := f.Schema().Lookup(name)
		if !ok {
			return nil, &Error{Path: path, Column: name, Msg: "not found in the file's schema"}
		}
		sources = append(sources, source{name: name, index: leaf.ColumnIndex, typ: field.Type()})
	}
	if t.Rows == 0 {
		return nil, &Error{Path: path, Msg: "no data rows"}
	}

	for _, s := range sources {
		conv, err := converter(s.typ)
		if err != nil {
			return nil, &Error{Path: path, Column: s.name, Msg: err.Error()}
		}
		raw := rawColumn{kind: conv.kind}
		for _, rg := range f.RowGroups() {
			if err := readChunk(rg.ColumnChunks()[s.index], conv, &raw); err != nil {
				return nil, &Error{Path: path, Column: s.name, Msg: fmt.Sprintf("reading: %v", err)}
			}
		}
		if raw.len() != t.Rows {
			return nil, &Error{Path: path, Column: s.name, Msg: fmt.Sprintf("has %d values for %d rows", raw.len(), t.Rows)}
		}
		c, err := raw.column(path, s.name, opts.Kinds[s.name])
		if err != nil {
			return nil, err
		}
		t.Columns = append(t.Columns, *c)
	}
	return t, nil
}

// rawColumn is a Parquet column's values as read: numbers or strings,
// with a flag for each null.
type rawColumn struct {
	kind    Kind
	numbers []float64
	strings []string
	null    []bool
}

func (r *rawColumn) len() int { return len(r.null) }

// valueConverter turns one non-null Parquet value into a number or text.
type valueConverter struct {
	kind   Kind
	number func(parquet.Value) float64
	text   func(parquet.Value) string
}

// converter picks how to read values of a column's type.
func converter(t parquet.Type) (valueConverter, error) {
	var lt format.LogicalTypeValue
	if l := t.LogicalType(); l != nil {
		lt = l.Value
	}
	scale := 1.0
	if d, ok := lt.(*format.DecimalType); ok {
		scale = math.Pow10(int(d.Scale))
	}
	unsigned := false
	if it, ok := lt.(*format.IntType); ok {
		unsigned = !it.IsSigned
	}
	switch t.Kind() {
	case parquet.Boolean:
		return valueConverter{kind: Text, text: func(v parquet.Value) string { return strconv.FormatBool(v.Boolean()) }}, nil
	case parquet.Int32:
		if unsigned {
			return valueConverter{kind: Numeric, number: func(v parquet.Value) float64 { return float64(v.Uint32()) }}, nil
		}
		return valueConverter{kind: Numeric, number: func(v parquet.Value) float64 { return float64(v.Int32()) / scale }}, nil
	case parquet.Int64:
		if unsigned {
			return valueConverter{kind: Numeric, number: func(v parquet.Value) float64 { return float64(v.Uint64()) }}, nil
		}
		return valueConverter{kind: Numeric, number: func(v parquet.Value) float64 { return float64(v.Int64()) / scale }}, nil
	case parquet.Float:
		return valueConverter{kind: Numeric, number: func(v parquet.Value) float64 { return float64(v.Float()) }}, nil
	case parquet.Double:
		return valueConverter{kind: Numeric, number: func(v parquet.Value) float64 { return v.Double() }}, nil
	case parquet.ByteArray:
		if lt != nil {
			switch lt.(type) {
			case *format.StringType, *format.EnumType, *format.JsonType:
			default:
				return valueConverter{}, fmt.Errorf("unsupported Parquet type BYTE_ARRAY (%v); ignore the column to leave it out", lt)
			}
		}
		return valueConverter{kind: Text, text: func(v parquet.Value) string { return string(v.ByteArray()) }}, nil
	}
	return valueConverter{}, fmt.Errorf("unsupported Parquet type %v; ignore the column to leave it out", t)
}

// readChunk appends one row group's values of a column to raw.
func readChunk(chunk parquet.ColumnChunk, conv valueConverter, raw *rawColumn) error {
	pages := chunk.Pages()
	defer pages.Close()
	buf := make([]parquet.Value, 1024)
	for {
		p, err := pages.ReadPage()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		err = readPage(p, buf, conv, raw)
		parquet.Release(p)
		if err != nil {
			return err
		}
	}
}

func readPage(p parquet.Page, buf []parquet.Value, conv valueConverter, raw *rawColumn) error {
	vr := p.Values()
	for {
		n, err := vr.ReadValues(buf)
		for _, v := range buf[:n] {
			null := v.IsNull()
			raw.null = append(raw.null, null)
			switch {
			case conv.kind == Numeric && null:
				raw.numbers = append(raw.numbers, math.NaN())
			case conv.kind == Numeric:
				raw.numbers = append(raw.numbers, conv.number(v))
			case null:
				raw.strings = append(raw.strings, "")
			default:
				raw.strings = append(raw.strings, conv.text(v)) // copies out of the page
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// column applies the wanted kind (Inferred: the file's own) to the values
// read, checking them.
func (r *rawColumn) column(path, name string, want Kind) (*Column, error) {
	rowOf := func(i int) (int, int) { return i + 1, 0 }
	switch {
	case want == Text && r.kind == Numeric:
		// Numbers as categories, e.g. integer codes.
		vals := make([]string, len(r.numbers))
		for i, v := range r.numbers {
			if !r.null[i] && !math.IsNaN(v) {
				vals[i] = strconv.FormatFloat(v, 'g', -1, 64)
			}
		}
		return textColumn(path, name, vals, Text, rowOf)
	case want == Numeric && r.kind == Text:
		return textColumn(path, name, r.strings, Numeric, rowOf)
	}
	c := &Column{Name: name, Kind: r.kind, Declared: true}
	if r.kind == Text {
		c.Strings = r.strings
		for _, s := range r.strings {
			if s == "" {
				c.Nulls++
			}
		}
	} else {
		c.Numbers = r.numbers
		for i, v := range r.numbers {
			switch {
			case math.IsNaN(v):
				c.Nulls++
			case math.IsInf(v, 0):
				return nil, &Error{Path: path, Row: i + 1, Column: name,
					Msg: fmt.Sprintf("%v is infinite; only finite numbers can be compared (write null instead)", v)}
			}
		}
	}
	if err := checkNotAllNull(path, c, len(r.null)); err != nil {
		return nil, err
	}
	return c, nil
}
