// Package oip is the wire format of the Open Inference Protocol over
// HTTP/JSON (the KServe v2 protocol that Triton, KServe and MLServer
// clients speak): its messages, a strict decoder that checks every tensor
// against its datatype and shape before a model sees it, and the protocol's
// error shape.
//
// Tensor elements are held in row-major order as float64 (every numeric
// datatype, and BOOL as 0 or 1) or as strings (BYTES). FP32 and FP16
// values are rounded to float32 on the way in, so that what a model sees
// is what the declared datatype can hold; integers must be integral, within
// their type's range and within ±2^53, where float64 is exact.
package oip

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Datatype is a tensor's element type, as the protocol spells it.
type Datatype string

// The protocol's datatypes.
const (
	Bool   Datatype = "BOOL"
	Uint8  Datatype = "UINT8"
	Uint16 Datatype = "UINT16"
	Uint32 Datatype = "UINT32"
	Uint64 Datatype = "UINT64"
	Int8   Datatype = "INT8"
	Int16  Datatype = "INT16"
	Int32  Datatype = "INT32"
	Int64  Datatype = "INT64"
	FP16   Datatype = "FP16"
	FP32   Datatype = "FP32"
	FP64   Datatype = "FP64"
	Bytes  Datatype = "BYTES"
)

// maxExact is the largest integer every float64 below it holds exactly.
const maxExact = 1 << 53

// intRange returns the range of an integer datatype; ok is false for the
// others.
func (d Datatype) intRange() (lo, hi float64, ok bool) {
	switch d {
	case Uint8:
		return 0, math.MaxUint8, true
	case Uint16:
		return 0, math.MaxUint16, true
	case Uint32:
		return 0, math.MaxUint32, true
	case Uint64:
		return 0, maxExact, true
	case Int8:
		return math.MinInt8, math.MaxInt8, true
	case Int16:
		return math.MinInt16, math.MaxInt16, true
	case Int32:
		return math.MinInt32, math.MaxInt32, true
	case Int64:
		return -maxExact, maxExact, true
	}
	return 0, 0, false
}

// datatypes are the protocol's datatypes, for decoding without
// allocating.
var datatypes = []Datatype{Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, FP16, FP32, FP64, Bytes}

// datatypeField decodes a tensor's datatype. A known one is the constant;
// another is decoded as it is, for the error that names it.
func datatypeField(v []byte) (Datatype, error) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		for _, d := range datatypes {
			if string(v[1:len(v)-1]) == string(d) {
				return d, nil
			}
		}
	}
	d, err := stringField("datatype", v)
	return Datatype(d), err
}

// Valid reports whether d is one of the protocol's datatypes.
func (d Datatype) Valid() bool {
	_, _, isInt := d.intRange()
	return isInt || d == Bool || d == FP16 || d == FP32 || d == FP64 || d == Bytes
}

// Parameters are the free-form parameters of a request, a tensor or a
// response: each value is a string, a number or a boolean.
type Parameters map[string]any

func (p Parameters) check() error {
	for k, v := range p {
		switch v.(type) {
		case string, float64, bool, json.Number, int, int64:
		default:
			return fmt.Errorf("parameter %q: want a string, number or boolean, not %s", k, jsonKind(v))
		}
	}
	return nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// Tensor is a named, typed, shaped array: an input of a request or an
// output of a response.
type Tensor struct {
	Name       string
	Datatype   Datatype
	Shape      []int64
	Parameters Parameters
	// Numbers holds the elements of a numeric or BOOL tensor, Strings those
	// of a BYTES tensor, in row-major order.
	Numbers []float64
	Strings []string
}

// Len returns the number of elements the tensor holds.
func (t *Tensor) Len() int {
	if t.Datatype == Bytes {
		return len(t.Strings)
	}
	return len(t.Numbers)
}

// MaxElements bounds the elements of one tensor the decoder accepts.
const MaxElements = 1 << 24

// MaxRank bounds the dimensions of a tensor's shape.
const MaxRank = 16

// elements returns how many elements a shape holds.
func elements(shape []int64) (int, error) {
	if len(shape) > MaxRank {
		return 0, fmt.Errorf("a shape of %d dimensions, more than %d", len(shape), MaxRank)
	}
	n := int64(1)
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("dimension %d is %d: a request's shape has no variable dimensions", i, d)
		}
		if d > 0 && n > MaxElements/d {
			return 0, fmt.Errorf("a shape of more than %d elements", MaxElements)
		}
		n *= d
	}
	return int(n), nil
}

