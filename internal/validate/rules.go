package validate

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/internal/tabular"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// maxExamples is how many offending values a detail quotes.
const maxExamples = 5

// column is a table's column seen value by value: a Numeric column's
// values are its Numbers (NaN is null), any other column's its Strings
// ("" is null), as package tabular gives them.
type column struct {
	*tabular.Column
	rowOf func(i int) int // the file's row of value i
}

func (c column) numeric() bool { return c.Kind == tabular.Numeric }

func (c column) len() int {
	if c.numeric() {
		return len(c.Numbers)
	}
	return len(c.Strings)
}

func (c column) row(i int) int { return c.rowOf(i) }

func (c column) null(i int) bool {
	if c.numeric() {
		return math.IsNaN(c.Numbers[i])
	}
	return c.Strings[i] == ""
}

// text returns value i as it would be written: a number in the shortest
// form that reads back the same, as the agent spells a category.
func (c column) text(i int) string {
	if c.numeric() {
		return strconv.FormatFloat(c.Numbers[i], 'g', -1, 64)
	}
	return c.Strings[i]
}

// quoted returns value i for a detail: a number as it is, text quoted.
func (c column) quoted(i int) string {
	if c.numeric() {
		return c.text(i)
	}
	return strconv.Quote(c.Strings[i])
}

// asWritten returns a number for a detail as the file has it: quoted
// only when it is text with surrounding spaces.
func (c column) asWritten(i int) string {
	if s := c.text(i); c.numeric() || strings.TrimSpace(s) == s {
		return s
	}
	return strconv.Quote(c.Strings[i])
}

// number returns value i as a number; ok is false for a null, or for text
// that is not a finite number.
func (c column) number(i int) (v float64, ok bool) {
	if c.numeric() {
		v = c.Numbers[i]
	} else {
		var err error
		if v, err = strconv.ParseFloat(strings.TrimSpace(c.Strings[i]), 64); err != nil {
			return 0, false
		}
	}
	return v, !math.IsNaN(v) && !math.IsInf(v, 0)
}

// boolean reports whether value i is a boolean: 0 or 1 in a numeric
// column, a spelling strconv.ParseBool takes in a text column.
func (c column) boolean(i int) bool {
	if c.numeric() {
		return c.Numbers[i] == 0 || c.Numbers[i] == 1
	}
	_, err := strconv.ParseBool(strings.TrimSpace(c.Strings[i]))
	return err == nil
}

// offenders counts offending values and keeps the first few as examples.
type offenders struct {
	n        int
	examples []string
}

// add counts an offending value at row, e.g. "row 17: 80".
func (o *offenders) add(row int, value string) {
	o.n++
	if len(o.examples) < maxExamples {
		o.examples = append(o.examples, fmt.Sprintf("row %d: %s", row, value))
	}
}

// addRow counts an offending row whose value needs no quoting (a null).
func (o *offenders) addRow(row int) {
	o.n++
	if len(o.examples) < maxExamples {
		o.examples = append(o.examples, fmt.Sprintf("row %d", row))
	}
}

// eg returns ", e.g. row 17: 80, row 30: 95", or "" with no examples.
func (o *offenders) eg() string {
	if len(o.examples) == 0 {
		return ""
	}
	return ", e.g. " + strings.Join(o.examples, ", ")
}

// checkFeature checks a present input's values against its feature's
// type, integer datatype, bounds and categories, whichever apply.
func checkFeature(f *droverv1.Feature, c column) []Result {
	out := []Result{checkType(f, c)}
	dt := oip.Datatype(f.GetDatatype())
	if lo, hi, isInt := intRange(dt); isInt {
		out = append(out, checkInteger(f.GetName(), dt, lo, hi, c))
	}
	if typeOf(f) == numbers && (f.Min != nil || f.Max != nil) {
		out = append(out, checkRange(f, c))
	}
	switch f.GetKind() {
	case droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL, droverv1.FeatureKind_FEATURE_KIND_BINARY:
		if len(f.GetCategories()) > 0 {
			res := Result{Name: f.GetName() + ".categories", Column: c.Name}
			res.Failed, res.Detail = checkListed(c, f.GetCategories(), "value", "category")
			res.Passed = res.Failed == 0
			out = append(out, res)
		} else if f.GetKind() == droverv1.FeatureKind_FEATURE_KIND_BINARY {
			out = append(out, checkBinary(f.GetName(), c))
		}
	}
	return out
}

