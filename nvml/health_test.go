package nvml_test

import (
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/nvml"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func u32(v uint32) *uint32 { return &v }
func u64(v uint64) *uint64 { return &v }

func sample(uuid string, at time.Time, change func(*nvml.Telemetry)) nvml.Telemetry {
	s := nvml.Telemetry{UUID: uuid, Time: at, TemperatureC: u32(40), SlowdownTempC: u32(87), ShutdownTempC: u32(92),
		ECC: nvml.ECC{CorrectedVolatile: u64(0), UncorrectedVolatile: u64(0)}}
	if change != nil {
		change(&s)
	}
	return s
}

func verdict(t *testing.T, m *nvml.Monitor, uuid string, at time.Time) nvml.Verdict {
	t.Helper()
	for _, v := range m.Verdicts(at) {
		if v.UUID == uuid {
			return v
		}
	}
	t.Fatalf("no verdict for %s", uuid)
	return nvml.Verdict{}
}

func want(t *testing.T, v nvml.Verdict, h nvml.Health, reason string) {
	t.Helper()
	if v.Health != h || (reason != "" && !strings.Contains(strings.Join(v.Reasons, "; "), reason)) {
		t.Fatalf("verdict = %+v, want %s (%s)", v, h, reason)
	}
}

func TestHealthRules(t *testing.T) {
	m := nvml.NewMonitor(nvml.DefaultRules())
	if v := m.Verdicts(t0); len(v) != 0 {
		t.Fatalf("verdicts before any sample: %v", v)
	}
	m.ObserveTelemetry(sample("a", t0, nil))
	want(t, verdict(t, m, "a", t0), nvml.Healthy, "")

	// Temperature: degraded at the slowdown threshold, unhealthy at shutdown.
	m.ObserveTelemetry(sample("a", t0, func(s *nvml.Telemetry) { s.TemperatureC = u32(88) }))
	want(t, verdict(t, m, "a", t0), nvml.Degraded, "slowdown threshold")
	m.ObserveTelemetry(sample("a", t0, func(s *nvml.Telemetry) { s.TemperatureC = u32(93) }))
	want(t, verdict(t, m, "a", t0), nvml.Unhealthy, "shutdown threshold")
	m.ObserveTelemetry(sample("a", t0, nil))
	want(t, verdict(t, m, "a", t0), nvml.Healthy, "")

	// Hardware slowdown degrades; a software power cap does not.
	m.ObserveTelemetry(sample("a", t0, func(s *nvml.Telemetry) { s.Throttles = []string{"sw_power_cap"} }))
	want(t, verdict(t, m, "a", t0), nvml.Healthy, "")
	m.ObserveTelemetry(sample("a", t0, func(s *nvml.Telemetry) { s.Throttles = []string{"hw_thermal_slowdown"} }))
	want(t, verdict(t, m, "a", t0), nvml.Degraded, "hw_thermal_slowdown")
	m.ObserveTelemetry(sample("a", t0, func(s *nvml.Telemetry) { s.RemappedRows = &nvml.Remap{Pending: true} }))
	want(t, verdict(t, m, "a", t0), nvml.Degraded, "row remapping pending")
}

func TestXIDs(t *testing.T) {
	m := nvml.NewMonitor(nvml.DefaultRules())
	m.ObserveTelemetry(sample("a", t0, nil))
	m.ObserveTelemetry(sample("b", t0, nil))

	// Xid 63 degrades for ten minutes, then clears.
	m.ObserveEvent(nvml.Event{UUID: "a", Time: t0, Kind: nvml.EventXID, XID: 63})
	want(t, verdict(t, m, "a", t0.Add(time.Minute)), nvml.Degraded, "Xid 63")
	want(t, verdict(t, m, "a", t0.Add(11*time.Minute)), nvml.Healthy, "")

	// Application Xids alone do nothing...
	m.ObserveEvent(nvml.Event{UUID: "b", Time: t0, Kind: nvml.EventXID, XID: 13})
	want(t, verdict(t, m, "b", t0), nvml.Healthy, "")
	// ...but a storm of them degrades.
	for i := range 10 {
		m.ObserveEvent(nvml.Event{UUID: "b", Time: t0.Add(time.Duration(i) * time.Second), Kind: nvml.EventXID, XID: 31})
	}
	want(t, verdict(t, m, "b", t0.Add(10*time.Second)), nvml.Degraded, "Xid storm")

	// Xid 79 is unhealthy and stays so.
	m.ObserveEvent(nvml.Event{UUID: "a", Time: t0, Kind: nvml.EventXID, XID: 79})
	want(t, verdict(t, m, "a", t0.Add(24*time.Hour)), nvml.Unhealthy, "Xid 79")
}

func TestECCAndLoss(t *testing.T) {
	m := nvml.NewMonitor(nvml.DefaultRules())
	m.ObserveTelemetry(sample("a", t0, nil))
	m.ObserveTelemetry(sample("a", t0.Add(time.Minute), func(s *nvml.Telemetry) { s.ECC.CorrectedVolatile = u64(150) }))
	want(t, verdict(t, m, "a", t0.Add(time.Minute)), nvml.Degraded, "150 corrected ECC errors")
	m.ObserveTelemetry(sample("a", t0.Add(2*time.Minute), func(s *nvml.Telemetry) {
		s.ECC.CorrectedVolatile, s.ECC.UncorrectedVolatile = u64(150), u64(1)
	}))
	want(t, verdict(t, m, "a", t0.Add(2*time.Minute)), nvml.Unhealthy, "uncorrected ECC")

	m.ObserveEvent(nvml.Event{UUID: "b", Time: t0, Kind: nvml.EventDoubleBitECC})
	want(t, verdict(t, m, "b", t0), nvml.Unhealthy, "double-bit")
	m.ObserveTelemetry(nvml.Telemetry{UUID: "c", Time: t0, Lost: true})
	want(t, verdict(t, m, "c", t0), nvml.Unhealthy, "stopped answering")
}
