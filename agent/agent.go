// Package agent is the daemon on every GPU machine (drover agent). It
// discovers the machine and its GPUs, enrols with the hub, heartbeats,
// watches its desired state over a server stream, and converges on it:
// downloading, verifying and loading the model versions it is assigned. Its
// state — identity, last desired state, artifact index, report outbox —
// lives in Badger with synced writes (agent/store), so that it survives
// crashes and keeps serving what it was told while the hub is away.
//
// The pieces:
//
//   - hubconn.go: enrolment, heartbeats, the desired-state watch and the
//     report sender, each retrying with jittered back-off.
//   - gpu.go: GPU sampling, Xid events, health verdicts and telemetry
//     windows, through nvml/.
//   - agent/reconcile: the level-triggered reconciler; agent/artifacts: the
//     verified artifact cache; agent/store: the Badger store.
//   - http.go: /healthz, /readyz, /metrics, /v1/agent and the Open Inference
//     Protocol's /v2 endpoints on --serve-addr.
//   - serving.go: the runtime the reconciler loads versions into, serving
//     native models in-process.
//   - training.go: retraining jobs' training and export tasks, run through
//     internal/training (the code path of `drover train`).
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/droverhq/drover/agent/artifacts"
	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/agent/reconcile"
	"github.com/droverhq/drover/agent/store"
	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/internal/buildinfo"
	"github.com/droverhq/drover/internal/digest"
	"github.com/droverhq/drover/internal/sketch"
	"github.com/droverhq/drover/nvml"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Config is everything an agent needs to start.
