"""A real 3-node fencelock cluster for the tests: the `fencelock` binary that cargo built
(``FENCELOCK_BIN``, else ``target/debug/fencelock`` of the repository), on loopback
ports, each node in a data directory of the test run. Every process started here is
stopped by its PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, TypeVar

import pytest

import fencelock

REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")


def binary() -> str:
    explicit = os.environ.get("FENCELOCK_BIN")
    if explicit:
        return explicit
    for profile in ("debug", "release"):
        candidate = REPO / "target" / profile / "fencelock"
        if candidate.exists():
            return str(candidate)
    pytest.fail("no fencelock binary: build it with `cargo build -p fencelock` or set FENCELOCK_BIN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eventually(check: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll `check` until it returns a true value (exceptions count as false)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except Exception as e:  # noqa: BLE001 - polled until the deadline
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s (last: {last!r})")
        time.sleep(0.05)


class Cluster:
    """Three `fencelock serve` processes."""

    def __init__(self, root: Path, nodes: int = 3) -> None:
        self.root = root
        #: More `serve` flags of a node (e.g. its TLS files), by node id.
        self.extra_args: Callable[[int], List[str]] = lambda node: []
        self.ids = list(range(1, nodes + 1))
        self.client_ports = {i: free_port() for i in self.ids}
        self.peer_ports = {i: free_port() for i in self.ids}
        self.procs: Dict[int, subprocess.Popen] = {}
        self.peers = ",".join(f"{i}=127.0.0.1:{self.peer_ports[i]}" for i in self.ids)
        for i in self.ids:
            self.start(i)

    @property
    def endpoints(self) -> List[str]:
        return [f"127.0.0.1:{self.client_ports[i]}" for i in self.ids]

    def start(self, node: int) -> None:
        log = open(self.root / f"node{node}.log", "ab")
        self.procs[node] = subprocess.Popen(
            [
                binary(),
                "serve",
                "--id", str(node),
                "--listen", f"127.0.0.1:{self.client_ports[node]}",
                "--peer-listen", f"127.0.0.1:{self.peer_ports[node]}",
                "--no-admin",
                "--data-dir", str(self.root / f"node{node}"),
                "--peers", self.peers,
                "--heartbeat-ms", "50",
                "--election-timeout-ms", "300",
                *self.extra_args(node),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()

    def kill(self, node: int) -> None:
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def leader(self, client: "fencelock.Client", timeout: float = 30.0) -> int:
        """The id of the node that leads (waits for one)."""
        return eventually(lambda: client.status().leader_id, timeout, "a leader")

    def stop(self) -> None:
        for node in list(self.procs):
            self.kill(node)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        probe = fencelock.Client(c.endpoints, retry_deadline=60.0)
        c.leader(probe, timeout=60.0)
        yield c
    finally:
        c.stop()


@pytest.fixture
def client(cluster: Cluster) -> fencelock.Client:
    return fencelock.Client(cluster.endpoints)


_counter = iter(range(1_000_000))


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A lock name of this test alone."""
    return f"tests/{request.node.name}/{next(_counter)}"


@pytest.fixture
def restore(cluster: Cluster):
    """Restarts, after the test, the nodes it killed."""
    yield
    for node in cluster.ids:
        if node not in cluster.procs:
            cluster.start(node)
