package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

// The tests package a small stand-in for drover (a cgo program, linked
// against glibc like the real one), built once, so that they run in
// seconds; TestGoRunEndToEnd runs `go run ./packaging` itself.

var (
	testDir   string // removed after the tests
	standInMu sync.Mutex
	standIn   string
	fixtureMu sync.Mutex
	fixtures  = map[string]*Result{}
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "drover-packaging-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// repoRoot is the repository the tests run in.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := findRoot("")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// standInBinary builds, once, a tiny cgo program with the release build's
// flags: a dynamically linked, stripped ELF executable like drover.
func standInBinary(t *testing.T) string {
	t.Helper()
	standInMu.Lock()
	defer standInMu.Unlock()
	if standIn != "" {
		return standIn
	}
	src := filepath.Join(testDir, "standin")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"go.mod":  "module standin\n\ngo 1.26\n",
		"main.go": "package main\n\n// #include <stdio.h>\nimport \"C\"\n\nfunc main() { C.puts(C.CString(\"drover stand-in\")) }\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(testDir, "drover")
	r := buildRequest{root: src, version: "0.0.0-test", arch: runtime.GOARCH, out: out}
	args := slices.DeleteFunc(r.buildArgs(), func(a string) bool { return a == "-v" })
	args[len(args)-1] = "."
	cmd := exec.Command("go", args...)
	cmd.Dir = src
	cmd.Env = append(r.buildEnv(), "GOFLAGS=-mod=mod", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the stand-in binary: %v\n%s", err, b)
	}
	standIn = out
	return out
}

// fixture packages the stand-in once per version and returns what was
// written.
func fixture(t *testing.T, version string) *Result {
	t.Helper()
	bin := standInBinary(t)
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	if r, ok := fixtures[version]; ok {
		return r
	}
	out := filepath.Join(testDir, "dist-"+version)
	res, err := run(t.Context(), options{version: version, out: out, binary: bin, maintainer: defaultMaintainer}, io.Discard)
	if err != nil {
		t.Fatalf("packaging %s: %v", version, err)
	}
	fixtures[version] = res
	return res
}

func (r *Result) file(t *testing.T, kind string) Artifact {
	t.Helper()
	for _, f := range r.Files {
		if f.Kind == kind {
			return f
		}
	}
	t.Fatalf("no %s among %+v", kind, r.Files)
	return Artifact{}
}

// packaged is what the packages must hold: every path, its mode, owner and
// group, and whether it is a config file kept across upgrades.
type packaged struct {
	path         string
	dir          bool
	perm         fs.FileMode
	owner, group string
	config       bool
	debOnly      bool
}

var wantPackaged = []packaged{
	{path: "/usr/bin/drover", perm: 0o755, owner: "root", group: "root"},
	{path: "/usr/lib/systemd/system/drover-hub.service", perm: 0o644, owner: "root", group: "root"},
	{path: "/usr/lib/systemd/system/drover-agent.service", perm: 0o644, owner: "root", group: "root"},
	{path: "/etc/drover", dir: true, perm: 0o755, owner: "root", group: "root"},
	{path: "/etc/drover/hub.yaml", perm: 0o640, owner: "root", group: "drover", config: true},
	{path: "/etc/drover/agent.yaml", perm: 0o640, owner: "root", group: "drover", config: true},
	{path: "/var/lib/drover", dir: true, perm: 0o750, owner: "drover", group: "drover"},
	{path: "/usr/lib/drover", dir: true, perm: 0o755, owner: "root", group: "root"},
	{path: "/usr/lib/drover/plugins", dir: true, perm: 0o755, owner: "root", group: "root"},
	{path: "/usr/share/doc/drover/copyright", perm: 0o644, owner: "root", group: "root", debOnly: true},
	{path: "/usr/share/doc/drover/changelog.gz", perm: 0o644, owner: "root", group: "root", debOnly: true},
}

// wantContent returns the bytes a packaged file must hold, or nil for one
// generated here (copyright, changelog).
func wantContent(t *testing.T, path string) []byte {
	t.Helper()
	root := repoRoot(t)
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	switch path {
	case "/usr/bin/drover":
		return read(standInBinary(t))
	case "/usr/lib/systemd/system/drover-hub.service":
		return read(filepath.Join(root, "systemd", "drover-hub.service"))
	case "/usr/lib/systemd/system/drover-agent.service":
		return read(filepath.Join(root, "systemd", "drover-agent.service"))
	case "/etc/drover/hub.yaml":
		return read(filepath.Join(root, "packaging", "config", "hub.yaml"))
	case "/etc/drover/agent.yaml":
		return read(filepath.Join(root, "packaging", "config", "agent.yaml"))
	}
	return nil
}

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed", name)
	}
	return p
}

