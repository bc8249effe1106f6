"""The blocking API against a real 3-node cluster."""

from __future__ import annotations

import threading

import pytest

import fencelock
from fencelock import errors

from conftest import eventually


def test_lock_and_unlock(client: fencelock.Client, name: str) -> None:
    with client.lock(name, ttl=10) as lock:
        assert lock.name == name
        assert lock.token > 0
        assert not lock.lost.is_set()
        info = client.describe(name)
        assert info is not None
        assert [h.token for h in info.holders] == [lock.token]
        assert client.verify(name, lock.token).current
        first = lock.token
    assert client.describe(name) is None
    assert not client.verify(name, first).current
    # A later grant has a larger token.
    with client.lock(name) as again:
        assert again.token > first


def test_try_lock_and_timeout_leave_no_waiter(client: fencelock.Client, name: str) -> None:
    with client.lock(name) as held:
        assert client.try_lock(name) is None
        with pytest.raises(fencelock.WouldBlock):
            client.lock(name, blocking=False)
        with pytest.raises(fencelock.LockTimeout):
            client.lock(name, timeout=0.3)
        info = client.describe(name)
        assert info is not None and info.waiters == []
        assert [h.session_id for h in info.holders] == [held.session_id]


def test_waiter_is_granted_on_release_in_token_order(client: fencelock.Client, name: str) -> None:
    holder = client.lock(name)
    got = []
    waiter = threading.Thread(target=lambda: got.append(client.lock(name, ttl=10)))
    waiter.start()
    eventually(lambda: client.describe(name).waiters, what="a queued waiter")
    holder.release()
    waiter.join(30)
    assert got and got[0].token > holder.token
    got[0].release()


def test_session_locks_shared_and_exclusive(client: fencelock.Client, name: str) -> None:
    with client.session(ttl=10) as a, client.session(ttl=10) as b:
        ra = a.lock(name, shared=True, value=b"reader-a")
        rb = b.lock(name, shared=True)
        assert ra.shared and rb.shared
        info = client.describe(name)
        assert sorted(h.mode for h in info.holders) == ["shared", "shared"]
        assert b"reader-a" in [h.value for h in info.holders]
        with client.session(ttl=10) as w:
            assert w.try_lock(name) is None  # an exclusive grant waits for the readers
            ra.release()
            rb.release()
            writer = w.lock(name, timeout=10)
            assert writer.token > max(ra.token, rb.token)
            with pytest.raises(fencelock.errors.AlreadyHeldOrQueued):
                w.lock(name, blocking=False)
    # Closing the sessions released everything.
    eventually(lambda: client.describe(name) is None, what="locks released by close")


def test_list_and_status(client: fencelock.Client, name: str) -> None:
    with client.lock(name + "/a"), client.lock(name + "/b"):
        names = [info.name for info in client.list(name + "/")]
        assert names == [name + "/a", name + "/b"]
    status = client.status()
    assert status.leader_id is not None
    assert len(status.members) == 3


def test_typed_errors(client: fencelock.Client) -> None:
    with pytest.raises(errors.InvalidName) as raised:
        client.lock("")
    assert raised.value.reason == "INVALID_NAME"
    assert isinstance(raised.value, fencelock.FencelockError)
    with pytest.raises(errors.InvalidTtl):
        client.session(ttl=10_000_000)
    with pytest.raises(ValueError):
        client.session(ttl=-1)
    with pytest.raises(errors.ConfigError):
        fencelock.Client(["127.0.0.1:1"], tls_cert=b"x")


def test_release_twice_and_lost_on_close(client: fencelock.Client, name: str) -> None:
    session = client.session(ttl=10)
    lock = session.lock(name)
    lock.release()
    with pytest.raises(RuntimeError):
        lock._native.release()
    session.close()
    assert session.lost.wait(10)
    assert session.lost.reason == "closed"
    with pytest.raises(fencelock.SessionLost):
        session.lock(name)


def test_watch_sees_grant_and_release(client: fencelock.Client, name: str) -> None:
    with client.watch(name) as watch:
        first = watch.next(timeout=10)
        assert first is not None and first.kind == "resync"
        with client.lock(name, value=b"me") as lock:
            acquired = watch.next(timeout=10)
            assert acquired is not None
            assert (acquired.kind, acquired.token, acquired.value) == ("acquired", lock.token, b"me")
        released = next(watch)
        assert (released.kind, released.token) == ("released", lock.token)


def test_election(client: fencelock.Client, name: str) -> None:
    election = client.election(name, ttl=10)
    assert election.leader() is None
    observed = election.observe()
    assert next(observed) is None
    first = election.campaign(b"node-a")
    assert next(observed) == fencelock.Leader(first.session_id, first.token, b"node-a")
    assert election.leader().value == b"node-a"
    second = []
    t = threading.Thread(target=lambda: second.append(election.campaign(b"node-b")))
    t.start()
    eventually(lambda: client.describe(name).waiters, what="a second campaigner")
    first.resign()
    t.join(30)
    assert second and second[0].token > first.token
    leader = next(observed)
    assert leader is not None and leader.value == b"node-b"
    second[0].resign()
    observed.close()
