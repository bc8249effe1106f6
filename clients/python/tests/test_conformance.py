"""The client conformance scenarios (`conformance/scenarios.json`, vocabulary in
`conformance/README.md`), run with the asyncio API against the test cluster.

Sessions marked `pausable` live in a process of their own (`conformance_agent.py`) that
`pause` stops with SIGSTOP and resumes with SIGCONT."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

import fencelock
from fencelock.aio import AsyncClient, AsyncLock, AsyncSession, AsyncWatch
from fencelock.fence import fenced_update

from conftest import REPO, Cluster

TABLE = Path(os.environ.get("FENCELOCK_CONFORMANCE", REPO / "conformance" / "scenarios.json"))
AGENT = str(Path(__file__).with_name("conformance_agent.py"))
#: How long an `expect_*` step polls before it fails.
PATIENCE = 60.0


def scenarios() -> List[Dict[str, Any]]:
    if not TABLE.exists():
        return []
    table = json.loads(TABLE.read_text())
    assert table["version"] == 1, "a conformance table of a version this runner does not know"
    return table["scenarios"]


class Agent:
    """A pausable session in a child process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, AGENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def ask(self, **command: Any) -> Dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        assert "error" not in answer, answer
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait()


class AgentGrant:
    """A grant held by an agent's session."""

    def __init__(self, agent: Agent, name: str, token: int) -> None:
        self.agent, self.name, self.token = agent, name, token


