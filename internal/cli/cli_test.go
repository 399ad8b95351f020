package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/droverhq/drover/hub/hubtest"
)

// run runs the CLI against a hub and returns stdout, stderr and the exit code.
func run(t *testing.T, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	var out, errOut bytes.Buffer
	code := Main(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

func mustRun(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	out, errOut, code := run(t, env, args...)
	if code != 0 {
		t.Fatalf("drover %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func runJSON(t *testing.T, env map[string]string, v any, args ...string) {
	t.Helper()
	out := mustRun(t, env, append([]string{"--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("drover %s: not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestRegistryCommands(t *testing.T) {
	c := hubtest.StartCluster(t, 1, hubtest.Options{})
	env := map[string]string{"DROVER_ADDR": c.Nodes[0].HTTPAddr(), "DROVER_TOKEN": c.AdminToken}
	dir := t.TempDir()
	art := filepath.Join(dir, "model.bin")
	if err := os.WriteFile(art, bytes.Repeat([]byte{1, 2, 3}, 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	schema := filepath.Join(dir, "schema.yaml")
	if err := os.WriteFile(schema, []byte("inputs:\n- name: tenure\n  datatype: FP64\n  kind: FEATURE_KIND_NUMERIC\n  min: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	mustRun(t, env, "models", "create", "churn", "--label", "team=growth")
	out := mustRun(t, env, "models", "push", "churn", "--file", art, "--format", "onnx", "--runner", "native",
		"--param", "l2=0.1", "--metric", "auc=0.87", "--schema", schema)
	if !strings.HasPrefix(out, "Pushed churn:1 sha256:") {
		t.Fatalf("push printed %q", out)
	}
	var pushed struct {
		Version uint64             `json:"version"`
		Digest  string             `json:"digest"`
		Metrics map[string]float64 `json:"metrics"`
	}
	runJSON(t, env, &pushed, "models", "push", "churn", "--file", art, "--metric", "auc=0.9")
	if pushed.Version != 2 || !strings.HasPrefix(pushed.Digest, "sha256:") || pushed.Metrics["auc"] != 0.9 {
		t.Fatalf("push --json = %+v", pushed)
	}
	mustRun(t, env, "models", "alias", "churn", "champion", "2", "--reason", "better")

	var shown struct {
		Name     string            `json:"name"`
		Aliases  map[string]uint64 `json:"aliases"`
		Versions []struct {
			Version uint64   `json:"version"`
			Digest  string   `json:"digest"`
			Aliases []string `json:"aliases"`
		} `json:"versions"`
	}
	runJSON(t, env, &shown, "models", "show", "churn")
	if len(shown.Versions) != 2 || shown.Versions[1].Version != 2 || shown.Versions[0].Digest != pushed.Digest ||
		shown.Aliases["champion"] != 2 || shown.Versions[1].Aliases[0] != "champion" {
		t.Fatalf("show --json = %+v", shown)
	}
	var one struct {
		Version uint64          `json:"version"`
		Schema  json.RawMessage `json:"schema"`
	}
	runJSON(t, env, &one, "models", "show", "churn:1")
	if one.Version != 1 || !strings.Contains(string(one.Schema), `"tenure"`) {
		t.Fatalf("show churn:1 = %+v", one)
	}

	// Errors: the right message and a non-zero exit; usage errors exit 2.
	_, errOut, code := run(t, env, "models", "alias", "churn", "champion", "1", "--expect", "1")
	if code != 1 || !strings.Contains(errOut, "failed_precondition: alias \"champion\" of \"churn\" points at version 2, not 1") {
		t.Fatalf("guarded alias move: exit %d, %q", code, errOut)
	}
	_, errOut, code = run(t, env, "--json", "models", "show", "nope")
	if code != 1 || !strings.Contains(errOut, `"code":"not_found"`) {
		t.Fatalf("unknown model: exit %d, %q", code, errOut)
	}
	if _, _, code = run(t, env, "models", "push", "churn"); code != 2 {
		t.Fatalf("push without --file: exit %d, want 2", code)
	}

	// Tokens: the secret is in the JSON once; a viewer may read, not write.
	var tok struct {
		ID    string `json:"id"`
		Role  string `json:"role"`
		Token string `json:"token"`
	}
	runJSON(t, env, &tok, "tokens", "create", "--role", "viewer", "--name", "dashboards")
	if tok.Role != "viewer" || !strings.HasPrefix(tok.Token, "drv_"+tok.ID+"_") {
		t.Fatalf("tokens create = %+v", tok)
	}
	viewer := map[string]string{"DROVER_TOKEN": tok.Token}
	mustRun(t, viewer, "models", "list")
	_, errOut, _ = run(t, viewer, "models", "create", "x")
	if !strings.Contains(errOut, "permission_denied") {
		t.Fatalf("viewer write: %q", errOut)
	}
	t.Setenv("DROVER_TOKEN", c.AdminToken)
	mustRun(t, nil, "tokens", "revoke", tok.ID)
	_, errOut, _ = run(t, viewer, "models", "list")
	if !strings.Contains(errOut, "unauthenticated") {
		t.Fatalf("revoked token: %q", errOut)
	}
	t.Setenv("DROVER_TOKEN", c.AdminToken)

	// Data sets and the audit trail.
	data := filepath.Join(dir, "train.csv")
	if err := os.WriteFile(data, []byte("tenure,churned\n1,0\n2,1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var ds struct {
		Version uint64 `json:"version"`
		Format  string `json:"format"`
	}
	runJSON(t, nil, &ds, "datasets", "push", "churn-train", "--file", data, "--rows", "2")
	if ds.Version != 1 || ds.Format != "csv" {
		t.Fatalf("datasets push = %+v", ds)
	}
	var audit struct {
		Events []struct {
			Action  string `json:"action"`
			Summary string `json:"summary"`
			Reason  string `json:"reason"`
			Actor   struct {
				Name string `json:"name"`
			} `json:"actor"`
		} `json:"events"`
	}
	runJSON(t, nil, &audit, "audit", "--resource", "model/churn/alias")
	if len(audit.Events) != 1 || audit.Events[0].Summary != "champion: new -> 2" || audit.Events[0].Reason != "better" || audit.Events[0].Actor.Name != "bootstrap" {
		t.Fatalf("audit = %+v", audit)
	}
	var status struct {
		Leader  string `json:"leader"`
		Members []struct {
			Name string `json:"name"`
			Role string `json:"role"`
		} `json:"members"`
	}
	runJSON(t, nil, &status, "cluster", "status")
	if status.Leader != "hub-1" || len(status.Members) != 1 || status.Members[0].Role != "leader" {
		t.Fatalf("cluster status = %+v", status)
	}
	var version struct {
		Version string `json:"version"`
	}
	runJSON(t, nil, &version, "version")
	if version.Version == "" {
		t.Fatal("version --json has no version")
	}
}

// TestMistakesAreUsageErrors checks that every kind of mistake in calling
// a command exits 2 with a "usage" error (JSON with --json), and that a
// group named alone prints its help.
func TestMistakesAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"nosuch"},
		{"models", "lst"},
		{"retrain", "jobs", "bogus"},
		{"models", "show"},
		{"agents", "show", "a", "b"},
		{"rollouts", "status"},
		{"tokens", "create", "--role", "viewer", "--ttl", "-1h"},
		{"models", "list", "--no-such-flag"},
		{"hub", "--config", filepath.Join(t.TempDir(), "missing.yaml")},
		{"agent", "--config", filepath.Join(t.TempDir(), "missing.yaml")},
		// No hub; then no join token, never enrolled.
		{"agent", "--data-dir", t.TempDir()},
		{"agent", "--hub", "127.0.0.1:1", "--data-dir", t.TempDir(), "--serve-addr", "127.0.0.1:0"},
	} {
		out, errOut, code := run(t, nil, append(args, "--json")...)
		var e struct {
			Error struct{ Code, Message string }
		}
		if code != 2 || out != "" || json.Unmarshal([]byte(errOut), &e) != nil || e.Error.Code != "usage" || e.Error.Message == "" {
			t.Errorf("drover %s --json: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, out, errOut)
		}
	}
	if out, _, code := run(t, nil, "models"); code != 0 || !strings.Contains(out, "Available Commands") {
		t.Errorf("drover models: exit %d\n%s", code, out)
	}
	if _, errOut, code := run(t, nil, "models", "lst"); !strings.Contains(errOut, "did you mean list?") || code != 2 {
		t.Errorf("drover models lst: exit %d, %s", code, errOut)
	}
	if out, _, code := run(t, map[string]string{"DROVER_TIMEOUT": "soon"}, "models", "list"); code != 2 {
		t.Errorf("a bad DROVER_TIMEOUT: exit %d, %s", code, out)
	}
}

// TestNoHubHint: a refused connection says which hub address was tried and
// how to give another.
func TestNoHubHint(t *testing.T) {
	_, errOut, code := run(t, map[string]string{"DROVER_ADDR": "127.0.0.1:1"}, "models", "list")
	if code != 1 || !strings.Contains(errOut, "no hub answers at 127.0.0.1:1") || !strings.Contains(errOut, "DROVER_ADDR") {
		t.Fatalf("exit %d, %s", code, errOut)
	}
}
