"""The blocking API: :class:`Client`, :class:`Session`, :class:`Lock`, watches and
elections. Every call runs on the Rust client (on a runtime of its own threads) while
the calling thread waits with the GIL released."""

from __future__ import annotations

import os
from typing import Iterator, List, Optional, Sequence

from . import _native
from ._ops import LostSignal, PathOrPem, acquired, connect_options, wait
from ._types import ClusterStatus, Leader, LockInfo, Verification, WatchEvent, _leader
from .errors import FencelockError, WouldBlock


class Lock:
    """A held lock. Send :attr:`token` with every write to the protected resource, and
    stop when :attr:`lost` fires.

    A context manager: leaving the ``with`` block releases the lock (and ends the
    session that :meth:`Client.lock` opened for it). A lock dropped without release is
    released in the background.
    """

    def __init__(self, native: _native.Lock, session: Optional["Session"] = None) -> None:
        self._native = native
        # The session opened for this lock alone, closed with it.
        self._own_session = session
        self.lost = LostSignal(native.lost(), native.is_lost)
        """:class:`LostSignal` of the holding session."""

    @property
    def name(self) -> str:
        """The lock's name."""
        return self._native.name

    @property
    def token(self) -> int:
        """The grant's fencing token: larger than every earlier grant of the lock."""
        return self._native.token

    @property
    def shared(self) -> bool:
        """Whether this is a shared (reader) grant."""
        return self._native.shared

    @property
    def session_id(self) -> int:
        """The holding session's id."""
        return self._native.session_id

    def release(self) -> None:
        """Release the lock (and close its own session, if :meth:`Client.lock` opened
        one). Raises :class:`~fencelock.errors.NotHeld` /
        :class:`~fencelock.errors.SessionLost` when the lock was lost already."""
        try:
            if not self._native.released():
                wait(self._native.release())
        finally:
            if self._own_session is not None:
                self._own_session._close_quietly()

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.release()
        except FencelockError:
            # A lock whose lease was lost is gone anyway, and the block was told by
            # `lost`; an error of the block itself goes on.
            if not self.lost.is_set() and exc[0] is None:
                raise

    def __repr__(self) -> str:
        return f"Lock(name={self.name!r}, token={self.token}, session_id={self.session_id})"


class Session:
    """A lease kept alive in the background by the Rust client (one keepalive stream per
    client), with send-time lease accounting: :attr:`lost` fires before the server
    could expire the session. Locks taken with it last as long as it does.

    A context manager: leaving the ``with`` block closes the session (releasing its
    locks).
    """

    def __init__(self, native: _native.Session) -> None:
        self._native = native
        self.lost = LostSignal(native.lost(), native.is_lost)
        """:class:`LostSignal` of the lease."""

    @property
    def id(self) -> int:
        """The session id the cluster assigned."""
        return self._native.id

    @property
    def ttl(self) -> float:
        """The TTL the server granted, in seconds."""
        return self._native.ttl

    @property
    def client_id(self) -> str:
        """The client id (a UUID) the session was opened with."""
        return self._native.client_id

    def lease_remaining(self) -> float:
        """Seconds the client-side lease has left unless a newer keepalive is answered."""
        return self._native.lease_remaining()

    def stop_keepalive(self) -> None:
        """Stop renewing the lease without closing the session, as a hung process
        would: :attr:`lost` fires, then the cluster expires the session (its locks stay
        held until then)."""
        self._native.stop_keepalive()

    def lock(
        self,
        name: str,
        *,
        timeout: Optional[float] = None,
        blocking: bool = True,
        shared: bool = False,
        value: Optional[bytes] = None,
    ) -> Lock:
        """Take lock `name`, waiting for it as long as it takes, or at most `timeout`
        seconds (:class:`~fencelock.errors.LockTimeout` then; the wait is withdrawn), or
        not at all with ``blocking=False`` (:class:`~fencelock.errors.WouldBlock`).
        `shared` takes a reader grant; `value` is shown to ``describe`` and watchers.
        Ctrl-C during the wait withdraws it."""
        op = self._native.acquire(name, shared, blocking, timeout, value)
        return Lock(acquired(wait(op), name, timeout))

    def try_lock(
        self, name: str, *, shared: bool = False, value: Optional[bytes] = None
    ) -> Optional[Lock]:
        """Take lock `name` if it is free; None if it is held."""
        try:
            return self.lock(name, blocking=False, shared=shared, value=value)
        except WouldBlock:
            return None

    def close(self) -> None:
        """End the session: its locks are released and its waits dropped, in one step on
        the server."""
        wait(self._native.close())

    def _close_quietly(self) -> None:
        try:
            self.close()
        except FencelockError:
            pass  # the session ends when its lease expires on the server

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_quietly()

    def __repr__(self) -> str:
        return f"Session(id={self.id}, ttl={self.ttl})"


class Watch:
    """An iterator of :class:`~fencelock.WatchEvent` (it survives node failures: a
    ``resync`` event says events may have been missed). ``close()`` or a ``with`` block
    ends it."""

    def __init__(self, native: _native.Stream) -> None:
        self._native = native

    def __iter__(self) -> "Watch":
        return self

    def __next__(self) -> WatchEvent:
        more, event = wait(self._native.next())
        if not more:
            raise StopIteration
        return WatchEvent(**event)

    def next(self, timeout: Optional[float] = None) -> Optional[WatchEvent]:
        """The next event, or None if none came within `timeout` seconds."""
        op = self._native.next()
        if not op.wait(timeout):
            op.cancel()
            return None
        more, event = op.result()
        if not more:
            raise StopIteration
        return WatchEvent(**event)

    def close(self) -> None:
        """End the watch."""
        self._native.close()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Leadership(Lock):
    """Held leadership of an election: :attr:`token` numbers the term. ``resign()`` (or
    leaving the ``with`` block) steps down; stop acting as leader when :attr:`lost`
    fires."""

    def resign(self) -> None:
        """Step down; the next campaigner leads."""
        self.release()


