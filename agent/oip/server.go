package oip

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"
)

// Backend is what the HTTP handler serves: the agent's loaded models, or
// anything else that answers the protocol.
type Backend interface {
	// Ready reports whether the server is ready for inference.
	Ready() bool
	// Metadata describes the server.
	Metadata() ServerMetadata
	// Model returns a model by name and version ("" for the one the
	// backend routes to), or an error wrapping ErrModelNotFound.
	Model(name, version string) (Model, error)
}

// Model is one servable model (or a model's routed versions).
type Model interface {
	Metadata() ModelMetadata
	Ready() bool
	// Infer answers a request that has passed the decoder. An error
	// wrapping a *RequestError is the caller's fault (400), one wrapping
	// ErrModelNotReady is 503, any other 500.
	Infer(ctx context.Context, r *InferRequest) (*InferResponse, error)
}

// Errors a Backend or Model returns.
var (
	ErrModelNotFound = errors.New("model not found")
	ErrModelNotReady = errors.New("model not ready")
)

// DefaultMaxBody bounds an inference request's body.
const DefaultMaxBody = 64 << 20

// Handler serves the protocol's HTTP/JSON endpoints under /v2 from a
// backend: health, server and model metadata, model readiness, and
// inference by model and optional version.
type Handler struct {
	Backend Backend
	// MaxBody bounds a request body (DefaultMaxBody when zero); a larger
	// one gets 413.
	MaxBody int64
	// OnError, if set, is told of every request refused, with its status:
	// for counting.
	OnError func(status int, err error)
	// Observe, if set, is told of every inference request when it has
	// been answered.
	Observe func(Observation)

	mux *http.ServeMux
}

// NewHandler returns a handler serving the backend.
func NewHandler(b Backend) *Handler {
	h := &Handler{Backend: b, mux: http.NewServeMux()}
	h.handle("GET", "/v2/health/live", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"live": true})
	})
	h.handle("GET", "/v2/health/ready", func(w http.ResponseWriter, _ *http.Request) {
		ready := h.Backend.Ready()
		// The protocol: 200 means ready, a 4xx not.
		writeJSON(w, statusFor(ready), map[string]bool{"ready": ready})
	})
	h.handle("GET", "/v2", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, h.Backend.Metadata())
	})
	for _, prefix := range []string{"/v2/models/{name}", "/v2/models/{name}/versions/{version}"} {
		h.handle("GET", prefix, h.modelMetadata)
		h.handle("GET", prefix+"/ready", h.modelReady)
		h.handle("POST", prefix+"/infer", h.infer)
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, http.StatusNotFound, fmt.Errorf("no endpoint %s", r.URL.Path))
	})
	return h
}

// handle registers fn for one method on a path; another method gets 405
// in the protocol's error shape.
func (h *Handler) handle(method, path string, fn http.HandlerFunc) {
	h.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && !(method == "GET" && r.Method == "HEAD") {
			w.Header().Set("Allow", method)
			h.fail(w, http.StatusMethodNotAllowed, fmt.Errorf("%s takes %s, not %s", r.URL.Path, method, r.Method))
			return
		}
		fn(w, r)
	})
}

func statusFor(ready bool) int {
	if ready {
		return http.StatusOK
	}
	return http.StatusBadRequest
}

// ServeHTTP serves the protocol.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func (h *Handler) model(w http.ResponseWriter, r *http.Request) (Model, bool) {
	m, err := h.Backend.Model(r.PathValue("name"), r.PathValue("version"))
	if err != nil {
		h.fail(w, statusOf(err), err)
		return nil, false
	}
	return m, true
}

func (h *Handler) modelMetadata(w http.ResponseWriter, r *http.Request) {
	if m, ok := h.model(w, r); ok {
		writeJSON(w, http.StatusOK, m.Metadata())
	}
}

