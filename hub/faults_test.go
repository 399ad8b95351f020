package hub_test

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/droverhq/drover/hub"
	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/hub/state"
	"github.com/droverhq/drover/internal/digest"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

func wantCode(t *testing.T, what string, err error, code connect.Code) {
	t.Helper()
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("%s: got %v (%v), want %v", what, got, err, code)
	}
}

// auditCount is how many changes the state has recorded.
func auditCount(n *hub.Node) int {
	evs, _ := n.State().AuditEvents(state.AuditQuery{Limit: 1 << 20})
	return len(evs)
}

func TestBadInputIsRefusedWhole(t *testing.T) {
	c := hubtest.StartCluster(t, 1, hubtest.Options{})
	cl := c.Client()
	ctx := t.Context()
	if _, err := cl.Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: "churn"}); err != nil {
		t.Fatal(err)
	}
	art := []byte("artifact")
	up, err := cl.Upload(ctx, bytes.NewReader(art), int64(len(art)), digest.FromBytes(art), nil)
	if err != nil {
		t.Fatal(err)
	}
	before := auditCount(c.Nodes[0])

	_, err = cl.Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: "Bad Name"})
	wantCode(t, "invalid name", err, connect.CodeInvalidArgument)
	_, err = cl.Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: "churn"})
	wantCode(t, "duplicate model", err, connect.CodeAlreadyExists)
	_, err = cl.Models.CreateVersion(ctx, &droverv1.CreateVersionRequest{Model: "nope", Artifact: up.BlobRef()})
	wantCode(t, "unknown model", err, connect.CodeNotFound)
	_, err = cl.Models.GetVersion(ctx, &droverv1.GetVersionRequest{Model: "churn", Selector: &droverv1.GetVersionRequest_Alias{Alias: "champion"}})
	wantCode(t, "unknown alias", err, connect.CodeNotFound)
	_, err = cl.Models.SetAlias(ctx, &droverv1.SetAliasRequest{Model: "churn", Alias: "champion", Version: 4})
	wantCode(t, "alias to a missing version", err, connect.CodeNotFound)
	never := digest.FromBytes([]byte("never uploaded"))
	_, err = cl.Models.CreateVersion(ctx, &droverv1.CreateVersionRequest{Model: "churn", Artifact: &droverv1.BlobRef{Digest: never.String(), SizeBytes: 3}})
	wantCode(t, "artifact never uploaded", err, connect.CodeFailedPrecondition)
	_, err = cl.Models.CreateVersion(ctx, &droverv1.CreateVersionRequest{Model: "churn", Artifact: &droverv1.BlobRef{Digest: up.Digest, SizeBytes: 99}})
	wantCode(t, "wrong artifact size", err, connect.CodeInvalidArgument)
	_, err = cl.Models.CreateVersion(ctx, &droverv1.CreateVersionRequest{Model: "churn", Artifact: up.BlobRef(), ReferenceProfile: make([]byte, state.MaxProfileBytes+1)})
	wantCode(t, "oversized profile", err, connect.CodeInvalidArgument)
	_, err = cl.Models.CreateVersion(ctx, &droverv1.CreateVersionRequest{Model: "churn", Artifact: up.BlobRef(), Description: strings.Repeat("x", 20<<20)})
	wantCode(t, "oversized message", err, connect.CodeResourceExhausted)
	long := strings.Repeat("x", state.MaxReasonLen+1)
	_, err = cl.Agents.DeleteAssignment(ctx, &droverv1.DeleteAssignmentRequest{Agent: "nope", Model: "churn", Reason: long})
	wantCode(t, "oversized reason", err, connect.CodeInvalidArgument)
	_, err = cl.Models.SetAlias(ctx, &droverv1.SetAliasRequest{Model: "churn", Alias: "champion", Version: 1, Reason: long})
	wantCode(t, "oversized reason on another call", err, connect.CodeInvalidArgument)
	_, err = cl.Rollouts.StartRollout(ctx, &droverv1.StartRolloutRequest{Model: "churn", Selector: map[string]string{"bad key =": "x"}, Steps: []*droverv1.RolloutStep{{Percent: 100}}})
	wantCode(t, "bad selector", err, connect.CodeInvalidArgument)
	_, err = cl.Drift.SetDriftSettings(ctx, &droverv1.SetDriftSettingsRequest{Model: "churn", Settings: &droverv1.DriftSettings{Distance: math.Inf(1)}})
	wantCode(t, "infinite drift distance", err, connect.CodeInvalidArgument)
	_, err = cl.Drift.SetDriftSettings(ctx, &droverv1.SetDriftSettingsRequest{Model: "churn", Settings: &droverv1.DriftSettings{Thresholds: map[string]float64{"age": math.NaN()}}})
	wantCode(t, "NaN drift threshold", err, connect.CodeInvalidArgument)
	_, err = cl.Runs.CreateRun(ctx, &droverv1.CreateRunRequest{Model: "churn", Runner: "native", DatasetDigest: "sha256:nope"})
	wantCode(t, "bad data set digest", err, connect.CodeInvalidArgument)
	if resp, err := cl.Audit.ListAuditEvents(ctx, &droverv1.ListAuditEventsRequest{AfterIndex: math.MaxUint64}); err != nil || len(resp.GetEvents()) != 0 {
		t.Fatalf("paging past the last index: %v, %v", resp, err)
	}

	if after := auditCount(c.Nodes[0]); after != before {
		t.Fatalf("refused requests changed the state: %d audit events, was %d", after, before)
	}
	if m := c.Nodes[0].State().Model("churn"); m.GetLatestVersion() != 0 {
		t.Fatalf("a refused version was half-applied: %v", m)
	}
}

