package training

import (
	"fmt"
	"math"
	"slices"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/internal/drift"
	"github.com/droverhq/drover/internal/sketch"
	"github.com/droverhq/drover/internal/tabular"
	"github.com/droverhq/drover/internal/validate"
	"github.com/droverhq/drover/plugins/native"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Profile builds a version's reference profile (a serialised
// drover.v1.ReferenceProfile) from its training data, a CSV or Parquet
// file by its extension: the features — the schema's inputs, in its order,
// or every column but the target and the ignored ones — and, for a native
// model (format NativeFormat, artifact its path), the model's answers over
// the same rows. It returns the profile and the data set's row count.
func Profile(dataset, target string, ignore []string, schema *droverv1.FeatureSchema, format, artifact string) ([]byte, int, error) {
	t, err := tabular.Read(dataset, tabular.Options{Kinds: validate.SchemaKinds(schema), Ignore: ignore})
	if err != nil {
		return nil, 0, err
	}
	var names []string
	if len(schema.GetInputs()) > 0 {
		for _, in := range schema.GetInputs() {
			if t.Lookup(in.GetName()) == nil {
				return nil, 0, fmt.Errorf("%s: the schema's input %q is not a column", dataset, in.GetName())
			}
			names = append(names, in.GetName())
		}
	} else {
		for _, c := range t.Columns {
			if c.Name != target {
				names = append(names, c.Name)
			}
		}
	}
	if target != "" && t.Lookup(target) == nil {
		return nil, 0, fmt.Errorf("%s: no target column %q", dataset, target)
	}
	cols := make([]drift.Column, len(names))
	for i, n := range names {
		c := driftColumnOf(t.Lookup(n))
		if len(schema.GetInputs()) > 0 {
			if k := schema.GetInputs()[i].GetKind(); k == droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL || k == droverv1.FeatureKind_FEATURE_KIND_BINARY {
				c = textColumn(c)
			}
		}
		cols[i] = c
	}
	opts := sketch.ProfileOptions{}
	if format == NativeFormat {
		pred, err := nativePredictions(artifact, t)
		if err != nil {
			return nil, 0, fmt.Errorf("the model's predictions over %s: %w", dataset, err)
		}
		opts.Prediction = pred
	}
	p, err := sketch.BuildProfileWith(cols, opts)
	if err != nil {
		return nil, 0, fmt.Errorf("reference profile of %s: %w", dataset, err)
	}
	b, err := proto.Marshal(p)
	return b, t.Rows, err
}

// driftColumnOf hands a table's column to package drift.
func driftColumnOf(c *tabular.Column) drift.Column {
	if c.Kind == tabular.Text {
		return drift.Column{Name: c.Name, Categorical: true, Strings: c.Strings}
	}
	return drift.Column{Name: c.Name, Numbers: c.Numbers}
}

// textColumn turns a numeric column into categories.
func textColumn(c drift.Column) drift.Column {
	if c.Categorical {
		return c
	}
	s := make([]string, len(c.Numbers))
	for i, x := range c.Numbers {
		if !math.IsNaN(x) {
			s[i] = strconv.FormatFloat(x, 'g', -1, 64)
		}
	}
	return drift.Column{Name: c.Name, Categorical: true, Strings: s}
}

// nativePredictions runs a native model over a table: its labels (a
// classifier) or its predictions (a regression), as a column.
func nativePredictions(artifact string, t *tabular.Table) (*drift.Column, error) {
	m, err := LoadNativeArtifact(artifact)
	if err != nil {
		return nil, err
	}
	cols := make([]native.Column, len(m.Encoder.Features))
	for i, f := range m.Encoder.Features {
		c := t.Lookup(f.Name)
		if c == nil {
			return nil, fmt.Errorf("no column %q, a feature of the model", f.Name)
		}
		dc := driftColumnOf(c)
		if f.Categorical {
			dc = textColumn(dc)
			cols[i] = native.Column{Name: f.Name, Categorical: true, Strings: dc.Strings}
			continue
		}
		if dc.Categorical {
			return nil, fmt.Errorf("column %q is text; the model takes numbers", f.Name)
		}
		nums := slices.Clone(dc.Numbers)
		for j, x := range nums {
			if math.IsNaN(x) {
				nums[j] = f.Mean // as the agent serves a missing value
			}
		}
		cols[i] = native.Column{Name: f.Name, Numbers: nums}
	}
	out, err := m.Predict(cols)
	if err != nil {
		return nil, err
	}
	if m.Task == native.Regression {
		return &drift.Column{Name: "prediction", Numbers: out}, nil
	}
	k := len(m.Classes)
	labels := make([]string, len(out)/k)
	for r := range labels {
		p := out[r*k : (r+1)*k]
		labels[r] = m.Classes[slices.Index(p, slices.Max(p))]
	}
	return &drift.Column{Name: "label", Categorical: true, Strings: labels}, nil
}
