package store

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
)

func records(t *testing.T, j *Journal, from uint64) []string {
	t.Helper()
	var out []string
	err := j.Scan(from, 0, func(seq uint64, rec []byte) error {
		out = append(out, fmt.Sprintf("%d:%s", seq, rec))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestJournalAppendScanBound(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 100)
	j, err := s.Journal("samples/churn", 4)
	if err != nil {
		t.Fatal(err)
	}
	if at, err := j.Append([]byte("a"), []byte("b"), []byte("c")); err != nil || at != 1 {
		t.Fatalf("first append at %d: %v", at, err)
	}
	// A journal whose name is a prefix of this one's stays apart.
	other, _ := s.Journal("samples/chur", 4)
	if _, err := other.Append([]byte("z")); err != nil {
		t.Fatal(err)
	}
	if at, err := j.Append([]byte("d"), []byte("e"), []byte("f")); err != nil || at != 4 {
		t.Fatalf("second append at %d: %v", at, err)
	}
	want := "3:c 4:d 5:e 6:f"
	if got := fmt.Sprint(records(t, j, 0)); got != "["+want+"]" {
		t.Fatalf("after the bound: %s, want [%s]", got, want)
	}
	if st := j.Stats(); st != (JournalStats{First: 3, Next: 7, Len: 4, Dropped: 2}) {
		t.Fatalf("stats %+v", st)
	}
	if got := fmt.Sprint(records(t, j, 5)); got != "[5:e 6:f]" {
		t.Fatalf("scan from 5: %s", got)
	}
	if _, err := j.Append(make([][]byte, 5)...); err == nil {
		t.Fatal("an append larger than the bound was taken")
	}
	stop := errors.New("stop")
	n := 0
	if err := j.Scan(0, 0, func(uint64, []byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("scan did not stop at fn's error: %v after %d", err, n)
	}

	// Reopened, it goes on where it was.
	s.Close()
	s = open(t, dir, 100)
	defer s.Close()
	j, _ = s.Journal("samples/churn", 4)
	if st := j.Stats(); st != (JournalStats{First: 3, Next: 7, Len: 4, Dropped: 2}) {
		t.Fatalf("stats after reopening %+v", st)
	}
	if err := j.TrimBefore(5); err != nil {
		t.Fatal(err)
	}
	if at, _ := j.Append([]byte("g")); at != 7 {
		t.Fatalf("append after trim at %d", at)
	}
	if got := fmt.Sprint(records(t, j, 0)); got != "[5:e 6:f 7:g]" {
		t.Fatalf("after trim: %s", got)
	}
	if err := j.TrimBefore(1 << 40); err != nil {
		t.Fatal(err)
	}
	if st := j.Stats(); st.Len != 0 || st.First != 8 || st.Next != 8 {
		t.Fatalf("trimmed to nothing: %+v", st)
	}
	other, _ = s.Journal("samples/chur", 4)
	if got := fmt.Sprint(records(t, other, 0)); got != "[1:z]" {
		t.Fatalf("the other journal: %s", got)
	}
	for _, bad := range []string{"", "a\x00b", string(bytes.Repeat([]byte("x"), 201))} {
		if _, err := s.Journal(bad, 1); err == nil {
			t.Errorf("journal name %q accepted", bad)
		}
	}
}

func TestJournalConcurrentAppends(t *testing.T) {
	s := open(t, t.TempDir(), 100)
	defer s.Close()
	j, _ := s.Journal("feedback/churn", 1000)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				if _, err := j.Append([]byte(fmt.Sprintf("%d-%d", w, i))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	var seqs []uint64
	_ = j.Scan(0, 0, func(seq uint64, _ []byte) error { seqs = append(seqs, seq); return nil })
	if len(seqs) != 200 {
		t.Fatalf("%d records", len(seqs))
	}
	for i, seq := range seqs {
		if seq != uint64(i+1) {
			t.Fatalf("record %d numbered %d", i, seq)
		}
	}
}

// TestJournalAppendLarge appends batches larger than one Badger
// transaction takes: every record is stored, in order, within the bound.
func TestJournalAppendLarge(t *testing.T) {
	s := open(t, t.TempDir(), 100)
	j, err := s.Journal("labelled/churn", 60)
	if err != nil {
		t.Fatal(err)
	}
	rec := func(i int) []byte {
		return append([]byte(fmt.Sprintf("%03d:", i)), bytes.Repeat([]byte{'x'}, 100<<10)...)
	}
	batch := func(from, n int) [][]byte {
		var out [][]byte
		for i := range n {
			out = append(out, rec(from+i))
		}
		return out
	}
	// 4 MiB: more than Badger's 2.4 MiB a transaction.
	if at, err := j.Append(batch(1, 40)...); err != nil || at != 1 {
		t.Fatalf("append at %d: %v", at, err)
	}
	if at, err := j.Append(batch(41, 40)...); err != nil || at != 41 {
		t.Fatalf("append beyond the bound at %d: %v", at, err)
	}
	if st := j.Stats(); st != (JournalStats{First: 21, Next: 81, Len: 60, Dropped: 20}) {
		t.Fatalf("stats %+v", st)
	}
	want := 21
	err = j.Scan(0, 0, func(seq uint64, b []byte) error {
		if seq != uint64(want) || !bytes.Equal(b, rec(want)) {
			return fmt.Errorf("record %d: %.4s, want %d", seq, b, want)
		}
		want++
		return nil
	})
	if err != nil || want != 81 {
		t.Fatalf("scan to %d: %v", want, err)
	}
	if _, err := j.Append(batch(81, 61)...); !errors.Is(err, ErrOverBound) {
		t.Fatalf("more than the bound at once: %v", err)
	}
}
