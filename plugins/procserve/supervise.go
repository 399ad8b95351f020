package procserve

import (
	"context"
	"time"
)

// supervise watches the model's running process p until the model is
// unloaded, then stops it. A process that exits in the meantime is started
// again after a back-off, which doubles from backoffMin to backoffMax
// while the process keeps dying and resets once it has stayed ready for
// stableAfter. It closes in.done when it returns.
func (in *instance) supervise(p *process) {
	defer close(in.done)
	s := in.srv
	var failures int
	for {
		select {
		case <-in.ctx.Done():
			in.current.Store(nil)
			p.stop(s.cfg.StopTimeout)
			in.logger.Info("model server stopped", "pid", p.cmd.Process.Pid, "status", p.exitStatus())
			return
		case <-p.exited:
		}
		in.current.Store(nil)
		up := time.Since(p.ready)
		p.kill() // what it started must not hold the port or the GPU
		p.awaitLogs(time.Second)
		if up >= s.stableAfter {
			failures = 0
		}
		in.logger.Error("model server exited; restarting it", "pid", p.cmd.Process.Pid,
			"status", p.exitStatus(), "ready_for", up.Round(time.Millisecond), "last_output", p.tail.String())

		for {
			wait := backoff(failures, s.backoffMin, s.backoffMax)
			failures++
			in.logger.Info("restarting model server", "in", wait, "restarts", failures)
			if !sleep(in.ctx, wait) {
				return
			}
			np, err := in.start(in.ctx)
			if err == nil {
				p = np
				in.current.Store(p)
				break
			}
			if in.ctx.Err() != nil {
				return
			}
			in.logger.Error("model server failed to start again", "err", err)
		}
	}
}

// backoff returns the wait before restart number n+1: lo doubled n times,
// at most hi.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for range n {
		if d >= hi/2 {
			return hi
		}
		d *= 2
	}
	return min(d, hi)
}

// sleep waits d, or until ctx ends; it reports whether the whole d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
