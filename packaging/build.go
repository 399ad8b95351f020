package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// versionVar is the linker symbol a release build sets to its version.
const versionVar = "github.com/droverhq/drover/internal/buildinfo.Version"

// defaultCgoCFlags quiets go-nvml's warnings about NVML's deprecated calls;
// a CGO_CFLAGS in the environment wins.
const defaultCgoCFlags = "-O2 -Wno-deprecated-declarations"

// buildRequest is one release build of cmd/drover.
type buildRequest struct {
	root    string // the repository
	version string
	arch    string // GOARCH
	out     string // the binary to write
}

// buildArgs returns the go command's arguments for r.
func (r buildRequest) buildArgs() []string {
	return []string{
		"build", "-v", "-trimpath",
		"-ldflags", "-s -w -X " + versionVar + "=" + r.version,
		"-o", r.out, "./cmd/drover",
	}
}

// buildEnv returns the go command's environment for r: cgo on (go-nvml
// needs it), Linux, r's architecture.
func (r buildRequest) buildEnv() []string {
	env := append(os.Environ(), "CGO_ENABLED=1", "GOOS=linux", "GOARCH="+r.arch)
	if os.Getenv("CGO_CFLAGS") == "" {
		env = append(env, "CGO_CFLAGS="+defaultCgoCFlags)
	}
	return env
}

// buildBinary runs go build for r, showing on a terminal how long it has
// run and which package it compiles.
func buildBinary(ctx context.Context, r buildRequest, stderr io.Writer) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("building drover: no go command on PATH: %w", err)
	}
	cmd := exec.CommandContext(ctx, gobin, r.buildArgs()...)
	cmd.Dir = r.root
	cmd.Env = r.buildEnv()
	pipe, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("building drover: %w", err)
	}
	cmd.Stdout = io.Discard

	status := newBuildStatus(stderr, fmt.Sprintf("building drover %s for linux/%s", r.version, r.arch))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("building drover: starting %s: %w", gobin, err)
	}
	// go build -v names each package as it compiles it; anything else on
	// stderr is a diagnostic, kept for the error.
	var diag bytes.Buffer
	sc := bufio.NewScanner(pipe)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if isPackagePath(line) {
			status.compiling(line)
			continue
		}
		diag.WriteString(line)
		diag.WriteByte('\n')
	}
	err = cmd.Wait()
	status.done(err == nil)
	if err != nil {
		hint := ""
		if r.arch != runtime.GOARCH {
			hint = fmt.Sprintf(" (building for %s on %s needs a C cross-compiler in CC, for cgo; or build on a %s machine and pass --binary)", r.arch, runtime.GOARCH, r.arch)
		}
		return fmt.Errorf("building drover: go %s: %w%s\n%s", strings.Join(r.buildArgs(), " "), err, hint, strings.TrimSpace(diag.String()))
	}
	return nil
}

// isPackagePath says whether a line of go build -v's output is a package
// being compiled rather than a diagnostic.
func isPackagePath(line string) bool {
	return line != "" && !strings.ContainsAny(line, " \t:") && !strings.HasPrefix(line, "#")
}

// buildStatus is the one-line status of the build on a terminal: elapsed
// time and the package being compiled. It draws nothing when w is not a
// terminal, so scripted use sees only the result.
type buildStatus struct {
	mu    sync.Mutex
	w     io.Writer
	label string
	start time.Time
	pkg   string
	stop  chan struct{}
	wg    sync.WaitGroup
}

func newBuildStatus(w io.Writer, label string) *buildStatus {
	s := &buildStatus{label: label, start: time.Now()}
	if f, ok := w.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		return s
	}
	s.w = w
	s.stop = make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			s.draw()
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *buildStatus) compiling(pkg string) {
	s.mu.Lock()
	s.pkg = pkg
	s.mu.Unlock()
}

func (s *buildStatus) draw() {
	s.mu.Lock()
	defer s.mu.Unlock()
	line := fmt.Sprintf("%s %s", s.label, time.Since(s.start).Truncate(time.Second))
	if s.pkg != "" {
		pkg := s.pkg
		if len(pkg) > 48 {
			pkg = "…" + pkg[len(pkg)-47:]
		}
		line += "  " + pkg
	}
	fmt.Fprint(s.w, "\r"+line+"\x1b[K")
}

func (s *buildStatus) done(ok bool) {
	if s.w == nil {
		return
	}
	close(s.stop)
	s.wg.Wait()
	verdict := "built"
	if !ok {
		verdict = "failed"
	}
	fmt.Fprintf(s.w, "\r%s: %s in %s\x1b[K\n", s.label, verdict, time.Since(s.start).Truncate(100*time.Millisecond))
}
