package procserve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/droverhq/drover/agent/oip"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
)

const (
	// maxResponseBytes bounds a model server's answer to an inference.
	maxResponseBytes = 256 << 20
	// maxErrorMessage bounds the part of an error answer quoted in errors.
	maxErrorMessage = 1024
	// metadataTimeout bounds the model metadata request of a Load.
	metadataTimeout = 10 * time.Second
)

// ServerError is a model server's answer other than 200 OK. It unwraps to
// ErrBadRequest for a 4xx status and to ErrUnavailable for any other.
type ServerError struct {
	// Status is the HTTP status code.
	Status int
	// Message is the server's {"error": "..."} message, or the start of its
	// body when it has none.
	Message string
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("model server answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

func (e *ServerError) Unwrap() error {
	if e.Status >= 400 && e.Status < 500 {
		return ErrBadRequest
	}
	return ErrUnavailable
}

// newServerError reads the protocol's error shape from an answer's body.
func newServerError(status int, body []byte) *ServerError {
	var eb oip.ErrorBody
	msg := ""
	if json.Unmarshal(body, &eb) == nil && eb.Error != "" {
		msg = eb.Error
	} else {
		msg = strings.TrimSpace(string(body))
	}
	if len(msg) > maxErrorMessage {
		msg = strings.ToValidUTF8(msg[:maxErrorMessage], "") + "…"
	}
	if msg == "" {
		msg = "(no message)"
	}
	return &ServerError{Status: status, Message: msg}
}

// infer sends the batch to the model's server as an OIP inference request
// and converts its answer.
func (s *Server) infer(ctx context.Context, baseURL, name string, req *runnerv1.PredictRequest) (*runnerv1.PredictResponse, error) {
	body, err := encodeInferRequest(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v2/models/"+url.PathEscape(name)+"/infer", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, ctx.Err()
	case err != nil:
		return nil, fmt.Errorf("%w: reading the answer: %w", ErrUnavailable, err)
	case resp.StatusCode != http.StatusOK:
		return nil, newServerError(resp.StatusCode, b)
	case len(b) > maxResponseBytes:
		return nil, fmt.Errorf("model server's answer is over %d MiB", maxResponseBytes>>20)
	}
	return decodeInferResponse(b, req.GetRows())
}

// encodeInferRequest writes the batch as an OIP inference request, every
// tensor's data flat.
func encodeInferRequest(req *runnerv1.PredictRequest) ([]byte, error) {
	if len(req.GetInputs()) == 0 {
		return nil, errors.New("no inputs")
	}
	var b bytes.Buffer
	b.WriteString(`{"inputs":[`)
	for i, in := range req.GetInputs() {
		if i > 0 {
			b.WriteByte(',')
		}
		t := oip.Tensor{Name: in.GetName(), Datatype: oip.Datatype(in.GetDatatype()), Shape: in.GetShape(),
			Numbers: in.GetNumbers(), Strings: in.GetStrings()}
		if t.Shape == nil {
			t.Shape = []int64{} // a scalar
		}
		tb, err := t.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("inputs[%d]: %w", i, err)
		}
		b.Write(tb)
	}
	b.WriteString(`]}`)
	return b.Bytes(), nil
}

// decodeInferResponse decodes an OIP inference response strictly (every
// output's data checked against its datatype and shape) and checks that
// every output has a row for each of the request's rows.
func decodeInferResponse(b []byte, rows int64) (*runnerv1.PredictResponse, error) {
	var r oip.InferResponse
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("model server's answer is not an inference response: %w", err)
	}
	if len(r.Outputs) == 0 {
		return nil, errors.New("model server's answer has no outputs")
	}
	resp := &runnerv1.PredictResponse{Outputs: make([]*runnerv1.Tensor, 0, len(r.Outputs))}
	for _, t := range r.Outputs {
		if t == nil {
			return nil, errors.New("model server's answer has a null output")
		}
		if rows > 0 && (len(t.Shape) == 0 || t.Shape[0] != rows) {
			return nil, fmt.Errorf("model server's output %q has shape %v for %d rows", t.Name, t.Shape, rows)
		}
		resp.Outputs = append(resp.Outputs, &runnerv1.Tensor{Name: t.Name, Datatype: string(t.Datatype),
			Shape: t.Shape, Numbers: t.Numbers, Strings: t.Strings})
	}
	return resp, nil
}

// outputs asks the model's server for the model's metadata and returns the
// outputs it declares; none when the server does not say.
func (in *instance) outputs(ctx context.Context, p *process) []*runnerv1.TensorInfo {
	md, err := in.srv.metadata(ctx, p.baseURL, in.launch.name)
	if err != nil {
		in.logger.Warn("no model metadata from the model server; its outputs are not declared", "err", err)
		return nil
	}
	out := make([]*runnerv1.TensorInfo, 0, len(md.Outputs))
	for _, o := range md.Outputs {
		out = append(out, &runnerv1.TensorInfo{Name: o.Name, Datatype: string(o.Datatype), Shape: o.Shape})
	}
	return out
}

// metadata gets GET /v2/models/{name}.
func (s *Server) metadata(ctx context.Context, baseURL, name string) (*oip.ModelMetadata, error) {
	ctx, cancel := context.WithTimeout(ctx, metadataTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/v2/models/"+url.PathEscape(name), nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		err := newServerError(resp.StatusCode, b)
		if resp.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("%w (is the model served under another name? set the load parameter %s)", err, ParamModelName)
		}
		return nil, err
	}
	var md oip.ModelMetadata
	if err := json.Unmarshal(b, &md); err != nil {
		return nil, fmt.Errorf("model metadata: %w", err)
	}
	for i, o := range md.Outputs {
		if o.Name == "" || !o.Datatype.Valid() {
			return nil, fmt.Errorf("model metadata: outputs[%d]: want a name and one of the protocol's datatypes, not %q %q", i, o.Name, o.Datatype)
		}
	}
	return &md, nil
}
