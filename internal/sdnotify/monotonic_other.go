//go:build !linux

package sdnotify

import "time"

// monotonicUsec is unused where systemd is not.
func monotonicUsec(time.Time) int64 { return 0 }
