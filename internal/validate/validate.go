// Package validate checks a training data set against a model's feature
// schema and a few expectations about the data set as a whole, before any
// training time is spent on it.
//
// [Check] never stops at the first problem: it returns a [Report] listing
// every expectation, passed or failed, each with a detail that says what
// was found, so that one run names everything there is to fix. The
// expectations, by name (a column's rules are prefixed by its name):
//
//	rows                 the row count is within [Expectations.MinRows, MaxRows]
//	columns.unique       no two columns have the same name
//	<input>.present      each input of the schema is a column
//	<input>.type         its values are of the feature's type: numbers for a
//	                     numeric kind or datatype (INT*, UINT*, FP*), true/false
//	                     or 1/0 for BOOL; BYTES takes any text
//	<input>.integer      INT* and UINT* features hold whole numbers within
//	                     the datatype's range
//	<input>.range        numbers within the feature's min and max (when set)
//	<input>.categories   a categorical or binary feature's values are among
//	                     its categories (a binary one without categories takes
//	                     at most two distinct values)
//	<input>.nulls        nulls only where the feature is nullable, or within
//	                     [Expectations.MaxNullShare]
//	<column>.present,    for a column named in MaxNullShare that is not an
//	<column>.nulls       input
//	target.column        the target is a column
//	target.non_null      every row has a label
//	target.classes       the labels are among [Expectations.TargetClasses]
//
// When a column is missing, only its present (or target.column)
// expectation is listed. Two more are listed only when they fail:
// "schema", when the schema itself is unusable (see [CheckSchema]), and
// "expectations", when the [Expectations] are (see
// [Expectations.Validate]).
//
// Rows are numbered as package tabular numbers them: in a CSV file the
// header is row 1, so the first data row is row 2 (the file's line
// number unless quoted line breaks intervene); in a Parquet file, or a
// table with no format, the first row is row 1. Details give at most five
// examples of offending values.
package validate

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/droverhq/drover/internal/tabular"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Expectations are what a data set must satisfy beyond its schema.
type Expectations struct {
	// MinRows is the fewest data rows allowed; zero means one.
	MinRows int
	// MaxRows is the most data rows allowed; zero means no limit.
	MaxRows int
	// MaxNullShare is, per column, the largest share of null values
	// allowed, in [0, 1]. An input that is not listed allows 0 when it
	// is not nullable and 1 when it is. A listed column that is not an
	// input of the schema is checked too: it must be there, with at
	// most that share of nulls.
	MaxNullShare map[string]float64
	// Target names the label column, or "" for none. It must be a
	// column with no nulls.
	Target string
	// TargetClasses, when not empty, are the labels the target may
	// take, as written in the file.
	TargetClasses []string
}

// Validate checks that the expectations make sense: row bounds that are
// not negative and not crossed, shares in [0, 1], and classes only with a
// target, each named once.
func (e Expectations) Validate() error {
	var errs []error
	if e.MinRows < 0 {
		errs = append(errs, fmt.Errorf("the minimum row count %d is negative", e.MinRows))
	}
	if e.MaxRows < 0 {
		errs = append(errs, fmt.Errorf("the maximum row count %d is negative", e.MaxRows))
	}
	if e.MaxRows > 0 && e.MinRows > e.MaxRows {
		errs = append(errs, fmt.Errorf("the minimum row count %d is above the maximum %d", e.MinRows, e.MaxRows))
	}
	for _, col := range slices.Sorted(maps.Keys(e.MaxNullShare)) {
		if s := e.MaxNullShare[col]; !(s >= 0 && s <= 1) {
			errs = append(errs, fmt.Errorf("the null share %v allowed for %q is not in [0, 1]", s, col))
		}
	}
	if len(e.TargetClasses) > 0 && e.Target == "" {
		errs = append(errs, errors.New("target classes are given without a target"))
	}
	seen := map[string]bool{}
	for _, c := range e.TargetClasses {
		if c == "" {
			errs = append(errs, errors.New("a target class is empty"))
		} else if seen[c] {
			errs = append(errs, fmt.Errorf("the target class %q is listed twice", c))
		}
		seen[c] = true
	}
	return errors.Join(errs...)
}

// Report is the outcome of [Check].
type Report struct {
	// Path and Format are the table's file and "csv" or "parquet".
	Path   string `json:"path"`
	Format string `json:"format"`
	// Rows is the number of data rows.
	Rows int `json:"rows"`
	// Passed is true when every expectation passed.
	Passed bool `json:"passed"`
	// Expectations are every expectation checked, passed or failed, in
	// the order the package documentation lists them.
	Expectations []Result `json:"expectations"`
}

