package agent

import (
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/droverhq/drover/agent/oip"
	"github.com/droverhq/drover/agent/reconcile"
	"github.com/droverhq/drover/agent/store"
	"github.com/droverhq/drover/internal/buildinfo"
	"github.com/droverhq/drover/nvml"
)

// metrics are the agent's Prometheus metrics. GPU metrics follow
// dcgm-exporter's (see docs/agent.md for the mapping) and are read from
// the latest sample at scrape time, so a GPU that disappears leaves no
// stale series.
type metrics struct {
	registry          *prometheus.Registry
	heartbeatFailures prometheus.Counter
	reportsSent       prometheus.Counter
	reportsRefused    prometheus.Counter
	desiredUpdates    prometheus.Counter
	downloads         prometheus.Counter

	// Predictions, by model and version (the one that answered, or the
	// one asked for).
	requests *prometheus.CounterVec   // and HTTP status code
	rows     *prometheus.CounterVec   // rows answered
	latency  *prometheus.HistogramVec // seconds, answered requests

	mu     sync.Mutex
	phases map[reconcile.Key]reconcile.Status
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		heartbeatFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_agent_heartbeat_failures_total", Help: "Heartbeats that did not reach a hub.",
		}),
		reportsSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_agent_reports_sent_total", Help: "Reports the hub acknowledged.",
		}),
		reportsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_agent_reports_refused_total", Help: "Reports the hub refused as invalid and the agent dropped.",
		}),
		desiredUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_agent_desired_updates_total", Help: "New desired states received from the hub.",
		}),
		downloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_agent_artifact_downloads_total", Help: "Artifact downloads started (a resumed one counts again).",
		}),
		phases: map[reconcile.Key]reconcile.Status{},
	}
	m.initInference()
	if a.samples != nil {
		m.registry.MustRegister(a.samples.dropped)
	}
	if rt, ok := a.runtime.(*servingRuntime); ok {
		m.registry.MustRegister(rt.collectors()...)
	}
	m.registry.MustRegister(a.drift.collectors()...)
	m.registry.MustRegister(a.feedback)
	info := buildinfo.Get()
	m.registry.MustRegister(m.heartbeatFailures, m.reportsSent, m.reportsRefused, m.desiredUpdates, m.downloads,
		m.requests, m.rows, m.latency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "drover_agent_outbox_reports", Help: "Reports waiting to be delivered to the hub.",
		}, func() float64 { return float64(a.store.Depth()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "drover_agent_hub_connected", Help: "1 if the last heartbeat reached a hub.",
		}, func() float64 {
			if a.connected.Load() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "drover_agent_info", Help: "The agent's version and name.", ConstLabels: prometheus.Labels{"version": info.Version, "name": a.cfg.Name},
		}, func() float64 { return 1 }),
		&assignmentCollector{m: m},
		&gpuCollector{a: a},
		&storeCollector{st: a.store},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *metrics) phaseChanged(s reconcile.Status) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.Phase.String() == "ASSIGNMENT_PHASE_REMOVED" {
		delete(m.phases, s.Key)
		return
	}
	m.phases[s.Key] = s
}

var assignmentDesc = prometheus.NewDesc("drover_agent_assignment_phase", "1 for each assignment slot's current phase.",
	[]string{"model", "role", "version", "phase"}, nil)

type assignmentCollector struct{ m *metrics }

func (c *assignmentCollector) Describe(ch chan<- *prometheus.Desc) { ch <- assignmentDesc }

func (c *assignmentCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	for k, s := range c.m.phases {
		phase := strings.ToLower(strings.TrimPrefix(s.Phase.String(), "ASSIGNMENT_PHASE_"))
		role := strings.ToLower(strings.TrimPrefix(k.Role.String(), "ASSIGNMENT_ROLE_"))
		ch <- prometheus.MustNewConstMetric(assignmentDesc, prometheus.GaugeValue, 1, k.Model, role, strconv.FormatUint(s.Version, 10), phase)
	}
}

