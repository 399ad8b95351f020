package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect/v2"
	"github.com/hashicorp/raft"

	"github.com/droverhq/drover/hub/auth"
	"github.com/droverhq/drover/hub/blob"
	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/hub/state"
	"github.com/droverhq/drover/internal/digest"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// The blob endpoints:
//
//	PUT  /v1/blobs/sha256:<hex>   upload (operator or admin); 201 once the
//	                              blob is whole on a quorum of nodes
//	GET  /v1/blobs/sha256:<hex>   download, with Range and ETag
//	HEAD /v1/blobs/sha256:<hex>   does this node (or the cluster) have it?
//
// Errors are JSON in the shape of Connect's: {"code": ..., "message": ...}.

func (n *Node) handleBlob(w http.ResponseWriter, r *http.Request) {
	d, err := digest.Parse(r.PathValue("digest"))
	if err != nil {
		writeHTTPError(w, connect.NewError(connect.CodeInvalidArgument, err.Error()))
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		n.serveBlob(w, r, d)
	case http.MethodPut:
		n.uploadBlob(w, r, d)
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT")
		writeHTTPErrorStatus(w, http.StatusMethodNotAllowed, connect.NewError(connect.CodeUnimplemented, r.Method+" is not supported on blobs"))
	}
}

func (n *Node) uploadBlob(w http.ResponseWriter, r *http.Request, d digest.Digest) {
	p, err := n.authenticate(r.Context(), r.Header.Get("Authorization"))
	if err == nil && !p.Allowed(auth.Write) {
		// An agent uploads what a retraining job asks of it (a trained
		// artifact, its labelled rows), and only then.
		if id := p.Token.GetAgentId(); !p.Allowed(auth.Agent) || id == "" || !n.fsm.State().Snapshot().AgentMayUpload(id) {
			err = permissionDenied(p, auth.Write)
		}
	}
	if err != nil {
		writeHTTPError(w, err)
		return
	}
	size := r.ContentLength
	if size > n.cfg.BlobMaxBytes {
		writeHTTPErrorStatus(w, http.StatusRequestEntityTooLarge, connect.NewError(connect.CodeResourceExhausted,
			fmt.Sprintf("blob is %d bytes; the limit is %d", size, n.cfg.BlobMaxBytes)))
		return
	}
	body := http.MaxBytesReader(w, r.Body, n.cfg.BlobMaxBytes)
	got, err := n.blobs.Ingest(r.Context(), body, d, size)
	n.metrics.blobBytes.WithLabelValues("in").Add(float64(got))
	if err != nil {
		n.logger.Info("blob upload failed; nothing stored", "digest", d, "bytes", got, "err", err)
		writeIngestError(w, err, got)
		return
	}
	holders, err := n.replicateBlob(r.Context(), &droverv1.BlobRef{Digest: d.String(), SizeBytes: got})
	if err != nil {
		writeHTTPError(w, err)
		return
	}
	n.logger.Info("blob uploaded", "digest", d, "bytes", got, "replicas", holders)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(client.DigestHeader, d.String())
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(client.UploadResult{Digest: d.String(), Size: got, Replicas: holders})
}

func writeIngestError(w http.ResponseWriter, err error, got int64) {
	var maxErr *http.MaxBytesError
	switch {
	case errors.Is(err, blob.ErrDigestMismatch), errors.Is(err, blob.ErrSizeMismatch):
		writeHTTPError(w, connect.NewError(connect.CodeInvalidArgument, err.Error()))
	case errors.As(err, &maxErr):
		writeHTTPErrorStatus(w, http.StatusRequestEntityTooLarge, connect.NewError(connect.CodeResourceExhausted,
			fmt.Sprintf("blob exceeds the limit of %d bytes", maxErr.Limit)))
	case errors.Is(err, syscall.ENOSPC):
		writeHTTPErrorStatus(w, http.StatusInsufficientStorage, connect.NewError(connect.CodeResourceExhausted, "the hub node is out of disk space"))
	default:
		writeHTTPError(w, connect.NewError(connect.CodeInvalidArgument, fmt.Sprintf("upload cut off after %d bytes; nothing was stored", got)))
	}
}