func TestUploadsThatMustNotStick(t *testing.T) {
	c := hubtest.StartCluster(t, 1, hubtest.Options{})
	cfg := c.Configs[0]
	base := "http://" + c.Nodes[0].HTTPAddr() + "/v1/blobs/"
	body := bytes.Repeat([]byte("0123456789"), 100000)
	d := digest.FromBytes(body)
	put := func(dg string, r io.Reader, length int64, token string) *http.Response {
		req, _ := http.NewRequest(http.MethodPut, base+dg, r)
		req.ContentLength = length
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Logf("put: %v", err)
			return nil
		}
		resp.Body.Close()
		return resp
	}
	blobFile := func(dg digest.Digest) string {
		return filepath.Join(cfg.DataDir, "blobs", "sha256", dg.Hex()[:2], dg.Hex())
	}

	// Bytes that do not match the digest: 400, nothing stored.
	wrong := digest.FromBytes([]byte("something else"))
	if resp := put(wrong.String(), bytes.NewReader(body), int64(len(body)), c.AdminToken); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("digest mismatch: HTTP %d", resp.StatusCode)
	}
	if _, err := os.Stat(blobFile(wrong)); !os.IsNotExist(err) {
		t.Fatalf("a mismatched upload was stored")
	}
	// An upload cut off half-way: nothing stored, no temporary file left.
	pr, pw := io.Pipe()
	go func() {
		pw.Write(body[:len(body)/2])
		pw.CloseWithError(fmt.Errorf("client went away"))
	}()
	put(d.String(), pr, int64(len(body)), c.AdminToken)
	hubtest.WaitFor(t, 2*time.Second, func() error {
		left, _ := os.ReadDir(filepath.Join(cfg.DataDir, "blobs", "tmp"))
		if len(left) != 0 {
			return fmt.Errorf("%d temporary files left", len(left))
		}
		return nil
	})
	if _, err := os.Stat(blobFile(d)); !os.IsNotExist(err) {
		t.Fatalf("a cut-off upload was stored")
	}
	// No token: 401. A viewer: 403.
	if resp := put(d.String(), bytes.NewReader(body), int64(len(body)), ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: HTTP %d", resp.StatusCode)
	}
	viewer, err := c.Client().Tokens.CreateToken(t.Context(), &droverv1.CreateTokenRequest{Role: droverv1.Role_ROLE_VIEWER})
	if err != nil {
		t.Fatal(err)
	}
	if resp := put(d.String(), bytes.NewReader(body), int64(len(body)), viewer.GetSecret()); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer upload: HTTP %d", resp.StatusCode)
	}
	// A good upload, then a resumed download of it.
	if resp := put(d.String(), bytes.NewReader(body), int64(len(body)), c.AdminToken); resp.StatusCode != http.StatusCreated {
		t.Fatalf("good upload: HTTP %d", resp.StatusCode)
	}
	dst := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(dst+".partial", body[:12345], 0o600); err != nil {
		t.Fatal(err)
	}
	var sawResume bool
	cl := c.ClientFor(viewer.GetSecret(), c.Nodes[0].HTTPAddr())
	if err := cl.DownloadFile(t.Context(), d, int64(len(body)), dst, func(done, total int64) {
		sawResume = sawResume || done == 12345
	}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, body) || !sawResume {
		t.Fatalf("resumed download: %d bytes, resumed %v", len(got), sawResume)
	}
	// A corrupt partial file is caught by the digest check and discarded.
	// A corrupt partial file is caught by the digest check, discarded, and
	// the download starts again from nothing.
	if err := os.WriteFile(dst+"2.partial", []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cl.DownloadFile(t.Context(), d, int64(len(body)), dst+"2", nil); err != nil {
		t.Fatalf("download over a corrupt partial file: %v", err)
	}
	if got, _ := os.ReadFile(dst + "2"); !bytes.Equal(got, body) {
		t.Fatalf("download over a corrupt partial file: %d bytes", len(got))
	}
}

