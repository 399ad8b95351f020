package sketch

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// DefaultCategories is the default cap on the distinct categories a
// reference tracks.
const DefaultCategories = 100

// Categorical counts a categorical feature's values exactly for a capped
// set of categories.
//
// A free summary (NewCategorical) tracks categories as they come, up to
// its limit; later categories count as other, and a merge that exceeds the
// limit keeps the most frequent categories. A live summary
// (CategoricalAgainst) tracks exactly its reference's categories; any
// other value counts as unseen when the reference tracked every category
// it saw, and as other when the reference itself had an other bucket (the
// value may be one of the reference's untracked categories).
//
// The empty string is null. A Categorical is not safe for concurrent use.
type Categorical struct {
	index  map[string]int
	names  []string
	counts []uint64
	// limit caps a free summary's categories; 0 means no cap.
	limit int
	// live marks a summary frozen to its reference's categories;
	// refOther that the reference had an other bucket.
	live, refOther       bool
	other, unseen, nulls uint64
}

// NewCategorical returns an empty free summary tracking at most limit
// categories (limit <= 0 means no cap).
func NewCategorical(limit int) *Categorical {
	return &Categorical{index: map[string]int{}, limit: max(limit, 0)}
}

// CategoricalAgainst returns an empty live summary tracking the
// reference's categories.
func CategoricalAgainst(ref *droverv1.CategoricalCounts) *Categorical {
	c := &Categorical{index: map[string]int{}, live: true, refOther: ref.GetOther() > 0}
	for _, name := range slices.Sorted(maps.Keys(ref.GetCounts())) {
		c.track(name)
	}
	return c
}

func (c *Categorical) track(name string) int {
	i := len(c.names)
	c.index[name] = i
	c.names = append(c.names, name)
	c.counts = append(c.counts, 0)
	return i
}

// Add counts one value; "" is null.
func (c *Categorical) Add(v string) {
	if i, ok := c.index[v]; ok {
		c.counts[i]++
		return
	}
	c.addSlow(v, 1)
}

// AddN counts n occurrences of a value; "" is null.
func (c *Categorical) AddN(v string, n uint64) {
	if i, ok := c.index[v]; ok {
		c.counts[i] += n
		return
	}
	c.addSlow(v, n)
}

func (c *Categorical) addSlow(v string, n uint64) {
	switch {
	case v == "":
		c.nulls += n
	case c.live && c.refOther:
		c.other += n
	case c.live:
		c.unseen += n
	case c.limit > 0 && len(c.names) >= c.limit:
		c.other += n
	default:
		c.counts[c.track(v)] += n
	}
}

// Merge adds o's counts to c; o is unchanged. Categories o tracks and c
// does not are counted as c would count them when added.
func (c *Categorical) Merge(o *Categorical) {
	if o == nil {
		return
	}
	if o == c {
		o = c.Clone()
	}
	c.nulls += o.nulls
	c.other += o.other
	c.unseen += o.unseen
	if c.live {
		for i, name := range o.names {
			c.AddN(name, o.counts[i])
		}
		return
	}
	// A free merge may exceed the cap for a moment; the least frequent
	// categories then fold into other.
	for i, name := range o.names {
		j, ok := c.index[name]
		if !ok {
			j = c.track(name)
		}
		c.counts[j] += o.counts[i]
	}
	c.capTo(c.limit)
}

// capTo keeps the limit most frequent categories (ties by name) and counts
// the rest as other.
func (c *Categorical) capTo(limit int) {
	if limit <= 0 || len(c.names) <= limit {
		return
	}
	order := make([]int, len(c.names))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		if r := cmp.Compare(c.counts[b], c.counts[a]); r != 0 {
			return r
		}
		return cmp.Compare(c.names[a], c.names[b])
	})
	names, counts := c.names, c.counts
	c.index = make(map[string]int, limit)
	c.names, c.counts = nil, nil
	for rank, i := range order {
		if rank < limit {
			c.counts[c.track(names[i])] += counts[i]
			continue
		}
		c.other += counts[i]
	}
}

// Clone returns an independent copy of c.
func (c *Categorical) Clone() *Categorical {
	d := *c
	d.index = maps.Clone(c.index)
	d.names = slices.Clone(c.names)
	d.counts = slices.Clone(c.counts)
	return &d
}

// Count returns the number of non-null values added.
func (c *Categorical) Count() uint64 {
	total := c.other + c.unseen
	for _, n := range c.counts {
		total += n
	}
	return total
}

// Nulls returns the number of null values added.
func (c *Categorical) Nulls() uint64 { return c.nulls }

// Counts returns the count of each tracked category.
func (c *Categorical) Counts() map[string]uint64 {
	m := make(map[string]uint64, len(c.names))
	for i, name := range c.names {
		m[name] = c.counts[i]
	}
	return m
}

// Other returns the count of values in untracked categories.
func (c *Categorical) Other() uint64 { return c.other }

// Unseen returns the count of values in categories the reference never
// saw.
func (c *Categorical) Unseen() uint64 { return c.unseen }

// ToProto returns the counts as a FeatureProfile of kind categorical,
// with no name. A live summary omits categories it never saw, which keeps
// windows small; the reference supplies them.
func (c *Categorical) ToProto() *droverv1.FeatureProfile {
	m := make(map[string]uint64, len(c.names))
	for i, name := range c.names {
		if c.counts[i] > 0 || !c.live {
			m[name] = c.counts[i]
		}
	}
	return &droverv1.FeatureProfile{
		Kind:  droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL,
		Count: c.Count(),
		Nulls: c.nulls,
		Categorical: &droverv1.CategoricalCounts{
			Counts: m, Other: c.other, Unseen: c.unseen,
		},
	}
}

// CategoricalFromProto restores counts. With ref nil, p is a free summary
// (a reference's) capped at limit categories (<= 0: no cap); otherwise p
// is a live summary measured against ref, and may only count ref's
// categories.
func CategoricalFromProto(p *droverv1.FeatureProfile, ref *droverv1.CategoricalCounts, limit int) (*Categorical, error) {
	s := p.GetCategorical()
	if s == nil {
		return nil, fmt.Errorf("%w: feature %q has no category counts", ErrInvalid, p.GetName())
	}
	var c *Categorical
	if ref == nil {
		c = NewCategorical(limit)
	} else {
		c = CategoricalAgainst(ref)
	}
	var total uint64
	for _, name := range slices.Sorted(maps.Keys(s.GetCounts())) {
		n := s.GetCounts()[name]
		if name == "" {
			return nil, fmt.Errorf("%w: feature %q counts the null category", ErrInvalid, p.GetName())
		}
		if ref != nil {
			if _, ok := c.index[name]; !ok {
				return nil, fmt.Errorf("%w: feature %q counts %q, not a reference category", ErrMismatch, p.GetName(), name)
			}
		}
		total += n
		c.AddN(name, n)
	}
	if ref == nil && s.GetUnseen() > 0 {
		return nil, fmt.Errorf("%w: feature %q: a reference has no unseen values", ErrInvalid, p.GetName())
	}
	c.other += s.GetOther()
	c.unseen += s.GetUnseen()
	c.nulls = p.GetNulls()
	if total+s.GetOther()+s.GetUnseen() != p.GetCount() {
		return nil, fmt.Errorf("%w: feature %q counts %d values, its buckets %d",
			ErrInvalid, p.GetName(), p.GetCount(), total+s.GetOther()+s.GetUnseen())
	}
	return c, nil
}
