package raftlog

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/droverhq/drover/internal/logging"
)

func open(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func entry(i, term uint64, r *rand.Rand) *raft.Log {
	data := make([]byte, r.IntN(300))
	for j := range data {
		data[j] = byte(r.Uint32())
	}
	l := &raft.Log{Index: i, Term: term, Type: raft.LogType(r.IntN(6)), Data: data}
	if r.IntN(3) == 0 {
		l.Extensions = []byte("ext")
		l.AppendedAt = time.Unix(0, r.Int64N(1<<60))
	}
	return l
}

// same checks that two stores answer every question alike.
func same(t *testing.T, step string, want raft.LogStore, got *Store) {
	t.Helper()
	wf, _ := want.FirstIndex()
	wl, _ := want.LastIndex()
	gf, _ := got.FirstIndex()
	gl, _ := got.LastIndex()
	if wf != gf || wl != gl {
		t.Fatalf("%s: bounds %d..%d, want %d..%d", step, gf, gl, wf, wl)
	}
	for i := uint64(0); i <= wl+2; i++ {
		var a, b raft.Log
		ea, eb := want.GetLog(i, &a), got.GetLog(i, &b)
		if (ea == nil) != (eb == nil) {
			t.Fatalf("%s: GetLog(%d) = %v, want %v", step, i, eb, ea)
		}
		if ea == nil && (a.Index != b.Index || a.Term != b.Term || a.Type != b.Type || !bytes.Equal(a.Data, b.Data) ||
			!bytes.Equal(a.Extensions, b.Extensions) || !a.AppendedAt.Equal(b.AppendedAt)) {
			t.Fatalf("%s: GetLog(%d) = %+v, want %+v", step, i, b, a)
		}
		if ea != nil && !errors.Is(eb, raft.ErrLogNotFound) {
			t.Fatalf("%s: GetLog(%d) error %v, want ErrLogNotFound", step, i, eb)
		}
	}
}

// TestConformance drives the store and raft's InmemStore through the same
// random appends, head truncations (after snapshots) and tail truncations
// (after a conflicting leader), reopening the store now and then, and
// requires identical answers throughout.
func TestConformance(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 1))
			dir := t.TempDir()
			got := open(t, dir)
			defer func() { got.Close() }()
			want := raft.NewInmemStore()
			term := uint64(1)
			for step := range 60 {
				last, _ := want.LastIndex()
				first, _ := want.FirstIndex()
				name := fmt.Sprintf("step %d", step)
				switch op := r.IntN(10); {
				case op < 6 || last == 0:
					var batch []*raft.Log
					for i := range uint64(1 + r.IntN(40)) {
						batch = append(batch, entry(last+1+i, term, r))
					}
					if err := want.StoreLogs(batch); err != nil {
						t.Fatal(err)
					}
					if err := got.StoreLogs(batch); err != nil {
						t.Fatal(err)
					}
				case op < 8:
					// Head: drop everything up to a point, as compaction does.
					upto := first + uint64(r.IntN(int(last-first+1)))
					_ = want.DeleteRange(first, upto)
					if err := got.DeleteRange(first, upto); err != nil {
						t.Fatal(err)
					}
				default:
					// Tail: drop a suffix, as a follower does on a conflict.
					from := first + uint64(r.IntN(int(last-first+1)))
					if from <= first {
						from = first + 1
					}
					if from > last {
						continue
					}
					_ = want.DeleteRange(from, last)
					if err := got.DeleteRange(from, last); err != nil {
						t.Fatal(err)
					}
					term++
				}
				same(t, name, want, got)
				if r.IntN(8) == 0 {
					got.Close()
					got = open(t, dir)
					same(t, name+" after reopen", want, got)
				}
			}
		})
	}
}

func TestStable(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if _, err := s.Get([]byte("k")); err == nil || err.Error() != "not found" {
		// hashicorp/raft recognises a missing key by this exact message.
		t.Fatalf("missing key: %v", err)
	}
	if v, err := s.GetUint64([]byte("n")); v != 0 || err == nil || err.Error() != "not found" {
		t.Fatalf("missing number: %d %v", v, err)
	}
	if err := s.Set([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("n"), 42); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir)
	defer s.Close()
	if v, err := s.Get([]byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if v, err := s.GetUint64([]byte("n")); err != nil || v != 42 {
		t.Fatalf("GetUint64 = %d, %v", v, err)
	}
	// Stable keys never show up as log entries.
	if f, _ := s.FirstIndex(); f != 0 {
		t.Fatalf("first index %d in a log with no entries", f)
	}
}

// TestKill9LosesNothingAcknowledged runs a writer in a child process,
// kills it with SIGKILL mid-stream, and checks that every batch it was told
// was stored is there after reopening, with no gaps.
func TestKill9LosesNothingAcknowledged(t *testing.T) {
	if os.Getenv("RAFTLOG_CHILD_DIR") != "" {
		t.Skip("run by the parent")
	}
	dir := t.TempDir()
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestChildWriter$")
		cmd.Env = append(os.Environ(), "RAFTLOG_CHILD_DIR="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		var acked uint64
		deadline := time.Now().Add(time.Duration(200+100*round) * time.Millisecond)
		for sc.Scan() && time.Now().Before(deadline) {
			if n, err := strconv.ParseUint(sc.Text(), 10, 64); err == nil {
				acked = n
			}
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		if acked == 0 {
			t.Fatalf("round %d: the child acknowledged nothing", round)
		}
		s := open(t, dir)
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		if first != 1 || last < acked {
			t.Fatalf("round %d: log is %d..%d after the kill, but %d was acknowledged", round, first, last, acked)
		}
		for i := first; i <= last; i++ {
			var l raft.Log
			if err := s.GetLog(i, &l); err != nil || l.Index != i {
				t.Fatalf("round %d: entry %d: %v", round, i, err)
			}
		}
		s.Close()
		t.Logf("round %d: %d acknowledged, %d on disk", round, acked, last)
	}
}

// TestChildWriter is the child of the test above: it appends batches and
// prints the last index of each once StoreLogs has returned.
func TestChildWriter(t *testing.T) {
	dir := os.Getenv("RAFTLOG_CHILD_DIR")
	if dir == "" {
		t.Skip("only run as a child")
	}
	s := open(t, dir)
	last, _ := s.LastIndex()
	r := rand.New(rand.NewPCG(uint64(last), 2))
	for {
		var batch []*raft.Log
		for range 1 + r.IntN(16) {
			last++
			batch = append(batch, entry(last, 1, r))
		}
		if err := s.StoreLogs(batch); err != nil {
			t.Fatal(err)
		}
		fmt.Println(last)
	}
}

func BenchmarkStoreLogs(b *testing.B) {
	s := open(b, b.TempDir())
	defer s.Close()
	r := rand.New(rand.NewPCG(1, 1))
	var idx uint64
	for b.Loop() {
		var batch []*raft.Log
		for range 16 {
			idx++
			batch = append(batch, entry(idx, 1, r))
		}
		if err := s.StoreLogs(batch); err != nil {
			b.Fatal(err)
		}
	}
}
