"""The asyncio API: :class:`AsyncClient` and friends, the same calls as the blocking API
awaited on the running loop. Cancelling a task that waits for a lock withdraws the wait
on the server (the Rust client's cancel safety).

::

    client = await AsyncClient.connect(["127.0.0.1:7001"])
    async with client.lock("jobs/x", ttl=10) as lock:
        await write(lock.token)
"""

from __future__ import annotations

import os
from typing import Any, AsyncIterator, Generator, List, Optional, Sequence

from . import _native
from ._ops import LostSignal, PathOrPem, acquired, connect_options, wait_async
from ._types import ClusterStatus, Leader, LockInfo, Verification, WatchEvent, _leader
from .errors import FencelockError, WouldBlock


class AsyncLock:
    """A held lock (see :class:`fencelock.Lock`); ``async with`` releases it on exit.
    ``await lock.lost`` resolves when the holding session's lease is lost."""

    def __init__(self, native: _native.Lock, session: Optional["AsyncSession"] = None) -> None:
        self._native = native
        self._own_session = session
        self.lost = LostSignal(native.lost(), native.is_lost)
        """:class:`~fencelock.LostSignal` of the holding session (awaitable)."""

    @property
    def name(self) -> str:
        """The lock's name."""
        return self._native.name

    @property
    def token(self) -> int:
        """The grant's fencing token."""
        return self._native.token

    @property
    def shared(self) -> bool:
        """Whether this is a shared (reader) grant."""
        return self._native.shared

    @property
    def session_id(self) -> int:
        """The holding session's id."""
        return self._native.session_id

    async def release(self) -> None:
        """Release the lock (and close its own session, if it has one)."""
        try:
            if not self._native.released():
                await wait_async(self._native.release())
        finally:
            if self._own_session is not None:
                await self._own_session._close_quietly()

    async def __aenter__(self) -> "AsyncLock":
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.release()
        except FencelockError:
            if not self.lost.is_set() and exc[0] is None:
                raise

    def __repr__(self) -> str:
        return f"AsyncLock(name={self.name!r}, token={self.token}, session_id={self.session_id})"


class AsyncLeadership(AsyncLock):
    """Held leadership of an election (see :class:`fencelock.Leadership`)."""

    async def resign(self) -> None:
        """Step down; the next campaigner leads."""
        await self.release()


class _Acquiring:
    """What :meth:`AsyncClient.lock` returns: await it for the lock, or use it in
    ``async with`` (the lock is released on exit)."""

    def __init__(self, acquire: Any) -> None:
        self._acquire = acquire
        self._lock: Optional[AsyncLock] = None

    def __await__(self) -> Generator[Any, None, AsyncLock]:
        return self._acquire().__await__()

    async def __aenter__(self) -> AsyncLock:
        self._lock = await self._acquire()
        return self._lock

    async def __aexit__(self, *exc: object) -> None:
        assert self._lock is not None
        await self._lock.__aexit__(*exc)


class AsyncSession:
    """A session (see :class:`fencelock.Session`); ``async with`` closes it on exit."""

    def __init__(self, native: _native.Session) -> None:
        self._native = native
        self.lost = LostSignal(native.lost(), native.is_lost)
        """:class:`~fencelock.LostSignal` of the lease (awaitable)."""

    @property
    def id(self) -> int:
        """The session id."""
        return self._native.id

    @property
    def ttl(self) -> float:
        """The TTL the server granted, in seconds."""
        return self._native.ttl

    def lease_remaining(self) -> float:
        """Seconds the client-side lease has left unless a newer keepalive is answered."""
        return self._native.lease_remaining()

    def stop_keepalive(self) -> None:
        """Stop renewing the lease without closing the session (see
        :meth:`fencelock.Session.stop_keepalive`)."""
        self._native.stop_keepalive()

    async def lock(
        self,
        name: str,
        *,
        timeout: Optional[float] = None,
        blocking: bool = True,
        shared: bool = False,
        value: Optional[bytes] = None,
    ) -> AsyncLock:
        """Take lock `name` (waits as :meth:`fencelock.Session.lock` does); cancelling
        the task withdraws the wait."""
        op = self._native.acquire(name, shared, blocking, timeout, value)
        return AsyncLock(acquired(await wait_async(op), name, timeout))

    async def try_lock(
        self, name: str, *, shared: bool = False, value: Optional[bytes] = None
    ) -> Optional[AsyncLock]:
        """Take lock `name` if it is free; None if it is held."""
        try:
            return await self.lock(name, blocking=False, shared=shared, value=value)
        except WouldBlock:
            return None

    async def close(self) -> None:
        """End the session (its locks are released, its waits dropped)."""
        await wait_async(self._native.close())

    async def _close_quietly(self) -> None:
        try:
            await self.close()
        except FencelockError:
            pass

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close_quietly()


class AsyncWatch:
    """An async iterator of :class:`~fencelock.WatchEvent`; ``close()`` ends it."""

    def __init__(self, native: _native.Stream) -> None:
        self._native = native

    def __aiter__(self) -> "AsyncWatch":
        return self

    async def __anext__(self) -> WatchEvent:
        more, event = await wait_async(self._native.next())
        if not more:
            raise StopAsyncIteration
        return WatchEvent(**event)

    def close(self) -> None:
        """End the watch."""
        self._native.close()


