package artifacts

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/droverhq/drover/agent/store"
	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/internal/digest"
	"github.com/droverhq/drover/internal/logging"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// blobServer serves one blob at /v1/blobs/<digest>, with Range. While
// stalling, it sends the first half of what is asked (or nothing, with
// stallHeaders) and then nothing more until the request ends.
type blobServer struct {
	blob []byte
	ref  *droverv1.BlobRef

	mu           sync.Mutex
	stall        bool
	stallHeaders bool
	ranges       []string
	gone         chan struct{} // receives when a stalled request ends
}

func newBlobServer(t *testing.T) (*blobServer, *client.Client, time.Duration) {
	t.Helper()
	b := &blobServer{blob: bytes.Repeat([]byte("model weights "), 50_000), gone: make(chan struct{}, 10)}
	b.ref = &droverv1.BlobRef{Digest: digest.FromBytes(b.blob).String(), SizeBytes: int64(len(b.blob))}
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	const idle = 300 * time.Millisecond
	cl, err := client.New(client.Config{Addrs: []string{srv.URL}, BlobIdleTimeout: idle})
	if err != nil {
		t.Fatal(err)
	}
	return b, cl, idle
}

func (b *blobServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	stall, stallHeaders := b.stall, b.stallHeaders
	b.ranges = append(b.ranges, r.Header.Get("Range"))
	b.mu.Unlock()
	if !stall {
		w.Header().Set("ETag", `"`+b.ref.GetDigest()+`"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b.blob))
		return
	}
	if !stallHeaders {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b.blob[:len(b.blob)/2])
		w.(http.Flusher).Flush()
	}
	<-r.Context().Done()
	b.gone <- struct{}{}
}

func (b *blobServer) set(stall, stallHeaders bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stall, b.stallHeaders = stall, stallHeaders
}

func newCache(t *testing.T, dl Downloader) *Cache {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "state"), store.Options{}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c, err := New(filepath.Join(t.TempDir(), "artifacts"), st, dl, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestFetchFromStalledHub gives up on a hub that stops sending, in the
// middle of the bytes or before answering, after the idle timeout (it used
// to wait forever, and every later fetch of the artifact with it), and
// resumes from what arrived once the hub sends again.
func TestFetchFromStalledHub(t *testing.T) {
	for _, headers := range []bool{false, true} {
		b, cl, idle := newBlobServer(t)
		c := newCache(t, cl)
		b.set(true, headers)
		ctx, cancel := context.WithTimeout(t.Context(), 20*idle)
		start := time.Now()
		_, err := c.Fetch(ctx, b.ref)
		cancel()
		if !errors.Is(err, client.ErrStalled) || time.Since(start) > 10*idle {
			t.Fatalf("stalled (headers %v): %v after %v", headers, err, time.Since(start))
		}
		b.set(false, false)
		path, err := c.Fetch(t.Context(), b.ref)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(path); !bytes.Equal(got, b.blob) {
			t.Fatal("the artifact is not the blob")
		}
		b.mu.Lock()
		ranges := b.ranges
		b.mu.Unlock()
		if want := "bytes=" + strconv.Itoa(len(b.blob)/2) + "-"; !headers && ranges[len(ranges)-1] != want {
			t.Errorf("the second download asked for %q, want %q", ranges[len(ranges)-1], want)
		}
	}
}

// TestFetchLastWaiterLeaves stops a shared download when the last fetch
// waiting for it gives up (it used to go on without anyone), and at
// Close.
func TestFetchLastWaiterLeaves(t *testing.T) {
	b, cl, _ := newBlobServer(t)
	c := newCache(t, cl)
	b.set(true, true)
	ctx1, cancel1 := context.WithCancel(t.Context())
	ctx2, cancel2 := context.WithCancel(t.Context())
	errs := make(chan error, 2)
	go func() { _, err := c.Fetch(ctx1, b.ref); errs <- err }()
	go func() { _, err := c.Fetch(ctx2, b.ref); errs <- err }()
	waitFor(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		f := c.inflight[b.ref.GetDigest()]
		return f != nil && f.waiters == 2
	})
	cancel1()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("the first fetch: %v", err)
	}
	select {
	case <-b.gone:
		t.Fatal("the download stopped while a fetch still waited for it")
	case <-time.After(50 * time.Millisecond):
	}
	cancel2()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("the second fetch: %v", err)
	}
	select {
	case <-b.gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the download went on with no one waiting for it")
	}

	// At Close, downloads stop.
	go func() { _, err := c.Fetch(t.Context(), b.ref); errs <- err }()
	waitFor(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.ranges) == 2
	})
	c.Close()
	if err := <-errs; err == nil {
		t.Fatal("a fetch succeeded after Close")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

// TestCollectPartials removes the .partial files of downloads abandoned
// for the keep period, and no other.
func TestCollectPartials(t *testing.T) {
	c := newCache(t, nil)
	old := c.now().Add(-2 * time.Hour)
	partial := func(content string, mtime time.Time) string {
		d := digest.FromBytes([]byte(content))
		path := c.path(d) + ".partial"
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("part"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return path
	}
	abandoned := partial("abandoned", old)
	recent := partial("recent", c.now())
	fetching := partial("fetching", old)
	c.inflight[digest.FromBytes([]byte("fetching")).String()] = &fetch{done: make(chan struct{})}
	if _, err := c.Collect(nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{abandoned: false, recent: true, fetching: true} {
		if _, err := os.Stat(path); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", filepath.Base(path), err == nil, want)
		}
	}
}
