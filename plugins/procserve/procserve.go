// Package procserve is the process server, a built-in runner that serves a
// model through any model server process that speaks the Open Inference
// Protocol over HTTP/JSON (MLServer, a Triton or KServe image run by
// hand, the Python example in plugins/examples/sklearn, ...).
//
// For every model it loads, a Server starts the configured command on a
// 127.0.0.1 port it picks, waits until GET /v2/health/ready answers 200,
// and then fronts the process: Predict becomes POST
// /v2/models/{name}/infer over a keep-alive connection. A process that
// dies is started again with a back-off, and Unload stops it and every
// process it started.
//
// # The command
//
// The command comes from the agent's configuration (Config.Command),
// never from a hub's load request. Whoever can push a model version must
// not be able to choose what runs on a GPU host: the request only fills
// placeholders inside arguments the operator wrote, and its parameters
// reach the process as data in DROVER_PARAMS. Each argument may hold
// these placeholders, replaced inside that one argument and never passed
// through a shell:
//
//	{port}      the TCP port the server must listen on, on 127.0.0.1
//	{artifact}  the path of the verified artifact on the agent's disk
//	{model}     the load id: the agent's name for this loaded model
//	{name}      the model's name at the server (see below)
//	{format}    the artifact's format
//
// Since {format} and {name} come from the model version, prefer the form
// "--flag={format}" over a separate argument.
//
// The process gets a small environment: PATH, HOME and LANG from the
// agent's, then Config.Env, then DROVER_PORT, DROVER_ARTIFACT,
// DROVER_MODEL, DROVER_MODEL_NAME and DROVER_FORMAT (as the placeholders),
// DROVER_PARAMS (the load request's parameters as a JSON object) and,
// when the version has a feature schema, DROVER_SCHEMA (the schema in
// protojson).
//
// # The model's name at the server
//
// An OIP server may serve several models; requests go to the one named by
// the load parameter "model_name", or "model" when there is none. The
// outputs a Load reports come from GET /v2/models/{name}; a server that
// does not answer it loads with no outputs declared.
//
// # Failures
//
// A Predict error wraps ErrBadRequest when the server refused the request
// with a 4xx answer, and ErrUnavailable when it answered 5xx, could not be
// reached, or is restarting; both carry the server's {"error": "..."}
// message when there is one. If the process exits while serving, Alive
// turns false at once, Predict fails fast with ErrUnavailable, and the
// process is started again after a back-off that doubles from 1 s to a
// minute while it keeps dying and resets once it has stayed ready for a
// minute. The Server never panics or exits with its processes. Unload
// (and Close, for every model) sends SIGTERM to the process group, waits
// StopTimeout for the group to be gone, then sends SIGKILL, so that no
// process the server started outlives its model.
package procserve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
)

// Defaults for the Config's durations.
const (
	DefaultReadyTimeout = 60 * time.Second
	DefaultStopTimeout  = 10 * time.Second
)

// DefaultModelName is the model's name at the server when the load
// request has no "model_name" parameter.
const DefaultModelName = "model"

// ParamModelName is the load parameter that names the model at the
// server.
const ParamModelName = "model_name"

// Sentinel errors a Predict error wraps, for the agent to map to HTTP 400
// and 503.
var (
	// ErrBadRequest is a request the model server refused (a 4xx answer).
	ErrBadRequest = errors.New("model server refused the request")
	// ErrUnavailable is a model server that cannot answer now: it answered
	// 5xx, could not be reached, or is being restarted.
	ErrUnavailable = errors.New("model server unavailable")
	// ErrNotLoaded is a Predict for an id that is not loaded.
	ErrNotLoaded = errors.New("model not loaded")
)

// Config says how to start a model server.
type Config struct {
	// Command is the model server's argv, with placeholders (see the
	// package documentation). Command[0] is looked up in PATH when it has
	// no slash.
	Command []string
	// Dir is the process's working directory; empty means the agent's.
	Dir string
	// Env holds extra "KEY=value" variables for the process.
	Env []string
	// ReadyTimeout bounds how long a start may take to answer ready;
	// DefaultReadyTimeout when zero.
	ReadyTimeout time.Duration
	// StopTimeout is how long a process has to exit after SIGTERM before
	// it and its process group are killed; DefaultStopTimeout when zero.
	StopTimeout time.Duration
}

// Server is the process server: an sdk.Server that runs one model server
// process per loaded model. It is safe for concurrent use.
type Server struct {
	cfg    Config
	logger *slog.Logger
	client *http.Client

	// Restart back-off and the time up after which it resets; fields so
	// that the tests can shorten them.
	backoffMin, backoffMax, stableAfter time.Duration
	// probeEvery is the readiness poll's interval.
	probeEvery time.Duration

	mu     sync.Mutex
	models map[string]*instance
}

// New returns a Server that starts model servers as cfg says. A nil logger
// discards the log.
func New(cfg Config, logger *slog.Logger) *Server {
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.Command = slices.Clone(cfg.Command)
	cfg.Env = slices.Clone(cfg.Env)
	return &Server{
		cfg:         cfg,
		logger:      logger,
		client:      newHTTPClient(),
		backoffMin:  time.Second,
		backoffMax:  time.Minute,
		stableAfter: time.Minute,
		probeEvery:  50 * time.Millisecond,
		models:      make(map[string]*instance),
	}
}

// newHTTPClient returns the client for the model servers: keep-alive
// connections, enough of them idle per server for concurrent predictions,
// no proxy (they are all on 127.0.0.1) and no compression.
func newHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
}