func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// TestDebControl checks the .deb's name and its control fields with
// dpkg-deb --info: name, version, architecture, the one dependency (the
// glibc the binary needs), maintainer, homepage, description, conffiles.
func TestDebControl(t *testing.T) {
	needTool(t, "dpkg-deb")
	res := fixture(t, "1.2.3")
	deb := res.file(t, "deb").Path
	if got, want := filepath.Base(deb), "drover_1.2.3_"+arches[res.Arch].deb+".deb"; got != want {
		t.Errorf("deb named %s, want %s", got, want)
	}
	if res.GlibcMin == "" {
		t.Fatal("no glibc requirement found in the cgo stand-in")
	}
	fields := map[string]string{}
	for line := range strings.Lines(output(t, "dpkg-deb", "--field", deb)) {
		if k, v, ok := strings.Cut(line, ": "); ok && !strings.HasPrefix(line, " ") {
			fields[k] = strings.TrimSpace(v)
		}
	}
	want := map[string]string{
		"Package":      "drover",
		"Version":      "1.2.3",
		"Architecture": arches[res.Arch].deb,
		"Depends":      "libc6 (>= " + res.GlibcMin + ")",
		"Maintainer":   defaultMaintainer,
		"Homepage":     homepage,
		"Section":      "admin",
		"Priority":     "optional",
		"Description":  synopsis,
	}
	for k, v := range want {
		if fields[k] != v {
			t.Errorf("control %s = %q, want %q", k, fields[k], v)
		}
	}
	for k := range fields {
		if _, ok := want[k]; !ok && k != "Installed-Size" {
			t.Errorf("unexpected control field %s: %s", k, fields[k])
		}
	}

	info := output(t, "dpkg-deb", "--info", deb)
	for _, s := range []string{"preinst", "postinst", "prerm", "postrm", "conffiles", "md5sums"} {
		if !regexp.MustCompile(`\s` + s + `\s`).MatchString(info) {
			t.Errorf("dpkg-deb --info lists no %s:\n%s", s, info)
		}
	}
	conffiles := output(t, "dpkg-deb", "--info", deb, "conffiles")
	var got []string
	for l := range strings.Lines(conffiles) {
		got = append(got, strings.TrimSpace(l))
	}
	slices.Sort(got)
	if w := []string{"/etc/drover/agent.yaml", "/etc/drover/hub.yaml"}; !slices.Equal(got, w) {
		t.Errorf("conffiles = %q, want %q", got, w)
	}
}

