package store

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/internal/logging"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func open(t testing.TB, dir string, max int) *Store {
	t.Helper()
	s, err := Open(dir, Options{MaxReports: max}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(0); err != nil {
		t.Fatal(err)
	}
	return s
}

func event(msg string) *droverv1.Report {
	return &droverv1.Report{Body: &droverv1.Report_Event{Event: &droverv1.AgentEvent{Kind: "test", Message: msg}}}
}

func window(minute int, temp float64) *droverv1.Report {
	start := t0.Add(time.Duration(minute) * time.Minute)
	return &droverv1.Report{Body: &droverv1.Report_Telemetry{Telemetry: &droverv1.TelemetryWindow{
		Start: timestamppb.New(start), End: timestamppb.New(start.Add(time.Minute)),
		Gpus: []*droverv1.GpuWindow{{Uuid: "GPU-0", Samples: 6, TemperatureCMax: temp, PowerWattsMean: temp * 10}},
	}}}
}

func TestOutbox(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 100)
	if err := s.Append(t0, event("a"), event("b"), event("c")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Pending(10, 1<<20)
	if err != nil || len(got) != 3 || got[0].GetSeq() != 1 || got[2].GetSeq() != 3 || got[1].GetEvent().GetMessage() != "b" {
		t.Fatalf("pending = %v, %v", got, err)
	}
	if err := s.Ack(2); err != nil {
		t.Fatal(err)
	}
	if s.Depth() != 1 {
		t.Fatalf("depth after ack = %d", s.Depth())
	}
	// Everything survives a reopen: the pending report and the numbering.
	s.Close()
	s = open(t, dir, 100)
	defer s.Close()
	got, _ = s.Pending(10, 1<<20)
	if len(got) != 1 || got[0].GetSeq() != 3 || s.NextSeq() != 4 || s.Depth() != 1 {
		t.Fatalf("after reopen: pending %v next %d depth %d", got, s.NextSeq(), s.Depth())
	}
	if err := s.SkipTo(40); err != nil || s.NextSeq() != 40 {
		t.Fatalf("SkipTo: %v %d", err, s.NextSeq())
	}
	// Pending honours the byte budget but always returns one.
	if got, _ := s.Pending(10, 1); len(got) != 1 {
		t.Fatalf("pending with a tiny budget = %d", len(got))
	}
}

// TestOutboxBound fills a small outbox while the hub is away: telemetry is
// summarised first, then the oldest reports dropped, both counted, and the
// counts become a report.
func TestOutboxBound(t *testing.T) {
	s := open(t, t.TempDir(), 5)
	defer s.Close()
	if err := s.Append(t0, window(0, 50), window(1, 70), event("e1"), window(2, 60), event("e2")); err != nil {
		t.Fatal(err)
	}
	// A sixth report: windows 0 and 1 merge into one.
	if err := s.Append(t0, event("e3")); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Pending(10, 1<<20)
	if len(got) != 5 || got[0].GetTelemetry() == nil {
		t.Fatalf("after one overflow: %v", got)
	}
	w := got[0].GetTelemetry()
	if g := w.GetGpus()[0]; g.GetSamples() != 12 || g.GetTemperatureCMax() != 70 || g.GetPowerWattsMean() != 600 ||
		!w.GetStart().AsTime().Equal(t0) || !w.GetEnd().AsTime().Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("merged window = %v", w)
	}
	// More: the merged window and window 2 merge; then the oldest go.
	for i := range 3 {
		if err := s.Append(t0, event(fmt.Sprint("f", i))); err != nil {
			t.Fatal(err)
		}
	}
	if s.dropped != 2 || s.summarised != 2 || s.Depth() != 5 {
		t.Fatalf("dropped %d summarised %d depth %d", s.dropped, s.summarised, s.Depth())
	}
	if err := s.TakeLosses(t0); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Pending(10, 1<<20)
	last := got[len(got)-1].GetDropped()
	if last == nil || last.GetDropped() < 2 || last.GetSummarised() != 2 {
		t.Fatalf("losses report = %v", got[len(got)-1])
	}
	if s.dropped != 0 && s.dropped != 1 { // taking the losses report may itself overflow
		t.Fatalf("counts not reset: %d", s.dropped)
	}
}

func TestIdentityDesiredArtifacts(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 10)
	if _, err := s.Identity(); err != ErrNotFound {
		t.Fatalf("identity before enrolment: %v", err)
	}
	if err := s.SetIdentity(&Identity{AgentID: "a-1", Name: "gpu-1", Token: "drv_x"}); err != nil {
		t.Fatal(err)
	}
	d := &droverv1.DesiredState{AgentId: "a-1", Fingerprint: "f", Assignments: []*droverv1.DesiredAssignment{{Model: "churn", Version: 3}}}
	if err := s.SetDesired(d); err != nil {
		t.Fatal(err)
	}
	if err := s.PutArtifact(&Artifact{Digest: "sha256:x", Size: 3}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, 10)
	defer s.Close()
	id, err := s.Identity()
	if err != nil || id.AgentID != "a-1" || id.Token != "drv_x" {
		t.Fatalf("identity = %v %v", id, err)
	}
	got, err := s.Desired()
	if err != nil || got.GetAssignments()[0].GetVersion() != 3 {
		t.Fatalf("desired = %v %v", got, err)
	}
	arts, _ := s.Artifacts()
	if len(arts) != 1 || arts[0].Size != 3 {
		t.Fatalf("artifacts = %v", arts)
	}
	if err := s.DeleteArtifact("sha256:x"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Artifact("sha256:x"); err != ErrNotFound {
		t.Fatalf("deleted artifact: %v", err)
	}
}