func TestTokens(t *testing.T) {
	c := hubtest.StartCluster(t, 1, hubtest.Options{})
	ctx := t.Context()
	admin := c.Client()
	anon := c.ClientFor("", c.Nodes[0].HTTPAddr())
	_, err := anon.Models.ListModels(ctx, &droverv1.ListModelsRequest{})
	wantCode(t, "no token", err, connect.CodeUnauthenticated)
	bogus := c.ClientFor("drv_nope_nope", c.Nodes[0].HTTPAddr())
	_, err = bogus.Models.ListModels(ctx, &droverv1.ListModelsRequest{})
	wantCode(t, "unknown token", err, connect.CodeUnauthenticated)

	for role, canWrite := range map[droverv1.Role]bool{droverv1.Role_ROLE_OPERATOR: true, droverv1.Role_ROLE_VIEWER: false, droverv1.Role_ROLE_AGENT: false} {
		tok, err := admin.Tokens.CreateToken(ctx, &droverv1.CreateTokenRequest{Role: role, Name: role.String()})
		if err != nil {
			t.Fatal(err)
		}
		cl := c.ClientFor(tok.GetSecret(), c.Nodes[0].HTTPAddr())
		_, err = cl.Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: fmt.Sprintf("m%d", role)})
		if canWrite {
			if err != nil {
				t.Fatalf("%v write: %v", role, err)
			}
		} else {
			wantCode(t, role.String()+" write", err, connect.CodePermissionDenied)
		}
		_, err = cl.Tokens.CreateToken(ctx, &droverv1.CreateTokenRequest{Role: droverv1.Role_ROLE_ADMIN})
		wantCode(t, role.String()+" minting an admin token", err, connect.CodePermissionDenied)
	}
	// Secrets are stored hashed: no token record holds the secret.
	tok, _ := admin.Tokens.CreateToken(ctx, &droverv1.CreateTokenRequest{Role: droverv1.Role_ROLE_VIEWER})
	for _, rec := range c.Nodes[0].State().Tokens() {
		if bytes.Contains([]byte(rec.String()), []byte(tok.GetSecret())) {
			t.Fatal("a token secret is stored in the state")
		}
	}
	// A token with a TTL stops working when it expires.
	short, err := admin.Tokens.CreateToken(ctx, &droverv1.CreateTokenRequest{Role: droverv1.Role_ROLE_VIEWER, Ttl: durationpb.New(300 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	cl := c.ClientFor(short.GetSecret(), c.Nodes[0].HTTPAddr())
	if _, err := cl.Models.ListModels(ctx, &droverv1.ListModelsRequest{}); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	time.Sleep(400 * time.Millisecond)
	_, err = cl.Models.ListModels(ctx, &droverv1.ListModelsRequest{})
	wantCode(t, "expired token", err, connect.CodeUnauthenticated)
}

// TestNoQuorum kills two of three nodes: the survivor refuses writes and
// linearizable reads with Unavailable (after waiting for a leader), and
// still answers stale reads, saying they may be stale.
func TestNoQuorum(t *testing.T) {
	c := hubtest.StartCluster(t, 3, hubtest.Options{})
	ctx := t.Context()
	if _, err := c.Client().Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: "churn"}); err != nil {
		t.Fatal(err)
	}
	leader := c.Leader()
	survivor := (leader + 1) % 3
	hubtest.WaitFor(t, 5*time.Second, func() error {
		if c.Nodes[survivor].State().Model("churn") == nil {
			return fmt.Errorf("not replicated yet")
		}
		return nil
	})
	for i := range c.Nodes {
		if i != survivor {
			c.Kill(i)
		}
	}
	cl := c.ClientFor(c.AdminToken, c.Nodes[survivor].HTTPAddr())
	stale := &droverv1.ReadOptions{Consistency: droverv1.ReadConsistency_READ_CONSISTENCY_STALE}
	// Once the survivor notices that its leader is gone...
	hubtest.WaitFor(t, 5*time.Second, func() error {
		resp, err := cl.Models.GetModel(ctx, &droverv1.GetModelRequest{Name: "churn", Read: stale})
		if err != nil {
			return err
		}
		if resp.GetMeta().GetKnownLeader() {
			return fmt.Errorf("still knows a leader")
		}
		return nil
	})
	// ...a write waits for a leader for a while, then fails saying why.
	start := time.Now()
	_, err := cl.Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: "fraud"})
	wantCode(t, "write without quorum", err, connect.CodeUnavailable)
	if !strings.Contains(err.Error(), "no leader") {
		t.Fatalf("the error does not say why: %v", err)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Fatalf("the write waited %v", waited)
	}
	_, err = cl.Models.GetModel(ctx, &droverv1.GetModelRequest{Name: "churn"})
	wantCode(t, "linearizable read without quorum", err, connect.CodeUnavailable)
	resp, err := cl.Models.GetModel(ctx, &droverv1.GetModelRequest{Name: "churn", Read: stale})
	if err != nil {
		t.Fatalf("stale read: %v", err)
	}
	if !resp.GetMeta().GetStale() || resp.GetMeta().GetKnownLeader() {
		t.Fatalf("stale read meta = %v", resp.GetMeta())
	}
}