class Election:
    """Leader election on lock `name`: the holder of the exclusive lock leads, its value
    (e.g. its address) says who it is, and the fencing token numbers the terms."""

    def __init__(self, client: "Client", name: str, ttl: float) -> None:
        self._client = client
        self.name = name
        self.ttl = ttl

    def campaign(self, value: bytes = b"") -> Leadership:
        """Wait until leading (campaigners are served in FIFO order), announcing
        `value`. Runs on a session of its own with the election's TTL."""
        session = self._client.session(self.ttl)
        try:
            native = wait(session._native.campaign(self.name, value))
        except BaseException:
            session._close_quietly()
            raise
        return Leadership(native, session)

    def leader(self) -> Optional[Leader]:
        """Who leads now (None when no one does)."""
        return _leader(wait(self._client._client().leader(self.name)))

    def observe(self) -> Iterator[Optional[Leader]]:
        """The leaders, the current one first, then every change (None while no one
        leads), without repeats."""
        stream = self._client._client().observe(self.name)
        try:
            while True:
                more, item = wait(stream.next())
                if not more:
                    return
                yield _leader(item)
        finally:
            stream.close()


class Client:
    """A connection to a fencelock cluster: any node's address will do (the client finds
    the leader and follows it). Cheap to share between threads.

    Safe across ``fork()``: in a child process the client connects again on first use
    with a runtime of the child's own; sessions and locks made before the fork stay the
    parent's (using them in the child raises :class:`~fencelock.errors.ForkedError`).

    Durations are in seconds. `tls_ca`, `tls_cert` and `tls_key` are PEM bytes or file
    paths (TLS to the nodes, with a client certificate for mutual TLS); `tls_domain`
    checks the nodes' certificates against that name instead of each endpoint's host.
    `user` and `password`, or `bearer`, authenticate every call on a cluster with auth
    on.
    """

    def __init__(
        self,
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
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        self._endpoints = list(endpoints)
        self._options = connect_options(
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
        self._pid = -1
        self._native: Optional[_native.Client] = None
        self._client()

    def _client(self) -> _native.Client:
        """The native client of this process (a forked child connects again)."""
        pid = os.getpid()
        native = self._native
        if native is None or self._pid != pid:
            native = wait(_native.connect(self._endpoints, **self._options))
            self._native, self._pid = native, pid
        return native

    def session(
        self,
        ttl: float = 10.0,
        *,
        keepalive_interval: Optional[float] = None,
        safety_margin: Optional[float] = None,
    ) -> Session:
        """Open a session with a lease of `ttl` seconds (keepalives every ``ttl / 3``
        unless `keepalive_interval`; the client's lease ends `safety_margin` before the
        server's, by default ``max(ttl / 10, 0.2)``)."""
        op = self._client().session(ttl, keepalive_interval, safety_margin)
        return Session(wait(op))

    def lock(
        self,
        name: str,
        ttl: float = 10.0,
        *,
        timeout: Optional[float] = None,
        blocking: bool = True,
        shared: bool = False,
        value: Optional[bytes] = None,
    ) -> Lock:
        """Take lock `name` on a session of its own with a lease of `ttl` seconds
        (closed when the lock is released). Waits as :meth:`Session.lock` does::

            with client.lock("jobs/x", ttl=10) as lock:
                write(lock.token)
        """
        session = self.session(ttl)
        try:
            op = session._native.acquire(name, shared, blocking, timeout, value)
            native = acquired(wait(op), name, timeout)
        except BaseException:
            session._close_quietly()
            raise
        return Lock(native, session)

    def try_lock(
        self,
        name: str,
        ttl: float = 10.0,
        *,
        shared: bool = False,
        value: Optional[bytes] = None,
    ) -> Optional[Lock]:
        """:meth:`lock` without waiting: None if the lock is held."""
        try:
            return self.lock(name, ttl, blocking=False, shared=shared, value=value)
        except WouldBlock:
            return None

    def describe(self, name: str) -> Optional[LockInfo]:
        """Who holds and waits for lock `name` (None when no one does)."""
        info, _revision = wait(self._client().describe(name))
        return None if info is None else LockInfo._from(info)

    def list(self, prefix: str = "", limit: int = 1000) -> List[LockInfo]:
        """The locks whose names start with `prefix`, in name order, at most `limit`."""
        return [LockInfo._from(d) for d in wait(self._client().list(prefix, limit))]

    def verify(self, name: str, token: int) -> Verification:
        """Whether `token` is a current grant of lock `name`."""
        current, current_token = wait(self._client().verify(name, token))
        return Verification(current, current_token)

    def status(self) -> ClusterStatus:
        """A node's view of the cluster."""
        return ClusterStatus._from(wait(self._client().status()))

    def force_release(self, name: str) -> int:
        """Release every grant of lock `name` (an admin's action); returns how many."""
        return wait(self._client().force_release(name))

    def watch(self, name: str, *, prefix: bool = False) -> Watch:
        """Watch lock `name` (every lock starting with it, with `prefix`)."""
        return Watch(self._client().watch(name, prefix))

    def election(self, name: str, ttl: float = 10.0) -> Election:
        """Leader election on lock `name`, campaigning with sessions of `ttl` seconds."""
        return Election(self, name, ttl)

    def __repr__(self) -> str:
        return f"Client({self._endpoints!r})"
