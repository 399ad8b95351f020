// Package artifacts is the agent's cache of model artifacts: files named by
// digest under the data directory, indexed in the agent's store.
//
// A file enters the cache only whole and verified: the download goes to a
// ".partial" file, resumes with an HTTP Range request after an interruption,
// is hashed as it arrives, and is renamed into place only if it matches its
// digest; then it is indexed. Verify hashes a cached file again before it is
// loaded, so that a file damaged on disk is caught, removed and fetched
// anew, never run. A download runs while someone waits for it, and a hub
// node that stops sending is given up on (client.ErrStalled); Collect
// deletes the .partial files nobody came back for.
package artifacts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/droverhq/drover/agent/store"
	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/internal/digest"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// ErrCorrupt means a cached file no longer matches its digest.
var ErrCorrupt = errors.New("artifact does not match its digest")

// Downloader fetches a blob into a file, resuming and verifying; the hub
// client is one.
type Downloader interface {
	DownloadFile(ctx context.Context, d digest.Digest, size int64, path string, progress client.Progress) error
}

// Cache is the artifact cache. It is safe for concurrent use; concurrent
// fetches of one artifact share one download.
type Cache struct {
	dir    string
	store  *store.Store
	dl     Downloader
	logger *slog.Logger
	now    func() time.Time

	// KeepFreeFor, when set, is a directory (the agent's store) whose file
	// system a download must leave MinFreeBytes free on, if it shares it.
	KeepFreeFor string

	// ctx is the parent of every download; Close cancels it.
	ctx       context.Context
	stop      context.CancelFunc
	downloads sync.WaitGroup

	mu       sync.Mutex
	inflight map[string]*fetch
}

// fetch is one download that concurrent fetches of an artifact share. It
// runs while someone waits for it: when the last waiter gives up, it is
// cancelled (abandoned), and a fetch that comes after waits for it to stop
// before starting another from the .partial file it left.
type fetch struct {
	done   chan struct{}
	err    error
	cancel context.CancelFunc

	// Guarded by Cache.mu.
	waiters   int
	abandoned bool
}

// New opens the cache in dir and reconciles its index with the files: an
// index entry whose file is gone or the wrong size is dropped; a whole file
// the index does not know (a crash between rename and index) is hashed and
// adopted if it matches its name, removed if not.
func New(dir string, st *store.Store, dl Downloader, logger *slog.Logger) (*Cache, error) {
	c := &Cache{dir: dir, store: st, dl: dl, logger: logger, now: time.Now, inflight: map[string]*fetch{}}
	c.ctx, c.stop = context.WithCancel(context.Background())
	if err := os.MkdirAll(filepath.Join(dir, "sha256"), 0o700); err != nil {
		return nil, fmt.Errorf("artifacts: %w", err)
	}
	indexed, err := st.Artifacts()
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, a := range indexed {
		d, err := digest.Parse(a.Digest)
		fi, serr := os.Stat(c.path(d))
		if err != nil || serr != nil || fi.Size() != a.Size {
			logger.Warn("dropping an artifact whose file is missing or damaged", "digest", a.Digest)
			_ = st.DeleteArtifact(a.Digest)
			if err == nil {
				_ = os.Remove(c.path(d))
			}
			continue
		}
		known[a.Digest] = true
	}
	err = filepath.WalkDir(filepath.Join(dir, "sha256"), func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || strings.HasSuffix(path, ".partial") {
			return err
		}
		d, perr := digest.Parse(digest.Prefix + e.Name())
		if perr != nil || known[d.String()] {
			return nil
		}
		if err := c.adopt(d, path); err != nil {
			logger.Warn("removing an unindexed file that does not match its name", "file", path, "err", err)
			_ = os.Remove(path)
		}
		return nil
	})
	return c, err
}

func (c *Cache) adopt(d digest.Digest, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	got, n, err := digest.FromReader(f)
	if err != nil {
		return err
	}
	if got != d {
		return ErrCorrupt
	}
	now := c.now()
	return c.store.PutArtifact(&store.Artifact{Digest: d.String(), Size: n, VerifiedAt: now, LastUsed: now})
}

func (c *Cache) path(d digest.Digest) string {
	h := d.Hex()
	return filepath.Join(c.dir, "sha256", h[:2], h)
}

// Has reports whether an artifact is cached whole.
func (c *Cache) Has(ref *droverv1.BlobRef) bool {
	a, err := c.store.Artifact(ref.GetDigest())
	if err != nil {
		return false
	}
	d, err := digest.Parse(a.Digest)
	if err != nil {
		return false
	}
	fi, err := os.Stat(c.path(d))
	return err == nil && fi.Size() == a.Size
}

