"""Holders in processes of their own: contention, a leader killed while they wait, a
holder paused past its TTL, and fork()."""

from __future__ import annotations

import gc
import multiprocessing
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import fencelock

from conftest import Cluster, eventually

HOLDER = str(Path(__file__).with_name("holder.py"))


def resource_db(path: Path) -> str:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE resource (id TEXT PRIMARY KEY, holder TEXT, fence_token INTEGER)")
    db.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY AUTOINCREMENT, token INTEGER)")
    db.commit()
    db.close()
    return str(path)


def holder(cluster: Cluster, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, HOLDER, args[0], ",".join(cluster.endpoints), *args[1:]],
        stdout=subprocess.PIPE,
        text=True,
    )


def line(proc: subprocess.Popen, patience: float = 120.0) -> str:
    """The holder's next line; a holder silent for `patience` seconds fails the test
    (and is killed) instead of hanging it."""
    ready, _, _ = select.select([proc.stdout], [], [], patience)
    if not ready:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        raise AssertionError(f"the holder said nothing for {patience} s")
    out = proc.stdout.readline().strip()
    assert out, f"holder exited with {proc.wait()}"
    return out


def test_contention_across_processes_in_token_order(cluster: Cluster, name: str, tmp_path: Path) -> None:
    db = resource_db(tmp_path / "resource.db")
    procs = [holder(cluster, "contend", name, db, "5") for _ in range(3)]
    for proc in procs:
        assert line(proc) == "done"
        assert proc.wait(60) == 0
    tokens: List[int] = [t for (t,) in sqlite3.connect(db).execute("SELECT token FROM log ORDER BY seq")]
    assert len(tokens) == 15
    # Every write was admitted, in the order the grants were made.
    assert tokens == sorted(set(tokens))


def test_leader_killed_while_a_process_waits(cluster: Cluster, client: fencelock.Client, name: str, restore) -> None:
    held = client.lock(name, ttl=10)
    waiter = holder(cluster, "wait", name)
    try:
        eventually(lambda: client.describe(name).waiters, what="the process queued")
        cluster.kill(cluster.leader(client))
        held.release()  # retried to the new leader
        out = line(waiter)
        assert out.startswith("granted ")
        assert int(out.split()[1]) > held.token
        assert waiter.wait(60) == 0
        # The wait acted once: nothing is left queued or held.
        eventually(lambda: client.describe(name) is None, what="the lock free")
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()


def test_paused_holder_loses_the_lease_and_the_fence_refuses_it(
    cluster: Cluster, client: fencelock.Client, name: str, tmp_path: Path
) -> None:
    db = resource_db(tmp_path / "resource.db")
    paused = holder(cluster, "hold", name, db, "2")
    try:
        out = line(paused)
        assert out.startswith("held ")
        stale = int(out.split()[1])
        paused.send_signal(signal.SIGSTOP)
        # The cluster expires the paused holder's session and grants the lock on.
        with client.lock(name, ttl=10, timeout=60) as lock:
            assert lock.token > stale
            resource = sqlite3.connect(db)
            assert fencelock.fenced_update(resource, "resource", "id", name, {"holder": "new"}, lock.token)
            resource.commit()
            resource.close()
            time.sleep(1)  # the paused holder stays stopped well past its TTL
            paused.send_signal(signal.SIGCONT)
            assert line(paused) == "lost lease_expired refused"
            assert paused.wait(60) == 0
    finally:
        if paused.poll() is None:
            paused.send_signal(signal.SIGCONT)
            paused.kill()
            paused.wait()


def _forked_child(client: fencelock.Client, parent_lock: fencelock.Lock, name: str, results) -> None:
    try:
        # The parent's lock is the parent's: unusable here, and dropping it releases nothing.
        try:
            parent_lock.release()
            results.put("used the parent's lock")
            return
        except fencelock.ForkedError:
            pass
        del parent_lock
        gc.collect()
        # The client connects again, on a runtime of this process.
        assert client.try_lock(name) is None
        with client.lock(name + "/child", ttl=2) as lock:
            time.sleep(3)  # past the TTL: this process's keepalives keep it
            assert client.verify(name + "/child", lock.token).current
            assert not lock.lost.is_set()
        results.put("ok")
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        results.put(repr(e))


def test_fork_safety(client: fencelock.Client, name: str) -> None:
    lock = client.lock(name, ttl=2)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    children = [context.Process(target=_forked_child, args=(client, lock, name, results)) for _ in range(2)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    assert outcomes == ["ok", "ok"]
    # The parent still holds its lock, kept alive past its TTL by its own runtime.
    assert client.verify(name, lock.token).current
    assert not lock.lost.is_set()
    lock.release()