// TestDebContents checks every path of the .deb with dpkg-deb --contents:
// mode, owner and group, and that nothing else is in it; then reads the data
// archive and checks that the binary, the units and the configs are the
// bytes they were made from.
func TestDebContents(t *testing.T) {
	needTool(t, "dpkg-deb")
	deb := fixture(t, "1.2.3").file(t, "deb").Path

	// drwxr-x--- drover/drover     0 2024-01-01 00:00 ./var/lib/drover/
	line := regexp.MustCompile(`^([-dl][-rwxsStT]{9})\s+(\S+)/(\S+)\s+\d+\s+\S+\s+\S+\s+\.(/.*?)/?$`)
	type entry struct{ perms, owner, group string }
	got := map[string]entry{}
	for l := range strings.Lines(output(t, "dpkg-deb", "--contents", deb)) {
		m := line.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			t.Fatalf("unexpected dpkg-deb --contents line %q", l)
		}
		got[m[4]] = entry{m[1], m[2], m[3]}
	}
	for _, w := range wantPackaged {
		e, ok := got[w.path]
		if !ok {
			t.Errorf("%s missing from the .deb", w.path)
			continue
		}
		mode := w.perm
		if w.dir {
			mode |= fs.ModeDir
		}
		if want := mode.String(); e.perms != want {
			t.Errorf("%s: mode %s, want %s", w.path, e.perms, want)
		}
		if e.owner != w.owner || e.group != w.group {
			t.Errorf("%s: owned by %s/%s, want %s/%s", w.path, e.owner, e.group, w.owner, w.group)
		}
		delete(got, w.path)
	}
	// What is left may only be the folders above, root's and 0755.
	for p, e := range got {
		if e.perms != "drwxr-xr-x" || e.owner != "root" || e.group != "root" {
			t.Errorf("unexpected %s %s/%s %s in the .deb", e.perms, e.owner, e.group, p)
		}
	}

	// The bytes.
	tarball, err := exec.Command("dpkg-deb", "--fsys-tarfile", deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb --fsys-tarfile: %v", err)
	}
	tr := tar.NewReader(bytes.NewReader(tarball))
	seen := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		want := wantContent(t, strings.TrimPrefix(h.Name, "."))
		if want == nil {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, want) {
			t.Errorf("%s in the .deb differs from its source", h.Name)
		}
		seen++
	}
	if seen != 5 {
		t.Errorf("checked the bytes of %d files, want 5 (binary, 2 units, 2 configs)", seen)
	}
}

// TestDebMaintainerScripts extracts the .deb's control files and checks
// that its four maintainer scripts are the shared ones, executable, and
// parse (sh -n).
func TestDebMaintainerScripts(t *testing.T) {
	needTool(t, "dpkg-deb")
	deb := fixture(t, "1.2.3").file(t, "deb").Path
	dir := t.TempDir()
	output(t, "dpkg-deb", "--control", deb, dir)
	for name, src := range map[string]string{
		"preinst": "preinstall.sh", "postinst": "postinstall.sh", "prerm": "preremove.sh", "postrm": "postremove.sh",
	} {
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("the .deb has no %s: %v", name, err)
			continue
		}
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: mode %v, want 0755", name, fi.Mode().Perm())
		}
		got, _ := os.ReadFile(p)
		want, _ := embedded.ReadFile("scripts/" + src)
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not scripts/%s", name, src)
		}
		if b, err := exec.Command("sh", "-n", p).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", name, err, b)
		}
	}
}

// TestLintian runs lintian over the .deb, when it is installed, and
// requires no errors. Warnings (the config files' 0640, the units' systemctl
// calls, no manual page) are expected and allowed.
func TestLintian(t *testing.T) {
	lintian := needTool(t, "lintian")
	deb := fixture(t, "1.2.3").file(t, "deb").Path
	cmd := exec.Command(lintian, "--no-cfg", deb)
	out, err := cmd.CombinedOutput()
	var errs []string
	for l := range strings.Lines(string(out)) {
		if strings.HasPrefix(l, "E: ") {
			errs = append(errs, strings.TrimSpace(l))
		}
	}
	if len(errs) > 0 {
		t.Errorf("lintian errors:\n%s", strings.Join(errs, "\n"))
	}
	if err != nil && len(errs) == 0 {
		t.Errorf("lintian: %v\n%s", err, out)
	}
	t.Logf("lintian:\n%s", out)
}

