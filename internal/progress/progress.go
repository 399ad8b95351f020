// Package progress draws a one-line progress bar for long transfers on a
// terminal, and stays silent when the output is not one (a pipe, a file, a
// CI log), so that scripted use sees only the result.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// Bar is a progress bar. The zero value draws nothing.
type Bar struct {
	mu      sync.Mutex
	w       io.Writer
	label   string
	start   time.Time
	last    time.Time
	drawn   bool
	width   int
	nowFunc func() time.Time
}

// New returns a bar that draws on w if w is a terminal, and a silent one
// otherwise.
func New(w io.Writer, label string) *Bar {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return &Bar{}
	}
	return NewForced(w, label)
}

// NewForced returns a bar that always draws on w, for tests.
func NewForced(w io.Writer, label string) *Bar {
	return &Bar{w: w, label: label, width: 30, nowFunc: time.Now}
}

// Update redraws the bar with done of total bytes (total -1: unknown), at
// most ten times a second; the final update always draws.
func (b *Bar) Update(done, total int64) {
	if b == nil || b.w == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.nowFunc()
	if b.start.IsZero() {
		b.start = now
	}
	final := total >= 0 && done >= total
	if !final && now.Sub(b.last) < 100*time.Millisecond {
		return
	}
	b.last = now
	b.drawn = true
	fmt.Fprint(b.w, "\r"+b.line(done, total, now.Sub(b.start))+"\x1b[K")
}

func (b *Bar) line(done, total int64, elapsed time.Duration) string {
	rate := ""
	if s := elapsed.Seconds(); s > 0.2 {
		rate = " " + Bytes(int64(float64(done)/s)) + "/s"
	}
	if total <= 0 {
		return fmt.Sprintf("%s %s%s", b.label, Bytes(done), rate)
	}
	frac := min(float64(done)/float64(total), 1)
	full := int(frac * float64(b.width))
	bar := strings.Repeat("=", full)
	if full < b.width {
		bar += ">" + strings.Repeat(" ", b.width-full-1)
	}
	return fmt.Sprintf("%s [%s] %3.0f%% %s/%s%s", b.label, bar, frac*100, Bytes(done), Bytes(total), rate)
}

// Done ends the bar's line, if it drew anything.
func (b *Bar) Done() {
	if b == nil || b.w == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drawn {
		fmt.Fprintln(b.w)
		b.drawn = false
	}
}

// Bytes formats a byte count with a binary unit: "12.3 MiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
