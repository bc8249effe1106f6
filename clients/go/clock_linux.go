package fencelock

import (
	"syscall"
	"time"
	"unsafe"
)

// clockBoottime is Linux's CLOCK_BOOTTIME: monotonic, and it keeps counting while the
// machine is suspended, unlike CLOCK_MONOTONIC (which Go's time package reads).
const clockBoottime = 7

// now reads the lease clock: CLOCK_BOOTTIME, so that a lease deadline passes during a
// suspend just as it does on the cluster's clocks.
func now() time.Duration {
	var ts syscall.Timespec
	_, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockBoottime, uintptr(unsafe.Pointer(&ts)), 0)
	if errno != 0 {
		return monotonic()
	}
	return time.Duration(ts.Nano())
}