func TestBlobCollection(t *testing.T) {
	c := hubtest.StartCluster(t, 1, hubtest.Options{Configure: func(_ int, cfg *hub.Config) {
		cfg.BlobGCGrace = 0
		cfg.BlobGCInterval = time.Hour // run by hand below
	}})
	ctx := t.Context()
	cl := c.Client()
	kept, orphan := []byte("referenced"), []byte("orphan")
	upKept, err := cl.Upload(ctx, bytes.NewReader(kept), int64(len(kept)), digest.FromBytes(kept), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Upload(ctx, bytes.NewReader(orphan), int64(len(orphan)), digest.FromBytes(orphan), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Models.CreateVersion(ctx, &droverv1.CreateVersionRequest{Model: "m", CreateModel: true, Artifact: upKept.BlobRef()}); err != nil {
		t.Fatal(err)
	}
	removed, err := c.Nodes[0].CollectBlobs(ctx)
	if err != nil || removed != 1 {
		t.Fatalf("collected %d (%v), want 1", removed, err)
	}
	dst := filepath.Join(t.TempDir(), "x")
	if err := cl.DownloadFile(ctx, digest.FromBytes(kept), -1, dst, nil); err != nil {
		t.Fatalf("referenced blob: %v", err)
	}
	err = cl.DownloadFile(ctx, digest.FromBytes(orphan), -1, dst+"2", nil)
	wantCode(t, "collected blob", err, connect.CodeNotFound)
}

func TestRemoveAndRestart(t *testing.T) {
	c := hubtest.StartCluster(t, 3, hubtest.Options{})
	ctx := t.Context()
	cl := c.Client()
	leader := c.Leader()
	victim := (leader + 1) % 3
	name := c.Nodes[victim].Name()
	// A node restarted on its data directory rejoins by itself and catches up.
	c.Kill(victim)
	if _, err := cl.Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: "while-down"}); err != nil {
		t.Fatal(err)
	}
	c.Restart(victim)
	hubtest.WaitFor(t, 10*time.Second, func() error {
		if c.Nodes[victim].State().Model("while-down") == nil {
			return fmt.Errorf("restarted node has not caught up")
		}
		return nil
	})
	// Remove it for good.
	if _, err := c.Client().Cluster.RemoveNode(ctx, &droverv1.RemoveNodeRequest{Name: name}); err != nil {
		t.Fatal(err)
	}
	c.Kill(victim)
	st, err := c.Client().Cluster.GetClusterStatus(ctx, &droverv1.GetClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetMembers()) != 2 {
		t.Fatalf("members after removal: %v", st.GetMembers())
	}
	_, err = c.Client().Cluster.RemoveNode(ctx, &droverv1.RemoveNodeRequest{Name: "never-was"})
	wantCode(t, "remove unknown node", err, connect.CodeNotFound)
	if _, err := c.Client().Models.CreateModel(ctx, &droverv1.CreateModelRequest{Name: "after-removal"}); err != nil {
		t.Fatalf("write with two of two members: %v", err)
	}
}