// Validate checks that the tensor is whole: a name, a known datatype, and
// as many elements of the right kind as its shape says.
func (t *Tensor) Validate() error {
	if t.Name == "" {
		return errors.New("name: empty")
	}
	if !t.Datatype.Valid() {
		return fmt.Errorf("datatype: %q is not one of the protocol's datatypes", t.Datatype)
	}
	if t.Shape == nil {
		return errors.New("shape: missing")
	}
	n, err := elements(t.Shape)
	if err != nil {
		return fmt.Errorf("shape: %w", err)
	}
	if t.Datatype == Bytes && (len(t.Numbers) > 0 || len(t.Strings) != n) ||
		t.Datatype != Bytes && (len(t.Strings) > 0 || len(t.Numbers) != n) {
		return fmt.Errorf("data: %d elements for shape %v", t.Len(), t.Shape)
	}
	return nil
}

// UnmarshalJSON decodes a tensor strictly: see DecodeTensor.
func (t *Tensor) UnmarshalJSON(b []byte) error {
	d, err := DecodeTensor(b)
	if err != nil {
		return err
	}
	*t = *d
	return nil
}

// DecodeTensor decodes a tensor's JSON object and checks it: its datatype
// is known, its shape has no negative dimension, and its data, flat or
// nested to match the shape, holds exactly the elements the shape says,
// each of the declared type. The error names the field at fault.
func DecodeTensor(b []byte) (*Tensor, error) {
	if !json.Valid(b) {
		var v any
		return nil, fmt.Errorf("not a tensor: %w", jsonError(json.Unmarshal(b, &v)))
	}
	return decodeTensor(b)
}

// decodeTensor is DecodeTensor on valid JSON.
func decodeTensor(b []byte) (*Tensor, error) {
	t := &Tensor{}
	var data []byte
	err := fields(b, func(key, v []byte) error {
		var err error
		switch string(key) {
		case "name":
			t.Name, err = stringField("name", v)
		case "datatype":
			t.Datatype, err = datatypeField(v)
		case "shape":
			t.Shape, err = shapeField(v)
		case "parameters":
			t.Parameters = nil
			if !isNull(v) {
				if err = json.Unmarshal(v, &t.Parameters); err != nil {
					err = fmt.Errorf("parameters: want an object, not %s", kindOf(v))
				}
			}
		case "data":
			data = v
		}
		return err
	})
	if err != nil {
		if err.Error() == "want a JSON object" {
			return nil, fmt.Errorf("not a tensor: want a JSON object, not %s", kindOf(b))
		}
		return nil, err
	}
	switch {
	case t.Name == "":
		return nil, errors.New("name: empty")
	case !t.Datatype.Valid():
		return nil, fmt.Errorf("datatype: %q is not one of the protocol's datatypes", t.Datatype)
	case t.Shape == nil:
		return nil, errors.New("shape: missing")
	}
	if err := t.Parameters.check(); err != nil {
		return nil, fmt.Errorf("parameters: %w", err)
	}
	if _, ok := t.Parameters["binary_data_size"]; ok {
		return nil, errors.New("parameters: binary_data_size: the binary tensor data extension is not supported; send the data as JSON")
	}
	n, err := elements(t.Shape)
	if err != nil {
		return nil, fmt.Errorf("shape: %w", err)
	}
	if len(data) == 0 || isNull(data) {
		return nil, errors.New("data: missing")
	}
	if err := t.decodeData(data, n); err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	return t, nil
}

// jsonError shortens encoding/json's errors to what a caller can act on.
func jsonError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Errorf("malformed JSON at byte %d: %s", syn.Offset, syn.Error())
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "value"
		}
		return fmt.Errorf("%s: want %s, not a JSON %s", field, typ.Type, typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return errors.New("malformed JSON: it ends too soon")
	}
	return err
}

