package main

import (
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/droverhq/drover/internal/digest"
)

// archNames are one architecture's names: Debian's, RPM's, and the ELF
// machine its binaries carry.
type archNames struct {
	deb, rpm string
	machine  elf.Machine
}

// arches are the architectures Drover is packaged for, by GOARCH: those
// NVIDIA's Linux driver runs on.
var arches = map[string]archNames{
	"amd64":   {deb: "amd64", rpm: "x86_64", machine: elf.EM_X86_64},
	"arm64":   {deb: "arm64", rpm: "aarch64", machine: elf.EM_AARCH64},
	"ppc64le": {deb: "ppc64el", rpm: "ppc64le", machine: elf.EM_PPC64},
}

func lookupArch(goarch string) (archNames, error) {
	a, ok := arches[goarch]
	if !ok {
		return archNames{}, fmt.Errorf("--arch %q: packages are made for amd64, arm64 and ppc64le", goarch)
	}
	return a, nil
}

// binaryArch returns the GOARCH to package path for: the ELF binary's own
// architecture, which want (if given) must match; for a file that is not
// ELF (a stand-in script), want or the host's.
func binaryArch(path, want string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("binary: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("binary %s: not an executable file", path)
	}
	f, err := elf.Open(path)
	if err != nil {
		var fe *elf.FormatError
		if !errors.As(err, &fe) {
			return "", fmt.Errorf("binary %s: %w", path, err)
		}
		if want == "" {
			want = runtime.GOARCH
		}
		_, err := lookupArch(want)
		return want, err
	}
	defer f.Close()
	for goarch, a := range arches {
		if a.machine != f.Machine || (f.Machine == elf.EM_PPC64 && f.ByteOrder.String() != "LittleEndian") {
			continue
		}
		if want != "" && want != goarch {
			return "", fmt.Errorf("binary %s is built for %s, not --arch %s", path, goarch, want)
		}
		return goarch, nil
	}
	return "", fmt.Errorf("binary %s: ELF machine %s is not one Drover is packaged for (amd64, arm64, ppc64le)", path, f.Machine)
}

// glibcRequirement returns the newest glibc symbol version the ELF binary at
// path needs ("2.34"), which is the oldest glibc it runs on; "" for a binary
// that links no glibc (static, or not ELF).
func glibcRequirement(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) {
			return "", nil
		}
		return "", fmt.Errorf("binary %s: %w", path, err)
	}
	defer f.Close()
	syms, err := f.ImportedSymbols()
	if errors.Is(err, elf.ErrNoSymbols) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("binary %s: reading its dynamic symbols: %w", path, err)
	}
	var newest []int
	for _, s := range syms {
		v, ok := strings.CutPrefix(s.Version, "GLIBC_")
		if !ok {
			continue
		}
		parts, ok := versionParts(v)
		if ok && slices.Compare(parts, newest) > 0 {
			newest = parts
		}
	}
	if newest == nil {
		return "", nil
	}
	s := make([]string, len(newest))
	for i, n := range newest {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, "."), nil
}

// versionParts splits "2.34" into [2 34]; GLIBC_PRIVATE and the like are
// not versions.
func versionParts(v string) ([]int, bool) {
	var out []int
	for p := range strings.SplitSeq(v, ".") {
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil, false
		}
		out = append(out, n)
	}
	return out, len(out) > 0
}

// fileSHA256 returns a file's sha256 digest, hex (as sha256sum writes it),
// and its size.
func fileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	sum, n, err := readerSHA256(f)
	if err != nil {
		return "", 0, fmt.Errorf("reading %s: %w", path, err)
	}
	return sum, n, nil
}

// readerSHA256 is fileSHA256 for a reader.
func readerSHA256(r io.Reader) (string, int64, error) {
	d, n, err := digest.FromReader(r)
	if err != nil {
		return "", 0, err
	}
	return d.Hex(), n, nil
}

// checkBinaryVersion asks a given binary its version: packaging one that
// says another version than the packages' (a "dev" build, last week's)
// would install a release that reports itself as something else. A binary
// that does not answer `version --json` (a stand-in) is taken as it is.
func checkBinaryVersion(ctx context.Context, binary, version string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "version", "--json").Output()
	var v struct {
		Version string `json:"version"`
	}
	if err == nil {
		err = json.Unmarshal(out, &v)
	}
	switch {
	case err != nil || v.Version == "":
		return nil
	case strings.TrimPrefix(v.Version, "v") != version:
		return fmt.Errorf("%s says it is version %s, not %s: build it with -ldflags \"-X github.com/droverhq/drover/internal/buildinfo.Version=%s\", or leave out --binary", binary, v.Version, version, version)
	}
	return nil
}
