package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/plugins/sdk/sdktest"
)

// TestPluginsList installs the example plugin in a plugin directory with
// its checksum, plus one tampered copy, and lists them with the CLI, which
// exits 1 for the one that would not run (an install check), and 0 once
// it is gone.
func TestPluginsList(t *testing.T) {
	dir := t.TempDir()
	bin, sum, err := sdktest.BuildExample(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(bin)
	_ = os.WriteFile(filepath.Join(dir, "evil"), append(b, 1), 0o755)
	_ = os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(sum+"  centroid\n"+sum+"  evil\n"), 0o644)

	out, err := exec.Command(droverBin, "plugins", "list", "--plugin-dir", dir, "--json").Output()
	if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 1 {
		t.Fatalf("plugins list with a tampered plugin: %v", err)
	}
	var l struct {
		Plugins []struct {
			File, Status, Name, Version string
			Formats                     []string
			CanServe                    bool `json:"can_serve"`
		}
	}
	if err := json.Unmarshal(out, &l); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(l.Plugins) != 2 {
		t.Fatalf("%s", out)
	}
	c, e := l.Plugins[0], l.Plugins[1]
	if c.Status != "verified" || c.Name != "centroid" || c.Version != "1.0.0" || !c.CanServe || c.Formats[0] != "centroid-json" {
		t.Errorf("centroid: %+v", c)
	}
	if e.Status != "mismatch" || e.Name != "" {
		t.Errorf("the tampered copy: %+v", e)
	}
	_ = os.Remove(filepath.Join(dir, "evil"))
	_ = os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(sum+"  centroid\n"), 0o644)
	if out, err := exec.Command(droverBin, "plugins", "list", "--plugin-dir", dir).CombinedOutput(); err != nil {
		t.Fatalf("plugins list with only good plugins: %v\n%s", err, out)
	}
}

// TestPluginHealth serves a model through the example plugin from an
// agent process, then hangs the plugin (SIGSTOP) and later kills it: each
// time the hub hears that the version is unhealthy, the agent kills and
// restarts the plugin, reloads the model, reports it healthy, and answers
// again — and the agent itself never stops.
func TestPluginHealth(t *testing.T) {
	plugins := t.TempDir()
	_, sum, err := sdktest.BuildExample(plugins)
	if err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(plugins, "SHA256SUMS"), []byte(sum+"  centroid\n"), 0o644)

	c := startCluster(t, 1)
	var tok struct {
		Token string `json:"token"`
	}
	c.cli(t, &tok, "tokens", "create", "--role", "agent", "--name", "edge")
	a := newAgent(t, t.TempDir(), "edge-1", "--hub", c.hubs[0].httpAddr, "--join-token", tok.Token,
		"--heartbeat-interval", "300ms", "--plugin-dir", plugins)
	a.start()

	dir := t.TempDir()
	art := filepath.Join(dir, "model.json")
	_ = os.WriteFile(art, []byte(`{"format":"centroid-json","features":["x"],"classes":["lo","hi"],"centroids":[[0],[10]]}`), 0o644)
	schema := filepath.Join(dir, "schema.json")
	_ = os.WriteFile(schema, []byte(`{"inputs": [{"name": "x", "datatype": "FP64"}]}`), 0o644)
	var v struct {
		Version uint64 `json:"version"`
	}
	c.cli(t, &v, "models", "push", "centroid", "--create", "--file", art, "--format", "centroid-json", "--runner", "centroid", "--schema", schema)
	hubtest.WaitFor(t, 20*time.Second, func() error {
		if l := c.agents(t); len(l.Agents) != 1 {
			return fmt.Errorf("%d agents enrolled", len(l.Agents))
		}
		return nil
	})
	c.cli(t, nil, "agents", "assign", "edge-1", fmt.Sprintf("centroid:%d", v.Version))
	c.waitRunning(t, "edge-1", "centroid", v.Version, 20*time.Second)

	infer := func() int {
		resp, err := http.Post("http://"+a.serveAddr+"/v2/models/centroid/infer", "application/json",
			strings.NewReader(`{"inputs":[{"name":"x","datatype":"FP64","shape":[2],"data":[1,9]}]}`))
		if err != nil {
			t.Fatalf("the agent stopped answering: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == 200 && !strings.Contains(string(b), `"data":["lo","hi"]`) {
			t.Fatalf("wrong answer: %s", b)
		}
		return resp.StatusCode
	}
	health := func(want string) {
		t.Helper()
		hubtest.WaitFor(t, 30*time.Second, func() error {
			for _, ag := range c.agents(t).Agents {
				for _, as := range ag.Assignments {
					if as.Model == "centroid" && as.Health == want {
						return nil
					}
					return fmt.Errorf("%+v", as)
				}
			}
			return errors.New("no assignment")
		})
	}
	// unhealthyEvents counts the hub's events saying the version was
	// unhealthy, with the reason given.
	unhealthyEvents := func(reason string) int {
		var show struct {
			Events []struct{ Kind, Message string } `json:"events"`
		}
		c.cli(t, &show, "agents", "show", "edge-1")
		n := 0
		for _, e := range show.Events {
			if e.Kind == "assignment" && strings.Contains(e.Message, "(unhealthy)") && strings.Contains(e.Message, reason) {
				n++
			}
		}
		return n
	}
	health("healthy")
	if code := infer(); code != 200 {
		t.Fatalf("before: %d", code)
	}

	for _, c := range []struct {
		sig    syscall.Signal
		reason string
	}{{syscall.SIGSTOP, "stopped answering"}, {syscall.SIGKILL, "exited"}} {
		pid := pluginPid(t, a)
		if err := syscall.Kill(pid, c.sig); err != nil {
			t.Fatal(err)
		}
		hubtest.WaitFor(t, 30*time.Second, func() error {
			if unhealthyEvents(c.reason) == 0 {
				return fmt.Errorf("no event says the version was unhealthy because the plugin %s", c.reason)
			}
			return nil
		})
		health("healthy")
		if again := pluginPid(t, a); again == pid {
			t.Fatalf("after %v the plugin is still process %d", c.sig, pid)
		}
		hubtest.WaitFor(t, 10*time.Second, func() error {
			if code := infer(); code != 200 {
				return fmt.Errorf("status %d", code)
			}
			return nil
		})
	}
}

// pluginPid finds the agent's plugin process: its child running centroid.
func pluginPid(t *testing.T, a *agentProc) int {
	t.Helper()
	a.mu.Lock()
	parent := a.cmd.Process.Pid
	a.mu.Unlock()
	var pid int
	hubtest.WaitFor(t, 10*time.Second, func() error {
		stats, _ := filepath.Glob("/proc/[0-9]*/stat")
		for _, st := range stats {
			b, err := os.ReadFile(st)
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...
			s := string(b)
			i := strings.LastIndexByte(s, ')')
			if i < 0 || !strings.Contains(s[:i], "(centroid") {
				continue
			}
			f := strings.Fields(s[i+1:])
			if len(f) > 1 && f[0] != "Z" && f[1] == fmt.Sprint(parent) {
				pid, _ = strconv.Atoi(strings.Fields(s)[0])
				return nil
			}
		}
		return errors.New("no plugin process")
	})
	return pid
}
