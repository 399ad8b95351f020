package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"

	"github.com/droverhq/drover/agent/store"
	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/internal/logging"
	"github.com/droverhq/drover/nvml/fake"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// fakeControl is a hub's agent control service that takes the join token
// for Enroll and one agent token, which the test can revoke, for the rest.
// Enroll waits for the test to let it answer.
type fakeControl struct {
	droverv1connect.UnimplementedAgentControlServiceHandler

	enrolling chan struct{} // receives when an Enroll arrives
	release   chan struct{} // closed to let Enroll answer

	mu         sync.Mutex
	token      string // the agent token taken
	enrolls    int
	refused    map[string]int // by procedure
	heartbeats int
	reports    []string // "agent id: event message"
	acked      uint64
}

func newFakeControl(t *testing.T, token string) (*fakeControl, string) {
	t.Helper()
	f := &fakeControl{token: token, enrolling: make(chan struct{}, 10), release: make(chan struct{}), refused: map[string]int{}}
	server := connect.NewServer(func(next connect.ServerFunc) connect.ServerFunc {
		return func(ctx context.Context, spec connect.Spec, stream connect.ServerStream) error {
			info, _ := connect.CallInfoForServerContext(ctx)
			got := strings.TrimPrefix(info.RequestHeader().Get("Authorization"), "Bearer ")
			f.mu.Lock()
			want := f.token
			if spec.Procedure == droverv1connect.AgentControlServiceEnrollProcedure {
				want = "join"
			}
			if got != want {
				f.refused[spec.Procedure]++
				f.mu.Unlock()
				return connect.NewError(connect.CodeUnauthenticated, "unknown token")
			}
			f.mu.Unlock()
			return next(ctx, spec, stream)
		}
	})
	droverv1connect.RegisterAgentControlServiceHandler(server, f)
	mux := http.NewServeMux()
	connecthttp.Mount(mux, server)
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return f, srv.Listener.Addr().String()
}

