package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/agent/plugins"
	"github.com/droverhq/drover/plugins/sdk"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
)

// pluginHost runs the verified runner plugins of the plugin directory, one
// process each, and keeps them running: a plugin found dead is started
// again (no sooner than its back-off allows, which doubles up to a minute
// while it keeps dying) and every model it had loaded is loaded again. A
// plugin is checked against SHA256SUMS again before each start, so one
// upgraded in place runs once its line is updated. One that fails its
// first start is tried again the same way, and serves its formats once it
// starts.
type pluginHost struct {
	logger *slog.Logger

	mu       sync.Mutex
	byFormat map[string]*hostedPlugin
	// byTrainer holds the plugins that train (Describe's can_train), by
	// their runner name: a retraining job's runner.
	byTrainer map[string]*hostedPlugin
	all       []*hostedPlugin
	// onRegister, when set, is told the formats of a plugin that came up
	// late: the serving runtime loads into it what waited for it.
	onRegister func(formats []string)
}

type hostedPlugin struct {
	p      plugins.Plugin
	dir    string
	logger *slog.Logger
	// registered is set once the host serves the plugin's formats and
	// trainer: after its first successful start.
	registered bool
	// stuckAfter is how long a Predict may take before the plugin is
	// judged stuck: batchTimeout, the time a batch has.
	stuckAfter time.Duration

	mu      sync.Mutex
	client  *sdk.Client
	loaded  map[string]*runnerv1.LoadRequest // by id, replayed after a restart
	backoff time.Duration
	next    time.Time // no start before then
	lastErr error
	// hung is why the plugin was last killed for not answering, until it
	// answers again.
	hung string
	// incidents counts the times the plugin was found dead or hung, and
	// lastIncident says what happened last: a restart can be quicker
	// than anyone looking, and the incident must still be reported.
	incidents    uint64
	lastIncident string
}

// incident records the plugin found dead or hung. Called with mu held.
func (hp *hostedPlugin) incident(what string) {
	hp.incidents++
	hp.lastIncident = what
}

const (
	pluginBackoffMin = time.Second
	pluginBackoffMax = time.Minute
)

// newPluginHost scans dir and starts each verified plugin, all at once,
// and serves the formats of those that start; the others are tried again
// by supervise.
func newPluginHost(ctx context.Context, dir string, logger *slog.Logger) (*pluginHost, error) {
	h := &pluginHost{logger: logger, byFormat: map[string]*hostedPlugin{}, byTrainer: map[string]*hostedPlugin{}}
	found, err := plugins.Scan(dir)
	if err != nil {
		return nil, fmt.Errorf("plugin directory %s: %w", dir, err)
	}
	for _, p := range found {
		switch p.Status {
		case plugins.Verified:
			h.all = append(h.all, &hostedPlugin{p: p, dir: dir, logger: logger, loaded: map[string]*runnerv1.LoadRequest{}, stuckAfter: batchTimeout})
		case plugins.Invalid:
			logger.Error("a line of the plugin directory's "+plugins.SumsFile+" is ignored", "dir", dir, "problem", p.Problem)
		case plugins.Mismatch:
			logger.Warn("plugin not started: its digest is not the one "+plugins.SumsFile+" lists", "file", p.File, "listed", p.SHA256, "actual", p.Actual)
		default:
			logger.Warn("plugin not started", "file", p.File, "status", p.Status)
		}
	}
	var wg sync.WaitGroup
	for _, hp := range h.all {
		wg.Go(func() {
			hp.mu.Lock()
			_, err := hp.start(ctx)
			if err != nil {
				hp.failedStart(err)
			}
			hp.mu.Unlock()
			if err != nil {
				logger.Error("plugin failed to start; it is tried again with back-off", "file", hp.p.File, "err", err)
			}
		})
	}
	wg.Wait()
	for _, hp := range h.all { // in the directory's order, for which trainer wins
		h.register(hp)
	}
	return h, nil
}

