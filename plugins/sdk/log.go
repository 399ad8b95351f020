package sdk

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// pluginStderr is the process's standard error as the agent started it.
// go-plugin's Serve points os.Stderr elsewhere (a pipe it forwards), so
// it is kept here, before main runs.
var pluginStderr = os.Stderr

// Logger returns the logger a plugin should log with: its records reach
// the agent's log with their level and attributes, under the plugin's
// name. Serve makes it the default logger (slog's and the log package's),
// so slog.Info and log.Printf reach the agent too; so do lines written to
// standard error, at info.
func Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(pluginStderr, &slog.HandlerOptions{
		Level:       slog.LevelDebug,
		ReplaceAttr: hclogJSON,
	}))
}

// hclogJSON renames slog's keys to the JSON go-plugin reads from a
// plugin's standard error: "@message", "@level" and "@timestamp".
func hclogJSON(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.MessageKey:
		a.Key = "@message"
	case slog.LevelKey:
		a.Key = "@level"
		a.Value = slog.StringValue(strings.ToLower(a.Value.Any().(slog.Level).String()))
	case slog.TimeKey:
		a.Key = "@timestamp"
		a.Value = slog.StringValue(a.Value.Time().Format("2006-01-02T15:04:05.000000Z07:00"))
	}
	return a
}

// pluginLog is the logger Launch gives go-plugin. go-plugin logs what a
// plugin writes to standard error before it serves (a plugin that fails
// at start-up says why there) through a logger named after the binary,
// at debug when a line carries no level: those lines are the plugin's
// words to the operator, so they are raised to info, and the last few are
// kept for Launch's error.
type pluginLog struct {
	hclog.Logger
	binary string
	tail   *tail
}

func (l pluginLog) Named(name string) hclog.Logger {
	if name == l.binary {
		return stderrLog{Logger: l.Logger.Named(name), tail: l.tail}
	}
	return pluginLog{Logger: l.Logger.Named(name), binary: l.binary, tail: l.tail}
}

// stderrLog logs a plugin's standard error; see pluginLog.
type stderrLog struct {
	hclog.Logger
	tail *tail
}

func (l stderrLog) Debug(msg string, args ...any) {
	if len(args) > 0 { // a record the plugin logged at debug on purpose
		l.Logger.Debug(msg, args...)
		return
	}
	l.tail.add(msg)
	l.Logger.Info(msg)
}

func (l stderrLog) Error(msg string, args ...any) {
	if len(args) == 0 {
		l.tail.add(msg) // a panic's lines
	}
	l.Logger.Error(msg, args...)
}

// tail keeps the last lines a plugin wrote.
type tail struct {
	mu    sync.Mutex
	lines []string
}

const tailLines = 8

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > tailLines {
		t.lines = t.lines[len(t.lines)-tailLines:]
	}
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// lineLogger is an io.Writer that logs each complete line written to it:
// what a plugin prints to standard output or error once it serves, which
// go-plugin forwards in chunks.
type lineLogger struct {
	mu     sync.Mutex
	l      *slog.Logger
	stream string
	buf    []byte
}

func (w *lineLogger) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.log(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 64<<10 { // a very long line without an end
		w.log(w.buf)
		w.buf = w.buf[:0]
	}
	return len(p), nil
}

func (w *lineLogger) log(line []byte) {
	if s := strings.TrimRight(string(line), "\r"); strings.TrimSpace(s) != "" {
		w.l.LogAttrs(context.Background(), slog.LevelInfo, s, slog.String("stream", w.stream))
	}
}

var _ io.Writer = (*lineLogger)(nil)
