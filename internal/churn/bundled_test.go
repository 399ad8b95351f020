package churn

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the bundled CSV files from the generator")

// TestBundledFiles checks that the bundled files are exactly what the
// generator produces, so neither can change without the other. With
// -update it rewrites them instead.
func TestBundledFiles(t *testing.T) {
	for _, c := range []struct {
		file     string
		opts     Options
		embedded []byte
	}{
		{"churn_train.csv", Options{Rows: TrainRows, Seed: TrainSeed}, TrainCSV()},
		{"churn_test.csv", Options{Rows: TestRows, Seed: TestSeed}, TestCSV()},
	} {
		var buf bytes.Buffer
		if err := WriteCSV(&buf, Generate(c.opts)); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("testdata", c.file)
		if *update {
			if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !bytes.Equal(buf.Bytes(), c.embedded) {
			t.Errorf("%s differs from what Generate(%+v) writes; run go generate ./internal/churn if the generator changed on purpose", path, c.opts)
		}
	}
}