class Runner:
    def __init__(self, cluster: Cluster, client: AsyncClient, prefix: str) -> None:
        self.cluster = cluster
        self.client = client
        self.prefix = prefix
        self.sessions: Dict[str, AsyncSession] = {}
        self.agents: Dict[str, Agent] = {}
        self.session_ids: Dict[str, int] = {}
        self.grants: Dict[str, Any] = {}
        self.grant_lock: Dict[str, str] = {}
        self.lost_at: Dict[str, float] = {}
        self.pending: Dict[str, "asyncio.Task[Any]"] = {}
        self.watches: Dict[str, Tuple[AsyncWatch, List[Tuple[float, fencelock.WatchEvent]], "asyncio.Task[None]"]] = {}
        self.fence = sqlite3.connect(":memory:")
        self.fence.execute("CREATE TABLE fence (lock TEXT PRIMARY KEY, holder TEXT, fence_token INTEGER)")
        self.killed: List[int] = []
        self.tasks: List["asyncio.Task[Any]"] = []

    def lock(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    async def eventually(self, check: Any, what: str) -> None:
        deadline = time.monotonic() + PATIENCE
        last: Any = None
        while True:
            try:
                last = await check()
                if last is True:
                    return
            except Exception as e:  # noqa: BLE001 - polled until the deadline
                last = e
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not so after {PATIENCE} s (last: {last!r})")
            await asyncio.sleep(0.05)

    def granted(self, as_: str, lock: str, grant: Any) -> None:
        self.grants[as_] = grant
        self.grant_lock[as_] = lock
        if isinstance(grant, AsyncLock):

            async def note_lost() -> None:
                await grant.lost
                self.lost_at[as_] = time.monotonic()

            self.tasks.append(asyncio.ensure_future(note_lost()))

    async def acquire(self, step: Dict[str, Any]) -> Tuple[str, Optional[Any]]:
        lock = self.lock(step["lock"])
        wait = step.get("wait", "forever")
        timeout = step["timeout_ms"] / 1000 if wait == "timeout" else None
        shared = step.get("mode", "exclusive") == "shared"
        if step["session"] in self.agents:
            answer = self.agents[step["session"]].ask(
                op="acquire", lock=lock, wait=wait, timeout_ms=step.get("timeout_ms", 0),
                mode=step.get("mode", "exclusive"), **{"as": step.get("as", "")},
            )
            if answer["result"] != "granted":
                return answer["result"], None
            return "granted", AgentGrant(self.agents[step["session"]], step.get("as", ""), answer["token"])
        session = self.sessions[step["session"]]
        try:
            grant = await session.lock(lock, blocking=wait != "no_wait", timeout=timeout, shared=shared)
        except fencelock.LockTimeout:
            return "timed_out", None
        except fencelock.WouldBlock:
            return "would_block", None
        return "granted", grant

    def outcome(self, step: Dict[str, Any], result: Tuple[str, Optional[Any]], lock: str) -> None:
        kind, grant = result
        assert kind == step["expect"], f"expected {step['expect']}, got {kind}"
        if grant is not None and "as" in step:
            self.granted(step["as"], lock, grant)

    async def step(self, step: Dict[str, Any]) -> None:
        op = step["op"]
        if op == "session":
            ttl = step["ttl_ms"] / 1000
            if step.get("pausable"):
                agent = Agent()
                self.agents[step["as"]] = agent
                answer = agent.ask(op="open", endpoints=self.cluster.endpoints, ttl_ms=step["ttl_ms"])
                self.session_ids[step["as"]] = answer["session_id"]
            else:
                session = await self.client.session(ttl)
                self.sessions[step["as"]] = session
                self.session_ids[step["as"]] = session.id
        elif op == "close":
            if step["session"] in self.agents:
                self.agents[step["session"]].ask(op="close")
            else:
                await self.sessions[step["session"]].close()
        elif op == "acquire":
            self.outcome(step, await self.acquire(step), step["lock"])
        elif op == "start_acquire":
            task = asyncio.ensure_future(self.acquire(step))
            task.lock = step["lock"]  # type: ignore[attr-defined]
            self.pending[step["as"]] = task
        elif op == "await":
            task = self.pending.pop(step["acquire"])
            result = await asyncio.wait_for(task, PATIENCE)
            self.outcome(step, result, task.lock)  # type: ignore[attr-defined]
        elif op == "cancel":
            task = self.pending.pop(step["acquire"])
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        elif op == "release":
            grant = self.grants[step["grant"]]
            if isinstance(grant, AgentGrant):
                grant.agent.ask(op="release", grant=grant.name)
            else:
                await grant.release()
        elif op == "stop_renewals":
            self.sessions[step["session"]].stop_keepalive()
        elif op == "pause":
            agent = self.agents[step["session"]]
            agent.proc.send_signal(signal.SIGSTOP)
            await asyncio.sleep(step["ms"] / 1000)
            agent.proc.send_signal(signal.SIGCONT)
        elif op == "kill_leader":
            leader = (await self.client.status()).leader_id
            assert leader is not None
            self.cluster.kill(leader)
            self.killed.append(leader)
        elif op == "restart_killed":
            for node in self.killed:
                self.cluster.start(node)
            self.killed.clear()

            async def has_leader() -> bool:
                status = await self.client.status()
                return status.leader_id is not None

            await self.eventually(has_leader, "a leader after the restart")
        elif op == "watch":
            watch = self.client.watch(self.lock(step["lock"]))
            events: List[Tuple[float, fencelock.WatchEvent]] = []

            async def record() -> None:
                async for event in watch:
                    events.append((time.monotonic(), event))

            self.watches[step["as"]] = (watch, events, asyncio.ensure_future(record()))
            # Subscribed once the first (resync) event arrived.
            await self.eventually(self._async(lambda: bool(events)), "the watch to start")
        elif op == "expect_lock":
            holders = sorted(self.grants[g].token for g in step["holders"])
            waiters = [self.session_ids[s] for s in step["waiters"]]
            name = self.lock(step["lock"])

            async def matches() -> Any:
                info = await self.client.describe(name)
                seen = ([], []) if info is None else (
                    sorted(h.token for h in info.holders),
                    [w.session_id for w in info.waiters],
                )
                return True if seen == (holders, waiters) else seen

            await self.eventually(matches, f"lock {name} held by {holders}, awaited by {waiters}")
        elif op == "expect_tokens_increase":
            tokens = [self.grants[g].token for g in step["grants"]]
            assert all(a < b for a, b in zip(tokens, tokens[1:])), tokens
        elif op == "fence":
            # The fence of the grant's lock: the one-statement SQL form, in SQLite.
            grant = self.grants[step["grant"]]
            lock = self.grant_lock[step["grant"]]
            admitted = fenced_update(self.fence, "fence", "lock", lock, {"holder": step["grant"]}, grant.token, upsert=True)
            assert ("admitted" if admitted else "refused") == step["expect"]
        elif op == "expect_lost":
            grant = self.grants[step["grant"]]
            if isinstance(grant, AgentGrant):
                check = lambda: grant.agent.ask(op="lost_now", grant=grant.name)["lost"]  # noqa: E731
            else:
                check = grant.lost.is_set
            if step.get("immediately"):
                assert check(), "the first look after the pause did not say lost"
            else:
                await self.eventually(self._async(check), "the lost signal")
        elif op == "expect_lost_before":
            name = step["grant"]
            token = self.grants[name].token
            _, events, _ = self.watches[step["watch"]]

            def arrived() -> Optional[float]:
                for at, event in events:
                    if event.kind == step["event"] and event.token == token:
                        return at
                return None

            await self.eventually(self._async(lambda: name in self.lost_at and arrived() is not None),
                                  f"the lost signal and the {step['event']} event")
            assert self.lost_at[name] < arrived(), "the server expired the lease before the client's lost signal"
        elif op == "expect_events":
            _, events, _ = self.watches[step["watch"]]
            wanted = [(e["kind"], self.grants[e["grant"]].token) for e in step["events"]]

            def seen_in_order() -> Any:
                it = iter((e.kind, e.token) for _, e in events if e.kind != "resync")
                return True if all(w in it for w in wanted) else [(e.kind, e.token) for _, e in events]

            await self.eventually(self._async(seen_in_order), f"events {wanted}")
        else:
            raise AssertionError(f"unknown step {op}")

    @staticmethod
    def _async(check: Any) -> Any:
        async def run() -> Any:
            return check()

        return run

    async def cleanup(self) -> None:
        for task in [*self.pending.values(), *self.tasks, *(w[2] for w in self.watches.values())]:
            task.cancel()
        for watch, _, _ in self.watches.values():
            watch.close()
        for session in self.sessions.values():
            await session._close_quietly()
        for agent in self.agents.values():
            agent.stop()
        for node in self.killed:
            self.cluster.start(node)


@pytest.mark.skipif(not TABLE.exists(), reason=f"no conformance table at {TABLE}")
@pytest.mark.parametrize("scenario", scenarios(), ids=lambda s: s["name"])
def test_conformance(cluster: Cluster, scenario: Dict[str, Any], restore: None) -> None:
    async def main() -> None:
        client = await AsyncClient.connect(cluster.endpoints, retry_deadline=60)
        runner = Runner(cluster, client, f"conformance/{scenario['name']}/{time.time_ns()}")
        try:
            for index, step in enumerate(scenario["steps"]):
                try:
                    await runner.step(step)
                except BaseException as e:
                    raise AssertionError(f"step {index} {step}: {e!r}") from e
        finally:
            await runner.cleanup()

    asyncio.run(main())