func (f *fakeControl) Enroll(ctx context.Context, _ *droverv1.EnrollRequest) (*droverv1.EnrollResponse, error) {
	f.enrolling <- struct{}{}
	select {
	case <-f.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.enrolls++
	f.token = "agent-token-2"
	return &droverv1.EnrollResponse{AgentId: "agent-2", Token: f.token, LastReportSeq: f.acked}, nil
}

func (f *fakeControl) Heartbeat(context.Context, *droverv1.HeartbeatRequest) (*droverv1.HeartbeatResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heartbeats++
	return &droverv1.HeartbeatResponse{}, nil
}

func (f *fakeControl) WatchDesired(ctx context.Context, _ *droverv1.WatchDesiredRequest, stream droverv1connect.AgentControlServiceWatchDesiredServerStream) error {
	if err := stream.SendHeaders(); err != nil {
		return err
	}
	<-ctx.Done()
	return ctx.Err()
}

func (f *fakeControl) Report(_ context.Context, req *droverv1.ReportRequest) (*droverv1.ReportResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range req.GetReports() {
		if r.GetSeq() > f.acked {
			f.acked = r.GetSeq()
			if ev := r.GetEvent(); ev != nil {
				f.reports = append(f.reports, req.GetAgentId()+": "+ev.GetMessage())
			}
		}
	}
	return &droverv1.ReportResponse{AckedSeq: f.acked}, nil
}

func (f *fakeControl) state() (enrolls, heartbeats int, refused map[string]int, reports []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.enrolls, f.heartbeats, maps.Clone(f.refused), slices.Clone(f.reports)
}

// TestReenrolKeepsServing has the hub refuse the agent's credential while
// a report waits to be sent: the heartbeat that is refused first enrols
// again, and the report sender, refused while that enrolment is out,
// waits for it (it used to find no identity at all and crash the agent),
// then delivers with the new identity. The agent enrols once.
func TestReenrolKeepsServing(t *testing.T) {
	f, addr := newFakeControl(t, "agent-token-1")
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "state"), store.Options{}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetIdentity(&store.Identity{AgentID: "agent-1", Name: "gpu-1", Token: "agent-token-1", Hubs: []string{addr}}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	ta := startAgent(t, Config{Name: "gpu-1", Hubs: []string{addr}, JoinToken: "join", DataDir: dir, ServeAddr: "127.0.0.1:0",
		HeartbeatInterval: 50 * time.Millisecond, Logger: hubtest.Logger(t, "agent"),
		GPUs: func() gonvml.Interface { return fake.NoLibrary() }})
	hubtest.WaitFor(t, 10*time.Second, func() error {
		if _, hb, _, reports := f.state(); hb == 0 || len(reports) == 0 {
			return fmt.Errorf("%d heartbeats, reports %q", hb, reports)
		}
		return nil
	})

	// The hub forgets the agent's token; the next heartbeat is refused and
	// enrols again, and the enrolment waits.
	f.mu.Lock()
	f.token = "revoked"
	f.mu.Unlock()
	select {
	case <-f.enrolling:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not enrol again")
	}
	ta.report(&droverv1.Report{Body: &droverv1.Report_Event{Event: &droverv1.AgentEvent{Kind: "test", Message: "while enrolling"}}})
	hubtest.WaitFor(t, 10*time.Second, func() error {
		if _, _, refused, _ := f.state(); refused[droverv1connect.AgentControlServiceReportProcedure] == 0 {
			return fmt.Errorf("no report refused yet: %v", refused)
		}
		return nil
	})
	if ta.ID() != "agent-1" {
		t.Errorf("while enrolling again, the agent's id is %q; want the old one kept", ta.ID())
	}
	close(f.release)
	hubtest.WaitFor(t, 10*time.Second, func() error {
		_, _, _, reports := f.state()
		for _, r := range reports {
			if r == "agent-2: while enrolling" {
				return nil
			}
		}
		return fmt.Errorf("reports %q", reports)
	})
	if enrolls, _, _, _ := f.state(); enrolls != 1 || ta.ID() != "agent-2" {
		t.Errorf("%d enrolments, agent id %q; want one, agent-2", enrolls, ta.ID())
	}
	ta.stop(t)
}

// TestShutdownFlushesPastSlowRequest stops the agent while a request is
// still coming in: the server gives up on it after its own deadline, and
// the reports still get theirs (one deadline for every step used to go to
// the request, and the reports stayed behind).
func TestShutdownFlushesPastSlowRequest(t *testing.T) {
	f, addr := newFakeControl(t, "agent-token-1")
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "state"), store.Options{}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetIdentity(&store.Identity{AgentID: "agent-1", Name: "gpu-1", Token: "agent-token-1", Hubs: []string{addr}}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	a, err := New(Config{Name: "gpu-1", Hubs: []string{addr}, JoinToken: "join", DataDir: dir, ServeAddr: "127.0.0.1:0",
		Logger: hubtest.Logger(t, "agent"), GPUs: func() gonvml.Interface { return fake.NoLibrary() }})
	if err != nil {
		t.Fatal(err)
	}
	a.shutdown = shutdownTimeouts{serve: 200 * time.Millisecond, flush: 5 * time.Second, runtime: time.Second}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	hubtest.WaitFor(t, 10*time.Second, func() error {
		if _, _, _, reports := f.state(); len(reports) == 0 {
			return errors.New("no report yet")
		}
		return nil
	})
	// A feedback request whose body never comes whole.
	conn, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/feedback HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":")
	time.Sleep(50 * time.Millisecond) // the server takes the request
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not stop")
	}
	if _, _, _, reports := f.state(); !slices.Contains(reports, "agent-1: agent stopping") {
		t.Errorf("reports %q; the stopping event was not flushed", reports)
	}
}

// TestStatusWhileStarting asks for the agent's status while it starts
// with a stored desired state, a few times over (run with -race: Run set
// the fingerprint without the lock the handler reads it under).
func TestStatusWhileStarting(t *testing.T) {
	for range 5 {
		dir := t.TempDir()
		st, err := store.Open(filepath.Join(dir, "state"), store.Options{}, logging.Discard())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.SetDesired(&droverv1.DesiredState{Fingerprint: "fp-1"}); err != nil {
			t.Fatal(err)
		}
		st.Close()
		a, err := New(Config{Name: "gpu-1", Hubs: []string{"127.0.0.1:1"}, JoinToken: "join", DataDir: dir, ServeAddr: "127.0.0.1:0",
			Logger: hubtest.Logger(t, "agent"), GPUs: func() gonvml.Interface { return fake.NoLibrary() }})
		if err != nil {
			t.Fatal(err)
		}
		seen := make(chan error, 1)
		go func() {
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
				resp, err := http.Get("http://" + a.Addr() + "/v1/agent")
				if err != nil {
					seen <- err
					return
				}
				var s Status
				err = json.NewDecoder(resp.Body).Decode(&s)
				resp.Body.Close()
				if err != nil || s.Fingerprint == "fp-1" {
					seen <- err
					return
				}
			}
			seen <- errors.New("the stored desired state's fingerprint never showed")
		}()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		if err := <-seen; err != nil {
			t.Error(err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
