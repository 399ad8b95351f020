// Package nvml discovers a machine's NVIDIA GPUs and watches their health
// through NVML (github.com/NVIDIA/go-nvml).
//
// It has two layers. The driver is go-nvml's own nvml.Interface: the real
// library (loaded with dlopen at run time, so the binary runs on machines
// without it), or, in tests and the demo, the simulated DGX machines of
// package nvml/fake, built on go-nvml's mocks. Client turns a driver into an
// Inventory (what the GPUs are), Telemetry samples (how they are doing) and
// Events (XID and ECC errors); Monitor turns those into a health verdict by
// documented rules (health.go).
//
// NVML must not be called after a failed Init (the process dies on an
// undefined symbol), so Open checks Init first and returns ErrUnavailable
// without calling anything else.
//
// Values NVML cannot report (ERROR_NOT_SUPPORTED, a MIG-mode GPU's
// utilisation, ...) are nil pointers: unknown, never zero.
package nvml

import "time"

// Inventory is what the machine's GPUs are. It changes only when hardware,
// drivers or MIG configuration change.
type Inventory struct {
	DriverVersion string `json:"driver_version"`
	// CUDADriverVersion is the highest CUDA version the driver supports,
	// e.g. "12.4".
	CUDADriverVersion string `json:"cuda_driver_version"`
	NVMLVersion       string `json:"nvml_version"`
	GPUs              []GPU  `json:"gpus"`
}

// GPU is one physical GPU.
type GPU struct {
	Index        int    `json:"index"`
	UUID         string `json:"uuid"`
	Name         string `json:"name"`
	Architecture string `json:"architecture,omitempty"`
	// MemoryBytes is the framebuffer size.
	MemoryBytes uint64 `json:"memory_bytes"`
	// ComputeCapability is the CUDA compute capability, e.g. "9.0".
	ComputeCapability string `json:"compute_capability"`
	PCIBusID          string `json:"pci_bus_id"`
	MIG               MIG    `json:"mig"`
}

// MIG is a GPU's Multi-Instance GPU configuration.
type MIG struct {
	// Capable is true if the GPU supports MIG at all.
	Capable bool `json:"capable"`
	// Enabled is the current mode; Pending the mode after the next reset.
	Enabled bool `json:"enabled"`
	Pending bool `json:"pending"`
	// Instances are the GPU instances, each with its compute instances.
	Instances []MIGInstance `json:"instances,omitempty"`
}

// MIGInstance is one GPU instance (a slice of a MIG-mode GPU).
type MIGInstance struct {
	GPUInstanceID uint32 `json:"gpu_instance_id"`
	// Profile is NVIDIA's name for it, e.g. "1g.10gb".
	Profile     string `json:"profile"`
	SliceCount  uint32 `json:"slice_count"`
	MemoryBytes uint64 `json:"memory_bytes"`
	// Placement is the first slice it occupies.
	Placement        uint32   `json:"placement"`
	ComputeInstances []uint32 `json:"compute_instances,omitempty"`
}

// Telemetry is one sample of a GPU's state. Nil means NVML could not say.
type Telemetry struct {
	Index int       `json:"index"`
	UUID  string    `json:"uuid"`
	Time  time.Time `json:"time"`

	TemperatureC *uint32 `json:"temperature_c"`
	// SlowdownTempC and ShutdownTempC are the GPU's own thresholds.
	SlowdownTempC   *uint32  `json:"slowdown_temp_c,omitempty"`
	ShutdownTempC   *uint32  `json:"shutdown_temp_c,omitempty"`
	PowerWatts      *float64 `json:"power_watts"`
	PowerLimitWatts *float64 `json:"power_limit_watts"`
	// GPUUtilPercent and MemoryUtilPercent are over NVML's last sample
	// period (1/6 s to 1 s, by GPU).
	GPUUtilPercent    *uint32 `json:"gpu_util_percent"`
	MemoryUtilPercent *uint32 `json:"memory_util_percent"`
	MemoryUsedBytes   *uint64 `json:"memory_used_bytes"`
	MemoryTotalBytes  *uint64 `json:"memory_total_bytes"`
	SMClockMHz        *uint32 `json:"sm_clock_mhz"`
	MemoryClockMHz    *uint32 `json:"memory_clock_mhz"`
	// ThrottleReasons is NVML's clock event reasons bit mask; Throttles
	// names the bits that are set.
	ThrottleReasons *uint64  `json:"throttle_reasons"`
	Throttles       []string `json:"throttles,omitempty"`
	ECC             ECC      `json:"ecc"`
	RemappedRows    *Remap   `json:"remapped_rows,omitempty"`
	// Lost is true when the GPU stopped answering (ERROR_GPU_IS_LOST).
	Lost bool `json:"lost,omitempty"`
}

// ECC holds the error-correction counters. Volatile counts reset with the
// driver; aggregate counts live as long as the GPU.
type ECC struct {
	Enabled              *bool   `json:"enabled"`
	CorrectedVolatile    *uint64 `json:"corrected_volatile"`
	UncorrectedVolatile  *uint64 `json:"uncorrected_volatile"`
	CorrectedAggregate   *uint64 `json:"corrected_aggregate"`
	UncorrectedAggregate *uint64 `json:"uncorrected_aggregate"`
}

// Remap is the row-remapping state of GPUs with HBM (A100 and later).
type Remap struct {
	Correctable   int  `json:"correctable"`
	Uncorrectable int  `json:"uncorrectable"`
	Pending       bool `json:"pending"`
	Failed        bool `json:"failed"`
}

// EventKind says what an Event reports.
type EventKind string

// The kinds of event the agent registers for.
const (
	EventXID            EventKind = "xid"
	EventSingleBitECC   EventKind = "ecc_single_bit"
	EventDoubleBitECC   EventKind = "ecc_double_bit"
	EventUnknownPayload EventKind = "other"
)

// Event is an error NVML reported for a GPU.
type Event struct {
	Time  time.Time `json:"time"`
	Index int       `json:"index"`
	UUID  string    `json:"uuid"`
	Kind  EventKind `json:"kind"`
	// XID is the Xid error code, for EventXID.
	XID uint64 `json:"xid,omitempty"`
	// GPUInstanceID and ComputeInstanceID locate the error on a MIG GPU.
	GPUInstanceID     uint32 `json:"gpu_instance_id,omitempty"`
	ComputeInstanceID uint32 `json:"compute_instance_id,omitempty"`
}
