package store

import (
	"testing"

	"github.com/droverhq/drover/internal/logging"
)

// BenchmarkAppend appends one report at a time, each synced, with the
// free-space check before every write and without it: what the reserve
// costs the outbox (a statfs per write, next to an fsync).
func BenchmarkAppend(b *testing.B) {
	for _, c := range []struct {
		name    string
		minFree int64
	}{{"reserve", 0}, {"no-reserve", -1}} {
		b.Run(c.name, func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{MinFreeBytes: c.minFree}, logging.Discard())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			r := event("benchmark")
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Append(t0, r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSpaceCheck is the check alone: one statfs.
func BenchmarkSpaceCheck(b *testing.B) {
	s, err := Open(b.TempDir(), Options{}, logging.Discard())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for b.Loop() {
		if err := s.space.check(); err != nil {
			b.Fatal(err)
		}
	}
}
