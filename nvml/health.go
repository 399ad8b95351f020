package nvml

import (
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"
)

// Health is a GPU's state by the rules below.
type Health string

// The health states, from best to worst.
const (
	Healthy   Health = "healthy"
	Degraded  Health = "degraded"
	Unhealthy Health = "unhealthy"
	// Unknown is a GPU the monitor has not yet heard from.
	Unknown Health = "unknown"
)

// Verdict is a GPU's health and why.
type Verdict struct {
	UUID    string   `json:"uuid"`
	Index   int      `json:"index"`
	Health  Health   `json:"health"`
	Reasons []string `json:"reasons,omitempty"`
}

// Rules decide health. DefaultRules documents the defaults; docs/agent.md
// explains them.
type Rules struct {
	// UnhealthyXIDs need a GPU reset or a reboot: the GPU stays unhealthy
	// until the agent restarts after one.
	UnhealthyXIDs []uint64
	// DegradedXIDs make the GPU degraded for DegradedFor after each one.
	DegradedXIDs []uint64
	DegradedFor  time.Duration
	// StormXIDs of any code within StormWindow make the GPU degraded:
	// applications crashing over and over point at the GPU too.
	StormXIDs   int
	StormWindow time.Duration
	// CorrectedECCRate corrected ECC errors within DegradedFor make the GPU
	// degraded (a page that keeps correcting is about to fail).
	CorrectedECCRate uint64
	// SlowdownTempC and ShutdownTempC are used when the GPU does not report
	// its own thresholds.
	SlowdownTempC uint32
	ShutdownTempC uint32
}

// DefaultRules follow NVIDIA's Xid catalogue:
//
//   - unhealthy: 48 (double-bit ECC), 62 (internal micro-controller halt),
//     64 (ECC page retirement or row remapping failure), 79 (fallen off the
//     bus), 95 (uncontained ECC error), 119 and 120 (GSP errors), 140
//     (unrecovered ECC error); also any double-bit ECC event, uncorrected
//     volatile ECC errors, a failed row remapping, a GPU that no longer
//     answers, and a temperature at or above the shutdown threshold;
//   - degraded for 10 minutes after: 61 (micro-controller breakpoint), 63
//     (page retirement or row remapping event), 74 (NVLink error), 92 (high
//     single-bit ECC rate), 94 (contained ECC error); ten or more Xids of any
//     code within a minute; 100 or more corrected ECC errors within 10
//     minutes; and, while they last, hardware slowdown (HW slowdown, HW
//     thermal slowdown, HW power brake), a temperature at or above the
//     slowdown threshold, and row remappings pending a reset.
//
// Application-level Xids (13, 31, 43, 45, ...) alone do not change health.
func DefaultRules() Rules {
	return Rules{
		UnhealthyXIDs:    []uint64{48, 62, 64, 79, 95, 119, 120, 140},
		DegradedXIDs:     []uint64{61, 63, 74, 92, 94},
		DegradedFor:      10 * time.Minute,
		StormXIDs:        10,
		StormWindow:      time.Minute,
		CorrectedECCRate: 100,
		SlowdownTempC:    87,
		ShutdownTempC:    95,
	}
}

// hwSlowdown are the throttle reasons that mean the hardware is protecting
// itself, not just saving power.
var hwSlowdown = map[string]bool{"hw_slowdown": true, "hw_thermal_slowdown": true, "hw_power_brake_slowdown": true}

// Monitor keeps what the health rules need about each GPU: its latest
// telemetry, its recent events, and the reasons that stick. It is safe for
// concurrent use.
type Monitor struct {
	rules Rules
	mu    sync.Mutex
	gpus  map[string]*gpuState
}

type gpuState struct {
	index    int
	last     *Telemetry
	sticky   []string    // unhealthy reasons that last until restart
	xids     []timedXID  // recent XIDs, oldest first
	degraded []timedNote // degraded reasons with their expiry
	// corrected-ECC baseline samples, oldest first, for the rate rule.
	corrected []eccSample
}

type timedXID struct {
	at  time.Time
	xid uint64
}

type timedNote struct {
	until  time.Time
	reason string
}

type eccSample struct {
	at    time.Time
	count uint64
}

// NewMonitor returns a monitor applying rules.
func NewMonitor(rules Rules) *Monitor {
	return &Monitor{rules: rules, gpus: make(map[string]*gpuState)}
}

func (m *Monitor) gpu(uuid string, index int) *gpuState {
	g, ok := m.gpus[uuid]
	if !ok {
		g = &gpuState{index: index}
		m.gpus[uuid] = g
	}
	return g
}

func (g *gpuState) stick(reason string) {
	if !slices.Contains(g.sticky, reason) {
		g.sticky = append(g.sticky, reason)
	}
}