type Config struct {
	// Name is the agent's name in the fleet (default: the host name).
	Name string
	// Hubs are hub addresses; calls fail over between them.
	Hubs []string
	// JoinToken is an agent token (drover tokens create --role agent),
	// used once to enrol.
	JoinToken string
	// DataDir holds the store and the artifact cache.
	DataDir string
	// ServeAddr is where the agent serves /healthz, /readyz, /metrics and,
	// later, predictions.
	ServeAddr string
	// Labels describe the machine to selectors: site, rack, anything.
	Labels map[string]string

	// HeartbeatInterval is how often the agent heartbeats (default 5 s).
	HeartbeatInterval time.Duration
	// SampleInterval is how often GPUs are sampled (default 10 s).
	SampleInterval time.Duration
	// TelemetryWindow is the span one telemetry report summarises
	// (default 1 min).
	TelemetryWindow time.Duration
	// InventoryInterval is how often the inventory is checked for changes
	// (default 5 min).
	InventoryInterval time.Duration
	// OutboxMaxReports bounds the outbox (default 100,000).
	OutboxMaxReports int
	// ArtifactKeep is how long an unused artifact stays cached (default 24 h).
	ArtifactKeep time.Duration

	// GPUs returns the NVML to use; nil means the machine's own library.
	GPUs func() gonvml.Interface
	// SampleRate is the fraction of answered predictions kept in the
	// store's "samples/<model>" journals (0: none), each holding at most
	// SampleKeep (default 10,000).
	SampleRate float64
	SampleKeep int
	// FeedbackRetention is how long a sampled prediction waits for its
	// label (default 24 h); a label later than that is counted unknown.
	FeedbackRetention time.Duration
	// WindowKeep is how many one-minute metric windows are kept per
	// model (default 1,440: a day).
	WindowKeep int
	// MetricWindow is the span of one metric window (default a minute):
	// what the hub's rollout gates judge, window by window.
	MetricWindow time.Duration
	// Drift tunes drift monitoring: the evaluation window, how often
	// drift windows go to the hub, how many are kept.
	Drift DriftOptions
	// PluginDir holds runner plugins and their SHA256SUMS; the verified
	// ones are started and serve the formats they name. Empty: none.
	PluginDir string
	// Serving tunes the prediction path: batching for runner plugins,
	// draining on a version switch, shadow traffic.
	Serving ServingOptions
	// Trainers are the agent's exec trainers for retraining jobs: a name
	// (what a job's runner names) and the command's words, run through
	// package exectrain as `drover train --runner exec` runs it. The
	// native runner is always there. The commands are the agent's
	// configuration: a hub can choose among them, never run another.
	Trainers map[string][]string
	// Runtime loads verified artifacts; nil means the built-in one, which
	// serves native models in-process and other formats through plugins.
	Runtime reconcile.Runtime
	// Reconcile tunes the reconciler.
	Reconcile reconcile.Options
	// Observers are told of every inference request, answered or refused,
	// after the agent's own metrics, windows and samples: the hook for
	// what else watches the traffic (drift sketches). They run on the
	// request's goroutine and must be quick; the observation's request and
	// response must not be changed.
	Observers []func(oip.Observation)
	// OnDesired, if set, is called when a new desired state arrives from
	// the hub, before the reconciler sees it. For tests and benchmarks.
	OnDesired func(*droverv1.DesiredState)

	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.SampleRate < 0 || c.SampleRate > 1 {
		return fmt.Errorf("sample rate %g is not between 0 and 1", c.SampleRate)
	}
	if c.Name == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("agent name: %w", err)
		}
		c.Name = host
	}
	if c.DataDir == "" {
		return errors.New("data dir is required")
	}
	if err := checkTrainers(c.Trainers); err != nil {
		return err
	}
	if len(c.Hubs) == 0 {
		return errors.New("at least one hub address is required")
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.HeartbeatInterval, 5*time.Second)
	def(&c.SampleInterval, 10*time.Second)
	def(&c.TelemetryWindow, time.Minute)
	def(&c.InventoryInterval, 5*time.Minute)
	def(&c.ArtifactKeep, 24*time.Hour)
	if c.ServeAddr == "" {
		c.ServeAddr = "127.0.0.1:8430"
	}
	if c.GPUs == nil {
		c.GPUs = nvml.System
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Agent is a running agent.
type Agent struct {
	cfg    Config
	logger *slog.Logger
	now    func() time.Time

	store    *store.Store
	cache    *artifacts.Cache
	rec      *reconcile.Reconciler
	runtime  reconcile.Runtime
	plugins  *pluginHost // nil without a plugin directory
	samples  *sampler    // nil when no predictions are sampled
	windows  *metricWindows
	feedback *prometheus.CounterVec
	drift    *driftMonitor
	retrain  *retrainer
	gpus     *gpuMonitor
	metrics  *metrics
	listener net.Listener
	server   *http.Server

	join       *client.Client // with the join token, for enrolment
	streamHTTP *http.Client   // for desired-state watches
	// cred is the agent's identity and a client that presents it; nil
	// until the agent first enrols, never nil again after (see reenrol).
	cred    atomic.Pointer[credential]
	enrolMu sync.Mutex // one enrolment at a time

	mu        sync.Mutex
	labels    map[string]string
	trainers  map[string][]string // the exec trainers, reloaded on SIGHUP
	desiredFP string
	rewatch   chan struct{}

	healthMu sync.Mutex
	health   map[reconcile.Key]reportedHealth

	feedbackMu sync.Mutex // one feedback request joins at a time

	// spaceChanged is told when the store may have gone low on space or
	// recovered; spaceNow says where it stands (see reportSpace).
	spaceChanged chan struct{}
	spaceNow     func() store.SpaceStatus

	lastPass  atomic.Int64 // unix nanos of the reconciler's last sign of life
	connected atomic.Bool

	shutdown shutdownTimeouts
}

// ErrConfig is wrapped by New's errors about the Config itself, as
// against those about the machine (a data dir it cannot open, a port in
// use): a command line reports them as the operator's mistake.
var ErrConfig = errors.New("agent config")

// New opens the agent's state and listener; Run starts it.
func New(cfg Config) (*Agent, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	a := &Agent{cfg: cfg, logger: cfg.Logger.With("agent", cfg.Name), now: time.Now, labels: cfg.Labels, trainers: cfg.Trainers, rewatch: make(chan struct{}, 1),
		health: map[reconcile.Key]reportedHealth{}, spaceChanged: make(chan struct{}, 1), shutdown: defaultShutdown}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	storeLog := a.logger.With("component", "store")
	st, err := store.Open(filepath.Join(cfg.DataDir, "state"), store.Options{
		MaxReports: cfg.OutboxMaxReports,
		OnSpace:    a.storeSpaceChanged,
	}, storeLog)
	if err != nil {
		return nil, err
	}
	a.store = st
	a.spaceNow = st.Space
	ok := false
	defer func() {
		if !ok {
			st.Close()
		}
	}()
	join, err := client.New(client.Config{Addrs: cfg.Hubs, Token: cfg.JoinToken})
	if err != nil {
		return nil, err
	}
	a.join = join
	a.streamHTTP = client.NewHTTPClient()
	if id, err := st.Identity(); err == nil {
		if err := a.setIdentity(id); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if a.cred.Load() == nil && cfg.JoinToken == "" {
		return nil, fmt.Errorf("%w: this agent has not enrolled yet and has no join token to enrol with: give --join-token (or DROVER_JOIN_TOKEN, or join-token in the config file), an agent token from `drover tokens create --role agent`", ErrConfig)
	}
	// Downloads use the agent's own credential once it has one.
	a.cache, err = artifacts.New(filepath.Join(cfg.DataDir, "artifacts"), st, downloader{a}, a.logger.With("component", "artifacts"))
	if err != nil {
		return nil, err
	}
	a.cache.KeepFreeFor = filepath.Join(cfg.DataDir, "state")
	if a.listener, err = net.Listen("tcp", cfg.ServeAddr); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.ServeAddr, err)
	}
	a.runtime = cfg.Runtime
	if a.runtime == nil {
		if cfg.PluginDir != "" {
			if a.plugins, err = newPluginHost(context.Background(), cfg.PluginDir, a.logger.With("component", "plugins")); err != nil {
				a.listener.Close()
				return nil, err
			}
		}
		a.runtime = newServingRuntime(a.plugins, a.logger.With("component", "serving"), cfg.Serving)
	}
	if cfg.SampleRate > 0 {
		keep := cfg.SampleKeep
		if keep <= 0 {
			keep = 10_000
		}
		a.samples = newSampler(st, cfg.SampleRate, keep, a.logger.With("component", "samples"))
		if cfg.FeedbackRetention > 0 {
			a.samples.retention = cfg.FeedbackRetention
		}
		if rt, ok := a.runtime.(*servingRuntime); ok {
			a.samples.classes = rt.classes
		}
	}
	keepWindows := cfg.WindowKeep
	if keepWindows <= 0 {
		keepWindows = 1440
	}
	a.windows = newMetricWindows(st, keepWindows, cfg.MetricWindow, a.logger.With("component", "windows"))
	if rt, ok := a.runtime.(*servingRuntime); ok {
		rt.shadows.observe = a.windows.observeShadow
	}
	a.windows.send = func(w *Window) { a.report(&droverv1.Report{Body: &droverv1.Report_Metrics{Metrics: w.proto()}}) }
	a.drift = newDriftMonitor(st, cfg.Drift, a.logger.With("component", "drift"), a.referenceProfile, func(r *droverv1.Report) { a.report(r) })
	a.feedback = newFeedbackCounter()
	a.metrics = newMetrics(a)
	a.rec = reconcile.New(a.cache, a.runtime, a.onStatus, a.logger.With("component", "reconcile"), cfg.Reconcile)
	a.retrain = a.newRetrainer()
	a.gpus = newGPUMonitor(a)
	ok = true
	return a, nil
}

