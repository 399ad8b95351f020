package exectrain

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
)

// MetricsFile is the name of the file, in the output directory, in which
// the command reports its result (DROVER_METRICS_FILE).
const MetricsFile = "metrics.json"

const (
	maxMetricsFileBytes = 1 << 20
	maxProfileBytes     = 16 << 20
)

// metricsFile is the metrics file's JSON.
type metricsFile struct {
	Metrics          map[string]*float64 `json:"metrics"`
	Artifact         string              `json:"artifact"`
	Format           string              `json:"format"`
	ReferenceProfile string              `json:"reference_profile"`
}

// readResult reads the metrics file in dir and checks what it names. Every
// file is opened through an os.Root on dir, so that neither ".." nor a
// symbolic link reaches outside it.
func readResult(dir, defaultFormat string) (*runnerv1.TrainResult, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	defer root.Close()

	path := filepath.Join(dir, MetricsFile)
	b, err := readFile(root, MetricsFile, maxMetricsFileBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("it exited 0 but wrote no metrics file %s", path)
	}
	if err != nil {
		return nil, fmt.Errorf("metrics file: %w", err)
	}
	var mf metricsFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&mf); err != nil {
		return nil, fmt.Errorf("metrics file %s: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("metrics file %s: data after the JSON object", path)
	}

	res := &runnerv1.TrainResult{Format: cmp.Or(mf.Format, defaultFormat), Metrics: map[string]float64{}}
	if res.Format == "" {
		return nil, fmt.Errorf("metrics file %s names no format, and the trainer has no default one", path)
	}
	for name, v := range mf.Metrics {
		if name == "" {
			return nil, fmt.Errorf("metrics file %s: a metric has an empty name", path)
		}
		if v != nil {
			res.Metrics[name] = *v
		}
	}
	artifact, err := fileInside(root, dir, "artifact", mf.Artifact)
	if err != nil {
		return nil, err
	}
	res.ArtifactPath = filepath.Join(dir, artifact)
	if mf.ReferenceProfile != "" {
		profile, err := fileInside(root, dir, "reference profile", mf.ReferenceProfile)
		if err != nil {
			return nil, err
		}
		if res.ReferenceProfile, err = readFile(root, profile, maxProfileBytes); err != nil {
			return nil, fmt.Errorf("reference profile: %w", err)
		}
	}
	return res, nil
}

// fileInside checks that name, relative to dir or absolute, is a regular
// file inside dir, and returns it relative to dir.
func fileInside(root *os.Root, dir, what, name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("the metrics file names no %s", what)
	}
	rel := filepath.Clean(name)
	if filepath.IsAbs(name) {
		rel = relativeTo(dir, name)
	}
	if !filepath.IsLocal(rel) {
		return "", fmt.Errorf("%s %s is outside the output directory %s", what, name, dir)
	}
	fi, err := root.Lstat(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("%s %s does not exist", what, filepath.Join(dir, rel))
	case err != nil:
		return "", fmt.Errorf("%s %s: %w", what, name, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return "", fmt.Errorf("%s %s is a symbolic link; it must be a regular file in the output directory", what, name)
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("%s %s is not a regular file (%s)", what, name, fi.Mode().Type())
	}
	return rel, nil
}

// relativeTo returns the absolute path name relative to dir, or to dir
// with its symbolic links resolved (a command may name its files by their
// real path); the result is not local when name is outside dir.
func relativeTo(dir, name string) string {
	rel, err := filepath.Rel(dir, name)
	if err == nil && filepath.IsLocal(rel) {
		return rel
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		if r, err := filepath.Rel(real, name); err == nil {
			return r
		}
	}
	return rel
}

// readFile reads name in root, refusing a file over limit bytes.
func readFile(root *os.Root, name string, limit int64) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, limit)
	}
	return b, nil
}
