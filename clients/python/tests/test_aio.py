"""The asyncio API against a real 3-node cluster."""

from __future__ import annotations

import asyncio

import pytest

import fencelock
from fencelock.aio import AsyncClient


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_async_lock_cancel_and_lost(cluster, name: str) -> None:
    async def main() -> None:
        client = await AsyncClient.connect(cluster.endpoints)
        async with client.lock(name, ttl=10) as lock:
            assert lock.token > 0
            assert await client.try_lock(name) is None
            # A waiting task cancelled: its wait is withdrawn on the server.
            waiter = asyncio.ensure_future(client.lock(name, ttl=10))

            async def queued() -> bool:
                info = await client.describe(name)
                return bool(info and info.waiters)

            while not await queued():
                await asyncio.sleep(0.05)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            while await queued():
                await asyncio.sleep(0.05)
            # The same for a session that stays open: the Rust client withdraws the wait.
            async with await client.session(ttl=10) as session:
                waiting = asyncio.ensure_future(session.lock(name))
                while not await queued():
                    await asyncio.sleep(0.05)
                waiting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiting
                while await queued():
                    await asyncio.sleep(0.05)
                assert not session.lost.is_set()
            with pytest.raises(fencelock.LockTimeout):
                await client.lock(name, timeout=0.2)
        # Released: the next one gets it, with a larger token.
        again = await client.lock(name)
        assert again.token > lock.token
        await again.release()

        session = await client.session(ttl=10)
        held = await session.lock(name, shared=True)
        assert held.shared
        await session.close()
        assert await held.lost == "closed"
        assert await session.lost == "closed"

    run(main())


def test_async_watch_and_election(cluster, name: str) -> None:
    async def main() -> None:
        client = await AsyncClient.connect(cluster.endpoints)
        watch = client.watch(name)
        events = watch.__aiter__()
        assert (await events.__anext__()).kind == "resync"
        election = client.election(name, ttl=10)
        leadership = await election.campaign(b"a")
        event = await events.__anext__()
        assert (event.kind, event.token, event.value) == ("acquired", leadership.token, b"a")
        assert (await election.leader()).value == b"a"
        await leadership.resign()
        assert (await events.__anext__()).kind == "released"
        watch.close()

    run(main())
