package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/agent/reconcile"
	"github.com/droverhq/drover/internal/buildinfo"
	"github.com/droverhq/drover/internal/sketch"
	"github.com/droverhq/drover/plugins/native"
	"github.com/droverhq/drover/plugins/procserve"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// NativeFormat is the artifact format of the built-in native runner.
const NativeFormat = "drover-native"

// ServingOptions tune the prediction path.
type ServingOptions struct {
	// BatchMaxRows bounds the rows sent to a runner plugin in one call.
	// Requests that arrive while a version's runner is busy are queued
	// and sent together, up to this many rows. 1 turns batching off.
	// Default 64.
	BatchMaxRows int
	// BatchMaxDelay is how long a batch may wait for more requests once a
	// runner is free. Zero, the default, never waits: a request to an idle
	// runner goes at once, and batches form only from what queues while
	// the runner is busy, so batching adds no latency at low load.
	BatchMaxDelay time.Duration
	// BatchInFlight bounds the batches one version has at its runner at
	// once. Default 2: one being answered while the next is sent.
	BatchInFlight int
	// DrainTimeout bounds how long a version taken out of service waits
	// for the requests it is answering before it is unloaded. Default 30 s.
	DrainTimeout time.Duration
	// ShadowConcurrency bounds the mirrored requests being answered by
	// shadow versions at once; beyond it mirrors are dropped (and
	// counted), never queued behind the caller. Default 64.
	ShadowConcurrency int
	// ProcessServers are the model server commands the agent may run, by
	// the artifact format each serves (see plugins/procserve). A format
	// named here is served by its process, before any plugin.
	ProcessServers map[string]procserve.Config
}

func (o *ServingOptions) setDefaults() {
	if o.BatchMaxRows <= 0 {
		o.BatchMaxRows = 64
	}
	if o.BatchInFlight <= 0 {
		o.BatchInFlight = 2
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 30 * time.Second
	}
	if o.ShadowConcurrency <= 0 {
		o.ShadowConcurrency = 64
	}
}

// servingRuntime loads the versions the reconciler asks for and serves
// them over the Open Inference Protocol (it is the oip.Backend of the
// agent's /v2 endpoints). Artifacts of the native format are served by the
// in-process native runner, those of a format a runner plugin serves by
// that plugin; a version of any other format is held as loaded but
// answers 503 until a runner for its format is installed. The reconciler
// has already verified the artifact's digest when Load is called.
//
// Loads and unloads are serialised; each publishes an immutable routing
// table that the prediction path reads without a lock. A version replaced
// or removed leaves the table first and is unloaded only once the
// requests it was answering have finished (drained), so a version switch
// under load drops no request.
type servingRuntime struct {
	plugins   *pluginHost               // nil without a plugin directory
	processes map[string]*processRunner // by the format each serves
	logger    *slog.Logger
	opts      ServingOptions
	shadows   *shadowStats
	batches   *prometheus.HistogramVec // rows per batch sent to a runner

	mu       sync.Mutex // serialises Load and Unload
	loaded   map[reconcile.Key]*servedVersion
	retiring map[retiredKey]*servedVersion // replaced, not yet unloaded
	routes   atomic.Pointer[map[string]*route]

	// loads numbers loads, so that each gets a runner id of its own: a
	// copy of a version being let go never unloads a newer copy.
	loads atomic.Uint64
	// unloading counts the copies retire is letting go in the background.
	unloading sync.WaitGroup
}

type retiredKey struct {
	key     reconcile.Key
	version uint64
}

// servedVersion is one loaded version.
type servedVersion struct {
	model   string
	version uint64
	name    string // the version as the protocol names it
	role    droverv1.AssignmentRole
	weight  uint32 // written under the runtime's mu; routes copy it
	format  string
	path    string
	schema  *oip.Schema
	native  *native.Model // for the native format
	// assignment is what the version was loaded as.
	assignment *droverv1.DesiredAssignment
	// profile is the version's reference profile made ready to judge
	// drift against; nil without.
	profile *sketch.Reference

	runner   modelRunner // for a format a plugin or process server serves
	runnerID string      // the runner's name for this load of the version
	outputs  []*runnerv1.TensorInfo
	batch    *batcher // nil when batching is off

	// inflight counts the requests being answered; the closing bit is
	// set when the version is taken out of service, after which it takes
	// no new request, and drained is closed when the last one finishes.
	inflight  atomic.Int64
	drained   chan struct{}
	drainOnce sync.Once
}