func (g *gpuState) degrade(until time.Time, reason string) {
	for i, d := range g.degraded {
		if d.reason == reason {
			g.degraded[i].until = until
			return
		}
	}
	g.degraded = append(g.degraded, timedNote{until: until, reason: reason})
}

// ObserveTelemetry records a sample.
func (m *Monitor) ObserveTelemetry(t Telemetry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.gpu(t.UUID, t.Index)
	g.last = &t
	if t.Lost {
		g.stick("the GPU stopped answering NVML (fallen off the bus or lost)")
	}
	if r := t.RemappedRows; r != nil && r.Failed {
		g.stick("row remapping failed")
	}
	if u := t.ECC.UncorrectedVolatile; u != nil {
		if *u > 0 {
			g.stick(fmt.Sprintf("%d uncorrected ECC errors since the driver loaded", *u))
		}
	}
	if c := t.ECC.CorrectedVolatile; c != nil {
		g.corrected = append(g.corrected, eccSample{at: t.Time, count: *c})
		cut := t.Time.Add(-m.rules.DegradedFor)
		for len(g.corrected) > 1 && g.corrected[0].at.Before(cut) {
			g.corrected = g.corrected[1:]
		}
		if first := g.corrected[0]; *c >= first.count && *c-first.count >= m.rules.CorrectedECCRate {
			g.degrade(t.Time.Add(m.rules.DegradedFor), fmt.Sprintf("%d corrected ECC errors in %v", *c-first.count, t.Time.Sub(first.at).Round(time.Second)))
		}
	}
}

// ObserveEvent records an NVML event.
func (m *Monitor) ObserveEvent(e Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.gpu(e.UUID, e.Index)
	switch e.Kind {
	case EventDoubleBitECC:
		g.stick("double-bit ECC error")
	case EventXID:
		if slices.Contains(m.rules.UnhealthyXIDs, e.XID) {
			g.stick(fmt.Sprintf("Xid %d", e.XID))
		}
		if slices.Contains(m.rules.DegradedXIDs, e.XID) {
			g.degrade(e.Time.Add(m.rules.DegradedFor), fmt.Sprintf("Xid %d", e.XID))
		}
		g.xids = append(g.xids, timedXID{at: e.Time, xid: e.XID})
		cut := e.Time.Add(-m.rules.StormWindow)
		for len(g.xids) > 0 && g.xids[0].at.Before(cut) {
			g.xids = g.xids[1:]
		}
		if m.rules.StormXIDs > 0 && len(g.xids) >= m.rules.StormXIDs {
			g.degrade(e.Time.Add(m.rules.DegradedFor), fmt.Sprintf("Xid storm: %d Xids within %v", len(g.xids), m.rules.StormWindow))
		}
	}
}

// Verdicts judges every GPU the monitor knows as of now, ordered by index.
func (m *Monitor) Verdicts(now time.Time) []Verdict {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Verdict, 0, len(m.gpus))
	for uuid, g := range m.gpus {
		out = append(out, m.judge(uuid, g, now))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}

func (m *Monitor) judge(uuid string, g *gpuState, now time.Time) Verdict {
	v := Verdict{UUID: uuid, Index: g.index, Health: Healthy}
	if g.last == nil && len(g.sticky) == 0 && len(g.degraded) == 0 {
		v.Health = Unknown
		return v
	}
	unhealthy := append([]string(nil), g.sticky...)
	var degraded []string
	if t := g.last; t != nil {
		slow, shut := m.rules.SlowdownTempC, m.rules.ShutdownTempC
		if t.SlowdownTempC != nil && *t.SlowdownTempC > 0 {
			slow = *t.SlowdownTempC
		}
		if t.ShutdownTempC != nil && *t.ShutdownTempC > 0 {
			shut = *t.ShutdownTempC
		}
		if c := t.TemperatureC; c != nil {
			switch {
			case *c >= shut:
				unhealthy = append(unhealthy, fmt.Sprintf("temperature %d°C at or above the shutdown threshold %d°C", *c, shut))
			case *c >= slow:
				degraded = append(degraded, fmt.Sprintf("temperature %d°C at or above the slowdown threshold %d°C", *c, slow))
			}
		}
		for _, name := range t.Throttles {
			if hwSlowdown[name] {
				degraded = append(degraded, "throttled: "+name)
			}
		}
		if r := t.RemappedRows; r != nil && r.Pending {
			degraded = append(degraded, "row remapping pending a GPU reset")
		}
	}
	kept := g.degraded[:0]
	for _, d := range g.degraded {
		if now.Before(d.until) {
			kept = append(kept, d)
			degraded = append(degraded, d.reason)
		}
	}
	g.degraded = kept
	switch {
	case len(unhealthy) > 0:
		v.Health, v.Reasons = Unhealthy, append(unhealthy, degraded...)
	case len(degraded) > 0:
		v.Health, v.Reasons = Degraded, degraded
	}
	return v
}
