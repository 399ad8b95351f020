package validate

import (
	"errors"
	"fmt"
	"math"

	"github.com/droverhq/drover/agent/oip"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// CheckSchema checks that a feature schema's inputs can be checked
// against a table, with the agent's rules for a live request (see
// [oip.CompileSchema]) and one more: each input has a name, given once,
// one of the protocol's datatypes, numeric bounds that are numbers and
// not crossed, and a scalar shape (a column holds one value per row). A
// nil schema or one without inputs is an error too: there would be
// nothing to check.
func CheckSchema(s *droverv1.FeatureSchema) error {
	if len(s.GetInputs()) == 0 {
		return errors.New("schema: no inputs")
	}
	var errs []error
	seen := map[string]bool{}
	for i, f := range s.GetInputs() {
		name := f.GetName()
		if name == "" {
			errs = append(errs, fmt.Errorf("schema: input %d has no name", i))
			continue
		}
		if seen[name] {
			errs = append(errs, fmt.Errorf("schema: input %s appears twice", name))
		}
		seen[name] = true
		if !oip.Datatype(f.GetDatatype()).Valid() {
			errs = append(errs, fmt.Errorf("schema: input %s: datatype %q is not one of the protocol's datatypes", name, f.GetDatatype()))
		}
		if f.Min != nil && math.IsNaN(f.GetMin()) || f.Max != nil && math.IsNaN(f.GetMax()) {
			errs = append(errs, fmt.Errorf("schema: input %s: a bound is not a number", name))
		} else if f.Min != nil && f.Max != nil && f.GetMin() > f.GetMax() {
			errs = append(errs, fmt.Errorf("schema: input %s: min %g is above max %g", name, f.GetMin(), f.GetMax()))
		}
		for _, d := range f.GetShape() {
			if d != 1 {
				errs = append(errs, fmt.Errorf("schema: input %s: shape %v is not a scalar's; a column holds one value per row", name, f.GetShape()))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// valueType is what a feature's values must be.
type valueType int

const (
	anyText  valueType = iota // BYTES: any value goes
	numbers                   // finite numbers
	booleans                  // true/false, 1/0
)

// typeOf returns what f's values must be: booleans for BOOL, numbers for
// the other numeric datatypes or a numeric kind, anything otherwise.
func typeOf(f *droverv1.Feature) valueType {
	dt := oip.Datatype(f.GetDatatype())
	_, _, isInt := intRange(dt)
	switch {
	case dt == oip.Bool:
		return booleans
	case isInt, dt == oip.FP16, dt == oip.FP32, dt == oip.FP64, f.GetKind() == droverv1.FeatureKind_FEATURE_KIND_NUMERIC:
		return numbers
	}
	return anyText
}

// maxExact is 2^53: above it, a float64 (which is how package tabular
// holds numbers) no longer holds every integer exactly.
const maxExact = 1 << 53

// intRange returns the range of an integer datatype, the 64-bit ones
// limited to the integers a float64 holds exactly; ok is false for the
// other datatypes.
func intRange(d oip.Datatype) (lo, hi float64, ok bool) {
	switch d {
	case oip.Int8:
		return math.MinInt8, math.MaxInt8, true
	case oip.Int16:
		return math.MinInt16, math.MaxInt16, true
	case oip.Int32:
		return math.MinInt32, math.MaxInt32, true
	case oip.Int64:
		return -maxExact, maxExact, true
	case oip.Uint8:
		return 0, math.MaxUint8, true
	case oip.Uint16:
		return 0, math.MaxUint16, true
	case oip.Uint32:
		return 0, math.MaxUint32, true
	case oip.Uint64:
		return 0, maxExact, true
	}
	return 0, 0, false
}
