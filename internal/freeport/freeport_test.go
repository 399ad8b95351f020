package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestLoopbackIsBindableAndOutsideTheEphemeralRange(t *testing.T) {
	lo, known := ephemeralLow()
	seen := map[string]bool{}
	for range 20 {
		addr, err := Loopback()
		if err != nil {
			t.Fatal(err)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host != "127.0.0.1" {
			t.Fatalf("Loopback() = %q", addr)
		}
		p, _ := strconv.Atoi(port)
		if known && lo-floor >= 1000 && (p < floor || p >= lo) {
			t.Fatalf("port %d outside [%d, %d)", p, floor, lo)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("cannot bind %s: %v", addr, err)
		}
		l.Close()
		seen[addr] = true
	}
	if len(seen) != 20 {
		t.Fatalf("only %d distinct addresses in 20 picks: one process must never hand out a port twice", len(seen))
	}
}