// register serves a started plugin's formats and trainer, once.
func (h *pluginHost) register(hp *hostedPlugin) {
	hp.mu.Lock()
	if hp.registered || hp.client == nil {
		hp.mu.Unlock()
		return
	}
	hp.registered = true
	d := hp.client.Describe()
	hp.mu.Unlock()
	h.logger.Info("plugin started", "file", hp.p.File, "runner", d.GetName(), "version", d.GetVersion(), "formats", d.GetFormats())
	h.mu.Lock()
	defer func() {
		notify := h.onRegister
		h.mu.Unlock()
		if notify != nil && d.GetCanServe() {
			notify(d.GetFormats())
		}
	}()
	for _, f := range d.GetFormats() {
		if !d.GetCanServe() {
			break
		}
		if other, dup := h.byFormat[f]; dup {
			h.logger.Warn("two plugins serve the same format; the first found serves it", "format", f, "file", other.p.File, "ignored", hp.p.File)
			continue
		}
		h.byFormat[f] = hp
	}
	if name := d.GetName(); d.GetCanTrain() && name != "" {
		if other, dup := h.byTrainer[name]; dup {
			h.logger.Warn("two plugins train as the same runner; the first found trains", "runner", name, "file", other.p.File, "ignored", hp.p.File)
		} else {
			h.byTrainer[name] = hp
		}
	}
}

// forFormat returns the plugin serving an artifact format, or nil.
func (h *pluginHost) forFormat(format string) *hostedPlugin {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byFormat[format]
}

// forTrainer returns the plugin that trains as the runner name, or nil.
func (h *pluginHost) forTrainer(name string) *hostedPlugin {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byTrainer[name]
}

// trainerNames returns the runner names of the plugins that train, sorted.
func (h *pluginHost) trainerNames() []string {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Sorted(maps.Keys(h.byTrainer))
}

// close stops every plugin.
func (h *pluginHost) close() {
	if h == nil {
		return
	}
	for _, hp := range h.all {
		hp.mu.Lock()
		if hp.client != nil {
			hp.client.Close()
		}
		hp.mu.Unlock()
	}
}

// start checks the plugin file against SHA256SUMS as it is now and
// launches it. Called with mu held.
func (hp *hostedPlugin) start(ctx context.Context) (*sdk.Client, error) {
	p, err := plugins.Verify(hp.dir, hp.p.File)
	switch {
	case err != nil:
		return nil, err
	case p.Status == plugins.Mismatch:
		return nil, fmt.Errorf("its digest is %s, %s lists %s: update the line after upgrading it", p.Actual, plugins.SumsFile, p.SHA256)
	case p.Status != plugins.Verified:
		return nil, fmt.Errorf("it is %s in the plugin directory", p.Status)
	}
	hp.p.SHA256 = p.SHA256
	c, err := sdk.Launch(ctx, sdk.LaunchConfig{Path: hp.p.Path, SHA256: hp.p.SHA256, Logger: hp.logger})
	if err != nil {
		return nil, err
	}
	hp.client = c
	return c, nil
}

// failedStart sets the back-off after a start that failed. Called with mu
// held.
func (hp *hostedPlugin) failedStart(err error) {
	hp.lastErr = err
	hp.backoff = min(max(2*hp.backoff, pluginBackoffMin), pluginBackoffMax)
	hp.next = time.Now().Add(hp.backoff)
}