// TestRPM reads the .rpm back: the lead's magic, then its header's name,
// version, release, architecture, license, dependency, scripts and every
// file with its mode, owner, group, config flags and digest.
func TestRPM(t *testing.T) {
	res := fixture(t, "1.2.3")
	a := res.file(t, "rpm")
	if got, want := filepath.Base(a.Path), "drover-1.2.3-1."+arches[res.Arch].rpm+".rpm"; got != want {
		t.Errorf("rpm named %s, want %s", got, want)
	}
	f, err := os.Open(a.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := readRPM(bufio.NewReader(f))
	if err != nil {
		t.Fatalf("reading %s: %v", a.Path, err)
	}
	for tag, want := range map[int]string{
		rpmTagName: "drover", rpmTagVersion: "1.2.3", rpmTagRelease: "1", rpmTagArch: arches[res.Arch].rpm,
		rpmTagOS: "linux", rpmTagLicense: "Proprietary", rpmTagURL: homepage, rpmTagSummary: synopsis,
	} {
		if got := h.str(tag); got != want {
			t.Errorf("rpm tag %d = %q, want %q", tag, got, want)
		}
	}
	wantReq := "libc.so.6(GLIBC_" + res.GlibcMin + ")(64bit)"
	if !slices.Contains(h.strings[rpmTagRequireName], wantReq) {
		t.Errorf("rpm requires %q, want %q among them", h.strings[rpmTagRequireName], wantReq)
	}
	for _, r := range h.strings[rpmTagRequireName] {
		if !strings.HasPrefix(r, "rpmlib(") && !strings.HasPrefix(r, "/bin/sh") && r != wantReq {
			t.Errorf("rpm requires %q: nothing but glibc is wanted", r)
		}
	}
	for tag, src := range map[int]string{
		rpmTagPrein: "preinstall.sh", rpmTagPostin: "postinstall.sh", rpmTagPreun: "preremove.sh", rpmTagPostun: "postremove.sh",
	} {
		want, _ := embedded.ReadFile("scripts/" + src)
		if got := h.str(tag); got != string(want) {
			t.Errorf("rpm script tag %d is not scripts/%s:\n%s", tag, src, got)
		}
	}
	for _, tag := range []int{rpmTagPreinProg, rpmTagPostinProg, rpmTagPreunProg, rpmTagPostunProg} {
		if got := h.str(tag); got != "/bin/sh" {
			t.Errorf("rpm script interpreter tag %d = %q, want /bin/sh", tag, got)
		}
	}

	files, err := h.files()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]rpmFile{}
	for _, f := range files {
		got[f.path] = f
	}
	for _, w := range wantPackaged {
		if w.debOnly {
			continue
		}
		f, ok := got[w.path]
		if !ok {
			t.Errorf("%s missing from the .rpm", w.path)
			continue
		}
		delete(got, w.path)
		mode := uint16(w.perm)
		if w.dir {
			mode |= 0o040000
		} else {
			mode |= 0o100000
		}
		if f.mode != mode {
			t.Errorf("%s: mode %o, want %o", w.path, f.mode, mode)
		}
		if f.user != w.owner || f.group != w.group {
			t.Errorf("%s: owned by %s/%s, want %s/%s", w.path, f.user, f.group, w.owner, w.group)
		}
		wantFlags := int64(0)
		if w.config {
			wantFlags = rpmFileConfig | rpmFileNoReplace
		}
		if f.flags != wantFlags {
			t.Errorf("%s: file flags %#x, want %#x (config|noreplace for configs)", w.path, f.flags, wantFlags)
		}
		if b := wantContent(t, w.path); b != nil {
			if f.size != int64(len(b)) {
				t.Errorf("%s: %d bytes, want %d", w.path, f.size, len(b))
			}
			if sum, _, _ := readerSHA256(bytes.NewReader(b)); f.digestSHA256 && f.digest != sum {
				t.Errorf("%s: sha256 %s, want %s", w.path, f.digest, sum)
			}
		}
	}
	for p := range got {
		t.Errorf("unexpected %s in the .rpm (an rpm must not own /usr, /usr/bin, ...)", p)
	}

	// Where rpm itself is installed, it must agree.
	if _, err := exec.LookPath("rpm"); err == nil {
		list := output(t, "rpm", "-qp", "--qf", "[%{FILENAMES}\n]", a.Path)
		var paths []string
		for _, f := range files {
			paths = append(paths, f.path)
		}
		if got := strings.Fields(list); !slices.Equal(got, paths) {
			t.Errorf("rpm -qp lists %q; the header reader read %q", got, paths)
		}
	}
}

