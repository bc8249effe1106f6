"""The Python package's side of scripts/bench-clients.sh, which runs the same loop with
the Rust client and the Go module against the same cluster (docs/benchmarks.md,
"Clients in other languages").

One ``fencelock.Client`` (the blocking API), ``--clients`` sessions, one thread per
session taking and releasing lock ``--name`` until ``--ops`` pairs are done in all or
``--max-secs`` pass; prints one JSON line (ops, secs, errors, p50_ms, p99_ms).

    python load.py --endpoints 127.0.0.1:7001 --name bench/seq --clients 1 --ops 2000
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
from typing import List

import fencelock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", required=True, help="client addresses, comma-separated")
    parser.add_argument("--name", required=True, help="the lock every worker takes and releases")
    parser.add_argument("--clients", type=int, default=1, help="sessions, one thread each")
    parser.add_argument("--ops", type=int, default=2000, help="acquire + release pairs in all")
    parser.add_argument("--max-secs", type=float, default=60.0, help="upper bound of the timed loop")
    parser.add_argument("--ttl", type=float, default=10.0, help="session TTL, seconds")
    args = parser.parse_args()
    if not 1 <= args.clients <= 1024 or args.max_secs <= 0:
        parser.error("--clients must be 1..1024 and --max-secs positive")

    client = fencelock.Client(args.endpoints.split(","), retry_deadline=30.0)
    sessions = []
    for _ in range(args.clients):
        session = client.session(args.ttl)
        sessions.append(session)
        session.lock(args.name).release()  # warm-up, not timed

    claimed = itertools.count()  # next() is atomic under the GIL
    errors = itertools.count()
    deadline = time.monotonic() + args.max_secs
    took: List[List[float]] = [[] for _ in sessions]

    def worker(i: int, session: fencelock.Session) -> None:
        while next(claimed) < args.ops and time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                session.lock(args.name).release()
            except fencelock.FencelockError:
                next(errors)
                time.sleep(0.01)
                continue
            took[i].append(time.perf_counter() - t0)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i, s)) for i, s in enumerate(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - start
    for session in sessions:
        session.close()
    pairs = sorted(itertools.chain.from_iterable(took))

    def quantile(q: float) -> float:
        return pairs[round((len(pairs) - 1) * q)] * 1e3 if pairs else 0.0

    print(json.dumps({
        "ops": len(pairs),
        "secs": secs,
        "errors": next(errors),
        "p50_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
    }))


if __name__ == "__main__":
    main()
