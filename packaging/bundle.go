package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/template"
)

// bundleFile is one file of the offline bundle.
type bundleFile struct {
	name string // inside the bundle's folder
	src  string // on disk; empty when body is set
	body []byte
	mode int64
}

// bundleName is the offline bundle's base name, without .tar.gz; it is also
// the folder the bundle unpacks into.
func (p *pkg) bundleName() string {
	return fmt.Sprintf("%s-%s-linux-%s", packageName, p.version, p.arch)
}

// writeBundle writes the offline bundle, drover-<v>-linux-<arch>.tar.gz,
// and beside it <bundle>.sha256 to check it with before unpacking. It
// returns both paths.
func (p *pkg) writeBundle(dir, debPath, rpmPath string) (bundle, sums string, err error) {
	name := p.bundleName()
	install, err := p.installText(filepath.Base(debPath), filepath.Base(rpmPath))
	if err != nil {
		return "", "", err
	}
	contents := []bundleFile{
		{name: "drover", src: p.binary, mode: 0o755},
		{name: filepath.Base(debPath), src: debPath, mode: 0o644},
		{name: filepath.Base(rpmPath), src: rpmPath, mode: 0o644},
		{name: "drover-hub.service", src: p.hubUnit, mode: 0o644},
		{name: "drover-agent.service", src: p.agentUnit, mode: 0o644},
		{name: "hub.yaml", src: filepath.Join(p.stageDir, "hub.yaml"), mode: 0o644},
		{name: "agent.yaml", src: filepath.Join(p.stageDir, "agent.yaml"), mode: 0o644},
		{name: "INSTALL", body: install, mode: 0o644},
		{name: "churn_train.csv", src: p.sampleData, mode: 0o644},
	}
	var sumLines bytes.Buffer
	for _, f := range contents {
		var sum string
		if f.body != nil {
			sum, _, err = readerSHA256(bytes.NewReader(f.body))
		} else {
			sum, _, err = fileSHA256(f.src)
		}
		if err != nil {
			return "", "", fmt.Errorf("bundle %s: %w", f.name, err)
		}
		fmt.Fprintf(&sumLines, "%s  %s\n", sum, f.name)
	}
	contents = append(contents, bundleFile{name: "SHA256SUMS", body: sumLines.Bytes(), mode: 0o644})

	bundle = filepath.Join(dir, name+".tar.gz")
	if err := p.writeTarGz(bundle, name, contents); err != nil {
		return "", "", fmt.Errorf("bundle %s: %w", bundle, err)
	}
	sum, _, err := fileSHA256(bundle)
	if err != nil {
		return "", "", fmt.Errorf("bundle %s: %w", bundle, err)
	}
	sums = bundle + ".sha256"
	if err := os.WriteFile(sums, fmt.Appendf(nil, "%s  %s\n", sum, filepath.Base(bundle)), 0o644); err != nil {
		return "", "", fmt.Errorf("bundle checksum: %w", err)
	}
	return bundle, sums, nil
}

// installText is the bundle's INSTALL note.
func (p *pkg) installText(deb, rpm string) ([]byte, error) {
	tmpl, err := template.ParseFS(embedded, "INSTALL.tmpl")
	if err != nil {
		return nil, fmt.Errorf("INSTALL template: %w", err)
	}
	var b bytes.Buffer
	err = tmpl.Execute(&b, map[string]string{
		"Version": p.version, "Arch": p.arch, "Glibc": p.glibc,
		"Deb": deb, "RPM": rpm, "Dir": p.bundleName(), "Bundle": p.bundleName() + ".tar.gz",
	})
	if err != nil {
		return nil, fmt.Errorf("INSTALL template: %w", err)
	}
	return b.Bytes(), nil
}

// writeTarGz writes files under folder top into a gzipped tar at path,
// owned by root and stamped with the release's time, so that the same
// inputs give the same bundle. It writes a temporary file and renames it,
// so that a failure leaves no half bundle.
func (p *pkg) writeTarGz(path, top string, contents []bundleFile) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".drover-bundle-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	zw := gzip.NewWriter(tmp)
	tw := tar.NewWriter(zw)
	hdr := func(name string, mode, size int64, typ byte) *tar.Header {
		return &tar.Header{
			Name: name, Mode: mode, Size: size, Typeflag: typ, ModTime: p.mtime,
			Uname: "root", Gname: "root", Format: tar.FormatPAX,
		}
	}
	if err := tw.WriteHeader(hdr(top+"/", 0o755, 0, tar.TypeDir)); err != nil {
		return err
	}
	for _, f := range contents {
		r, size, closeFn, err := f.open()
		if err != nil {
			return err
		}
		err = tw.WriteHeader(hdr(top+"/"+f.name, f.mode, size, tar.TypeReg))
		if err == nil {
			_, err = io.Copy(tw, r)
		}
		closeFn()
		if err != nil {
			return fmt.Errorf("adding %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// open returns the file's content, its size and what to call when done.
func (f bundleFile) open() (io.Reader, int64, func(), error) {
	if f.src == "" {
		return bytes.NewReader(f.body), int64(len(f.body)), func() {}, nil
	}
	h, err := os.Open(f.src)
	if err != nil {
		return nil, 0, nil, err
	}
	fi, err := h.Stat()
	if err != nil {
		h.Close()
		return nil, 0, nil, err
	}
	return h, fi.Size(), func() { h.Close() }, nil
}
