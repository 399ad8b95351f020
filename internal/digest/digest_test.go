package digest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParse(t *testing.T) {
	good := FromBytes([]byte("x")).String()
	if d, err := Parse(good); err != nil || d.String() != good {
		t.Fatalf("Parse(%q) = %v, %v", good, d, err)
	}
	for _, bad := range []string{"", "sha256:", "md5:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("A", 64), "sha256:" + strings.Repeat("a", 63), good + "0"} {
		if _, err := Parse(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if want := "sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"; good != want {
		t.Fatalf("FromBytes(x) = %s, want %s", good, want)
	}
}

func TestCopy(t *testing.T) {
	for _, size := range []int{0, 1, copyBufferSize - 1, copyBufferSize, 5*copyBufferSize + 17} {
		data := make([]byte, size)
		_, _ = rand.Read(data)
		var dst bytes.Buffer
		// A reader that returns short reads exercises ReadFull.
		d, n, err := Copy(&dst, iotest.HalfReader(bytes.NewReader(data)))
		if err != nil || n != int64(size) || d != FromBytes(data) || !bytes.Equal(dst.Bytes(), data) {
			t.Fatalf("size %d: n %d err %v digest ok %v", size, n, err, d == FromBytes(data))
		}
	}
}

func TestCopyErrors(t *testing.T) {
	boom := errors.New("boom")
	if _, _, err := Copy(io.Discard, iotest.ErrReader(boom)); !errors.Is(err, boom) {
		t.Fatalf("read error: %v", err)
	}
	if _, _, err := Copy(failWriter{boom}, bytes.NewReader(make([]byte, 3*copyBufferSize))); !errors.Is(err, boom) {
		t.Fatalf("write error: %v", err)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

func BenchmarkCopy(b *testing.B) {
	data := make([]byte, 64<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, _, err := Copy(io.Discard, bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}
