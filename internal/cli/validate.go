package cli

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/droverhq/drover/internal/validate"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// exitInvalid is the exit status of `datasets validate` when the data set
// fails an expectation.
const exitInvalid = 4

// validationFailedError is returned by `datasets validate` when the data
// set failed at least one expectation, after the report has been printed.
type validationFailedError struct{ report *validate.Report }

// Error names every failed expectation.
func (e validationFailedError) Error() string {
	var names []string
	for _, x := range e.report.Failures() {
		names = append(names, x.Name)
	}
	return fmt.Sprintf("the data set failed %d of %d expectations: %s",
		len(names), len(e.report.Expectations), strings.Join(names, ", "))
}

// ExitCode is the process exit status for this error.
func (e validationFailedError) ExitCode() int { return exitInvalid }

// datasetsValidateFlags are `datasets validate`'s flags.
type datasetsValidateFlags struct {
	schema           string
	target           string
	classes          []string
	minRows, maxRows int
	ignore           []string
	maxNull          []string
}

func (a *app) datasetsValidate() *cobra.Command {
	var f datasetsValidateFlags
	cmd := &cobra.Command{
		Use:   "validate <file> --schema <schema>",
		Short: "Check a data file (CSV or Parquet) against a model's feature schema before training",
		Long: `Check a data set against a model's feature schema and expectations, and
report on every expectation at once: the row count, unique column names, and
for each input of the schema that it is a column, of the feature's type
(numbers for numeric features, whole numbers within the range of INT* and
UINT* datatypes, true/false or 1/0 for BOOL), within its min and max, among
its categories, and without nulls unless it is nullable or --max-null allows
them; with --target, that the target is a column with a label on every row
(among --classes, when given).

Rows are numbered as in 'drift compare': a CSV file's header is row 1. The
schema is the one 'models push --schema' takes (JSON or YAML).

The exit status is 0 when every expectation passes, 4 when one fails (the
error names them all), 1 when the file or the schema cannot be read, and 2
for a mistake in the flags.`,
		Example: `  drover datasets validate train.csv --schema schema.yaml --target churn --classes no,yes
  drover datasets validate train.parquet --schema schema.yaml --min-rows 1000 --max-null notes=0.2
  drover datasets validate train.csv --schema schema.yaml --json | jq '.expectations[] | select(.passed | not)'`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("datasets validate takes one data file, .csv or .parquet (got %d arguments)", len(args))
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			return a.runDatasetsValidate(args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.schema, "schema", "", "the model's feature schema, JSON or YAML (required)")
	fl.StringVar(&f.target, "target", "", "the target (label) column: it must be there, with no nulls")
	fl.StringSliceVar(&f.classes, "classes", nil, "the labels the target may take (comma-separated or repeated; needs --target)")
	fl.IntVar(&f.minRows, "min-rows", 0, "the fewest data rows allowed (default 1)")
	fl.IntVar(&f.maxRows, "max-rows", 0, "the most data rows allowed (default no limit)")
	fl.StringSliceVar(&f.ignore, "ignore", nil, "columns to leave unread, e.g. an id; not an input or the target (comma-separated or repeated)")
	fl.StringArrayVar(&f.maxNull, "max-null", nil, "column=share: the share of nulls, in [0, 1], a column may hold (repeated; default 0, or 1 for a nullable input)")
	return cmd
}

// expectations checks the flags against the schema and returns what they
// expect of the data set.
func (f *datasetsValidateFlags) expectations(schema *droverv1.FeatureSchema) (validate.Expectations, error) {
	e := validate.Expectations{MinRows: f.minRows, MaxRows: f.maxRows, Target: f.target, TargetClasses: f.classes}
	kv, err := parseKV("max-null", f.maxNull)
	if err != nil {
		return e, err
	}
	for col, s := range kv {
		share, err := strconv.ParseFloat(s, 64)
		if err != nil || !(share >= 0 && share <= 1) {
			return e, usagef("--max-null %s=%s: want a share in [0, 1], e.g. 0.05", col, s)
		}
		if e.MaxNullShare == nil {
			e.MaxNullShare = map[string]float64{}
		}
		e.MaxNullShare[col] = share
	}
	if err := e.Validate(); err != nil {
		return e, usagef("%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	for _, name := range f.ignore {
		switch {
		case name == f.target:
			return e, usagef("--ignore %q is the --target, which must be checked", name)
		case slices.ContainsFunc(schema.GetInputs(), func(in *droverv1.Feature) bool { return in.GetName() == name }):
			return e, usagef("--ignore %q is an input of the schema, which must be checked", name)
		}
		if _, ok := e.MaxNullShare[name]; ok {
			return e, usagef("--ignore %q is also given --max-null", name)
		}
	}
	return e, nil
}

func (a *app) runDatasetsValidate(path string, f datasetsValidateFlags) error {
	if f.schema == "" {
		return usagef("datasets validate needs --schema, the model's feature schema")
	}
	schema, err := readSchema(f.schema)
	if err != nil {
		return err
	}
	if err := validate.CheckSchema(schema); err != nil {
		return fmt.Errorf("%s: %w", f.schema, err)
	}
	e, err := f.expectations(schema)
	if err != nil {
		return err
	}
	t, err := validate.ReadFile(path, schema, f.target, f.ignore)
	if err != nil {
		return err
	}
	for _, name := range f.ignore {
		if !slices.Contains(t.Ignored, name) {
			return usagef("--ignore %q: no such column in %s", name, path)
		}
	}

	rep := validate.Check(t, schema, e)
	if err := a.emit(rep, func(w io.Writer) { writeValidationText(w, rep) }); err != nil {
		return err
	}
	if !rep.Passed {
		return validationFailedError{rep}
	}
	return nil
}

// writeValidationText prints the report as a table of expectations.
func writeValidationText(w io.Writer, rep *validate.Report) {
	var verdict string
	if n := len(rep.Failures()); n > 0 {
		verdict = fmt.Sprintf("FAILED %d of %d expectations", n, len(rep.Expectations))
	} else {
		verdict = fmt.Sprintf("PASSED all %d expectations", len(rep.Expectations))
	}
	fmt.Fprintf(w, "%s (%s, %d rows): %s\n\n", rep.Path, rep.Format, rep.Rows, verdict)
	t := newTable(w)
	fmt.Fprintln(t, "EXPECTATION\tRESULT\tDETAIL")
	for _, x := range rep.Expectations {
		result := "PASS"
		if !x.Passed {
			result = "FAIL"
		}
		fmt.Fprintf(t, "%s\t%s\t%s\n", x.Name, result, x.Detail)
	}
	t.Flush()
}
