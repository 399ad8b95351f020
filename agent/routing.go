package agent

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/droverhq/drover/agent/oip"
)

// route is one model's routing: its primary version, a canary that takes
// its traffic weight's share of requests, and a shadow that sees a copy
// of every answered request. Routes are immutable once published.
type route struct {
	rt      *servingRuntime
	name    string
	primary *servedVersion
	canary  *servedVersion
	shadow  *servedVersion
	// weight is the canary's share of requests, in percent, as the
	// route was published (a version's weight changes in place).
	weight    uint32
	versions  []string // every loaded version, in order
	byVersion map[string]*versionModel

	shadowStats *shadowStats
}

func (rt *route) version(v string) *versionModel {
	if rt == nil {
		return nil
	}
	return rt.byVersion[v]
}

// pick chooses the version that answers a request. The canary takes
// weight percent of requests; a request with an id is routed by a hash of
// it, so the same id always meets the same version (sticky) while the
// weights stand, and one without by chance.
func (rt *route) pick(id string) *servedVersion {
	c := rt.canary
	if c == nil {
		return rt.primary
	}
	if rt.primary == nil || rt.weight >= 100 {
		return c
	}
	if rt.weight == 0 {
		return rt.primary
	}
	var bucket uint32
	if id != "" {
		h := fnv.New32a()
		_, _ = h.Write([]byte(id))
		bucket = h.Sum32() % 100
	} else {
		bucket = rand.Uint32N(100)
	}
	if bucket < rt.weight {
		return c
	}
	return rt.primary
}

// Metadata describes the model as its primary version does.
func (rt *route) Metadata() oip.ModelMetadata {
	v := rt.primary
	if v == nil {
		v = rt.canary
	}
	return rt.byVersion[v.name].Metadata()
}

// Ready reports whether the version most requests go to is ready.
func (rt *route) Ready() bool {
	if rt.primary != nil {
		return rt.primary.ready()
	}
	return rt.canary.ready()
}

// Infer routes a request, answers it, and mirrors it to the shadow.
func (rt *route) Infer(ctx context.Context, r *oip.InferRequest) (*oip.InferResponse, error) {
	cur := rt
	for range 3 {
		v := cur.pick(r.ID)
		if v == nil {
			break
		}
		resp, err := v.infer(ctx, r)
		if errors.Is(err, errRetired) {
			// Switched under us: the new table has the version that
			// replaced it.
			if cur = (*rt.rt.routes.Load())[rt.name]; cur == nil {
				break
			}
			continue
		}
		if err != nil {
			return nil, &oip.VersionError{Version: v.name, Err: err}
		}
		if cur.shadow != nil {
			cur.mirror(r, resp)
		}
		return resp, nil
	}
	return nil, fmt.Errorf("%w: %s is no longer served here", oip.ErrModelNotFound, rt.name)
}

// mirror sends a copy of an answered request to the shadow version, off
// the caller's path, and compares the answers.
func (rt *route) mirror(r *oip.InferRequest, primary *oip.InferResponse) {
	s, stats := rt.shadow, rt.shadowStats
	if !stats.admit() {
		stats.count(s, "dropped")
		return
	}
	// The handler may trim the response's outputs once Infer returns;
	// the tensors themselves it leaves alone.
	want := slices.Clone(primary.Outputs)
	go func() {
		defer stats.done()
		// Off the caller's path, nothing else would catch a panic: one
		// shadow's bug would take the whole agent down.
		defer func() {
			if p := recover(); p != nil {
				stats.count(s, "panic")
				rt.rt.logger.Error("a shadow version panicked answering a mirrored request", "model", s.model, "version", s.name,
					"panic", p, "stack", string(debug.Stack()))
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), shadowTimeout)
		defer cancel()
		start := time.Now()
		got, err := s.infer(ctx, r)
		if err != nil {
			stats.count(s, "error")
			return
		}
		stats.latency.WithLabelValues(s.model, s.name).Observe(time.Since(start).Seconds())
		agree, total := agreement(want, got.Outputs)
		stats.count(s, "compared")
		stats.rows(s, agree, total)
	}()
}

// shadowTimeout bounds a mirrored request.
const shadowTimeout = 10 * time.Second

