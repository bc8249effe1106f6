//go:build !linux

package fencelock

import "time"

// now reads the lease clock: Go's monotonic clock, which on some systems stops while the
// machine is suspended (see the package documentation).
func now() time.Duration {
	return monotonic()
}
