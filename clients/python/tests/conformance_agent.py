"""A session in a process of its own, for the conformance runner's `pausable` sessions
(the runner stops and resumes this process). One JSON command a line on stdin, one
JSON answer a line on stdout:

    {"op": "open", "endpoints": [...], "ttl_ms": N}   -> {"session_id": N}
    {"op": "acquire", "as": G, "lock": L, "mode": M, "wait": W, "timeout_ms": N}
        -> {"result": "granted", "token": N} | {"result": "would_block" | "timed_out"}
    {"op": "lost_now", "grant": G}                     -> {"lost": bool}  (no waiting)
    {"op": "release", "grant": G}                      -> {}
    {"op": "close"}                                    -> {}  (and the process exits)
Errors answer {"error": "..."}."""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, Optional

import fencelock


def main() -> None:
    session: Optional[fencelock.Session] = None
    grants: Dict[str, fencelock.Lock] = {}
    for raw in sys.stdin:
        command = json.loads(raw)
        op = command["op"]
        answer: Dict[str, Any] = {}
        try:
            if op == "open":
                client = fencelock.Client(command["endpoints"], retry_deadline=60)
                session = client.session(command["ttl_ms"] / 1000)
                answer = {"session_id": session.id}
            elif op == "lost_now":
                answer = {"lost": grants[command["grant"]].lost.is_set()}
            elif op == "acquire":
                assert session is not None
                wait = command.get("wait", "forever")
                timeout = command.get("timeout_ms", 0) / 1000 if wait == "timeout" else None
                try:
                    lock = session.lock(
                        command["lock"],
                        blocking=wait != "no_wait",
                        timeout=timeout,
                        shared=command.get("mode") == "shared",
                    )
                    grants[command["as"]] = lock
                    answer = {"result": "granted", "token": lock.token}
                except fencelock.LockTimeout:
                    answer = {"result": "timed_out"}
                except fencelock.WouldBlock:
                    answer = {"result": "would_block"}
            elif op == "release":
                grants[command["grant"]].release()
            elif op == "close":
                if session is not None:
                    session._close_quietly()
                print(json.dumps({}), flush=True)
                return
            else:
                answer = {"error": f"unknown op {op}"}
        except Exception as e:  # noqa: BLE001 - reported to the runner
            answer = {"error": repr(e)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