// Result is one expectation's outcome.
type Result struct {
	// Name identifies the expectation, e.g. "tenure_months.range".
	Name string `json:"name"`
	// Column is the column checked, or "" for the data set as a whole.
	Column string `json:"column"`
	// Passed says whether the data set met the expectation.
	Passed bool `json:"passed"`
	// Detail says what was found, e.g. "3 values above max 72, e.g.
	// row 17: 80".
	Detail string `json:"detail"`
	// Failed counts the offending values (or names, or rows), 0 when
	// the expectation passed or is not about values.
	Failed int `json:"failed"`
}

// Failures returns the expectations that failed, in the report's order.
func (r *Report) Failures() []Result {
	var out []Result
	for _, x := range r.Expectations {
		if !x.Passed {
			out = append(out, x)
		}
	}
	return out
}

// Check checks the table against the schema's inputs and the
// expectations, and reports on every expectation; see the package
// documentation for the list. It does not stop at a failure, and a nil
// table or schema, an unusable schema or unusable expectations are
// reported as failures rather than panics.
func Check(t *tabular.Table, schema *droverv1.FeatureSchema, e Expectations) *Report {
	r := &Report{}
	add := func(x Result) { r.Expectations = append(r.Expectations, x) }
	if err := CheckSchema(schema); err != nil {
		add(Result{Name: "schema", Detail: err.Error()})
	}
	if err := e.Validate(); err != nil {
		add(Result{Name: "expectations", Detail: strings.ReplaceAll(err.Error(), "\n", "; ")})
	}
	if t == nil {
		add(Result{Name: "rows", Detail: "no table to check"})
		return r.finish()
	}
	r.Path, r.Format, r.Rows = t.Path, t.Format, t.Rows
	add(checkRows(t.Rows, e))
	add(checkUniqueColumns(t))

	rowOf := func(i int) int { return i + 1 }
	if t.Format == "csv" {
		rowOf = func(i int) int { return i + 2 } // the header is row 1
	}
	inputs := map[string]bool{}
	for _, f := range schema.GetInputs() {
		if inputs[f.GetName()] {
			continue // a repeated input, reported under "schema"
		}
		inputs[f.GetName()] = true
		c, res := lookup(t, f.GetName(), f.GetName()+".present")
		add(res)
		if c == nil {
			continue
		}
		maxNull, listed := e.MaxNullShare[f.GetName()]
		if !listed && f.GetNullable() {
			maxNull = 1
		}
		for _, x := range checkFeature(f, column{c, rowOf}) {
			add(x)
		}
		add(checkNulls(f.GetName()+".nulls", column{c, rowOf}, maxNull, f.GetNullable() && !listed))
	}
	for _, name := range slices.Sorted(maps.Keys(e.MaxNullShare)) {
		if inputs[name] {
			continue
		}
		c, res := lookup(t, name, name+".present")
		add(res)
		if c != nil {
			add(checkNulls(name+".nulls", column{c, rowOf}, e.MaxNullShare[name], false))
		}
	}
	if e.Target != "" {
		c, res := lookup(t, e.Target, "target.column")
		add(res)
		if c != nil {
			col := column{c, rowOf}
			add(checkTargetNulls(col))
			if len(e.TargetClasses) > 0 {
				add(checkTargetClasses(col, e.TargetClasses))
			}
		}
	}
	return r.finish()
}

// finish sets Passed.
func (r *Report) finish() *Report {
	r.Passed = !slices.ContainsFunc(r.Expectations, func(x Result) bool { return !x.Passed })
	return r
}

// checkRows checks the row count against the bounds.
func checkRows(rows int, e Expectations) Result {
	res := Result{Name: "rows"}
	lo := max(e.MinRows, 1)
	switch {
	case rows < lo:
		res.Detail = fmt.Sprintf("%s, fewer than the %d wanted", plural(rows, "row"), lo)
	case e.MaxRows > 0 && rows > e.MaxRows:
		res.Detail = fmt.Sprintf("%s, more than the %d allowed", plural(rows, "row"), e.MaxRows)
	case e.MaxRows > 0:
		res.Passed, res.Detail = true, fmt.Sprintf("%s, within [%d, %d]", plural(rows, "row"), lo, e.MaxRows)
	default:
		res.Passed, res.Detail = true, fmt.Sprintf("%s, at least %d", plural(rows, "row"), lo)
	}
	return res
}

