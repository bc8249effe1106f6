package fencelock

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Session is a lease on the cluster, renewed in the background, under which locks are
// held. When the lease is lost (Lost fires), every lock of the session must be treated
// as gone: the cluster releases them once it expires the session.
//
// The lease is counted on the client's clock from when each renewal was SENT, not
// answered, minus a safety margin: the cluster counts it from when the renewal reached
// the leader, which is later, so the client's deadline always passes first.
type Session struct {
	c      *Client
	id     uint64
	ttl    time.Duration
	margin time.Duration

	mu       sync.Mutex
	deadline time.Duration // on the lease clock (now()); the lease holds while now() < deadline
	nextSeq  uint64
	inflight map[uint64]struct{}
	settling map[string]chan struct{} // lock name → closed when a withdrawal is settled
	lostErr  error

	lost     chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
}

// keepalive answers the renewal loop reads.
type keepAliveResponse struct {
	SessionID uint64 `json:"session_id"`
	TTLMs     uint64 `json:"ttl_ms"`
}

// NewSession opens a session whose lease lasts ttl after each renewal, and starts
// renewing it every ttl/3 in the background.
func (c *Client) NewSession(ctx context.Context, ttl time.Duration) (*Session, error) {
	if ttl < time.Millisecond {
		return nil, &Error{Reason: ReasonInvalidTTL, Message: "ttl below 1 ms"}
	}
	req := struct {
		ClientID string `json:"client_id"`
		TTLMs    uint64 `json:"ttl_ms"`
	}{newUUID(), uint64(ttl / time.Millisecond)}
	var resp keepAliveResponse
	sent := now()
	// The client id makes retries open the same session.
	if err := c.call(ctx, bounded, "/v1/sessions/open", req, &resp); err != nil {
		return nil, err
	}
	granted := time.Duration(resp.TTLMs) * time.Millisecond
	margin := c.cfg.SafetyMargin
	if margin <= 0 {
		margin = granted / 10
		if margin < 100*time.Millisecond {
			margin = 100 * time.Millisecond
		}
	}
	if margin >= granted {
		margin = granted / 2
	}
	s := &Session{
		c:        c,
		id:       resp.SessionID,
		ttl:      granted,
		margin:   margin,
		deadline: sent + granted - margin,
		nextSeq:  1,
		inflight: map[uint64]struct{}{},
		settling: map[string]chan struct{}{},
		lost:     make(chan struct{}),
		stop:     make(chan struct{}),
	}
	go s.renew()
	go s.watchDeadline()
	return s, nil
}

// ID is the session's id on the cluster.
func (s *Session) ID() uint64 { return s.id }

// TTL is the lease the cluster granted.
func (s *Session) TTL() time.Duration { return s.ttl }

// Lost is closed when the session is lost: its lease ran out on the client's clock
// (before the cluster's, by the safety margin), the cluster no longer knows it, or it was
// closed. Err says which.
func (s *Session) Lost() <-chan struct{} { return s.lost }

// Err is nil while the session is live, and why it was lost after (it wraps
// ErrSessionLost).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lostErr
}

// Valid reports, reading the lease clock now rather than waiting for the background
// watcher, whether the lease still holds. Check it right before acting on the resource
// (and pass the token anyway: the resource's fence is the safe check).
func (s *Session) Valid() bool {
	s.mu.Lock()
	expired := now() >= s.deadline
	s.mu.Unlock()
	if expired {
		s.markLost(errLeaseExpired)
	}
	return s.Err() == nil
}

// Remaining is how long the lease holds on the client's clock without another renewal.
func (s *Session) Remaining() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lostErr != nil {
		return 0
	}
	if r := s.deadline - now(); r > 0 {
		return r
	}
	return 0
}

var (
	errLeaseExpired = wrapLost("the lease ran out on the client's clock")
	errNotFound     = wrapLost("the cluster no longer knows the session")
	errClosed       = wrapLost("closed")
)

type lostError struct{ why string }

func (e *lostError) Error() string        { return "fencelock: the session is lost: " + e.why }
func (e *lostError) Is(target error) bool { return target == ErrSessionLost }

func wrapLost(why string) error { return &lostError{why} }

func (s *Session) markLost(why error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lostErr != nil {
		return
	}
	s.lostErr = why
	close(s.lost)
	s.stopRenewals()
}

func (s *Session) stopRenewals() { s.stopOnce.Do(func() { close(s.stop) }) }

// StopRenewals stops renewing the lease without closing the session, as a hung process
// would: Lost fires when the lease runs out on the client's clock, and the cluster then
// expires the session and releases its locks. Use it to rehearse that case.
func (s *Session) StopRenewals() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopRenewals()
}

// renew sends a renewal every ttl/3 (sooner after a failed one) until stopped.
func (s *Session) renew() {
	interval := s.ttl / 3
	wait := interval
	for {
		select {
		case <-s.stop:
			return
		case <-time.After(wait):
		}
		sent := now()
		ctx, cancel := context.WithTimeout(context.Background(), s.Remaining()+s.margin)
		var resp keepAliveResponse
		err := s.c.call(ctx, bounded, "/v1/sessions/keepalive", map[string]uint64{"session_id": s.id}, &resp)
		cancel()
		select {
		case <-s.stop:
			return
		default:
		}
		switch {
		case err == nil:
			s.mu.Lock()
			if d := sent + time.Duration(resp.TTLMs)*time.Millisecond - s.margin; d > s.deadline && s.lostErr == nil {
				s.deadline = d
			}
			s.mu.Unlock()
			wait = interval
		case errors.Is(err, ErrSessionNotFound):
			s.markLost(errNotFound)
			return
		default:
			// Unrenewed: try again soon; the deadline watcher fires Lost if it runs out.
			wait = interval / 4
		}
	}
}

// watchDeadline fires Lost when the lease clock passes the deadline. It sleeps at most
// clockPoll at a time, so a deadline passed during a suspend is seen soon after waking.
func (s *Session) watchDeadline() {
	for {
		s.mu.Lock()
		remaining := s.deadline - now()
		gone := s.lostErr != nil
		s.mu.Unlock()
		if gone {
			return
		}
		if remaining <= 0 {
			s.markLost(errLeaseExpired)
			return
		}
		if remaining > clockPoll {
			remaining = clockPoll
		}
		select {
		case <-s.lost:
			return
		case <-time.After(remaining):
		}
	}
}

// Close ends the session: the cluster releases its locks and drops its waits.
func (s *Session) Close(ctx context.Context) error {
	s.StopRenewals()
	err := s.c.call(ctx, bounded, "/v1/sessions/close", map[string]uint64{"session_id": s.id}, nil)
	if err == nil || errors.Is(err, ErrSessionNotFound) {
		s.markLost(errClosed)
		return nil
	}
	return err
}

// requestID is a mutation's id for exactly-once application (docs/http-api.md,
// "Request ids").
type requestID struct {
	Seq                uint64 `json:"seq"`
	FirstUnansweredSeq uint64 `json:"first_unanswered_seq"`
}

// begin numbers a new request of the session.
func (s *Session) begin() requestID {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := s.nextSeq
	s.nextSeq++
	s.inflight[seq] = struct{}{}
	first := seq
	for q := range s.inflight {
		if q < first {
			first = q
		}
	}
	return requestID{Seq: seq, FirstUnansweredSeq: first}
}

// answered records that the answer of seq arrived: the cluster may forget it.
func (s *Session) answered(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.inflight, seq)
}
