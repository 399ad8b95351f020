package agent

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/agent/reconcile"
	"github.com/droverhq/drover/agent/store"
	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/internal/buildinfo"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// Everything the agent says to the hub retries until it gets through: a
// hub that errs or is gone never stops the agent from serving what it has.

// backoff is a jittered exponential back-off.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
}

// next returns the next wait: full jitter over a doubling ceiling.
func (b *backoff) next() time.Duration {
	if b.cur < b.min {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// jitter spreads d by ±10%, so that a fleet restarted together does not
// heartbeat in lockstep.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + rand.N(d/5+1)
}

// connect enrols (once) and then keeps the heartbeat, the desired-state
// watch and the report sender running until ctx ends.
func (a *Agent) connect(ctx context.Context) {
	if !a.enrol(ctx) {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { a.heartbeats(ctx) })
	wg.Go(func() { a.watch(ctx) })
	wg.Go(func() { a.sendReports(ctx) })
	wg.Wait()
}

// enrol gets the agent an identity, unless it has one. It reports false if
// ctx ended first.
func (a *Agent) enrol(ctx context.Context) bool {
	a.enrolMu.Lock()
	defer a.enrolMu.Unlock()
	if a.cred.Load() != nil {
		return true
	}
	return a.enrolLocked(ctx)
}

// enrolLocked enrols with the join token until the hub answers or ctx ends
// (false), and puts the new identity in place. Called with enrolMu held.
func (a *Agent) enrolLocked(ctx context.Context) bool {
	b := backoff{min: time.Second, max: 30 * time.Second}
	for {
		inv := a.gpus.inventory()
		a.mu.Lock()
		labels := a.labels
		a.mu.Unlock()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := a.join.AgentControl.Enroll(cctx, &droverv1.EnrollRequest{
			Name: a.cfg.Name, Labels: labels, Inventory: inv, Version: buildinfo.Get().Version,
		})
		cancel()
		if err == nil {
			id := &store.Identity{AgentID: resp.GetAgentId(), Name: a.cfg.Name, Token: resp.GetToken(), Hubs: a.cfg.Hubs}
			if err := a.store.SkipTo(resp.GetLastReportSeq() + 1); err != nil {
				a.logger.Error("cannot store the report sequence", "err", err)
			}
			if err := a.setIdentity(id); err != nil {
				a.logger.Error("cannot use the identity the hub gave", "err", err)
				return false
			}
			if err := a.store.SetIdentity(id); err != nil {
				a.logger.Error("cannot store the agent's identity; it will enrol again after a restart", "err", err)
			}
			a.gpus.inventoryReported(inv)
			a.logger.Info("enrolled with the hub", "agent_id", id.AgentID)
			// What changed while the request was out (trainers reloaded,
			// say) was not in it, and the checks before had no identity
			// to report it with.
			a.gpus.checkInventory()
			return true
		}
		wait := b.next()
		switch connect.CodeOf(err) {
		case connect.CodeUnauthenticated, connect.CodePermissionDenied:
			a.logger.Error("the hub refused the join token (--join-token, DROVER_JOIN_TOKEN): it is unknown, revoked, expired or not an agent token; trying again", "err", err, "retry_in", wait.Round(time.Millisecond))
		default:
			a.logger.Warn("cannot enrol yet", "err", err, "retry_in", wait.Round(time.Millisecond))
		}
		if !sleep(ctx, wait) {
			return false
		}
	}
}

// reenrol replaces a credential the hub refused by enrolling again. The
// refused one stays in place until the new one is there, so that the
// heartbeat, the watch and the report sender always have one to use. The
// first of them to be refused enrols; the others, refused too, wait for it
// here and go on with the new credential.
func (a *Agent) reenrol(ctx context.Context, refused *credential) {
	a.enrolMu.Lock()
	defer a.enrolMu.Unlock()
	if a.cred.Load() != refused {
		return // replaced while this caller's request was out
	}
	a.logger.Warn("the hub no longer accepts this agent's credential; enrolling again", "agent_id", refused.id.AgentID)
	a.enrolLocked(ctx)
}

func (a *Agent) heartbeats(ctx context.Context) {
	b := backoff{min: time.Second, max: 30 * time.Second}
	for {
		cr := a.cred.Load()
		a.mu.Lock()
		fp := a.desiredFP
		a.mu.Unlock()
		cctx, cancel := context.WithTimeout(ctx, a.cfg.HeartbeatInterval)
		resp, err := cr.hub.AgentControl.Heartbeat(cctx, &droverv1.HeartbeatRequest{
			AgentId: cr.id.AgentID, DesiredFingerprint: fp, OutboxDepth: uint64(a.store.Depth()),
		})
		cancel()
		wait := jitter(a.cfg.HeartbeatInterval)
		switch {
		case err == nil:
			b.reset()
			a.connected.Store(true)
			if resp.GetDesiredFingerprint() != fp {
				a.logger.Info("the hub holds a newer desired state than the watch delivered; watching again")
				select {
				case a.rewatch <- struct{}{}:
				default:
				}
			}
		case connect.CodeOf(err) == connect.CodeUnauthenticated:
			a.connected.Store(false)
			a.reenrol(ctx, cr)
		default:
			a.connected.Store(false)
			a.metrics.heartbeatFailures.Inc()
			wait = min(b.next(), a.cfg.HeartbeatInterval)
			a.logger.Debug("heartbeat failed", "err", err, "retry_in", wait.Round(time.Millisecond))
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

// watchIdle is how long a watch may go without a message (the hub sends
// one at least every 15 s) before the agent assumes the stream is dead.
const watchIdle = 40 * time.Second

// watch keeps a desired-state stream open to one hub node after another.
func (a *Agent) watch(ctx context.Context) {
	b := backoff{min: 200 * time.Millisecond, max: 15 * time.Second}
	for i := 0; ctx.Err() == nil; i++ {
		addr := a.cfg.Hubs[i%len(a.cfg.Hubs)]
		cr := a.cred.Load()
		err := a.watchOnce(ctx, addr, cr)
		if ctx.Err() != nil {
			return
		}
		if connect.CodeOf(err) == connect.CodeUnauthenticated {
			a.reenrol(ctx, cr)
		}
		wait := b.next()
		a.logger.Debug("desired-state watch ended", "hub", addr, "err", err, "retry_in", wait.Round(time.Millisecond))
		if !sleep(ctx, wait) {
			return
		}
	}
}

func (a *Agent) watchOnce(ctx context.Context, addr string, cr *credential) error {
	id := cr.id
	ctl := droverv1connect.NewAgentControlServiceClient(connect.NewClient(
		connecthttp.NewTransport(a.streamHTTP, client.BaseURL(addr)),
		client.Bearer(func() string { return id.Token })))
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := ctl.WatchDesired(sctx, &droverv1.WatchDesiredRequest{AgentId: id.AgentID})
	if err != nil {
		return err
	}
	defer stream.Close()
	// A stream that goes quiet is dead; so is one the heartbeat says missed
	// a change.
	idle := time.AfterFunc(watchIdle, cancel)
	defer idle.Stop()
	go func() {
		select {
		case <-a.rewatch:
			cancel()
		case <-sctx.Done():
		}
	}()
	for {
		msg, err := stream.Receive()
		if err != nil {
			return err
		}
		idle.Reset(watchIdle)
		a.setDesired(msg.GetDesired())
	}
}

// setDesired takes a desired state from the hub: stored first (it is what
// the agent serves if it restarts with the hub away), then reconciled.
func (a *Agent) setDesired(d *droverv1.DesiredState) {
	a.mu.Lock()
	same := d.GetFingerprint() == a.desiredFP
	a.desiredFP = d.GetFingerprint()
	a.mu.Unlock()
	if same {
		return
	}
	if a.cfg.OnDesired != nil {
		a.cfg.OnDesired(d)
	}
	if err := a.store.SetDesired(d); err != nil {
		a.logger.Error("cannot store the desired state", "err", err)
	}
	a.metrics.desiredUpdates.Inc()
	a.logger.Info("new desired state", "assignments", len(d.GetAssignments()), "draining", d.GetDraining(),
		"training", len(d.GetTraining()), "exports", len(d.GetExports()))
	a.rec.SetDesired(d)
	a.retrain.sync(d)
}

// Reports go in batches of at most this many, or this many bytes.
const (
	reportBatch      = 500
	reportBatchBytes = 4 << 20
)

// sendReports delivers the outbox in order whenever it has something,
// removing what the hub acknowledges.
func (a *Agent) sendReports(ctx context.Context) {
	b := backoff{min: time.Second, max: 30 * time.Second}
	batch := reportBatch
	for ctx.Err() == nil {
		cr := a.cred.Load()
		if !a.store.Synced() {
			// Where the hub stands first: see store.Sync.
			if err := a.syncReports(ctx, cr); err != nil {
				wait := b.next()
				a.logger.Debug("cannot ask the hub for its last report yet", "err", err, "retry_in", wait.Round(time.Millisecond))
				if connect.CodeOf(err) == connect.CodeUnauthenticated {
					a.reenrol(ctx, cr)
				} else if !sleep(ctx, wait) {
					return
				}
				continue
			}
		}
		if err := a.store.TakeLosses(a.now()); err != nil && !errors.Is(err, store.ErrNoSpace) {
			a.logger.Error("cannot record dropped reports", "err", err)
		}
		pending, err := a.store.Pending(batch, reportBatchBytes)
		if err != nil {
			a.logger.Error("cannot read the outbox", "err", err)
		}
		if len(pending) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-a.store.Changed():
			case <-time.After(10 * time.Second):
			}
			continue
		}
		err = a.deliver(ctx, cr, pending)
		switch {
		case err == nil:
			b.reset()
			batch = reportBatch
			continue
		case connect.CodeOf(err) == connect.CodeInvalidArgument && batch > 1:
			batch = 1 // find the report the hub refuses
			continue
		case connect.CodeOf(err) == connect.CodeInvalidArgument:
			a.logger.Error("the hub refuses a report; dropping it", "seq", pending[0].GetSeq(), "err", err)
			_ = a.store.Ack(pending[0].GetSeq())
			a.metrics.reportsRefused.Inc()
			continue
		case connect.CodeOf(err) == connect.CodeUnauthenticated:
			a.reenrol(ctx, cr)
			continue
		}
		wait := b.next()
		a.logger.Debug("cannot deliver reports yet", "pending", a.store.Depth(), "err", err, "retry_in", wait.Round(time.Millisecond))
		if !sleep(ctx, wait) {
			return
		}
	}
}

// syncReports asks the hub for the last report it has from this agent (a
// report request with none in it) and tells the store.
func (a *Agent) syncReports(ctx context.Context, cr *credential) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := cr.hub.AgentControl.Report(cctx, &droverv1.ReportRequest{AgentId: cr.id.AgentID})
	if err != nil {
		return err
	}
	return a.store.Sync(resp.GetAckedSeq())
}

func (a *Agent) deliver(ctx context.Context, cr *credential, reports []*droverv1.Report) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := cr.hub.AgentControl.Report(cctx, &droverv1.ReportRequest{AgentId: cr.id.AgentID, Reports: reports})
	if err != nil {
		return err
	}
	if err := a.store.Ack(resp.GetAckedSeq()); err != nil {
		return err
	}
	a.metrics.reportsSent.Add(float64(len(reports)))
	return nil
}

// flushReports tries once, briefly, to deliver what is left at shutdown.
func (a *Agent) flushReports(ctx context.Context) {
	cr := a.cred.Load()
	if cr == nil {
		return
	}
	if pending, err := a.store.Pending(reportBatch, reportBatchBytes); err == nil && len(pending) > 0 {
		if err := a.deliver(ctx, cr, pending); err != nil && !errors.Is(err, context.Canceled) {
			a.logger.Info("reports left in the outbox for next time", "pending", a.store.Depth())
		}
	}
}

// statusProto turns a reconciler status into its report.
func statusProto(s reconcile.Status) *droverv1.AssignmentStatus {
	return &droverv1.AssignmentStatus{
		Model: s.Key.Model, Version: s.Version, Role: s.Key.Role, Phase: s.Phase,
		Message: s.Message, Time: timestamppb.New(s.Time), Attempts: int32(s.Attempts), ServingVersion: s.Serving,
	}
}
