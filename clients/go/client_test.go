package fencelock

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func uniqueName(t *testing.T) string {
	return fmt.Sprintf("go-test/%s/%d", t.Name(), time.Now().UnixNano())
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
	cl := needCluster(t)
	c := testClient(t, cl.endpoints())
	ctx := context.Background()
	name := uniqueName(t)
	s := newSession(t, c, 10*time.Second)
	lock, err := s.Lock(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
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
	cl := needCluster(t)
	c := testClient(t, cl.endpoints())
	ctx := context.Background()
	name := uniqueName(t)
	holder := newSession(t, c, 10*time.Second)
	first, err := holder.Lock(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	const waiters = 4
	var sessions []*Session
	results := make([]chan *Lock, waiters)
	var ids []uint64
	for i := 0; i < waiters; i++ {
		s := newSession(t, c, 10*time.Second)
		sessions = append(sessions, s)
		results[i] = make(chan *Lock, 1)
		go func(i int) {
			lock, err := s.Lock(ctx, name)
			if err != nil {
				t.Error(err)
			}
			results[i] <- lock
		}(i)
		// Queue them one at a time, so the queue order is known.
		ids = append(ids, s.ID())
		expectState(t, c, name, []uint64{first.Token()}, ids)
	}
	prev := first
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < waiters; i++ {
		var lock *Lock
		select {
		case lock = <-results[i]:
		case <-time.After(patience):
			t.Fatalf("waiter %d not granted", i)
		}
		if lock == nil {
			t.FailNow()
		}
		if lock.Token() <= prev.Token() {
			t.Fatalf("token %d after %d", lock.Token(), prev.Token())
		}
		expectState(t, c, name, []uint64{lock.Token()}, ids[i+1:])
		if err := lock.Release(ctx); err != nil {
			t.Fatal(err)
		}
		prev = lock
	}
	expectState(t, c, name, nil, nil)
}

func TestCancelledContextWithdrawsTheWait(t *testing.T) {
	cl := needCluster(t)
	c := testClient(t, cl.endpoints())
	ctx := context.Background()
	name := uniqueName(t)
	a := newSession(t, c, 10*time.Second)
	b := newSession(t, c, 10*time.Second)
	held, err := a.Lock(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
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
	// A context deadline is a wait timeout on the cluster: no waiter is left either.
	held, err = a.Lock(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	shortCtx, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if _, err := b.Lock(shortCtx, name); !errors.Is(err, ErrTimedOut) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait past the deadline: %v", err)
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
	cl := needCluster(t)
	c := testClient(t, cl.endpoints())
	ctx := context.Background()
	name := uniqueName(t)
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
	cl := needCluster(t)
	c := testClient(t, cl.endpoints())
	ctx := context.Background()
	name := uniqueName(t)
	w, err := c.Watch(ctx, name, false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if e, err := w.Next(); err != nil || e.Kind != Resync {
		t.Fatalf("first event %+v %v", e, err)
	}
	s := newSession(t, c, 10*time.Second)
	lock, err := s.Lock(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
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
	cl := needCluster(t)
	defer func() {
		if err := cl.restartKilled(); err != nil {
			t.Fatal(err)
		}
	}()
	c := testClient(t, cl.endpoints())
	ctx := context.Background()
	name := uniqueName(t)
	a := newSession(t, c, 15*time.Second)
	held, err := a.Lock(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	const waiters = 2
	var ids []uint64
	results := make(chan *Lock, waiters)
	for i := 0; i < waiters; i++ {
		s := newSession(t, c, 15*time.Second)
		go func() {
			lock, err := s.Lock(ctx, name)
			if err != nil {
				t.Error(err)
			}
			results <- lock
		}()
		ids = append(ids, s.ID())
		expectState(t, c, name, []uint64{held.Token()}, ids)
	}
	leader, err := cl.leader()
	if err != nil {
		t.Fatal(err)
	}
	cl.kill(leader)
	expectState(t, c, name, []uint64{held.Token()}, ids)
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	prev := held.Token()
	for i := 0; i < waiters; i++ {
		var lock *Lock
		select {
		case lock = <-results:
		case <-time.After(patience):
			t.Fatal("waiter not granted after the leader change")
		}
		if lock == nil {
			t.FailNow()
		}
		if lock.Token() <= prev {
			t.Fatalf("token %d after %d", lock.Token(), prev)
		}
		expectState(t, c, name, []uint64{lock.Token()}, ids[i+1:])
		if err := lock.Release(ctx); err != nil {
			t.Fatal(err)
		}
		prev = lock.Token()
	}
	for _, s := range []*Session{a} {
		if !s.Valid() {
			t.Fatalf("session %d lost across the leader change: %v", s.ID(), s.Err())
		}
	}
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
