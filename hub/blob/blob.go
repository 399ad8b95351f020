// Package blob is the hub's content-addressed store: model artifacts and
// data sets kept as files named by their SHA-256 under a node's data
// directory.
//
// A blob becomes visible only whole and verified: Ingest writes to a
// temporary file, hashes as it goes, checks the digest and the size, syncs
// the file and renames it into place, then syncs the directory. A cut-off
// upload, or one whose bytes do not match the digest, leaves nothing behind.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/droverhq/drover/internal/digest"
)

// Errors an Ingest may return (wrapped).
var (
	// ErrNotFound: the store has no blob with that digest.
	ErrNotFound = errors.New("blob not found")
	// ErrDigestMismatch: the bytes do not hash to the digest they were sent under.
	ErrDigestMismatch = errors.New("blob digest mismatch")
	// ErrSizeMismatch: fewer or more bytes arrived than were announced.
	ErrSizeMismatch = errors.New("blob size mismatch")
)

// Store is a directory of blobs. It is safe for concurrent use.
type Store struct {
	dir    string
	logger *slog.Logger
	// mu orders what puts a blob in place or marks it used against what
	// collects it: a collection's check of a blob's age and its removal
	// are one step, so a blob ingested or touched meanwhile stays.
	mu sync.Mutex
}

// Open opens (creating if needed) a store rooted at dir and removes
// temporary files left by uploads that a crash cut off.
func Open(dir string, logger *slog.Logger) (*Store, error) {
	s := &Store{dir: dir, logger: logger}
	for _, d := range []string{s.tmpDir(), filepath.Join(dir, "sha256")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("blob: %w", err)
		}
	}
	entries, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(s.tmpDir(), e.Name())); err != nil {
			logger.Warn("cannot remove a partial upload", "file", e.Name(), "err", err)
		}
	}
	if n := len(entries); n > 0 {
		logger.Info("removed partial uploads left by an earlier run", "count", n)
	}
	return s, nil
}

func (s *Store) tmpDir() string { return filepath.Join(s.dir, "tmp") }

// Path returns where the blob with digest d lives (whether or not it exists).
func (s *Store) Path(d digest.Digest) string {
	h := d.Hex()
	return filepath.Join(s.dir, "sha256", h[:2], h)
}

// Stat returns a blob's size, or ErrNotFound.
func (s *Store) Stat(d digest.Digest) (os.FileInfo, error) {
	fi, err := os.Stat(s.Path(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, d)
	}
	return fi, err
}

// Has reports whether the store holds a blob.
func (s *Store) Has(d digest.Digest) bool {
	_, err := s.Stat(d)
	return err == nil
}

// Open opens a blob for reading, or returns ErrNotFound.
func (s *Store) Open(d digest.Digest) (*os.File, error) {
	f, err := os.Open(s.Path(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, d)
	}
	return f, err
}

// Touch marks a blob as recently used, which protects an unreferenced blob
// from collection for another grace period. A blob collected before it
// could be touched is ErrNotFound.
func (s *Store) Touch(d digest.Digest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	err := os.Chtimes(s.Path(d), now, now)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNotFound, d)
	}
	return err
}

// Collect removes a blob last used before cutoff, and reports whether it
// did; it leaves one ingested or touched since. A missing blob is not an
// error.
func (s *Store) Collect(d digest.Digest, cutoff time.Time) (os.FileInfo, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := s.Stat(d)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, err
	case !fi.ModTime().Before(cutoff):
		return fi, false, nil
	}
	if err := s.Remove(d); err != nil {
		return fi, false, err
	}
	return fi, true, nil
}

// Remove deletes a blob. Removing a missing blob is not an error.
func (s *Store) Remove(d digest.Digest) error {
	err := os.Remove(s.Path(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// Ingest reads a blob from r and stores it under want. If size is not
// negative, exactly size bytes must arrive. On any error nothing is stored.
// Ingesting a blob the store already holds replaces it with the new,
// identical, copy. It returns the number of bytes read.
func (s *Store) Ingest(ctx context.Context, r io.Reader, want digest.Digest, size int64) (int64, error) {
	tmp, err := os.CreateTemp(s.tmpDir(), want.Hex()[:12]+"-*")
	if err != nil {
		return 0, fmt.Errorf("blob: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	src := r
	if size >= 0 {
		// Read one byte past the announced size to catch a longer body.
		src = io.LimitReader(r, size+1)
	}
	got, n, err := digest.Copy(tmp, ctxReader{ctx, src})
	if err != nil {
		return n, fmt.Errorf("blob: upload of %s cut off after %d bytes: %w", want, n, err)
	}
	if size >= 0 && n != size {
		return n, fmt.Errorf("%w: %s announced %d bytes, got %d", ErrSizeMismatch, want, size, n)
	}
	if got != want {
		return n, fmt.Errorf("%w: the bytes hash to %s, not %s", ErrDigestMismatch, got, want)
	}
	if err := tmp.Sync(); err != nil {
		return n, fmt.Errorf("blob: sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return n, fmt.Errorf("blob: close: %w", err)
	}
	dst := s.Path(want)
	if err := s.shardDir(filepath.Dir(dst)); err != nil {
		return n, fmt.Errorf("blob: %w", err)
	}
	s.mu.Lock()
	err = os.Rename(tmp.Name(), dst)
	s.mu.Unlock()
	if err != nil {
		return n, fmt.Errorf("blob: %w", err)
	}
	committed = true
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return n, fmt.Errorf("blob: sync directory: %w", err)
	}
	return n, nil
}

// shardDir makes a blob's shard directory, and syncs its parent when it
// is new: the blob's rename is synced in the shard, which must itself
// survive a crash.
func (s *Store) shardDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return syncDir(filepath.Dir(dir))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Info describes a stored blob.
type Info struct {
	Digest  digest.Digest
	Size    int64
	ModTime time.Time
}

// All lists every stored blob. Files that are not blobs are skipped.
func (s *Store) All() iter.Seq2[Info, error] {
	return func(yield func(Info, error) bool) {
		root := filepath.Join(s.dir, "sha256")
		err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			d, perr := digest.Parse(digest.Prefix + e.Name())
			if perr != nil || !strings.HasPrefix(e.Name(), filepath.Base(filepath.Dir(path))) {
				return nil
			}
			fi, err := e.Info()
			if err != nil {
				return err
			}
			if !yield(Info{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()}, nil) {
				return fs.SkipAll
			}
			return nil
		})
		if err != nil {
			yield(Info{}, err)
		}
	}
}
