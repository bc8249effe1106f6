package fencelock

import (
	"context"
	"sync"
	"time"
)

// Wait says whether and how long an acquire waits for a taken lock.
type Wait struct {
	policy  string
	timeout time.Duration
}

var (
	// NoWait answers ErrWouldBlock at once when the lock is taken (a try-lock).
	NoWait = Wait{policy: "NO_WAIT"}
	// Forever waits until granted, the session ends or the context is done. A context
	// with a deadline makes it a WaitFor of the time left, so the cluster itself ends the
	// wait when it runs out.
	Forever = Wait{}
)

// maxTimedWait is the longest wait_timeout_ms the cluster takes (docs/http-api.md).
const maxTimedWait = 24 * time.Hour

// WaitFor waits at most d; then the cluster withdraws the wait (ErrTimedOut).
func WaitFor(d time.Duration) Wait {
	if d < time.Millisecond {
		d = time.Millisecond
	}
	return Wait{policy: "TIMEOUT", timeout: d}
}

// AcquireOptions are the options of Session.Acquire.
type AcquireOptions struct {
	// Mode is Exclusive (the default) or Shared.
	Mode Mode
	// Wait is Forever (the default), NoWait or WaitFor(d).
	Wait Wait
	// Value is an opaque holder value shown by Describe and Watch.
	Value []byte
}

type acquireRequest struct {
	SessionID     uint64    `json:"session_id"`
	Name          string    `json:"name"`
	Mode          Mode      `json:"mode"`
	Wait          string    `json:"wait"`
	WaitTimeoutMs uint64    `json:"wait_timeout_ms,omitempty"`
	Request       requestID `json:"request"`
	Value         []byte    `json:"value,omitempty"`
}

type acquireResponse struct {
	Outcome string `json:"outcome"`
	Token   uint64 `json:"token"`
}

// Lock is a held lock. Pass Token to the protected resource with every write, and stop
// using the resource when Lost fires.
type Lock struct {
	s     *Session
	name  string
	token uint64
	mode  Mode

	mu       sync.Mutex
	released bool
}

// Name is the lock's name.
func (l *Lock) Name() string { return l.name }

// Token is the grant's fencing token: larger than every earlier grant's of any lock.
func (l *Lock) Token() uint64 { return l.token }

// Mode is the grant's mode.
func (l *Lock) Mode() Mode { return l.mode }

// Session is the holding session.
func (l *Lock) Session() *Session { return l.s }

// Lost is closed when the holding session is lost: from then on the cluster may give the
// lock to someone else, so stop using the resource.
func (l *Lock) Lost() <-chan struct{} { return l.s.Lost() }

// Valid reads the lease clock now: false once the holding session's lease ran out (even
// if the background watcher has not fired Lost yet, e.g. just after the process was
// stopped or the machine suspended).
func (l *Lock) Valid() bool { return l.s.Valid() }

// Release releases the lock. ErrNotHeld / ErrSessionNotFound mean it was already lost.
func (l *Lock) Release(ctx context.Context) error {
	l.mu.Lock()
	if l.released {
		l.mu.Unlock()
		return nil
	}
	l.released = true
	l.mu.Unlock()
	return l.s.Release(ctx, l.name, l.token)
}

// Release releases this session's grant of lock name with token (Lock.Release does this
// for a Lock). ErrNotHeld / ErrStaleToken when the session does not hold that grant.
func (s *Session) Release(ctx context.Context, name string, token uint64) error {
	id := s.begin()
	req := struct {
		SessionID uint64    `json:"session_id"`
		Name      string    `json:"name"`
		Token     uint64    `json:"token"`
		Request   requestID `json:"request"`
	}{s.id, name, token, id}
	err := s.c.call(ctx, bounded, "/v1/locks/release", req, nil)
	if answeredBy(err) {
		s.answered(id.Seq)
	}
	return err
}

// Lock takes lock name exclusively, waiting as long as it takes: until granted, the
// session is lost, or ctx is done. If ctx has a deadline, the cluster withdraws the wait
// when it passes (ErrTimedOut); a cancelled ctx closes the long poll, and the cluster
// withdraws the wait at once. Either way no waiter is left behind and no grant goes to a
// caller that gave up.
func (s *Session) Lock(ctx context.Context, name string) (*Lock, error) {
	return s.Acquire(ctx, name, AcquireOptions{})
}

// TryLock takes lock name exclusively if it is free, or answers ErrWouldBlock.
func (s *Session) TryLock(ctx context.Context, name string) (*Lock, error) {
	return s.Acquire(ctx, name, AcquireOptions{Wait: NoWait})
}