// checkType checks that each non-null value is of the feature's type.
func checkType(f *droverv1.Feature, c column) Result {
	res := Result{Name: f.GetName() + ".type", Column: c.Name}
	want := f.GetDatatype()
	if want == "" || want == string(oip.Bytes) {
		want = "a numeric feature"
	}
	var values int
	var bad offenders
	switch typeOf(f) {
	case numbers:
		for i := range c.len() {
			if c.null(i) {
				continue
			}
			values++
			if _, ok := c.number(i); !ok {
				bad.add(c.row(i), c.quoted(i))
			}
		}
		if bad.n > 0 {
			res.Failed = bad.n
			res.Detail = fmt.Sprintf("%s, as %s wants%s", agree(bad.n, "value is not a finite number", "values are not finite numbers"), want, bad.eg())
			return res
		}
		res.Passed, res.Detail = true, fmt.Sprintf("%s, all numbers", plural(values, "value"))
	case booleans:
		for i := range c.len() {
			if c.null(i) {
				continue
			}
			values++
			if !c.boolean(i) {
				bad.add(c.row(i), c.quoted(i))
			}
		}
		if bad.n > 0 {
			res.Failed = bad.n
			res.Detail = fmt.Sprintf("%s (true/false or 1/0), as BOOL wants%s", agree(bad.n, "value is not a boolean", "values are not booleans"), bad.eg())
			return res
		}
		res.Passed, res.Detail = true, fmt.Sprintf("%s, all booleans", plural(values, "value"))
	default:
		res.Passed, res.Detail = true, fmt.Sprintf("%s: any value goes", cmp.Or(f.GetDatatype(), "no datatype"))
	}
	return res
}

// checkInteger checks that numbers are whole and within the datatype's
// range. Values that are not numbers are left to checkType.
func checkInteger(name string, dt oip.Datatype, lo, hi float64, c column) Result {
	res := Result{Name: name + ".integer", Column: c.Name}
	var frac, out offenders
	for i := range c.len() {
		v, ok := c.number(i)
		switch {
		case !ok:
		case !isWhole(v):
			frac.add(c.row(i), c.asWritten(i))
		case v < lo || v > hi:
			out.add(c.row(i), c.asWritten(i))
		}
	}
	bounds := fmt.Sprintf("%s's range [%.0f, %.0f]", dt, lo, hi)
	var parts []string
	if frac.n > 0 {
		parts = append(parts, fmt.Sprintf("%s, as %s wants%s", agree(frac.n, "value is not a whole number", "values are not whole numbers"), dt, frac.eg()))
	}
	if out.n > 0 {
		parts = append(parts, fmt.Sprintf("%s outside %s%s", plural(out.n, "value"), bounds, out.eg()))
	}
	if len(parts) > 0 {
		res.Failed, res.Detail = frac.n+out.n, strings.Join(parts, "; ")
		return res
	}
	res.Passed, res.Detail = true, "whole numbers within "+bounds
	return res
}

// checkRange checks numbers against the feature's inclusive bounds.
// Values that are not numbers are left to checkType.
func checkRange(f *droverv1.Feature, c column) Result {
	res := Result{Name: f.GetName() + ".range", Column: c.Name}
	var below, above offenders
	for i := range c.len() {
		v, ok := c.number(i)
		switch {
		case !ok:
		case f.Min != nil && v < f.GetMin():
			below.add(c.row(i), c.asWritten(i))
		case f.Max != nil && v > f.GetMax():
			above.add(c.row(i), c.asWritten(i))
		}
	}
	var parts []string
	if below.n > 0 {
		parts = append(parts, fmt.Sprintf("%s below min %g%s", plural(below.n, "value"), f.GetMin(), below.eg()))
	}
	if above.n > 0 {
		parts = append(parts, fmt.Sprintf("%s above max %g%s", plural(above.n, "value"), f.GetMax(), above.eg()))
	}
	if len(parts) > 0 {
		res.Failed, res.Detail = below.n+above.n, strings.Join(parts, "; ")
		return res
	}
	res.Passed = true
	switch {
	case f.Min != nil && f.Max != nil:
		res.Detail = fmt.Sprintf("all within [%g, %g]", f.GetMin(), f.GetMax())
	case f.Min != nil:
		res.Detail = fmt.Sprintf("all at least %g", f.GetMin())
	default:
		res.Detail = fmt.Sprintf("all at most %g", f.GetMax())
	}
	return res
}

