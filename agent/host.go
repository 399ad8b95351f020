package agent

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// HostInfo describes the machine: what it is, not how busy it is.
func HostInfo() *droverv1.Host {
	h := &droverv1.Host{Os: runtime.GOOS, Arch: runtime.GOARCH, Cpus: int32(runtime.NumCPU())}
	h.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	h.CpuModel = procField("/proc/cpuinfo", "model name")
	if kb := procField("/proc/meminfo", "MemTotal"); kb != "" {
		if n, err := strconv.ParseUint(strings.TrimSuffix(kb, " kB"), 10, 64); err == nil {
			h.MemoryBytes = n << 10
		}
	}
	return h
}

// procField returns the value of the first "key: value" line of a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
