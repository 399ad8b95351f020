package nvml

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// ErrUnavailable means there is no NVML to talk to: no NVIDIA driver, or a
// driver that would not initialise. The agent then runs CPU-only.
var ErrUnavailable = errors.New("NVML unavailable")

// Client reads a machine's GPUs through an initialised NVML. It is safe for
// concurrent use.
type Client struct {
	lib     nvml.Interface
	now     func() time.Time
	mu      sync.Mutex
	devices []nvml.Device
	uuids   []string
	closed  bool
}

// System returns the machine's real NVML library (not yet initialised).
func System() nvml.Interface { return nvml.New() }

// Open initialises lib and finds its GPUs. If Init fails it returns an
// error wrapping ErrUnavailable and calls nothing else: calling into NVML
// after a failed Init kills the process.
func Open(lib nvml.Interface) (*Client, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("%w: init: %v", ErrUnavailable, ret)
	}
	c := &Client{lib: lib, now: time.Now}
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Errorf("%w: count devices: %v", ErrUnavailable, ret)
	}
	for i := range n {
		d, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			lib.Shutdown()
			return nil, fmt.Errorf("nvml: device %d: %v", i, ret)
		}
		uuid, ret := d.GetUUID()
		if ret != nvml.SUCCESS {
			lib.Shutdown()
			return nil, fmt.Errorf("nvml: device %d uuid: %v", i, ret)
		}
		c.devices = append(c.devices, d)
		c.uuids = append(c.uuids, uuid)
	}
	return c, nil
}

// Close shuts NVML down.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if ret := c.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("nvml: shutdown: %v", ret)
	}
	return nil
}

// Count returns the number of GPUs.
func (c *Client) Count() int { return len(c.devices) }

func (c *Client) checkOpen() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("nvml: client closed")
	}
	return nil
}

// Inventory describes the driver and every GPU.
func (c *Client) Inventory() (Inventory, error) {
	if err := c.checkOpen(); err != nil {
		return Inventory{}, err
	}
	var inv Inventory
	if v, ret := c.lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		inv.DriverVersion = v
	}
	if v, ret := c.lib.SystemGetNVMLVersion(); ret == nvml.SUCCESS {
		inv.NVMLVersion = v
	}
	if v, ret := c.lib.SystemGetCudaDriverVersion(); ret == nvml.SUCCESS {
		inv.CUDADriverVersion = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	}
	inv.GPUs = []GPU{}
	for i, d := range c.devices {
		g := GPU{Index: i, UUID: c.uuids[i]}
		if v, ret := d.GetName(); ret == nvml.SUCCESS {
			g.Name = v
		}
		if v, ret := d.GetArchitecture(); ret == nvml.SUCCESS {
			g.Architecture = architectureName(v)
		}
		if m, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
			g.MemoryBytes = m.Total
		}
		if major, minor, ret := d.GetCudaComputeCapability(); ret == nvml.SUCCESS {
			g.ComputeCapability = fmt.Sprintf("%d.%d", major, minor)
		}
		if p, ret := d.GetPciInfo(); ret == nvml.SUCCESS {
			g.PCIBusID = cString(p.BusId[:])
		}
		g.MIG = migOf(d)
		inv.GPUs = append(inv.GPUs, g)
	}
	return inv, nil
}

