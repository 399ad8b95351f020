package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/agent/store"
	"github.com/droverhq/drover/internal/drift"
	"github.com/droverhq/drover/internal/sketch"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// Drift monitoring on the agent. Every answered prediction of a version
// that has a reference profile is added, feature by feature, to that
// version's drift window for the current minute (mergeable sketches: see
// internal/sketch); the model's answer is added too, as the prediction.
// Requests refused for not matching the schema count as schema
// violations. When a minute closes, its windows are
//
//   - kept in the store's journal "drift/<model>" (bounded),
//   - merged into the evaluation window — the last DriftEvaluation of
//     minutes — and judged against the reference, so that the agent knows
//     within a minute when traffic stops looking like training
//     (/v1/drift, drover_agent_drift_*, a log line when the verdict
//     changes),
//   - merged into the next report window, sent to the hub through the
//     outbox every DriftReport, where the fleet's windows merge.
//
// No raw row leaves the agent: only sketches do.

// DriftOptions tune drift monitoring on the agent.
type DriftOptions struct {
	// Window is the span of one drift window (default a minute).
	Window time.Duration
	// Evaluation is how much recent traffic the agent judges at each
	// minute's close (default 10 minutes).
	Evaluation time.Duration
	// Report is how often the agent sends the hub a drift window of the
	// minutes since the last (default 5 minutes).
	Report time.Duration
	// Keep is how many windows the store keeps per model (default 1,440:
	// a day of minutes).
	Keep int
	// Settings are the thresholds the agent judges by (the hub judges by
	// each model's own).
	Settings drift.Options
}

func (o *DriftOptions) setDefaults() {
	if o.Window <= 0 {
		o.Window = time.Minute
	}
	if o.Evaluation <= 0 {
		o.Evaluation = 10 * time.Minute
	}
	if o.Report <= 0 {
		o.Report = 5 * time.Minute
	}
	if o.Keep <= 0 {
		o.Keep = 1440
	}
}

type driftKey struct {
	model   string
	version uint64
}

// driftMonitor keeps the drift windows.
type driftMonitor struct {
	opts    DriftOptions
	st      *store.Store
	logger  *slog.Logger
	now     func() time.Time
	profile func(model string, version uint64) *sketch.Reference
	send    func(*droverv1.Report)

	mu      sync.Mutex
	minute  time.Time
	open    map[driftKey]*liveDrift
	history map[driftKey][]*sketch.Window // closed minutes within the evaluation span, oldest first
	pending map[driftKey][]*sketch.Window // closed minutes not yet reported
	closed  []*sketch.Window              // closed minutes not yet stored or judged
	sentAt  time.Time
	verdict map[driftKey]drift.Report

	share    *prometheus.GaugeVec
	drifted  *prometheus.GaugeVec
	observed *prometheus.CounterVec
}

// liveDrift is one version's window for the current minute, with its own
// lock so that versions do not wait on each other.
type liveDrift struct {
	mu     sync.Mutex
	w      *sketch.Window
	inputs int  // the reference's features; a column at or after is the prediction
	closed bool // the minute is over: the window is no longer written
}

func newDriftMonitor(st *store.Store, opts DriftOptions, logger *slog.Logger, profile func(string, uint64) *sketch.Reference, send func(*droverv1.Report)) *driftMonitor {
	opts.setDefaults()
	return &driftMonitor{opts: opts, st: st, logger: logger, now: time.Now, profile: profile, send: send,
		open: map[driftKey]*liveDrift{}, history: map[driftKey][]*sketch.Window{}, pending: map[driftKey][]*sketch.Window{},
		verdict: map[driftKey]drift.Report{},
		share: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "drover_agent_drift_share", Help: "The share of a model version's features drifting over the evaluation window, as this agent judges.",
		}, []string{"model", "version"}),
		drifted: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "drover_agent_drift_detected", Help: "1 when a model version's data set drifts over the evaluation window, as this agent judges.",
		}, []string{"model", "version"}),
		observed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_agent_drift_rows_total", Help: "Rows added to drift windows, by model and version.",
		}, []string{"model", "version"}),
	}
}

func (d *driftMonitor) collectors() []prometheus.Collector {
	return []prometheus.Collector{d.share, d.drifted, d.observed}
}