const closingBit = int64(1) << 62

// acquire admits a request, or reports false when the version is being
// taken out of service (the caller routes again).
func (v *servedVersion) acquire() bool {
	for {
		n := v.inflight.Load()
		if n&closingBit != 0 {
			return false
		}
		if v.inflight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (v *servedVersion) release() {
	if v.inflight.Add(-1) == closingBit {
		v.drainOnce.Do(func() { close(v.drained) })
	}
}

// drain stops admitting requests and waits, up to ctx, for those admitted
// to finish.
func (v *servedVersion) drain(ctx context.Context) error {
	if v.inflight.Or(closingBit)&^closingBit == 0 {
		v.drainOnce.Do(func() { close(v.drained) })
	}
	select {
	case <-v.drained:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%d requests still in flight: %w", v.inflight.Load()&^closingBit, ctx.Err())
	}
}

func newServingRuntime(host *pluginHost, logger *slog.Logger, opts ServingOptions) *servingRuntime {
	opts.setDefaults()
	r := &servingRuntime{plugins: host, logger: logger, opts: opts, shadows: newShadowStats(opts.ShadowConcurrency),
		processes: map[string]*processRunner{},
		batches: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "drover_agent_runner_batch_rows",
			Help:    "Rows per batch sent to a runner plugin, by model and version.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12), // 1 to 2048
		}, []string{"model", "version"}),
		loaded: map[reconcile.Key]*servedVersion{}, retiring: map[retiredKey]*servedVersion{}}
	for format, cfg := range opts.ProcessServers {
		r.processes[format] = &processRunner{format: format, srv: procserve.New(cfg, logger.With("process_server", format))}
	}
	r.routes.Store(&map[string]*route{})
	if host != nil {
		host.mu.Lock()
		host.onRegister = r.adopt
		host.mu.Unlock()
	}
	return r
}

// collectors are the runtime's metrics.
func (r *servingRuntime) collectors() []prometheus.Collector {
	return append(r.shadows.collectors(), r.batches)
}