func (n *Node) serveBlob(w http.ResponseWriter, r *http.Request, d digest.Digest) {
	if _, ok := n.authenticateHTTP(w, r, auth.Download); !ok {
		return
	}
	f, err := n.blobs.Open(d)
	if errors.Is(err, blob.ErrNotFound) {
		if r.Header.Get(client.LocalOnlyHeader) == "" && n.fsm.State().Snapshot().BlobReferenced(d.String()) {
			n.proxyBlob(w, r, d)
			return
		}
		writeHTTPError(w, connect.NewError(connect.CodeNotFound, fmt.Sprintf("no blob %s", d)))
		return
	}
	if err != nil {
		writeHTTPError(w, connect.NewError(connect.CodeInternal, "cannot open blob").WithCause(err))
		return
	}
	defer f.Close()
	h := w.Header()
	h.Set("ETag", `"`+d.String()+`"`)
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	h.Set(client.DigestHeader, d.String())
	// ServeContent answers Range, If-Range and If-None-Match. A blob never
	// changes, so there is no Last-Modified to offer.
	var content io.ReadSeeker = f
	if rate := n.cfg.BlobServeRate; rate > 0 {
		content = &throttled{r: f, rate: rate}
	}
	http.ServeContent(w, r, "", time.Time{}, content)
	if r.Method == http.MethodGet {
		if sent, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64); err == nil {
			n.metrics.blobBytes.WithLabelValues("out").Add(float64(sent))
		}
	}
}

// proxyBlob serves a blob this node does not have (yet) from a peer that
// does, passing Range and conditional headers through.
func (n *Node) proxyBlob(w http.ResponseWriter, r *http.Request, d digest.Digest) {
	if resp := n.peerBlob(r.Context(), r.Method, d, r.Header); resp != nil {
		for _, k := range []string{"Content-Length", "Content-Range", "Content-Type", "ETag", "Accept-Ranges", "Cache-Control", client.DigestHeader} {
			if v := resp.Header.Get(k); v != "" {
				w.Header().Set(k, v)
			}
		}
		w.WriteHeader(resp.StatusCode)
		sent, _ := io.Copy(w, resp.Body)
		resp.Body.Close()
		n.metrics.blobBytes.WithLabelValues("out").Add(float64(sent))
		return
	}
	writeHTTPError(w, connect.NewError(connect.CodeUnavailable, fmt.Sprintf("blob %s is referenced but no reachable node holds it yet", d)))
}

// peerBlob asks the other nodes, one after another, for a blob only they
// hold (passing on Range and conditional headers from h), and returns the
// first answer that is not "not found", or nil.
func (n *Node) peerBlob(ctx context.Context, method string, d digest.Digest, h http.Header) *http.Response {
	for _, addr := range n.peerHTTPAddrs() {
		req, err := http.NewRequestWithContext(ctx, method, client.BaseURL(addr)+"/v1/blobs/"+d.String(), nil)
		if err != nil {
			continue
		}
		for _, k := range []string{"Range", "If-Range", "If-None-Match"} {
			if v := h.Get(k); v != "" {
				req.Header.Set(k, v)
			}
		}
		req.Header.Set("Authorization", "Bearer "+n.peerSecret())
		req.Header.Set(client.LocalOnlyHeader, "1")
		resp, err := n.peers.http.Do(req)
		if err != nil {
			continue
		}
		if resp.StatusCode == http.StatusNotFound {
			resp.Body.Close()
			continue
		}
		return resp
	}
	return nil
}

// peerHTTPAddrs returns the HTTP addresses of every other known node.
func (n *Node) peerHTTPAddrs() []string {
	var out []string
	for _, rec := range n.fsm.State().Snapshot().Nodes() {
		if rec.GetName() != n.cfg.NodeName && rec.GetHttpAddress() != "" {
			out = append(out, rec.GetHttpAddress())
		}
	}
	return out
}

// replicateBlob makes sure a blob this node holds is whole on a quorum of
// the voters before anything refers to it, and returns the nodes known to
// hold it. Peers beyond the quorum keep pulling in the background.
func (n *Node) replicateBlob(ctx context.Context, ref *droverv1.BlobRef) ([]string, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, unavailable("reading the raft configuration: %v", err)
	}
	view := n.fsm.State().Snapshot()
	type peer struct{ name, addr string }
	var peers []peer
	voters := 0
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage != raft.Voter {
			continue
		}
		voters++
		if srv.ID == raft.ServerID(n.cfg.NodeName) {
			continue
		}
		peers = append(peers, peer{string(srv.ID), view.Node(string(srv.ID)).GetHttpAddress()})
	}
	holders := []string{n.cfg.NodeName}
	need := voters/2 + 1
	if len(holders) >= need {
		return holders, nil
	}
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(peers))
	// The pulls outlive the request: a peer beyond the quorum should still
	// get its copy after the client has its answer.
	bg, cancel := context.WithTimeout(n.ctx, transferTimeout(ref.GetSizeBytes()))
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Go(func() {
			if p.addr == "" {
				results <- result{p.name, errors.New("HTTP address not known yet")}
				return
			}
			_, err := n.peers.client(p.addr).ReplicateBlob(bg, &droverv1.ReplicateBlobRequest{Blob: ref, Sources: []string{n.httpAddr}})
			results <- result{p.name, err}
		})
	}
	go func() { wg.Wait(); cancel() }()
	var errs []error
	for range peers {
		select {
		case r := <-results:
			if r.err != nil {
				errs = append(errs, fmt.Errorf("%s: %v", r.name, r.err))
				continue
			}
			holders = append(holders, r.name)
			if len(holders) >= need {
				return holders, nil
			}
		case <-ctx.Done():
			return holders, connectError(ctx.Err())
		}
	}
	return holders, unavailable("the blob is on %d of the %d nodes a quorum needs, so it was not accepted: %v", len(holders), need, errors.Join(errs...))
}

