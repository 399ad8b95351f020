package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestBar(t *testing.T) {
	var buf bytes.Buffer
	b := NewForced(&buf, "upload")
	now := time.Unix(0, 0)
	b.nowFunc = func() time.Time { return now }
	b.Update(0, 4<<20)
	now = now.Add(time.Second)
	b.Update(1<<20, 4<<20)
	now = now.Add(10 * time.Millisecond)
	b.Update(2<<20, 4<<20) // throttled
	now = now.Add(time.Second)
	b.Update(4<<20, 4<<20) // final always draws
	b.Done()
	out := buf.String()
	if strings.Count(out, "\r") != 3 {
		t.Fatalf("drew %d times, want 3: %q", strings.Count(out, "\r"), out)
	}
	if !strings.Contains(out, " 25% 1.0 MiB/4.0 MiB 1.0 MiB/s") || !strings.Contains(out, "100% 4.0 MiB/4.0 MiB") || !strings.HasSuffix(out, "\n") {
		t.Fatalf("output = %q", out)
	}
}

func TestSilentWhenNotATerminal(t *testing.T) {
	var buf bytes.Buffer
	b := New(&buf, "x")
	b.Update(1, 2)
	b.Done()
	if buf.Len() != 0 {
		t.Fatalf("a bar on a buffer drew %q", buf.String())
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 30: "3.0 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}