// observe adds an answered request's rows to its version's window, or
// counts a refused one as schema violations.
func (d *driftMonitor) observe(o oip.Observation) {
	if o.Request == nil || (o.Status != http.StatusOK && o.Status != http.StatusBadRequest) {
		return
	}
	version, err := strconv.ParseUint(o.Version, 10, 64)
	if err != nil {
		return // a refused request that named no version: no window to count it in
	}
	var ld *liveDrift
	for {
		if ld = d.window(driftKey{o.Model, version}); ld == nil {
			return
		}
		ld.mu.Lock()
		if !ld.closed {
			break
		}
		ld.mu.Unlock() // closed between the lookup and the lock: the next minute's
	}
	defer ld.mu.Unlock()
	if o.Status != http.StatusOK {
		ld.w.AddSchemaViolations(uint64(max(o.Rows, 1)))
		return
	}
	rows := o.Rows
	if rows <= 0 {
		return
	}
	for i, name := range ld.w.Columns() {
		var t *oip.Tensor
		if i < ld.inputs {
			t = o.Request.Input(name)
		} else if o.Response != nil {
			t = predictionTensor(o.Response)
		}
		if t == nil || t.Len() != rows {
			// Missing (a nullable feature) or not one value per row.
			if t == nil && ld.w.Numeric(i) {
				for range rows {
					ld.w.ObserveNumber(i, nan)
				}
			} else if t == nil {
				for range rows {
					ld.w.ObserveString(i, "")
				}
			}
			continue
		}
		switch {
		case ld.w.Numeric(i) && t.Datatype != oip.Bytes:
			ld.w.ObserveNumbers(i, t.Numbers)
		case !ld.w.Numeric(i) && t.Datatype == oip.Bytes:
			ld.w.ObserveStrings(i, t.Strings)
		case !ld.w.Numeric(i):
			for _, x := range t.Numbers {
				ld.w.ObserveString(i, strconv.FormatFloat(x, 'g', -1, 64))
			}
		}
	}
	ld.w.AddRows(uint64(rows))
	d.observed.WithLabelValues(o.Model, o.Version).Add(float64(rows))
}

var nan = func() float64 { var z float64; return z / z }()

// predictionTensor is the output drift follows: the label, else the
// prediction, else the first output.
func predictionTensor(r *oip.InferResponse) *oip.Tensor {
	var first *oip.Tensor
	for _, t := range r.Outputs {
		if t.Name == outputLabel || t.Name == outputPrediction {
			return t
		}
		if first == nil {
			first = t
		}
	}
	return first
}

// window returns the version's live window for the current minute, or nil
// when the version has no reference profile.
func (d *driftMonitor) window(k driftKey) *liveDrift {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rollLocked(now)
	if ld, ok := d.open[k]; ok {
		return ld
	}
	p := d.profile(k.model, k.version)
	if p == nil {
		d.open[k] = nil // remembered: no profile, nothing to do
		return nil
	}
	w, err := sketch.NewWindow(p.Profile(), k.model, k.version, d.minute, d.opts.Window)
	if err != nil {
		d.logger.Warn("no drift window for this version", "model", k.model, "version", k.version, "err", err)
		d.open[k] = nil
		return nil
	}
	ld := &liveDrift{w: w, inputs: len(p.Profile().GetFeatures())}
	d.open[k] = ld
	return ld
}

// rollLocked closes the current minute's windows once it has passed.
func (d *driftMonitor) rollLocked(now time.Time) {
	minute := now.Truncate(d.opts.Window)
	if minute.Equal(d.minute) {
		return
	}
	for k, ld := range d.open {
		if ld != nil {
			ld.mu.Lock()
			ld.closed = true
			d.closeLocked(k, ld.w)
			ld.mu.Unlock()
		}
	}
	clear(d.open)
	d.minute = minute
}

// closeLocked files a closed minute: history, pending report. The store
// and the evaluation are done by flush, off the prediction path.
func (d *driftMonitor) closeLocked(k driftKey, w *sketch.Window) {
	d.history[k] = append(d.history[k], w)
	d.closed = append(d.closed, w)
	d.pending[k] = append(d.pending[k], w)
}

