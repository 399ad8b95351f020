// Package plugins finds and verifies the runner plugins in the agent's
// plugin directory.
//
// The directory holds plugin executables and a SHA256SUMS file in the
// format sha256sum writes ("<hex digest>  <file name>" a line). Only a
// binary listed there, with a matching digest, is ever started: the digest
// is handed to go-plugin, which checks it again before it runs the file. A
// binary missing from the list, or whose bytes differ from it, is reported
// and left alone.
package plugins

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/droverhq/drover/plugins/sdk"
)

// SumsFile is the name of the checksum list in a plugin directory.
const SumsFile = "SHA256SUMS"

// Status says whether a plugin may run.
type Status string

// The statuses.
const (
	Verified Status = "verified" // listed, and the digest matches
	Mismatch Status = "mismatch" // listed, but the file's digest differs
	Unlisted Status = "unlisted" // not in SHA256SUMS
	Missing  Status = "missing"  // listed, but no such file
)

// Plugin is one plugin found in the directory.
type Plugin struct {
	File   string `json:"file"`
	Path   string `json:"path"`
	SHA256 string `json:"sha256,omitempty"`
	Status Status `json:"status"`
	// What the runner says of itself, when it was launched to ask.
	Name      string   `json:"name,omitempty"`
	Version   string   `json:"version,omitempty"`
	Formats   []string `json:"formats,omitempty"`
	CanTrain  bool     `json:"can_train,omitempty"`
	CanServe  bool     `json:"can_serve,omitempty"`
	LaunchErr string   `json:"launch_error,omitempty"`
}

// Scan lists the plugins in dir and verifies each against SHA256SUMS. A
// directory that does not exist holds no plugins.
func Scan(dir string) ([]Plugin, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	sums, err := readSums(filepath.Join(dir, SumsFile))
	if err != nil {
		return nil, err
	}
	var out []Plugin
	for _, e := range entries {
		if e.Name() == SumsFile || e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := Plugin{File: e.Name(), Path: filepath.Join(dir, e.Name())}
		want, listed := sums[e.Name()]
		delete(sums, e.Name())
		if !listed {
			p.Status = Unlisted
			out = append(out, p)
			continue
		}
		got, err := sdk.FileSHA256(p.Path)
		if err != nil {
			return nil, err
		}
		p.SHA256 = want
		p.Status = Verified
		if got != want {
			p.Status = Mismatch
		}
		out = append(out, p)
	}
	for name, sum := range sums {
		out = append(out, Plugin{File: name, Path: filepath.Join(dir, name), SHA256: sum, Status: Missing})
	}
	slices.SortFunc(out, func(a, b Plugin) int { return strings.Compare(a.File, b.File) })
	return out, nil
}

// readSums reads a sha256sum-format file; a missing one lists nothing.
func readSums(path string) (map[string]string, error) {
	sums := map[string]string{}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return sums, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sum, name, ok := strings.Cut(line, " ")
		name = strings.TrimPrefix(strings.TrimSpace(name), "*") // sha256sum's binary mode
		if !ok || len(sum) != 64 || name == "" || strings.ContainsRune(name, '/') {
			return nil, fmt.Errorf("%s line %d: want \"<sha256>  <file>\"", path, n)
		}
		sums[name] = strings.ToLower(sum)
	}
	return sums, sc.Err()
}

// Describe launches each verified plugin, asks it to describe itself, and
// stops it. A plugin that fails to start has LaunchErr set.
func Describe(ctx context.Context, ps []Plugin, logger *slog.Logger) {
	for i := range ps {
		p := &ps[i]
		if p.Status != Verified {
			continue
		}
		c, err := sdk.Launch(ctx, sdk.LaunchConfig{Path: p.Path, SHA256: p.SHA256, Logger: logger})
		if err != nil {
			p.LaunchErr = err.Error()
			continue
		}
		d := c.Describe()
		p.Name, p.Version, p.Formats, p.CanTrain, p.CanServe = d.GetName(), d.GetVersion(), d.GetFormats(), d.GetCanTrain(), d.GetCanServe()
		c.Close()
	}
}
