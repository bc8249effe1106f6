"""Waiting for the native module's operations, from threads and from asyncio, and the
pieces both APIs share (connection options, the lost signal)."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any, Callable, Dict, Generator, Optional, Union

from . import _native
from .errors import ConfigError, LockTimeout, WouldBlock

PathOrPem = Union[str, bytes, "os.PathLike[str]"]


def wait(op: _native.Op) -> Any:
    """Block until `op` finishes (the GIL released) and return its result. An
    exception while waiting (Ctrl-C) cancels the op first: a cancelled acquire is
    withdrawn on the server."""
    try:
        op.wait(None)
    except BaseException:
        op.cancel()
        raise
    return op.result()


def _resolve(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


async def wait_async(op: _native.Op) -> Any:
    """Await `op` on the running loop and return its result. Cancelling the awaiting
    task cancels the op: a cancelled acquire is withdrawn on the server."""
    await done_async(op)
    return op.result()


async def done_async(op: _native.Op, cancel: bool = True) -> None:
    """Await the end of `op` without taking its result; cancelling the awaiting task
    cancels the op unless `cancel` is false (an op that others wait for too)."""
    if not op.done():
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:
                pass  # the loop is closed: no one waits any more

        op.add_done_callback(wake)
        try:
            await future
        except asyncio.CancelledError:
            if cancel:
                op.cancel()
            raise


def acquired(result: Any, name: str, timeout: Optional[float]) -> _native.Lock:
    """The lock of an acquire op's result, or the exception its refusal means."""
    if result == "would_block":
        raise WouldBlock(f"lock {name!r} is held")
    if result == "timed_out":
        raise LockTimeout(f"lock {name!r} still held after {timeout} s; the wait was withdrawn")
    return result


def _pem(value: Optional[PathOrPem], what: str) -> Optional[bytes]:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    try:
        with open(value, "rb") as file:
            return file.read()
    except OSError as e:
        raise ConfigError(f"cannot read the {what} {value}: {e}") from e


def connect_options(
    connect_timeout: Optional[float],
    call_timeout: Optional[float],
    retry_deadline: Optional[float],
    keepalive_safety_margin: Optional[float],
    keepalive_interval: Optional[float],
    withdraw_deadline: Optional[float],
    tls_ca: Optional[PathOrPem],
    tls_cert: Optional[PathOrPem],
    tls_key: Optional[PathOrPem],
    tls_domain: Optional[str],
    user: Optional[str],
    password: Optional[str],
    bearer: Optional[str],
) -> Dict[str, Any]:
    """The keyword arguments of ``_native.connect`` (TLS files read here)."""
    return dict(
        connect_timeout=connect_timeout,
        call_timeout=call_timeout,
        retry_deadline=retry_deadline,
        keepalive_safety_margin=keepalive_safety_margin,
        keepalive_interval=keepalive_interval,
        withdraw_deadline=withdraw_deadline,
        tls_ca=_pem(tls_ca, "CA certificate"),
        tls_cert=_pem(tls_cert, "client certificate"),
        tls_key=_pem(tls_key, "client key"),
        tls_domain=tls_domain,
        user=user,
        password=password,
        bearer=bearer,
    )


class LostSignal:
    """Fires when a lease is lost: the client's lease ran out (before the server's, by
    the safety margin, counted from the send of the last answered keepalive), the server
    no longer knows the session, or it was closed. From then on the lock may be granted
    to someone else: stop using the resource.

    Use it as a :class:`threading.Event` (``is_set()``, ``wait(timeout)``) or await it
    in asyncio (``await lock.lost`` returns the reason).
    """

    def __init__(self, op: _native.Op, check: Callable[[], bool]) -> None:
        self._op = op
        self._check = check
        self._reason: Optional[str] = None
        self._take = threading.Lock()

    def is_set(self) -> bool:
        """Whether the lease is lost. Checked against the lease clock at each call, so
        the first look after the process was stopped past its lease (SIGSTOP, a long
        GC pause) already says lost, before any background thread ran."""
        return self._op.done() or self._check()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the lease is lost or `timeout` seconds pass; returns
        :meth:`is_set`."""
        return self._check() or self._op.wait(timeout)

    @property
    def reason(self) -> Optional[str]:
        """``"lease_expired"``, ``"session_not_found"`` or ``"closed"``; None while
        not lost."""
        if not self._op.done():
            # Lost on the lease clock, and the signal's task has not run yet.
            return "lease_expired" if self._check() else None
        with self._take:
            if self._reason is None:
                self._reason = self._op.result()
        return self._reason

    def __await__(self) -> Generator[Any, None, Optional[str]]:
        return self._wait_async().__await__()

    async def _wait_async(self) -> Optional[str]:
        if not self._check():
            await done_async(self._op, cancel=False)
        return self.reason

    def __repr__(self) -> str:
        return f"LostSignal(reason={self.reason!r})"
