package nvml_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/droverhq/drover/nvml"
	"github.com/droverhq/drover/nvml/fake"
)

func open(t *testing.T, model string, opts ...fake.Option) (*nvml.Client, *fake.Machine) {
	t.Helper()
	m, err := fake.New(model, opts...)
	if err != nil {
		t.Fatal(err)
	}
	c, err := nvml.Open(m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, m
}

func TestNoLibrary(t *testing.T) {
	// fake.NoLibrary panics on any call after Init, as a real process would
	// die; Open must stop at Init.
	_, err := nvml.Open(fake.NoLibrary())
	if !errors.Is(err, nvml.ErrUnavailable) || !strings.Contains(err.Error(), "ERROR_LIBRARY_NOT_FOUND") {
		t.Fatalf("Open without a library: %v", err)
	}
}

func TestInventory(t *testing.T) {
	for _, tc := range []struct {
		model, name, cc string
		memGiB          uint64
	}{
		{"dgxa100", "A100-SXM4-40GB", "8.0", 40},
		{"dgxh100", "H100 80GB HBM3", "9.0", 80},
		{"dgxh200", "H200 141GB HBM3e", "9.0", 141},
	} {
		t.Run(tc.model, func(t *testing.T) {
			c, _ := open(t, tc.model)
			inv, err := c.Inventory()
			if err != nil {
				t.Fatal(err)
			}
			if inv.DriverVersion != "550.54.15" || inv.CUDADriverVersion != "12.4" || len(inv.GPUs) != 8 {
				t.Fatalf("inventory = %+v", inv)
			}
			g := inv.GPUs[3]
			if g.Index != 3 || !strings.HasPrefix(g.UUID, "GPU-") || !strings.Contains(g.Name, tc.name) || g.ComputeCapability != tc.cc ||
				g.MemoryBytes != tc.memGiB<<30 || g.PCIBusID != "00000000:48:00.0" || !g.MIG.Capable || g.MIG.Enabled {
				t.Fatalf("GPU 3 = %+v", g)
			}
		})
	}
}

func TestStableUUIDs(t *testing.T) {
	a, _ := open(t, "dgxh100", fake.WithSeed("rack-7"))
	b, _ := open(t, "dgxh100", fake.WithSeed("rack-7"))
	c, _ := open(t, "dgxh100", fake.WithSeed("rack-8"))
	ia, _ := a.Inventory()
	ib, _ := b.Inventory()
	ic, _ := c.Inventory()
	if ia.GPUs[0].UUID != ib.GPUs[0].UUID || ia.GPUs[0].UUID == ic.GPUs[0].UUID {
		t.Fatal("UUIDs do not follow the seed")
	}
}

func TestMIG(t *testing.T) {
	c, _ := open(t, "dgxh100", fake.WithGPUs(2), fake.WithMIG(0, gonvml.GPU_INSTANCE_PROFILE_1_SLICE, gonvml.GPU_INSTANCE_PROFILE_2_SLICE))
	inv, err := c.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	mig := inv.GPUs[0].MIG
	if !mig.Enabled || len(mig.Instances) != 2 {
		t.Fatalf("MIG = %+v", mig)
	}
	profiles := map[string]bool{}
	for _, in := range mig.Instances {
		profiles[in.Profile] = true
		if len(in.ComputeInstances) != 1 {
			t.Errorf("instance %+v has no compute instance", in)
		}
	}
	if !profiles["1g.10gb"] || !profiles["2g.20gb"] {
		t.Fatalf("profiles = %v", profiles)
	}
	if inv.GPUs[1].MIG.Enabled {
		t.Fatal("GPU 1 is in MIG mode")
	}
	// A MIG-mode GPU does not report utilisation: unknown, not zero.
	samples, err := c.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if samples[0].GPUUtilPercent != nil || samples[1].GPUUtilPercent == nil {
		t.Fatalf("utilisation: MIG %v, plain %v", samples[0].GPUUtilPercent, samples[1].GPUUtilPercent)
	}
}

func TestTelemetry(t *testing.T) {
	c, m := open(t, "dgxa100", fake.WithGPUs(2))
	m.Update(1, func(s *fake.GPUState) {
		s.TemperatureC, s.PowerMilliwatts, s.GPUUtil, s.MemoryUsedBytes = 71, 312_500, 93, 30<<30
		s.ClockEventReasons = gonvml.ClocksEventReasonSwPowerCap | gonvml.ClocksThrottleReasonHwThermalSlowdown
		s.CorrectedECC = 4
	})
	samples, err := c.Sample()
	if err != nil {
		t.Fatal(err)
	}
	s := samples[1]
	if *s.TemperatureC != 71 || *s.PowerWatts != 312.5 || *s.GPUUtilPercent != 93 || *s.MemoryUsedBytes != 30<<30 ||
		*s.ECC.CorrectedVolatile != 4 || *s.ECC.UncorrectedVolatile != 0 || *s.SMClockMHz != 1980 || *s.ShutdownTempC != 92 {
		t.Fatalf("sample = %+v", s)
	}
	if strings.Join(s.Throttles, ",") != "sw_power_cap,hw_thermal_slowdown" {
		t.Fatalf("throttles = %v", s.Throttles)
	}
	m.Update(0, func(s *fake.GPUState) { s.Lost = true })
	samples, _ = c.Sample()
	if !samples[0].Lost || samples[0].PowerWatts != nil {
		t.Fatalf("lost GPU sample = %+v", samples[0])
	}
}

func TestWatchEvents(t *testing.T) {
	c, m := open(t, "dgxh100", fake.WithGPUs(2))
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	got := make(chan nvml.Event, 10)
	go func() { _ = c.WatchEvents(ctx, func(e nvml.Event) { got <- e }) }()
	m.InjectXID(1, 79)
	m.InjectDoubleBitECC(0)
	e1, e2 := <-got, <-got
	if e1.Kind != nvml.EventXID || e1.XID != 79 || e1.Index != 1 || e1.UUID == "" {
		t.Fatalf("xid event = %+v", e1)
	}
	if e2.Kind != nvml.EventDoubleBitECC || e2.Index != 0 {
		t.Fatalf("ecc event = %+v", e2)
	}
}