class AsyncElection:
    """Leader election on lock `name` (see :class:`fencelock.Election`)."""

    def __init__(self, client: "AsyncClient", name: str, ttl: float) -> None:
        self._client = client
        self.name = name
        self.ttl = ttl

    async def campaign(self, value: bytes = b"") -> AsyncLeadership:
        """Wait until leading, announcing `value`; on a session of its own."""
        session = await self._client.session(self.ttl)
        try:
            native = await wait_async(session._native.campaign(self.name, value))
        except BaseException:
            await session._close_quietly()
            raise
        return AsyncLeadership(native, session)

    async def leader(self) -> Optional[Leader]:
        """Who leads now (None when no one does)."""
        return _leader(await wait_async(self._client._client().leader(self.name)))

    async def observe(self) -> AsyncIterator[Optional[Leader]]:
        """The leaders, the current one first, then every change."""
        stream = self._client._client().observe(self.name)
        try:
            while True:
                more, item = await wait_async(stream.next())
                if not more:
                    return
                yield _leader(item)
        finally:
            stream.close()


class AsyncClient:
    """A connection to a fencelock cluster for asyncio; make one with
    ``await AsyncClient.connect(endpoints, ...)`` (the options of
    :class:`fencelock.Client`). Safe across ``fork()`` as :class:`fencelock.Client` is,
    except that a child reconnects with ``await client.reconnect()`` (a constructor
    cannot await)."""

    def __init__(self, endpoints: List[str], options: Any, native: _native.Client) -> None:
        self._endpoints = endpoints
        self._options = options
        self._native = native
        self._pid = os.getpid()

    @classmethod
    async def connect(
        cls,
        endpoints: Sequence[str],
        *,
        connect_timeout: Optional[float] = None,
        call_timeout: Optional[float] = None,
        retry_deadline: Optional[float] = None,
        keepalive_safety_margin: Optional[float] = None,
        keepalive_interval: Optional[float] = None,
        withdraw_deadline: Optional[float] = None,
        tls_ca: Optional[PathOrPem] = None,
        tls_cert: Optional[PathOrPem] = None,
        tls_key: Optional[PathOrPem] = None,
        tls_domain: Optional[str] = None,
        user: Optional[str] = None,
        password: Optional[str] = None,
        bearer: Optional[str] = None,
    ) -> "AsyncClient":
        """Connect to the cluster (any node's address will do)."""
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        options = connect_options(
            connect_timeout,
            call_timeout,
            retry_deadline,
            keepalive_safety_margin,
            keepalive_interval,
            withdraw_deadline,
            tls_ca,
            tls_cert,
            tls_key,
            tls_domain,
            user,
            password,
            bearer,
        )
        native = await wait_async(_native.connect(list(endpoints), **options))
        return cls(list(endpoints), options, native)

    async def reconnect(self) -> None:
        """Connect again if this is a forked child of the process that connected."""
        if self._pid != os.getpid():
            self._native = await wait_async(_native.connect(self._endpoints, **self._options))
            self._pid = os.getpid()

    def _client(self) -> _native.Client:
        if self._pid != os.getpid():
            from .errors import ForkedError

            raise ForkedError("await client.reconnect() in a forked child first")
        return self._native

    async def session(
        self,
        ttl: float = 10.0,
        *,
        keepalive_interval: Optional[float] = None,
        safety_margin: Optional[float] = None,
    ) -> AsyncSession:
        """Open a session with a lease of `ttl` seconds."""
        op = self._client().session(ttl, keepalive_interval, safety_margin)
        return AsyncSession(await wait_async(op))

    def lock(
        self,
        name: str,
        ttl: float = 10.0,
        *,
        timeout: Optional[float] = None,
        blocking: bool = True,
        shared: bool = False,
        value: Optional[bytes] = None,
    ) -> _Acquiring:
        """Take lock `name` on a session of its own (closed with the lock)::

            async with client.lock("jobs/x", ttl=10) as lock: ...
            lock = await client.lock("jobs/x", timeout=5)
        """

        async def acquire() -> AsyncLock:
            session = await self.session(ttl)
            try:
                op = session._native.acquire(name, shared, blocking, timeout, value)
                native = acquired(await wait_async(op), name, timeout)
            except BaseException:
                await session._close_quietly()
                raise
            return AsyncLock(native, session)

        return _Acquiring(acquire)

    async def try_lock(
        self,
        name: str,
        ttl: float = 10.0,
        *,
        shared: bool = False,
        value: Optional[bytes] = None,
    ) -> Optional[AsyncLock]:
        """:meth:`lock` without waiting: None if the lock is held."""
        try:
            return await self.lock(name, ttl, blocking=False, shared=shared, value=value)
        except WouldBlock:
            return None

    async def describe(self, name: str) -> Optional[LockInfo]:
        """Who holds and waits for lock `name` (None when no one does)."""
        info, _revision = await wait_async(self._client().describe(name))
        return None if info is None else LockInfo._from(info)

    async def list(self, prefix: str = "", limit: int = 1000) -> List[LockInfo]:
        """The locks whose names start with `prefix`, at most `limit`."""
        return [LockInfo._from(d) for d in await wait_async(self._client().list(prefix, limit))]

    async def verify(self, name: str, token: int) -> Verification:
        """Whether `token` is a current grant of lock `name`."""
        current, current_token = await wait_async(self._client().verify(name, token))
        return Verification(current, current_token)

    async def status(self) -> ClusterStatus:
        """A node's view of the cluster."""
        return ClusterStatus._from(await wait_async(self._client().status()))

    async def force_release(self, name: str) -> int:
        """Release every grant of lock `name`; returns how many."""
        return await wait_async(self._client().force_release(name))

    def watch(self, name: str, *, prefix: bool = False) -> AsyncWatch:
        """Watch lock `name` (every lock starting with it, with `prefix`)."""
        return AsyncWatch(self._client().watch(name, prefix))

    def election(self, name: str, ttl: float = 10.0) -> AsyncElection:
        """Leader election on lock `name`."""
        return AsyncElection(self, name, ttl)
