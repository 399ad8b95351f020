package blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/digest"
	"github.com/droverhq/drover/internal/logging"
)

func TestIngest(t *testing.T) {
	s, err := Open(t.TempDir(), logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	data := []byte("hello blob")
	d := digest.FromBytes(data)
	if n, err := s.Ingest(ctx, bytes.NewReader(data), d, int64(len(data))); err != nil || n != int64(len(data)) {
		t.Fatalf("ingest: %d %v", n, err)
	}
	f, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %q", got)
	}
	// Wrong digest, short body, long body: refused, nothing stored.
	other := digest.FromBytes([]byte("other"))
	if _, err := s.Ingest(ctx, bytes.NewReader(data), other, -1); !errors.Is(err, ErrDigestMismatch) || s.Has(other) {
		t.Fatalf("mismatch: %v", err)
	}
	if _, err := s.Ingest(ctx, bytes.NewReader(data[:3]), d, int64(len(data))); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("short: %v", err)
	}
	if _, err := s.Ingest(ctx, bytes.NewReader(append(data, '!')), d, int64(len(data))); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("long: %v", err)
	}
	// A cancelled transfer leaves nothing behind.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	fresh := digest.FromBytes([]byte("fresh"))
	if _, err := s.Ingest(cctx, bytes.NewReader([]byte("fresh")), fresh, 5); err == nil || s.Has(fresh) {
		t.Fatalf("cancelled: %v", err)
	}
	if left, _ := os.ReadDir(s.tmpDir()); len(left) != 0 {
		t.Fatalf("%d temporary files left", len(left))
	}
	var all []Info
	for info, err := range s.All() {
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, info)
	}
	if len(all) != 1 || all[0].Digest != d || all[0].Size != int64(len(data)) {
		t.Fatalf("All = %+v", all)
	}
	if err := s.Remove(d); err != nil || s.Has(d) {
		t.Fatalf("remove: %v", err)
	}
	if err := s.Remove(d); err != nil {
		t.Fatalf("remove twice: %v", err)
	}
}

func TestOpenCleansPartialUploads(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tmp", "abc-123"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(s.tmpDir()); len(left) != 0 {
		t.Fatalf("partial upload survived Open")
	}
}

// BenchmarkIngest compares storing a blob (hash, write, sync) with copying
// the same bytes to a file and syncing it, in the same iterations.
func BenchmarkIngest(b *testing.B) {
	const size = 256 << 20
	dir := b.TempDir()
	s, err := Open(filepath.Join(dir, "store"), logging.Discard())
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, size)
	_, _ = rand.Read(data)
	d := digest.FromBytes(data)
	var ingestT, copyT time.Duration
	b.SetBytes(size)
	for b.Loop() {
		start := time.Now()
		f, _ := os.Create(filepath.Join(dir, "copy"))
		_, _ = io.Copy(f, bytes.NewReader(data))
		_ = f.Sync()
		f.Close()
		copyT += time.Since(start)
		start = time.Now()
		if _, err := s.Ingest(b.Context(), bytes.NewReader(data), d, size); err != nil {
			b.Fatal(err)
		}
		ingestT += time.Since(start)
		_ = s.Remove(d)
		os.Remove(filepath.Join(dir, "copy"))
	}
	b.ReportMetric(copyT.Seconds()/ingestT.Seconds(), "ingest/copy")
}

// TestCollect removes a blob last used before the cutoff, and leaves one
// touched (or ingested again) since; a blob collected cannot be touched.
func TestCollect(t *testing.T) {
	s, err := Open(t.TempDir(), logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("old blob")
	d := digest.FromBytes(data)
	if _, err := s.Ingest(t.Context(), bytes.NewReader(data), d, -1); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(s.Path(d), old, old); err != nil {
		t.Fatal(err)
	}
	cutoff := time.Now().Add(-time.Hour)
	if err := s.Touch(d); err != nil {
		t.Fatal(err)
	}
	if _, gone, err := s.Collect(d, cutoff); gone || err != nil || !s.Has(d) {
		t.Fatalf("a blob touched since the cutoff was collected: %v %v", gone, err)
	}
	_ = os.Chtimes(s.Path(d), old, old)
	if _, gone, err := s.Collect(d, cutoff); !gone || err != nil || s.Has(d) {
		t.Fatalf("an old blob was not collected: %v %v", gone, err)
	}
	if err := s.Touch(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("touching a collected blob: %v", err)
	}
	if _, gone, err := s.Collect(d, cutoff); gone || err != nil {
		t.Fatalf("collecting it again: %v %v", gone, err)
	}
}