// flush rolls the minute, stores and judges closed windows, and reports
// to the hub when due.
func (d *driftMonitor) flush(final bool) {
	now := d.now()
	d.mu.Lock()
	if final {
		d.rollLocked(now.Add(d.opts.Window))
	} else {
		d.rollLocked(now)
	}
	closed := d.closed
	d.closed = nil
	// Judge each version that closed a minute over its history within the
	// evaluation span.
	type job struct {
		k       driftKey
		windows []*droverv1.DriftWindow
	}
	var jobs []job
	judged := map[driftKey]bool{}
	for _, w := range closed {
		k := driftKey{w.Model(), w.Version()}
		if judged[k] {
			continue
		}
		judged[k] = true
		ws := d.history[k]
		cut := 0
		for cut < len(ws) && ws[cut].Start().Before(now.Add(-d.opts.Evaluation)) {
			cut++
		}
		d.history[k] = ws[cut:]
		j := job{k: k}
		for _, hw := range ws[cut:] {
			j.windows = append(j.windows, hw.ToProto())
		}
		jobs = append(jobs, j)
	}
	var reports [][]*droverv1.DriftWindow
	if final || now.Sub(d.sentAt) >= d.opts.Report {
		for k, ws := range d.pending {
			var protos []*droverv1.DriftWindow
			for _, w := range ws {
				protos = append(protos, w.ToProto())
			}
			reports = append(reports, protos)
			delete(d.pending, k)
		}
		d.sentAt = now
	}
	d.mu.Unlock()

	d.store(closed)
	for _, j := range jobs {
		if merged, err := sketch.MergeWindows(j.windows...); err == nil {
			d.judge(j.k, merged)
		}
	}
	for _, ws := range reports {
		w, err := sketch.MergeWindows(ws...)
		if err != nil {
			d.logger.Warn("drift windows do not merge", "model", ws[0].GetModel(), "version", ws[0].GetVersion(), "err", err)
			continue
		}
		d.send(&droverv1.Report{Body: &droverv1.Report_Drift{Drift: w}})
	}
}

// store keeps closed minutes in their models' journals.
func (d *driftMonitor) store(closed []*sketch.Window) {
	byModel := map[string][][]byte{}
	for _, w := range closed {
		if b, err := proto.Marshal(w.ToProto()); err == nil {
			byModel[w.Model()] = append(byModel[w.Model()], b)
		}
	}
	for model, recs := range byModel {
		j, err := d.st.Journal("drift/"+model, d.opts.Keep)
		if err == nil {
			_, err = j.Append(recs...)
		}
		if err != nil {
			d.logger.Warn("drift windows not stored", "model", model, "windows", len(recs), "err", err)
		}
	}
}

// judge evaluates the merged recent windows against the reference.
func (d *driftMonitor) judge(k driftKey, merged *droverv1.DriftWindow) {
	p := d.profile(k.model, k.version)
	if p == nil {
		return
	}
	rep := p.Evaluate(merged, d.opts.Settings)
	labels := []string{k.model, strconv.FormatUint(k.version, 10)}
	d.share.WithLabelValues(labels...).Set(rep.Dataset.DriftShare)
	d.drifted.WithLabelValues(labels...).Set(map[bool]float64{true: 1}[rep.Dataset.Drifted])
	d.mu.Lock()
	last, seen := d.verdict[k]
	d.verdict[k] = rep
	d.mu.Unlock()
	if seen && last.Dataset.Drifted == rep.Dataset.Drifted {
		return
	}
	var drifted []string
	for _, f := range rep.Features {
		if f.Drifted {
			drifted = append(drifted, f.Name)
		}
	}
	if rep.Dataset.Drifted {
		d.logger.Warn("live traffic drifted from the training data", "model", k.model, "version", k.version,
			"share", rep.Dataset.DriftShare, "features", drifted, "rows", merged.GetRows())
	} else if seen {
		d.logger.Info("live traffic no longer drifts", "model", k.model, "version", k.version, "rows", merged.GetRows())
	}
}

// run flushes every few seconds until ctx ends, then closes and reports
// what it has.
func (d *driftMonitor) run(ctx context.Context) {
	tick := time.NewTicker(min(5*time.Second, d.opts.Window, d.opts.Report))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			d.flush(true)
			return
		case <-tick.C:
			d.flush(false)
		}
	}
}

// handleDrift answers GET /v1/drift?model=M: each of the model's versions'
// verdict over the evaluation window, as this agent judges it.
func (a *Agent) handleDrift(w http.ResponseWriter, r *http.Request) {
	model := r.URL.Query().Get("model")
	type versionDrift struct {
		Model   string       `json:"model"`
		Version uint64       `json:"version"`
		Report  drift.Report `json:"report"`
	}
	out := []versionDrift{}
	a.drift.mu.Lock()
	for k, rep := range a.drift.verdict {
		if model == "" || k.model == model {
			out = append(out, versionDrift{k.model, k.version, rep})
		}
	}
	a.drift.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Evaluation string         `json:"evaluation_window"`
		Versions   []versionDrift `json:"versions"`
	}{a.drift.opts.Evaluation.String(), out})
}