// TestBundle opens the offline bundle: one folder holding the binary, both
// packages, the units, the example configs, INSTALL and SHA256SUMS, whose
// lines match every other file; and the .sha256 beside it matches the
// bundle.
func TestBundle(t *testing.T) {
	res := fixture(t, "1.2.3")
	bundle := res.file(t, "bundle")
	top := "drover-1.2.3-linux-" + res.Arch
	if got := filepath.Base(bundle.Path); got != top+".tar.gz" {
		t.Errorf("bundle named %s, want %s.tar.gz", got, top)
	}
	sumFile, err := os.ReadFile(res.file(t, "bundle-sha256").Path)
	if err != nil {
		t.Fatal(err)
	}
	if want := bundle.SHA256 + "  " + top + ".tar.gz\n"; string(sumFile) != want {
		t.Errorf("bundle's .sha256 = %q, want %q", sumFile, want)
	}
	if sum, _, _ := fileSHA256(bundle.Path); sum != bundle.SHA256 {
		t.Errorf("bundle sha256 %s, reported %s", sum, bundle.SHA256)
	}

	f, err := os.Open(bundle.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	contents := map[string][]byte{}
	modes := map[string]int64{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name, ok := strings.CutPrefix(h.Name, top+"/")
		if !ok {
			t.Errorf("%s is outside the bundle's folder %s/", h.Name, top)
			continue
		}
		if h.Typeflag == tar.TypeDir {
			continue
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want root", h.Name, h.Uid, h.Gid)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		contents[name] = b
		modes[name] = h.Mode
	}
	deb, rpm := filepath.Base(res.file(t, "deb").Path), filepath.Base(res.file(t, "rpm").Path)
	wantNames := []string{"INSTALL", "SHA256SUMS", "agent.yaml", "churn_train.csv", deb, rpm, "drover", "drover-agent.service", "drover-hub.service", "hub.yaml"}
	slices.Sort(wantNames)
	gotNames := slices.Sorted(func(yield func(string) bool) {
		for n := range contents {
			if !yield(n) {
				return
			}
		}
	})
	if !slices.Equal(gotNames, wantNames) {
		t.Fatalf("bundle holds %q, want %q", gotNames, wantNames)
	}
	if modes["drover"] != 0o755 {
		t.Errorf("bundle's drover has mode %o, want 755", modes["drover"])
	}
	for name, src := range map[string]string{deb: res.file(t, "deb").Path, rpm: res.file(t, "rpm").Path, "drover": standInBinary(t)} {
		if b, _ := os.ReadFile(src); !bytes.Equal(contents[name], b) {
			t.Errorf("bundle's %s differs from %s", name, src)
		}
	}
	for name, path := range map[string]string{"drover-hub.service": "/usr/lib/systemd/system/drover-hub.service",
		"drover-agent.service": "/usr/lib/systemd/system/drover-agent.service", "hub.yaml": "/etc/drover/hub.yaml", "agent.yaml": "/etc/drover/agent.yaml"} {
		if !bytes.Equal(contents[name], wantContent(t, path)) {
			t.Errorf("bundle's %s differs from its source", name)
		}
	}

	// SHA256SUMS: sha256sum -c's format, one line for every other file.
	listed := map[string]bool{}
	for l := range strings.Lines(string(contents["SHA256SUMS"])) {
		sum, name, ok := strings.Cut(strings.TrimSuffix(l, "\n"), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q is not '<sha256>  <name>'", l)
		}
		b, ok := contents[name]
		if !ok {
			t.Errorf("SHA256SUMS lists %s, which the bundle lacks", name)
			continue
		}
		if got, _, _ := readerSHA256(bytes.NewReader(b)); got != sum {
			t.Errorf("SHA256SUMS says %s for %s; it is %s", sum, name, got)
		}
		listed[name] = true
	}
	for name := range contents {
		if name != "SHA256SUMS" && !listed[name] {
			t.Errorf("SHA256SUMS does not list %s", name)
		}
	}

	install := string(contents["INSTALL"])
	for _, s := range []string{deb, rpm, "sha256sum -c SHA256SUMS", "dpkg -i", "rpm -i", "systemctl enable --now drover-hub", "systemctl enable --now drover-agent", "/etc/drover/agent.yaml"} {
		if !strings.Contains(install, s) {
			t.Errorf("INSTALL does not mention %q", s)
		}
	}
}

// TestPrerelease packages a pre-release: both formats order it before the
// release (a tilde), and dpkg agrees.
func TestPrerelease(t *testing.T) {
	res := fixture(t, "1.3.0-rc.1")
	if got, want := filepath.Base(res.file(t, "deb").Path), "drover_1.3.0~rc.1_"+arches[res.Arch].deb+".deb"; got != want {
		t.Errorf("deb named %s, want %s", got, want)
	}
	if got, want := filepath.Base(res.file(t, "rpm").Path), "drover-1.3.0~rc.1-1."+arches[res.Arch].rpm+".rpm"; got != want {
		t.Errorf("rpm named %s, want %s", got, want)
	}
	if dpkg, err := exec.LookPath("dpkg"); err == nil {
		if err := exec.Command(dpkg, "--compare-versions", "1.3.0~rc.1", "lt", "1.3.0").Run(); err != nil {
			t.Errorf("dpkg does not order 1.3.0~rc.1 before 1.3.0")
		}
		if v := strings.TrimSpace(output(t, "dpkg-deb", "--field", res.file(t, "deb").Path, "Version")); v != "1.3.0~rc.1" {
			t.Errorf("deb Version %q, want 1.3.0~rc.1", v)
		}
	}
}

func TestNormalizeVersion(t *testing.T) {
	for in, want := range map[string]string{"1.2.3": "1.2.3", "v1.2.3": "1.2.3", "1.3.0-rc.1": "1.3.0-rc.1", "10.0.0-beta2": "10.0.0-beta2"} {
		if got, err := normalizeVersion(in); err != nil || got != want {
			t.Errorf("normalizeVersion(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "1.2", "1.2.3.4", "1.2.3+git", "1.2.3-", "1.2.3-rc_1", "latest", "1.2.3 "} {
		if _, err := normalizeVersion(bad); err == nil {
			t.Errorf("normalizeVersion(%q) accepted", bad)
		}
	}
}

// TestReleaseBuildCommand checks the go build the command runs when not
// given --binary: trimmed paths, stripped, the version linked in, cgo on
// (go-nvml needs it) with CGO_CFLAGS defaulted.
func TestReleaseBuildCommand(t *testing.T) {
	t.Setenv("CGO_CFLAGS", "")
	r := buildRequest{root: "/src", version: "1.2.3", arch: "arm64", out: "/tmp/drover"}
	args := strings.Join(r.buildArgs(), " ")
	for _, want := range []string{"build", "-trimpath", "-ldflags -s -w -X github.com/droverhq/drover/internal/buildinfo.Version=1.2.3", "-o /tmp/drover", "./cmd/drover"} {
		if !strings.Contains(args, want) {
			t.Errorf("go %s lacks %q", args, want)
		}
	}
	env := r.buildEnv()
	for _, want := range []string{"CGO_ENABLED=1", "GOOS=linux", "GOARCH=arm64", "CGO_CFLAGS=-O2 -Wno-deprecated-declarations"} {
		if !slices.Contains(env, want) {
			t.Errorf("build environment lacks %s", want)
		}
	}
}

// TestBinaryChecks: a non-executable --binary, an ELF binary of another
// architecture than --arch, and a script (not ELF) all behave.
func TestBinaryChecks(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "drover")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho stand-in\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := binaryArch(script, ""); err == nil || !strings.Contains(err.Error(), "not an executable") {
		t.Errorf("non-executable binary: err = %v", err)
	}
	os.Chmod(script, 0o755)
	if arch, err := binaryArch(script, "arm64"); err != nil || arch != "arm64" {
		t.Errorf("script with --arch arm64: %q, %v", arch, err)
	}
	if v, err := glibcRequirement(script); err != nil || v != "" {
		t.Errorf("script's glibc requirement: %q, %v; want none", v, err)
	}
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	if _, err := binaryArch(standInBinary(t), other); err == nil || !strings.Contains(err.Error(), "built for "+runtime.GOARCH) {
		t.Errorf("stand-in with --arch %s: err = %v", other, err)
	}
	if _, err := binaryArch(standInBinary(t), "s390x"); err == nil {
		t.Error("--arch s390x accepted")
	}
}

// TestUsageErrors: Main without --version, or with a bad one, is a usage
// error (exit 2) that says what is wrong.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--version is required"},
		{[]string{"--version", "one"}, "MAJOR.MINOR.PATCH"},
		{[]string{"--version", "1.2.3", "extra"}, "unexpected arguments"},
	} {
		var stdout, stderr bytes.Buffer
		if code := Main(t.Context(), tc.args, &stdout, &stderr); code != 2 {
			t.Errorf("Main(%q) = %d, want 2", tc.args, code)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("Main(%q) said %q, want %q", tc.args, stderr.String(), tc.want)
		}
	}
	var stdout, stderr bytes.Buffer
	code := Main(t.Context(), []string{"--version", "1.2.3", "--binary", filepath.Join(t.TempDir(), "missing"), "--out", t.TempDir()}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "missing") {
		t.Errorf("a missing --binary: exit %d, %q", code, stderr.String())
	}
}

// TestGoRunEndToEnd runs the real command, go run ./packaging, once with
// --binary (the stand-in, to keep it quick) and --json, and checks that what
// it says it wrote is there.
func TestGoRunEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go run; -short skips it")
	}
	out := t.TempDir()
	cmd := exec.Command("go", "run", "./packaging", "--version", "2.0.0", "--out", out, "--binary", standInBinary(t), "--json")
	cmd.Dir = repoRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("go run ./packaging: %v\n%s", err, stderr.String())
	}
	var res Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("--json printed %q: %v", b, err)
	}
	if res.Version != "2.0.0" || res.Arch != runtime.GOARCH || res.Built || res.GlibcMin == "" {
		t.Errorf("result %+v", res)
	}
	if sum, _, _ := fileSHA256(standInBinary(t)); res.BinarySHA256 != sum {
		t.Errorf("binary_sha256 %s, want %s", res.BinarySHA256, sum)
	}
	var kinds []string
	for _, f := range res.Files {
		kinds = append(kinds, f.Kind)
		sum, size, err := fileSHA256(f.Path)
		if err != nil {
			t.Errorf("%s: %v", f.Kind, err)
			continue
		}
		if sum != f.SHA256 || size != f.Size || filepath.Dir(f.Path) != out {
			t.Errorf("%s: reported %s %d bytes at %s; it is %s, %d bytes", f.Kind, f.SHA256, f.Size, f.Path, sum, size)
		}
	}
	if want := []string{"deb", "rpm", "bundle", "bundle-sha256"}; !slices.Equal(kinds, want) {
		t.Errorf("wrote %q, want %q", kinds, want)
	}
	if stderr.Len() > 0 {
		t.Errorf("stderr not a terminal, yet it said %q", stderr.String())
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != 4 {
		t.Errorf("%s holds %d entries, want the 4 reported (no temporary files left)", out, len(entries))
	}
}

