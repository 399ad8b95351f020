package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect/v2"

	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/plugins/sdk/sdktest"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// faultNet carries every byte hub nodes send one another — Raft and peer
// HTTP alike — through a proxy per node and per port, each node advertising
// its proxies' addresses (--advertise-raft, --advertise-http) instead of its
// own. It can cut one node off: from then on nothing it sends reaches a
// peer and nothing a peer sends reaches it, the way a dropped link behaves
// (the bytes go nowhere; the sockets stay open and stall) rather than a
// dead process (connections refused). Healing closes the stalled
// connections, as their TCP timeouts would have, and lets traffic through.
//
// A proxy knows which node listens behind it; which node dialled a
// connection it finds in /proc, by the socket's inode. Clients of the test
// dial the nodes' real addresses and are never cut.
type faultNet struct {
	t       testing.TB
	mu      sync.Mutex
	cut     *hubProc      // nil while whole
	healed  chan struct{} // closed when the current cut heals
	closing chan struct{}
	lns     []net.Listener
	stalled int // connections that met the cut
}

func newFaultNet(t testing.TB) *faultNet {
	n := &faultNet{t: t, closing: make(chan struct{})}
	t.Cleanup(func() {
		close(n.closing)
		for _, l := range n.lns {
			l.Close()
		}
	})
	return n
}

// proxy listens on a free loopback port and forwards to target, which is
// owner's; it returns the address to advertise.
func (n *faultNet) proxy(owner *hubProc, target string, hubs []*hubProc) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		n.t.Fatal(err)
	}
	n.lns = append(n.lns, ln)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go n.serve(c, owner, target, hubs)
		}
	}()
	return ln.Addr().String()
}

// blocked reports whether traffic between from and to is cut now, and if
// so, the channel that closes when it heals. An unknown sender is cut
// whenever anything is: better a spurious retry than a leak.
func (n *faultNet) blocked(from, to *hubProc) (bool, chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cut == nil {
		return false, nil
	}
	if from == nil || from == n.cut || to == n.cut {
		n.stalled++
		return true, n.healed
	}
	return false, nil
}

func (n *faultNet) serve(c net.Conn, owner *hubProc, target string, hubs []*hubProc) {
	defer c.Close()
	from := dialer(c, hubs)
	if cut, healed := n.blocked(from, owner); cut {
		n.stall(healed)
		return
	}
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn, to *hubProc, sender *hubProc) {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 32<<10)
		for {
			k, err := src.Read(buf)
			if k > 0 {
				if cut, healed := n.blocked(sender, to); cut {
					// The bytes are lost; the connection stalls till the heal.
					n.stall(healed)
					return
				}
				if _, werr := dst.Write(buf[:k]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go pipe(up, c, owner, from)
	go pipe(c, up, from, owner)
	<-done
	// One side has ended: end the other.
	c.Close()
	up.Close()
	<-done
}

func (n *faultNet) stall(healed chan struct{}) {
	select {
	case <-healed:
	case <-n.closing:
	}
}

// cutOff isolates h from every other node.
func (n *faultNet) cutOff(h *hubProc) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut, n.healed, n.stalled = h, make(chan struct{}), 0
}

// heal restores every link and returns how many connections met the cut.
func (n *faultNet) heal() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	close(n.healed)
	n.cut = nil
	return n.stalled
}

// dialer returns the hub process that dialled c, found through the inode of
// its socket in /proc, or nil.
func dialer(c net.Conn, hubs []*hubProc) *hubProc {
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return nil
	}
	// The dialler's socket has the remote port as its own and ours as its peer's.
	want := fmt.Sprintf(":%04X", remote.Port)
	peer := fmt.Sprintf(":%04X", local.Port)
	var inode string
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 9 && strings.HasSuffix(fields[1], want) && strings.HasSuffix(fields[2], peer) {
				inode = fields[9]
				break
			}
		}
		f.Close()
		if inode != "" {
			break
		}
	}
	if inode == "" || inode == "0" {
		return nil
	}
	link := "socket:[" + inode + "]"
	for _, h := range hubs {
		h.mu.Lock()
		pid := 0
		if h.cmd != nil {
			pid = h.cmd.Process.Pid
		}
		h.mu.Unlock()
		if pid == 0 {
			continue
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && l == link {
				return h
			}
		}
	}
	return nil
}