// credential is an identity the agent has from the hub and a client that
// presents it, replaced together.
type credential struct {
	id  *store.Identity
	hub *client.Client
}

func (a *Agent) setIdentity(id *store.Identity) error {
	c, err := client.New(client.Config{Addrs: a.cfg.Hubs, Token: id.Token})
	if err != nil {
		return err
	}
	a.cred.Store(&credential{id: id, hub: c})
	return nil
}

// hubClient returns a client with the agent's credential, or nil before it
// has one.
func (a *Agent) hubClient() *client.Client {
	if cr := a.cred.Load(); cr != nil {
		return cr.hub
	}
	return nil
}

// Addr returns the address the agent serves HTTP on.
func (a *Agent) Addr() string { return a.listener.Addr().String() }

// ID returns the agent's id, or "" before it has enrolled.
func (a *Agent) ID() string {
	if cr := a.cred.Load(); cr != nil {
		return cr.id.AgentID
	}
	return ""
}

// Run runs the agent until ctx ends, then stops: it lets running jobs
// finish or reach a point they can resume from, tries once more to hand
// its reports to the hub, and closes its state.
func (a *Agent) Run(ctx context.Context) error {
	defer a.store.Close()
	a.server = &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: serverReadTimeout, IdleTimeout: serverIdleTimeout}
	serveErr := make(chan error, 1)
	go func() { serveErr <- a.server.Serve(a.listener) }()

	// Serve the last desired state at once, hub or no hub, and go on with
	// its training tasks that were not finished.
	a.retrain.begin(ctx)
	if d, err := a.store.Desired(); err == nil {
		a.mu.Lock() // the HTTP server reads it already
		a.desiredFP = d.GetFingerprint()
		a.mu.Unlock()
		a.rec.SetDesired(d)
		a.retrain.sync(d)
		a.logger.Info("resuming the last desired state", "assignments", len(d.GetAssignments()), "training", len(d.GetTraining()))
	}
	a.report(&droverv1.Report{Body: &droverv1.Report_Event{Event: &droverv1.AgentEvent{Kind: "started", Message: "agent " + buildinfo.Get().Version + " started", AgentVersion: buildinfo.Get().Version}}})
	a.logger.Info("agent started", "serve", a.Addr(), "hubs", a.cfg.Hubs, "data_dir", a.cfg.DataDir, "gpus", a.gpus.count())

	var wg sync.WaitGroup
	run := func(f func(context.Context)) { wg.Go(func() { f(ctx) }) }
	run(a.rec.Run)
	run(a.gpus.run)
	run(a.connect)
	run(a.collectArtifacts)
	run(a.keepAlive)
	run(a.watchHealth)
	run(a.plugins.supervise)
	if a.samples != nil {
		run(a.samples.run)
	}
	run(a.windows.run)
	run(a.drift.run)
	run(a.reportSpace)
	run(func(ctx context.Context) { a.store.CollectGarbage(ctx, 10*time.Minute) })

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("http: %w", err)
	}
	a.logger.Info("agent stopping")
	a.report(&droverv1.Report{Body: &droverv1.Report_Event{Event: &droverv1.AgentEvent{Kind: "stopping", Message: "agent stopping"}}})
	// Each step has its own deadline: a request slow to finish must not
	// leave the reports no time to go.
	step := func(d time.Duration, f func(context.Context)) {
		sctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		f(sctx)
	}
	step(a.shutdown.serve, func(ctx context.Context) {
		if a.server.Shutdown(ctx) != nil {
			a.logger.Warn("requests still being answered at shutdown; closing their connections")
			_ = a.server.Close()
		}
	})
	wg.Wait()
	a.retrain.wait()
	a.cache.Close()
	step(a.shutdown.flush, a.flushReports)
	a.gpus.close()
	a.plugins.close()
	if rt, ok := a.runtime.(*servingRuntime); ok {
		step(a.shutdown.runtime, rt.close)
	}
	return err
}

