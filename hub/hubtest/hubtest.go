// Package hubtest starts real hub nodes inside a test: real Raft (over TCP
// on 127.0.0.1, or raft's in-memory transport for partition tests), real
// raft-wal logs and blob stores in the test's temporary directory, and real
// HTTP. Everything stops when the test ends.
package hubtest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/droverhq/drover/hub"
	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/internal/logging"
)

// FastRaft are Raft timings for tests: a leader is elected, or replaced, in
// a few hundred milliseconds.
func FastRaft() hub.RaftTimings {
	t := hub.DefaultRaftTimings()
	t.HeartbeatTimeout = 150 * time.Millisecond
	t.ElectionTimeout = 150 * time.Millisecond
	t.LeaderLeaseTimeout = 75 * time.Millisecond
	t.CommitTimeout = 5 * time.Millisecond
	return t
}

// Config returns a node config for tests: loopback ports chosen by the
// kernel, fast Raft, logs to the test log when -v is given.
func Config(t testing.TB, name string) hub.Config {
	cfg := hub.DefaultConfig()
	cfg.NodeName = name
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.RaftAddr = "127.0.0.1:0"
	cfg.Raft = FastRaft()
	cfg.LeaderWait = 2 * time.Second
	cfg.ApplyTimeout = 5 * time.Second
	cfg.Logger = Logger(t, name)
	return cfg
}

