package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"embed"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
	"github.com/goreleaser/nfpm/v2/rpm"
)

// Package metadata. The repository has no LICENSE file, so the packages say
// "Proprietary" until it has one.
const (
	packageName       = "drover"
	defaultMaintainer = "Drover maintainers <maintainers@droverhq.invalid>"
	homepage          = "https://github.com/droverhq/drover"
	license           = "Proprietary"
	vendor            = "Drover"
	synopsis          = "MLOps for fleets of on-prem and air-gapped GPU machines"
	longDescription   = `One binary, drover, runs the hub (drover-hub.service), a Raft-replicated
registry of models, versions, data sets, agents and rollouts, and the agent
(drover-agent.service), which serves and trains on each GPU machine the model
versions the hub assigns it. NVML is loaded at run time: machines without an
NVIDIA driver run the agent CPU-only.

Neither unit is enabled or started on install: edit /etc/drover/hub.yaml or
/etc/drover/agent.yaml, then systemctl enable --now the unit.`
)

// Where the packages put things; the units' ExecStart, User and data
// directories match these.
const (
	binPath     = "/usr/bin/drover"
	unitDir     = "/usr/lib/systemd/system"
	configDir   = "/etc/drover"
	dataDir     = "/var/lib/drover"
	libDir      = "/usr/lib/drover"
	docDir      = "/usr/share/doc/drover"
	serviceUser = "drover"
)

// embedded holds the example configs, the maintainer scripts and the
// bundle's INSTALL template.
//
//go:embed config/hub.yaml config/agent.yaml scripts/*.sh INSTALL.tmpl
var embedded embed.FS

// The maintainer scripts, shared by both formats: each handles the .deb's
// arguments (install, remove, upgrade, ...) and the .rpm's (a count).
var scriptFiles = []string{"preinstall.sh", "postinstall.sh", "preremove.sh", "postremove.sh"}

// pkg is one release to package.
type pkg struct {
	version   string // 1.2.3 or 1.3.0-rc.1
	arch      string // GOARCH
	binary    string
	hubUnit   string
	agentUnit string
	// sampleData is the churn training data the README's quick start
	// trains on, carried in the bundle for a site without the source.
	sampleData string
	maintainer string
	glibc      string // the oldest glibc the binary runs on; "" for none
	mtime      time.Time

	stageDir string // generated files: configs, scripts, docs
}

// stage writes the files the packages take from disk rather than from the
// repository: the example configs, the maintainer scripts, and the .deb's
// copyright and changelog.
func (p *pkg) stage(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("staging: %w", err)
	}
	p.stageDir = dir
	for _, u := range []string{p.hubUnit, p.agentUnit} {
		if _, err := os.Stat(u); err != nil {
			return fmt.Errorf("systemd unit: %w", err)
		}
	}
	copyFromEmbed := func(name string, mode os.FileMode) error {
		b, err := embedded.ReadFile(name)
		if err != nil {
			return fmt.Errorf("staging %s: %w", name, err)
		}
		return writeStaged(filepath.Join(dir, filepath.Base(name)), b, mode)
	}
	for _, c := range []string{"config/hub.yaml", "config/agent.yaml"} {
		if err := copyFromEmbed(c, 0o640); err != nil {
			return err
		}
	}
	for _, s := range scriptFiles {
		if err := copyFromEmbed("scripts/"+s, 0o755); err != nil {
			return err
		}
	}
	if err := writeStaged(filepath.Join(dir, "copyright"), []byte(p.copyright()), 0o644); err != nil {
		return err
	}
	changelog, err := gzipped(p.debChangelog())
	if err != nil {
		return fmt.Errorf("staging changelog.gz: %w", err)
	}
	return writeStaged(filepath.Join(dir, "changelog.gz"), changelog, 0o644)
}

func writeStaged(path string, b []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("staging: %w", err)
	}
	return nil
}