// startProxiedCluster is startCluster with every node's Raft and peer
// HTTP addresses behind n's proxies.
func startProxiedCluster(t *testing.T, n *faultNet, size int) *cluster {
	t.Helper()
	dir := t.TempDir()
	c := &cluster{t: t}
	for i := range size {
		c.hubs = append(c.hubs, newHub(t, dir, fmt.Sprintf("hub-%d", i+1)))
	}
	for _, h := range c.hubs {
		h.extra = append(h.extra, "--advertise-raft", n.proxy(h, h.raftAddr, c.hubs), "--advertise-http", n.proxy(h, h.httpAddr, c.hubs))
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

// clientOf returns an admin client for the given nodes only.
func (c *cluster) clientOf(hubs ...*hubProc) *client.Client {
	var addrs []string
	for _, h := range hubs {
		addrs = append(addrs, h.httpAddr)
	}
	cl, err := client.New(client.Config{Addrs: addrs, Token: c.token})
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// cliOn runs the CLI against one node only.
func (c *cluster) cliOn(h *hubProc, out any, args ...string) error {
	saved := c.hubs
	c.hubs = []*hubProc{h}
	defer func() { c.hubs = saved }()
	return c.tryCLI(out, args...)
}

// replicaState is what a node holds of the writes the test made: token ids
// and, per model, its version numbers.
type replicaState struct {
	tokens []string
	models map[string][]uint64
}

// stateOf reads h's own state (a stale read: no leader is consulted).
func (c *cluster) stateOf(t *testing.T, h *hubProc) replicaState {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cl := c.clientFor(h)
	stale := &droverv1.ReadOptions{Consistency: droverv1.ReadConsistency_READ_CONSISTENCY_STALE}
	toks, err := cl.Tokens.ListTokens(ctx, &droverv1.ListTokensRequest{Read: stale})
	if err != nil {
		t.Fatalf("%s: list tokens: %v", h.name, err)
	}
	st := replicaState{models: map[string][]uint64{}}
	for _, tok := range toks.GetTokens() {
		st.tokens = append(st.tokens, tok.GetId())
	}
	slices.Sort(st.tokens)
	models, err := cl.Models.ListModels(ctx, &droverv1.ListModelsRequest{Read: stale, IncludeArchived: true})
	if err != nil {
		t.Fatalf("%s: list models: %v", h.name, err)
	}
	for _, m := range models.GetModels() {
		got, err := cl.Models.GetModel(ctx, &droverv1.GetModelRequest{Name: m.GetName(), Read: stale})
		if err != nil {
			t.Fatalf("%s: get model %s: %v", h.name, m.GetName(), err)
		}
		vs := []uint64{}
		for _, v := range got.GetVersions() {
			vs = append(vs, v.GetVersion())
		}
		st.models[m.GetName()] = vs
	}
	return st
}

// TestHubNodePartitioned cuts the leader of a three-node hub off from the
// other two (Raft and peer HTTP, through fault-injecting proxies) and heals
// it: the other two elect a leader and take writes through either of them;
// a write sent to the cut-off node fails with a clear error, never a false
// success; after the heal the old leader catches up, the three replicas
// converge and each holds every acknowledged write.
func TestHubNodePartitioned(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-node hub through a partition")
	}
	began := time.Now()
	fnet := newFaultNet(t)
	c := startProxiedCluster(t, fnet, 3)
	ctx := t.Context()

	acked := replicaState{models: map[string][]uint64{}}
	createToken := func(via *hubProc, name string) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		resp, err := c.clientFor(via).Tokens.CreateToken(cctx, &droverv1.CreateTokenRequest{Role: droverv1.Role_ROLE_VIEWER, Name: name})
		if err != nil {
			t.Fatalf("tokens create %s through %s: %v", name, via.name, err)
		}
		acked.tokens = append(acked.tokens, resp.GetToken().GetId())
	}
	artifact := filepath.Join(t.TempDir(), "model.bin")
	push := func(via *hubProc, model string) {
		t.Helper()
		if err := os.WriteFile(artifact, []byte(fmt.Sprintf("%s %d %v", model, len(acked.models[model]), time.Now().UnixNano())), 0o600); err != nil {
			t.Fatal(err)
		}
		var v struct {
			Version uint64 `json:"version"`
		}
		if err := c.cliOn(via, &v, "models", "push", model, "--file", artifact, "--create", "--format", "onnx"); err != nil {
			t.Fatalf("models push %s through %s: %v", model, via.name, err)
		}
		acked.models[model] = append(acked.models[model], v.Version)
	}

	// Before: a write of each kind.
	createToken(c.hubs[0], "before")
	push(c.hubs[0], "before")

	old := c.leader()
	var rest []*hubProc
	for _, h := range c.hubs {
		if h != old {
			rest = append(rest, h)
		}
	}
	cutAt := time.Now()
	fnet.cutOff(old)
	t.Logf("cut %s (the leader) off from %s and %s", old.name, rest[0].name, rest[1].name)

	// The other two elect one of them: it says so on /metrics.
	var leader *hubProc
	hubtest.WaitFor(t, 20*time.Second, func() error {
		for _, h := range rest {
			resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + h.httpAddr + "/metrics")
			if err != nil {
				return err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), "\ndrover_hub_raft_leader 1\n") {
				leader = h
				return nil
			}
		}
		return fmt.Errorf("neither %s nor %s leads", rest[0].name, rest[1].name)
	})
	t.Logf("%s leads %v after the cut", leader.name, time.Since(cutAt).Round(time.Millisecond))
	majority := c.clientOf(rest...)
	hubtest.WaitFor(t, 20*time.Second, func() error {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second) // it waits up to 2s on each member, the cut one too
		defer cancel()
		st, err := majority.Cluster.GetClusterStatus(sctx, &droverv1.GetClusterStatusRequest{})
		if err != nil {
			return err
		}
		if st.GetLeader() != leader.name {
			return fmt.Errorf("the majority's status names %q as leader, not %s", st.GetLeader(), leader.name)
		}
		return nil
	})
	t.Logf("the majority's cluster status agrees %v after the cut", time.Since(cutAt).Round(time.Millisecond))

	// Writes carry on through either node of the majority: the leader and
	// the follower, which forwards them.
	for i, via := range []*hubProc{rest[0], rest[1], rest[0], rest[1]} {
		createToken(via, fmt.Sprint("during-", i))
		push(via, "during")
	}
	t.Logf("%d writes acknowledged by the majority while %s was cut off", 8, old.name)

	// A write sent to the cut-off node fails, clearly, within its
	// --leader-wait (5s) and some; it never claims success.
	sent := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	resp, err := c.clientFor(old).Tokens.CreateToken(wctx, &droverv1.CreateTokenRequest{Role: droverv1.Role_ROLE_VIEWER, Name: "sent-to-the-cut-node"})
	cancel()
	took := time.Since(sent).Round(time.Millisecond)
	maybe := false
	switch {
	case err == nil:
		t.Errorf("a write sent to the cut-off %s succeeded (token %s) after %v", old.name, resp.GetToken().GetId(), took)
	case connect.CodeOf(err) == connect.CodeUnavailable:
		maybe = strings.Contains(err.Error(), "may or may not")
		t.Logf("the write sent to the cut-off %s failed after %v: %v", old.name, took, err)
	case errors.Is(err, context.DeadlineExceeded) || connect.CodeOf(err) == connect.CodeDeadlineExceeded:
		maybe = true
		t.Errorf("the write sent to the cut-off %s hung until the client gave up after %v, instead of failing with unavailable: %v", old.name, took, err)
	default:
		t.Errorf("the write sent to the cut-off %s failed after %v, but not with unavailable: %v", old.name, took, err)
	}
	// Its own stale view has none of the majority's writes.
	if st := c.stateOf(t, old); len(st.models["during"]) > 0 {
		t.Errorf("the cut-off %s already holds versions %v of a model created behind its back", old.name, st.models["during"])
	}

	stalled := fnet.heal()
	healedAt := time.Now()
	t.Logf("healed after %v (%d connections met the cut)", healedAt.Sub(cutAt).Round(time.Millisecond), stalled)
	if stalled == 0 {
		t.Error("no connection met the cut: the proxies are not in the nodes' way")
	}

	// One more write after the heal, then everyone agrees.
	createToken(leader, "after")
	push(old, "after")
	index := c.waitConverged(30 * time.Second)
	st, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("converged at index %d %v after the heal; %s leads", index, time.Since(healedAt).Round(time.Millisecond), st.GetLeader())
	for _, m := range st.GetMembers() {
		if m.GetName() == old.name && m.GetName() == st.GetLeader() && m.GetAppliedIndex() < index {
			t.Errorf("the old leader leads again without having caught up: %+v", m)
		}
	}

	// Every replica holds every acknowledged write, and the same state.
	slices.Sort(acked.tokens)
	var first replicaState
	for i, h := range c.hubs {
		got := c.stateOf(t, h)
		for _, id := range acked.tokens {
			if !slices.Contains(got.tokens, id) {
				t.Errorf("%s lacks acknowledged token %s", h.name, id)
			}
		}
		for model, vs := range acked.models {
			for _, v := range vs {
				if !slices.Contains(got.models[model], v) {
					t.Errorf("%s lacks acknowledged version %s:%d (has %v)", h.name, model, v, got.models[model])
				}
			}
		}
		if i == 0 {
			first = got
			continue
		}
		if !slices.Equal(got.tokens, first.tokens) || fmt.Sprint(got.models) != fmt.Sprint(first.models) {
			t.Errorf("%s and %s disagree: %v %v vs %v %v", c.hubs[0].name, h.name, first.tokens, first.models, got.tokens, got.models)
		}
	}
	// The refused write did not happen behind the error's back (unless the
	// error said it might have).
	var names []string
	ltoks, err := c.client().Tokens.ListTokens(ctx, &droverv1.ListTokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range ltoks.GetTokens() {
		names = append(names, tok.GetName())
	}
	if slices.Contains(names, "sent-to-the-cut-node") && !maybe {
		t.Errorf("the write refused by the cut-off node was applied after all: %v", names)
	}
	t.Logf("%d tokens, models %v on every replica; %v in all", len(first.tokens), first.models, time.Since(began).Round(time.Millisecond))
}

