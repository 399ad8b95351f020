package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/droverhq/drover/hub/hubtest"
)

// TestHubFromConfigFileAndEnvironment starts a hub whose settings come from
// a YAML file and a DROVER_* variable, not flags, and checks that a typo in
// the file stops it with a clear message.
func TestHubFromConfigFileAndEnvironment(t *testing.T) {
	dir := t.TempDir()
	httpAddr, raftAddr := freePort(t), freePort(t)
	cfg := filepath.Join(dir, "hub.yaml")
	write := func(body string) {
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(fmt.Sprintf("node-name: from-file\nhttp_addr: %s\nraft-addr: %s\nbootstrap: true\nlog-format: json\n", httpAddr, raftAddr))
	dataDir := filepath.Join(dir, "data")
	logPath := filepath.Join(dir, "hub.log")
	log, _ := os.Create(logPath)
	cmd := exec.Command(droverBin, "hub", "--config", cfg)
	cmd.Env = append(os.Environ(), "DROVER_DATA_DIR="+dataDir)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("hub log:\n%s", b)
		}
	})
	hubtest.WaitFor(t, 20*time.Second, func() error {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("not ready: %d", resp.StatusCode)
		}
		return nil
	})
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatalf("the data dir from DROVER_DATA_DIR was not used: %v", err)
	}
	out, err := exec.Command(droverBin, "--addr", httpAddr, "--token", strings.TrimSpace(string(tok)), "--json", "cluster", "status").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"leader": "from-file"`) {
		t.Fatalf("cluster status: %v\n%s", err, out)
	}
	// The log is JSON, one object a line.
	first, _, _ := strings.Cut(readFile(t, logPath), "\n")
	var line map[string]any
	if err := json.Unmarshal([]byte(first), &line); err != nil || line["msg"] == nil {
		t.Fatalf("log line is not JSON: %q", first)
	}

	// A misspelt setting is an error, not silently ignored.
	write("node-name: x\ndata-dri: /tmp/x\n")
	out, err = exec.Command(droverBin, "hub", "--config", cfg).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), `unknown setting "data-dri"`) {
		t.Fatalf("misspelt setting: %v\n%s", err, out)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