// transferTimeout allows a pull at least 10 MB/s, and a minute besides.
func transferTimeout(size int64) time.Duration {
	return time.Minute + time.Duration(size/(10<<20))*time.Second
}

// ensureBlob is called before a version refers to a blob: the blob must be
// here (or on a peer, whence it is pulled), of the stated size, and on a
// quorum. It returns the blob's size. It also touches the blob, so that the
// collector leaves it alone while the version is committed.
func (n *Node) ensureBlob(ctx context.Context, ref *droverv1.BlobRef) error {
	d, err := digest.Parse(ref.GetDigest())
	if err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err.Error())
	}
	if !n.blobs.Has(d) {
		if err := n.pullBlob(ctx, ref, n.peerHTTPAddrs()); err != nil {
			return state.Preconditionf("blob %s has not been uploaded (PUT /v1/blobs/%s first)", d, d)
		}
	}
	n.gcMu.Lock()
	fi, err := n.blobs.Stat(d)
	if err == nil {
		err = n.blobs.Touch(d)
	}
	n.gcMu.Unlock()
	if err != nil {
		return state.Preconditionf("blob %s has not been uploaded (PUT /v1/blobs/%s first)", d, d)
	}
	if ref.GetSizeBytes() == 0 {
		ref.SizeBytes = fi.Size()
	}
	if fi.Size() != ref.GetSizeBytes() {
		return state.Invalidf("blob %s has %d bytes, not %d as given", d, fi.Size(), ref.GetSizeBytes())
	}
	_, err = n.replicateBlob(ctx, ref)
	return err
}

// pullBlob fetches a blob from the first source that has it. Concurrent
// pulls of one blob share one transfer.
func (n *Node) pullBlob(ctx context.Context, ref *droverv1.BlobRef, sources []string) error {
	d, err := digest.Parse(ref.GetDigest())
	if err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err.Error())
	}
	// A copy held already counts once it is touched: an unreferenced
	// one past its grace could otherwise be collected right after this
	// node was counted as holding it.
	if n.blobs.Touch(d) == nil {
		return nil
	}
	done := n.pulls.do(d.String(), func() error {
		if n.blobs.Touch(d) == nil {
			return nil
		}
		pctx, cancel := context.WithTimeout(n.ctx, transferTimeout(ref.GetSizeBytes()))
		defer cancel()
		var errs []error
		for _, src := range sources {
			err := n.pullFrom(pctx, src, d, ref.GetSizeBytes())
			if err == nil {
				n.metrics.blobReplicas.WithLabelValues("ok").Inc()
				n.logger.Debug("pulled blob from a peer", "digest", d, "from", src)
				return nil
			}
			errs = append(errs, fmt.Errorf("%s: %w", src, err))
		}
		n.metrics.blobReplicas.WithLabelValues("failed").Inc()
		if len(errs) == 0 {
			return unavailable("no node to pull blob %s from", d)
		}
		return unavailable("pulling blob %s failed: %v", d, errors.Join(errs...))
	})
	select {
	case <-done.ch:
		return done.err
	case <-ctx.Done():
		return connectError(ctx.Err())
	}
}

func (n *Node) pullFrom(ctx context.Context, src string, d digest.Digest, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, client.BaseURL(src)+"/v1/blobs/"+d.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+n.peerSecret())
	req.Header.Set(client.LocalOnlyHeader, "1")
	resp, err := n.peers.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	if size <= 0 {
		size = resp.ContentLength
	}
	got, err := n.blobs.Ingest(ctx, resp.Body, d, size)
	n.metrics.blobBytes.WithLabelValues("in").Add(float64(got))
	return err
}

// pullGroup lets concurrent pulls of one blob share one transfer.
type pullGroup struct {
	mu    sync.Mutex
	calls map[string]*pullCall
}

type pullCall struct {
	ch  chan struct{}
	err error
}

func (g *pullGroup) do(key string, fn func() error) *pullCall {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.calls[key]; ok {
		return c
	}
	if g.calls == nil {
		g.calls = make(map[string]*pullCall)
	}
	c := &pullCall{ch: make(chan struct{})}
	g.calls[key] = c
	go func() {
		c.err = fn()
		g.mu.Lock()
		delete(g.calls, key)
		g.mu.Unlock()
		close(c.ch)
	}()
	return c
}

