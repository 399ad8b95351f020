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

	mu  sync.Mutex
	buf map[string][][]byte // by model
	n   int
}

const samplerBuffer = 10_000

func newSampler(st *store.Store, rate float64, keep int, logger *slog.Logger) *sampler {
	return &sampler{st: st, rate: rate, keep: keep, logger: logger, buf: map[string][][]byte{},
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
}

// flush writes what is buffered.
func (s *sampler) flush() {
	s.mu.Lock()
	buf := s.buf
	s.buf, s.n = map[string][][]byte{}, 0
	s.mu.Unlock()
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
