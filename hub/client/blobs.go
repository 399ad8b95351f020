package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"connectrpc.com/connect/v2"

	"github.com/droverhq/drover/internal/digest"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Headers of the blob endpoints.
const (
	// LocalOnlyHeader asks a node to answer a blob request from its own
	// disk only, with 404 rather than fetching from a peer.
	LocalOnlyHeader = "Drover-Local-Only"
	// DigestHeader carries a blob's digest in responses.
	DigestHeader = "Drover-Digest"
)

// Progress is told, now and then, how many bytes of total have moved.
// total is -1 when unknown.
type Progress func(done, total int64)

// UploadResult is what the hub answers to a blob upload.
type UploadResult struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	// Replicas lists the hub nodes that held the blob when the upload
	// returned: at least a quorum.
	Replicas []string `json:"replicas"`
	// Existed is true when the hub already had the blob and nothing was sent.
	Existed bool `json:"existed,omitempty"`
}

// failoverBlobs remembers which node answered last, like failover does for
// RPCs.
type failoverBlobs struct {
	addrs   []string
	current atomic.Int32
}

// each calls fn with each node's base URL in turn, starting from the one
// that answered last, until fn succeeds or fails for a reason other than
// the node being unreachable or stalled.
func (f *failoverBlobs) each(fn func(base string) error) error {
	n := len(f.addrs)
	start := int(f.current.Load())
	var err error
	for i := range n {
		idx := (start + i) % n
		if err = fn(BaseURL(f.addrs[idx])); err == nil || !unreachable(err) && !errors.Is(err, ErrStalled) {
			if err == nil {
				f.current.Store(int32(idx))
			}
			return err
		}
	}
	return err
}

func (c *Client) newRequest(ctx context.Context, method, url string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	if c.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
	return req, nil
}

// HashFile returns a file's digest and size, reporting progress.
func HashFile(path string, progress Progress) (digest.Digest, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return digest.Digest{}, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return digest.Digest{}, 0, err
	}
	d, n, err := digest.FromReader(&progressReader{r: f, total: fi.Size(), fn: progress})
	return d, n, err
}

// UploadFile hashes a file and uploads it, unless the hub already has it.
func (c *Client) UploadFile(ctx context.Context, path string, hashing, uploading Progress) (*UploadResult, error) {
	d, size, err := HashFile(path, hashing)
	if err != nil {
		return nil, fmt.Errorf("hash %s: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return c.Upload(ctx, f, size, d, uploading)
}

// Upload sends size bytes from r as the blob d. The hub verifies the
// digest as the bytes arrive and keeps nothing unless they match. r is
// read from its start on each attempt (a fail-over re-sends).
func (c *Client) Upload(ctx context.Context, r io.ReadSeeker, size int64, d digest.Digest, progress Progress) (*UploadResult, error) {
	var res *UploadResult
	err := c.blobs.each(func(base string) error {
		url := base + "/v1/blobs/" + d.String()
		head, err := c.newRequest(ctx, http.MethodHead, url, nil)
		if err != nil {
			return err
		}
		head.Header.Set(LocalOnlyHeader, "1")
		resp, err := c.http.Do(head)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			res = &UploadResult{Digest: d.String(), Size: resp.ContentLength, Existed: true}
			if progress != nil {
				progress(size, size)
			}
			return nil
		}
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			return err
		}
		body, stop := uploadBody(r, size, progress)
		defer stop()
		put, err := c.newRequest(ctx, http.MethodPut, url, body)
		if err != nil {
			return err
		}
		put.ContentLength = size
		put.Header.Set("Content-Type", "application/octet-stream")
		resp, err = c.http.Do(put)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return httpError(resp)
		}
		res = new(UploadResult)
		return json.NewDecoder(resp.Body).Decode(res)
	})
	return res, err
}

// uploadBody returns what to send for an upload. A file goes as itself, so
// that the kernel can send it without copying it through this process
// (sendfile); its progress is read off the file's offset. Any other reader
// is counted as it is read.
func uploadBody(r io.ReadSeeker, size int64, progress Progress) (io.Reader, func()) {
	f, ok := r.(*os.File)
	if !ok {
		return &progressReader{r: io.LimitReader(r, size), total: size, fn: progress}, func() {}
	}
	// NopCloser keeps the transport from closing the file (a fail-over may
	// send it again); net/http looks through it to find the file.
	body := io.NopCloser(f)
	if progress == nil {
		return body, func() {}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if pos, err := f.Seek(0, io.SeekCurrent); err == nil {
					progress(min(pos, size), size)
				}
			}
		}
	}()
	return body, func() {
		close(done)
		<-stopped
		progress(size, size)
	}
}