// shadowTolerance is how far apart two numeric answers may be and still
// agree: relative to the primary's, or absolute near zero.
const shadowTolerance = 0.01

// agreement compares a shadow's answer with the primary's, row by row, on
// one output: "label" when the primary has it, else its first. Strings
// agree when equal, numbers when within shadowTolerance of each other
// (relative; 1e-9 absolute near zero). A shadow without that output, or
// with another number of rows, agrees on no row.
func agreement(primary, shadow []*oip.Tensor) (agree, total int) {
	if len(primary) == 0 {
		return 0, 0
	}
	p := primary[0]
	if i := slices.IndexFunc(primary, func(t *oip.Tensor) bool { return t.Name == outputLabel }); i >= 0 {
		p = primary[i]
	}
	if len(p.Shape) == 0 {
		return 0, 0
	}
	total = int(p.Shape[0])
	i := slices.IndexFunc(shadow, func(t *oip.Tensor) bool { return t.Name == p.Name })
	if i < 0 || total == 0 {
		return 0, total
	}
	s := shadow[i]
	if len(s.Shape) == 0 || s.Shape[0] != p.Shape[0] || s.Len() != p.Len() || (p.Datatype == oip.Bytes) != (s.Datatype == oip.Bytes) {
		return 0, total
	}
	per := p.Len() / total
	for row := range total {
		same := true
		for j := row * per; j < (row+1)*per && same; j++ {
			if p.Datatype == oip.Bytes {
				same = p.Strings[j] == s.Strings[j]
			} else {
				a, b := p.Numbers[j], s.Numbers[j]
				same = math.Abs(a-b) <= max(shadowTolerance*math.Abs(a), 1e-9)
			}
		}
		if same {
			agree++
		}
	}
	return agree, total
}

// shadowStats counts mirrored requests and how often shadows agree.
type shadowStats struct {
	slots    chan struct{}
	requests *prometheus.CounterVec
	rowsVec  *prometheus.CounterVec
	latency  *prometheus.HistogramVec

	mu    sync.Mutex
	agree map[shadowKey][2]uint64 // rows agreeing, rows compared
	// observe, if set, is told of every comparison (the metric windows).
	observe func(model, version string, agreed, rows int)
}

type shadowKey struct{ model, version string }

func newShadowStats(concurrency int) *shadowStats {
	return &shadowStats{
		slots: make(chan struct{}, concurrency),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_agent_shadow_requests_total",
			Help: "Requests mirrored to shadow versions, by model, shadow version and result (compared, error, dropped, panic).",
		}, []string{"model", "version", "result"}),
		rowsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_agent_shadow_rows_total",
			Help: "Rows a shadow version answered, by model, shadow version and whether the answer agreed with the primary's.",
		}, []string{"model", "version", "agreement"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "drover_agent_shadow_duration_seconds",
			Help:    "Time a shadow version took to answer a mirrored request.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 18),
		}, []string{"model", "version"}),
		agree: map[shadowKey][2]uint64{},
	}
}

func (s *shadowStats) collectors() []prometheus.Collector {
	return []prometheus.Collector{s.requests, s.rowsVec, s.latency}
}

func (s *shadowStats) admit() bool {
	select {
	case s.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s *shadowStats) done() { <-s.slots }

func (s *shadowStats) count(v *servedVersion, result string) {
	s.requests.WithLabelValues(v.model, v.name, result).Inc()
}

func (s *shadowStats) rows(v *servedVersion, agree, total int) {
	s.rowsVec.WithLabelValues(v.model, v.name, "agree").Add(float64(agree))
	s.rowsVec.WithLabelValues(v.model, v.name, "disagree").Add(float64(total - agree))
	s.mu.Lock()
	k := shadowKey{v.model, v.name}
	c := s.agree[k]
	s.agree[k] = [2]uint64{c[0] + uint64(agree), c[1] + uint64(total)}
	s.mu.Unlock()
	if s.observe != nil {
		s.observe(v.model, v.name, agree, total)
	}
}

// Agreement returns the share of compared rows on which a model's shadow
// version agreed with the primary, and how many rows were compared.
func (s *shadowStats) Agreement(model, version string) (rate float64, rows uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.agree[shadowKey{model, version}]
	if c[1] == 0 {
		return 0, 0
	}
	return float64(c[0]) / float64(c[1]), c[1]
}