// Acquire takes lock name with options. It returns ErrWouldBlock (NoWait and the lock is
// taken), ErrTimedOut (the wait ran out; no waiter is left), ErrSessionLost, an *Error of
// the cluster, or ctx's error.
//
// A wait survives a change of leader: the retry on the new leader carries the same
// request id, which re-attaches to the queued wait. When ctx is done during a wait, or
// the outcome stays unknown, the acquire is settled in the background: the same request
// id is sent again with a 1 ms wait, and a grant that raced the cancel is released (if it
// cannot be settled, the session is closed, so no lock stays held unknowingly). A later
// acquire of the same name on this session waits for that settlement first.
func (s *Session) Acquire(ctx context.Context, name string, options AcquireOptions) (*Lock, error) {
	if err := s.waitSettled(ctx, name); err != nil {
		return nil, err
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	mode := options.Mode
	if mode == "" {
		mode = Exclusive
	}
	req := acquireRequest{SessionID: s.id, Name: name, Mode: mode, Wait: options.Wait.policy, Value: options.Value}
	switch options.Wait.policy {
	case "":
		req.Wait = "FOREVER"
		if deadline, ok := ctx.Deadline(); ok {
			left := time.Until(deadline)
			if left <= 0 {
				return nil, context.DeadlineExceeded
			}
			// Beyond the cluster's longest timed wait the context alone ends the wait.
			if left <= maxTimedWait {
				req.Wait = "TIMEOUT"
				req.WaitTimeoutMs = uint64(left/time.Millisecond) + 1
			}
		}
	case "TIMEOUT":
		req.WaitTimeoutMs = uint64(options.Wait.timeout / time.Millisecond)
	}
	kind := longPoll
	if req.Wait == "NO_WAIT" {
		kind = bounded
	}
	req.Request = s.begin()
	// The call ends with the session: a wait is pointless once the lease is lost.
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.lost:
			cancel()
		case <-callCtx.Done():
		}
	}()
	var resp acquireResponse
	err := s.c.call(callCtx, kind, "/v1/locks/acquire", req, &resp)
	if !answeredBy(err) {
		// Cancelled, or the outcome is unknown: settle it in the background.
		s.settle(req)
		if lost := s.Err(); lost != nil && ctx.Err() == nil {
			return nil, lost
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	s.answered(req.Request.Seq)
	if err != nil {
		return nil, err
	}
	switch resp.Outcome {
	case "GRANTED":
		return &Lock{s: s, name: name, token: resp.Token, mode: mode}, nil
	case "WOULD_BLOCK":
		return nil, ErrWouldBlock
	case "TIMED_OUT":
		return nil, ErrTimedOut
	default:
		return nil, &Error{Reason: ReasonInternal, Message: "unknown acquire outcome " + resp.Outcome}
	}
}

// waitSettled waits until no withdrawal of name is in progress on this session.
func (s *Session) waitSettled(ctx context.Context, name string) error {
	s.mu.Lock()
	done := s.settling[name]
	s.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// settle finds out in the background what became of an acquire whose answer did not
// arrive, and undoes it: the same request id again with a 1 ms wait (the cluster answers
// with what it decided, or withdraws a wait still queued), then a release of a grant.
func (s *Session) settle(req acquireRequest) {
	done := make(chan struct{})
	s.mu.Lock()
	s.settling[req.Name] = done
	s.mu.Unlock()
	go func() {
		defer func() {
			s.mu.Lock()
			delete(s.settling, req.Name)
			s.mu.Unlock()
			close(done)
		}()
		req.Wait, req.WaitTimeoutMs = "TIMEOUT", 1
		ctx, cancel := context.WithTimeout(context.Background(), s.c.cfg.RetryDeadline)
		defer cancel()
		for s.Err() == nil {
			var resp acquireResponse
			err := s.c.call(ctx, bounded, "/v1/locks/acquire", req, &resp)
			if answeredBy(err) {
				// An error here (e.g. SESSION_NOT_FOUND) leaves nothing to undo.
				s.answered(req.Request.Seq)
				if err == nil && resp.Outcome == "GRANTED" && s.Release(ctx, req.Name, resp.Token) != nil {
					_ = s.Close(ctx)
				}
				return
			}
			if ctx.Err() != nil {
				// Could not settle: end the session, so its grants and waits go with it.
				closeCtx, closeCancel := context.WithTimeout(context.Background(), s.c.cfg.RetryDeadline)
				_ = s.Close(closeCtx)
				closeCancel()
				return
			}
		}
	}()
}
