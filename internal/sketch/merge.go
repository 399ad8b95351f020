package sketch

import (
	"fmt"
	"slices"
	"time"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// MergeWindows merges windows of one model version as they arrive on the
// wire (from several agents, or consecutive windows of one) into one,
// without needing their reference profile; the inputs are unchanged. The
// merged window spans from the earliest start to the latest end. Every
// window must have the same model, version and columns (names and kinds,
// in order), and the same number of bins per numeric feature; each is
// checked for consistency as WindowFromProto would, except against a
// reference.
func MergeWindows(windows ...*droverv1.DriftWindow) (*droverv1.DriftWindow, error) {
	if len(windows) == 0 {
		return nil, fmt.Errorf("%w: no windows to merge", ErrInvalid)
	}
	first := windows[0]
	if first == nil {
		return nil, fmt.Errorf("%w: window 0 is nil", ErrInvalid)
	}
	out := &droverv1.DriftWindow{Model: first.GetModel(), Version: first.GetVersion()}
	var start, end time.Time
	for i, w := range windows {
		if w == nil {
			return nil, fmt.Errorf("%w: window %d is nil", ErrInvalid, i)
		}
		if w.GetModel() != out.Model || w.GetVersion() != out.Version {
			return nil, fmt.Errorf("%w: window %d is of %s v%d, window 0 of %s v%d",
				ErrMismatch, i, w.GetModel(), w.GetVersion(), out.Model, out.Version)
		}
		if len(w.GetFeatures()) != len(first.GetFeatures()) || (w.GetPrediction() == nil) != (first.GetPrediction() == nil) {
			return nil, fmt.Errorf("%w: window %d has other columns than window 0", ErrMismatch, i)
		}
		if w.GetStart() != nil {
			if err := w.GetStart().CheckValid(); err != nil {
				return nil, fmt.Errorf("%w: window %d start: %v", ErrInvalid, i, err)
			}
			s := w.GetStart().AsTime()
			e := s.Add(w.GetLength().AsDuration())
			if start.IsZero() || s.Before(start) {
				start = s
			}
			if end.IsZero() || e.After(end) {
				end = e
			}
		}
		out.Rows += w.GetRows()
		out.SchemaViolations += w.GetSchemaViolations()
	}
	if !start.IsZero() {
		out.Start, out.Length = timestamppb.New(start), durationpb.New(end.Sub(start))
	}
	column := func(i int) []*droverv1.FeatureProfile {
		fps := make([]*droverv1.FeatureProfile, len(windows))
		for j, w := range windows {
			if i < len(first.GetFeatures()) {
				fps[j] = w.GetFeatures()[i]
			} else {
				fps[j] = w.GetPrediction()
			}
		}
		return fps
	}
	for i := range len(first.GetFeatures()) {
		fp, err := mergeProfiles(column(i))
		if err != nil {
			return nil, err
		}
		out.Features = append(out.Features, fp)
	}
	if first.GetPrediction() != nil {
		fp, err := mergeProfiles(column(len(first.GetFeatures())))
		if err != nil {
			return nil, err
		}
		out.Prediction = fp
	}
	return out, nil
}

// mergeProfiles merges one column's live profiles.
func mergeProfiles(fps []*droverv1.FeatureProfile) (*droverv1.FeatureProfile, error) {
	name, kind := fps[0].GetName(), fps[0].GetKind()
	for _, fp := range fps {
		if fp.GetName() != name || fp.GetKind() != kind {
			return nil, fmt.Errorf("%w: column %q (%v) meets %q (%v)", ErrMismatch, name, kind, fp.GetName(), fp.GetKind())
		}
	}
	switch kind {
	case droverv1.FeatureKind_FEATURE_KIND_NUMERIC:
		return mergeNumericProfiles(fps)
	case droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL, droverv1.FeatureKind_FEATURE_KIND_BINARY:
		return mergeCategoricalProfiles(fps)
	}
	return nil, fmt.Errorf("%w: column %q has kind %v", ErrInvalid, name, kind)
}

func mergeNumericProfiles(fps []*droverv1.FeatureProfile) (*droverv1.FeatureProfile, error) {
	name := fps[0].GetName()
	var acc *Numeric
	for _, fp := range fps {
		s := fp.GetNumeric()
		// Without the reference, the window's own edges (normally none)
		// and bins stand in for it; the summaries must agree on both.
		ref := &droverv1.NumericSummary{Edges: s.GetEdges()}
		if len(s.GetEdges()) == 0 && len(s.GetBins()) > 1 {
			ref.Edges = make([]float64, len(s.GetBins())-1)
			for i := range ref.Edges {
				ref.Edges[i] = float64(i)
			}
		}
		n, err := NumericFromProto(fp, ref)
		if err != nil {
			return nil, err
		}
		if acc == nil {
			acc = n
			continue
		}
		if len(n.bins) != len(acc.bins) {
			return nil, fmt.Errorf("%w: column %q has %d bins in one window, %d in another", ErrMismatch, name, len(n.bins), len(acc.bins))
		}
		if !slices.Equal(s.GetEdges(), fps[0].GetNumeric().GetEdges()) {
			return nil, fmt.Errorf("%w: column %q has different edges in two windows", ErrMismatch, name)
		}
		if err := acc.Merge(n); err != nil {
			return nil, fmt.Errorf("column %q: %w", name, err)
		}
	}
	fp := acc.ToProto()
	fp.Name = name
	fp.Numeric.Edges = slices.Clone(fps[0].GetNumeric().GetEdges())
	return fp, nil
}

func mergeCategoricalProfiles(fps []*droverv1.FeatureProfile) (*droverv1.FeatureProfile, error) {
	out := proto.Clone(fps[0]).(*droverv1.FeatureProfile)
	if out.Categorical == nil {
		return nil, fmt.Errorf("%w: column %q has no category counts", ErrInvalid, out.GetName())
	}
	if out.Categorical.Counts == nil {
		out.Categorical.Counts = map[string]uint64{}
	}
	for _, fp := range fps {
		if err := checkCategorical(fp); err != nil {
			return nil, err
		}
	}
	for _, fp := range fps[1:] {
		c := fp.GetCategorical()
		out.Count += fp.GetCount()
		out.Nulls += fp.GetNulls()
		out.Categorical.Other += c.GetOther()
		out.Categorical.Unseen += c.GetUnseen()
		for name, n := range c.GetCounts() {
			out.Categorical.Counts[name] += n
		}
	}
	return out, nil
}

// checkCategorical checks that a profile's buckets add up to its count.
func checkCategorical(fp *droverv1.FeatureProfile) error {
	c := fp.GetCategorical()
	if c == nil {
		return fmt.Errorf("%w: column %q has no category counts", ErrInvalid, fp.GetName())
	}
	total := c.GetOther() + c.GetUnseen()
	for name, n := range c.GetCounts() {
		if name == "" {
			return fmt.Errorf("%w: column %q counts the null category", ErrInvalid, fp.GetName())
		}
		total += n
	}
	if total != fp.GetCount() {
		return fmt.Errorf("%w: column %q counts %d values, its buckets %d", ErrInvalid, fp.GetName(), fp.GetCount(), total)
	}
	return nil
}
