package native

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
)

// MarshalArtifact encodes the model as a native artifact: JSON, with the
// format version first read on loading.
func (m *Model) MarshalArtifact() ([]byte, error) {
	return json.MarshalIndent(m, "", " ")
}

// LoadArtifact decodes a native artifact and checks that it is whole: a
// format this build reads, and weights that fit its encoder and classes.
func LoadArtifact(b []byte) (*Model, error) {
	var head struct {
		Format int `json:"format"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("native artifact: %w", err)
	}
	if head.Format != FormatVersion {
		return nil, fmt.Errorf("native artifact: format %d; this build reads format %d", head.Format, FormatVersion)
	}
	m := new(Model)
	if err := json.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("native artifact: %w", err)
	}
	outputs := 1
	switch {
	case m.Task == Classification && len(m.Classes) < 2:
		return nil, errors.New("native artifact: a classifier with fewer than two classes")
	case m.Task == Classification && len(m.Classes) > 2:
		outputs = len(m.Classes)
	case m.Task != Classification && m.Task != Regression:
		return nil, fmt.Errorf("native artifact: unknown task %q", m.Task)
	}
	if len(m.Weights) != outputs || len(m.Intercepts) != outputs {
		return nil, fmt.Errorf("native artifact: %d weight rows and %d intercepts for %d outputs", len(m.Weights), len(m.Intercepts), outputs)
	}
	for k, w := range m.Weights {
		if len(w) != m.Encoder.Width() {
			return nil, fmt.Errorf("native artifact: weight row %d has %d weights for %d inputs", k, len(w), m.Encoder.Width())
		}
	}
	for _, f := range m.Encoder.Features {
		if !f.Categorical && f.Std <= 0 {
			return nil, fmt.Errorf("native artifact: feature %s has standard deviation %g", f.Name, f.Std)
		}
	}
	return m, nil
}

// Outputs returns how many values Predict gives per row: one per class for
// a classifier, one for a regression.
func (m *Model) Outputs() int {
	if m.Task == Classification {
		return len(m.Classes)
	}
	return 1
}

// ErrNotFinite is Predict's error for a row it cannot answer with finite
// numbers: a feature that is NaN or infinite, or one so far outside the
// values the model was trained on (1e308, say) that its scaled value or
// the model's answer overflows.
var ErrNotFinite = errors.New("not a finite number")

// Predict returns, for each row of the columns (given in the model's
// feature order, by name), the class probabilities or the predicted value,
// Outputs() values a row, flat. A row that does not give finite numbers
// fails the whole call with an error wrapping ErrNotFinite.
func (m *Model) Predict(cols []Column) ([]float64, error) {
	if len(cols) != len(m.Encoder.Features) {
		return nil, fmt.Errorf("native: %d columns for %d features", len(cols), len(m.Encoder.Features))
	}
	rows := -1
	for i, f := range m.Encoder.Features {
		c := &cols[i]
		switch {
		case c.Name != f.Name:
			return nil, fmt.Errorf("native: column %d is %s, where the model wants %s", i, c.Name, f.Name)
		case c.Categorical != f.Categorical:
			return nil, fmt.Errorf("native: feature %s: categorical is %v, the model's is %v", f.Name, c.Categorical, f.Categorical)
		case rows >= 0 && c.len() != rows:
			return nil, fmt.Errorf("native: feature %s has %d rows, %s %d", f.Name, c.len(), cols[0].Name, rows)
		}
		rows = c.len()
	}
	per := m.Outputs()
	out := make([]float64, rows*per)
	x := make([]float64, m.Encoder.Width())
	for r := range rows {
		m.Encoder.encode(cols, r, x)
		if name, v, ok := m.Encoder.nonFinite(cols, x, r); ok {
			if notFinite(v) {
				return nil, fmt.Errorf("native: row %d: feature %s is %g, %w", r, name, v, ErrNotFinite)
			}
			return nil, fmt.Errorf("native: row %d: feature %s: %g is too large for the model: scaled, it is %w", r, name, v, ErrNotFinite)
		}
		y := out[r*per : (r+1)*per]
		m.predictEncoded(x, y)
		if !slices.ContainsFunc(y, notFinite) {
			continue
		}
		return nil, fmt.Errorf("native: row %d: the model's answer is %w: an input is far outside the values it was trained on", r, ErrNotFinite)
	}
	return out, nil
}

func notFinite(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) }

// nonFinite finds the numeric feature of row r whose encoded value x holds
// is not finite, and returns its name and input value.
func (e *Encoder) nonFinite(cols []Column, x []float64, r int) (name string, v float64, found bool) {
	j := 0
	for i, f := range e.Features {
		if f.Categorical {
			j += len(f.Categories)
			continue
		}
		if notFinite(x[j]) {
			return f.Name, cols[i].Numbers[r], true
		}
		j++
	}
	return "", 0, false
}
