package hub_test

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/droverhq/drover/hub"
	"github.com/droverhq/drover/hub/hubtest"
	"github.com/droverhq/drover/internal/digest"
	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

// fsyncRate measures how many small append+fsync rounds the disk under dir
// does per second: the baseline that batching must beat.
func fsyncRate(b *testing.B, dir string) float64 {
	f, err := os.Create(filepath.Join(dir, "fsync-baseline"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 256)
	start := time.Now()
	n := 0
	for time.Since(start) < time.Second {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds()
}

// sequentialRate measures writes per second from a single client that waits
// for each write before the next: nothing to batch, so every write pays a
// whole commit (round trips and syncs) alone.
func sequentialRate(b *testing.B, write func(string) error) float64 {
	start := time.Now()
	n := 0
	for time.Since(start) < time.Second {
		if err := write(fmt.Sprintf("seq-%d", n)); err != nil {
			b.Fatal(err)
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkRegistryWrites measures committed registry writes per second
// through the Connect API: many clients (32 per CPU) create models
// concurrently on the leader of a 1- or 3-node cluster on loopback (real TCP
// Raft, the real Badger log on disk, default Raft timings). As a ratio that
// survives a noisy machine it also reports the gain over one client writing
// sequentially in the same run, which is what batching buys, and the disk's
// fsync rate for reference.
func BenchmarkRegistryWrites(b *testing.B) {
	for _, size := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", size), func(b *testing.B) {
			c := hubtest.StartCluster(b, size, hubtest.Options{Configure: func(_ int, cfg *hub.Config) {
				cfg.Raft = hub.DefaultRaftTimings()
			}})
			leader := c.Leader()
			cl := c.ClientFor(c.AdminToken, c.Nodes[leader].HTTPAddr())
			write := func(name string) error {
				_, err := cl.Models.CreateModel(b.Context(), &droverv1.CreateModelRequest{Name: name})
				return err
			}
			fsyncs := fsyncRate(b, b.TempDir())
			sequential := sequentialRate(b, write)
			var seq atomic.Int64
			b.SetParallelism(32)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := write(fmt.Sprintf("m-%d", seq.Add(1))); err != nil {
						b.Error(err)
						return
					}
				}
			})
			rate := float64(b.N) / b.Elapsed().Seconds()
			b.ReportMetric(rate, "writes/s")
			b.ReportMetric(sequential, "sequential-writes/s")
			b.ReportMetric(rate/sequential, "batching-gain")
			b.ReportMetric(fsyncs, "fsyncs/s")
		})
	}
}

// BenchmarkBlobTransfer uploads and downloads a 256 MiB artifact through a
// node's blob endpoints, and in the same iterations copies the same file
// with io.Copy and fsync on the same disk. It reports both throughputs and
// their ratio (the target is at least 0.7).
func BenchmarkBlobTransfer(b *testing.B) {
	const size = 256 << 20
	for _, nodes := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			c := hubtest.StartCluster(b, nodes, hubtest.Options{})
			leader := c.Leader()
			cl := c.ClientFor(c.AdminToken, c.Nodes[leader].HTTPAddr())
			dir := b.TempDir()
			src := filepath.Join(dir, "artifact")
			data := make([]byte, size)
			_, _ = rand.Read(data)
			if err := os.WriteFile(src, data, 0o600); err != nil {
				b.Fatal(err)
			}
			d := digest.FromBytes(data)
			data = nil
			blobPaths := make([]string, nodes)
			for i, cfg := range c.Configs {
				blobPaths[i] = filepath.Join(cfg.DataDir, "blobs", "sha256", d.Hex()[:2], d.Hex())
			}
			var copyT, upT, downT time.Duration
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				copyFile(b, src, filepath.Join(dir, "copy"))
				copyT += time.Since(start)

				f, err := os.Open(src)
				if err != nil {
					b.Fatal(err)
				}
				start = time.Now()
				if _, err := cl.Upload(b.Context(), f, size, d, nil); err != nil {
					b.Fatal(err)
				}
				upT += time.Since(start)
				f.Close()

				start = time.Now()
				if err := cl.DownloadFile(b.Context(), d, size, filepath.Join(dir, "down"), nil); err != nil {
					b.Fatal(err)
				}
				downT += time.Since(start)

				b.StopTimer()
				os.Remove(filepath.Join(dir, "copy"))
				os.Remove(filepath.Join(dir, "down"))
				for _, p := range blobPaths {
					os.Remove(p)
				}
				b.StartTimer()
			}
			mbps := func(d time.Duration) float64 { return float64(b.N) * size / (1 << 20) / d.Seconds() }
			b.ReportMetric(mbps(copyT), "copy-MiB/s")
			b.ReportMetric(mbps(upT), "upload-MiB/s")
			b.ReportMetric(mbps(downT), "download-MiB/s")
			b.ReportMetric(copyT.Seconds()/upT.Seconds(), "upload/copy")
			b.ReportMetric(copyT.Seconds()/downT.Seconds(), "download/copy")
		})
	}
}

// copyFile is the baseline: a plain copy, synced to disk like a blob is.
func copyFile(b *testing.B, src, dst string) {
	in, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		b.Fatal(err)
	}
	if err := out.Sync(); err != nil {
		b.Fatal(err)
	}
	out.Close()
}