// The HTTP server's timeouts: a prediction's body may be large and come
// slowly (up to oip.DefaultMaxBody), so reading a request may take a
// while, but not forever; an idle keep-alive connection is closed.
const (
	serverReadTimeout = 5 * time.Minute
	serverIdleTimeout = 2 * time.Minute
)

// shutdownTimeouts bound the steps of stopping.
type shutdownTimeouts struct {
	serve   time.Duration // requests in flight finish
	flush   time.Duration // reports go to the hub once more
	runtime time.Duration // replaced versions unload, process servers stop
}

var defaultShutdown = shutdownTimeouts{serve: 5 * time.Second, flush: 5 * time.Second, runtime: 5 * time.Second}

// Reload applies a new configuration's changeable parts: the labels and
// the exec trainers. The rest needs a restart.
func (a *Agent) Reload(cfg Config) {
	trainersErr := checkTrainers(cfg.Trainers)
	a.mu.Lock()
	changed := !maps.Equal(a.labels, cfg.Labels)
	a.labels = cfg.Labels
	trainersChanged := trainersErr == nil && !maps.EqualFunc(a.trainers, cfg.Trainers, slices.Equal)
	if trainersChanged {
		a.trainers = cfg.Trainers
	}
	a.mu.Unlock()
	if changed {
		a.report(&droverv1.Report{Body: &droverv1.Report_Labels{Labels: &droverv1.LabelsReport{Labels: cfg.Labels}}})
		a.logger.Info("labels changed", "labels", cfg.Labels)
	}
	switch {
	case trainersErr != nil:
		a.logger.Error("trainers not reloaded; keeping the running ones", "err", trainersErr)
	case trainersChanged:
		// Tasks already running keep their command; the hub places new
		// ones by the inventory, which now names the new set.
		a.logger.Info("trainers changed", "trainers", trainerNames(cfg.Trainers, nil))
		a.gpus.checkInventory()
	}
}