// MarshalJSON encodes the tensor, with its data flat. NaN and infinite
// values have no JSON form and are an error.
func (t Tensor) MarshalJSON() ([]byte, error) {
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	var b bytes.Buffer
	b.WriteString(`{"name":`)
	writeString(&b, t.Name)
	b.WriteString(`,"datatype":`)
	writeString(&b, string(t.Datatype))
	b.WriteString(`,"shape":[`)
	for i, d := range t.Shape {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(d, 10))
	}
	b.WriteByte(']')
	if len(t.Parameters) > 0 {
		p, err := json.Marshal(t.Parameters)
		if err != nil {
			return nil, err
		}
		b.WriteString(`,"parameters":`)
		b.Write(p)
	}
	b.WriteString(`,"data":[`)
	if t.Datatype == Bytes {
		for i, s := range t.Strings {
			if i > 0 {
				b.WriteByte(',')
			}
			writeString(&b, s)
		}
	} else {
		_, _, isInt := t.Datatype.intRange()
		bits := 64
		if t.Datatype == FP32 || t.Datatype == FP16 {
			bits = 32
		}
		var scratch [32]byte
		for i, v := range t.Numbers {
			if i > 0 {
				b.WriteByte(',')
			}
			switch {
			case math.IsNaN(v) || math.IsInf(v, 0):
				return nil, fmt.Errorf("tensor %q: element %d is %v, which JSON cannot carry", t.Name, i, v)
			case t.Datatype == Bool:
				b.WriteString(strconv.FormatBool(v != 0))
			case isInt:
				b.Write(strconv.AppendFloat(scratch[:0], v, 'f', 0, 64))
			default:
				b.Write(strconv.AppendFloat(scratch[:0], v, 'g', -1, bits))
			}
		}
	}
	b.WriteString("]}")
	return b.Bytes(), nil
}

func writeString(b *bytes.Buffer, s string) {
	if !needsEscape(s) {
		b.WriteByte('"')
		b.WriteString(s)
		b.WriteByte('"')
		return
	}
	q, _ := json.Marshal(s)
	b.Write(q)
}

func needsEscape(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return true
		}
	}
	return false
}

// RequestedOutput names an output a request wants back.
type RequestedOutput struct {
	Name       string     `json:"name"`
	Parameters Parameters `json:"parameters,omitempty"`
}

// InferRequest is an inference request.
type InferRequest struct {
	ID         string            `json:"id,omitempty"`
	Parameters Parameters        `json:"parameters,omitempty"`
	Inputs     []*Tensor         `json:"inputs"`
	Outputs    []RequestedOutput `json:"outputs,omitempty"`
}