// TestKill9 appends reports in a child process, kills it with SIGKILL, and
// checks that every report it was told was stored is there, in order, and
// every journal record too.
func TestKill9(t *testing.T) {
	if os.Getenv("STORE_CHILD_DIR") != "" {
		t.Skip("run by the parent")
	}
	dir := t.TempDir()
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestChildAppender$")
		cmd.Env = append(os.Environ(), "STORE_CHILD_DIR="+dir)
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		var acked, journalAcked uint64
		deadline := time.Now().Add(time.Duration(200+150*round) * time.Millisecond)
		for sc.Scan() && time.Now().Before(deadline) {
			if j, ok := strings.CutPrefix(sc.Text(), "j "); ok {
				journalAcked, _ = strconv.ParseUint(j, 10, 64)
			} else if n, err := strconv.ParseUint(sc.Text(), 10, 64); err == nil {
				acked = n
			}
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		s := open(t, dir, 1<<30)
		got, err := s.Pending(1<<30, 1<<40)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(got)) < acked {
			t.Fatalf("round %d: %d reports after the kill, %d acknowledged", round, len(got), acked)
		}
		for i, r := range got {
			if r.GetSeq() != uint64(i+1) {
				t.Fatalf("round %d: report %d has seq %d", round, i, r.GetSeq())
			}
		}
		// The journal: every acknowledged record there, numbered without
		// gaps, within its bound, and the dropped ones counted.
		j, err := s.Journal("samples/x", 500)
		if err != nil {
			t.Fatal(err)
		}
		st := j.Stats()
		if st.Next-1 < journalAcked || st.Len > 500 || st.Dropped+uint64(st.Len) != st.Next-1 {
			t.Fatalf("round %d: journal %+v after %d acknowledged", round, st, journalAcked)
		}
		want := st.First
		_ = j.Scan(0, 0, func(seq uint64, _ []byte) error {
			if seq != want {
				t.Fatalf("round %d: journal record %d where %d was due", round, seq, want)
			}
			want++
			return nil
		})
		if want != st.Next {
			t.Fatalf("round %d: journal holds up to %d, next is %d", round, want, st.Next)
		}
		s.Close()
		t.Logf("round %d: %d acknowledged, %d stored; journal %+v", round, acked, len(got), st)
	}
}

// TestChildAppender is the child of TestKill9.
func TestChildAppender(t *testing.T) {
	dir := os.Getenv("STORE_CHILD_DIR")
	if dir == "" {
		t.Skip("only run as a child")
	}
	s := open(t, dir, 1<<30)
	j, err := s.Journal("samples/x", 500)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if err := s.Append(time.Now(), event("x"), event("y")); err != nil {
			t.Fatal(err)
		}
		fmt.Println(s.NextSeq() - 1)
		at, err := j.Append([]byte("sample a"), []byte("sample b"), []byte("sample c"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println("j", at+2)
	}
}

// TestAppendAndPutNames checks that a report and its marker are stored
// together and survive a reopen, and that names are listed by prefix and
// deleted.
func TestAppendAndPutNames(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 10)
	final := &droverv1.Report{Body: &droverv1.Report_Event{Event: &droverv1.AgentEvent{Kind: "done"}}}
	if err := s.AppendAndPut(time.Now(), "training/job-1/1", []byte("marker"), final); err != nil {
		t.Fatal(err)
	}
	if err := s.Put("training/job-2/1", []byte("other")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put("inventory_fp", []byte("x")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, 10)
	defer s.Close()
	if v, err := s.Get("training/job-1/1"); err != nil || string(v) != "marker" {
		t.Fatalf("marker = %q, %v", v, err)
	}
	pending, err := s.Pending(10, 1<<20)
	if err != nil || len(pending) != 1 || pending[0].GetEvent().GetKind() != "done" || s.Depth() != 1 {
		t.Fatalf("outbox = %v, %v", pending, err)
	}
	names, err := s.Names("training/")
	if err != nil || len(names) != 2 || names[0] != "training/job-1/1" || names[1] != "training/job-2/1" {
		t.Fatalf("names = %q, %v", names, err)
	}
	if err := s.Delete("training/job-1/1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("training/job-1/1"); err != ErrNotFound {
		t.Fatalf("deleted marker: %v", err)
	}
	if names, _ := s.Names("training/"); len(names) != 1 {
		t.Fatalf("names after delete = %q", names)
	}
}