// GPU metric descriptions; the labels identify the GPU as dcgm-exporter's do.
var (
	gpuLabels       = []string{"gpu", "uuid", "pci_bus_id", "model_name"}
	gpuTemp         = gpuDesc("drover_gpu_temperature_celsius", "GPU temperature (DCGM_FI_DEV_GPU_TEMP).")
	gpuPower        = gpuDesc("drover_gpu_power_watts", "Power draw (DCGM_FI_DEV_POWER_USAGE).")
	gpuPowerLimit   = gpuDesc("drover_gpu_power_limit_watts", "Enforced power limit (DCGM_FI_DEV_POWER_MGMT_LIMIT).")
	gpuUtil         = gpuDesc("drover_gpu_utilization_ratio", "GPU utilisation, 0 to 1 (DCGM_FI_DEV_GPU_UTIL / 100).")
	gpuMemUtil      = gpuDesc("drover_gpu_memory_copy_utilization_ratio", "Memory bandwidth utilisation, 0 to 1 (DCGM_FI_DEV_MEM_COPY_UTIL / 100).")
	gpuMemUsed      = gpuDesc("drover_gpu_memory_used_bytes", "Framebuffer memory used (DCGM_FI_DEV_FB_USED, in bytes not MiB).")
	gpuMemTotal     = gpuDesc("drover_gpu_memory_total_bytes", "Framebuffer memory in all (DCGM_FI_DEV_FB_USED + FB_FREE, in bytes).")
	gpuSMClock      = gpuDesc("drover_gpu_sm_clock_hertz", "SM clock (DCGM_FI_DEV_SM_CLOCK, in Hz not MHz).")
	gpuMemClock     = gpuDesc("drover_gpu_memory_clock_hertz", "Memory clock (DCGM_FI_DEV_MEM_CLOCK, in Hz not MHz).")
	gpuThrottle     = gpuDesc("drover_gpu_clock_event_reasons", "Clock throttle reasons bit mask (DCGM_FI_DEV_CLOCK_THROTTLE_REASONS).")
	gpuLost         = gpuDesc("drover_gpu_lost", "1 if the GPU stopped answering NVML.")
	gpuECC          = prometheus.NewDesc("drover_gpu_ecc_errors", "ECC error counts (DCGM_FI_DEV_ECC_SBE_VOL_TOTAL, _DBE_VOL_TOTAL, _SBE_AGG_TOTAL, _DBE_AGG_TOTAL).", append(gpuLabels, "type", "counter"), nil)
	gpuXID          = prometheus.NewDesc("drover_gpu_xid_errors_total", "Xid errors seen since the agent started (DCGM_FI_DEV_XID_ERRORS holds the last one).", append(gpuLabels, "xid"), nil)
	gpuHealth       = prometheus.NewDesc("drover_gpu_health", "1 for the GPU's health state by the agent's rules.", append(gpuLabels, "state"), nil)
	gpuHealthStates = []nvml.Health{nvml.Healthy, nvml.Degraded, nvml.Unhealthy, nvml.Unknown}
)

func gpuDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, gpuLabels, nil)
}

type gpuCollector struct{ a *Agent }

func (c *gpuCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{gpuTemp, gpuPower, gpuPowerLimit, gpuUtil, gpuMemUtil, gpuMemUsed, gpuMemTotal, gpuSMClock, gpuMemClock, gpuThrottle, gpuLost, gpuECC, gpuXID, gpuHealth} {
		ch <- d
	}
}

