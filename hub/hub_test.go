package hub_test

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect/v2"

	"github.com/droverhq/drover/hub"
	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/internal/digest"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

func TestSingleNodeRegistry(t *testing.T) {
	c := hubtest.StartCluster(t, 1, hubtest.Options{})
	cl := c.Client()
	ctx := t.Context()

	if _, err := cl.Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: "churn"}); err != nil {
		t.Fatal(err)
	}
	art := []byte("model bytes v1")
	d := digest.FromBytes(art)
	up, err := cl.Upload(ctx, bytes.NewReader(art), int64(len(art)), d, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := cl.Models.CreateVersion(ctx, &droverv1.CreateVersionRequest{Model: "churn", Artifact: up.BlobRef(), Format: "onnx"})
	if err != nil {
		t.Fatal(err)
	}
	if v.GetVersion().GetVersion() != 1 || v.GetVersion().GetCreatedBy().GetName() != "bootstrap" {
		t.Fatalf("version = %v", v.GetVersion())
	}
	got, err := cl.Models.GetModel(ctx, &droverv1.GetModelRequest{Name: "churn"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.GetVersions()) != 1 || got.GetMeta().GetStale() || got.GetMeta().GetIndex() == 0 {
		t.Fatalf("get model = %v", got)
	}
	_, err = cl.Models.GetModel(ctx, &droverv1.GetModelRequest{Name: "nope"})
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("unknown model: %v", err)
	}
}

func TestThreeNodeForwardingAndBlobs(t *testing.T) {
	c := hubtest.StartCluster(t, 3, hubtest.Options{})
	ctx := t.Context()
	leader := c.Leader()
	follower := (leader + 1) % 3
	fcl := c.ClientFor(c.AdminToken, c.Nodes[follower].HTTPAddr())

	// A write to a follower is forwarded to the leader.
	if _, err := fcl.Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: "churn"}); err != nil {
		t.Fatal(err)
	}
	// An upload to a follower is on a quorum when it returns.
	art := bytes.Repeat([]byte("weights"), 100000)
	d := digest.FromBytes(art)
	up, err := fcl.Upload(ctx, bytes.NewReader(art), int64(len(art)), d, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(up.Replicas) < 2 {
		t.Fatalf("upload replicas = %v, want a quorum", up.Replicas)
	}
	v, err := fcl.Models.CreateVersion(ctx, &droverv1.CreateVersionRequest{Model: "churn", Artifact: up.BlobRef()})
	if err != nil {
		t.Fatal(err)
	}
	// A linearizable read on another follower sees the write at once.
	other := (leader + 2) % 3
	ocl := c.ClientFor(c.AdminToken, c.Nodes[other].HTTPAddr())
	mv, err := ocl.Models.GetVersion(ctx, &droverv1.GetVersionRequest{Model: "churn"})
	if err != nil {
		t.Fatal(err)
	}
	if mv.GetVersion().GetVersion() != v.GetVersion().GetVersion() || mv.GetMeta().GetServedBy() != c.Nodes[other].Name() {
		t.Fatalf("read on %s = %v", c.Nodes[other].Name(), mv)
	}
	// Every node ends up with the blob, and serves it.
	for i := range c.Nodes {
		cl := c.ClientFor(c.AdminToken, c.Nodes[i].HTTPAddr())
		hubtest.WaitFor(t, 5e9, func() error {
			return cl.DownloadFile(ctx, d, int64(len(art)), t.TempDir()+"/blob", nil)
		})
	}
}

// TestClientFailsOver gives the client a dead address first: calls go on to
// the live node, writes included (the dead one never saw them).
func TestClientFailsOver(t *testing.T) {
	c := hubtest.StartCluster(t, 1, hubtest.Options{})
	dead := "127.0.0.1:1" // nothing listens on port 1
	cl := c.ClientFor(c.AdminToken, dead, c.Nodes[0].HTTPAddr())
	ctx := t.Context()
	if _, err := cl.Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: "m"}); err != nil {
		t.Fatalf("write with a dead first address: %v", err)
	}
	if _, err := cl.Models.GetModel(ctx, &droverv1.GetModelRequest{Name: "m"}); err != nil {
		t.Fatalf("read: %v", err)
	}
	art := []byte("x")
	if _, err := cl.Upload(ctx, bytes.NewReader(art), 1, digest.FromBytes(art), nil); err != nil {
		t.Fatalf("upload with a dead first address: %v", err)
	}
	// Refusals are not failures to fail over from.
	_, err := cl.Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: "m"})
	if connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Fatalf("duplicate: %v", err)
	}
}

// A node that fails to start part-way (here: its Raft port is taken) returns
// the error and releases what it had opened, so that a second try with a
// free port starts on the same data dir.
func TestNewFailsCleanlyPartWay(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := hubtest.Config(t, "hub-1")
	cfg.Bootstrap = true
	cfg.RaftAddr = taken.Addr().String()
	if n, err := hub.New(cfg); err == nil {
		n.Shutdown(t.Context())
		t.Fatal("New succeeded on a Raft address in use")
	} else if !strings.Contains(err.Error(), "listen for raft") {
		t.Fatalf("New: %v, want the Raft listen error", err)
	}
	cfg.RaftAddr = "127.0.0.1:0"
	n := hubtest.Start(t, cfg)
	if n.HTTPAddr() == "" {
		t.Fatal("no HTTP address")
	}
}

// TestDataDirOwner: a first start that failed (no --bootstrap) leaves the
// data dir under the name it was given; started again under the intended
// name it is taken over, since it holds no cluster state. Once it holds
// state, another name is refused.
func TestDataDirOwner(t *testing.T) {
	cfg := hubtest.Config(t, "vm")
	if n, err := hub.New(cfg); err == nil {
		n.Shutdown(t.Context())
		t.Fatal("a node with no cluster state, no --bootstrap and no --join started")
	}
	cfg.NodeName, cfg.Bootstrap = "hub-1", true
	n := hubtest.Start(t, cfg)
	n.Shutdown(t.Context())
	cfg.NodeName, cfg.Bootstrap = "hub-2", false
	if n, err := hub.New(cfg); err == nil {
		n.Shutdown(t.Context())
		t.Fatal("another name took a data dir that holds cluster state")
	} else if !strings.Contains(err.Error(), `belongs to node "hub-1"`) {
		t.Fatalf("New under another name: %v", err)
	}
}

// TestCrashLeftoversCleared: what a crash leaves in the data dir — a
// scratch file, a Raft snapshot half written (raft skips those and never
// removes them) — is gone after the next start.
func TestCrashLeftoversCleared(t *testing.T) {
	cfg := hubtest.Config(t, "hub-1")
	cfg.Bootstrap = true
	n := hubtest.Start(t, cfg)
	n.Shutdown(t.Context())
	leftovers := []string{
		filepath.Join(cfg.DataDir, "tmp", "dataset-123.csv"),
		filepath.Join(cfg.DataDir, "raft", "snapshots", "2-9-1700000000000.tmp", "state.bin"),
	}
	for _, p := range leftovers {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Bootstrap = false
	hubtest.Start(t, cfg)
	for _, p := range leftovers {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s is still there (%v)", p, err)
		}
	}
}
