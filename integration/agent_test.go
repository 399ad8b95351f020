package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/droverhq/drover/hub/hubtest"
)

// agentProc is one drover agent process.
type agentProc struct {
	t         testing.TB
	name      string
	dataDir   string
	serveAddr string
	logPath   string
	args      []string
	env       []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

func newAgent(t testing.TB, dir, name string, args ...string) *agentProc {
	a := &agentProc{t: t, name: name, dataDir: filepath.Join(dir, name), serveAddr: freePort(t), logPath: filepath.Join(dir, name+".log"), args: args}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(a.logPath)
			lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			if len(lines) > 120 {
				lines = lines[len(lines)-120:]
			}
			t.Logf("----- last lines of %s's log:\n%s", a.name, strings.Join(lines, "\n"))
		}
		a.kill()
	})
	return a
}

func (a *agentProc) start() {
	a.t.Helper()
	log, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		a.t.Fatal(err)
	}
	full := append([]string{"agent", "--name", a.name, "--data-dir", a.dataDir, "--serve-addr", a.serveAddr, "--log-level", "debug"}, a.args...)
	cmd := exec.Command(droverBin, full...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), a.env...)
	if err := cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(exited)
	}()
	a.mu.Lock()
	a.cmd, a.exited = cmd, exited
	a.mu.Unlock()
}

func (a *agentProc) signal(sig syscall.Signal) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd != nil {
		_ = a.cmd.Process.Signal(sig)
	}
}

func (a *agentProc) kill() {
	a.signal(syscall.SIGKILL)
	a.wait()
}

func (a *agentProc) wait() {
	a.mu.Lock()
	exited := a.exited
	a.mu.Unlock()
	if exited != nil {
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			a.t.Errorf("%s did not exit", a.name)
		}
	}
	a.mu.Lock()
	a.cmd = nil
	a.mu.Unlock()
}