// TestReproducible packages the same binary twice with SOURCE_DATE_EPOCH
// set: every file comes out byte for byte the same.
func TestReproducible(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	bin := standInBinary(t)
	var sums [2][]string
	for i := range sums {
		res, err := run(t.Context(), options{version: "1.2.3", out: t.TempDir(), binary: bin, maintainer: defaultMaintainer}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range res.Files {
			sums[i] = append(sums[i], f.Kind+" "+f.SHA256)
		}
	}
	if !slices.Equal(sums[0], sums[1]) {
		t.Errorf("two runs differ:\n%q\n%q", sums[0], sums[1])
	}
}

// TestBinaryVersionCheck refuses a --binary that says another version than
// the packages', and takes one that says the same or does not answer.
func TestBinaryVersionCheck(t *testing.T) {
	script := func(out string) string {
		path := filepath.Join(t.TempDir(), "drover")
		if err := os.WriteFile(path, []byte("#!/bin/sh\necho '"+out+"'\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	if err := checkBinaryVersion(t.Context(), script(`{"version": "dev"}`), "1.2.3"); err == nil || !strings.Contains(err.Error(), "says it is version dev, not 1.2.3") {
		t.Errorf("a dev build packaged as 1.2.3: %v", err)
	}
	if err := checkBinaryVersion(t.Context(), script(`{"version": "v1.2.3"}`), "1.2.3"); err != nil {
		t.Errorf("the right version: %v", err)
	}
	if err := checkBinaryVersion(t.Context(), script("drover stand-in"), "1.2.3"); err != nil {
		t.Errorf("a binary that does not say: %v", err)
	}
}
