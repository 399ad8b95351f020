package hub

import (
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/droverhq/drover/hub/fsm"
)

// metrics are the node's Prometheus metrics, served on /metrics.
type metrics struct {
	registry *prometheus.Registry

	rpcRequests  *prometheus.CounterVec
	rpcDuration  *prometheus.HistogramVec
	applies      *prometheus.CounterVec
	applyLatency *prometheus.HistogramVec
	forwarded    prometheus.Counter
	blobBytes    *prometheus.CounterVec
	blobReplicas *prometheus.CounterVec
	blobGC       prometheus.Counter
}

func newMetrics(n *Node) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		rpcRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_hub_rpc_requests_total",
			Help: "Connect RPCs served, by procedure and result code.",
		}, []string{"procedure", "code"}),
		rpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "drover_hub_rpc_duration_seconds",
			Help:    "Time to serve a Connect RPC, by procedure.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 15),
		}, []string{"procedure"}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_hub_fsm_applies_total",
			Help: "Commands applied by this node's state machine, by command and result (ok or refused).",
		}, []string{"command", "result"}),
		applyLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "drover_hub_write_commit_seconds",
			Help:    "Time from submitting a write on the leader to its being applied.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 15),
		}, []string{"command"}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_hub_writes_forwarded_total",
			Help: "Writes this node forwarded to the leader.",
		}),
		blobBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_hub_blob_bytes_total",
			Help: "Blob bytes received (in) and served (out).",
		}, []string{"direction"}),
		blobReplicas: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_hub_blob_pulls_total",
			Help: "Blob pulls from peers, by result.",
		}, []string{"result"}),
		blobGC: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_hub_blobs_collected_total",
			Help: "Unreferenced blobs removed by the collector.",
		}),
	}
	raftState := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "drover_hub_raft_leader",
		Help: "1 if this node is the Raft leader, else 0.",
	}, func() float64 {
		if n.raft.State() == raft.Leader {
			return 1
		}
		return 0
	})
	gauges := []prometheus.Collector{raftState}
	// Closures, not method values: Raft starts after the metrics exist.
	for name, f := range map[string]func() uint64{
		"drover_hub_raft_last_index":    func() uint64 { return n.raft.LastIndex() },
		"drover_hub_raft_commit_index":  func() uint64 { return n.raft.CommitIndex() },
		"drover_hub_raft_applied_index": func() uint64 { return n.raft.AppliedIndex() },
		"drover_hub_raft_term":          func() uint64 { return n.raft.CurrentTerm() },
	} {
		gauges = append(gauges, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: name, Help: "Raft's " + name[len("drover_hub_raft_"):] + " as this node sees it.",
		}, func() float64 { return float64(f()) }))
	}
	gauges = append(gauges, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "drover_hub_raft_last_contact_seconds",
		Help: "Seconds since this node last heard from the leader (0 on the leader).",
	}, func() float64 {
		if n.raft.State() == raft.Leader {
			return 0
		}
		if t := n.raft.LastContact(); !t.IsZero() {
			return time.Since(t).Seconds()
		}
		return -1
	}))
	m.registry.MustRegister(gauges...)
	m.registry.MustRegister(m.rpcRequests, m.rpcDuration, m.applies, m.applyLatency, m.forwarded,
		m.blobBytes, m.blobReplicas, m.blobGC,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observeApply is the FSM's Observe hook.
func (m *metrics) observeApply(typ fsm.MessageType, _ time.Duration, refused bool) {
	result := "ok"
	if refused {
		result = "refused"
	}
	m.applies.WithLabelValues(fsm.TypeName(typ), result).Inc()
}
