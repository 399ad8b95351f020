package state

import (
	"errors"
	"fmt"
)

// Kind classifies why the state refused a change or a lookup. Each kind maps
// to one Connect code at the API boundary (see hub's errors.go); the names
// are the codes' wire names so that a refusal survives a trip through a
// forwarded apply unchanged.
type Kind uint8

// The kinds of refusal.
const (
	KindInvalid Kind = iota + 1
	KindNotFound
	KindAlreadyExists
	KindFailedPrecondition
)

var kindNames = map[Kind]string{
	KindInvalid:            "invalid_argument",
	KindNotFound:           "not_found",
	KindAlreadyExists:      "already_exists",
	KindFailedPrecondition: "failed_precondition",
}

// String returns the kind's wire name, e.g. "not_found".
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ParseKind is the inverse of String. It reports false for unknown names.
func ParseKind(s string) (Kind, bool) {
	for k, n := range kindNames {
		if n == s {
			return k, true
		}
	}
	return 0, false
}

// Error is a refusal with a message meant for the API caller.
type Error struct {
	Kind    Kind
	Message string
}

func (e *Error) Error() string { return e.Message }

func errorf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// Invalidf returns an invalid-argument refusal.
func Invalidf(format string, args ...any) *Error { return errorf(KindInvalid, format, args...) }

// NotFoundf returns a not-found refusal.
func NotFoundf(format string, args ...any) *Error { return errorf(KindNotFound, format, args...) }

// AlreadyExistsf returns an already-exists refusal.
func AlreadyExistsf(format string, args ...any) *Error {
	return errorf(KindAlreadyExists, format, args...)
}

// Preconditionf returns a failed-precondition refusal.
func Preconditionf(format string, args ...any) *Error {
	return errorf(KindFailedPrecondition, format, args...)
}

// KindOf returns the kind of a state error anywhere in err's chain, or zero.
func KindOf(err error) Kind {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Kind
	}
	return 0
}
