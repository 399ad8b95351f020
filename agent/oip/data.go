package oip

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// decodeData reads a tensor's data: a flat array of n elements, or arrays
// nested exactly as the shape. data is one JSON value, already checked as
// JSON by encoding/json; this scanner reads it in one pass without the
// per-token allocations of json.Decoder, and still never trusts it.
func (t *Tensor) decodeData(data []byte, n int) error {
	// Every element takes at least two bytes ("0,"): a shape that claims
	// more than the data holds allocates no more than the data could.
	capacity := min(n, len(data)/2+1)
	if t.Datatype == Bytes {
		t.Strings = make([]string, 0, capacity)
	} else {
		t.Numbers = make([]float64, 0, capacity)
	}
	p := dataParser{t: t, data: data, n: n, nested: -1}
	p.ws()
	if p.peek() != '[' {
		return fmt.Errorf("want an array, not %s", p.kind())
	}
	if err := p.array(0); err != nil {
		return err
	}
	if p.ws(); p.pos != len(data) {
		return p.malformed()
	}
	if t.Len() != n {
		return fmt.Errorf("%d elements, where the shape %v holds %d", t.Len(), t.Shape, n)
	}
	return nil
}

type dataParser struct {
	t      *Tensor
	data   []byte
	pos    int
	n      int
	nested int // 1 if the data nests arrays, 0 if flat, -1 until known
}

func (p *dataParser) ws() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *dataParser) peek() byte {
	if p.pos < len(p.data) {
		return p.data[p.pos]
	}
	return 0
}

func (p *dataParser) malformed() error {
	return fmt.Errorf("malformed JSON at byte %d of the data", p.pos)
}

// kind names the JSON value at pos, for errors.
func (p *dataParser) kind() string { return kindOf(p.data[min(p.pos, len(p.data)):]) }

// array reads the array at pos, at the given depth.
func (p *dataParser) array(depth int) error {
	p.pos++ // '['
	count := int64(0)
	p.ws()
	if p.peek() == ']' {
		p.pos++
		return p.closed(depth, count)
	}
	for {
		p.ws()
		if err := p.item(depth); err != nil {
			return err
		}
		count++
		p.ws()
		switch p.peek() {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return p.closed(depth, count)
		default:
			return p.malformed()
		}
	}
}

func (p *dataParser) closed(depth int, count int64) error {
	if p.nested == 1 && count != p.t.Shape[depth] {
		return fmt.Errorf("an array of %d items at depth %d, where the shape %v wants %d", count, depth, p.t.Shape, p.t.Shape[depth])
	}
	return nil
}

func (p *dataParser) item(depth int) error {
	t := p.t
	if p.peek() == '[' {
		if p.nested == -1 {
			p.nested = 1
		}
		if p.nested == 0 || depth+1 >= len(t.Shape) {
			return fmt.Errorf("arrays nested deeper than the shape %v", t.Shape)
		}
		return p.array(depth + 1)
	}
	if p.nested == -1 {
		p.nested = 0
	}
	if p.nested == 1 && depth != len(t.Shape)-1 {
		return fmt.Errorf("an element at depth %d, where the shape %v nests %d deep", depth, t.Shape, len(t.Shape))
	}
	if t.Len() == p.n {
		return fmt.Errorf("more than the %d elements the shape %v holds", p.n, t.Shape)
	}
	if err := p.element(); err != nil {
		return fmt.Errorf("element %d: %w", t.Len(), err)
	}
	return nil
}

func (p *dataParser) literal(word string) bool {
	if len(p.data)-p.pos >= len(word) && string(p.data[p.pos:p.pos+len(word)]) == word {
		p.pos += len(word)
		return true
	}
	return false
}

// element reads one element of the tensor's datatype.
func (p *dataParser) element() error {
	t := p.t
	switch t.Datatype {
	case Bytes:
		if p.peek() != '"' {
			return fmt.Errorf("want a string for BYTES, not %s", p.kind())
		}
		s, err := p.str()
		if err != nil {
			return err
		}
		t.Strings = append(t.Strings, s)
		return nil
	case Bool:
		switch {
		case p.literal("true"):
			t.Numbers = append(t.Numbers, 1)
		case p.literal("false"):
			t.Numbers = append(t.Numbers, 0)
		default:
			return fmt.Errorf("want true or false for BOOL, not %s", p.kind())
		}
		return nil
	}
	num, ok := p.number()
	if !ok {
		return fmt.Errorf("want a number for %s, not %s", t.Datatype, p.kind())
	}
	v, err := t.Datatype.parse(num)
	if err != nil {
		return err
	}
	t.Numbers = append(t.Numbers, v)
	return nil
}

// number reads a JSON number literal.
func (p *dataParser) number() (string, bool) {
	start, d := p.pos, p.data
	i := p.pos
	digits := func() int {
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		return i - j
	}
	if i < len(d) && d[i] == '-' {
		i++
	}
	if i < len(d) && d[i] == '0' {
		i++
	} else if digits() == 0 {
		return "", false
	}
	if i < len(d) && d[i] == '.' {
		i++
		if digits() == 0 {
			return "", false
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if digits() == 0 {
			return "", false
		}
	}
	p.pos = i
	return string(d[start:i]), true
}

// str reads the JSON string at pos.
func (p *dataParser) str() (string, error) {
	end := skipString(p.data, p.pos)
	s, err := unquote(p.data[p.pos:end])
	if err != nil {
		return "", p.malformed()
	}
	p.pos = end
	return s, nil
}

// parse converts a number literal to a value of the datatype, checking its
// range, and that an integer type gets an integer.
func (d Datatype) parse(num string) (float64, error) {
	v, err := strconv.ParseFloat(num, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("%s is not a number", num)
	}
	if math.IsInf(v, 0) {
		return 0, fmt.Errorf("%s is out of range for %s", num, d)
	}
	if lo, hi, isInt := d.intRange(); isInt {
		// An integer literal is checked exactly: 2^53+1 parses as the
		// float 2^53, which is in range.
		if i, err := strconv.ParseInt(num, 10, 64); err == nil && (i > maxExact || i < -maxExact) || errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("%s is out of range for %s [%.0f, %.0f]", num, d, lo, hi)
		}
		if v != math.Trunc(v) {
			return 0, fmt.Errorf("%s is not an integer, as %s wants", num, d)
		}
		if v < lo || v > hi {
			return 0, fmt.Errorf("%s is out of range for %s [%.0f, %.0f]", num, d, lo, hi)
		}
		return v, nil
	}
	switch d {
	case FP32:
		if math.Abs(v) > math.MaxFloat32 {
			return 0, fmt.Errorf("%s is out of range for FP32", num)
		}
		v = float64(float32(v))
	case FP16:
		if math.Abs(v) > 65504 {
			return 0, fmt.Errorf("%s is out of range for FP16", num)
		}
		v = float64(float32(v))
	}
	return v, nil
}
