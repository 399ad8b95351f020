package validate

import (
	"errors"
	"math"
	"slices"
	"strings"

	"github.com/droverhq/drover/internal/tabular"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// SchemaKinds maps a feature schema's inputs and outputs to column kinds:
// numeric features are numbers; categorical and binary ones are text
// (categories, even when written as numbers); a feature of unspecified
// kind follows its datatype (BYTES and BOOL are text, the integer and
// float types numbers, anything else is inferred).
func SchemaKinds(s *droverv1.FeatureSchema) map[string]tabular.Kind {
	kinds := map[string]tabular.Kind{}
	for _, f := range slices.Concat(s.GetInputs(), s.GetOutputs()) {
		k := tabular.Inferred
		switch f.GetKind() {
		case droverv1.FeatureKind_FEATURE_KIND_NUMERIC:
			k = tabular.Numeric
		case droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL, droverv1.FeatureKind_FEATURE_KIND_BINARY:
			k = tabular.Text
		default:
			switch dt := strings.ToUpper(f.GetDatatype()); {
			case dt == "BYTES" || dt == "BOOL":
				k = tabular.Text
			case strings.HasPrefix(dt, "INT") || strings.HasPrefix(dt, "UINT") || strings.HasPrefix(dt, "FP"):
				k = tabular.Numeric
			}
		}
		kinds[f.GetName()] = k
	}
	return kinds
}

// ReadFile reads a data file (CSV or Parquet, by its extension) for
// [Check], with the column kinds the schema implies and two changes, so
// that a problem in the values becomes a failed expectation rather than an
// error that hides the others:
//
//   - A numeric input is read with its kind inferred, so that a text
//     value in it is the input's failed type expectation, with every
//     such value counted, rather than a read error at the first. (A
//     target that is not in the schema is read as text: labels as
//     written.)
//   - A column in which every value is null, which package tabular
//     refuses, is left out and read again, then put back as a column
//     of nulls for the null expectations to judge.
//
// The ignored columns are left unread (listed in the table's Ignored).
func ReadFile(path string, schema *droverv1.FeatureSchema, target string, ignore []string) (*tabular.Table, error) {
	declared := SchemaKinds(schema)
	kinds := make(map[string]tabular.Kind, len(declared)+1)
	for name, k := range declared {
		if k == tabular.Numeric {
			k = tabular.Inferred
		}
		kinds[name] = k
	}
	if _, ok := kinds[target]; target != "" && !ok {
		kinds[target] = tabular.Text
	}
	var allNull []string
	for {
		t, err := tabular.Read(path, tabular.Options{Kinds: kinds, Ignore: slices.Concat(ignore, allNull)})
		if err != nil {
			name, ok := allNullColumn(err)
			if !ok || slices.Contains(allNull, name) {
				return nil, err
			}
			allNull = append(allNull, name)
			continue
		}
		for _, name := range allNull {
			t.Ignored = slices.DeleteFunc(t.Ignored, func(n string) bool { return n == name })
			c := tabular.Column{Name: name, Kind: tabular.Text, Strings: make([]string, t.Rows), Nulls: t.Rows, Declared: true}
			if declared[name] == tabular.Numeric {
				c.Kind, c.Strings, c.Numbers = tabular.Numeric, nil, make([]float64, t.Rows)
				for i := range c.Numbers {
					c.Numbers[i] = math.NaN()
				}
			}
			t.Columns = append(t.Columns, c)
		}
		return t, nil
	}
}

// allNullColumn returns the column named by tabular's error for a column
// in which every value is null. The error has no sentinel, so it is
// recognised by its form and wording; TestReadFileAllNullColumn (and the
// CLI's TestDatasetsValidateAllNullColumn) fail if that changes.
func allNullColumn(err error) (string, bool) {
	var te *tabular.Error
	if errors.As(err, &te) && te.Row == 0 && te.Column != "" && strings.HasPrefix(te.Msg, "every one of the ") {
		return te.Column, true
	}
	return "", false
}
