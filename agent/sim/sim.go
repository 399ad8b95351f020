// Package sim simulates agents: each speaks the real protocol to the hub —
// enrols, heartbeats on a jittered interval, keeps a desired-state watch
// open, and reports every assignment of a new desired state ready (after a
// simulated load delay) — but does no model work, so that one process can
// stand in for thousands of machines in benchmarks and fleet-scale tests.
package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/hub/client"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// Config says what to simulate.
type Config struct {
	// Hubs are hub node addresses; agents are spread over them.
	Hubs []string
	// JoinToken is an agent token.
	JoinToken string
	// Agents is how many agents to simulate; Prefix starts their names.
	Agents int
	Prefix string
	// Heartbeat is each agent's heartbeat interval (jittered ±10%).
	Heartbeat time.Duration
	// Labels are given to every agent.
	Labels map[string]string
	// EnrollConcurrency bounds concurrent enrolments (default 64).
	EnrollConcurrency int
	// LoadDelay is how long a simulated agent takes to "load" a new
	// desired state before it reports its assignments ready (default 0:
	// at once). A newer state that arrives meanwhile replaces the one
	// loading, and its own delay starts.
	LoadDelay time.Duration
}

// Fleet is a running simulation.
type Fleet struct {
	cfg     Config
	clients []droverv1connect.AgentControlServiceClient
	http    []*http.Client

	mu         sync.Mutex
	latencies  []time.Duration // heartbeat round trips since the last Stats
	failures   atomic.Int64
	heartbeats atomic.Int64
	desired    atomic.Int64
	agents     []*simAgent

	reports        atomic.Int64 // reports acknowledged by the hub
	reportBatches  atomic.Int64 // Report calls that succeeded
	reportFailures atomic.Int64 // Report calls that failed
	lastReport     atomic.Int64 // when the latest acknowledgement came, in Unix nanoseconds
}

type simAgent struct {
	name, id, token string
	hub             int
	fingerprint     atomic.Value

	// changed wakes the reporter when a new desired state arrives.
	changed chan struct{}
	mu      sync.Mutex
	lastFP  string                 // the newest desired state's fingerprint
	pending *droverv1.DesiredState // a desired state not yet "loaded"
	readyAt time.Time              // when pending is loaded
	// Owned by the reporter goroutine.
	seq      uint64               // the last report's sequence number
	reported map[statusKey]uint64 // the version last reported per slot
}

// statusKey is an assignment's slot on an agent: a model and a role.
type statusKey struct {
	model string
	role  droverv1.AssignmentRole
}

// New prepares a fleet; Run starts it.
func New(cfg Config) (*Fleet, error) {
	if len(cfg.Hubs) == 0 || cfg.Agents <= 0 {
		return nil, errors.New("sim: hubs and a number of agents are required")
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 5 * time.Second
	}
	if cfg.EnrollConcurrency <= 0 {
		cfg.EnrollConcurrency = 64
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "sim"
	}
	f := &Fleet{cfg: cfg}
	for _, h := range cfg.Hubs {
		hc := client.NewHTTPClient()
		f.http = append(f.http, hc)
		f.clients = append(f.clients, droverv1connect.NewAgentControlServiceClient(connect.NewClient(
			connecthttp.NewTransport(hc, client.BaseURL(h)), bearerFromContext())))
	}
	return f, nil
}

type tokenKey struct{}

// bearerFromContext sends the token each simulated agent puts in its context.
func bearerFromContext() connect.ClientInterceptor {
	return func(next connect.ClientFunc) connect.ClientFunc {
		return func(ctx context.Context, spec connect.Spec) (connect.ClientStream, error) {
			if info, ok := connect.CallInfoForClientContext(ctx); ok {
				if t, _ := ctx.Value(tokenKey{}).(string); t != "" {
					info.RequestHeader().Set("Authorization", "Bearer "+t)
				}
			}
			return next(ctx, spec)
		}
	}
}

