package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/nvml"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// gpuMonitor samples the GPUs, listens for their errors, judges their
// health, and reports what changed: health verdicts, Xids, inventory, and a
// telemetry window every TelemetryWindow. Without NVML it reports an
// inventory that says why, once, and does nothing else.
type gpuMonitor struct {
	a       *Agent
	client  *nvml.Client // nil without NVML
	openErr error
	monitor *nvml.Monitor

	mu          sync.Mutex
	latest      []nvml.Telemetry
	verdicts    []nvml.Verdict
	reported    string // the fingerprint of the last health report
	inventoryFP string
	window      map[string]*windowStats
	windowStart time.Time
	xids        map[string]map[uint64]uint64 // uuid -> xid -> count, for /metrics
}

type windowStats struct {
	index               int
	samples             uint32
	tempMax, memMax     float64
	powerSum, utilSum   float64
	powerCount, utilCnt uint32
	xids                uint64
}

func newGPUMonitor(a *Agent) *gpuMonitor {
	g := &gpuMonitor{a: a, monitor: nvml.NewMonitor(nvml.DefaultRules()), window: map[string]*windowStats{}, xids: map[string]map[uint64]uint64{}}
	g.client, g.openErr = nvml.Open(a.cfg.GPUs())
	if g.openErr != nil {
		if errors.Is(g.openErr, nvml.ErrUnavailable) {
			a.logger.Info("no usable NVIDIA library; running CPU-only", "reason", g.openErr)
		} else {
			a.logger.Warn("cannot read the GPUs; running CPU-only", "err", g.openErr)
		}
	}
	if fp, err := a.store.Get("inventory_fp"); err == nil {
		g.inventoryFP = string(fp)
	}
	return g
}

func (g *gpuMonitor) count() int {
	if g.client == nil {
		return 0
	}
	return g.client.Count()
}

func (g *gpuMonitor) close() {
	if g.client != nil {
		_ = g.client.Close()
	}
}

// inventory describes the machine now, and the runners it trains with.
func (g *gpuMonitor) inventory() *droverv1.Inventory {
	inv := g.machine()
	inv.Trainers = trainerNames(g.a.trainersNow(), g.a.plugins.trainerNames())
	return inv
}

// machine describes the machine now: the host and its GPUs.
func (g *gpuMonitor) machine() *droverv1.Inventory {
	inv := &droverv1.Inventory{Host: HostInfo()}
	if g.client == nil {
		inv.NvmlError = g.openErr.Error()
		return inv
	}
	gi, err := g.client.Inventory()
	if err != nil {
		inv.NvmlError = err.Error()
		return inv
	}
	return InventoryProto(inv.Host, gi)
}

// InventoryProto turns what NVML says into the API's inventory.
func InventoryProto(host *droverv1.Host, gi nvml.Inventory) *droverv1.Inventory {
	inv := &droverv1.Inventory{Host: host, DriverVersion: gi.DriverVersion, CudaDriverVersion: gi.CUDADriverVersion, NvmlVersion: gi.NVMLVersion}
	for _, x := range gi.GPUs {
		gpu := &droverv1.Gpu{
			Index: int32(x.Index), Uuid: x.UUID, Name: x.Name, Architecture: x.Architecture, MemoryBytes: x.MemoryBytes,
			ComputeCapability: x.ComputeCapability, PciBusId: x.PCIBusID, MigCapable: x.MIG.Capable, MigEnabled: x.MIG.Enabled,
		}
		for _, m := range x.MIG.Instances {
			gpu.MigInstances = append(gpu.MigInstances, &droverv1.MigInstance{
				GpuInstanceId: m.GPUInstanceID, Profile: m.Profile, SliceCount: m.SliceCount, MemoryBytes: m.MemoryBytes,
				Placement: m.Placement, ComputeInstances: m.ComputeInstances,
			})
		}
		inv.Gpus = append(inv.Gpus, gpu)
	}
	return inv
}

// inventoryFingerprint digests what matters of an inventory: hardware,
// drivers, MIG layout and trainers, not the host's memory counters.
func inventoryFingerprint(inv *droverv1.Inventory) string {
	c := proto.CloneOf(inv)
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}

// inventoryReported notes that the hub has inv (it was sent with Enroll).
func (g *gpuMonitor) inventoryReported(inv *droverv1.Inventory) {
	fp := inventoryFingerprint(inv)
	g.mu.Lock()
	g.inventoryFP = fp
	g.mu.Unlock()
	_ = g.a.store.Put("inventory_fp", []byte(fp))
}

// checkInventory reports the inventory if it changed since it was last
// reported (a GPU replaced, a driver upgraded, MIG reconfigured).
func (g *gpuMonitor) checkInventory() {
	if g.a.cred.Load() == nil {
		return // Enroll sends it
	}
	inv := g.inventory()
	fp := inventoryFingerprint(inv)
	g.mu.Lock()
	same := fp == g.inventoryFP
	g.mu.Unlock()
	if same {
		return
	}
	g.a.logger.Info("the machine's inventory changed", "gpus", len(inv.GetGpus()), "driver", inv.GetDriverVersion())
	g.a.report(&droverv1.Report{Body: &droverv1.Report_Inventory{Inventory: inv}})
	g.inventoryReported(inv)
}

// run samples and listens until ctx ends.
func (g *gpuMonitor) run(ctx context.Context) {
	g.checkInventory()
	if g.client == nil {
		return
	}
	go func() {
		err := g.client.WatchEvents(ctx, g.onEvent)
		if err != nil && ctx.Err() == nil {
			g.a.logger.Warn("GPU error events unavailable; health relies on sampling alone", "err", err)
		}
	}()
	g.windowStart = g.a.now()
	sample := time.NewTicker(g.a.cfg.SampleInterval)
	defer sample.Stop()
	inventory := time.NewTicker(g.a.cfg.InventoryInterval)
	defer inventory.Stop()
	g.sample()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sample.C:
			g.sample()
		case <-inventory.C:
			g.checkInventory()
		}
	}
}

