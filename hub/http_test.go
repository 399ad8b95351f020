package hub_test

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"connectrpc.com/grpcreflect/v2"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/droverhq/drover/hub"
	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/internal/digest"
)

// TestReflection lists the API through gRPC server reflection, over gRPC,
// the way grpcurl and buf curl discover it (no token needed).
func TestReflection(t *testing.T) {
	c := hubtest.StartCluster(t, 1, hubtest.Options{})
	rc := grpcreflect.NewClient(connect.NewClient(connecthttp.NewTransport(client.NewHTTPClient(),
		"http://"+c.Nodes[0].HTTPAddr(), connecthttp.WithGRPC())))
	stream := rc.NewStream(t.Context())
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []protoreflect.FullName{"drover.v1.ModelService", "drover.v1.DatasetService", "drover.v1.TokenService",
		"drover.v1.AuditService", "drover.v1.ClusterService"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection does not list %s (it lists %v)", want, names)
		}
	}
	files, err := stream.FileContainingSymbol("drover.v1.ModelService")
	if err != nil || len(files) == 0 {
		t.Fatalf("FileContainingSymbol: %v", err)
	}
}

func TestHealthMetricsAndBootstrapToken(t *testing.T) {
	c := hubtest.StartCluster(t, 1, hubtest.Options{})
	base := "http://" + c.Nodes[0].HTTPAddr()
	get := func(path string, header ...string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	if resp, _ := get("/healthz"); resp.StatusCode != 200 {
		t.Fatalf("/healthz: %d", resp.StatusCode)
	}
	if resp, body := get("/readyz"); resp.StatusCode != 200 || !strings.Contains(body, "leader hub-1") {
		t.Fatalf("/readyz: %d %q", resp.StatusCode, body)
	}
	// A request first, so that the RPC metrics have a sample.
	if _, err := c.Client().Cluster.GetClusterStatus(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	_, metrics := get("/metrics")
	for _, want := range []string{"drover_hub_raft_leader 1", "drover_hub_raft_applied_index", "drover_hub_fsm_applies_total{command=\"NodeUpsert\",result=\"ok\"}",
		"drover_hub_rpc_requests_total{code=\"ok\",procedure=\"/drover.v1.ClusterService/GetClusterStatus\"}", "go_goroutines"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// The first admin token is readable by its owner only.
	fi, err := os.Stat(hub.AdminTokenPath(c.Configs[0].DataDir))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token: %v, mode %v", err, fi.Mode())
	}

	// Blobs: ETag, conditional GET, ranges.
	data := []byte("0123456789abcdef")
	d := digest.FromBytes(data)
	if _, err := c.Client().Upload(t.Context(), bytes.NewReader(data), int64(len(data)), d, nil); err != nil {
		t.Fatal(err)
	}
	auth := "Bearer " + c.AdminToken
	resp, body := get("/v1/blobs/"+d.String(), "Authorization", auth)
	if resp.StatusCode != 200 || body != string(data) || resp.Header.Get("ETag") != `"`+d.String()+`"` || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("GET blob: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, _ = get("/v1/blobs/"+d.String(), "Authorization", auth, "If-None-Match", `"`+d.String()+`"`); resp.StatusCode != http.StatusNotModified {
		t.Fatalf("conditional GET: %d", resp.StatusCode)
	}
	if resp, body = get("/v1/blobs/"+d.String(), "Authorization", auth, "Range", "bytes=10-"); resp.StatusCode != http.StatusPartialContent || body != "abcdef" {
		t.Fatalf("range GET: %d %q", resp.StatusCode, body)
	}
	if resp, _ = get("/v1/blobs/sha256:nothex", "Authorization", auth); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad digest: %d", resp.StatusCode)
	}
	if resp, _ = get("/v1/blobs/" + d.String()); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
}
