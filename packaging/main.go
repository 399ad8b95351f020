// Command packaging makes what a site without internet installs Drover from:
// a .deb and an .rpm of the drover binary, its two systemd units and example
// configs (made with nfpm), and an offline bundle holding the binary, both
// packages, the units, SHA256SUMS and an INSTALL note. Run it from the
// repository:
//
//	go run ./packaging --version 1.2.3 --out dist/
//
// It builds the binary for the host with the release flags (cgo on, for
// go-nvml) unless --binary names one already built. --json prints what was
// written: paths, sizes and sha256 digests. docs/installing.md is the
// operator's side.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/droverhq/drover/internal/progress"
)

// options are the command line's settings.
type options struct {
	version    string
	out        string
	binary     string
	arch       string
	root       string
	maintainer string
	json       bool
}

// Artifact is one file the command wrote.
type Artifact struct {
	// Kind is what the file is: deb, rpm, bundle or bundle-sha256.
	Kind string `json:"kind"`
	// Path is where it was written.
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Result is what --json prints.
type Result struct {
	Version string `json:"version"`
	// Arch is Go's name for the target architecture (amd64, arm64, ...).
	Arch string `json:"arch"`
	// BinarySHA256 is the digest of the drover binary inside the packages.
	BinarySHA256 string `json:"binary_sha256"`
	// Built says whether the binary was built here (false: --binary).
	Built bool `json:"built"`
	// GlibcMin is the oldest glibc the binary runs on, from its symbol
	// versions; empty for a binary that does not link glibc.
	GlibcMin string     `json:"glibc_min,omitempty"`
	Files    []Artifact `json:"files"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Main runs the command with args (without the program's name) and returns
// its exit code: 0 done, 1 failed, 2 a usage error.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "packaging:", err)
		return 2
	}
	res, err := run(ctx, opts, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "packaging:", err)
		return 1
	}
	if opts.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(stderr, "packaging: writing JSON:", err)
			return 1
		}
		return 0
	}
	printResult(stdout, res)
	return 0
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := pflag.NewFlagSet("packaging", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.version, "version", "", "the release version, e.g. 1.2.3 or 1.3.0-rc.1 (required)")
	fs.StringVar(&o.out, "out", "dist", "the folder to write the packages and the bundle to")
	fs.StringVar(&o.binary, "binary", "", "package this drover binary instead of building one")
	fs.StringVar(&o.arch, "arch", "", "the target architecture, Go's name: amd64, arm64 or ppc64le (default: the --binary's, else the host's)")
	fs.StringVar(&o.root, "root", "", "the Drover repository (default: the one holding the working directory)")
	fs.StringVar(&o.maintainer, "maintainer", defaultMaintainer, "the packages' Maintainer field")
	fs.BoolVar(&o.json, "json", false, "print what was written as JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: go run ./packaging --version 1.2.3 [--out dist] [--binary drover] [--json]")
		fmt.Fprintln(stderr)
		fmt.Fprintln(stderr, "Builds drover (unless --binary), then writes a .deb, an .rpm and an offline bundle.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	v, err := normalizeVersion(o.version)
	if err != nil {
		return o, err
	}
	o.version = v
	return o, nil
}

// versionRE is what the packages accept as a version: semver without build
// metadata, which both dpkg and rpm order correctly once a pre-release's
// dash becomes a tilde.
var versionRE = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z]+(\.[0-9A-Za-z]+)*)?$`)

// normalizeVersion checks a release version and drops a leading "v".
func normalizeVersion(v string) (string, error) {
	if v == "" {
		return "", errors.New("--version is required, e.g. --version 1.2.3")
	}
	v = strings.TrimPrefix(v, "v")
	if !versionRE.MatchString(v) {
		return "", fmt.Errorf("--version %q: want MAJOR.MINOR.PATCH with an optional -PRERELEASE (1.2.3, 1.3.0-rc.1)", v)
	}
	return v, nil
}

// run does the work: the binary, the packages, the bundle.
func run(ctx context.Context, o options, stderr io.Writer) (*Result, error) {
	root, err := findRoot(o.root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, fmt.Errorf("output folder: %w", err)
	}
	work, err := os.MkdirTemp("", "drover-packaging-")
	if err != nil {
		return nil, fmt.Errorf("work folder: %w", err)
	}
	defer os.RemoveAll(work)

	res := &Result{Version: o.version}
	binary := o.binary
	if binary == "" {
		arch := o.arch
		if arch == "" {
			arch = runtime.GOARCH
		}
		if _, err := lookupArch(arch); err != nil {
			return nil, err
		}
		binary = filepath.Join(work, "drover")
		if err := buildBinary(ctx, buildRequest{root: root, version: o.version, arch: arch, out: binary}, stderr); err != nil {
			return nil, err
		}
		res.Built = true
	}
	arch, err := binaryArch(binary, o.arch)
	if err != nil {
		return nil, err
	}
	res.Arch = arch
	if !res.Built && arch == runtime.GOARCH {
		if err := checkBinaryVersion(ctx, binary, o.version); err != nil {
			return nil, err
		}
	}
	if res.GlibcMin, err = glibcRequirement(binary); err != nil {
		return nil, err
	}
	if res.BinarySHA256, _, err = fileSHA256(binary); err != nil {
		return nil, fmt.Errorf("binary: %w", err)
	}

	p := pkg{
		version:    o.version,
		arch:       arch,
		binary:     binary,
		hubUnit:    filepath.Join(root, "systemd", "drover-hub.service"),
		agentUnit:  filepath.Join(root, "systemd", "drover-agent.service"),
		sampleData: filepath.Join(root, "internal", "churn", "testdata", "churn_train.csv"),
		maintainer: o.maintainer,
		glibc:      res.GlibcMin,
		mtime:      sourceDate(),
	}
	if err := p.stage(filepath.Join(work, "stage")); err != nil {
		return nil, err
	}
	deb, err := p.write(ctx, "deb", o.out)
	if err != nil {
		return nil, err
	}
	rpm, err := p.write(ctx, "rpm", o.out)
	if err != nil {
		return nil, err
	}
	bundle, sums, err := p.writeBundle(o.out, deb, rpm)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct{ kind, path string }{{"deb", deb}, {"rpm", rpm}, {"bundle", bundle}, {"bundle-sha256", sums}} {
		sum, size, err := fileSHA256(f.path)
		if err != nil {
			return nil, err
		}
		res.Files = append(res.Files, Artifact{Kind: f.kind, Path: f.path, Size: size, SHA256: sum})
	}
	return res, nil
}

// moduleRE finds Drover's module line in a go.mod.
var moduleRE = regexp.MustCompile(`(?m)^module\s+github\.com/droverhq/drover\s*$`)

// findRoot returns the Drover repository holding dir (the working directory
// when empty): the nearest folder up whose go.mod is this module's.
func findRoot(dir string) (string, error) {
	start := dir
	if start == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", err
		}
		start = wd
	}
	d, err := filepath.Abs(start)
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && moduleRE.Match(b) {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no Drover repository (go.mod of github.com/droverhq/drover) at or above %s: run from the repository or pass --root", start)
		}
		d = parent
	}
}

// sourceDate is the time stamped on the packages' files: SOURCE_DATE_EPOCH
// when set, for reproducible builds, and now otherwise.
func sourceDate() time.Time {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Unix(n, 0).UTC()
		}
	}
	return time.Now().UTC().Truncate(time.Second)
}

func printResult(w io.Writer, res *Result) {
	how := "built here"
	if !res.Built {
		how = "given with --binary"
	}
	glibc := "none (static or not ELF)"
	if res.GlibcMin != "" {
		glibc = res.GlibcMin + " or later"
	}
	fmt.Fprintf(w, "drover %s for linux/%s (binary %s, sha256 %s; glibc %s)\n\n", res.Version, res.Arch, how, res.BinarySHA256, glibc)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tFILE\tSIZE\tSHA256")
	for _, f := range res.Files {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Kind, f.Path, progress.Bytes(f.Size), f.SHA256)
	}
	tw.Flush()
}
