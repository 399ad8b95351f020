package oip

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Schema checks inference requests against a model version's feature
// schema. Each input feature is one tensor of the request whose first
// dimension is the batch (the rows) and whose other dimensions are the
// feature's own shape: a scalar feature is a tensor of shape [rows].
// A Schema is immutable and safe for concurrent use.
type Schema struct {
	inputs  []schemaFeature
	byName  map[string]int
	outputs []*droverv1.Feature
}

type schemaFeature struct {
	*droverv1.Feature
	datatype   Datatype
	categories map[string]bool // nil when any value goes
}

// CompileSchema checks a feature schema and prepares it for Check.
func CompileSchema(fs *droverv1.FeatureSchema) (*Schema, error) {
	s := &Schema{byName: map[string]int{}, outputs: fs.GetOutputs()}
	for i, f := range fs.GetInputs() {
		dt := Datatype(f.GetDatatype())
		switch {
		case f.GetName() == "":
			return nil, fmt.Errorf("schema: input %d has no name", i)
		case !dt.Valid():
			return nil, fmt.Errorf("schema: input %s: datatype %q is not one of the protocol's datatypes", f.GetName(), dt)
		case f.Min != nil && f.Max != nil && f.GetMin() > f.GetMax():
			return nil, fmt.Errorf("schema: input %s: min %g is above max %g", f.GetName(), f.GetMin(), f.GetMax())
		}
		if _, dup := s.byName[f.GetName()]; dup {
			return nil, fmt.Errorf("schema: input %s appears twice", f.GetName())
		}
		sf := schemaFeature{Feature: f, datatype: dt}
		if f.GetKind() == droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL && len(f.GetCategories()) > 0 {
			sf.categories = make(map[string]bool, len(f.GetCategories()))
			for _, c := range f.GetCategories() {
				sf.categories[c] = true
			}
		}
		s.byName[f.GetName()] = len(s.inputs)
		s.inputs = append(s.inputs, sf)
	}
	for i, f := range fs.GetOutputs() {
		if !Datatype(f.GetDatatype()).Valid() {
			return nil, fmt.Errorf("schema: output %d (%s): datatype %q is not one of the protocol's datatypes", i, f.GetName(), f.GetDatatype())
		}
	}
	return s, nil
}

// Check checks a decoded request against the schema and returns its number
// of rows. Every input must be a feature of the schema, of its datatype and
// shape, with values within its bounds and categories; every feature must
// be there unless it is nullable; all inputs must have the same rows. The
// error is a *RequestError naming the field and the rule.
func (s *Schema) Check(r *InferRequest) (rows int, err error) {
	rows = -1
	seen := make([]bool, len(s.inputs))
	for i, in := range r.Inputs {
		at := inputField(i)
		fi, ok := s.byName[in.Name]
		if !ok {
			return 0, &RequestError{Field: at() + ".name", Msg: fmt.Sprintf("%q is not an input of this model, which takes %s", in.Name, s.names())}
		}
		seen[fi] = true
		f := &s.inputs[fi]
		if in.Datatype != f.datatype {
			return 0, &RequestError{Field: at() + ".datatype", Msg: fmt.Sprintf("%s, where the schema says %s for %s", in.Datatype, f.datatype, in.Name)}
		}
		if len(in.Shape) != 1+len(f.GetShape()) {
			return 0, &RequestError{Field: at() + ".shape", Msg: fmt.Sprintf("%v: %s wants [rows%s]", in.Shape, in.Name, shapeTail(f.GetShape()))}
		}
		for d, want := range f.GetShape() {
			if want >= 0 && in.Shape[d+1] != want {
				return 0, &RequestError{Field: at() + ".shape", Msg: fmt.Sprintf("%v: %s wants [rows%s]", in.Shape, in.Name, shapeTail(f.GetShape()))}
			}
		}
		n := int(in.Shape[0])
		switch {
		case n == 0:
			return 0, &RequestError{Field: at() + ".shape", Msg: "no rows"}
		case rows >= 0 && n != rows:
			return 0, &RequestError{Field: at() + ".shape", Msg: fmt.Sprintf("%d rows, where %s has %d", n, r.Inputs[0].Name, rows)}
		}
		rows = n
		if err := f.checkValues(in); err != nil {
			return 0, &RequestError{Field: at() + ".data", Msg: err.Error()}
		}
	}
	for fi, ok := range seen {
		if !ok && !s.inputs[fi].GetNullable() {
			return 0, &RequestError{Field: "inputs", Msg: fmt.Sprintf("%q is missing; this model takes %s", s.inputs[fi].GetName(), s.names())}
		}
	}
	return rows, nil
}

// inputField returns, lazily, the path of input i for an error.
func inputField(i int) func() string {
	return func() string { return fmt.Sprintf("inputs[%d]", i) }
}

func (f *schemaFeature) checkValues(t *Tensor) error {
	if f.categories != nil {
		for i := range t.Len() {
			v := t.element(i)
			if !f.categories[v] {
				return fmt.Errorf("element %d: %q is not a category of %s (%s)", i, v, f.GetName(), strings.Join(f.GetCategories(), ", "))
			}
		}
		return nil
	}
	if f.Min == nil && f.Max == nil {
		return nil
	}
	for i, v := range t.Numbers {
		if f.Min != nil && v < f.GetMin() {
			return fmt.Errorf("element %d: %g is below %s's minimum %g", i, v, f.GetName(), f.GetMin())
		}
		if f.Max != nil && v > f.GetMax() {
			return fmt.Errorf("element %d: %g is above %s's maximum %g", i, v, f.GetName(), f.GetMax())
		}
	}
	return nil
}

// element returns element i as text: a category's spelling.
func (t *Tensor) element(i int) string {
	switch t.Datatype {
	case Bytes:
		return t.Strings[i]
	case Bool:
		return strconv.FormatBool(t.Numbers[i] != 0)
	}
	return strconv.FormatFloat(t.Numbers[i], 'g', -1, 64)
}

func (s *Schema) names() string {
	var names []string
	for _, f := range s.inputs {
		names = append(names, f.GetName())
	}
	return strings.Join(names, ", ")
}

func shapeTail(shape []int64) string {
	var b strings.Builder
	for _, d := range shape {
		b.WriteString(", ")
		if d < 0 {
			b.WriteString("any")
		} else {
			b.WriteString(strconv.FormatInt(d, 10))
		}
	}
	return b.String()
}

// Metadata returns the model metadata the protocol serves for a model with
// this schema: each tensor's shape with -1, any number of rows, first.
func (s *Schema) Metadata(name, platform string, versions []string) ModelMetadata {
	md := ModelMetadata{Name: name, Platform: platform, Versions: versions, Inputs: []TensorMetadata{}, Outputs: []TensorMetadata{}}
	for _, f := range s.inputs {
		md.Inputs = append(md.Inputs, TensorMetadata{Name: f.GetName(), Datatype: f.datatype, Shape: slices.Concat([]int64{-1}, f.GetShape())})
	}
	for _, f := range s.outputs {
		md.Outputs = append(md.Outputs, TensorMetadata{Name: f.GetName(), Datatype: Datatype(f.GetDatatype()), Shape: slices.Concat([]int64{-1}, f.GetShape())})
	}
	return md
}