func (c *gpuCollector) Collect(ch chan<- prometheus.Metric) {
	samples, verdicts, xids := c.a.gpus.snapshot()
	names := map[string][2]string{}
	if c.a.gpus.client != nil {
		if inv, err := c.a.gpus.client.Inventory(); err == nil {
			for _, g := range inv.GPUs {
				names[g.UUID] = [2]string{g.PCIBusID, g.Name}
			}
		}
	}
	labels := func(index int, uuid string) []string {
		n := names[uuid]
		return []string{strconv.Itoa(index), uuid, n[0], n[1]}
	}
	gauge := func(d *prometheus.Desc, v float64, l []string, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append(l, extra...)...)
	}
	for _, s := range samples {
		l := labels(s.Index, s.UUID)
		lost := 0.0
		if s.Lost {
			lost = 1
		}
		gauge(gpuLost, lost, l)
		u32 := func(d *prometheus.Desc, v *uint32, scale float64) {
			if v != nil {
				gauge(d, float64(*v)*scale, l)
			}
		}
		u32(gpuTemp, s.TemperatureC, 1)
		u32(gpuUtil, s.GPUUtilPercent, 0.01)
		u32(gpuMemUtil, s.MemoryUtilPercent, 0.01)
		u32(gpuSMClock, s.SMClockMHz, 1e6)
		u32(gpuMemClock, s.MemoryClockMHz, 1e6)
		if s.PowerWatts != nil {
			gauge(gpuPower, *s.PowerWatts, l)
		}
		if s.PowerLimitWatts != nil {
			gauge(gpuPowerLimit, *s.PowerLimitWatts, l)
		}
		if s.MemoryUsedBytes != nil {
			gauge(gpuMemUsed, float64(*s.MemoryUsedBytes), l)
		}
		if s.MemoryTotalBytes != nil {
			gauge(gpuMemTotal, float64(*s.MemoryTotalBytes), l)
		}
		if s.ThrottleReasons != nil {
			gauge(gpuThrottle, float64(*s.ThrottleReasons), l)
		}
		for _, e := range []struct {
			v             *uint64
			kind, counter string
		}{
			{s.ECC.CorrectedVolatile, "corrected", "volatile"}, {s.ECC.UncorrectedVolatile, "uncorrected", "volatile"},
			{s.ECC.CorrectedAggregate, "corrected", "aggregate"}, {s.ECC.UncorrectedAggregate, "uncorrected", "aggregate"},
		} {
			if e.v != nil {
				gauge(gpuECC, float64(*e.v), l, e.kind, e.counter)
			}
		}
		for xid, n := range xids[s.UUID] {
			ch <- prometheus.MustNewConstMetric(gpuXID, prometheus.CounterValue, float64(n), append(l, strconv.FormatUint(xid, 10))...)
		}
	}
	for _, v := range verdicts {
		l := labels(v.Index, v.UUID)
		for _, st := range gpuHealthStates {
			val := 0.0
			if v.Health == st {
				val = 1
			}
			gauge(gpuHealth, val, l, string(st))
		}
	}
}

// observeInference records an inference request in the metrics.
func (m *metrics) observeInference(o oip.Observation) {
	if o.Status == 404 {
		// Names from unanswerable URLs are not labels: anyone could
		// make up as many as they liked.
		o.Model, o.Version = "", ""
	}
	m.requests.WithLabelValues(o.Model, o.Version, strconv.Itoa(o.Status)).Inc()
	if o.Status == 200 {
		m.rows.WithLabelValues(o.Model, o.Version).Add(float64(o.Rows))
		m.latency.WithLabelValues(o.Model, o.Version).Observe(o.Duration.Seconds())
	}
}

// initInference makes the prediction metrics.
func (m *metrics) initInference() {
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "drover_agent_inference_requests_total", Help: "Inference requests, by model, version and HTTP status code.",
	}, []string{"model", "version", "code"})
	m.rows = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "drover_agent_inference_rows_total", Help: "Rows answered, by model and version.",
	}, []string{"model", "version"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "drover_agent_inference_duration_seconds", Help: "Time to answer an inference request, from its first byte read to its last written.",
		Buckets: prometheus.ExponentialBuckets(50e-6, 2, 18), // 50 µs to ~6.5 s
	}, []string{"model", "version"})
}

// storeCollector reports the space under the agent's store, checked at
// each scrape.
type storeCollector struct{ st *store.Store }

var (
	storeFreeDesc = prometheus.NewDesc("drover_agent_store_free_bytes",
		"Bytes free on the file system under the agent's store.", nil, nil)
	storeLowDesc = prometheus.NewDesc("drover_agent_store_low_space",
		"1 while the store refuses writes because its file system has less than its reserve free.", nil, nil)
	storeRefusedDesc = prometheus.NewDesc("drover_agent_store_writes_refused_total",
		"Writes the store refused for want of space.", nil, nil)
	storeHeldDesc = prometheus.NewDesc("drover_agent_outbox_held_reports",
		"Reports held in memory until the store has room to write them.", nil, nil)
)

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- storeFreeDesc
	ch <- storeLowDesc
	ch <- storeRefusedDesc
	ch <- storeHeldDesc
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	sp := c.st.Space()
	low := 0.0
	if sp.Low {
		low = 1
	}
	ch <- prometheus.MustNewConstMetric(storeFreeDesc, prometheus.GaugeValue, float64(sp.FreeBytes))
	ch <- prometheus.MustNewConstMetric(storeLowDesc, prometheus.GaugeValue, low)
	ch <- prometheus.MustNewConstMetric(storeRefusedDesc, prometheus.CounterValue, float64(sp.Refused))
	ch <- prometheus.MustNewConstMetric(storeHeldDesc, prometheus.GaugeValue, float64(sp.HeldReports))
}