// Logger logs to t.Log when DROVER_TEST_LOGS is set, and nowhere otherwise.
func Logger(t testing.TB, name string) *slog.Logger {
	if os.Getenv("DROVER_TEST_LOGS") == "" {
		return logging.Discard()
	}
	l, _ := logging.New(testWriter{t}, logging.Options{Level: "debug"})
	return l.With("test_node", name)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Start starts a node and stops it when the test ends.
func Start(t testing.TB, cfg hub.Config) *hub.Node {
	t.Helper()
	n, err := hub.New(cfg)
	if err != nil {
		t.Fatalf("start node %s: %v", cfg.NodeName, err)
	}
	t.Cleanup(func() { Stop(n) })
	return n
}

// Stop shuts a node down (again is harmless).
func Stop(n *hub.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = n.Shutdown(ctx)
}

// Cluster is a set of nodes started by StartCluster.
type Cluster struct {
	t          testing.TB
	Nodes      []*hub.Node
	Configs    []hub.Config
	AdminToken string
	// Net is set for clusters on the in-memory network.
	Net *Network
}

// Options tune StartCluster.
type Options struct {
	// InMemory puts Raft on the in-memory transport and peer HTTP behind a
	// Network whose links can be cut.
	InMemory bool
	// Configure edits each node's config before it starts.
	Configure func(i int, cfg *hub.Config)
}

// StartCluster bootstraps node 0, joins the rest through it, and waits
// until every node is a voter and the cluster is ready.
func StartCluster(t testing.TB, size int, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	if opts.InMemory {
		c.Net = NewNetwork()
	}
	for i := range size {
		name := fmt.Sprintf("hub-%d", i+1)
		cfg := Config(t, name)
		if opts.InMemory {
			c.Net.Attach(&cfg)
		}
		if i == 0 {
			cfg.Bootstrap = true
		} else {
			cfg.Join = []string{c.Nodes[0].HTTPAddr()}
			cfg.JoinToken = c.AdminToken
		}
		if opts.Configure != nil {
			opts.Configure(i, &cfg)
		}
		n := Start(t, cfg)
		// Pin the addresses the kernel chose, for restarts.
		if !opts.InMemory {
			cfg.HTTPAddr, cfg.RaftAddr = n.HTTPAddr(), n.RaftAddr()
		}
		c.Nodes = append(c.Nodes, n)
		c.Configs = append(c.Configs, cfg)
		if i == 0 {
			WaitFor(t, 10*time.Second, func() error {
				if !n.IsLeader() {
					return fmt.Errorf("%s is not leader yet", name)
				}
				return nil
			})
			c.AdminToken = ReadAdminToken(t, cfg.DataDir)
		}
	}
	c.WaitForMembers(size)
	return c
}

// ReadAdminToken reads the token a bootstrapped node wrote.
func ReadAdminToken(t testing.TB, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(hub.AdminTokenPath(dataDir))
	if err != nil {
		t.Fatalf("read admin token: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// WaitForMembers waits until the leader's status lists n reachable
// members that have caught up to within a few entries of each other.
func (c *Cluster) WaitForMembers(n int) {
	c.t.Helper()
	WaitFor(c.t, 15*time.Second, func() error {
		cl := c.Client()
		st, err := cl.Cluster.GetClusterStatus(context.Background(), nil)
		if err != nil {
			return err
		}
		if len(st.GetMembers()) != n {
			return fmt.Errorf("%d members, want %d", len(st.GetMembers()), n)
		}
		for _, m := range st.GetMembers() {
			if m.GetError() != "" {
				return fmt.Errorf("member %s: %s", m.GetName(), m.GetError())
			}
		}
		return nil
	})
}

// Client returns an admin client that knows every live node.
func (c *Cluster) Client() *client.Client {
	var addrs []string
	for _, n := range c.Nodes {
		if n != nil {
			addrs = append(addrs, n.HTTPAddr())
		}
	}
	return c.ClientFor(c.AdminToken, addrs...)
}

// ClientFor returns a client with the given token for the given nodes.
func (c *Cluster) ClientFor(token string, addrs ...string) *client.Client {
	cfg := client.Config{Addrs: addrs, Token: token}
	if c.Net != nil {
		cfg.HTTPClient = c.Net.HTTPClient("client")
	}
	cl, err := client.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// Leader waits for a node to lead and returns its index.
func (c *Cluster) Leader() int {
	c.t.Helper()
	idx := -1
	WaitFor(c.t, 10*time.Second, func() error {
		for i, n := range c.Nodes {
			if n != nil && n.IsLeader() {
				idx = i
				return nil
			}
		}
		return fmt.Errorf("no leader")
	})
	return idx
}

// Kill stops node i abruptly, as far as that can be done in-process:
// connections are dropped and Raft stops at once, without waiting for
// requests in flight. (The integration tests kill real processes.)
func (c *Cluster) Kill(i int) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = c.Nodes[i].Shutdown(ctx)
	c.Nodes[i] = nil
}

// Restart starts node i again on its data directory and addresses.
func (c *Cluster) Restart(i int) *hub.Node {
	c.t.Helper()
	cfg := c.Configs[i]
	cfg.Bootstrap, cfg.Join = false, nil
	if c.Net != nil {
		c.Net.Attach(&cfg)
	}
	n := Start(c.t, cfg)
	c.Nodes[i] = n
	return n
}

// WaitFor retries cond until it returns nil or the timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Network is an in-memory network for a cluster: Raft over raft's
// InmemTransport, and peer HTTP through a dialer that refuses connections
// across a cut link. Node names are the hosts.
type Network struct {
	mu         sync.Mutex
	transports map[string]*raft.InmemTransport
	httpOwner  map[string]string // HTTP address -> node name
	cut        map[[2]string]bool
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	return &Network{transports: map[string]*raft.InmemTransport{}, httpOwner: map[string]string{}, cut: map[[2]string]bool{}}
}

// Attach gives a node config an in-memory Raft transport and a listener,
// connected to every other node attached so far.
func (nw *Network) Attach(cfg *hub.Config) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	name := cfg.NodeName
	addr := raft.ServerAddress(name)
	_, tr := raft.NewInmemTransport(addr)
	for other, ot := range nw.transports {
		if other == name {
			continue
		}
		tr.Connect(raft.ServerAddress(other), ot)
		ot.Connect(addr, tr)
	}
	nw.transports[name] = tr
	// A restarted node keeps its address.
	listenOn := cfg.AdvertiseHTTP
	if listenOn == "" {
		listenOn = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", listenOn)
	if err != nil {
		panic(fmt.Sprintf("hubtest: listen on %s: %v", listenOn, err))
	}
	cfg.HTTPListener = l
	cfg.AdvertiseHTTP = l.Addr().String()
	nw.httpOwner[cfg.AdvertiseHTTP] = name
	cfg.RaftTransport = tr
	cfg.PeerHTTPClient = nw.HTTPClient(name)
}

// Partition cuts every link between the two groups of node names.
func (nw *Network) Partition(a, b []string) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			nw.cut[[2]string{x, y}], nw.cut[[2]string{y, x}] = true, true
			nw.transports[x].Disconnect(raft.ServerAddress(y))
			nw.transports[y].Disconnect(raft.ServerAddress(x))
		}
	}
}

// Heal restores every link.
func (nw *Network) Heal() {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.cut = map[[2]string]bool{}
	for x, tx := range nw.transports {
		for y, ty := range nw.transports {
			if x != y {
				tx.Connect(raft.ServerAddress(y), ty)
			}
		}
	}
}

// HTTPClient returns a client for the named host, whose connections to
// nodes across a cut link are refused.
func (nw *Network) HTTPClient(from string) *http.Client {
	c := client.NewHTTPClient()
	tr := c.Transport.(*http.Transport)
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nw.mu.Lock()
		to, known := nw.httpOwner[addr]
		cut := known && nw.cut[[2]string{from, to}]
		nw.mu.Unlock()
		if cut {
			return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("link %s -> %s is cut: %w", from, to, syscall.ECONNREFUSED)}
		}
		return dial(ctx, network, addr)
	}
	// Connections made before a cut would carry on; keep none.
	tr.DisableKeepAlives = true
	return c
}