// get returns a live client, restarting the plugin (and reloading its
// models) if it died and its back-off has passed.
func (hp *hostedPlugin) get(ctx context.Context) (*sdk.Client, error) {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	if hp.client != nil && !hp.client.Exited() {
		return hp.client, nil
	}
	if hp.client != nil {
		// Found dead: an incident, whoever killed it.
		if hp.hung == "" {
			hp.incident(fmt.Sprintf("runner plugin %s exited", hp.p.File))
		}
		hp.client = nil
	}
	now := time.Now()
	if now.Before(hp.next) {
		return nil, fmt.Errorf("%w: runner plugin %s is down, next start in %s: %v", oip.ErrModelNotReady, hp.p.File, hp.next.Sub(now).Round(time.Millisecond), hp.lastErr)
	}
	if hp.registered {
		hp.logger.Warn("runner plugin died; starting it again", "file", hp.p.File, "models", len(hp.loaded), "last_err", hp.lastErr)
	} else {
		hp.logger.Info("starting runner plugin again", "file", hp.p.File, "last_err", hp.lastErr)
	}
	c, err := hp.start(ctx)
	if err != nil {
		hp.failedStart(err)
		hp.logger.Warn("runner plugin did not start", "file", hp.p.File, "err", err, "next_try_in", hp.backoff)
		return nil, fmt.Errorf("%w: runner plugin %s: %v", oip.ErrModelNotReady, hp.p.File, err)
	}
	hp.backoff = min(max(2*hp.backoff, pluginBackoffMin), pluginBackoffMax) // until it answers (settle)
	hp.next = now.Add(hp.backoff)
	for id, req := range hp.loaded {
		if _, err := c.Load(ctx, req); err != nil {
			hp.lastErr = err
			return nil, fmt.Errorf("%w: runner plugin %s: reloading %s: %v", oip.ErrModelNotReady, hp.p.File, id, err)
		}
	}
	hp.lastErr = nil
	return c, nil
}

// settle resets the back-off once the plugin has answered.
func (hp *hostedPlugin) settle() {
	hp.mu.Lock()
	hp.backoff, hp.hung = 0, ""
	hp.mu.Unlock()
}

func (hp *hostedPlugin) String() string { return "runner plugin " + hp.p.File }

// health reports whether the plugin can answer, and if not, why; and
// its incidents so far, with the last one. The same for every id.
func (hp *hostedPlugin) health(string) servingHealth {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	h := servingHealth{ok: true, incidents: hp.incidents, lastIncident: hp.lastIncident}
	switch {
	case hp.hung != "":
		h.ok, h.why = false, hp.hung
	case hp.client != nil && hp.client.Exited():
		h.ok, h.why = false, fmt.Sprintf("runner plugin %s exited; restarting it", hp.p.File)
	case hp.client == nil:
		h.ok, h.why = false, fmt.Sprintf("runner plugin %s is down", hp.p.File)
		if hp.lastErr != nil {
			h.why += ": " + hp.lastErr.Error()
		}
	}
	return h
}

// Plugin supervision: how often the host checks its plugins, and how long
// a plugin may take to answer a ping before it is judged hung.
const (
	pluginCheckInterval = 2 * time.Second
	pluginPingTimeout   = 5 * time.Second
)

// supervise checks every plugin until ctx ends: one that died is started
// again (within its back-off) with its models, so that they come back
// without waiting for a request; one that does not answer a ping is judged
// hung and killed, to be started again on a later check.
func (h *pluginHost) supervise(ctx context.Context) {
	if h == nil {
		return
	}
	tick := time.NewTicker(pluginCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, hp := range h.all {
			hp.check(ctx)
			h.register(hp) // a plugin that failed its first start, once it starts
		}
	}
}

func (hp *hostedPlugin) check(ctx context.Context) {
	hp.mu.Lock()
	c := hp.client
	hp.mu.Unlock()
	if c == nil || c.Exited() {
		if _, err := hp.get(ctx); err == nil {
			hp.settle()
		}
		return
	}
	pctx, cancel := context.WithTimeout(ctx, pluginPingTimeout)
	err := c.Ping(pctx)
	cancel()
	if err == nil || ctx.Err() != nil {
		return
	}
	hp.logger.Error("runner plugin is not answering; killing it", "file", hp.p.File, "err", err)
	hp.mu.Lock()
	hp.hung = fmt.Sprintf("runner plugin %s stopped answering (%v); restarting it", hp.p.File, err)
	hp.incident(hp.hung)
	hp.mu.Unlock()
	c.Kill()
}

