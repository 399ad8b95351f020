package agent

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/internal/logging"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// TestPluginErrorsReachTheCaller checks what a caller and an operator are
// told of a runner plugin's errors: input the runner refuses (gRPC's
// InvalidArgument) is a 400 with its message, and a failed load says why
// without gRPC's wrapping.
func TestPluginErrorsReachTheCaller(t *testing.T) {
	rt := newServingRuntime(startExamplePlugin(t), logging.Discard(), ServingOptions{})
	primary := droverv1.AssignmentRole_ASSIGNMENT_ROLE_PRIMARY

	bad := filepath.Join(t.TempDir(), "bad.json")
	_ = os.WriteFile(bad, []byte(`{"format":"centroid-json","features":`), 0o644)
	err := rt.Load(context.Background(), &droverv1.DesiredAssignment{Model: "m", Version: 1, Role: primary, Format: "centroid-json"}, bad)
	if err == nil || strings.Contains(err.Error(), "rpc error") || !strings.Contains(err.Error(), "runner plugin centroid") {
		t.Fatalf("loading a truncated model: %v", err)
	}

	art := filepath.Join(t.TempDir(), "model.json")
	_ = os.WriteFile(art, []byte(`{"format":"centroid-json","features":["x"],"classes":["lo","hi"],"centroids":[[0],[10]]}`), 0o644)
	// No schema: the agent checks nothing, the runner refuses.
	if err := rt.Load(context.Background(), &droverv1.DesiredAssignment{Model: "m", Version: 2, Role: primary, Format: "centroid-json"}, art); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(oip.NewHandler(rt))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v2/models/m/infer", "application/json",
		strings.NewReader(`{"inputs":[{"name":"z","datatype":"FP64","shape":[1],"data":[1]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "input x: missing") {
		t.Fatalf("input the runner refuses: %d %s", resp.StatusCode, body)
	}
}
