package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/droverhq/drover/agent/oip"
)

func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.Alive() {
			http.Error(w, "the agent's loops have stalled", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", a.handleReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /v1/agent", a.handleStatus)
	mux.HandleFunc("GET /v1/windows", a.handleWindows)
	mux.HandleFunc("GET /v1/drift", a.handleDrift)
	mux.HandleFunc("POST /v1/feedback", a.handleFeedback)
	mux.HandleFunc("GET /v1/labelled", a.handleLabelled)
	if b, ok := a.runtime.(oip.Backend); ok {
		h := oip.NewHandler(b)
		h.Observe = a.observe
		mux.Handle("/v2", h)
		mux.Handle("/v2/", h)
	}
	return mux
}

// observe is the prediction path's hook: every inference request, answered
// or refused, once its answer is written. It feeds the Prometheus metrics,
// the metric windows, the drift windows, the prediction samples and the
// agent's Observers.
// It runs on the request's goroutine: what it calls must be quick.
func (a *Agent) observe(o oip.Observation) {
	a.metrics.observeInference(o)
	a.windows.observe(o)
	a.drift.observe(o)
	a.samples.record(o)
	for _, fn := range a.cfg.Observers {
		fn(o)
	}
}

// handleReady answers 200 when everything the agent is assigned is loaded
// and ready, and 503 with what is not otherwise.
func (a *Agent) handleReady(w http.ResponseWriter, _ *http.Request) {
	if !a.rec.Converged() {
		var waiting []string
		for _, s := range a.rec.Statuses() {
			waiting = append(waiting, fmt.Sprintf("%s v%d %s", s.Key, s.Version, strings.ToLower(strings.TrimPrefix(s.Phase.String(), "ASSIGNMENT_PHASE_"))))
		}
		http.Error(w, "not ready: "+strings.Join(waiting, ", "), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// Status is what /v1/agent answers: the agent's own view of itself.
type Status struct {
	AgentID     string `json:"agent_id"`
	Name        string `json:"name"`
	Connected   bool   `json:"hub_connected"`
	OutboxDepth int    `json:"outbox_reports"`
	// LastReport is the sequence number of the newest report made.
	LastReport  uint64   `json:"last_report_seq"`
	Fingerprint string   `json:"desired_fingerprint"`
	Assignments []string `json:"assignments"`
	GPUs        any      `json:"gpus"`
	// StoreLowSpace is true while the store refuses writes for want of
	// space; StoreFreeBytes is what its file system has free.
	StoreLowSpace  bool   `json:"store_low_space"`
	StoreFreeBytes uint64 `json:"store_free_bytes"`
	// HeldReports wait in memory for the store to have room.
	HeldReports int `json:"held_reports"`
}

func (a *Agent) handleStatus(w http.ResponseWriter, _ *http.Request) {
	_, verdicts, _ := a.gpus.snapshot()
	sp := a.store.Space()
	st := Status{AgentID: a.ID(), Name: a.cfg.Name, Connected: a.connected.Load(), OutboxDepth: a.store.Depth(), LastReport: a.store.NextSeq() - 1, GPUs: verdicts, Assignments: []string{},
		StoreLowSpace: sp.Low, StoreFreeBytes: sp.FreeBytes, HeldReports: sp.HeldReports}
	a.mu.Lock()
	st.Fingerprint = a.desiredFP
	a.mu.Unlock()
	for _, s := range a.rec.Statuses() {
		st.Assignments = append(st.Assignments, fmt.Sprintf("%s v%d %s %s", s.Key, s.Version, strings.ToLower(strings.TrimPrefix(s.Phase.String(), "ASSIGNMENT_PHASE_")), s.Message))
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(st)
}
