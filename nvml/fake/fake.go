// Package fake simulates NVIDIA machines for tests and the demo: DGX A100,
// H100 and H200 systems built on go-nvml's own mocks, with telemetry that a
// test can set, Xid and ECC events it can inject, MIG instances, GPUs that
// fall off the bus, and a machine with no NVIDIA library at all.
package fake

import (
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// Models are the machines New can simulate.
var Models = []string{"dgxa100", "dgxh100", "dgxh200"}

// GPUState is what a simulated GPU reports. Tests change it with Update.
type GPUState struct {
	TemperatureC         uint32
	SlowdownTempC        uint32
	ShutdownTempC        uint32
	PowerMilliwatts      uint32
	PowerLimitMilliwatts uint32
	GPUUtil, MemoryUtil  uint32
	MemoryUsedBytes      uint64
	SMClockMHz           uint32
	MemoryClockMHz       uint32
	// ClockEventReasons is NVML's throttle reasons mask.
	ClockEventReasons      uint64
	CorrectedECC           uint64
	UncorrectedECC         uint64
	RemapPending, RemapBad bool
	// Lost makes every call about the GPU answer ERROR_GPU_IS_LOST.
	Lost bool
}

// Machine is a simulated machine. It implements nvml.Interface.
type Machine struct {
	*server.Server
	mu     sync.Mutex
	states []*GPUState
	events chan nvml.EventData
}

// Option changes a simulated machine.
type Option func(*config)

type config struct {
	gpus int
	seed string
	mig  map[int][]int
}

// WithGPUs sets how many GPUs the machine has (default 8).
func WithGPUs(n int) Option { return func(c *config) { c.gpus = n } }

// WithSeed makes the GPUs' UUIDs and PCI addresses derive from seed, so that
// a simulated agent restarted with the same seed sees the same hardware.
func WithSeed(seed string) Option { return func(c *config) { c.seed = seed } }

// WithMIG puts GPU index in MIG mode with one GPU instance (and one compute
// instance) per profile id given, e.g. nvml.GPU_INSTANCE_PROFILE_1_SLICE.
func WithMIG(index int, profiles ...int) Option {
	return func(c *config) {
		if c.mig == nil {
			c.mig = map[int][]int{}
		}
		c.mig[index] = profiles
	}
}

// New simulates one of Models.
func New(model string, opts ...Option) (*Machine, error) {
	c := &config{gpus: 8, seed: model}
	for _, o := range opts {
		o(c)
	}
	var gpu gpus.Config
	var build func(...gpus.Config) *server.Server
	switch model {
	case "dgxa100":
		gpu, build = gpus.A100_SXM4_40GB, dgxa100.NewWithGPUs
	case "dgxh100":
		gpu, build = gpus.H100_SXM5_80GB, dgxh100.NewWithGPUs
	case "dgxh200":
		gpu, build = gpus.H200_SXM5_141GB, dgxh200.NewWithGPUs
	default:
		return nil, fmt.Errorf("fake: unknown machine %q: want one of %v", model, Models)
	}
	m := &Machine{Server: build(gpus.Multiple(c.gpus, gpu)...), events: make(chan nvml.EventData, 1024)}
	for i, dev := range m.Devices {
		d := dev.(*server.Device)
		d.UUID = uuidFor(c.seed, i)
		d.PciBusID = fmt.Sprintf("00000000:%02X:00.0", 0x18+i*0x10)
		st := &GPUState{
			TemperatureC: 34 + uint32(i%4), SlowdownTempC: 87, ShutdownTempC: 92,
			PowerMilliwatts: 70_000, PowerLimitMilliwatts: 700_000,
			SMClockMHz: 1980, MemoryClockMHz: 2619, ClockEventReasons: nvml.ClocksEventReasonGpuIdle,
			MemoryUsedBytes: 512 << 20,
		}
		m.states = append(m.states, st)
		m.simulate(d, i)
		for _, p := range c.mig[i] {
			if err := createMIG(d, p); err != nil {
				return nil, err
			}
		}
	}
	m.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) {
		return &mock.EventSet{
			WaitFunc: func(timeoutMs uint32) (nvml.EventData, nvml.Return) {
				select {
				case e := <-m.events:
					return e, nvml.SUCCESS
				case <-time.After(time.Duration(timeoutMs) * time.Millisecond):
					return nvml.EventData{}, nvml.ERROR_TIMEOUT
				}
			},
			FreeFunc: func() nvml.Return { return nvml.SUCCESS },
		}, nvml.SUCCESS
	}
	return m, nil
}

