"""fencelock: the Python client of the fencelock lock service.

A binding of the Rust client (``fencelock-client``): keepalives, send-time lease
accounting, leader redirects, retries with request ids and cancel-safe waits are the
same code as the Rust client's.

::

    import fencelock

    client = fencelock.Client(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"])
    with client.lock("jobs/billing", ttl=10) as lock:
        write_with_token(lock.token)      # the resource refuses older tokens
        if lock.lost.is_set():            # the lease ran out: stop
            ...

The asyncio API is in :mod:`fencelock.aio`; exceptions in :mod:`fencelock.errors`;
the one-statement SQL fence in :mod:`fencelock.fence`.
"""

from . import errors, fence
from ._ops import LostSignal
from ._sync import Client, Election, Leadership, Lock, Session, Watch
from ._types import (
    ClusterStatus,
    Holder,
    Leader,
    LockInfo,
    Member,
    Verification,
    WatchEvent,
    Waiter,
)
from .aio import AsyncClient, AsyncElection, AsyncLeadership, AsyncLock, AsyncSession, AsyncWatch
from .errors import (
    FencelockError,
    ForkedError,
    LockHeld,
    LockTimeout,
    NotHeld,
    NotLeader,
    PermissionDenied,
    SessionExpired,
    SessionLost,
    StaleToken,
    WouldBlock,
)
from .fence import fenced_update

__all__ = [
    "AsyncClient",
    "AsyncElection",
    "AsyncLeadership",
    "AsyncLock",
    "AsyncSession",
    "AsyncWatch",
    "Client",
    "ClusterStatus",
    "Election",
    "FencelockError",
    "ForkedError",
    "Holder",
    "Leader",
    "Leadership",
    "Lock",
    "LockHeld",
    "LockInfo",
    "LockTimeout",
    "LostSignal",
    "Member",
    "NotHeld",
    "NotLeader",
    "PermissionDenied",
    "Session",
    "SessionExpired",
    "SessionLost",
    "StaleToken",
    "Verification",
    "Waiter",
    "Watch",
    "WatchEvent",
    "WouldBlock",
    "errors",
    "fence",
    "fenced_update",
]
