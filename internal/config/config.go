// Package config gives every command's flags two more sources, in this
// order of precedence: a flag on the command line, then an environment
// variable DROVER_<FLAG> (upper case, dashes as underscores), then a key of
// the YAML config file named by --config, then the flag's default.
package config

import (
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable that sets a flag.
const EnvPrefix = "DROVER_"

// EnvName returns the environment variable for a flag: "data-dir" is
// DROVER_DATA_DIR.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// LoadFile reads a YAML config file whose keys are flag names (dashes or
// underscores) and whose values are scalars or lists of scalars.
func LoadFile(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	out := map[string]any{}
	if err := yaml.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	norm := make(map[string]any, len(out))
	for k, v := range out {
		norm[strings.ReplaceAll(k, "_", "-")] = v
	}
	return norm, nil
}

// Apply sets every flag of fs that was not given on the command line from
// the environment, then from file. skip names flags that take neither (the
// --config flag itself, say). A file key that is no flag is an error, so
// that a misspelt setting is not silently ignored.
func Apply(fs *pflag.FlagSet, file map[string]any, skip ...string) error {
	var errs []error
	for k := range file {
		if fs.Lookup(k) == nil || slices.Contains(skip, k) {
			errs = append(errs, fmt.Errorf("config file: unknown setting %q", k))
		}
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || slices.Contains(skip, f.Name) {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if err := setAll(fs, f, splitList(f, v)); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", EnvName(f.Name), err))
			}
			return
		}
		raw, ok := file[f.Name]
		if !ok {
			return
		}
		var vals []string
		switch v := raw.(type) {
		case []any:
			for _, e := range v {
				vals = append(vals, fmt.Sprint(e))
			}
		case map[string]any:
			errs = append(errs, fmt.Errorf("config file: %s must be a value or a list, not a map", f.Name))
			return
		default:
			vals = []string{fmt.Sprint(v)}
		}
		if err := setAll(fs, f, vals); err != nil {
			errs = append(errs, fmt.Errorf("config file: %s: %w", f.Name, err))
		}
	})
	return errors.Join(errs...)
}

// Reset puts every flag of fs back to its default and marks it unset,
// except those keep names (the ones given on the command line, say), so
// that Apply reads them afresh: on a reload, a setting taken out of the
// file or the environment goes back to its default instead of keeping the
// value it had.
func Reset(fs *pflag.FlagSet, keep func(*pflag.Flag) bool) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if keep(f) {
			return
		}
		var err error
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			var vals []string
			if vals, err = defaultList(f.DefValue); err == nil {
				err = sv.Replace(vals)
			}
		} else {
			err = f.Value.Set(f.DefValue)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: back to its default %q: %w", f.Name, f.DefValue, err))
			return
		}
		f.Changed = false
	})
	return errors.Join(errs...)
}

// defaultList reads a list flag's default as pflag writes it: "[a,b]",
// the elements in CSV.
func defaultList(def string) ([]string, error) {
	def = strings.TrimSuffix(strings.TrimPrefix(def, "["), "]")
	if def == "" {
		return []string{}, nil
	}
	return csv.NewReader(strings.NewReader(def)).Read()
}

func isList(f *pflag.Flag) bool {
	return strings.HasSuffix(f.Value.Type(), "Slice") || strings.HasSuffix(f.Value.Type(), "Array")
}

func splitList(f *pflag.Flag, v string) []string {
	if isList(f) {
		return strings.Split(v, ",")
	}
	return []string{v}
}

func setAll(fs *pflag.FlagSet, f *pflag.Flag, vals []string) error {
	if !isList(f) && len(vals) != 1 {
		return fmt.Errorf("takes one value, not %d", len(vals))
	}
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		return sv.Replace(vals)
	}
	for _, v := range vals {
		if err := fs.Set(f.Name, strings.TrimSpace(v)); err != nil {
			return err
		}
	}
	return nil
}