func uuidFor(seed string, i int) string {
	h := fnv.New128a()
	fmt.Fprintf(h, "%s/%d", seed, i)
	b := h.Sum(nil)
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func createMIG(d *server.Device, profile int) error {
	d.SetMigMode(nvml.DEVICE_MIG_ENABLE)
	info, ret := d.GetGpuInstanceProfileInfo(profile)
	if ret != nvml.SUCCESS {
		return fmt.Errorf("fake: MIG profile %d: %v", profile, ret)
	}
	gi, ret := d.CreateGpuInstance(&info)
	if ret != nvml.SUCCESS {
		return fmt.Errorf("fake: create GPU instance: %v", ret)
	}
	ciInfo, ret := gi.GetComputeInstanceProfileInfo(nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
	if ret != nvml.SUCCESS {
		return fmt.Errorf("fake: compute instance profile: %v", ret)
	}
	if _, ret := gi.CreateComputeInstance(&ciInfo); ret != nvml.SUCCESS {
		return fmt.Errorf("fake: create compute instance: %v", ret)
	}
	return nil
}

// simulate fills in the calls go-nvml's mocks leave out, answering from the
// GPU's state.
func (m *Machine) simulate(d *server.Device, i int) {
	state := func() (GPUState, bool) {
		m.mu.Lock()
		defer m.mu.Unlock()
		s := *m.states[i]
		return s, !s.Lost
	}
	lostRet := nvml.ERROR_GPU_IS_LOST
	uuid := d.UUID
	d.GetUUIDFunc = func() (string, nvml.Return) { return uuid, nvml.SUCCESS }
	d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
		p := nvml.PciInfo{PciDeviceId: d.Config.PciDeviceId}
		for j, c := range d.PciBusID {
			p.BusId[j] = int8(c)
		}
		return p, nvml.SUCCESS
	}
	d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) {
		if s, ok := state(); ok {
			return s.TemperatureC, nvml.SUCCESS
		}
		return 0, lostRet
	}
	d.GetTemperatureThresholdFunc = func(t nvml.TemperatureThresholds) (uint32, nvml.Return) {
		s, ok := state()
		switch {
		case !ok:
			return 0, lostRet
		case t == nvml.TEMPERATURE_THRESHOLD_SLOWDOWN:
			return s.SlowdownTempC, nvml.SUCCESS
		case t == nvml.TEMPERATURE_THRESHOLD_SHUTDOWN:
			return s.ShutdownTempC, nvml.SUCCESS
		}
		return 0, nvml.ERROR_NOT_SUPPORTED
	}
	d.GetPowerUsageFunc = func() (uint32, nvml.Return) {
		if s, ok := state(); ok {
			return s.PowerMilliwatts, nvml.SUCCESS
		}
		return 0, lostRet
	}
	d.GetEnforcedPowerLimitFunc = func() (uint32, nvml.Return) {
		if s, ok := state(); ok {
			return s.PowerLimitMilliwatts, nvml.SUCCESS
		}
		return 0, lostRet
	}
	d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		s, ok := state()
		switch {
		case !ok:
			return nvml.Utilization{}, lostRet
		case d.MigMode == nvml.DEVICE_MIG_ENABLE:
			return nvml.Utilization{}, nvml.ERROR_NOT_SUPPORTED // as real MIG GPUs answer
		}
		return nvml.Utilization{Gpu: s.GPUUtil, Memory: s.MemoryUtil}, nvml.SUCCESS
	}
	d.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
		s, ok := state()
		if !ok {
			return nvml.Memory{}, lostRet
		}
		total := d.MemoryInfo.Total
		return nvml.Memory{Total: total, Used: s.MemoryUsedBytes, Free: total - min(total, s.MemoryUsedBytes)}, nvml.SUCCESS
	}
	d.GetClockInfoFunc = func(c nvml.ClockType) (uint32, nvml.Return) {
		s, ok := state()
		switch {
		case !ok:
			return 0, lostRet
		case c == nvml.CLOCK_SM:
			return s.SMClockMHz, nvml.SUCCESS
		case c == nvml.CLOCK_MEM:
			return s.MemoryClockMHz, nvml.SUCCESS
		}
		return 0, nvml.ERROR_NOT_SUPPORTED
	}
	d.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) {
		if s, ok := state(); ok {
			return s.ClockEventReasons, nvml.SUCCESS
		}
		return 0, lostRet
	}
	d.GetEccModeFunc = func() (nvml.EnableState, nvml.EnableState, nvml.Return) {
		if _, ok := state(); ok {
			return nvml.FEATURE_ENABLED, nvml.FEATURE_ENABLED, nvml.SUCCESS
		}
		return 0, 0, lostRet
	}
	d.GetTotalEccErrorsFunc = func(kind nvml.MemoryErrorType, _ nvml.EccCounterType) (uint64, nvml.Return) {
		s, ok := state()
		switch {
		case !ok:
			return 0, lostRet
		case kind == nvml.MEMORY_ERROR_TYPE_CORRECTED:
			return s.CorrectedECC, nvml.SUCCESS
		}
		return s.UncorrectedECC, nvml.SUCCESS
	}
	d.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) {
		if s, ok := state(); ok {
			return 0, 0, s.RemapPending, s.RemapBad, nvml.SUCCESS
		}
		return 0, 0, false, false, lostRet
	}
	d.GetSupportedEventTypesFunc = func() (uint64, nvml.Return) {
		return nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError | nvml.EventTypeSingleBitEccError, nvml.SUCCESS
	}
	d.RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.SUCCESS }
}

// Update changes GPU index's state.
func (m *Machine) Update(index int, change func(*GPUState)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	change(m.states[index])
}

// InjectXID delivers an Xid error event for GPU index.
func (m *Machine) InjectXID(index int, xid uint64) {
	m.events <- nvml.EventData{Device: m.Devices[index], EventType: nvml.EventTypeXidCriticalError, EventData: xid}
}

// InjectDoubleBitECC delivers a double-bit ECC error event for GPU index.
func (m *Machine) InjectDoubleBitECC(index int) {
	m.events <- nvml.EventData{Device: m.Devices[index], EventType: nvml.EventTypeDoubleBitEccError}
}

// NoLibrary is a machine without libnvidia-ml: Init fails with
// ERROR_LIBRARY_NOT_FOUND, and any other call panics, as the real process
// would die calling into a library that is not there.
func NoLibrary() nvml.Interface {
	return &mock.Interface{
		InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND },
	}
}