// Load makes a version servable. A version loaded into a slot that holds
// another replaces it in the routing table at once; the one replaced keeps
// answering what it has been given until the reconciler unloads it.
func (r *servingRuntime) Load(ctx context.Context, a *droverv1.DesiredAssignment, path string) error {
	v := &servedVersion{model: a.GetModel(), version: a.GetVersion(), name: strconv.FormatUint(a.GetVersion(), 10),
		role: a.GetRole(), weight: a.GetWeight(), format: a.GetFormat(), path: path, drained: make(chan struct{})}
	if a.GetFormat() == NativeFormat || a.GetRunner() == "native" {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if v.native, err = native.LoadArtifact(b); err != nil {
			return err
		}
		fs := a.GetSchema()
		if len(fs.GetInputs()) == 0 {
			fs = nativeSchema(v.native)
		}
		if v.schema, err = oip.CompileSchema(fs); err != nil {
			return err
		}
	} else if a.GetSchema() != nil {
		var err error
		if v.schema, err = oip.CompileSchema(a.GetSchema()); err != nil {
			return err
		}
	}
	if b := a.GetReferenceProfile(); len(b) > 0 {
		p := &droverv1.ReferenceProfile{}
		if err := proto.Unmarshal(b, p); err != nil {
			// Served all the same; drift is not watched.
			r.logger.Warn("the version's reference profile does not parse; its drift is not watched", "model", v.model, "version", v.version, "err", err)
		} else {
			v.profile = sketch.NewReference(p)
		}
	}
	k := reconcile.Key{Model: a.GetModel(), Role: a.GetRole()}
	v.assignment = a
	if v.native == nil {
		if run := r.runnerFor(a.GetFormat()); run != nil {
			if err := r.attach(ctx, k, v, run); err != nil {
				return err
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.loaded[k]; old != nil && old != v {
		rk := retiredKey{k, old.version}
		switch prev := r.retiring[rk]; {
		case old.version == v.version:
			// The same version loaded again: the old copy goes at once,
			// after its requests. It has a runner id of its own, so
			// unloading it leaves the new copy be.
			defer r.retire(old)
		case prev != nil:
			// An older copy of the version replaced is still waiting to
			// be unloaded; this one takes its place.
			defer r.retire(prev)
			fallthrough
		default:
			r.retiring[rk] = old
		}
	}
	r.loaded[k] = v
	r.publish()
	return nil
}

// attach loads v into a runner, which serves it from then on.
func (r *servingRuntime) attach(ctx context.Context, k reconcile.Key, v *servedVersion, run modelRunner) error {
	a := v.assignment
	v.runner, v.runnerID = run, fmt.Sprintf("%s/v%d-%d", k, a.GetVersion(), r.loads.Add(1))
	resp, err := run.load(ctx, &runnerv1.LoadRequest{Id: v.runnerID, ArtifactPath: v.path, Format: a.GetFormat(), Schema: a.GetSchema(), Params: a.GetParams()})
	if err != nil {
		return err
	}
	v.outputs = resp.GetOutputs()
	if r.opts.BatchMaxRows > 1 {
		sizes := r.batches.WithLabelValues(v.model, v.name)
		v.batch = newBatcher(v.runnerID, func(ctx context.Context, req *runnerv1.PredictRequest) (*runnerv1.PredictResponse, error) {
			sizes.Observe(float64(req.GetRows()))
			return run.predict(ctx, req)
		}, r.opts)
	}
	return nil
}

// adopt loads, into a runner plugin that has just come up (one that failed
// its first start), the versions loaded while no runner served their
// format, which answered 503 until then. A version replaced meanwhile is
// left alone.
func (r *servingRuntime) adopt(formats []string) {
	type orphan struct {
		k reconcile.Key
		v *servedVersion
	}
	var orphans []orphan
	r.mu.Lock()
	for k, v := range r.loaded {
		if v.native == nil && v.runner == nil && slices.Contains(formats, v.format) {
			orphans = append(orphans, orphan{k, v})
		}
	}
	r.mu.Unlock()
	for _, o := range orphans {
		run := r.runnerFor(o.v.format)
		if run == nil {
			continue
		}
		nv := &servedVersion{model: o.v.model, version: o.v.version, name: o.v.name, role: o.v.role, weight: o.v.weight,
			format: o.v.format, path: o.v.path, schema: o.v.schema, profile: o.v.profile, assignment: o.v.assignment, drained: make(chan struct{})}
		if err := r.attach(context.Background(), o.k, nv, run); err != nil {
			r.logger.Warn("a runner came up but did not load a version of its format", "model", nv.model, "version", nv.version, "format", nv.format, "err", err)
			continue
		}
		r.mu.Lock()
		if r.loaded[o.k] != o.v { // replaced or unloaded meanwhile
			r.mu.Unlock()
			r.retire(nv)
			continue
		}
		nv.weight = o.v.weight // retuned meanwhile, perhaps
		r.loaded[o.k] = nv
		r.publish()
		r.mu.Unlock()
		r.retire(o.v)
		r.logger.Info("a runner came up and serves a version of its format now", "model", nv.model, "version", nv.version, "format", nv.format)
	}
}

// Retune applies what may change of a loaded version without loading it
// again: its traffic weight (a rollout's step moving a canary from 10 to
// 50 percent). It makes servingRuntime a reconcile.Retuner.
func (r *servingRuntime) Retune(k reconcile.Key, a *droverv1.DesiredAssignment) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v := r.loaded[k]; v != nil && v.version == a.GetVersion() && v.weight != a.GetWeight() {
		r.logger.Info("traffic weight changed", "model", k.Model, "role", k.Role, "version", v.version, "from", v.weight, "to", a.GetWeight())
		v.weight = a.GetWeight()
		r.publish()
	}
}

// Unload stops serving a version: it leaves the routing table, its
// requests in flight finish (up to the drain timeout), and then its runner
// frees it.
func (r *servingRuntime) Unload(ctx context.Context, k reconcile.Key, version uint64) error {
	r.mu.Lock()
	v := r.loaded[k]
	switch {
	case v != nil && v.version == version:
		delete(r.loaded, k)
		r.publish()
	default:
		rk := retiredKey{k, version}
		if v = r.retiring[rk]; v == nil {
			r.mu.Unlock()
			return nil
		}
		delete(r.retiring, rk)
	}
	r.mu.Unlock()
	return r.retireCtx(ctx, v)
}

func (r *servingRuntime) retire(v *servedVersion) {
	r.unloading.Go(func() { _ = r.retireCtx(context.Background(), v) })
}

func (r *servingRuntime) retireCtx(ctx context.Context, v *servedVersion) error {
	dctx, cancel := context.WithTimeout(ctx, r.opts.DrainTimeout)
	defer cancel()
	if err := v.drain(dctx); err != nil {
		r.logger.Warn("unloading a version before its requests finished", "model", v.model, "version", v.version, "err", err)
	}
	if v.batch != nil {
		v.batch.close()
	}
	if v.runner != nil {
		return v.runner.unload(context.WithoutCancel(ctx), v.runnerID)
	}
	return nil
}

// classes are a loaded native classifier's classes, in the order of its
// probabilities, or nil.
func (r *servingRuntime) classes(model, version string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, v := range r.loaded {
		if k.Model == model && v.name == version && v.native != nil {
			return v.native.Classes
		}
	}
	return nil
}

// profile is a loaded version's prepared reference profile, or nil.
func (r *servingRuntime) profile(model string, version uint64) *sketch.Reference {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, v := range r.loaded {
		if k.Model == model && v.version == version && v.profile != nil {
			return v.profile
		}
	}
	for _, v := range r.retiring {
		if v.model == model && v.version == version && v.profile != nil {
			return v.profile
		}
	}
	return nil
}

// runnerFor returns the runner serving an artifact format: a process
// server configured for it, else a plugin that serves it, else nil.
func (r *servingRuntime) runnerFor(format string) modelRunner {
	if p := r.processes[format]; p != nil {
		return p
	}
	if hp := r.plugins.forFormat(format); hp != nil {
		return hp
	}
	return nil
}

// close waits, up to ctx, for the copies being let go to be unloaded, and
// stops the process servers' processes.
func (r *servingRuntime) close(ctx context.Context) {
	unloaded := make(chan struct{})
	go func() {
		r.unloading.Wait()
		close(unloaded)
	}()
	select {
	case <-unloaded:
	case <-ctx.Done():
	}
	for _, p := range r.processes {
		_ = p.srv.Close(ctx)
	}
}

// publish rebuilds the routing table from the loaded versions. Called
// with mu held.
func (r *servingRuntime) publish() {
	routes := map[string]*route{}
	for _, k := range slices.SortedFunc(maps.Keys(r.loaded), func(a, b reconcile.Key) int {
		if a.Model != b.Model {
			if a.Model < b.Model {
				return -1
			}
			return 1
		}
		return int(a.Role) - int(b.Role)
	}) {
		v := r.loaded[k]
		rt := routes[k.Model]
		if rt == nil {
			rt = &route{rt: r, name: k.Model, byVersion: map[string]*versionModel{}}
			routes[k.Model] = rt
		}
		switch k.Role {
		case droverv1.AssignmentRole_ASSIGNMENT_ROLE_CANARY:
			rt.canary, rt.weight = v, v.weight
		case droverv1.AssignmentRole_ASSIGNMENT_ROLE_SHADOW:
			rt.shadow = v
		default:
			rt.primary = v
		}
		if !slices.Contains(rt.versions, v.name) {
			rt.versions = append(rt.versions, v.name)
		}
	}
	for _, rt := range routes {
		slices.SortFunc(rt.versions, func(a, b string) int {
			x, _ := strconv.ParseUint(a, 10, 64)
			y, _ := strconv.ParseUint(b, 10, 64)
			return int(x - y)
		})
		// A version asked for by number is served by its primary or
		// canary slot in preference to its shadow.
		for _, v := range []*servedVersion{rt.shadow, rt.canary, rt.primary} {
			if v != nil {
				rt.byVersion[v.name] = &versionModel{v: v, versions: rt.versions, logger: r.logger}
			}
		}
		rt.shadowStats = r.shadows
	}
	r.routes.Store(&routes)
}

// health reports whether a loaded version can answer, and if not, why.
func (r *servingRuntime) health(k reconcile.Key, version uint64) servingHealth {
	r.mu.Lock()
	v := r.loaded[k]
	r.mu.Unlock()
	switch {
	case v == nil || v.version != version:
		return servingHealth{why: "not loaded"}
	case v.native != nil:
		return servingHealth{ok: true}
	case v.runner != nil:
		return v.runner.health(v.runnerID)
	}
	return servingHealth{why: fmt.Sprintf("no runner serves format %q on this agent", v.format)}
}

// modelRunner serves loaded versions outside the agent's own code, a
// batch at a time: a runner plugin, or a process server.
type modelRunner interface {
	load(ctx context.Context, req *runnerv1.LoadRequest) (*runnerv1.LoadResponse, error)
	predict(ctx context.Context, req *runnerv1.PredictRequest) (*runnerv1.PredictResponse, error)
	unload(ctx context.Context, id string) error
	// health says whether the runner can answer for a loaded id.
	health(id string) servingHealth
	// String names the runner in errors.
	String() string
}

// processRunner serves a format through its configured model server
// process, one process per loaded version.
type processRunner struct {
	format string
	srv    *procserve.Server
}

func (p *processRunner) String() string { return fmt.Sprintf("the %s model server", p.format) }

func (p *processRunner) load(ctx context.Context, req *runnerv1.LoadRequest) (*runnerv1.LoadResponse, error) {
	return p.srv.Load(ctx, req)
}

func (p *processRunner) predict(ctx context.Context, req *runnerv1.PredictRequest) (*runnerv1.PredictResponse, error) {
	resp, err := p.srv.Predict(ctx, req)
	switch {
	case err == nil:
		return resp, nil
	case errors.Is(err, procserve.ErrBadRequest):
		return nil, &oip.RequestError{Msg: fmt.Sprintf("%s refused the request: %v", p, err)}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil, err
	}
	return nil, fmt.Errorf("%w: %s: %v", oip.ErrModelNotReady, p, err)
}

func (p *processRunner) unload(ctx context.Context, id string) error { return p.srv.Unload(ctx, id) }

func (p *processRunner) health(id string) servingHealth {
	if p.srv.Alive(id) {
		return servingHealth{ok: true}
	}
	return servingHealth{why: fmt.Sprintf("%s process for %s is down; restarting it", p, id)}
}

// servingHealth is whether a loaded version can answer.
type servingHealth struct {
	ok  bool
	why string // when not ok
	// incidents counts the times its runner was found dead or hung, the
	// last of which lastIncident describes.
	incidents    uint64
	lastIncident string
}

// nativeSchema is the schema of a native model pushed without one: its
// numeric features as FP64, its categorical ones as BYTES.
func nativeSchema(m *native.Model) *droverv1.FeatureSchema {
	fs := &droverv1.FeatureSchema{}
	for _, f := range m.Encoder.Features {
		in := &droverv1.Feature{Name: f.Name, Datatype: string(oip.FP64), Kind: droverv1.FeatureKind_FEATURE_KIND_NUMERIC}
		if f.Categorical {
			in.Datatype, in.Kind = string(oip.Bytes), droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL
		}
		fs.Inputs = append(fs.Inputs, in)
	}
	return fs
}

// Ready reports the agent ready to serve: it always is; each model says
// for itself.
func (r *servingRuntime) Ready() bool { return true }

// Metadata describes the agent as an inference server.
func (r *servingRuntime) Metadata() oip.ServerMetadata {
	return oip.ServerMetadata{Name: "drover-agent", Version: buildinfo.Version, Extensions: []string{}}
}

// Model finds a model's routed versions (version "") or one loaded
// version.
func (r *servingRuntime) Model(name, version string) (oip.Model, error) {
	rt := (*r.routes.Load())[name]
	if version == "" {
		if rt == nil || rt.primary == nil && rt.canary == nil {
			return nil, fmt.Errorf("%w: %s is not served here", oip.ErrModelNotFound, name)
		}
		return rt, nil
	}
	if m := rt.version(version); m != nil {
		return m, nil
	}
	return nil, fmt.Errorf("%w: %s version %s is not loaded here", oip.ErrModelNotFound, name, version)
}

// versionModel serves one loaded version over the protocol.
type versionModel struct {
	v        *servedVersion
	versions []string
	logger   *slog.Logger
}

// The native runner's outputs.
const (
	outputLabel         = "label"
	outputProbabilities = "probabilities"
	outputPrediction    = "prediction"
)

func (m *versionModel) Metadata() oip.ModelMetadata {
	md := oip.ModelMetadata{Name: m.v.model, Versions: m.versions, Platform: m.v.format, Inputs: []oip.TensorMetadata{}, Outputs: []oip.TensorMetadata{}}
	if m.v.schema != nil {
		md = m.v.schema.Metadata(m.v.model, m.v.format, m.versions)
	}
	if m.v.runner != nil {
		md.Outputs = []oip.TensorMetadata{}
		for _, o := range m.v.outputs {
			md.Outputs = append(md.Outputs, oip.TensorMetadata{Name: o.GetName(), Datatype: oip.Datatype(o.GetDatatype()), Shape: o.GetShape()})
		}
	}
	if n := m.v.native; n != nil {
		if n.Task == native.Classification {
			md.Outputs = []oip.TensorMetadata{
				{Name: outputLabel, Datatype: oip.Bytes, Shape: []int64{-1}},
				{Name: outputProbabilities, Datatype: oip.FP64, Shape: []int64{-1, int64(len(n.Classes))}},
			}
		} else {
			md.Outputs = []oip.TensorMetadata{{Name: outputPrediction, Datatype: oip.FP64, Shape: []int64{-1}}}
		}
	}
	return md
}

func (m *versionModel) Ready() bool { return m.v.ready() }

func (v *servedVersion) ready() bool {
	return v.native != nil || v.runner != nil && v.runner.health(v.runnerID).ok
}

// errRetired is infer's answer when the version left service between
// routing and admission: the caller routes again.
var errRetired = errors.New("version taken out of service")

func (m *versionModel) Infer(ctx context.Context, r *oip.InferRequest) (*oip.InferResponse, error) {
	resp, err := m.v.infer(ctx, r)
	switch {
	case errors.Is(err, errRetired):
		return nil, fmt.Errorf("%w: %s version %d is no longer loaded here", oip.ErrModelNotFound, m.v.model, m.v.version)
	case err != nil:
		return nil, &oip.VersionError{Version: m.v.name, Err: err}
	}
	return resp, nil
}

// infer answers a request with this version, or errRetired.
func (v *servedVersion) infer(ctx context.Context, r *oip.InferRequest) (*oip.InferResponse, error) {
	if !v.acquire() {
		return nil, errRetired
	}
	defer v.release()
	if v.runner != nil {
		return v.inferRunner(ctx, r)
	}
	n := v.native
	if n == nil {
		return nil, fmt.Errorf("%w: no runner serves format %q on this agent yet", oip.ErrModelNotReady, v.format)
	}
	rows, err := v.schema.Check(r)
	if err != nil {
		return nil, err
	}
	cols := make([]native.Column, len(n.Encoder.Features))
	for i, f := range n.Encoder.Features {
		cols[i] = column(f, r.Input(f.Name), rows)
	}
	out, err := n.Predict(cols)
	if errors.Is(err, native.ErrNotFinite) {
		return nil, &oip.RequestError{Field: "inputs", Msg: strings.TrimPrefix(err.Error(), "native: ")}
	}
	if err != nil {
		return nil, err
	}
	resp := &oip.InferResponse{ModelName: v.model, ModelVersion: v.name}
	if n.Task == native.Regression {
		resp.Outputs = []*oip.Tensor{{Name: outputPrediction, Datatype: oip.FP64, Shape: []int64{int64(rows)}, Numbers: out}}
		return resp, nil
	}
	k := len(n.Classes)
	labels := make([]string, rows)
	for i := range rows {
		labels[i] = n.Classes[argmax(out[i*k:(i+1)*k])]
	}
	resp.Outputs = []*oip.Tensor{
		{Name: outputLabel, Datatype: oip.Bytes, Shape: []int64{int64(rows)}, Strings: labels},
		{Name: outputProbabilities, Datatype: oip.FP64, Shape: []int64{int64(rows), int64(k)}, Numbers: out},
	}
	return resp, nil
}

// argmax returns the index of the largest probability, NaN aside: 0 when
// every one is NaN. (slices.Max is NaN when any value is, which
// slices.Index never finds.)
func argmax(p []float64) int {
	best := 0
	for i, x := range p {
		if x > p[best] || math.IsNaN(p[best]) && !math.IsNaN(x) {
			best = i
		}
	}
	return best
}

// column turns an input tensor (checked against the schema) into the
// native runner's column. A nullable feature left out is the training
// mean (numeric) or no category.
func column(f native.EncodedFeature, t *oip.Tensor, rows int) native.Column {
	c := native.Column{Name: f.Name, Categorical: f.Categorical}
	switch {
	case t == nil && f.Categorical:
		c.Strings = make([]string, rows)
	case t == nil:
		c.Numbers = slices.Repeat([]float64{f.Mean}, rows)
	case f.Categorical && t.Datatype == oip.Bytes:
		c.Strings = t.Strings
	case f.Categorical:
		c.Strings = make([]string, len(t.Numbers))
		for i, v := range t.Numbers {
			c.Strings[i] = strconv.FormatFloat(v, 'g', -1, 64)
		}
	default:
		c.Numbers = t.Numbers
	}
	return c
}

// inferRunner sends the request's rows to the version's runner: through
// the version's batcher, or as a batch of its own.
func (v *servedVersion) inferRunner(ctx context.Context, r *oip.InferRequest) (*oip.InferResponse, error) {
	rows := 0
	if v.schema != nil {
		var err error
		if rows, err = v.schema.Check(r); err != nil {
			return nil, err
		}
	} else if len(r.Inputs[0].Shape) > 0 {
		rows = int(r.Inputs[0].Shape[0])
	}
	inputs := make([]*runnerv1.Tensor, len(r.Inputs))
	for i, t := range r.Inputs {
		inputs[i] = &runnerv1.Tensor{Name: t.Name, Datatype: string(t.Datatype), Shape: t.Shape, Numbers: t.Numbers, Strings: t.Strings}
	}
	var outputs []*runnerv1.Tensor
	if v.batch != nil {
		var err error
		if outputs, err = v.batch.predict(ctx, inputs, rows); err != nil {
			return nil, err
		}
	} else {
		resp, err := v.runner.predict(ctx, &runnerv1.PredictRequest{Id: v.runnerID, Rows: int64(rows), Inputs: inputs})
		if err != nil {
			return nil, err
		}
		outputs = resp.GetOutputs()
	}
	out := &oip.InferResponse{ModelName: v.model, ModelVersion: v.name, Outputs: make([]*oip.Tensor, 0, len(outputs))}
	for _, t := range outputs {
		ot := &oip.Tensor{Name: t.GetName(), Datatype: oip.Datatype(t.GetDatatype()), Shape: t.GetShape(), Numbers: t.GetNumbers(), Strings: t.GetStrings()}
		if err := ot.Validate(); err != nil {
			return nil, fmt.Errorf("%s: output %s: %w", v.runner, t.GetName(), err)
		}
		out.Outputs = append(out.Outputs, ot)
	}
	return out, nil
}
