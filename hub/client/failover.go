package client

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"syscall"

	"connectrpc.com/connect/v2"
)

// failover is a connect.Transport over several hub nodes. A unary call goes
// to the node that last answered; if that node cannot be reached at all (the
// connection is refused or cannot be made, so the request never arrived) it
// is tried on the next node, and so on round the list. A call with no side
// effects (a read) is also retried elsewhere when a node answers
// Unavailable, as a node cut off from the quorum does. Other calls are never
// retried: a write whose outcome is unknown must not be applied twice.
type failover struct {
	transports []connect.Transport
	current    atomic.Int32
}

func (f *failover) NewClientStream(ctx context.Context, spec connect.Spec) (connect.ClientStream, error) {
	if len(f.transports) == 1 || spec.StreamType != connect.StreamTypeUnary {
		return f.transports[int(f.current.Load())%len(f.transports)].NewClientStream(ctx, spec)
	}
	return &unaryCall{f: f, ctx: ctx, spec: spec}, nil
}

// unaryCall buffers the request of a unary call and makes the call when the
// response is asked for, so that it can be replayed on another node.
type unaryCall struct {
	f    *failover
	ctx  context.Context
	spec connect.Spec
	req  any

	inner connect.ClientStream
}

func (u *unaryCall) SendHeaders() error { return nil }

func (u *unaryCall) Send(msg any) error {
	u.req = msg
	return nil
}

func (u *unaryCall) CloseSend() error { return nil }

func (u *unaryCall) Receive(msg any) error {
	if u.inner != nil {
		return u.inner.Receive(msg)
	}
	n := len(u.f.transports)
	start := int(u.f.current.Load())
	var err error
	for i := range n {
		idx := (start + i) % n
		err = u.try(idx, msg)
		if err == nil || !u.retriable(err) || u.ctx.Err() != nil {
			if err == nil {
				u.f.current.Store(int32(idx))
			}
			return err
		}
		if u.inner != nil {
			_ = u.inner.Close()
			u.inner = nil
		}
	}
	return err
}

func (u *unaryCall) try(idx int, msg any) error {
	s, err := u.f.transports[idx].NewClientStream(u.ctx, u.spec)
	if err != nil {
		return err
	}
	u.inner = s
	if err := s.Send(u.req); err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	return s.Receive(msg)
}

func (u *unaryCall) retriable(err error) bool {
	if unreachable(err) {
		return true
	}
	return u.spec.IdempotencyLevel == connect.IdempotencyNoSideEffects && connect.CodeOf(err) == connect.CodeUnavailable
}

// unreachable reports whether err means the request never reached a server.
func unreachable(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

func (u *unaryCall) Close() error {
	if u.inner != nil {
		return u.inner.Close()
	}
	return nil
}
