package fencelock

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"
)

// cancelWithdraws checks that a wait whose context is cancelled leaves the queue: one
// session holds name, another waits and cancels; the lock is left free. It returns the
// two sessions.
func cancelWithdraws(t *testing.T, c *Client, name string) (*Session, *Session) {
	t.Helper()
	ctx := context.Background()
	a := newSession(t, c, 10*time.Second)
	b := newSession(t, c, 10*time.Second)
	held := mustLock(t, a, name)
	waitCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := b.Lock(waitCtx, name)
		done <- err
	}()
	expectState(t, c, name, []uint64{held.Token()}, []uint64{b.ID()})
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled wait: %v", err)
		}
	case <-time.After(patience):
		t.Fatal("the wait did not return after the cancel")
	}
	expectState(t, c, name, []uint64{held.Token()}, nil)
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	expectState(t, c, name, nil, nil)
	return a, b
}

// setup is what every test starts with: the cluster, a client of it, a lock name of its
// own.
func setup(t *testing.T) (*cluster, *Client, string) {
	cl := needCluster(t)
	return cl, testClient(t, cl.endpoints()), fmt.Sprintf("go-test/%s/%d", t.Name(), time.Now().UnixNano())
}

// mustLock waits for name on s.
func mustLock(t *testing.T, s *Session, name string) *Lock {
	t.Helper()
	lock, err := s.Lock(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return lock
}

// queue starts one waiting Lock per session, one at a time, so the queue order is the
// sessions' order; the grants arrive on the returned channels.
func queue(t *testing.T, c *Client, name string, holder uint64, sessions []*Session) []chan *Lock {
	var ids []uint64
	var results []chan *Lock
	for _, s := range sessions {
		result := make(chan *Lock, 1)
		go func(s *Session) {
			lock, err := s.Lock(context.Background(), name)
			if err != nil {
				t.Error(err)
			}
			result <- lock
		}(s)
		results = append(results, result)
		ids = append(ids, s.ID())
		expectState(t, c, name, []uint64{holder}, ids)
	}
	return results
}

// grantedInOrder releases first, then checks that the queued waiters get the lock one
// after the other, in queue order, each with a larger token, and releases each grant.
func grantedInOrder(t *testing.T, c *Client, name string, first *Lock, sessions []*Session, results []chan *Lock) {
	t.Helper()
	ctx := context.Background()
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	prev := first.Token()
	for i, result := range results {
		var lock *Lock
		select {
		case lock = <-result:
		case <-time.After(patience):
			t.Fatalf("waiter %d not granted", i)
		}
		if lock == nil {
			t.FailNow()
		}
		if lock.Token() <= prev || lock.Session() != sessions[i] {
			t.Fatalf("waiter %d: token %d after %d, session %d", i, lock.Token(), prev, lock.Session().ID())
		}
		var rest []uint64
		for _, s := range sessions[i+1:] {
			rest = append(rest, s.ID())
		}
		expectState(t, c, name, []uint64{lock.Token()}, rest)
		if err := lock.Release(ctx); err != nil {
			t.Fatal(err)
		}
		prev = lock.Token()
	}
	expectState(t, c, name, nil, nil)
}

func newSession(t *testing.T, c *Client, ttl time.Duration) *Session {
	t.Helper()
	s, err := c.NewSession(context.Background(), ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s
}

func expectState(t *testing.T, c *Client, name string, holders, waiters []uint64) {
	t.Helper()
	eventually(t, "lock state", func() error {
		h, w, err := lockState(context.Background(), c, name)
		if err != nil {
			return err
		}
		if fmt.Sprint(h) != fmt.Sprint(holders) || fmt.Sprint(w) != fmt.Sprint(waiters) {
			return fmt.Errorf("holders %v waiters %v, want %v %v", h, w, holders, waiters)
		}
		return nil
	})
}

func TestLockAndUnlock(t *testing.T) {
	_, c, name := setup(t)
	ctx := context.Background()
	s := newSession(t, c, 10*time.Second)
	lock := mustLock(t, s, name)
	if lock.Token() == 0 || !lock.Valid() {
		t.Fatalf("token %d valid %v", lock.Token(), lock.Valid())
	}
	if ok, err := c.Verify(ctx, name, lock.Token()); err != nil || !ok {
		t.Fatalf("verify: %v %v", ok, err)
	}
	info, _, err := c.Describe(ctx, name)
	if err != nil || info == nil || len(info.Holders) != 1 || info.Holders[0].SessionID != s.ID() {
		t.Fatalf("describe: %+v %v", info, err)
	}
	if _, err := s.TryLock(ctx, name); !errors.Is(err, ErrAlreadyHeldOrQueued) {
		t.Fatalf("a second acquire by the holder: %v", err)
	}
	if err := lock.Release(ctx); err != nil {
		t.Fatal(err)
	}
	expectState(t, c, name, nil, nil)
	if err := s.Release(ctx, name, lock.Token()); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("release of a released lock: %v", err)
	}
	var apiErr *Error
	if _, err := s.TryLock(ctx, ""); !errors.As(err, &apiErr) || apiErr.Reason != ReasonInvalidName || apiErr.Status != 400 {
		t.Fatalf("an empty name: %v", err)
	}
	locks, _, err := c.List(ctx, "go-test/", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range locks {
		if l.Name == name {
			t.Fatalf("released lock listed: %+v", l)
		}
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Lost():
	default:
		t.Fatal("a closed session is not lost")
	}
	if !errors.Is(s.Err(), ErrSessionLost) {
		t.Fatalf("err after close: %v", s.Err())
	}
}

func TestContentionGrantsInQueueOrderWithGrowingTokens(t *testing.T) {
	_, c, name := setup(t)
	first := mustLock(t, newSession(t, c, 10*time.Second), name)
	var sessions []*Session
	for i := 0; i < 4; i++ {
		sessions = append(sessions, newSession(t, c, 10*time.Second))
	}
	results := queue(t, c, name, first.Token(), sessions)
	grantedInOrder(t, c, name, first, sessions, results)
}

func TestCancelledContextWithdrawsTheWait(t *testing.T) {
	_, c, name := setup(t)
	ctx := context.Background()
	a, b := cancelWithdraws(t, c, name)
	// A context deadline is a wait timeout on the cluster: no waiter is left either.
	held := mustLock(t, a, name)
	shortCtx, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if _, err := b.Lock(shortCtx, name); !errors.Is(err, ErrTimedOut) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait past the deadline: %v", err)
	}
	expectState(t, c, name, []uint64{held.Token()}, nil)
	if _, err := b.Lock(shortCtx, name); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a wait whose deadline passed already: %v", err)
	}
	longCtx, cancelLong := context.WithTimeout(ctx, 48*time.Hour)
	defer cancelLong()
	go func() {
		time.Sleep(500 * time.Millisecond)
		cancelLong()
	}()
	if _, err := b.Lock(longCtx, name); !errors.Is(err, context.Canceled) {
		t.Fatalf("a wait with a deadline beyond the longest timed wait: %v", err)
	}
	expectState(t, c, name, []uint64{held.Token()}, nil)
	if _, err := b.Acquire(ctx, name, AcquireOptions{Wait: WaitFor(200 * time.Millisecond)}); !errors.Is(err, ErrTimedOut) {
		t.Fatalf("WaitFor past the timeout: %v", err)
	}
	expectState(t, c, name, []uint64{held.Token()}, nil)
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestSharedLocks(t *testing.T) {
	_, c, name := setup(t)
	ctx := context.Background()
	a := newSession(t, c, 10*time.Second)
	b := newSession(t, c, 10*time.Second)
	x := newSession(t, c, 10*time.Second)
	ra, err := a.Acquire(ctx, name, AcquireOptions{Mode: Shared, Wait: NoWait})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := b.Acquire(ctx, name, AcquireOptions{Mode: Shared, Wait: NoWait})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.TryLock(ctx, name); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("exclusive over shared holders: %v", err)
	}
	if err := ra.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rb.Release(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := x.TryLock(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if w.Token() <= rb.Token() || w.Mode() != Exclusive {
		t.Fatalf("exclusive grant %d %s after %d", w.Token(), w.Mode(), rb.Token())
	}
	_ = w.Release(ctx)
}

func TestWatchSeesGrantAndRelease(t *testing.T) {
	_, c, name := setup(t)
	ctx := context.Background()
	w, err := c.Watch(ctx, name, false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if e, err := w.Next(); err != nil || e.Kind != Resync {
		t.Fatalf("first event %+v %v", e, err)
	}
	s := newSession(t, c, 10*time.Second)
	lock := mustLock(t, s, name)
	if err := lock.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for _, want := range []EventKind{Acquired, Released} {
		e, err := w.Next()
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind != want || e.Token != lock.Token() || e.Name != name || e.SessionID != s.ID() {
			t.Fatalf("event %+v, want %s of token %d", e, want, lock.Token())
		}
	}
}

// A waiter and a holder keep working across the leader's SIGKILL: the wait is retried
// on the new leader with its request id (one waiter, not two), the release acts once,
// and the grant goes to the waiter.
func TestLeaderKillDuringWaits(t *testing.T) {
	cl, c, name := setup(t)
	defer func() {
		if err := cl.restartKilled(); err != nil {
			t.Fatal(err)
		}
	}()
	a := newSession(t, c, 15*time.Second)
	held := mustLock(t, a, name)
	sessions := []*Session{newSession(t, c, 15*time.Second), newSession(t, c, 15*time.Second)}
	results := queue(t, c, name, held.Token(), sessions)
	leader, err := cl.leader()
	if err != nil {
		t.Fatal(err)
	}
	// A watch served by the leader (the node the client calls).
	if c.leaderURL() != "http://"+leader.client {
		t.Fatalf("the client calls %s, the leader is %s", c.leaderURL(), leader.client)
	}
	w, err := c.Watch(context.Background(), name, false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if e, err := w.Next(); err != nil || e.Kind != Resync {
		t.Fatalf("first event %+v %v", e, err)
	}
	events := make(chan Event, 100)
	go func() {
		defer close(events)
		for {
			e, err := w.Next()
			if err != nil {
				return
			}
			events <- e
		}
	}()
	next := func(want func(Event) bool) {
		t.Helper()
		for {
			select {
			case e, ok := <-events:
				if !ok {
					t.Fatal("the watch ended")
				}
				if want(e) {
					return
				}
			case <-time.After(patience):
				t.Fatal("no such watch event")
			}
		}
	}
	cl.kill(leader)
	// One waiter each, in the same order, on the new leader.
	expectState(t, c, name, []uint64{held.Token()}, []uint64{sessions[0].ID(), sessions[1].ID()})
	grantedInOrder(t, c, name, held, sessions, results)
	if !a.Valid() {
		t.Fatalf("the holder's session was lost across the leader change: %v", a.Err())
	}
	// The watch moved to a live node: a resync, then the events from there on.
	next(func(e Event) bool { return e.Kind == Resync })
	last := mustLock(t, a, name)
	if err := last.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	next(func(e Event) bool { return e.Kind == Released && e.Token == last.Token() })
}

// The holder runs in a child process that is stopped (SIGSTOP) past its TTL and then
// resumed: its first look at the lock says lost, the lock went to the waiter, and a
// fence refuses the stale token (the conformance scenario paused_holder).
func TestPausedHolder(t *testing.T) {
	cl := needCluster(t)
	for _, sc := range loadScenarios(t) {
		if sc.Name == "paused_holder" {
			runScenario(t, cl, sc)
			return
		}
	}
	t.Fatal("no paused_holder scenario")
}

// A client given only a follower's address follows its NOT_LEADER answer (307 with the
// leader's address in the body) to the leader, which is not among its endpoints.
func TestFollowsNotLeaderToTheLeader(t *testing.T) {
	cl, _, name := setup(t)
	leader, err := cl.leader()
	if err != nil {
		t.Fatal(err)
	}
	var follower *node
	for _, nd := range cl.nodes {
		if nd != leader && nd.cmd != nil {
			follower = nd
		}
	}
	c := testClient(t, []string{follower.client})
	st, err := c.Status(context.Background())
	if err != nil || st.NodeID != uint64(follower.id) || st.LeaderID != uint64(leader.id) {
		t.Fatalf("a follower's status: %+v %v", st, err)
	}
	s := newSession(t, c, 10*time.Second)
	lock := mustLock(t, s, name)
	if err := lock.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := c.leaderURL(); got != "http://"+leader.client {
		t.Fatalf("the client's leader is %q, want %s", got, leader.client)
	}
}

// The leader is stopped with SIGSTOP, so its connections stay open and silent: the
// waiter's long poll on it must move to the new leader (same request id, same place in
// the queue) once the client learns of it, and be granted when the holder releases.
func TestLeaderPausedDuringWait(t *testing.T) {
	cl, c, name := setup(t)
	a := newSession(t, c, 15*time.Second)
	held := mustLock(t, a, name)
	sessions := []*Session{newSession(t, c, 15*time.Second)}
	results := queue(t, c, name, held.Token(), sessions)
	leader, err := cl.leader()
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = leader.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	defer resume()
	grantedInOrder(t, c, name, held, sessions, results)
	resume()
	if _, err := cl.leader(); err != nil {
		t.Fatal(err)
	}
}
