// Package freeport picks loopback TCP addresses for processes that are
// started later and bind them themselves: the demo's children and the
// integration tests' hubs and agents.
//
// Asking the kernel for port 0 and closing the listener hands out a port
// from the ephemeral range, which the kernel goes on to hand to outgoing
// connections too; on a busy machine one of them takes the port before the
// child binds it ("address already in use"). Ports below the ephemeral range
// are never chosen for outgoing connections, so that is where these come
// from.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// floor is the lowest port handed out: below it live the well-known and
// commonly configured services.
const floor = 20000

// next is the port Loopback tries next: ports are handed out in turn from
// a random start, so that one process never hands out a port twice before
// it has gone round the whole range (two random picks can coincide, and
// two children then race for one port), and processes doing the same
// start far apart.
var (
	mu   sync.Mutex
	next int
)

// Loopback returns a 127.0.0.1 address that was free a moment ago and that
// the kernel will not pick for an outgoing connection.
func Loopback() (string, error) {
	if lo, ok := ephemeralLow(); ok && lo-floor >= 1000 {
		mu.Lock()
		defer mu.Unlock()
		if next < floor || next >= lo {
			next = floor + rand.IntN(lo-floor)
		}
		for range 64 {
			port := next
			if next++; next >= lo {
				next = floor
			}
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			if l, err := net.Listen("tcp", addr); err == nil {
				l.Close()
				return addr, nil
			}
		}
	}
	// No room below the ephemeral range (or no way to know it): the
	// kernel's choice, with its small race.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// ephemeralLow returns the first port of the kernel's ephemeral range.
func ephemeralLow() (int, bool) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, false
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return 0, false
	}
	lo, err := strconv.Atoi(fields[0])
	return lo, err == nil
}
