// Package sim simulates agents: each speaks the real protocol to the hub —
// enrols, heartbeats on a jittered interval, and keeps a desired-state
// watch open — but does no model work, so that one process can stand in
// for thousands of machines in benchmarks and fleet-scale tests.
package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"

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
}

type simAgent struct {
	name, id, token string
	hub             int
	fingerprint     atomic.Value
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
		a := &simAgent{name: fmt.Sprintf("%s-%05d", f.cfg.Prefix, i), hub: i % len(f.clients)}
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
			a.id, a.token = resp.GetAgentId(), resp.GetToken()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Run heartbeats and watches for every enrolled agent until ctx ends.
func (f *Fleet) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, a := range f.agents {
		if a.id == "" {
			continue
		}
		wg.Go(func() { f.watch(ctx, a) })
		wg.Go(func() { f.heartbeat(ctx, a) })
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
			}
			stream.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
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
}

// Stats returns the heartbeat latencies since the last call, and resets them.
func (f *Fleet) Stats() Stats {
	f.mu.Lock()
	lat := f.latencies
	f.latencies = nil
	f.mu.Unlock()
	s := Stats{Heartbeats: f.heartbeats.Swap(0), Failures: f.failures.Swap(0), DesiredMessages: f.desired.Load()}
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