// TestJoinAtATakenAddress joins a node under a new name at the Raft
// address of a dead member (a machine rebuilt under a new name): the old
// member leaves the Raft configuration and the cluster's records.
func TestJoinAtATakenAddress(t *testing.T) {
	c := hubtest.StartCluster(t, 3, hubtest.Options{})
	ctx := t.Context()
	victim := (c.Leader() + 1) % 3
	old, addr := c.Nodes[victim].Name(), c.Nodes[victim].RaftAddr()
	c.Kill(victim)
	peers := droverv1connect.NewPeerServiceClient(connect.NewClient(
		connecthttp.NewTransport(client.NewHTTPClient(), client.BaseURL(c.Nodes[c.Leader()].HTTPAddr())),
		client.Bearer(func() string { return c.AdminToken })))
	if _, err := peers.Join(ctx, &droverv1.JoinRequest{Name: "rebuilt", RaftAddress: addr, HttpAddress: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	st, err := c.Client().Cluster.GetClusterStatus(ctx, &droverv1.GetClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range st.GetMembers() {
		names = append(names, m.GetName())
	}
	if slices.Contains(names, old) || !slices.Contains(names, "rebuilt") || len(names) != 3 {
		t.Fatalf("members after a join at %s's address: %v", old, names)
	}
	// Its record went too: peers are not asked for blobs at its address.
	if rec := c.Nodes[c.Leader()].State().Node(old); rec != nil {
		t.Fatalf("the replaced member's record is kept: %v", rec)
	}
}