// TestAgentDiskFull fills the file system of an agent's data directory (a
// small tmpfs) while it serves v1 and assigns a v2 bigger than the space
// left: the download fails with a "no space" status the hub shows, the
// agent keeps serving v1 and stays healthy, its reports all reach the hub;
// once the space is freed it converges on v2 by itself. It runs twice: with
// the whole --data-dir on the small file system (its Badger store too,
// which then refuses writes and holds reports in memory), and with only
// the artifact cache (<data-dir>/artifacts) there.
func TestAgentDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a hub and an agent on a small tmpfs")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs for the agent's data directory (mount -t tmpfs)")
	}
	// The whole data dir needs room for the 64 MiB a download leaves free
	// for the store (artifacts.MinFreeBytes) and for v1.
	t.Run("data-dir", func(t *testing.T) { agentDiskFull(t, "", "128m") })
	t.Run("artifact-cache", func(t *testing.T) { agentDiskFull(t, "artifacts", "16m") })
}

// agentDiskFull runs the scenario with a tmpfs of the given size mounted at
// sub of the agent's data directory.
func agentDiskFull(t *testing.T, sub, size string) {
	began := time.Now()
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "edge-1")
	full := filepath.Join(dataDir, sub)
	if err := os.MkdirAll(full, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", full).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v: %s); the test needs one", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", full).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", full, err, out)
		}
	})

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
	a := newAgent(t, dir, "edge-1", "--hub", c.hubs[0].httpAddr, "--join-token", tok.Token,
		"--heartbeat-interval", "300ms", "--plugin-dir", plugins)
	a.start()
	// alive fails the test at once if the agent has died, quoting why.
	alive := func(when string) {
		t.Helper()
		a.mu.Lock()
		exited := a.exited
		a.mu.Unlock()
		select {
		case <-exited:
		case <-time.After(200 * time.Millisecond):
			return
		}
		b, _ := os.ReadFile(a.logPath)
		var why []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "fatal error") || strings.HasPrefix(l, "panic") || strings.HasPrefix(l, "[signal") ||
				strings.HasPrefix(l, "unexpected fault") || strings.Contains(l, "badger") && strings.Contains(l, ".go:") && len(why) < 8 {
				why = append(why, strings.TrimSpace(l))
			}
		}
		t.Fatalf("the agent died %s:\n%s", when, strings.Join(why[:min(len(why), 10)], "\n"))
	}

	models := t.TempDir()
	_ = os.WriteFile(filepath.Join(models, "schema.json"), []byte(`{"inputs": [{"name": "x", "datatype": "FP64"}]}`), 0o644)
	push := func(pad int) uint64 {
		t.Helper()
		// JSON allows any amount of trailing white space: v2 is the same
		// model, made big.
		body := `{"format":"centroid-json","features":["x"],"classes":["lo","hi"],"centroids":[[0],[10]]}` + strings.Repeat(" ", pad) + "\n"
		path := filepath.Join(models, "model.json")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		var v struct {
			Version uint64 `json:"version"`
		}
		c.cli(t, &v, "models", "push", "centroid", "--create", "--file", path, "--format", "centroid-json",
			"--runner", "centroid", "--schema", filepath.Join(models, "schema.json"))
		return v.Version
	}
	infer := func() (string, error) {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Post("http://"+a.serveAddr+"/v2/models/centroid/infer", "application/json",
			strings.NewReader(`{"inputs":[{"name":"x","datatype":"FP64","shape":[2],"data":[1,9]}]}`))
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("%s: %s", resp.Status, b)
		}
		var out struct {
			ModelVersion string `json:"model_version"`
		}
		if err := json.Unmarshal(b, &out); err != nil {
			return "", err
		}
		return out.ModelVersion, nil
	}
	healthz := func() error {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + a.serveAddr + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/healthz: %s", resp.Status)
		}
		return nil
	}

	v1 := push(0)
	hubtest.WaitFor(t, 20*time.Second, func() error {
		if l := c.agents(t); len(l.Agents) != 1 {
			return fmt.Errorf("%d agents enrolled", len(l.Agents))
		}
		return nil
	})
	c.cli(t, nil, "agents", "assign", a.name, fmt.Sprintf("centroid:%d", v1))
	c.waitRunning(t, a.name, "centroid", v1, 30*time.Second)
	if v, err := infer(); err != nil || v != strconv.FormatUint(v1, 10) {
		t.Fatalf("before the disk fills: version %q, %v", v, err)
	}

	// Fill the file system, to the last byte.
	filler := filepath.Join(full, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			break
		}
	}
	for k := len(chunk) / 2; k > 0; k /= 2 {
		for {
			if _, err := f.Write(chunk[:k]); err != nil {
				break
			}
		}
	}
	f.Close()
	var fs syscall.Statfs_t
	_ = syscall.Statfs(full, &fs)
	t.Logf("the agent's data directory is full: %d bytes free", fs.Bavail*uint64(fs.Bsize))

	before, err := a.status()
	if err != nil {
		t.Fatal(err)
	}

	// v2 is bigger than the free space: its download fails, and the hub
	// hears why.
	v2 := push(4 << 20)
	c.cli(t, nil, "agents", "assign", a.name, fmt.Sprintf("centroid:%d", v2))
	var failure string
	hubtest.WaitFor(t, 20*time.Second, func() error {
		alive("with its disk full")
		for _, ag := range c.agents(t).Agents {
			for _, as := range ag.Assignments {
				if as.Model == "centroid" && strings.Contains(strings.ToLower(as.Message), "no space") {
					failure = fmt.Sprintf("%s: %s", as.Phase, as.Message)
					return nil
				}
			}
			return fmt.Errorf("%+v", ag.Assignments)
		}
		return fmt.Errorf("no agent")
	})
	t.Logf("the hub shows the failed download: %s", failure)

	// Meanwhile v1 still answers and the agent is healthy.
	alive("with its disk full")
	for range 20 {
		if v, err := infer(); err != nil || v != strconv.FormatUint(v1, 10) {
			alive("while serving v1 with its disk full")
			t.Errorf("with the disk full: version %q, %v", v, err)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := healthz(); err != nil {
		t.Errorf("with the disk full: %v", err)
	}
	during, err := a.status()
	if err != nil {
		t.Fatalf("the agent does not answer with its disk full: %v", err)
	}
	t.Logf("agent with the disk full: last report %v (was %v), %v in its outbox (%v held in memory), store low on space: %v",
		during["last_report_seq"], before["last_report_seq"], during["outbox_reports"], during["held_reports"], during["store_low_space"])
	if sub == "" && during["store_low_space"] != true {
		t.Errorf("with the store's own file system full, the agent says its store is not low on space: %v", during)
	}
	// diskPressure returns whether the hub says the agent is under disk
	// pressure, and its store_space events.
	diskPressure := func() (bool, []string) {
		var show struct {
			DiskPressure bool `json:"disk_pressure"`
			Events       []struct {
				Kind    string `json:"kind"`
				Message string `json:"message"`
			} `json:"events"`
		}
		c.cli(t, &show, "agents", "show", a.name)
		var out []string
		for _, e := range show.Events {
			if e.Kind == "store_space" {
				out = append(out, e.Message)
			}
		}
		return show.DiskPressure, out
	}
	if sub == "" {
		// The hub hears it, from the reports held in memory.
		hubtest.WaitFor(t, 20*time.Second, func() error {
			if on, evs := diskPressure(); !on || len(evs) == 0 || !strings.Contains(evs[len(evs)-1], "refuses writes") {
				return fmt.Errorf("the hub says disk pressure %v, store_space events %q", on, evs)
			}
			return nil
		})
	}

	// Free the space: v2 comes by itself.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	alive("with its disk full")
	c.waitRunning(t, a.name, "centroid", v2, 40*time.Second)
	t.Logf("v%d running %v after the space was freed", v2, time.Since(freed).Round(time.Millisecond))
	hubtest.WaitFor(t, 10*time.Second, func() error {
		if v, err := infer(); err != nil || v != strconv.FormatUint(v2, 10) {
			return fmt.Errorf("version %q, %v", v, err)
		}
		return nil
	})
	if err := healthz(); err != nil {
		t.Error(err)
	}
	if sub == "" {
		hubtest.WaitFor(t, 20*time.Second, func() error {
			if on, evs := diskPressure(); on || len(evs) == 0 || !strings.Contains(evs[len(evs)-1], "disk pressure over") {
				return fmt.Errorf("the hub says disk pressure %v, store_space events %q", on, evs)
			}
			return nil
		})
	}

	// No report was lost: every report the agent numbered reaches the hub,
	// and none was dropped for want of space.
	st, err := a.status()
	if err != nil {
		t.Fatal(err)
	}
	made := uint64(st["last_report_seq"].(float64))
	hubtest.WaitFor(t, 20*time.Second, func() error {
		for _, ag := range c.agents(t).Agents {
			if ag.LastReportSeq >= made {
				return nil
			}
			return fmt.Errorf("the hub has report %d of %d", ag.LastReportSeq, made)
		}
		return fmt.Errorf("no agent")
	})
	if b, _ := os.ReadFile(a.logPath); strings.Contains(string(b), "cannot store a report") {
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "cannot store a report") {
				lines = append(lines, l)
			}
		}
		t.Errorf("the agent lost %d reports it could not store with its disk full:\n%s", len(lines), strings.Join(lines[:min(len(lines), 5)], "\n"))
	}
	t.Logf("%v in all", time.Since(began).Round(time.Millisecond))
}
