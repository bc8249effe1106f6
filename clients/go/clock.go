package fencelock

import "time"

var origin = time.Now()

// monotonic is the time since the package started on Go's monotonic clock.
func monotonic() time.Duration {
	return time.Since(origin)
}

// clockPoll bounds how long the lease watcher sleeps between looks at the lease clock,
// so that a deadline that passed during a suspend (when Go's timers, which run on
// CLOCK_MONOTONIC, stand still) is noticed within this long after waking.
const clockPoll = 250 * time.Millisecond
