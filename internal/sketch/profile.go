package sketch

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/droverhq/drover/internal/drift"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// DefaultBins is the default number of equal-frequency bins between a
// reference's quantile edges.
const DefaultBins = 10

// ProfileOptions tunes BuildProfileWith; zero values take the defaults.
type ProfileOptions struct {
	// Bins is the number of equal-frequency bins (default DefaultBins);
	// underflow and overflow bins come in addition.
	Bins int
	// K is the reference sketches' accuracy parameter (default
	// ReferenceK).
	K int
	// Categories caps the categories a categorical feature tracks
	// (default DefaultCategories).
	Categories int
	// Seed seeds the sketches' coins; feature i uses a seed derived from
	// Seed and i.
	Seed uint64
	// Prediction, when set, is the model's output over the same rows.
	Prediction *drift.Column
	// Built is recorded as the profile's build time; zero leaves it unset.
	Built time.Time
}

// BuildProfile summarises training columns, all of the same length, into
// a reference profile with the given number of equal-frequency bins per
// numeric feature (<= 0: DefaultBins) and default options otherwise.
func BuildProfile(columns []drift.Column, bins int) (*droverv1.ReferenceProfile, error) {
	return BuildProfileWith(columns, ProfileOptions{Bins: bins})
}

// BuildProfileWith summarises training columns, all of the same length,
// into a reference profile.
//
// A numeric feature's edges are the reference's quantiles
// (drift.QuantileEdges), its bins count values on them, and its sketch has
// accuracy opts.K. A categorical column with at most two distinct values
// is binary; a categorical column keeps its opts.Categories most frequent
// categories and counts the rest as other.
func BuildProfileWith(columns []drift.Column, opts ProfileOptions) (*droverv1.ReferenceProfile, error) {
	if opts.Bins <= 0 {
		opts.Bins = DefaultBins
	}
	if opts.K <= 0 {
		opts.K = ReferenceK
	}
	if opts.Categories <= 0 {
		opts.Categories = DefaultCategories
	}
	rows := -1
	seen := make(map[string]bool, len(columns))
	all := columns
	if opts.Prediction != nil {
		all = append(slices.Clip(columns), *opts.Prediction)
	}
	for i, c := range all {
		n := columnLen(c)
		if rows >= 0 && n != rows {
			return nil, fmt.Errorf("%w: column %q has %d rows, column %q %d", ErrInvalid, c.Name, n, all[0].Name, rows)
		}
		rows = n
		if i < len(columns) {
			if c.Name == "" {
				return nil, fmt.Errorf("%w: column %d has no name", ErrInvalid, i)
			}
			if seen[c.Name] {
				return nil, fmt.Errorf("%w: column %q appears twice", ErrInvalid, c.Name)
			}
			seen[c.Name] = true
		}
	}
	p := &droverv1.ReferenceProfile{Rows: uint64(max(rows, 0))}
	if !opts.Built.IsZero() {
		p.BuiltTime = timestamppb.New(opts.Built)
	}
	for i, c := range all {
		fp, err := profileColumn(c, opts, featureSeed(opts.Seed, i))
		if err != nil {
			return nil, err
		}
		if i < len(columns) {
			p.Features = append(p.Features, fp)
		} else {
			p.Prediction = fp
		}
	}
	return p, nil
}

func columnLen(c drift.Column) int {
	if c.Categorical {
		return len(c.Strings)
	}
	return len(c.Numbers)
}

// featureSeed derives feature i's sketch seed from a window or profile
// seed.
func featureSeed(seed uint64, i int) uint64 {
	return splitmix(seed + uint64(i+1)*0x9e3779b97f4a7c15)
}

func profileColumn(c drift.Column, opts ProfileOptions, seed uint64) (*droverv1.FeatureProfile, error) {
	if c.Categorical {
		cat := NewCategorical(0)
		for _, s := range c.Strings {
			cat.Add(s)
		}
		binary := len(cat.names) <= 2
		cat.capTo(opts.Categories)
		fp := cat.ToProto()
		fp.Name = c.Name
		if binary {
			fp.Kind = droverv1.FeatureKind_FEATURE_KIND_BINARY
		}
		return fp, nil
	}
	finite := make([]float64, 0, len(c.Numbers))
	for _, x := range c.Numbers {
		if x-x == 0 {
			finite = append(finite, x)
		}
	}
	var edges []float64
	if len(finite) > 0 {
		edges = drift.QuantileEdges(finite, opts.Bins)
	}
	// Edges must be finite and ascending; a degenerate column (one value)
	// may yield repeated edges, which collapse.
	clean := make([]float64, 0, len(edges))
	for _, e := range edges {
		if !math.IsNaN(e) && !math.IsInf(e, 0) {
			clean = append(clean, e)
		}
	}
	slices.Sort(clean)
	n, err := NewNumeric(slices.Compact(clean), NewSeeded(opts.K, seed))
	if err != nil {
		return nil, fmt.Errorf("column %q: %w", c.Name, err)
	}
	for _, x := range c.Numbers {
		n.Add(x)
	}
	fp := n.ToProto()
	fp.Name = c.Name
	return fp, nil
}