// trainersNow returns the exec trainers as configured now.
func (a *Agent) trainersNow() map[string][]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.trainers
}

// report appends reports to the outbox; a failure is logged, since there
// is nothing better to do with it.
func (a *Agent) report(reports ...*droverv1.Report) {
	if err := a.store.Append(a.now(), reports...); err != nil {
		a.logger.Error("cannot store a report", "err", err)
	}
}

// storeSpaceChanged is the store's word that it went low on space or has
// room again. It comes in the middle of a write, from any writer's
// goroutine: reportSpace looks at where the store stands.
func (a *Agent) storeSpaceChanged(bool, uint64, uint64) {
	select {
	case a.spaceChanged <- struct{}{}:
	default:
	}
}

// reportSpace tells the hub, in order, when the store goes low on space
// and when it has room again, until ctx ends. The store's word of a change
// comes from the middle of its writes, from any goroutine and in no
// particular order; so one goroutine, told of a change, looks at where the
// store stands now and reports that, if it is news.
func (a *Agent) reportSpace(ctx context.Context) {
	low := false // the store opens only with room
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.spaceChanged:
		}
		sp := a.spaceNow()
		if sp.Low == low {
			continue
		}
		low = sp.Low
		if low {
			a.logger.Warn("the data directory's file system is nearly full: the store refuses writes, and reports wait in memory until space is freed",
				"component", "store", "free_bytes", sp.FreeBytes)
		} else {
			a.logger.Info("space freed under the store: writing again", "component", "store", "free_bytes", sp.FreeBytes)
		}
		a.report(&droverv1.Report{Body: &droverv1.Report_StoreSpace{StoreSpace: &droverv1.StoreSpaceReport{
			Low: sp.Low, FreeBytes: sp.FreeBytes, MinFreeBytes: sp.MinFreeBytes,
		}}})
	}
}

// onStatus reports the reconciler's status changes.
func (a *Agent) onStatus(s reconcile.Status) {
	a.lastPass.Store(a.now().UnixNano())
	a.metrics.phaseChanged(s)
	st := statusProto(s)
	if s.Phase == droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY {
		a.healthMu.Lock()
		h := a.versionHealth(s.Key, s.Version)
		a.health[s.Key] = reportedHealth{version: s.Version, servingHealth: h}
		a.healthMu.Unlock()
		setHealth(st, h.ok, h.why)
	}
	a.report(&droverv1.Report{Body: &droverv1.Report_Assignment{Assignment: st}})
}

