// Package logging sets up Drover's structured logs (log/slog) and adapts them
// for the HashiCorp libraries (raft, go-plugin) that log through hclog, so
// that every line a process writes has one shape.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Options chooses the format and verbosity of a process's logs.
type Options struct {
	// Format is "text" (logfmt-like, reads well in journald) or "json".
	Format string
	// Level is "debug", "info", "warn" or "error".
	Level string
}

// New returns a logger writing to w. Unknown formats or levels are errors, so
// that a typo in a unit file is caught at start-up rather than ignored.
func New(w io.Writer, o Options) (*slog.Logger, error) {
	l, _, err := NewWithLevel(w, o)
	return l, err
}

// NewWithLevel is New, also returning the level, which can be changed while
// the logger is in use (on a configuration reload).
func NewWithLevel(w io.Writer, o Options) (*slog.Logger, *slog.LevelVar, error) {
	level, err := ParseLevel(o.Level)
	if err != nil {
		return nil, nil, err
	}
	lv := new(slog.LevelVar)
	lv.Set(level)
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(o.Format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), lv, nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), lv, nil
	default:
		return nil, nil, fmt.Errorf("unknown log format %q: want text or json", o.Format)
	}
}

// ParseLevel turns a level name into a slog.Level; empty means info.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug", "trace":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	default:
		return 0, fmt.Errorf("unknown log level %q: want debug, info, warn or error", s)
	}
}

// Discard returns a logger that drops everything, for tests.
func Discard() *slog.Logger {
	return slog.New(slog.DiscardHandler)
}