// Input returns the input with the given name, or nil.
func (r *InferRequest) Input(name string) *Tensor {
	for _, t := range r.Inputs {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// DecodeInferRequest decodes and checks an inference request's body. Its
// error, a *RequestError, names the field at fault.
func DecodeInferRequest(body []byte) (*InferRequest, error) {
	if !json.Valid(body) {
		var v any
		return nil, &RequestError{Msg: jsonError(json.Unmarshal(body, &v)).Error()}
	}
	r := &InferRequest{}
	var inputs [][]byte
	err := fields(body, func(key, v []byte) error {
		switch string(key) {
		case "id":
			id, err := stringField("id", v)
			if err != nil {
				return &RequestError{Field: "id", Msg: "want a string"}
			}
			r.ID = id
		case "parameters":
			r.Parameters = nil
			if !isNull(v) && json.Unmarshal(v, &r.Parameters) != nil {
				return &RequestError{Field: "parameters", Msg: "want an object, not " + kindOf(v)}
			}
		case "outputs":
			r.Outputs = nil
			if !isNull(v) {
				if err := json.Unmarshal(v, &r.Outputs); err != nil {
					return &RequestError{Field: "outputs", Msg: jsonError(err).Error()}
				}
			}
		case "inputs":
			inputs = inputs[:0]
			if isNull(v) {
				return nil
			}
			if len(v) == 0 || v[0] != '[' {
				return &RequestError{Field: "inputs", Msg: "want an array, not " + kindOf(v)}
			}
			return items(v, func(_ int, t []byte) error { inputs = append(inputs, t); return nil })
		}
		return nil
	})
	if err != nil {
		var re *RequestError
		if errors.As(err, &re) {
			return nil, err
		}
		return nil, &RequestError{Msg: fmt.Sprintf("%v, not %s", err, kindOf(body[skipWS(body, 0):]))}
	}
	if err := r.Parameters.check(); err != nil {
		return nil, &RequestError{Field: "parameters", Msg: err.Error()}
	}
	if len(inputs) == 0 {
		return nil, &RequestError{Field: "inputs", Msg: "a request needs at least one input"}
	}
	r.Inputs = make([]*Tensor, 0, len(inputs))
	// Names are checked for repeats by a search, cheaper than a map for
	// the tens of inputs a request has; a map takes over beyond, so that
	// a request of a million tiny inputs is not quadratic.
	var names map[string]struct{}
	for i, raw := range inputs {
		t, err := decodeTensor(raw)
		if err != nil {
			return nil, &RequestError{Field: fmt.Sprintf("inputs[%d]", i), Msg: err.Error()}
		}
		dup := false
		switch {
		case names != nil:
			_, dup = names[t.Name]
		case len(r.Inputs) < 32:
			dup = slices.ContainsFunc(r.Inputs, func(o *Tensor) bool { return o.Name == t.Name })
		default:
			names = make(map[string]struct{}, len(inputs))
			for _, o := range r.Inputs {
				names[o.Name] = struct{}{}
			}
			_, dup = names[t.Name]
		}
		if names != nil {
			names[t.Name] = struct{}{}
		}
		if dup {
			return nil, &RequestError{Field: fmt.Sprintf("inputs[%d].name", i), Msg: fmt.Sprintf("%q appears twice", t.Name)}
		}
		r.Inputs = append(r.Inputs, t)
	}
	seen := make(map[string]bool, len(r.Outputs))
	for i, o := range r.Outputs {
		switch {
		case o.Name == "":
			return nil, &RequestError{Field: fmt.Sprintf("outputs[%d].name", i), Msg: "empty"}
		case seen[o.Name]:
			return nil, &RequestError{Field: fmt.Sprintf("outputs[%d].name", i), Msg: fmt.Sprintf("%q appears twice", o.Name)}
		}
		if err := o.Parameters.check(); err != nil {
			return nil, &RequestError{Field: fmt.Sprintf("outputs[%d].parameters", i), Msg: err.Error()}
		}
		seen[o.Name] = true
	}
	return r, nil
}

// RequestError is a request the protocol's rules refuse: HTTP 400.
type RequestError struct {
	Field string // where, as a path into the request: "inputs[0].data"
	Msg   string
}

func (e *RequestError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	// DecodeTensor's messages start with the tensor's own field.
	if head, _, ok := strings.Cut(e.Msg, ": "); ok && isTensorField(head) {
		return e.Field + "." + e.Msg
	}
	return e.Field + ": " + e.Msg
}

func isTensorField(s string) bool {
	switch s {
	case "name", "datatype", "shape", "parameters", "data":
		return true
	}
	return false
}

// InferResponse is an inference response.
type InferResponse struct {
	ModelName    string     `json:"model_name"`
	ModelVersion string     `json:"model_version,omitempty"`
	ID           string     `json:"id,omitempty"`
	Parameters   Parameters `json:"parameters,omitempty"`
	Outputs      []*Tensor  `json:"outputs"`
}

// TensorMetadata describes an input or output in a model's metadata; a
// dimension of -1 is variable.
type TensorMetadata struct {
	Name     string   `json:"name"`
	Datatype Datatype `json:"datatype"`
	Shape    []int64  `json:"shape"`
}

// ModelMetadata is the answer to GET /v2/models/{name}[/versions/{v}].
type ModelMetadata struct {
	Name     string           `json:"name"`
	Versions []string         `json:"versions,omitempty"`
	Platform string           `json:"platform"`
	Inputs   []TensorMetadata `json:"inputs"`
	Outputs  []TensorMetadata `json:"outputs"`
}

// ServerMetadata is the answer to GET /v2.
type ServerMetadata struct {
	Name       string   `json:"name"`
	Version    string   `json:"version"`
	Extensions []string `json:"extensions"`
}

// ModelReady is the answer to GET /v2/models/{name}[/versions/{v}]/ready.
type ModelReady struct {
	Name  string `json:"name"`
	Ready bool   `json:"ready"`
}

// ErrorBody is the protocol's error response.
type ErrorBody struct {
	Error string `json:"error"`
}
