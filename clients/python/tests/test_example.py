"""The examples of the README and docs/python.md, run as written (between the markers)."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import List

from conftest import Cluster


def test_blocking_example(cluster: Cluster) -> None:
    endpoints: List[str] = cluster.endpoints
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER, fence_token INTEGER)")
    db.execute("INSERT INTO accounts VALUES (42, 100, 0)")
    # example: blocking
    import fencelock
    from fencelock.fence import fenced_update

    client = fencelock.Client(endpoints)  # any node's address will do

    with client.lock("accounts/42", ttl=10) as lock:
        # The resource admits the write only if no newer holder wrote before.
        if not fenced_update(db, "accounts", "id", 42, {"balance": 150}, lock.token):
            raise RuntimeError("a newer holder wrote: this lock is gone")
        db.commit()
        if lock.lost.is_set():  # the lease ran out on our clock: stop working
            raise RuntimeError("lost the lock")

    if client.try_lock("accounts/42") is None:
        print("someone else holds it")
    # end example
    assert db.execute("SELECT balance, fence_token FROM accounts").fetchone() == (150, lock.token)


def test_asyncio_example(cluster: Cluster) -> None:
    endpoints: List[str] = cluster.endpoints
    tokens: List[int] = []

    async def write(token: int) -> None:
        tokens.append(token)

    # example: asyncio
    from fencelock.aio import AsyncClient

    async def main() -> None:
        client = await AsyncClient.connect(endpoints)
        async with client.lock("jobs/report", ttl=10) as lock:
            work = asyncio.ensure_future(write(lock.token))
            lost = asyncio.ensure_future(lock.lost)  # resolves if the lease runs out
            await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
            if lost.done():
                work.cancel()  # stop at once: the lock may be someone else's soon
            else:
                lost.cancel()
    # end example

    asyncio.run(main())
    assert len(tokens) == 1
