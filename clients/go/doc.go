// Package fencelock is the Go client of fencelock, a distributed lock service with
// fencing tokens. It speaks the cluster's HTTP/JSON API (docs/http-api.md in the
// repository) with nothing but Go's standard library.
//
// # Locks, sessions and tokens
//
// Create one Client for the cluster (any of its nodes will do: the client follows the
// leader), open a Session (a lease the client renews in the background), and take locks
// under it. Every grant carries a fencing token from one counter that only goes up: send
// it with every write to the protected resource, which refuses a token older than the
// newest it has seen. That is what keeps a holder that was paused, swapped out or cut off
// from doing damage after its lease ran out.
//
//	client, _ := fencelock.New(fencelock.Config{Endpoints: []string{"10.0.0.1:7001", "10.0.0.2:7001"}})
//	session, _ := client.NewSession(ctx, 10*time.Second)
//	defer session.Close(ctx)
//	lock, err := session.Lock(ctx, "jobs/billing")      // waits; ctx bounds the wait
//	...
//	select {
//	case <-lock.Lost(): // stop: the lock may be someone else's soon
//	case <-work(lock.Token()):
//	}
//	lock.Release(ctx)
//
// TryLock answers ErrWouldBlock instead of waiting; Acquire takes AcquireOptions (Shared
// mode, NoWait, WaitFor(d), a holder value).
//
// # Lease accounting
//
// The cluster renews a lease for its TTL from when the renewal reached the leader. The
// client counts it from when the renewal was SENT, which is earlier, minus a safety
// margin (Config.SafetyMargin, by default a tenth of the TTL, at least 100 ms), so Lost
// fires before the cluster could expire the session, whatever the network delay. Renewals
// go out every TTL/3; a renewal whose answer is lost does not extend the lease.
//
// The lease clock is CLOCK_BOOTTIME on Linux, which keeps counting while the machine is
// suspended, as the cluster's clocks do. Go's own timers run on CLOCK_MONOTONIC, which
// stands still during a suspend, so the background watcher that closes Lost wakes at least
// every 250 ms to read the lease clock: after a resume it fires within that time. Valid
// reads the lease clock on the spot: call it right before acting on the resource. On other
// systems the lease clock is Go's monotonic clock; if it stops during a suspend there, a
// lease can look live after a resume although the cluster expired it (the fencing token
// still protects the resource).
//
// A process that is stopped (SIGSTOP, a debugger, a long GC pause) cannot act while
// stopped; when it resumes, Valid is false at once if the lease ran out meanwhile, and
// Lost closes within 250 ms.
//
// # Waits, cancellation and timeouts
//
// A waiting acquire is a long poll. Cancelling its context closes the connection, and the
// cluster withdraws the wait; a context deadline is passed to the cluster as the wait's
// timeout, so the cluster itself ends the wait (ErrTimedOut). A grant that raced the
// cancel is found and released in the background (the same request id is sent again with
// a 1 ms wait), so a caller that gave up never holds a lock it does not know of.
//
// A wait also survives a change of leader: when the client learns of a new leader, the
// open long poll is sent there again with the same request id and keeps its place in the
// queue, even if the old leader stopped without closing its connections.
//
// # Exactly once
//
// Every mutation of a session carries a request id (a sequence number and the lowest one
// not yet answered). Retries after a timeout, a dropped connection, an election or a
// redirect send the same id, and the cluster answers a retry with its first answer: each
// request acts at most once, and a retried wait re-attaches to its place in the queue.
//
// # Errors
//
// Errors of the cluster are *Error values with a Reason (the same names as the gRPC API's
// ErrorDetail), an HTTP status and, on NOT_LEADER, the leader's address. Compare with
// errors.Is against the sentinels (ErrNotHeld, ErrStaleToken, ErrSessionNotFound, ...).
// Redirects to the leader, "no leader" during elections and unreachable nodes are retried
// until Config.RetryDeadline; only then do ErrNotLeader, ErrNoLeader or ErrUnavailable
// reach the caller. ErrWouldBlock, ErrTimedOut and ErrSessionLost are the client's.
//
// # Watching
//
// Client.Watch streams a lock's (or a prefix's) events: ACQUIRED, RELEASED, EXPIRED, ...
// Each stream starts with a Resync event; after another Resync (the watcher fell behind),
// re-read with Describe or List.
package fencelock