// referenceProfile is a loaded version's prepared reference profile, or
// nil.
func (a *Agent) referenceProfile(model string, version uint64) *sketch.Reference {
	if rt, ok := a.runtime.(*servingRuntime); ok {
		return rt.profile(model, version)
	}
	return nil
}

// reportedHealth is the health last reported for a ready version.
type reportedHealth struct {
	version uint64
	servingHealth
}

func (a *Agent) versionHealth(k reconcile.Key, version uint64) servingHealth {
	if h, ok := a.runtime.(interface {
		health(reconcile.Key, uint64) servingHealth
	}); ok {
		return h.health(k, version)
	}
	return servingHealth{ok: true}
}

func setHealth(st *droverv1.AssignmentStatus, ok bool, why string) {
	st.Health = droverv1.ServingHealth_SERVING_HEALTH_HEALTHY
	if !ok {
		st.Health, st.Message = droverv1.ServingHealth_SERVING_HEALTH_UNHEALTHY, why
	}
}

// healthCheckInterval is how often the agent looks at its ready versions'
// health.
const healthCheckInterval = time.Second

// watchHealth reports a ready version turning unhealthy (its runner plugin
// died or hung) or healthy again, until ctx ends. A runner that died and
// came back between two looks is reported unhealthy, then healthy.
func (a *Agent) watchHealth(ctx context.Context) {
	tick := time.NewTicker(healthCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, s := range a.rec.Statuses() {
			if s.Phase == droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY {
				a.checkHealth(s)
			}
		}
	}
}

func (a *Agent) checkHealth(s reconcile.Status) {
	h := a.versionHealth(s.Key, s.Version)
	a.healthMu.Lock()
	last, seen := a.health[s.Key]
	a.health[s.Key] = reportedHealth{version: s.Version, servingHealth: h}
	a.healthMu.Unlock()
	if seen && last.version == s.Version && last.ok == h.ok && last.why == h.why && last.incidents == h.incidents {
		return
	}
	send := func(ok bool, why string) {
		if ok {
			a.logger.Info("model version healthy", "slot", s.Key, "version", s.Version)
		} else {
			a.logger.Warn("model version unhealthy", "slot", s.Key, "version", s.Version, "reason", why)
		}
		st := statusProto(s)
		setHealth(st, ok, why)
		a.report(&droverv1.Report{Body: &droverv1.Report_Assignment{Assignment: st}})
	}
	if h.ok && seen && last.ok && h.incidents != last.incidents {
		send(false, h.lastIncident) // it went down and came back unseen
	}
	send(h.ok, h.why)
}

// Alive reports whether the agent's loops are turning: for systemd's
// watchdog.
func (a *Agent) Alive() bool {
	last := a.lastPass.Load()
	return last == 0 || a.now().Sub(time.Unix(0, last)) < 2*time.Minute
}

// keepAlive marks the agent alive while the reconciler answers.
func (a *Agent) keepAlive(ctx context.Context) {
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		a.rec.Statuses() // takes the reconciler's lock: proves it is not stuck
		a.lastPass.Store(a.now().UnixNano())
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// collectArtifacts removes cached artifacts that are neither desired nor
// loaded and have not been used for ArtifactKeep.
func (a *Agent) collectArtifacts(ctx context.Context) {
	tick := time.NewTicker(10 * time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		keep := map[string]bool{}
		if d, err := a.store.Desired(); err == nil {
			for _, as := range d.GetAssignments() {
				keep[as.GetArtifact().GetDigest()] = true
			}
		}
		if _, err := a.cache.Collect(keep, a.cfg.ArtifactKeep); err != nil {
			a.logger.Warn("artifact collection failed", "err", err)
		}
	}
}

// downloader fetches artifacts with the agent's current credential.
type downloader struct{ a *Agent }

func (d downloader) DownloadFile(ctx context.Context, dg digest.Digest, size int64, path string, p client.Progress) error {
	c := d.a.hubClient()
	if c == nil {
		return errors.New("not enrolled yet")
	}
	d.a.metrics.downloads.Inc()
	return c.DownloadFile(ctx, dg, size, path, p)
}