func (g *gpuMonitor) sample() {
	samples, err := g.client.Sample()
	if err != nil {
		g.a.logger.Warn("GPU sampling failed", "err", err)
		return
	}
	now := g.a.now()
	g.mu.Lock()
	g.latest = samples
	for _, s := range samples {
		g.monitor.ObserveTelemetry(s)
		w := g.window[s.UUID]
		if w == nil {
			w = &windowStats{index: s.Index}
			g.window[s.UUID] = w
		}
		w.samples++
		if s.TemperatureC != nil {
			w.tempMax = max(w.tempMax, float64(*s.TemperatureC))
		}
		if s.MemoryUsedBytes != nil {
			w.memMax = max(w.memMax, float64(*s.MemoryUsedBytes))
		}
		if s.PowerWatts != nil {
			w.powerSum += *s.PowerWatts
			w.powerCount++
		}
		if s.GPUUtilPercent != nil {
			w.utilSum += float64(*s.GPUUtilPercent)
			w.utilCnt++
		}
	}
	var window *droverv1.TelemetryWindow
	if now.Sub(g.windowStart) >= g.a.cfg.TelemetryWindow {
		window = g.closeWindow(now)
	}
	g.mu.Unlock()
	if window != nil {
		g.a.report(&droverv1.Report{Body: &droverv1.Report_Telemetry{Telemetry: window}})
	}
	g.judge()
}

// closeWindow summarises the window so far and starts a new one. Called
// with g.mu held.
func (g *gpuMonitor) closeWindow(now time.Time) *droverv1.TelemetryWindow {
	tw := &droverv1.TelemetryWindow{Start: timestamppb.New(g.windowStart), End: timestamppb.New(now)}
	for uuid, w := range g.window {
		gw := &droverv1.GpuWindow{Index: int32(w.index), Uuid: uuid, Samples: w.samples, TemperatureCMax: w.tempMax, MemoryUsedBytesMax: w.memMax, XidErrors: w.xids}
		if w.powerCount > 0 {
			gw.PowerWattsMean = w.powerSum / float64(w.powerCount)
		}
		if w.utilCnt > 0 {
			gw.GpuUtilPercentMean = w.utilSum / float64(w.utilCnt)
		}
		tw.Gpus = append(tw.Gpus, gw)
	}
	slices.SortFunc(tw.Gpus, func(a, b *droverv1.GpuWindow) int { return int(a.GetIndex() - b.GetIndex()) })
	g.window = map[string]*windowStats{}
	g.windowStart = now
	return tw
}

func (g *gpuMonitor) onEvent(e nvml.Event) {
	g.monitor.ObserveEvent(e)
	g.mu.Lock()
	if w := g.window[e.UUID]; w != nil && e.Kind == nvml.EventXID {
		w.xids++
	}
	if e.Kind == nvml.EventXID {
		if g.xids[e.UUID] == nil {
			g.xids[e.UUID] = map[uint64]uint64{}
		}
		g.xids[e.UUID][e.XID]++
	}
	g.mu.Unlock()
	msg := fmt.Sprintf("GPU %d (%s): %s", e.Index, e.UUID, e.Kind)
	if e.Kind == nvml.EventXID {
		msg = fmt.Sprintf("GPU %d (%s): Xid %d", e.Index, e.UUID, e.XID)
	}
	g.a.logger.Warn("GPU error event", "gpu", e.Index, "uuid", e.UUID, "kind", e.Kind, "xid", e.XID)
	g.a.report(&droverv1.Report{Body: &droverv1.Report_Event{Event: &droverv1.AgentEvent{Kind: "gpu_error", Message: msg}}})
	g.judge()
}

// judge reports the GPUs' health when a verdict changes.
func (g *gpuMonitor) judge() {
	verdicts := g.monitor.Verdicts(g.a.now())
	var parts []string
	var report []*droverv1.GpuHealth
	for _, v := range verdicts {
		parts = append(parts, fmt.Sprintf("%s=%s:%s", v.UUID, v.Health, strings.Join(v.Reasons, ";")))
		report = append(report, &droverv1.GpuHealth{Index: int32(v.Index), Uuid: v.UUID, Health: string(v.Health), Reasons: v.Reasons})
	}
	fp := strings.Join(parts, "|")
	g.mu.Lock()
	g.verdicts = verdicts
	changed := fp != g.reported
	g.reported = fp
	g.mu.Unlock()
	if changed {
		for _, v := range verdicts {
			if v.Health != nvml.Healthy && v.Health != nvml.Unknown {
				g.a.logger.Warn("GPU health", "gpu", v.Index, "uuid", v.UUID, "health", v.Health, "reasons", v.Reasons)
			}
		}
		g.a.report(&droverv1.Report{Body: &droverv1.Report_GpuHealth{GpuHealth: &droverv1.GpuHealthReport{Gpus: report}}})
	}
}

// snapshot returns the latest samples, verdicts and Xid counts.
func (g *gpuMonitor) snapshot() ([]nvml.Telemetry, []nvml.Verdict, map[string]map[uint64]uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	xids := make(map[string]map[uint64]uint64, len(g.xids))
	for u, m := range g.xids {
		xids[u] = make(map[uint64]uint64, len(m))
		for k, v := range m {
			xids[u][k] = v
		}
	}
	return slices.Clone(g.latest), slices.Clone(g.verdicts), xids
}