// launch is what a model's process is started from: everything but the
// port, which each start picks afresh.
type launch struct {
	id       string
	name     string // the model's name at the server
	artifact string
	format   string
	params   string // JSON
	schema   string // protojson; empty when none
}

// modelNameRE is what a model's name at the server may look like: it goes
// into URL paths and, through {name}, into argv.
var modelNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Load starts the model server for req.Id, waits until it is ready, and
// reports the outputs its model metadata declares. It fails when the
// process exits first (with its last lines of output), or when it is not
// ready within the ready timeout or before ctx ends (the process is then
// killed).
func (s *Server) Load(ctx context.Context, req *runnerv1.LoadRequest) (*runnerv1.LoadResponse, error) {
	if len(s.cfg.Command) == 0 {
		return nil, errors.New("process server: no command configured")
	}
	l, err := newLaunch(req)
	if err != nil {
		return nil, err
	}
	in := &instance{srv: s, launch: l, done: make(chan struct{}),
		logger: s.logger.With("model", l.id, "server_model", l.name)}
	in.ctx, in.cancel = context.WithCancel(context.Background())

	s.mu.Lock()
	if _, ok := s.models[l.id]; ok {
		s.mu.Unlock()
		in.cancel()
		return nil, fmt.Errorf("model %q is already loaded", l.id)
	}
	s.models[l.id] = in
	s.mu.Unlock()

	// The start ends with ctx or with an Unload, whichever comes first.
	startCtx, stop := context.WithCancel(ctx)
	unhook := context.AfterFunc(in.ctx, stop)
	p, err := in.start(startCtx)
	unhook()
	stop()
	if err != nil {
		s.mu.Lock()
		if s.models[l.id] == in {
			delete(s.models, l.id)
		}
		s.mu.Unlock()
		in.cancel()
		close(in.done)
		return nil, fmt.Errorf("load %q: %w", l.id, err)
	}
	outputs := in.outputs(ctx, p)
	in.current.Store(p)
	go in.supervise(p)
	return &runnerv1.LoadResponse{Outputs: outputs}, nil
}

func newLaunch(req *runnerv1.LoadRequest) (launch, error) {
	l := launch{id: req.GetId(), artifact: req.GetArtifactPath(), format: req.GetFormat(), name: DefaultModelName}
	if l.id == "" {
		return l, errors.New("load: empty model id")
	}
	if n, ok := req.GetParams()[ParamModelName]; ok {
		if !modelNameRE.MatchString(n) {
			return l, fmt.Errorf("load %q: parameter %s: %q is not a model name (letters, digits, '.', '_' and '-', not first)", l.id, ParamModelName, n)
		}
		l.name = n
	}
	if strings.HasPrefix(l.format, "-") || strings.ContainsFunc(l.format, isControl) {
		return l, fmt.Errorf("load %q: format %q is not a format name", l.id, l.format)
	}
	params := req.GetParams()
	if params == nil {
		params = map[string]string{}
	}
	b, err := json.Marshal(params)
	if err != nil {
		return l, fmt.Errorf("load %q: params: %w", l.id, err)
	}
	l.params = string(b)
	if req.GetSchema() != nil {
		sb, err := protojson.Marshal(req.GetSchema())
		if err != nil {
			return l, fmt.Errorf("load %q: schema: %w", l.id, err)
		}
		l.schema = string(sb)
	}
	return l, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// Predict sends the batch to the model's server and returns its outputs.
// A model whose server is restarting fails at once with ErrUnavailable.
func (s *Server) Predict(ctx context.Context, req *runnerv1.PredictRequest) (*runnerv1.PredictResponse, error) {
	s.mu.Lock()
	in := s.models[req.GetId()]
	s.mu.Unlock()
	if in == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotLoaded, req.GetId())
	}
	p := in.current.Load()
	if p == nil || p.hasExited() {
		return nil, fmt.Errorf("model %q: %w: its server is not ready (starting or restarting)", req.GetId(), ErrUnavailable)
	}
	resp, err := s.infer(ctx, p.baseURL, in.launch.name, req)
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", req.GetId(), err)
	}
	return resp, nil
}

// Unload stops the model's server: SIGTERM to its process group, then,
// after the stop timeout, SIGKILL. It returns once every process of the
// group is gone, or when ctx ends (the stop then goes on). Unloading an id
// that is not loaded does nothing.
func (s *Server) Unload(ctx context.Context, id string) error {
	s.mu.Lock()
	in := s.models[id]
	delete(s.models, id)
	s.mu.Unlock()
	if in == nil {
		return nil
	}
	in.cancel()
	select {
	case <-in.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("unload %q: %w (the model server is still being stopped)", id, ctx.Err())
	}
}

// Close unloads every model, stopping their servers at once.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	ids := slices.Collect(maps.Keys(s.models))
	s.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Go(func() { errs[i] = s.Unload(ctx, id) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Alive reports whether the model's server process is running and has
// answered ready since it last started.
func (s *Server) Alive(id string) bool {
	s.mu.Lock()
	in := s.models[id]
	s.mu.Unlock()
	if in == nil {
		return false
	}
	p := in.current.Load()
	return p != nil && !p.hasExited()
}

// instance is one loaded model and the process serving it.
type instance struct {
	srv    *Server
	launch launch
	logger *slog.Logger

	// ctx ends when the model is unloaded; done is closed once its process
	// is gone and nothing will start another.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	// current is the process answering predictions, nil while none is
	// ready.
	current atomic.Pointer[process]
}
