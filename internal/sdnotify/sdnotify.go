// Package sdnotify speaks systemd's notification protocol (sd_notify): a
// service of Type=notify says when it is ready, reloading and stopping, and
// pets the watchdog, by datagrams to the socket in $NOTIFY_SOCKET. Without
// that variable (not run by systemd) every call does nothing.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// Notify sends state (lines such as "READY=1") to systemd. It reports
// whether systemd was there to hear it.
func Notify(state string) (bool, error) {
	socket := os.Getenv("NOTIFY_SOCKET")
	if socket == "" {
		return false, nil
	}
	if socket[0] == '@' {
		socket = "\x00" + socket[1:] // an abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sdnotify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sdnotify: %w", err)
	}
	return true, nil
}

// Ready says start-up is complete.
func Ready() error { _, err := Notify("READY=1"); return err }

// Stopping says the service is shutting down.
func Stopping() error { _, err := Notify("STOPPING=1"); return err }

// Reloading says the service is reloading its configuration; call Ready
// when done. systemd wants the time the reload began.
func Reloading() error {
	_, err := Notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec(time.Now())))
	return err
}

// Watchdog pets the watchdog.
func Watchdog() error { _, err := Notify("WATCHDOG=1"); return err }

// Status sets the one-line status systemctl shows.
func Status(s string) error { _, err := Notify("STATUS=" + s); return err }

// WatchdogInterval returns how often to pet the watchdog (half its
// timeout), and false if systemd set no watchdog for this process.
func WatchdogInterval() (time.Duration, bool) {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0, false
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0, false
	}
	return time.Duration(usec) * time.Microsecond / 2, true
}
