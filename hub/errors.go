package hub

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect/v2"

	"github.com/droverhq/drover/hub/state"
)

// maxMessageBytes caps one Connect message, either way. A version with the
// largest reference profile the state accepts fits well inside it.
const maxMessageBytes = 16 << 20

// compressMinBytes is the smallest message worth gzipping; smaller ones
// cost more CPU to compress than they save on a LAN.
const compressMinBytes = 8 << 10

// errNotLeader means this node is not the leader and nothing was applied:
// the caller may safely retry through the leader.
var errNotLeader = errors.New("this node is not the leader")

// unavailable builds the error for a cluster that cannot serve the request
// right now (no leader, no quorum, shutting down).
func unavailable(format string, args ...any) *connect.Error {
	return connect.NewError(connect.CodeUnavailable, fmt.Sprintf(format, args...))
}

var kindCodes = map[state.Kind]connect.Code{
	state.KindInvalid:            connect.CodeInvalidArgument,
	state.KindNotFound:           connect.CodeNotFound,
	state.KindAlreadyExists:      connect.CodeAlreadyExists,
	state.KindFailedPrecondition: connect.CodeFailedPrecondition,
}

// connectError maps any error a handler meets to the Connect error the
// caller sees. This is the one place where domain errors become codes.
func connectError(err error) error {
	if err == nil {
		return nil
	}
	if ce, ok := errors.AsType[*connect.Error](err); ok && !ce.IsRemote() {
		return ce
	}
	if se, ok := errors.AsType[*state.Error](err); ok {
		if code, ok := kindCodes[se.Kind]; ok {
			return connect.NewError(code, se.Message)
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, "deadline exceeded").WithCause(err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, "canceled").WithCause(err)
	case errors.Is(err, errNotLeader):
		return unavailable("this node lost its leadership; retry").WithCause(err)
	}
	return connect.NewError(connect.CodeInternal, "internal error").WithCause(err)
}
