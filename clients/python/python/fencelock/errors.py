"""The exceptions of fencelock: one class per reason the server or the client gives.

Every exception derives from :class:`FencelockError`. ``reason`` is the name of the
server's ``ErrorDetail`` reason (``fencelock.proto``'s ``ErrorReason`` without its
``ERROR_REASON_`` prefix), or of the client's own reason (``SESSION_LOST``, ``TIMEOUT``,
``WOULD_BLOCK``, ...). Transient failures (no leader, node unreachable) are retried by
the client until its retry deadline; only then do they reach the caller, with
``transient`` true.
"""

from __future__ import annotations

from typing import Any, Optional


class FencelockError(Exception):
    """Base class of every fencelock error."""

    reason: str = "UNSPECIFIED"
    #: Whether the same call may succeed later (the cluster was unreachable or leaderless).
    transient: bool = False

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        for key, value in details.items():
            setattr(self, key, value)


class NotLeader(FencelockError):
    """A node answered "not the leader" and the retries ran out before the leader was
    reached. ``leader_addr`` is the leader's client address when the node knew it."""

    reason = "NOT_LEADER"
    transient = True
    leader_addr: Optional[str] = None


class NoLeader(FencelockError):
    """No node knew a leader with a quorum before the retries ran out."""

    reason = "NO_LEADER"
    transient = True


class Unavailable(FencelockError):
    """The cluster could not be reached, or answered "unavailable", until the retries ran
    out. ``outcome_unknown`` is true when a mutation may have been applied."""

    reason = "UNAVAILABLE"
    transient = True
    outcome_unknown: bool = True


class Timeout(FencelockError, TimeoutError):
    """The call's deadline passed without an answer (``elapsed`` seconds;
    ``outcome_unknown`` as for :class:`Unavailable`)."""

    reason = "TIMEOUT"
    transient = True
    outcome_unknown: bool = True
    elapsed: float = 0.0


class SessionNotFound(FencelockError):
    """The session does not exist on the server (closed or expired); it never comes back."""

    reason = "SESSION_NOT_FOUND"


class SessionLost(FencelockError):
    """The session's lease ran out on the client's clock (or it was closed); the client
    refuses to act for it. ``lost_reason`` is ``"lease_expired"``,
    ``"session_not_found"`` or ``"closed"``."""

    reason = "SESSION_LOST"
    lost_reason: Optional[str] = None


# The server's session-level refusal and the client's are the same fact to a caller.
SessionExpired = SessionLost


class InvalidName(FencelockError, ValueError):
    """The lock name is empty, too long or has control characters."""

    reason = "INVALID_NAME"


class InvalidTtl(FencelockError, ValueError):
    """The TTL is outside the server's allowed range."""

    reason = "INVALID_TTL"


class ValueTooLarge(FencelockError, ValueError):
    """The holder value is larger than the server allows."""

    reason = "VALUE_TOO_LARGE"


class NotHeld(FencelockError):
    """The session does not hold the lock (it expired, was closed or force-released)."""

    reason = "NOT_HELD"


class StaleToken(FencelockError):
    """The token is not the session's current grant of the lock."""

    reason = "STALE_TOKEN"


class AlreadyHeldOrQueued(FencelockError):
    """The session already holds or waits for the lock."""

    reason = "ALREADY_HELD_OR_QUEUED"


class LimitReached(FencelockError):
    """A configured server limit was reached; ``limit`` names it ("sessions", "locks",
    "waiters per lock", ...)."""

    reason = "LIMIT_REACHED"
    limit: str = ""


class RequestTooOld(FencelockError):
    """The request id was already forgotten by the server (a retry came too late)."""

    reason = "REQUEST_TOO_OLD"


class TokenOverflow(FencelockError):
    """The fencing-token counter would overflow."""

    reason = "TOKEN_OVERFLOW"


class NotWaiting(FencelockError):
    """The session was not waiting for the lock."""

    reason = "NOT_WAITING"


class InvalidArgument(FencelockError, ValueError):
    """A malformed argument (bad mode, wait timeout, client id, endpoint, ...)."""

    reason = "INVALID_ARGUMENT"


class MembershipError(FencelockError):
    """A membership change was refused."""

    reason = "MEMBERSHIP"


class InternalError(FencelockError):
    """The server reported an internal error."""

    reason = "INTERNAL"


class Unauthenticated(FencelockError):
    """Auth is on and the call carried no credentials, an unknown user, a wrong password
    or an unknown bearer token."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(FencelockError, PermissionError):
    """The user lacks the right needed on this lock-name prefix, or acted on another
    user's session."""

    reason = "PERMISSION_DENIED"


class AuthError(FencelockError):
    """An auth administration command was refused."""

    reason = "AUTH"


class NoSpace(FencelockError):
    """The leader's data disk is full: it refuses writes that add state. Nothing was
    applied; the same call succeeds once the operator frees space."""

    reason = "NO_SPACE"


class ConfigError(FencelockError, ValueError):
    """The client was configured wrongly (no endpoints, a bad URI, unreadable TLS files)."""

    reason = "CONFIG"


class StatusError(FencelockError):
    """Any other gRPC status the server or the transport answered (``code``)."""

    reason = "STATUS"
    code: str = ""


class WouldBlock(FencelockError):
    """The lock is held by someone else and the call was not to wait for it."""

    reason = "WOULD_BLOCK"


#: The same exception under the name other lock libraries use.
LockHeld = WouldBlock


class LockTimeout(WouldBlock, TimeoutError):
    """The wait for the lock ran out; the cluster withdrew the wait (no grant was made
    and no waiter is left behind)."""

    reason = "LOCK_TIMEOUT"


class Cancelled(FencelockError):
    """The operation was cancelled (its wait withdrawn)."""

    reason = "CANCELLED"


class ForkedError(FencelockError):
    """An object made before ``fork()`` was used in the child process. Sessions and
    locks belong to the process that made them; a :class:`fencelock.Client` reconnects
    by itself in a child."""

    reason = "FORKED"


__all__ = [
    "AlreadyHeldOrQueued",
    "AuthError",
    "Cancelled",
    "ConfigError",
    "FencelockError",
    "ForkedError",
    "InternalError",
    "InvalidArgument",
    "InvalidName",
    "InvalidTtl",
    "LimitReached",
    "LockHeld",
    "LockTimeout",
    "MembershipError",
    "NoLeader",
    "NoSpace",
    "NotHeld",
    "NotLeader",
    "NotWaiting",
    "PermissionDenied",
    "RequestTooOld",
    "SessionExpired",
    "SessionLost",
    "SessionNotFound",
    "StaleToken",
    "StatusError",
    "Timeout",
    "TokenOverflow",
    "Unauthenticated",
    "Unavailable",
    "ValueTooLarge",
    "WouldBlock",
]