// checkUniqueColumns checks that no two of the table's columns, read or
// ignored, share a name.
func checkUniqueColumns(t *tabular.Table) Result {
	count := map[string]int{}
	var order []string
	note := func(name string) {
		if count[name] == 0 {
			order = append(order, name)
		}
		count[name]++
	}
	for i := range t.Columns {
		note(t.Columns[i].Name)
	}
	for _, name := range t.Ignored {
		note(name)
	}
	res := Result{Name: "columns.unique"}
	var dups []string
	for _, name := range order {
		if n := count[name]; n > 1 {
			dups = append(dups, fmt.Sprintf("%q (%d times)", name, n))
			res.Failed += n - 1
		}
	}
	if len(dups) > 0 {
		res.Detail = fmt.Sprintf("%s repeated: %s", plural(len(dups), "name"), strings.Join(dups, ", "))
		return res
	}
	res.Passed, res.Detail = true, fmt.Sprintf("%s, each named once", plural(len(order), "column"))
	return res
}

// lookup finds a column, reporting on it under name.
func lookup(t *tabular.Table, col, name string) (*tabular.Column, Result) {
	res := Result{Name: name, Column: col}
	if slices.Contains(t.Ignored, col) {
		res.Detail = fmt.Sprintf("the column %q was left out (ignored) when the file was read", col)
		return nil, res
	}
	for i := range t.Columns {
		if c := &t.Columns[i]; c.Name == col {
			res.Passed, res.Detail = true, fmt.Sprintf("a %s column", c.Kind)
			return c, res
		}
	}
	res.Detail = fmt.Sprintf("no column %q in the file", col)
	return nil, res
}

// checkNulls checks a column's share of nulls against maxShare. nullable
// says the allowance comes from the schema, for the detail.
func checkNulls(name string, c column, maxShare float64, nullable bool) Result {
	res := Result{Name: name, Column: c.Name}
	if !(maxShare >= 0) { // NaN or negative: see Expectations.Validate
		maxShare = 0
	}
	var nulls offenders
	for i := range c.len() {
		if c.null(i) {
			nulls.addRow(c.row(i))
		}
	}
	if nulls.n == 0 {
		res.Passed, res.Detail = true, "no nulls"
		return res
	}
	share := float64(nulls.n) / float64(c.len())
	found := fmt.Sprintf("%s (%s of %d rows)", plural(nulls.n, "null"), percent(share), c.len())
	switch {
	case share <= maxShare && nullable:
		res.Passed, res.Detail = true, found+"; the feature is nullable"
	case share <= maxShare:
		res.Passed, res.Detail = true, fmt.Sprintf("%s, at most %s allowed", found, percent(maxShare))
	case maxShare == 0:
		res.Failed, res.Detail = nulls.n, fmt.Sprintf("%s, where none are allowed%s", found, nulls.eg())
	default:
		res.Failed, res.Detail = nulls.n, fmt.Sprintf("%s, above the %s allowed%s", found, percent(maxShare), nulls.eg())
	}
	return res
}

// checkTargetNulls checks that every row has a label.
func checkTargetNulls(c column) Result {
	res := Result{Name: "target.non_null", Column: c.Name}
	var nulls offenders
	for i := range c.len() {
		if c.null(i) {
			nulls.addRow(c.row(i))
		}
	}
	if nulls.n == 0 {
		res.Passed, res.Detail = true, "every row has a label"
		return res
	}
	res.Failed, res.Detail = nulls.n, agree(nulls.n, "row has no label", "rows have no label")+nulls.eg()
	return res
}

// checkTargetClasses checks the labels against the allowed classes.
func checkTargetClasses(c column, classes []string) Result {
	res := Result{Name: "target.classes", Column: c.Name}
	res.Failed, res.Detail = checkListed(c, classes, "label", "class")
	res.Passed = res.Failed == 0
	return res
}

// percent formats a share as a percentage, e.g. "0.25%".
func percent(share float64) string {
	return fmt.Sprintf("%.3g%%", 100*share)
}

// plural returns "1 row" or "n rows".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	switch {
	case strings.HasSuffix(noun, "s"):
		return fmt.Sprintf("%d %ses", n, noun)
	case strings.HasSuffix(noun, "y"):
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(noun, "y"))
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
