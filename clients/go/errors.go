package fencelock

import (
	"errors"
	"fmt"
)

// Reason is the machine-readable reason of an error the cluster returns: the gRPC API's
// ErrorDetail reason without its ERROR_REASON_ prefix (docs/http-api.md).
type Reason string

// The reasons the cluster gives. A reason this list does not name is to be treated like
// ReasonInternal.
const (
	ReasonNotLeader           Reason = "NOT_LEADER"
	ReasonNoLeader            Reason = "NO_LEADER"
	ReasonSessionNotFound     Reason = "SESSION_NOT_FOUND"
	ReasonInvalidName         Reason = "INVALID_NAME"
	ReasonInvalidTTL          Reason = "INVALID_TTL"
	ReasonValueTooLarge       Reason = "VALUE_TOO_LARGE"
	ReasonNotHeld             Reason = "NOT_HELD"
	ReasonStaleToken          Reason = "STALE_TOKEN"
	ReasonAlreadyHeldOrQueued Reason = "ALREADY_HELD_OR_QUEUED"
	ReasonLimitReached        Reason = "LIMIT_REACHED"
	ReasonRequestTooOld       Reason = "REQUEST_TOO_OLD"
	ReasonTokenOverflow       Reason = "TOKEN_OVERFLOW"
	ReasonInvalidArgument     Reason = "INVALID_ARGUMENT"
	ReasonUnavailable         Reason = "UNAVAILABLE"
	ReasonMembership          Reason = "MEMBERSHIP"
	ReasonInternal            Reason = "INTERNAL"
	ReasonNotWaiting          Reason = "NOT_WAITING"
	ReasonUnauthenticated     Reason = "UNAUTHENTICATED"
	ReasonPermissionDenied    Reason = "PERMISSION_DENIED"
	ReasonAuth                Reason = "AUTH"
	ReasonNoSpace             Reason = "NO_SPACE"
	ReasonNotFound            Reason = "NOT_FOUND"
	ReasonMethodNotAllowed    Reason = "METHOD_NOT_ALLOWED"
)

// Sentinel errors, one per reason, for errors.Is: an *Error matches the sentinel of its
// reason, e.g. errors.Is(err, fencelock.ErrNotHeld).
var (
	ErrNotLeader           = &Error{Reason: ReasonNotLeader}
	ErrNoLeader            = &Error{Reason: ReasonNoLeader}
	ErrSessionNotFound     = &Error{Reason: ReasonSessionNotFound}
	ErrInvalidName         = &Error{Reason: ReasonInvalidName}
	ErrInvalidTTL          = &Error{Reason: ReasonInvalidTTL}
	ErrValueTooLarge       = &Error{Reason: ReasonValueTooLarge}
	ErrNotHeld             = &Error{Reason: ReasonNotHeld}
	ErrStaleToken          = &Error{Reason: ReasonStaleToken}
	ErrAlreadyHeldOrQueued = &Error{Reason: ReasonAlreadyHeldOrQueued}
	ErrLimitReached        = &Error{Reason: ReasonLimitReached}
	ErrRequestTooOld       = &Error{Reason: ReasonRequestTooOld}
	ErrTokenOverflow       = &Error{Reason: ReasonTokenOverflow}
	ErrInvalidArgument     = &Error{Reason: ReasonInvalidArgument}
	ErrUnavailable         = &Error{Reason: ReasonUnavailable}
	ErrMembership          = &Error{Reason: ReasonMembership}
	ErrInternal            = &Error{Reason: ReasonInternal}
	ErrNotWaiting          = &Error{Reason: ReasonNotWaiting}
	ErrUnauthenticated     = &Error{Reason: ReasonUnauthenticated}
	ErrPermissionDenied    = &Error{Reason: ReasonPermissionDenied}
	ErrAuth                = &Error{Reason: ReasonAuth}
	ErrNoSpace             = &Error{Reason: ReasonNoSpace}
)

// Outcomes of an acquire that are not grants, and the client's own conditions.
var (
	// ErrWouldBlock: a try-lock found the lock taken.
	ErrWouldBlock = errors.New("fencelock: the lock is taken")
	// ErrTimedOut: a wait ran out and the cluster withdrew it (no waiter is left behind).
	ErrTimedOut = errors.New("fencelock: the wait timed out")
	// ErrSessionLost: the session's lease ran out on the client's clock, the cluster
	// no longer knows it, or it was closed.
	ErrSessionLost = errors.New("fencelock: the session is lost")
)

// Error is an error answer of the cluster (docs/http-api.md, "Errors").
type Error struct {
	// Status is the HTTP status code (0 for a sentinel).
	Status int `json:"-"`
	// Reason is the machine-readable reason.
	Reason Reason `json:"reason"`
	// Message is for people.
	Message string `json:"message,omitempty"`
	// Leader is the leader's client address, on NOT_LEADER when known.
	Leader string `json:"leader,omitempty"`
	// LeaderID is the leader's node id, on NOT_LEADER when known.
	LeaderID uint64 `json:"leader_id,omitempty"`
	// Limit names the limit, on LIMIT_REACHED.
	Limit string `json:"limit,omitempty"`
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("fencelock: %s", e.Reason)
	}
	return fmt.Sprintf("fencelock: %s: %s", e.Reason, e.Message)
}

// Is reports whether target is an *Error of the same reason (the sentinels above).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == e.Reason
}

// transient reports whether a call may be retried elsewhere or later: the node was not
// the leader, no leader was known, or the outcome is unknown (a retry with the same
// request id acts at most once).
func (e *Error) transient() bool {
	switch e.Reason {
	case ReasonNotLeader, ReasonNoLeader, ReasonUnavailable:
		return true
	}
	return false
}

// answeredBy reports whether err (nil included) is the cluster's definite answer to a
// request: a success or an error that is not transient. After any other error the
// request may or may not have acted.
func answeredBy(err error) bool {
	var apiErr *Error
	return err == nil || (errors.As(err, &apiErr) && !apiErr.transient())
}
