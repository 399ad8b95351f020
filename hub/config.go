package hub

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/droverhq/drover/hub/state"
	"github.com/droverhq/drover/internal/logging"
)

// Config is everything a hub node needs to start.
type Config struct {
	// NodeName identifies the node in the cluster (its Raft server id). It
	// must stay the same across restarts of the same data directory.
	NodeName string
	// DataDir holds the Raft log, snapshots, blobs and the first admin token.
	DataDir string

	// HTTPAddr is where the node serves the Connect API, blobs, /metrics,
	// /healthz and /readyz, e.g. "0.0.0.0:8420".
	HTTPAddr string
	// AdvertiseHTTP is the address other nodes and clients use to reach
	// HTTPAddr; empty means HTTPAddr as bound (which must then not be a
	// wildcard address).
	AdvertiseHTTP string
	// RaftAddr is where the node speaks Raft to its peers, e.g. "0.0.0.0:8421".
	RaftAddr string
	// AdvertiseRaft is the address peers use to reach RaftAddr; empty means
	// RaftAddr as bound.
	AdvertiseRaft string

	// Bootstrap starts a new single-node cluster. It is ignored (with a log
	// line) when the data directory already holds Raft state.
	Bootstrap bool
	// Join lists HTTP addresses of existing members to join through. It is
	// ignored when the data directory already holds Raft state: a node that
	// restarts rejoins by itself.
	Join []string
	// JoinToken is an admin token, presented when joining.
	JoinToken string

	Raft RaftTimings

	// LeaderWait is how long a write or a linearizable read waits for a
	// leader to be elected before it fails with Unavailable.
	LeaderWait time.Duration
	// ApplyTimeout bounds how long a write waits to be committed.
	ApplyTimeout time.Duration

	// BlobGCGrace is how long an unreferenced blob is kept before it is
	// collected; BlobGCInterval is how often the collector runs.
	BlobGCGrace    time.Duration
	BlobGCInterval time.Duration
	// BlobMaxBytes caps the size of one upload.
	BlobMaxBytes int64
	// BlobServeRate caps each blob download at this many bytes a second
	// (0: no cap), for sites whose links to their agents are thin.
	BlobServeRate int64

	// AgentTimeout is how long an agent may go without a heartbeat before
	// the leader marks it down.
	AgentTimeout time.Duration

	// RetrainMaxJobs is how many retraining jobs may run at once (0: 2).
	RetrainMaxJobs int

	Logger *slog.Logger

	// For tests: a Raft transport to use instead of TCP on RaftAddr, and a
	// listener to serve HTTP on instead of HTTPAddr.
	RaftTransport raft.Transport
	HTTPListener  net.Listener
	// For tests: the HTTP client for talking to peers.
	PeerHTTPClient *http.Client
}

// RaftTimings are the Raft settings an operator may tune.
type RaftTimings struct {
	// HeartbeatTimeout is how long a follower waits without hearing from the
	// leader before it starts an election (heartbeats go at a tenth of it).
	HeartbeatTimeout time.Duration
	// ElectionTimeout is how long a candidate waits for votes.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout is how long a leader stays leader without hearing
	// from a quorum.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout bounds how long an entry waits before it is sent on its
	// own; entries that arrive together go in one batch.
	CommitTimeout time.Duration
	// SnapshotThreshold is how many new log entries trigger a snapshot;
	// SnapshotInterval is how often the check runs.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// TrailingLogs is how many entries a snapshot leaves in the log, so that
	// a follower a little behind catches up from the log rather than from
	// a whole snapshot.
	TrailingLogs uint64
}

// DefaultRaftTimings suit a LAN: a follower notices a dead leader after
// 0.5 to 1 s, and a new leader takes writes well within two seconds of the
// old one's death (see docs/benchmarks.md). Raise them together for a
// slow or lossy network.
func DefaultRaftTimings() RaftTimings {
	return RaftTimings{
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      20 * time.Millisecond,
		SnapshotThreshold:  8192,
		SnapshotInterval:   2 * time.Minute,
		TrailingLogs:       10240,
	}
}

// DefaultConfig returns a config with every default set; callers fill in
// the node name and data directory at least.
func DefaultConfig() Config {
	return Config{
		HTTPAddr:       "127.0.0.1:8420",
		RaftAddr:       "127.0.0.1:8421",
		Raft:           DefaultRaftTimings(),
		LeaderWait:     5 * time.Second,
		ApplyTimeout:   10 * time.Second,
		BlobGCGrace:    time.Hour,
		BlobGCInterval: 10 * time.Minute,
		BlobMaxBytes:   64 << 30,
		AgentTimeout:   15 * time.Second,
		RetrainMaxJobs: 2,
	}
}

func (c *Config) validate() error {
	var errs []error
	if err := state.ValidateName("node name", c.NodeName); err != nil {
		errs = append(errs, err)
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	if c.Bootstrap && len(c.Join) > 0 {
		errs = append(errs, errors.New("bootstrap and join are exclusive: bootstrap starts a new cluster, join enters an existing one"))
	}
	if c.HTTPListener == nil && c.HTTPAddr == "" {
		errs = append(errs, errors.New("http addr is required"))
	}
	if c.RaftTransport == nil && c.RaftAddr == "" {
		errs = append(errs, errors.New("raft addr is required"))
	}
	r := c.Raft
	if r.HeartbeatTimeout <= 0 || r.ElectionTimeout <= 0 || r.LeaderLeaseTimeout <= 0 || r.CommitTimeout <= 0 {
		errs = append(errs, errors.New("raft timeouts must be positive"))
	}
	if r.LeaderLeaseTimeout > r.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("raft leader lease timeout %v must not exceed the heartbeat timeout %v", r.LeaderLeaseTimeout, r.HeartbeatTimeout))
	}
	if c.AgentTimeout <= 0 {
		errs = append(errs, errors.New("agent timeout must be positive"))
	}
	if c.LeaderWait <= 0 || c.ApplyTimeout <= 0 {
		errs = append(errs, errors.New("leader wait and apply timeout must be positive"))
	}
	if c.Logger == nil {
		c.Logger = logging.Discard()
	}
	return errors.Join(errs...)
}

// advertise returns the address to tell others: the configured one, or the
// bound one if it is specific.
func advertise(configured string, bound net.Addr) (string, error) {
	if configured != "" {
		if _, _, err := net.SplitHostPort(configured); err != nil {
			return "", fmt.Errorf("advertise address %q: %w", configured, err)
		}
		return configured, nil
	}
	tcp, ok := bound.(*net.TCPAddr)
	if !ok {
		return bound.String(), nil
	}
	if tcp.IP.IsUnspecified() {
		return "", fmt.Errorf("bound to the wildcard address %s: set an advertise address that peers can reach", tcp)
	}
	return tcp.String(), nil
}
