package integration

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/internal/freeport"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// droverBin is the binary under test, built once by TestMain.
var droverBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "drover-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	droverBin = filepath.Join(dir, "drover")
	build := exec.Command("go", "build", "-o", droverBin, "github.com/droverhq/drover/cmd/drover")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build drover:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback address that was free a moment ago, outside
// the range the kernel picks outgoing connections' ports from.
func freePort(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Loopback()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// hubProc is one drover hub process.
type hubProc struct {
	t        testing.TB
	name     string
	dataDir  string
	httpAddr string
	raftAddr string
	logPath  string
	extra    []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
}

func newHub(t testing.TB, dir, name string, extra ...string) *hubProc {
	h := &hubProc{
		t: t, name: name, dataDir: filepath.Join(dir, name), httpAddr: freePort(t), raftAddr: freePort(t),
		logPath: filepath.Join(dir, name+".log"), extra: extra,
	}
	t.Cleanup(func() {
		if t.Failed() {
			h.dumpLog()
		}
		h.kill()
	})
	return h
}

// start runs the hub with its fixed flags plus args.
func (h *hubProc) start(args ...string) {
	h.t.Helper()
	log, err := os.OpenFile(h.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		h.t.Fatal(err)
	}
	fmt.Fprintf(log, "----- start %s %v\n", time.Now().Format(time.RFC3339Nano), args)
	full := append([]string{"hub", "--node-name", h.name, "--data-dir", h.dataDir, "--http-addr", h.httpAddr,
		"--raft-addr", h.raftAddr, "--log-level", "debug"}, h.extra...)
	full = append(full, args...)
	cmd := exec.Command(droverBin, full...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(exited)
	}()
	h.mu.Lock()
	h.cmd, h.exited = cmd, exited
	h.mu.Unlock()
}

// kill sends SIGKILL: no clean shutdown, no flushing.
func (h *hubProc) kill() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd != nil {
		_ = h.cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-h.exited:
		case <-time.After(10 * time.Second):
			h.t.Errorf("%s did not die within 10s of SIGKILL", h.name)
		}
		h.cmd = nil
	}
}

func (h *hubProc) dumpLog() {
	b, _ := os.ReadFile(h.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 150 {
		lines = lines[len(lines)-150:]
	}
	h.t.Logf("----- last lines of %s's log (%s):\n%s", h.name, h.logPath, strings.Join(lines, "\n"))
}

// waitReady waits for /readyz to answer 200.
func (h *hubProc) waitReady(timeout time.Duration) {
	h.t.Helper()
	hubtest.WaitFor(h.t, timeout, func() error {
		resp, err := http.Get("http://" + h.httpAddr + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			return fmt.Errorf("%s not ready: %s", h.name, strings.TrimSpace(b.String()))
		}
		return nil
	})
}

func (h *hubProc) adminToken() string {
	h.t.Helper()
	var tok string
	hubtest.WaitFor(h.t, 10*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(h.dataDir, "admin.token"))
		tok = strings.TrimSpace(string(b))
		return err
	})
	return tok
}

// cluster is a set of hub processes started like an operator would.
type cluster struct {
	t     testing.TB
	hubs  []*hubProc
	token string
}

// startCluster bootstraps hub-1 and joins the others through it, each
// started with the default settings an operator gets plus extra flags.
func startCluster(t testing.TB, size int, extra ...string) *cluster {
	t.Helper()
	dir := t.TempDir()
	c := &cluster{t: t}
	for i := range size {
		c.hubs = append(c.hubs, newHub(t, dir, fmt.Sprintf("hub-%d", i+1), extra...))
	}
	c.hubs[0].start("--bootstrap")
	c.token = c.hubs[0].adminToken()
	c.hubs[0].waitReady(20 * time.Second)
	for _, h := range c.hubs[1:] {
		h.start("--join", c.hubs[0].httpAddr, "--join-token", c.token)
	}
	for _, h := range c.hubs[1:] {
		h.waitReady(20 * time.Second)
	}
	c.waitMembers(size)
	return c
}

func (c *cluster) addrs() []string {
	var out []string
	for _, h := range c.hubs {
		out = append(out, h.httpAddr)
	}
	return out
}

// client returns an admin client that fails over between every node.
func (c *cluster) client() *client.Client {
	cl, err := client.New(client.Config{Addrs: c.addrs(), Token: c.token})
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// clientFor returns an admin client for one node only.
func (c *cluster) clientFor(h *hubProc) *client.Client {
	cl, err := client.New(client.Config{Addrs: []string{h.httpAddr}, Token: c.token})
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

func (c *cluster) status() (*droverv1.GetClusterStatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.client().Cluster.GetClusterStatus(ctx, &droverv1.GetClusterStatusRequest{Verify: true})
}

func (c *cluster) waitMembers(n int) {
	c.t.Helper()
	hubtest.WaitFor(c.t, 30*time.Second, func() error {
		st, err := c.status()
		if err != nil {
			return err
		}
		if len(st.GetMembers()) != n {
			return fmt.Errorf("%d members, want %d", len(st.GetMembers()), n)
		}
		for _, m := range st.GetMembers() {
			if m.GetError() != "" {
				return fmt.Errorf("%s: %s", m.GetName(), m.GetError())
			}
		}
		return nil
	})
}

// leader returns the hub that leads now.
func (c *cluster) leader() *hubProc {
	c.t.Helper()
	var leader *hubProc
	hubtest.WaitFor(c.t, 20*time.Second, func() error {
		st, err := c.status()
		if err != nil {
			return err
		}
		for _, h := range c.hubs {
			if h.name == st.GetLeader() {
				leader = h
				return nil
			}
		}
		return fmt.Errorf("no leader")
	})
	return leader
}

// waitConverged waits until every member has applied the same index and
// holds the same state digest there, and returns that index.
func (c *cluster) waitConverged(timeout time.Duration) uint64 {
	c.t.Helper()
	var index uint64
	hubtest.WaitFor(c.t, timeout, func() error {
		st, err := c.status()
		if err != nil {
			return err
		}
		if len(st.GetMembers()) != len(c.hubs) {
			return fmt.Errorf("%d members", len(st.GetMembers()))
		}
		first := st.GetMembers()[0]
		for _, m := range st.GetMembers() {
			if m.GetError() != "" {
				return fmt.Errorf("%s: %s", m.GetName(), m.GetError())
			}
			if m.GetAppliedIndex() != first.GetAppliedIndex() || m.GetStateDigest() != first.GetStateDigest() {
				return fmt.Errorf("%s at %d %s, %s at %d %s", first.GetName(), first.GetAppliedIndex(), first.GetStateDigest(),
					m.GetName(), m.GetAppliedIndex(), m.GetStateDigest())
			}
		}
		index = first.GetAppliedIndex()
		return nil
	})
	return index
}