// gzipped compresses b as gzip -9n does: no name, no time stamp, so that
// the same input gives the same bytes.
func gzipped(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// pkgVersion is the version as both dpkg and rpm order it: a pre-release's
// dash becomes a tilde, which sorts before the release.
func (p *pkg) pkgVersion() string {
	return strings.Replace(p.version, "-", "~", 1)
}

// copyright is the .deb's /usr/share/doc/drover/copyright, in Debian's
// machine-readable format.
func (p *pkg) copyright() string {
	return `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: drover
Source: ` + homepage + `

Files: *
Copyright: ` + strconv.Itoa(p.mtime.Year()) + ` The Drover authors
License: ` + license + `
 The Drover repository carries no license file; all rights are reserved by
 its authors. The drover binary also contains Go modules under their own
 licenses (Apache-2.0, BSD, MIT, MPL-2.0); see the repository's go.mod.
`
}

// debChangelog is the .deb's changelog: one entry, for this version.
func (p *pkg) debChangelog() []byte {
	return fmt.Appendf(nil, "%s (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- %s  %s\n",
		packageName, p.pkgVersion(), p.version, p.maintainer, p.mtime.Format(time.RFC1123Z))
}

// info returns nfpm's description of the package in format ("deb" or
// "rpm").
func (p *pkg) info(format string) *nfpm.Info {
	staged := func(name string) string { return filepath.Join(p.stageDir, name) }
	file := func(mode os.FileMode, owner, group string) *files.ContentFileInfo {
		return &files.ContentFileInfo{Mode: mode, Owner: owner, Group: group, MTime: p.mtime}
	}
	// deb marks every config file a conffile (kept when changed); rpm keeps
	// a changed one only with noreplace, and writes the new one as .rpmnew.
	configType := files.TypeConfig
	if format == "rpm" {
		configType = files.TypeConfigNoReplace
	}
	contents := files.Contents{
		{Source: p.binary, Destination: binPath, FileInfo: file(0o755, "root", "root")},
		{Source: p.hubUnit, Destination: unitDir + "/drover-hub.service", FileInfo: file(0o644, "root", "root")},
		{Source: p.agentUnit, Destination: unitDir + "/drover-agent.service", FileInfo: file(0o644, "root", "root")},
		{Destination: configDir, Type: files.TypeDir, FileInfo: file(0o755, "root", "root")},
		// The configs may hold a join token: readable by the services'
		// group, not by everyone.
		{Source: staged("hub.yaml"), Destination: configDir + "/hub.yaml", Type: configType, FileInfo: file(0o640, "root", serviceUser)},
		{Source: staged("agent.yaml"), Destination: configDir + "/agent.yaml", Type: configType, FileInfo: file(0o640, "root", serviceUser)},
		// systemd makes hub/ and agent/ below it (StateDirectory=).
		{Destination: dataDir, Type: files.TypeDir, FileInfo: file(0o750, serviceUser, serviceUser)},
		// The agent's default --plugin-dir, where runner plugins and
		// their SHA256SUMS are installed (docs/runners.md).
		{Destination: libDir, Type: files.TypeDir, FileInfo: file(0o755, "root", "root")},
		{Destination: libDir + "/plugins", Type: files.TypeDir, FileInfo: file(0o755, "root", "root")},
	}
	if format == "deb" {
		contents = append(contents,
			&files.Content{Source: staged("copyright"), Destination: docDir + "/copyright", FileInfo: file(0o644, "root", "root")},
			&files.Content{Source: staged("changelog.gz"), Destination: docDir + "/changelog.gz", FileInfo: file(0o644, "root", "root")},
		)
	}

	info := &nfpm.Info{
		Name:        packageName,
		Arch:        p.arch,
		Platform:    "linux",
		Version:     p.version,
		Section:     "admin",
		Priority:    "optional",
		Maintainer:  p.maintainer,
		Description: synopsis + "\n" + longDescription,
		Vendor:      vendor,
		Homepage:    homepage,
		License:     license,
		MTime:       p.mtime,
		Overridables: nfpm.Overridables{
			Contents: contents,
			Depends:  p.depends(format),
			Umask:    0o022,
			Scripts: nfpm.Scripts{
				PreInstall:  staged("preinstall.sh"),
				PostInstall: staged("postinstall.sh"),
				PreRemove:   staged("preremove.sh"),
				PostRemove:  staged("postremove.sh"),
			},
			RPM: nfpm.RPM{Summary: synopsis, Group: "System Environment/Daemons", Packager: p.maintainer},
		},
	}
	if format == "rpm" {
		info.Release = "1"
	}
	return nfpm.WithDefaults(info)
}

// depends is the packages' one dependency: the glibc the binary was linked
// against, or newer. NVML comes with the NVIDIA driver and is loaded at run
// time, when present; nothing else is needed.
func (p *pkg) depends(format string) []string {
	if p.glibc == "" {
		return nil
	}
	if format == "deb" {
		return []string{"libc6 (>= " + p.glibc + ")"}
	}
	// What rpmbuild's dependency generator would write; every glibc
	// package provides it, whatever the distribution calls the package.
	return []string{"libc.so.6(GLIBC_" + p.glibc + ")(64bit)"}
}

// write makes the package in format ("deb" or "rpm") in dir and returns
// its path: drover_<v>_<debarch>.deb or drover-<v>-1.<rpmarch>.rpm.
func (p *pkg) write(ctx context.Context, format, dir string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	var packager nfpm.Packager
	switch format {
	case "deb":
		packager = deb.Default
	case "rpm":
		packager = rpm.DefaultRPM
	default:
		return "", fmt.Errorf("no packager for %q", format)
	}
	// Packagers rewrite the Info they are given (its architecture, say), so
	// the name and the package each get their own.
	path := filepath.Join(dir, packager.ConventionalFileName(p.info(format)))
	tmp, err := os.CreateTemp(dir, ".drover-*."+format)
	if err != nil {
		return "", fmt.Errorf("%s package: %w", format, err)
	}
	defer os.Remove(tmp.Name())
	if err := packager.Package(p.info(format), tmp); err != nil {
		tmp.Close()
		return "", fmt.Errorf("%s package %s: %w", format, path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", fmt.Errorf("%s package %s: %w", format, path, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("%s package %s: %w", format, path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("%s package: %w", format, err)
	}
	return path, nil
}
