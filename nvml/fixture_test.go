package nvml_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/nvml"
)

// inventoryFixture is drover agent inventory --json --telemetry's output,
// as far as these tests read it.
type inventoryFixture struct {
	DriverVersion     string           `json:"driver_version"`
	CUDADriverVersion string           `json:"cuda_driver_version"`
	NVMLVersion       string           `json:"nvml_version"`
	NVMLError         string           `json:"nvml_error"`
	GPUs              []nvml.GPU       `json:"gpus"`
	Telemetry         []nvml.Telemetry `json:"telemetry"`
}

var (
	uuidRE   = regexp.MustCompile(`^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	ccRE     = regexp.MustCompile(`^[0-9]+\.[0-9]+$`)
	pciRE    = regexp.MustCompile(`^[0-9A-Fa-f]{8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]$`)
	driverRE = regexp.MustCompile(`^[0-9]+\.[0-9]+(\.[0-9]+)?$`)
)

// TestInventoryFixtures reads every testdata/*.inventory.json — what
// `drover agent inventory --json --telemetry` printed on a machine (real
// ones are named real-*, recorded with testdata/capture.sh) — and checks
// that every field the hub and the health rules rely on is there and well
// formed, that the telemetry belongs to the GPUs listed, and that the
// health rules judge a sample of a working machine healthy. Where the
// machine's nvidia-smi -q was recorded beside it, the inventory must agree
// with it.
func TestInventoryFixtures(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.inventory.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no fixtures in testdata")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".inventory.json"), func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var inv inventoryFixture
			if err := json.Unmarshal(b, &inv); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if inv.NVMLError != "" {
				t.Fatalf("recorded without NVML: %s", inv.NVMLError)
			}
			if !driverRE.MatchString(inv.DriverVersion) || !ccRE.MatchString(inv.CUDADriverVersion) || inv.NVMLVersion == "" {
				t.Errorf("versions: driver %q, CUDA %q, NVML %q", inv.DriverVersion, inv.CUDADriverVersion, inv.NVMLVersion)
			}
			if len(inv.GPUs) == 0 {
				t.Fatal("no GPUs")
			}
			byUUID := map[string]nvml.GPU{}
			for i, g := range inv.GPUs {
				if g.Index != i {
					t.Errorf("GPU %d has index %d", i, g.Index)
				}
				if !uuidRE.MatchString(g.UUID) {
					t.Errorf("GPU %d: UUID %q", i, g.UUID)
				}
				if g.Name == "" || g.MemoryBytes < 1<<30 || !ccRE.MatchString(g.ComputeCapability) || !pciRE.MatchString(g.PCIBusID) {
					t.Errorf("GPU %d: name %q, memory %d, compute capability %q, PCI bus id %q", i, g.Name, g.MemoryBytes, g.ComputeCapability, g.PCIBusID)
				}
				if _, dup := byUUID[g.UUID]; dup {
					t.Errorf("GPU %d: UUID %s twice", i, g.UUID)
				}
				byUUID[g.UUID] = g
				if g.MIG.Enabled && len(g.MIG.Instances) == 0 {
					t.Logf("GPU %d: MIG enabled with no instances", i)
				}
			}

			if len(inv.Telemetry) != len(inv.GPUs) {
				t.Fatalf("%d telemetry samples for %d GPUs", len(inv.Telemetry), len(inv.GPUs))
			}
			m := nvml.NewMonitor(nvml.DefaultRules())
			var last time.Time
			for _, s := range inv.Telemetry {
				g, ok := byUUID[s.UUID]
				if !ok || g.Index != s.Index {
					t.Errorf("telemetry for %s (index %d), not a GPU listed", s.UUID, s.Index)
				}
				if s.Time.IsZero() || s.TemperatureC == nil || s.PowerWatts == nil || s.MemoryUsedBytes == nil || s.SMClockMHz == nil || s.ThrottleReasons == nil {
					t.Errorf("GPU %d: a sample without temperature, power, memory used, SM clock or throttle reasons: %+v", s.Index, s)
				}
				if s.MemoryTotalBytes != nil && s.MemoryUsedBytes != nil && *s.MemoryUsedBytes > *s.MemoryTotalBytes {
					t.Errorf("GPU %d: %d bytes used of %d", s.Index, *s.MemoryUsedBytes, *s.MemoryTotalBytes)
				}
				m.ObserveTelemetry(s)
				if s.Time.After(last) {
					last = s.Time
				}
			}
			for _, v := range m.Verdicts(last) {
				if v.Health != nvml.Healthy {
					t.Errorf("GPU %d (%s) judged %s: %v", v.Index, v.UUID, v.Health, v.Reasons)
				}
			}

			smi, err := os.ReadFile(strings.TrimSuffix(file, ".inventory.json") + ".nvidia-smi.txt")
			if os.IsNotExist(err) {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkAgainstNvidiaSMI(t, inv, string(smi))
		})
	}
}

// checkAgainstNvidiaSMI compares the inventory with nvidia-smi -q's
// "Key : value" lines.
func checkAgainstNvidiaSMI(t *testing.T, inv inventoryFixture, smi string) {
	t.Helper()
	values := map[string][]string{}
	for _, line := range strings.Split(smi, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		values[k] = append(values[k], v)
	}
	has := func(key, want string) bool {
		for _, v := range values[key] {
			if strings.EqualFold(v, want) {
				return true
			}
		}
		return false
	}
	if !has("Driver Version", inv.DriverVersion) {
		t.Errorf("nvidia-smi's driver version %v, the inventory's %q", values["Driver Version"], inv.DriverVersion)
	}
	for _, g := range inv.GPUs {
		if !has("GPU UUID", g.UUID) {
			t.Errorf("GPU %d: UUID %s not in nvidia-smi's %v", g.Index, g.UUID, values["GPU UUID"])
		}
		if !has("Product Name", g.Name) {
			t.Errorf("GPU %d: name %q not in nvidia-smi's %v", g.Index, g.Name, values["Product Name"])
		}
		if !has("Bus Id", g.PCIBusID) {
			t.Errorf("GPU %d: PCI bus id %s not in nvidia-smi's %v", g.Index, g.PCIBusID, values["Bus Id"])
		}
	}
}