// category is one distinct value of a column: how often it occurs and
// its first row.
type category struct {
	value    string
	n, first int
}

// distinct returns a column's distinct non-null values, as text, that
// keep passes, in the order they first occur.
func distinct(c column, keep func(string) bool) []category {
	var out []category
	at := map[string]int{}
	for i := range c.len() {
		if c.null(i) {
			continue
		}
		v := c.text(i)
		if !keep(v) {
			continue
		}
		j, seen := at[v]
		if !seen {
			j = len(out)
			at[v] = j
			out = append(out, category{value: v, first: c.row(i)})
		}
		out[j].n++
	}
	return out
}

// checkListed checks that every non-null value is one of allowed, and
// returns the number of values that are not with a detail naming up to
// maxExamples of their categories, most frequent first. noun names a
// value ("value", "label") and what an allowed one ("category", "class").
func checkListed(c column, allowed []string, noun, what string) (failed int, detail string) {
	listed := map[string]bool{}
	for _, a := range allowed {
		listed[a] = true
	}
	unlisted := distinct(c, func(v string) bool { return !listed[v] })
	if len(unlisted) == 0 {
		return 0, fmt.Sprintf("every %s is one of the %s (%s)", noun, plural(len(allowed), what), list(allowed))
	}
	for _, u := range unlisted {
		failed += u.n
	}
	return failed, fmt.Sprintf("%s in %s not listed (%s): %s",
		plural(failed, noun), plural(len(unlisted), what), list(allowed), describe(unlisted))
}

// checkBinary checks that a binary feature without categories takes at
// most two distinct values; the values beyond its two most frequent are
// the offending ones.
func checkBinary(name string, c column) Result {
	res := Result{Name: name + ".categories", Column: c.Name}
	values := distinct(c, func(string) bool { return true })
	if len(values) <= 2 {
		var quoted []string
		for _, v := range values {
			quoted = append(quoted, strconv.Quote(v.value))
		}
		res.Passed = true
		res.Detail = fmt.Sprintf("%s: %s", plural(len(values), "distinct value"), strings.Join(quoted, ", "))
		return res
	}
	slices.SortStableFunc(values, byCountThenRow)
	for _, v := range values[2:] {
		res.Failed += v.n
	}
	res.Detail = fmt.Sprintf("%d distinct values, where a binary feature takes at most 2: %s", len(values), describe(values))
	return res
}

// byCountThenRow orders categories by how often they occur, most first,
// then by where they first occur.
func byCountThenRow(a, b category) int {
	return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.first, b.first))
}

// isWhole reports whether v is a whole number.
func isWhole(v float64) bool { return v == math.Trunc(v) }

// describe lists categories, most frequent first, e.g. `"annual" (5,
// first at row 7), "weekly" (2, first at row 9)`, and how many more there
// are beyond maxExamples.
func describe(cats []category) string {
	cats = slices.Clone(cats)
	slices.SortStableFunc(cats, byCountThenRow)
	var parts []string
	for _, u := range cats[:min(len(cats), maxExamples)] {
		parts = append(parts, fmt.Sprintf("%q (%d, first at row %d)", u.value, u.n, u.first))
	}
	if more := len(cats) - maxExamples; more > 0 {
		parts = append(parts, fmt.Sprintf("and %d more", more))
	}
	return strings.Join(parts, ", ")
}

// list joins allowed values for a detail, the first ten of them.
func list(values []string) string {
	const show = 10
	if len(values) <= show {
		return strings.Join(values, ", ")
	}
	return strings.Join(values[:show], ", ") + fmt.Sprintf(", and %d more", len(values)-show)
}

// agree returns "1 <one>" or "n <many>", e.g. "1 value is" or "3 values
// are".
func agree(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
