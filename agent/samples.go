package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/agent/store"
)

// Sample is one prediction kept on the agent, in the journal
// "samples/<model>": what was asked and what was answered. Drift detection
// and feedback read them back.
type Sample struct {
	Time    time.Time     `json:"time"`
	Model   string        `json:"model"`
	Version string        `json:"version"`
	ID      string        `json:"id,omitempty"`
	Inputs  []*oip.Tensor `json:"inputs"`
	Outputs []*oip.Tensor `json:"outputs"`
}

// sampler keeps a fraction of answered predictions. Recording only
// appends to a bounded buffer; a loop writes the buffer to the store once
// a second, one synced transaction per model, so the prediction path never
// waits on the disk. When the buffer is full, samples are dropped and
// counted.
type sampler struct {
	st      *store.Store
	rate    float64
	keep    int // records per model journal
	logger  *slog.Logger
	dropped prometheus.Counter

	// For feedback: kept predictions by model and request id, for
	// retention; classes names a version's classes (for probabilities).
	retention time.Duration
	classes   func(model, version string) []string

	mu    sync.Mutex
	buf   map[string][][]byte          // by model
	preds map[string]map[string][]byte // by model, then request id
	n     int
}

const samplerBuffer = 10_000

func newSampler(st *store.Store, rate float64, keep int, logger *slog.Logger) *sampler {
	return &sampler{st: st, rate: rate, keep: keep, logger: logger, buf: map[string][][]byte{}, preds: map[string]map[string][]byte{},
		retention: 24 * time.Hour, classes: func(string, string) []string { return nil },
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_agent_prediction_samples_dropped_total", Help: "Prediction samples dropped because the write buffer was full.",
		})}
}

// record keeps the prediction with probability rate.
func (s *sampler) record(o oip.Observation) {
	if s == nil || s.rate <= 0 || o.Status != 200 || o.Request == nil || o.Response == nil || rand.Float64() >= s.rate {
		return
	}
	b, err := json.Marshal(Sample{Time: time.Now().UTC(), Model: o.Model, Version: o.Version, ID: o.Request.ID,
		Inputs: o.Request.Inputs, Outputs: o.Response.Outputs})
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n >= samplerBuffer {
		s.dropped.Inc()
		return
	}
	s.buf[o.Model] = append(s.buf[o.Model], b)
	s.n++
	if o.Request.ID != "" {
		if lp, ok := loggedOf(o, s.classes(o.Model, o.Version)); ok {
			if pb, err := json.Marshal(lp); err == nil {
				if s.preds[o.Model] == nil {
					s.preds[o.Model] = map[string][]byte{}
				}
				s.preds[o.Model][o.Request.ID] = pb
			}
		}
	}
}

// flush writes what is buffered.
func (s *sampler) flush() {
	s.mu.Lock()
	buf, preds := s.buf, s.preds
	s.buf, s.preds, s.n = map[string][][]byte{}, map[string]map[string][]byte{}, 0
	s.mu.Unlock()
	for model, byID := range preds {
		if err := s.st.PutPredictions(model, byID, s.retention); err != nil {
			s.logger.Warn("predictions not kept for feedback", "model", model, "predictions", len(byID), "err", err)
		}
	}
	for model, recs := range buf {
		j, err := s.st.Journal("samples/"+model, s.keep)
		if err == nil {
			if len(recs) > s.keep {
				recs = recs[len(recs)-s.keep:]
			}
			_, err = j.Append(recs...)
		}
		if err != nil {
			s.logger.Warn("prediction samples not stored", "model", model, "samples", len(recs), "err", err)
		}
	}
}

// run flushes every second until ctx ends, then once more.
func (s *sampler) run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			s.flush()
			return
		case <-tick.C:
			s.flush()
		}
	}
}