// Fetch returns the path of a cached artifact, downloading it first if it
// is not cached. Concurrent fetches of one artifact share one download,
// which stops when every one of them has given up (or at Close). A
// download interrupted (by then, by a stalled hub or by a crash) resumes
// where it stopped the next time.
func (c *Cache) Fetch(ctx context.Context, ref *droverv1.BlobRef) (string, error) {
	d, err := digest.Parse(ref.GetDigest())
	if err != nil {
		return "", err
	}
	for {
		if c.Has(ref) {
			c.touch(ref.GetDigest())
			return c.path(d), nil
		}
		c.mu.Lock()
		f := c.inflight[d.String()]
		if f != nil && f.abandoned {
			// Stopping: its .partial is the next download's to resume.
			c.mu.Unlock()
			select {
			case <-f.done:
				continue
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		if f == nil {
			f = c.startDownload(d, ref.GetSizeBytes())
		}
		f.waiters++
		c.mu.Unlock()
		select {
		case <-f.done:
			if f.err != nil {
				return "", f.err
			}
			return c.path(d), nil
		case <-ctx.Done():
			c.mu.Lock()
			if f.waiters--; f.waiters == 0 {
				f.abandoned = true
				f.cancel()
			}
			c.mu.Unlock()
			return "", ctx.Err()
		}
	}
}

// startDownload starts the shared download of d. Called with mu held.
func (c *Cache) startDownload(d digest.Digest, size int64) *fetch {
	ctx, cancel := context.WithCancel(c.ctx)
	f := &fetch{done: make(chan struct{}), cancel: cancel}
	c.inflight[d.String()] = f
	c.downloads.Go(func() {
		f.err = c.download(ctx, d, size)
		cancel()
		c.mu.Lock()
		delete(c.inflight, d.String())
		c.mu.Unlock()
		close(f.done)
	})
	return f
}

// Close stops the downloads in flight and waits for them to end.
func (c *Cache) Close() {
	c.stop()
	c.downloads.Wait()
}

func (c *Cache) download(ctx context.Context, d digest.Digest, size int64) error {
	path := c.path(d)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	start := c.now()
	var have int64
	if fi, err := os.Stat(path + ".partial"); err == nil && fi.Size() > 0 {
		have = fi.Size()
		c.logger.Info("resuming an interrupted download", "digest", d, "have_bytes", fi.Size(), "of_bytes", size)
	}
	// Refuse a download that would not fit, or would leave the agent's
	// store (when it shares the file system) without room: a full disk
	// under the store is worse than a version not loaded.
	if free, err := store.FreeBytes(filepath.Dir(path)); err == nil {
		keep := int64(0)
		if c.KeepFreeFor != "" && sameFileSystem(filepath.Dir(path), c.KeepFreeFor) {
			keep = MinFreeBytes
		}
		if size-have+keep > int64(free) {
			return fmt.Errorf("download %s: no space: need %d bytes and %d kept free for the agent's store, %d free", d, size-have, keep, free)
		}
	}
	if err := c.dl.DownloadFile(ctx, d, size, path, nil); err != nil {
		return fmt.Errorf("download %s: %w", d, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	now := c.now()
	if err := c.store.PutArtifact(&store.Artifact{Digest: d.String(), Size: fi.Size(), VerifiedAt: now, LastUsed: now}); err != nil {
		return err
	}
	c.logger.Info("artifact downloaded and verified", "digest", d, "bytes", fi.Size(), "took", now.Sub(start).Round(time.Millisecond))
	return nil
}

// MinFreeBytes is the space a download must leave free on the file system
// of Cache.KeepFreeFor: room for the agent's store to keep writing.
var MinFreeBytes int64 = 64 << 20

// sameFileSystem reports whether two paths are on one file system.
func sameFileSystem(a, b string) bool {
	var sa, sb syscall.Stat_t
	if syscall.Stat(a, &sa) != nil || syscall.Stat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev
}

func (c *Cache) touch(dg string) {
	if a, err := c.store.Artifact(dg); err == nil {
		a.LastUsed = c.now()
		_ = c.store.PutArtifact(a)
	}
}

// Verify hashes a cached artifact again. A file that no longer matches is
// removed from the cache, and ErrCorrupt returned.
func (c *Cache) Verify(ref *droverv1.BlobRef) error {
	d, err := digest.Parse(ref.GetDigest())
	if err != nil {
		return err
	}
	f, err := os.Open(c.path(d))
	if err != nil {
		_ = c.store.DeleteArtifact(d.String())
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	got, _, err := digest.FromReader(f)
	f.Close()
	if err == nil && got == d {
		return nil
	}
	c.logger.Warn("a cached artifact is damaged; removing it", "digest", d, "hashes_to", got, "err", err)
	c.Remove(d.String())
	return fmt.Errorf("%w: %s hashes to %s", ErrCorrupt, d, got)
}

// Remove deletes a cached artifact.
func (c *Cache) Remove(dg string) {
	d, err := digest.Parse(dg)
	if err != nil {
		return
	}
	_ = c.store.DeleteArtifact(dg)
	_ = os.Remove(c.path(d))
}

// Collect removes cached artifacts not in keep that have not been used for
// unusedFor, and the .partial files of abandoned downloads (not in flight,
// unchanged for unusedFor), and returns how many artifacts it removed.
func (c *Cache) Collect(keep map[string]bool, unusedFor time.Duration) (int, error) {
	arts, err := c.store.Artifacts()
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, a := range arts {
		if keep[a.Digest] || c.now().Sub(a.LastUsed) < unusedFor {
			continue
		}
		c.Remove(a.Digest)
		removed++
		c.logger.Info("removed an unused artifact", "digest", a.Digest, "bytes", a.Size)
	}
	return removed, c.collectPartials(unusedFor)
}

// collectPartials removes the .partial files that no download has written
// to for unusedFor and none is writing to now.
func (c *Cache) collectPartials(unusedFor time.Duration) error {
	return filepath.WalkDir(filepath.Join(c.dir, "sha256"), func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.HasSuffix(path, ".partial") {
			return err
		}
		fi, err := e.Info()
		if err != nil || c.now().Sub(fi.ModTime()) < unusedFor {
			return nil
		}
		d := digest.Prefix + strings.TrimSuffix(e.Name(), ".partial")
		// Under mu, no download of d can start before the file is gone.
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.inflight[d] != nil {
			return nil
		}
		if err := os.Remove(path); err == nil {
			c.logger.Info("removed an abandoned partial download", "digest", d, "bytes", fi.Size(), "last_written", fi.ModTime())
		}
		return nil
	})
}

// Open opens a cached artifact for reading.
func (c *Cache) Open(ref *droverv1.BlobRef) (io.ReadCloser, error) {
	d, err := digest.Parse(ref.GetDigest())
	if err != nil {
		return nil, err
	}
	return os.Open(c.path(d))
}