// Enroll enrols every agent, spread over the hubs.
func (f *Fleet) Enroll(ctx context.Context) error {
	sem := make(chan struct{}, f.cfg.EnrollConcurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for i := range f.cfg.Agents {
		a := &simAgent{name: fmt.Sprintf("%s-%05d", f.cfg.Prefix, i), hub: i % len(f.clients),
			changed: make(chan struct{}, 1), reported: map[statusKey]uint64{}}
		f.agents = append(f.agents, a)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			cctx := context.WithValue(ctx, tokenKey{}, f.cfg.JoinToken)
			var resp *droverv1.EnrollResponse
			var err error
			for attempt := range 5 {
				resp, err = f.clients[a.hub].Enroll(cctx, &droverv1.EnrollRequest{Name: a.name, Labels: f.cfg.Labels, Version: "sim",
					Inventory: &droverv1.Inventory{Host: &droverv1.Host{Hostname: a.name}, NvmlError: "simulated agent"}})
				if err == nil {
					break
				}
				time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", a.name, err))
				mu.Unlock()
				return
			}
			a.id, a.token, a.seq = resp.GetAgentId(), resp.GetToken(), resp.GetLastReportSeq()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Run heartbeats, watches and reports for every enrolled agent until ctx
// ends.
func (f *Fleet) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, a := range f.agents {
		if a.id == "" {
			continue
		}
		wg.Go(func() { f.watch(ctx, a) })
		wg.Go(func() { f.heartbeat(ctx, a) })
		wg.Go(func() { f.report(ctx, a) })
	}
	wg.Wait()
}

func (f *Fleet) heartbeat(ctx context.Context, a *simAgent) {
	actx := context.WithValue(ctx, tokenKey{}, a.token)
	// Start at a random point of the interval, as a fleet does.
	timer := time.NewTimer(rand.N(f.cfg.Heartbeat))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		fp, _ := a.fingerprint.Load().(string)
		start := time.Now()
		_, err := f.clients[a.hub].Heartbeat(actx, &droverv1.HeartbeatRequest{AgentId: a.id, DesiredFingerprint: fp})
		took := time.Since(start)
		if err != nil {
			if ctx.Err() == nil {
				f.failures.Add(1)
			}
		} else {
			f.heartbeats.Add(1)
			f.mu.Lock()
			f.latencies = append(f.latencies, took)
			f.mu.Unlock()
		}
		j := f.cfg.Heartbeat / 10
		timer.Reset(f.cfg.Heartbeat - j + rand.N(2*j+1))
	}
}

func (f *Fleet) watch(ctx context.Context, a *simAgent) {
	actx := context.WithValue(ctx, tokenKey{}, a.token)
	for ctx.Err() == nil {
		stream, err := f.clients[a.hub].WatchDesired(actx, &droverv1.WatchDesiredRequest{AgentId: a.id})
		if err == nil {
			for {
				msg, err := stream.Receive()
				if err != nil {
					break
				}
				a.fingerprint.Store(msg.GetDesired().GetFingerprint())
				f.desired.Add(1)
				a.setDesired(msg.GetDesired(), f.cfg.LoadDelay)
			}
			stream.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// setDesired takes a desired state from the watch: a new one (the hub
// resends an unchanged state as a keepalive, and on every new stream) is
// loaded, and then reported, by the agent's reporter.
func (a *simAgent) setDesired(d *droverv1.DesiredState, delay time.Duration) {
	a.mu.Lock()
	if d.GetFingerprint() == a.lastFP {
		a.mu.Unlock()
		return
	}
	a.lastFP, a.pending, a.readyAt = d.GetFingerprint(), d, time.Now().Add(delay)
	a.mu.Unlock()
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// takeLoaded returns the pending desired state once its load delay has
// passed (and forgets it), or when it will have.
func (a *simAgent) takeLoaded(now time.Time) (d *droverv1.DesiredState, readyAt time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending == nil {
		return nil, time.Time{}
	}
	if now.Before(a.readyAt) {
		return nil, a.readyAt
	}
	d, a.pending = a.pending, nil
	return d, time.Time{}
}

// statusReports turns a loaded desired state into the agent's next
// reports, numbered on from its last: every assignment whose slot now
// holds another version is READY and healthy, and every slot the state no
// longer has is REMOVED, as a real agent's reconciler reports them.
func (a *simAgent) statusReports(d *droverv1.DesiredState, now time.Time) []*droverv1.Report {
	ts := timestamppb.New(now)
	var out []*droverv1.Report
	add := func(st *droverv1.AssignmentStatus) {
		a.seq++
		st.Time = ts
		out = append(out, &droverv1.Report{Seq: a.seq, Time: ts, Body: &droverv1.Report_Assignment{Assignment: st}})
	}
	seen := map[statusKey]bool{}
	for _, as := range d.GetAssignments() {
		k := statusKey{as.GetModel(), as.GetRole()}
		seen[k] = true
		if v, ok := a.reported[k]; ok && v == as.GetVersion() {
			continue
		}
		a.reported[k] = as.GetVersion()
		add(&droverv1.AssignmentStatus{Model: k.model, Version: as.GetVersion(), Role: k.role,
			Phase: droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY, Health: droverv1.ServingHealth_SERVING_HEALTH_HEALTHY})
	}
	var gone []statusKey
	for k := range a.reported {
		if !seen[k] {
			gone = append(gone, k)
		}
	}
	slices.SortFunc(gone, func(x, y statusKey) int {
		if x.model != y.model {
			return strings.Compare(x.model, y.model)
		}
		return int(x.role) - int(y.role)
	})
	for _, k := range gone {
		add(&droverv1.AssignmentStatus{Model: k.model, Version: a.reported[k], Role: k.role, Phase: droverv1.AssignmentPhase_ASSIGNMENT_PHASE_REMOVED})
		delete(a.reported, k)
	}
	return out
}

// reportBatch bounds the reports of one Report call, as a real agent's.
const reportBatch = 500

// report delivers an agent's assignment statuses through the real Report
// RPC, like a real agent's outbox: in order, one batch per loaded desired
// state, resent with back-off (the same sequence numbers: the hub skips
// what it already took) until acknowledged.
func (f *Fleet) report(ctx context.Context, a *simAgent) {
	actx := context.WithValue(ctx, tokenKey{}, a.token)
	var outbox []*droverv1.Report
	var backoff time.Duration
	var retryAt time.Time
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		now := time.Now()
		d, loadingUntil := a.takeLoaded(now)
		if d != nil {
			outbox = append(outbox, a.statusReports(d, now)...)
		}
		if len(outbox) > 0 && !now.Before(retryAt) {
			batch := outbox[:min(len(outbox), reportBatch)]
			cctx, cancel := context.WithTimeout(actx, 30*time.Second)
			resp, err := f.clients[a.hub].Report(cctx, &droverv1.ReportRequest{AgentId: a.id, Reports: batch})
			cancel()
			switch {
			case err == nil:
				acked := resp.GetAckedSeq()
				n := len(outbox)
				outbox = slices.DeleteFunc(outbox, func(r *droverv1.Report) bool { return r.GetSeq() <= acked })
				f.reports.Add(int64(n - len(outbox)))
				f.reportBatches.Add(1)
				storeMax(&f.lastReport, time.Now().UnixNano())
				if len(outbox) < n {
					backoff, retryAt = 0, time.Time{}
					continue // the rest, if any, at once
				}
			case ctx.Err() != nil:
				return
			default:
				f.reportFailures.Add(1)
			}
			// Nothing acknowledged: back off, then resend.
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			retryAt = now.Add(backoff/2 + rand.N(backoff/2+1))
			continue
		}
		// Wait for a change, the pending state's load, or the retry.
		var wake time.Time
		if !loadingUntil.IsZero() {
			wake = loadingUntil
		}
		if len(outbox) > 0 && (wake.IsZero() || retryAt.Before(wake)) {
			wake = retryAt
		}
		var fire <-chan time.Time
		if !wake.IsZero() {
			timer.Reset(time.Until(wake))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-a.changed:
		case <-fire:
		}
		timer.Stop() // Go 1.23 timers: no stale tick survives Stop or Reset
	}
}

// storeMax raises v to x, unless it holds more.
func storeMax(v *atomic.Int64, x int64) {
	for {
		old := v.Load()
		if x <= old || v.CompareAndSwap(old, x) {
			return
		}
	}
}

// Stats are what the fleet saw since the previous call.
type Stats struct {
	Heartbeats int64
	Failures   int64
	P50, P99   time.Duration
	Max        time.Duration
	// DesiredMessages counts desired states received, in all.
	DesiredMessages int64
	// Reports counts the assignment statuses the hub acknowledged, in
	// all; ReportBatches the Report calls that carried them, and
	// ReportFailures the Report calls that failed (and were retried).
	Reports, ReportBatches, ReportFailures int64
	// LastReport is when the hub last acknowledged reports (zero before).
	LastReport time.Time
}

// Stats returns the heartbeat latencies since the last call, and resets them.
func (f *Fleet) Stats() Stats {
	f.mu.Lock()
	lat := f.latencies
	f.latencies = nil
	f.mu.Unlock()
	s := Stats{Heartbeats: f.heartbeats.Swap(0), Failures: f.failures.Swap(0), DesiredMessages: f.desired.Load(),
		Reports: f.reports.Load(), ReportBatches: f.reportBatches.Load(), ReportFailures: f.reportFailures.Load()}
	if at := f.lastReport.Load(); at != 0 {
		s.LastReport = time.Unix(0, at)
	}
	if len(lat) == 0 {
		return s
	}
	slices.Sort(lat)
	s.P50 = lat[len(lat)/2]
	s.P99 = lat[len(lat)*99/100]
	s.Max = lat[len(lat)-1]
	return s
}

// Enrolled returns how many agents enrolled.
func (f *Fleet) Enrolled() int {
	n := 0
	for _, a := range f.agents {
		if a.id != "" {
			n++
		}
	}
	return n
}
