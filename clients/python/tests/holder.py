"""A lock holder in a process of its own, driven by the process tests:

    holder.py contend ENDPOINTS NAME DB ROUNDS   take NAME ROUNDS times, each time writing
                                                 the token through the fence into DB and
                                                 appending it to DB's log
    holder.py hold ENDPOINTS NAME DB TTL         take NAME, write through the fence, print
                                                 "held TOKEN"; once stopped past the TTL
                                                 and resumed, look at `lost` at once,
                                                 try the stale token again and print
                                                 "lost|not-lost REASON admitted|refused"
    holder.py wait ENDPOINTS NAME                wait for NAME, print "granted TOKEN"

ENDPOINTS is comma-separated."""

from __future__ import annotations

import sqlite3
import sys
import time

import fencelock
from fencelock.fence import fenced_update


def db_write(path: str, name: str, token: int) -> bool:
    db = sqlite3.connect(path, timeout=60)
    try:
        admitted = fenced_update(db, "resource", "id", name, {"holder": str(token)}, token, upsert=True)
        if admitted:
            db.execute("INSERT INTO log (token) VALUES (?)", (token,))
        db.commit()
        return admitted
    finally:
        db.close()


def main() -> None:
    mode, endpoints, name = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
    client = fencelock.Client(endpoints, retry_deadline=60)
    if mode == "contend":
        db, rounds = sys.argv[4], int(sys.argv[5])
        for _ in range(rounds):
            with client.lock(name, ttl=10) as lock:
                if not db_write(db, name, lock.token):
                    print(f"refused {lock.token}", flush=True)
                    sys.exit(1)
        print("done", flush=True)
    elif mode == "hold":
        db, ttl = sys.argv[4], float(sys.argv[5])
        lock = client.lock(name, ttl=ttl)
        assert db_write(db, name, lock.token)
        # Work in small steps until a step finds the process was stopped past the TTL;
        # then look at `lost` at once, before waiting for anything. (The clock is read
        # before the line goes out: the test may stop the process right after it.)
        last = time.monotonic()
        print(f"held {lock.token}", flush=True)
        while True:
            time.sleep(0.02)
            now = time.monotonic()
            if now - last > ttl:
                first_look = lock.lost.is_set()
                break
            last = now
        if not lock.lost.wait(60):
            print("never lost", flush=True)
            sys.exit(1)
        verdict = "admitted" if db_write(db, name, lock.token) else "refused"
        look = "lost" if first_look else "not-lost"
        print(f"{look} {lock.lost.reason} {verdict}", flush=True)
    elif mode == "wait":
        with client.lock(name, ttl=10) as lock:
            print(f"granted {lock.token}", flush=True)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
