package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/droverhq/drover/hub"
	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/internal/digest"
	"github.com/droverhq/drover/nvml/fake"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

type testAgent struct {
	*Agent
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func (ta *testAgent) stop(t *testing.T) {
	t.Helper()
	ta.cancel()
	select {
	case <-ta.done:
		if ta.err != nil {
			t.Fatalf("agent stopped with %v", ta.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not stop")
	}
}

func startAgent(t *testing.T, cfg Config) *testAgent {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ta := &testAgent{Agent: a, cancel: cancel, done: make(chan struct{})}
	go func() {
		ta.err = a.Run(ctx)
		close(ta.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-ta.done
	})
	return ta
}

func agentConfig(t *testing.T, c *hubtest.Cluster, join, dataDir string, machine *fake.Machine) Config {
	var hubs []string
	for _, n := range c.Nodes {
		if n != nil {
			hubs = append(hubs, n.HTTPAddr())
		}
	}
	cfg := Config{
		Name: "gpu-1", Hubs: hubs, JoinToken: join, DataDir: dataDir, ServeAddr: "127.0.0.1:0",
		Labels: map[string]string{"site": "lab"}, HeartbeatInterval: 200 * time.Millisecond,
		SampleInterval: 100 * time.Millisecond, TelemetryWindow: 300 * time.Millisecond,
		Logger: hubtest.Logger(t, "agent"),
	}
	if machine != nil {
		cfg.GPUs = func() gonvml.Interface { return machine }
	} else {
		cfg.GPUs = func() gonvml.Interface { return fake.NoLibrary() }
	}
	return cfg
}

func push(t testing.TB, cl *client.Client, model string, content []byte) uint64 {
	t.Helper()
	up, err := cl.Upload(t.Context(), bytes.NewReader(content), int64(len(content)), digest.FromBytes(content), nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := cl.Models.CreateVersion(t.Context(), &droverv1.CreateVersionRequest{Model: model, CreateModel: true, Artifact: up.BlobRef(), Format: "onnx"})
	if err != nil {
		t.Fatal(err)
	}
	return v.GetVersion().GetVersion()
}

// joinToken creates a token agents enrol with.
func joinToken(t testing.TB, cl *client.Client) string {
	t.Helper()
	join, err := cl.Tokens.CreateToken(t.Context(), &droverv1.CreateTokenRequest{Role: droverv1.Role_ROLE_AGENT})
	if err != nil {
		t.Fatal(err)
	}
	return join.GetSecret()
}

func getAgent(t *testing.T, cl *client.Client, name string) *droverv1.GetAgentResponse {
	t.Helper()
	r, err := cl.Agents.GetAgent(t.Context(), &droverv1.GetAgentRequest{Agent: name})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func waitPhase(t *testing.T, cl *client.Client, name string, version uint64, phase droverv1.AssignmentPhase) {
	t.Helper()
	hubtest.WaitFor(t, 20*time.Second, func() error {
		r, err := cl.Agents.GetAgent(t.Context(), &droverv1.GetAgentRequest{Agent: name})
		if err != nil {
			return err
		}
		for _, s := range r.GetAgent().GetAssignmentStatuses() {
			if s.GetVersion() == version && s.GetPhase() == phase {
				return nil
			}
		}
		return fmt.Errorf("statuses %v", r.GetAgent().GetAssignmentStatuses())
	})
}

func TestAgentConvergesAndReports(t *testing.T) {
	c := hubtest.StartCluster(t, 1, hubtest.Options{})
	cl := c.Client()
	ctx := t.Context()
	join := joinToken(t, cl)
	machine, err := fake.New("dgxh100", fake.WithGPUs(2), fake.WithSeed("gpu-1"))
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	a := startAgent(t, agentConfig(t, c, join, dataDir, machine))

	// Enrolled, with its inventory.
	hubtest.WaitFor(t, 10*time.Second, func() error {
		r, err := cl.Agents.GetAgent(ctx, &droverv1.GetAgentRequest{Agent: "gpu-1"})
		if err != nil {
			return err
		}
		if n := len(r.GetAgent().GetInventory().GetGpus()); n != 2 {
			return fmt.Errorf("%d GPUs in the inventory", n)
		}
		return nil
	})

	// Assigned a version: downloaded, verified, loaded, reported ready.
	art := bytes.Repeat([]byte("weights-v1"), 50000)
	v1 := push(t, cl, "churn", art)
	if _, err := cl.Agents.SetAssignment(ctx, &droverv1.SetAssignmentRequest{Agent: "gpu-1", Model: "churn", Version: v1}); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, cl, "gpu-1", v1, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY)
	var phases []string
	for _, e := range getAgent(t, cl, "gpu-1").GetEvents() {
		if e.GetKind() == "assignment" {
			phases = append(phases, strings.TrimSuffix(strings.Fields(e.GetMessage())[2], ":"))
		}
	}
	if strings.Join(phases, ",") != "pending,downloading,loading,ready" {
		t.Fatalf("reported phases %v", phases)
	}

	// An Xid 79 makes the GPU unhealthy, at the hub too.
	machine.InjectXID(1, 79)
	hubtest.WaitFor(t, 10*time.Second, func() error {
		for _, g := range getAgent(t, cl, "gpu-1").GetAgent().GetGpuHealth() {
			if g.GetIndex() == 1 && g.GetHealth() == "unhealthy" && strings.Contains(strings.Join(g.GetReasons(), ""), "Xid 79") {
				return nil
			}
		}
		return fmt.Errorf("GPU 1 not unhealthy at the hub")
	})
	// Telemetry windows reach the leader.
	hubtest.WaitFor(t, 10*time.Second, func() error {
		if len(getAgent(t, cl, "gpu-1").GetTelemetry()) == 0 {
			return fmt.Errorf("no telemetry yet")
		}
		return nil
	})
	// /metrics carries the GPU telemetry.
	resp, err := http.Get("http://" + a.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	line := func(parts ...string) bool {
		for _, l := range strings.Split(string(body), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(l, p)
			}
			if all {
				return true
			}
		}
		return false
	}
	if !line(`drover_gpu_temperature_celsius{gpu="0"`) || !line(`drover_gpu_health{gpu="1"`, `state="unhealthy"`, `} 1`) ||
		!line(`drover_gpu_xid_errors_total{gpu="1"`, `xid="79"`, `} 1`) {
		t.Errorf("metrics lack GPU telemetry, health or Xids:\n%s", body)
	}
	downloads := testutil.ToFloat64(a.metrics.downloads)
	a.stop(t)

	// Restarted on its data directory: the same agent, no new download.
	a2 := startAgent(t, agentConfig(t, c, join, dataDir, machine))
	hubtest.WaitFor(t, 10*time.Second, func() error {
		if !a2.rec.Converged() || len(a2.rec.Statuses()) == 0 {
			return fmt.Errorf("not converged after restart")
		}
		return nil
	})
	if a2.ID() != a.ID() || testutil.ToFloat64(a2.metrics.downloads) != 0 || downloads != 1 {
		t.Fatalf("restart: id %s vs %s, downloads %v then %v", a2.ID(), a.ID(), downloads, testutil.ToFloat64(a2.metrics.downloads))
	}
	// A damaged artifact on disk is caught before use and fetched again.
	a2.stop(t)
	d := digest.FromBytes(art)
	path := filepath.Join(dataDir, "artifacts", "sha256", d.Hex()[:2], d.Hex())
	if err := os.WriteFile(path, bytes.Repeat([]byte("X"), len(art)), 0o600); err != nil {
		t.Fatal(err)
	}
	a3 := startAgent(t, agentConfig(t, c, join, dataDir, machine))
	hubtest.WaitFor(t, 20*time.Second, func() error {
		if !a3.rec.Converged() || len(a3.rec.Statuses()) == 0 {
			return fmt.Errorf("not converged")
		}
		return nil
	})
	if got, _ := os.ReadFile(path); !bytes.Equal(got, art) || testutil.ToFloat64(a3.metrics.downloads) != 1 {
		t.Fatalf("the damaged artifact was not replaced (downloads %v)", testutil.ToFloat64(a3.metrics.downloads))
	}
}

// TestHubAwayAndBack stops the whole hub while the agent works: the agent
// keeps its desired state, buffers its reports, and delivers every one of
// them when the hub is back.
func TestHubAwayAndBack(t *testing.T) {
	c := hubtest.StartCluster(t, 1, hubtest.Options{Configure: func(_ int, cfg *hub.Config) { cfg.AgentTimeout = 2 * time.Second }})
	cl := c.Client()
	ctx := t.Context()
	join := joinToken(t, cl)
	machine, _ := fake.New("dgxa100", fake.WithGPUs(1), fake.WithSeed("away"))
	a := startAgent(t, agentConfig(t, c, join, t.TempDir(), machine))
	v := push(t, cl, "churn", []byte("model"))
	hubtest.WaitFor(t, 10*time.Second, func() error { // enrolled
		_, err := cl.Agents.GetAgent(ctx, &droverv1.GetAgentRequest{Agent: "gpu-1"})
		return err
	})
	if _, err := cl.Agents.SetAssignment(ctx, &droverv1.SetAssignmentRequest{Agent: "gpu-1", Model: "churn", Version: v}); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, cl, "gpu-1", v, droverv1.AssignmentPhase_ASSIGNMENT_PHASE_READY)

	c.Kill(0)
	// Away: telemetry windows pile up in the outbox, and Xids make reports.
	time.Sleep(2 * time.Second)
	machine.InjectXID(0, 13)
	hubtest.WaitFor(t, 10*time.Second, func() error {
		if a.store.Depth() < 3 {
			return fmt.Errorf("outbox holds %d", a.store.Depth())
		}
		return nil
	})
	if !a.rec.Converged() {
		t.Fatal("the agent stopped serving its desired state without the hub")
	}
	last := a.store.NextSeq() - 1

	c.Restart(0)
	cl = c.Client()
	hubtest.WaitFor(t, 20*time.Second, func() error {
		r, err := cl.Agents.GetAgent(ctx, &droverv1.GetAgentRequest{Agent: "gpu-1"})
		if err != nil {
			return err
		}
		if r.GetAgent().GetLastReportSeq() < last {
			return fmt.Errorf("hub has reports up to %d, the agent made %d", r.GetAgent().GetLastReportSeq(), last)
		}
		return nil
	})
	var sawXid bool
	for _, e := range getAgent(t, cl, "gpu-1").GetEvents() {
		sawXid = sawXid || strings.Contains(e.GetMessage(), "Xid 13")
	}
	if !sawXid {
		t.Fatal("the Xid reported while the hub was away never arrived")
	}
}
