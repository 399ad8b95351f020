package validate

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/droverhq/drover/internal/tabular"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

func TestSchemaKinds(t *testing.T) {
	kinds := SchemaKinds(&droverv1.FeatureSchema{
		Inputs: []*droverv1.Feature{
			{Name: "age", Datatype: "INT8"},
			{Name: "code", Datatype: "INT32", Kind: categorical},
			{Name: "promo", Datatype: "BOOL"},
			{Name: "score", Datatype: "BYTES", Kind: numeric},
			{Name: "blob", Datatype: "WHATEVER"},
		},
		Outputs: []*droverv1.Feature{{Name: "prob", Datatype: "FP32"}},
	})
	want := map[string]tabular.Kind{"age": tabular.Numeric, "code": tabular.Text, "promo": tabular.Text,
		"score": tabular.Numeric, "blob": tabular.Inferred, "prob": tabular.Numeric}
	for name, k := range want {
		if kinds[name] != k {
			t.Errorf("%s: %v, want %v", name, kinds[name], k)
		}
	}
}

// TestReadFileAllNullColumn checks that a column in which every value is
// null, which package tabular refuses to read, comes back as a column of
// nulls: this depends on the wording of tabular's error.
func TestReadFileAllNullColumn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nulls.csv")
	if err := os.WriteFile(path, []byte("id,age,plan,score,label\n1,,,NA,yes\n2,,,,no\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	schema := &droverv1.FeatureSchema{Inputs: []*droverv1.Feature{
		{Name: "age", Datatype: "FP64", Kind: numeric},
		{Name: "plan", Datatype: "BYTES", Kind: categorical, Nullable: true},
		{Name: "score", Datatype: "FP32", Kind: numeric, Nullable: true},
	}}
	tab, err := ReadFile(path, schema, "label", []string{"id"})
	if err != nil {
		t.Fatal(err)
	}
	if tab.Rows != 2 || !slices.Equal(tab.Ignored, []string{"id"}) {
		t.Fatalf("rows %d, ignored %v", tab.Rows, tab.Ignored)
	}
	for _, name := range []string{"age", "score"} {
		c := tab.Lookup(name)
		if c == nil || c.Kind != tabular.Numeric || c.Nulls != 2 || !math.IsNaN(c.Numbers[1]) {
			t.Errorf("%s: %+v", name, c)
		}
	}
	if c := tab.Lookup("plan"); c == nil || c.Kind != tabular.Text || c.Nulls != 2 {
		t.Errorf("plan: %+v", c)
	}
	if c := tab.Lookup("label"); c == nil || c.Kind != tabular.Text || c.Strings[0] != "yes" {
		t.Errorf("label: %+v", c)
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "missing.csv"), schema, "", nil); err == nil {
		t.Error("a missing file read")
	}
}