// reconcileBlobs pulls every referenced blob this node lacks: after an
// upload to another node, after a restart, after a snapshot restore. It runs
// when the state changes and every 30 seconds.
func (n *Node) reconcileBlobs() {
	retryAt := map[string]time.Time{}
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		changed := n.fsm.Changed()
		select {
		case <-n.ctx.Done():
			return
		case <-changed:
			// Let a burst of changes settle.
			select {
			case <-time.After(200 * time.Millisecond):
			case <-n.ctx.Done():
				return
			}
		case <-tick.C:
		}
		sources := n.peerHTTPAddrs()
		if len(sources) == 0 {
			continue
		}
		for dg, size := range n.fsm.State().Snapshot().ReferencedBlobs() {
			d, err := digest.Parse(dg)
			if err != nil || n.blobs.Has(d) || time.Now().Before(retryAt[dg]) {
				continue
			}
			if err := n.pullBlob(n.ctx, &droverv1.BlobRef{Digest: dg, SizeBytes: size}, sources); err != nil {
				n.logger.Warn("cannot fetch a referenced blob yet", "digest", dg, "err", err)
				retryAt[dg] = time.Now().Add(30 * time.Second)
				continue
			}
			delete(retryAt, dg)
		}
	}
}

// collectBlobs removes blobs that no version or data set refers to and that
// are older than the grace period. It only trusts a state that has caught
// up with the leader (a linearizable read), so that a node replaying its log
// after a restart does not mistake a referenced blob for garbage.
func (n *Node) collectBlobs() {
	tick := time.NewTicker(n.cfg.BlobGCInterval)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		if removed, err := n.CollectBlobs(n.ctx); err != nil {
			n.logger.Warn("blob collection skipped", "err", err)
		} else if removed > 0 {
			n.logger.Info("collected unreferenced blobs", "count", removed)
		}
	}
}

// CollectBlobs runs one pass of the blob collector now and returns how many
// blobs it removed.
func (n *Node) CollectBlobs(ctx context.Context) (int, error) {
	view, _, err := n.read(ctx, nil)
	if err != nil {
		return 0, err
	}
	referenced := view.ReferencedBlobs()
	removed := 0
	for info, err := range n.blobs.All() {
		if err != nil {
			return removed, err
		}
		if _, ok := referenced[info.Digest.String()]; ok {
			continue
		}
		n.gcMu.Lock()
		fi, gone, err := n.blobs.Collect(info.Digest, n.now().Add(-n.cfg.BlobGCGrace))
		n.gcMu.Unlock()
		if err != nil {
			return removed, err
		}
		if gone {
			removed++
			n.metrics.blobGC.Inc()
			n.logger.Info("collected an unreferenced blob", "digest", info.Digest, "bytes", fi.Size(), "age", n.now().Sub(fi.ModTime()).Round(time.Second))
		}
	}
	return removed, nil
}

// writeHTTPError writes err as Connect-shaped JSON with the HTTP status
// Connect uses for its code.
func writeHTTPError(w http.ResponseWriter, err error) {
	err = connectError(err)
	writeHTTPErrorStatus(w, httpStatus(connect.CodeOf(err)), err)
}

func writeHTTPErrorStatus(w http.ResponseWriter, status int, err error) {
	ce, ok := errors.AsType[*connect.Error](err)
	msg := "internal error"
	if ok {
		msg = ce.Message()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": connect.CodeOf(err).String(), "message": msg})
}

func httpStatus(code connect.Code) int {
	switch code {
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeOutOfRange:
		return http.StatusBadRequest
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeAlreadyExists, connect.CodeAborted:
		return http.StatusConflict
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeCanceled:
		return 499
	}
	return http.StatusInternalServerError
}

// throttled reads at most rate bytes a second.
type throttled struct {
	r     io.ReadSeeker
	rate  int64
	start time.Time
	n     int64
}

func (t *throttled) Read(p []byte) (int, error) {
	if t.start.IsZero() {
		t.start = time.Now()
	}
	if chunk := max(t.rate/10, 1); int64(len(p)) > chunk {
		p = p[:chunk]
	}
	k, err := t.r.Read(p)
	t.n += int64(k)
	if ahead := time.Duration(float64(t.n)/float64(t.rate)*float64(time.Second)) - time.Since(t.start); ahead > 0 {
		time.Sleep(ahead)
	}
	return k, err
}

func (t *throttled) Seek(offset int64, whence int) (int64, error) {
	t.start, t.n = time.Time{}, 0
	return t.r.Seek(offset, whence)
}
