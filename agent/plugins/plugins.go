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
	"sync"

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
	// Invalid is a line of SHA256SUMS that lists nothing it can use; the
	// Plugin's Problem says which and why.
	Invalid Status = "invalid"
)

// Plugin is one plugin found in the directory.
type Plugin struct {
	File   string `json:"file"`
	Path   string `json:"path"`
	SHA256 string `json:"sha256,omitempty"`
	Status Status `json:"status"`
	// Actual is the file's digest when it differs from the listed one.
	Actual string `json:"actual_sha256,omitempty"`
	// Problem says what is wrong with an Invalid entry.
	Problem string `json:"problem,omitempty"`
	// What the runner says of itself, when it was launched to ask.
	Name      string   `json:"name,omitempty"`
	Version   string   `json:"version,omitempty"`
	Formats   []string `json:"formats,omitempty"`
	CanTrain  bool     `json:"can_train,omitempty"`
	CanServe  bool     `json:"can_serve,omitempty"`
	LaunchErr string   `json:"launch_error,omitempty"`
}

// Scan lists the plugins in dir and verifies each against SHA256SUMS. A
// directory that does not exist holds no plugins. A line of SHA256SUMS it
// cannot read is an Invalid entry, not an error: it must not stop the
// plugins the other lines list.
func Scan(dir string) ([]Plugin, error) {
	// Paths are absolute: "./plugin" would otherwise run as "plugin",
	// looked up in $PATH.
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	sums, out, err := readSums(filepath.Join(dir, SumsFile))
	if err != nil {
		return nil, err
	}
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
			p.Status, p.Actual = Mismatch, got
		}
		out = append(out, p)
	}
	for name, sum := range sums {
		out = append(out, Plugin{File: name, Path: filepath.Join(dir, name), SHA256: sum, Status: Missing})
	}
	slices.SortFunc(out, func(a, b Plugin) int { return strings.Compare(a.File, b.File) })
	return out, nil
}

// Verify checks one plugin file of dir against SHA256SUMS as it is now:
// what the agent does before it starts a plugin again, so that a plugin
// upgraded in place (the binary and its line both replaced) runs, and one
// replaced without its line does not.
func Verify(dir, file string) (Plugin, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return Plugin{}, err
	}
	p := Plugin{File: file, Path: filepath.Join(dir, file)}
	sums, _, err := readSums(filepath.Join(dir, SumsFile))
	if err != nil {
		return p, err
	}
	want, listed := sums[file]
	if !listed {
		p.Status = Unlisted
		return p, nil
	}
	p.SHA256 = want
	got, err := sdk.FileSHA256(p.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		p.Status = Missing
	case err != nil:
		return p, err
	case got != want:
		p.Status, p.Actual = Mismatch, got
	default:
		p.Status = Verified
	}
	return p, nil
}

// readSums reads a sha256sum-format file, a missing one listing nothing,
// and returns the digests by file name and an Invalid entry for each line
// it cannot use.
func readSums(path string) (map[string]string, []Plugin, error) {
	sums := map[string]string{}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return sums, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	var bad []Plugin
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sum, name, _ := strings.Cut(line, " ")
		name = strings.TrimPrefix(strings.TrimSpace(name), "*") // sha256sum's binary mode
		problem := ""
		switch {
		case len(sum) != 64 || strings.Trim(strings.ToLower(sum), "0123456789abcdef") != "" || name == "":
			problem = fmt.Sprintf("line %d: want \"<sha256>  <file>\"", n)
		case strings.ContainsRune(name, '/'):
			problem = fmt.Sprintf("line %d names a path, %s: list the file's name only (run sha256sum in the plugin directory)", n, name)
		}
		if problem != "" {
			bad = append(bad, Plugin{File: SumsFile, Path: path, Status: Invalid, Problem: problem})
			continue
		}
		sums[name] = strings.ToLower(sum)
	}
	return sums, bad, sc.Err()
}

// Describe launches each verified plugin, all at once, asks it to
// describe itself, and stops it. A plugin that fails to start has
// LaunchErr set.
func Describe(ctx context.Context, ps []Plugin, logger *slog.Logger) {
	var wg sync.WaitGroup
	for i := range ps {
		p := &ps[i]
		if p.Status != Verified {
			continue
		}
		wg.Go(func() {
			c, err := sdk.Launch(ctx, sdk.LaunchConfig{Path: p.Path, SHA256: p.SHA256, Logger: logger})
			if err != nil {
				p.LaunchErr = err.Error()
				return
			}
			d := c.Describe()
			p.Name, p.Version, p.Formats, p.CanTrain, p.CanServe = d.GetName(), d.GetVersion(), d.GetFormats(), d.GetCanTrain(), d.GetCanServe()
			c.Close()
		})
	}
	wg.Wait()
}

// OK reports whether the plugin may run and, when it was described, did
// start.
func (p Plugin) OK() bool { return p.Status == Verified && p.LaunchErr == "" }