// status reads the agent's own /v1/agent.
func (a *agentProc) status() (map[string]any, error) {
	resp, err := http.Get("http://" + a.serveAddr + "/v1/agent")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

// cli runs the drover CLI against the cluster and decodes its JSON.
// tryCLI runs the CLI with --json and decodes its output into out, or
// returns its error with what it printed.
func (c *cluster) tryCLI(out any, args ...string) error {
	full := append([]string{"--addr", strings.Join(c.addrs(), ","), "--token", c.token, "--json"}, args...)
	cmd := exec.Command(droverBin, full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("drover %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (c *cluster) cli(t testing.TB, out any, args ...string) {
	t.Helper()
	full := append([]string{"--addr", strings.Join(c.addrs(), ","), "--token", c.token, "--json"}, args...)
	b, err := exec.Command(droverBin, full...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("drover %s: %v\n%s%s", strings.Join(args, " "), err, b, stderr)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("drover %s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
}

type agentsList struct {
	Agents []struct {
		Name          string         `json:"name"`
		Status        string         `json:"status"`
		GPUs          int            `json:"gpus"`
		GPUHealth     map[string]int `json:"gpu_health"`
		LastReportSeq uint64         `json:"last_report_seq"`
		Inventory     struct {
			NVMLError string `json:"nvml_error"`
		} `json:"inventory"`
		Assignments []struct {
			Model   string `json:"model"`
			Phase   string `json:"phase"`
			Health  string `json:"health"`
			Message string `json:"message"`
			Running uint64 `json:"running_version"`
		} `json:"assignments"`
	} `json:"agents"`
}

func (c *cluster) agents(t testing.TB) agentsList {
	var l agentsList
	c.cli(t, &l, "agents", "list")
	return l
}

// waitEnrolled waits until the hub lists agent.
func (c *cluster) waitEnrolled(t testing.TB, agent string, timeout time.Duration) {
	t.Helper()
	hubtest.WaitFor(t, timeout, func() error {
		for _, a := range c.agents(t).Agents {
			if a.Name == agent {
				return nil
			}
		}
		return fmt.Errorf("no agent %s yet", agent)
	})
}

// waitRunning waits until agent runs model version v, ready.
func (c *cluster) waitRunning(t testing.TB, agent, model string, v uint64, timeout time.Duration) {
	t.Helper()
	hubtest.WaitFor(t, timeout, func() error {
		for _, a := range c.agents(t).Agents {
			if a.Name != agent {
				continue
			}
			for _, as := range a.Assignments {
				if as.Model == model && as.Running == v && as.Phase == "ready" {
					return nil
				}
			}
			return fmt.Errorf("%s: %+v", agent, a.Assignments)
		}
		return fmt.Errorf("no agent %s", agent)
	})
}

// pushArtifact writes size random bytes to a file and pushes it as the next
// version of model, returning the version.
func (c *cluster) pushArtifact(t testing.TB, model string, size int) uint64 {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.bin")
	b := make([]byte, size)
	_, _ = rand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var v struct {
		Version uint64 `json:"version"`
	}
	c.cli(t, &v, "models", "push", model, "--file", path, "--create", "--format", "onnx")
	return v.Version
}

// notifySocket listens where an agent run under a pretend systemd sends
// its notifications, and collects them.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t *testing.T) *notifySocket {
	// A unix socket path must be short.
	dir, err := os.MkdirTemp("", "drv-notify-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &notifySocket{path: filepath.Join(dir, "s")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 1024)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	return n
}

func (n *notifySocket) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

func (n *notifySocket) saw(prefix string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.msgs {
		if strings.HasPrefix(m, prefix) {
			return true
		}
	}
	return false
}

// TestAgentsEndToEnd runs a hub and two agent processes — one on a
// simulated DGX H100, one with no NVIDIA library — and takes them through
// enrolment, assignments, a download cut by SIGKILL and resumed, the hub
// going away and coming back, a configuration reload and a clean stop.
func TestAgentsEndToEnd(t *testing.T) {
	// Downloads are slowed so that one can be interrupted half-way.
	c := startCluster(t, 1, "--blob-serve-rate", "20000000", "--agent-timeout", "3s")
	var tok struct {
		Token string `json:"token"`
	}
	c.cli(t, &tok, "tokens", "create", "--role", "agent", "--name", "fleet")
	dir := t.TempDir()
	common := []string{"--hub", c.hubs[0].httpAddr, "--join-token", tok.Token, "--heartbeat-interval", "300ms",
		"--sample-interval", "200ms", "--telemetry-window", "1s"}
	cfgFile := filepath.Join(dir, "gpu-1.yaml")
	if err := os.WriteFile(cfgFile, []byte("label: [rack=r1]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gpu := newAgent(t, dir, "gpu-1", append(common, "--fake-gpus", "dgxh100", "--config", cfgFile)...)
	cpu := newAgent(t, dir, "cpu-1", append(common, "--label", "site=edge")...)
	notify := listenNotify(t)
	gpu.env = []string{"NOTIFY_SOCKET=" + notify.path, "WATCHDOG_USEC=1000000"}
	gpu.start()
	cpu.start()

	// Enrolled, with inventories, visible in drover agents list --json.
	hubtest.WaitFor(t, 20*time.Second, func() error {
		l := c.agents(t)
		if len(l.Agents) != 2 {
			return fmt.Errorf("%d agents", len(l.Agents))
		}
		for _, a := range l.Agents {
			switch {
			case a.Name == "gpu-1" && (a.GPUs != 8 || a.GPUHealth["healthy"] != 8):
				return fmt.Errorf("gpu-1: %d GPUs, health %v", a.GPUs, a.GPUHealth)
			case a.Name == "cpu-1" && (a.GPUs != 0 || !strings.Contains(a.Inventory.NVMLError, "LIBRARY_NOT_FOUND")):
				return fmt.Errorf("cpu-1: %d GPUs, %q", a.GPUs, a.Inventory.NVMLError)
			}
		}
		return nil
	})
	hubtest.WaitFor(t, 5*time.Second, func() error {
		if !notify.saw("READY=1") || !notify.saw("WATCHDOG=1") {
			return fmt.Errorf("the agent did not tell systemd it was ready, or did not pet the watchdog: %q", notify.all())
		}
		return nil
	})

	// An assignment, then a change of version: reconciled.
	v1 := c.pushArtifact(t, "churn", 1<<20)
	c.cli(t, nil, "agents", "assign", "gpu-1", fmt.Sprintf("churn:%d", v1))
	c.waitRunning(t, "gpu-1", "churn", v1, 20*time.Second)
	v2 := c.pushArtifact(t, "churn", 40<<20) // two seconds at 20 MB/s
	c.cli(t, nil, "agents", "assign", "gpu-1", fmt.Sprintf("churn:%d", v2))

	// Killed mid-download, restarted: the download resumes, no half-written
	// model is ever used, and it converges.
	hubtest.WaitFor(t, 10*time.Second, func() error {
		parts, _ := filepath.Glob(filepath.Join(gpu.dataDir, "artifacts", "sha256", "*", "*.partial"))
		for _, p := range parts {
			if fi, err := os.Stat(p); err == nil && fi.Size() > 4<<20 {
				return nil
			}
		}
		return fmt.Errorf("no partial download yet")
	})
	gpu.kill()
	gpu.start()
	c.waitRunning(t, "gpu-1", "churn", v2, 30*time.Second)
	if b, _ := os.ReadFile(gpu.logPath); !bytes.Contains(b, []byte("resuming an interrupted download")) {
		t.Error("the restarted agent did not resume its download")
	}

	// The hub goes away: agents keep serving and keep their reports; when
	// it is back, every report made in the meantime arrives.
	c.hubs[0].kill()
	time.Sleep(3 * time.Second)
	st, err := gpu.status()
	if err != nil {
		t.Fatal(err)
	}
	made := uint64(st["last_report_seq"].(float64))
	if st["outbox_reports"].(float64) == 0 {
		t.Fatalf("no reports buffered while the hub was away: %v", st)
	}
	if resp, err := http.Get("http://" + gpu.serveAddr + "/readyz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the agent stopped being ready without its hub: %v %v", resp, err)
	}
	c.hubs[0].start()
	c.hubs[0].waitReady(20 * time.Second)
	hubtest.WaitFor(t, 30*time.Second, func() error {
		for _, a := range c.agents(t).Agents {
			if a.Name == "gpu-1" && a.LastReportSeq >= made {
				return nil
			}
		}
		return fmt.Errorf("the hub has not taken report %d yet", made)
	})

	// SIGHUP re-reads the config file: new labels and trainers reach the
	// hub.
	if err := os.WriteFile(cfgFile, []byte("label: [rack=r9, tier=gold]\ntrainer: [\"fit=/bin/true --quick\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gpu.signal(syscall.SIGHUP)
	hubtest.WaitFor(t, 20*time.Second, func() error {
		var l struct {
			Agents []struct {
				Name   string            `json:"name"`
				Labels map[string]string `json:"labels"`
			} `json:"agents"`
		}
		c.cli(t, &l, "agents", "list", "--selector", "tier=gold")
		if len(l.Agents) != 1 || l.Agents[0].Labels["rack"] != "r9" {
			return fmt.Errorf("labels not reloaded: %+v", l)
		}
		var show struct {
			Inventory struct {
				Trainers []string `json:"trainers"`
			} `json:"inventory"`
		}
		c.cli(t, &show, "agents", "show", "gpu-1")
		if !slices.Equal(show.Inventory.Trainers, []string{"native", "fit"}) {
			return fmt.Errorf("trainers not reloaded: %q", show.Inventory.Trainers)
		}
		return nil
	})
	if !notify.saw("RELOADING=1") {
		t.Error("the agent did not tell systemd it was reloading")
	}

	// SIGTERM: a clean stop, said to systemd.
	gpu.signal(syscall.SIGTERM)
	gpu.wait()
	if !notify.saw("STOPPING=1") {
		t.Error("the agent did not tell systemd it was stopping")
	}
}

// TestSystemdUnits checks the shipped units with systemd-analyze verify.
func TestSystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is needed to check the units (apt install systemd)")
	}
	dir := t.TempDir()
	var units []string
	for _, name := range []string{"drover-hub.service", "drover-agent.service"} {
		b, err := os.ReadFile(filepath.Join("..", "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		// verify insists that ExecStart's binary exists.
		b = bytes.ReplaceAll(b, []byte("/usr/bin/drover"), []byte(droverBin))
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, path)
		for _, want := range []string{"Type=notify", "WatchdogSec=", "Restart=on-failure", "StartLimitIntervalSec=0", "ExecReload=", "NoNewPrivileges=yes", "ProtectSystem=strict"} {
			if !bytes.Contains(b, []byte(want)) {
				t.Errorf("%s lacks %s", name, want)
			}
		}
	}
	out, err := exec.Command(analyze, append([]string{"verify"}, units...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