// BlobRef returns the reference to an uploaded blob.
func (r *UploadResult) BlobRef() *droverv1.BlobRef {
	return &droverv1.BlobRef{Digest: r.Digest, SizeBytes: r.Size}
}

// DownloadFile fetches the blob d of the given size (-1 if unknown) into
// path. It writes to path+".partial" and resumes from what is there with an
// HTTP Range request, so an interrupted download continues where it
// stopped. The whole file is checked against d before it is renamed into
// place: a corrupt or substituted blob never appears at path.
func (c *Client) DownloadFile(ctx context.Context, d digest.Digest, size int64, path string, progress Progress) error {
	partial := path + ".partial"
	return c.blobs.each(func(base string) error {
		err := c.download(ctx, base+"/v1/blobs/"+d.String(), d, size, partial, path, progress)
		if errors.Is(err, errCorrupt) {
			// What was there before was not the start of this blob: the
			// partial file is gone now, so begin again.
			err = c.download(ctx, base+"/v1/blobs/"+d.String(), d, size, partial, path, progress)
		}
		return err
	})
}

// errCorrupt means the downloaded bytes did not hash to the digest.
var errCorrupt = errors.New("downloaded bytes do not match the digest")

// ErrStalled is a download's error when a hub node sent nothing, neither
// its answer nor more bytes, for Config.BlobIdleTimeout.
var ErrStalled = errors.New("the hub node sent nothing for too long")

func (c *Client) download(ctx context.Context, url string, d digest.Digest, size int64, partial, path string, progress Progress) error {
	f, err := os.OpenFile(partial, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	// Hash what is already there, then ask for the rest.
	v := digest.NewVerifier()
	have, err := io.Copy(v, f)
	if err != nil {
		return err
	}
	// A node that goes quiet, before its answer or in the middle of the
	// bytes, is given up on: nothing else would ever end the wait.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idle := c.cfg.BlobIdleTimeout
	watchdog := time.AfterFunc(idle, func() { cancel(fmt.Errorf("%w (%s)", ErrStalled, idle)) })
	defer watchdog.Stop()
	stalled := func(err error) error {
		if cause := context.Cause(ctx); errors.Is(cause, ErrStalled) {
			return cause
		}
		return err
	}
	req, err := c.newRequest(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
		req.Header.Set("If-Range", `"`+d.String()+`"`)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return stalled(err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		// A full body: start again from nothing.
		if err := f.Truncate(0); err != nil {
			return err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		have, v = 0, digest.NewVerifier()
	case http.StatusRequestedRangeNotSatisfiable:
		// We may already have every byte; the digest check decides.
	default:
		return httpError(resp)
	}
	if size < 0 && resp.ContentLength >= 0 {
		size = have + resp.ContentLength
	}
	got := v.Digest()
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		if progress != nil && have > 0 {
			progress(have, size) // resuming from here
		}
		body := &progressReader{r: &idleReader{r: resp.Body, watchdog: watchdog, idle: idle}, done: have, total: size, fn: progress}
		if have == 0 {
			// The common case, hashed on a second core as it is written.
			got, _, err = digest.Copy(f, body)
		} else {
			_, err = io.Copy(io.MultiWriter(f, v), body)
			got = v.Digest()
		}
		if err != nil {
			return fmt.Errorf("download of %s interrupted (it resumes from here): %w", d, stalled(err))
		}
	}
	if got != d {
		_ = os.Remove(partial)
		return fmt.Errorf("%w: they hash to %s, not %s; discarded", errCorrupt, got, d)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(partial, path)
}

// httpError turns a non-success blob response into a Connect error with
// the hub's code and message.
func httpError(resp *http.Response) error {
	var body struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(raw, &body) != nil || body.Message == "" {
		body.Message = fmt.Sprintf("HTTP %s: %s", resp.Status, raw)
	}
	var code connect.Code
	if code.UnmarshalText([]byte(body.Code)) != nil {
		code = connect.CodeUnknown
	}
	return connect.NewError(code, body.Message).WithRemote()
}

// idleReader puts its watchdog off by idle whenever bytes arrive.
type idleReader struct {
	r        io.Reader
	watchdog *time.Timer
	idle     time.Duration
}

func (r *idleReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if n > 0 {
		r.watchdog.Reset(r.idle)
	}
	return n, err
}

// progressReader reports bytes read through it.
type progressReader struct {
	r           io.Reader
	done, total int64
	fn          Progress
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	if p.fn != nil && (n > 0 || errors.Is(err, io.EOF)) {
		p.fn(p.done, p.total)
	}
	return n, err
}