func (h *Handler) modelReady(w http.ResponseWriter, r *http.Request) {
	if m, ok := h.model(w, r); ok {
		ready := m.Ready()
		writeJSON(w, statusFor(ready), ModelReady{Name: r.PathValue("name"), Ready: ready})
	}
}

func (h *Handler) infer(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	obs := Observation{Model: r.PathValue("name"), Version: r.PathValue("version")}
	obs.Status, obs.Err = h.serveInfer(w, r, &obs)
	if obs.Err != nil {
		h.fail(w, obs.Status, obs.Err)
	}
	if h.Observe != nil {
		obs.Duration = time.Since(start)
		h.Observe(obs)
	}
}

// serveInfer answers an inference request, filling in obs as it learns,
// and returns the status it wrote, or the status and error to write.
func (h *Handler) serveInfer(w http.ResponseWriter, r *http.Request, obs *Observation) (int, error) {
	m, err := h.Backend.Model(r.PathValue("name"), r.PathValue("version"))
	if err != nil {
		return statusOf(err), err
	}
	limit := h.MaxBody
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return http.StatusRequestEntityTooLarge, fmt.Errorf("the request is larger than %d bytes", limit)
		}
		return http.StatusBadRequest, fmt.Errorf("reading the request: %w", err)
	}
	req, err := DecodeInferRequest(body)
	if err != nil {
		return http.StatusBadRequest, err
	}
	obs.Request = req
	if shape := req.Inputs[0].Shape; len(shape) > 0 {
		obs.Rows = int(shape[0])
	}
	var md ModelMetadata
	if len(req.Outputs) > 0 { // metadata is built on demand: not on the hot path
		md = m.Metadata()
	}
	for i, o := range req.Outputs {
		if !slices.ContainsFunc(md.Outputs, func(t TensorMetadata) bool { return t.Name == o.Name }) {
			return http.StatusBadRequest, &RequestError{Field: fmt.Sprintf("outputs[%d].name", i), Msg: fmt.Sprintf("%q is not an output of %s", o.Name, md.Name)}
		}
	}
	resp, err := m.Infer(r.Context(), req)
	if err != nil {
		if ve, ok := errors.AsType[*VersionError](err); ok {
			obs.Version = ve.Version
		}
		return statusOf(err), err
	}
	obs.Version, obs.Response = resp.ModelVersion, resp
	if len(req.Outputs) > 0 {
		resp.Outputs = slices.DeleteFunc(resp.Outputs, func(t *Tensor) bool {
			return !slices.ContainsFunc(req.Outputs, func(o RequestedOutput) bool { return o.Name == t.Name })
		})
	}
	resp.ID = req.ID
	b, err := json.Marshal(resp)
	if err != nil {
		return http.StatusInternalServerError, fmt.Errorf("encoding the response: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
	return http.StatusOK, nil
}

// VersionError is an inference error of a known version: a Model that
// routes requests between versions returns it, so that a failure is counted
// against the version that failed.
type VersionError struct {
	Version string
	Err     error
}

func (e *VersionError) Error() string { return e.Err.Error() }
func (e *VersionError) Unwrap() error { return e.Err }

// Observation describes one inference request, for metrics.
type Observation struct {
	Model string
	// Version is the version that answered, or the one asked for when the
	// request failed ("" when it named none).
	Version  string
	Status   int
	Rows     int // the first input's rows; 0 when not decoded
	Duration time.Duration
	Err      error // why it failed, or nil
	// The decoded request and the response sent, when there was one; they
	// must not be changed.
	Request  *InferRequest
	Response *InferResponse
}

// statusOf maps an error to the protocol's HTTP status.
func statusOf(err error) int {
	var re *RequestError
	switch {
	case errors.As(err, &re):
		return http.StatusBadRequest
	case errors.Is(err, ErrModelNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrModelNotReady):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func (h *Handler) fail(w http.ResponseWriter, status int, err error) {
	if h.OnError != nil {
		h.OnError(status, err)
	}
	writeJSON(w, status, ErrorBody{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding the response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
