"""Plain data the client hands out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional


@dataclass(frozen=True)
class Holder:
    """One holder of a lock."""

    session_id: int
    #: Its grant's fencing token.
    token: int
    #: ``"exclusive"`` or ``"shared"``.
    mode: str
    #: The holder value given when acquiring.
    value: bytes
    #: The session's client id (a UUID string), when valid.
    client_id: Optional[str]


@dataclass(frozen=True)
class Waiter:
    """One queued waiter of a lock."""

    session_id: int
    mode: str


@dataclass(frozen=True)
class LockInfo:
    """A lock's holders (in token order) and its FIFO queue of waiters."""

    name: str
    holders: List[Holder] = field(default_factory=list)
    waiters: List[Waiter] = field(default_factory=list)

    @classmethod
    def _from(cls, d: Mapping[str, Any]) -> "LockInfo":
        return cls(
            name=d["name"],
            holders=[Holder(**h) for h in d["holders"]],
            waiters=[Waiter(**w) for w in d["waiters"]],
        )


@dataclass(frozen=True)
class Verification:
    """Whether a token is a current grant of a lock."""

    current: bool
    #: The largest token among the current holders (None when free).
    current_token: Optional[int]


@dataclass(frozen=True)
class Member:
    """A cluster member."""

    id: int
    peer_addr: str
    client_addr: Optional[str]
    voter: bool


@dataclass(frozen=True)
class ClusterStatus:
    """One node's view of the cluster."""

    node_id: int
    leader_id: Optional[int]
    leader_addr: Optional[str]
    term: int
    commit_index: int
    applied_index: int
    members: List[Member]
    state: str
    sessions: int
    locks: int
    last_token: int

    @classmethod
    def _from(cls, d: Mapping[str, Any]) -> "ClusterStatus":
        fields = dict(d)
        fields["members"] = [Member(**m) for m in d["members"]]
        return cls(**fields)


@dataclass(frozen=True)
class WatchEvent:
    """A change to a watched lock, as the cluster applied it.

    ``kind`` is one of ``"acquired"``, ``"released"``, ``"expired"`` (its holder's
    session expired), ``"forced"`` (an admin force-released it), ``"session_closed"``,
    ``"revoked"``, ``"lock_delay_started"`` / ``"lock_delay_ended"`` (nobody is granted
    the lock for ``delay`` seconds after its holder's lease was lost),
    ``"value_changed"`` (a holder proclaimed a new ``value``), or ``"resync"``: events may
    have been missed (the stream started, reconnected or fell behind), so re-read the
    state with ``describe``/``list``; events after it follow ``revision``.
    """

    kind: str
    #: The log index of the change.
    revision: int
    #: The lock (None for resync).
    name: Optional[str] = None
    session_id: Optional[int] = None
    token: Optional[int] = None
    #: For ``acquired``: ``"exclusive"`` or ``"shared"``.
    mode: Optional[str] = None
    #: For ``acquired`` and ``value_changed``: the holder value.
    value: Optional[bytes] = None
    #: For ``lock_delay_started``: the delay, in seconds.
    delay: Optional[float] = None


@dataclass(frozen=True)
class Leader:
    """The leader of an election as observers see it."""

    session_id: int
    #: Its grant's fencing token: larger for every later leader.
    token: int
    #: The value it campaigned with.
    value: bytes


def _leader(d: Optional[Mapping[str, Any]]) -> Optional[Leader]:
    return None if d is None else Leader(**d)