// migOf reads a GPU's MIG mode and, if enabled, its instances.
func migOf(d nvml.Device) MIG {
	var m MIG
	current, pending, ret := d.GetMigMode()
	if ret != nvml.SUCCESS {
		return m // not MIG-capable
	}
	m.Capable = true
	m.Enabled = current == nvml.DEVICE_MIG_ENABLE
	m.Pending = pending == nvml.DEVICE_MIG_ENABLE
	if !m.Enabled {
		return m
	}
	for profile := range nvml.GPU_INSTANCE_PROFILE_COUNT {
		info, ret := d.GetGpuInstanceProfileInfo(profile)
		if ret != nvml.SUCCESS {
			continue
		}
		gis, ret := d.GetGpuInstances(&info)
		if ret != nvml.SUCCESS {
			continue
		}
		for _, gi := range gis {
			gii, ret := gi.GetInfo()
			if ret != nvml.SUCCESS {
				continue
			}
			inst := MIGInstance{
				GPUInstanceID: gii.Id,
				Profile:       fmt.Sprintf("%dg.%dgb", info.SliceCount, int(math.Round(float64(info.MemorySizeMB)/1024))),
				SliceCount:    info.SliceCount,
				MemoryBytes:   info.MemorySizeMB << 20,
				Placement:     gii.Placement.Start,
			}
			for ciProfile := range nvml.COMPUTE_INSTANCE_PROFILE_COUNT {
				ciInfo, ret := gi.GetComputeInstanceProfileInfo(ciProfile, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
				if ret != nvml.SUCCESS {
					continue
				}
				cis, ret := gi.GetComputeInstances(&ciInfo)
				if ret != nvml.SUCCESS {
					continue
				}
				for _, ci := range cis {
					if cii, ret := ci.GetInfo(); ret == nvml.SUCCESS {
						inst.ComputeInstances = append(inst.ComputeInstances, cii.Id)
					}
				}
			}
			m.Instances = append(m.Instances, inst)
		}
	}
	return m
}

// Sample reads every GPU's telemetry now.
func (c *Client) Sample() ([]Telemetry, error) {
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	now := c.now()
	out := make([]Telemetry, 0, len(c.devices))
	for i, d := range c.devices {
		out = append(out, sample(d, i, c.uuids[i], now))
	}
	return out, nil
}

// sample reads what NVML can say about one GPU. A failed call leaves its
// field nil, except ERROR_GPU_IS_LOST, which marks the GPU lost.
func sample(d nvml.Device, index int, uuid string, now time.Time) Telemetry {
	t := Telemetry{Index: index, UUID: uuid, Time: now}
	lost := func(ret nvml.Return) bool {
		if ret == nvml.ERROR_GPU_IS_LOST {
			t.Lost = true
		}
		return ret == nvml.SUCCESS
	}
	if v, ret := d.GetTemperature(nvml.TEMPERATURE_GPU); lost(ret) {
		t.TemperatureC = &v
	}
	if t.Lost {
		return t // nothing else will answer
	}
	if v, ret := d.GetTemperatureThreshold(nvml.TEMPERATURE_THRESHOLD_SLOWDOWN); lost(ret) {
		t.SlowdownTempC = &v
	}
	if v, ret := d.GetTemperatureThreshold(nvml.TEMPERATURE_THRESHOLD_SHUTDOWN); lost(ret) {
		t.ShutdownTempC = &v
	}
	if v, ret := d.GetPowerUsage(); lost(ret) {
		w := float64(v) / 1000
		t.PowerWatts = &w
	}
	if v, ret := d.GetEnforcedPowerLimit(); lost(ret) {
		w := float64(v) / 1000
		t.PowerLimitWatts = &w
	}
	if u, ret := d.GetUtilizationRates(); lost(ret) {
		t.GPUUtilPercent, t.MemoryUtilPercent = &u.Gpu, &u.Memory
	}
	if m, ret := d.GetMemoryInfo(); lost(ret) {
		t.MemoryUsedBytes, t.MemoryTotalBytes = &m.Used, &m.Total
	}
	if v, ret := d.GetClockInfo(nvml.CLOCK_SM); lost(ret) {
		t.SMClockMHz = &v
	}
	if v, ret := d.GetClockInfo(nvml.CLOCK_MEM); lost(ret) {
		t.MemoryClockMHz = &v
	}
	if v, ret := d.GetCurrentClocksEventReasons(); lost(ret) {
		t.ThrottleReasons = &v
		t.Throttles = ThrottleNames(v)
	}
	if current, _, ret := d.GetEccMode(); lost(ret) {
		on := current == nvml.FEATURE_ENABLED
		t.ECC.Enabled = &on
	}
	ecc := func(kind nvml.MemoryErrorType, counter nvml.EccCounterType) *uint64 {
		if v, ret := d.GetTotalEccErrors(kind, counter); lost(ret) {
			return &v
		}
		return nil
	}
	t.ECC.CorrectedVolatile = ecc(nvml.MEMORY_ERROR_TYPE_CORRECTED, nvml.VOLATILE_ECC)
	t.ECC.UncorrectedVolatile = ecc(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC)
	t.ECC.CorrectedAggregate = ecc(nvml.MEMORY_ERROR_TYPE_CORRECTED, nvml.AGGREGATE_ECC)
	t.ECC.UncorrectedAggregate = ecc(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.AGGREGATE_ECC)
	if corr, unc, pending, failed, ret := d.GetRemappedRows(); lost(ret) {
		t.RemappedRows = &Remap{Correctable: corr, Uncorrectable: unc, Pending: pending, Failed: failed}
	}
	return t
}

// throttleNames names the clock event reason bits, in bit order.
var throttleNames = []struct {
	bit  uint64
	name string
}{
	{nvml.ClocksEventReasonGpuIdle, "gpu_idle"},
	{nvml.ClocksEventReasonApplicationsClocksSetting, "applications_clocks_setting"},
	{nvml.ClocksEventReasonSwPowerCap, "sw_power_cap"},
	{nvml.ClocksThrottleReasonHwSlowdown, "hw_slowdown"},
	{nvml.ClocksEventReasonSyncBoost, "sync_boost"},
	{nvml.ClocksEventReasonSwThermalSlowdown, "sw_thermal_slowdown"},
	{nvml.ClocksThrottleReasonHwThermalSlowdown, "hw_thermal_slowdown"},
	{nvml.ClocksThrottleReasonHwPowerBrakeSlowdown, "hw_power_brake_slowdown"},
	{nvml.ClocksEventReasonDisplayClockSetting, "display_clock_setting"},
}

// ThrottleNames names the reasons set in a clock event reasons mask.
func ThrottleNames(mask uint64) []string {
	var out []string
	for _, t := range throttleNames {
		if mask&t.bit != 0 {
			out = append(out, t.name)
		}
	}
	return out
}

// WatchEvents delivers XID and ECC error events to fn until ctx ends. GPUs
// that cannot report events are skipped; if none can, it returns an error
// at once. fn is called from this goroutine.
func (c *Client) WatchEvents(ctx context.Context, fn func(Event)) error {
	if err := c.checkOpen(); err != nil {
		return err
	}
	set, ret := c.lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		return fmt.Errorf("nvml: create event set: %v", ret)
	}
	defer set.Free()
	const kinds = nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError | nvml.EventTypeSingleBitEccError
	registered := 0
	for _, d := range c.devices {
		supported, ret := d.GetSupportedEventTypes()
		if ret != nvml.SUCCESS {
			continue
		}
		if ret := d.RegisterEvents(kinds&supported, set); ret == nvml.SUCCESS {
			registered++
		}
	}
	if registered == 0 && len(c.devices) > 0 {
		return errors.New("nvml: no GPU reports error events")
	}
	for ctx.Err() == nil {
		data, ret := set.Wait(500) // milliseconds; short, so that ctx is honoured
		switch ret {
		case nvml.SUCCESS:
			fn(c.event(data))
		case nvml.ERROR_TIMEOUT:
		default:
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return ctx.Err()
}

func (c *Client) event(data nvml.EventData) Event {
	e := Event{Time: c.now(), Index: -1, GPUInstanceID: data.GpuInstanceId, ComputeInstanceID: data.ComputeInstanceId}
	if data.Device != nil {
		if uuid, ret := data.Device.GetUUID(); ret == nvml.SUCCESS {
			e.UUID = uuid
			for i, u := range c.uuids {
				if u == uuid {
					e.Index = i
				}
			}
		}
	}
	switch data.EventType {
	case nvml.EventTypeXidCriticalError:
		e.Kind, e.XID = EventXID, data.EventData
	case nvml.EventTypeDoubleBitEccError:
		e.Kind = EventDoubleBitECC
	case nvml.EventTypeSingleBitEccError:
		e.Kind = EventSingleBitECC
	default:
		e.Kind = EventUnknownPayload
	}
	return e
}

func architectureName(a nvml.DeviceArchitecture) string {
	switch a {
	case nvml.DEVICE_ARCH_KEPLER:
		return "kepler"
	case nvml.DEVICE_ARCH_MAXWELL:
		return "maxwell"
	case nvml.DEVICE_ARCH_PASCAL:
		return "pascal"
	case nvml.DEVICE_ARCH_VOLTA:
		return "volta"
	case nvml.DEVICE_ARCH_TURING:
		return "turing"
	case nvml.DEVICE_ARCH_AMPERE:
		return "ampere"
	case nvml.DEVICE_ARCH_ADA:
		return "ada"
	case nvml.DEVICE_ARCH_HOPPER:
		return "hopper"
	case nvml.DEVICE_ARCH_BLACKWELL:
		return "blackwell"
	}
	return fmt.Sprintf("arch-%d", a)
}

// cString turns a NUL-terminated C char array into a string.
func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}