func (hp *hostedPlugin) load(ctx context.Context, req *runnerv1.LoadRequest) (*runnerv1.LoadResponse, error) {
	c, err := hp.get(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := c.Load(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("runner plugin %s: %s", hp.p.File, status.Convert(err).Message())
	}
	hp.mu.Lock()
	hp.loaded[req.GetId()] = req
	hp.mu.Unlock()
	return resp, nil
}

func (hp *hostedPlugin) unload(ctx context.Context, id string) error {
	hp.mu.Lock()
	delete(hp.loaded, id)
	hp.mu.Unlock()
	c, err := hp.get(ctx)
	if err != nil {
		return nil // a dead plugin holds nothing; it will not reload id
	}
	return c.Unload(ctx, id)
}

func (hp *hostedPlugin) predict(ctx context.Context, req *runnerv1.PredictRequest) (*runnerv1.PredictResponse, error) {
	c, err := hp.get(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	resp, err := c.Predict(ctx, req)
	switch {
	case err == nil:
		hp.settle()
		return resp, nil
	case status.Code(err) == codes.Unavailable:
		// The plugin died under the request; the next one restarts it.
		return nil, fmt.Errorf("%w: runner plugin %s stopped answering: %v", oip.ErrModelNotReady, hp.p.File, status.Convert(err).Message())
	case errors.Is(err, context.Canceled):
		return nil, err
	case errors.Is(err, context.DeadlineExceeded), status.Code(err) == codes.DeadlineExceeded:
		if time.Since(start) < hp.stuckAfter {
			return nil, context.DeadlineExceeded // the caller's deadline, not the runner's
		}
		// A batch the runner sat on for its whole time: the version is
		// unhealthy (the supervisor's ping, answered by the SDK, cannot
		// see a runner stuck in Predict) until a batch is answered again.
		hp.mu.Lock()
		hp.hung = fmt.Sprintf("runner plugin %s did not answer a batch of %s in %s", hp.p.File, req.GetId(), hp.stuckAfter)
		hp.incident(hp.hung)
		hp.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", oip.ErrModelNotReady, hp.hung)
	case status.Code(err) == codes.InvalidArgument:
		// The runner could not take the input: the caller's fault (400).
		return nil, &oip.RequestError{Msg: status.Convert(err).Message()}
	}
	return nil, fmt.Errorf("runner plugin %s: %s", hp.p.File, status.Convert(err).Message())
}

// Train trains through the plugin's running process: a training run does
// not wait for a plugin that is down or restarting (the supervisor starts
// it again within its back-off), it fails at once and says why. It makes
// hostedPlugin a training.Trainer.
func (hp *hostedPlugin) Train(ctx context.Context, req *runnerv1.TrainRequest, send func(*runnerv1.TrainResponse) error) error {
	hp.mu.Lock()
	c := hp.client
	down := ""
	switch {
	case hp.hung != "":
		down = hp.hung
	case c == nil:
		down = fmt.Sprintf("runner plugin %s is down", hp.p.File)
		if hp.lastErr != nil {
			down += ": " + hp.lastErr.Error()
		}
	case c.Exited():
		down = fmt.Sprintf("runner plugin %s exited; it is being restarted", hp.p.File)
	}
	hp.mu.Unlock()
	if down != "" {
		return fmt.Errorf("%s; training does not wait for it", down)
	}
	err := c.Train(ctx, req, send)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return context.Cause(ctx)
	case status.Code(err) == codes.Unavailable:
		return fmt.Errorf("runner plugin %s stopped answering during training: %s", hp.p.File, status.Convert(err).Message())
	}
	if _, ok := status.FromError(err); ok {
		return fmt.Errorf("runner plugin %s: %s", hp.p.File, status.Convert(err).Message())
	}
	return err // send's, from this side
}

// alive reports whether the plugin process is running.
func (hp *hostedPlugin) alive() bool {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	return hp.client != nil && !hp.client.Exited()
}
