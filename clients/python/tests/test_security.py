"""TLS and auth from Python: a 3-node cluster whose client listeners serve mutual TLS
(certificates of ``fencelock certs``) and whose auth is on, with a user ``alice`` who may
take, release and read the locks under ``jobs/`` only."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest

import fencelock
from fencelock import errors
from fencelock.aio import AsyncClient

from conftest import Cluster, binary

ROOT_PASSWORD = "root-password"
ALICE_PASSWORD = "alice-password"


class Secure:
    def __init__(self, cluster: Cluster, certs: Path, bearer: str) -> None:
        self.cluster = cluster
        self.certs = certs
        self.bearer = bearer

    def tls(self, **override: object) -> Dict[str, object]:
        """Mutual TLS options: the CA, alice's client certificate and key, as file paths."""
        options: Dict[str, object] = {
            "tls_ca": str(self.certs / "ca.pem"),
            "tls_cert": str(self.certs / "client-alice.pem"),
            "tls_key": str(self.certs / "client-alice.key"),
        }
        options.update(override)
        return {k: v for k, v in options.items() if v is not None}

    def client(self, retry_deadline: float = 30.0, **options: object) -> fencelock.Client:
        return fencelock.Client(self.cluster.endpoints, retry_deadline=retry_deadline, **options)


def cli(cluster: Cluster, *args: str, user: Optional[str] = "root") -> str:
    """Runs a `fencelock` client command against the (still plaintext) cluster."""
    command = [binary(), *args, "--endpoints", ",".join(cluster.endpoints)]
    if user is not None:
        command += ["--user", user, "--password", ROOT_PASSWORD]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    root = tmp_path_factory.mktemp("secure-cluster")
    certs = root / "certs"
    subprocess.run(
        [binary(), "certs", "--out", str(certs), "--nodes", "1,2,3", "--clients", "alice"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    c = Cluster(root)
    try:
        # The users and rights are set up over plaintext with the CLI, then every node is
        # restarted on its data with TLS on its client listener.
        c.leader(fencelock.Client(c.endpoints, retry_deadline=60.0), timeout=60.0)
        cli(c, "user", "add", "root", "--new-password", ROOT_PASSWORD, user=None)
        cli(c, "auth", "enable")
        cli(c, "role", "add", "jobs")
        cli(c, "role", "grant", "jobs", "jobs/", "acquire,release,read")
        cli(c, "user", "add", "alice", "--new-password", ALICE_PASSWORD)
        cli(c, "user", "grant-role", "alice", "jobs")
        bearer = cli(c, "auth", "token", "alice").strip()
        c.stop()
        c.extra_args = lambda node: [
            "--tls-cert", str(certs / f"node-{node}.pem"),
            "--tls-key", str(certs / f"node-{node}.key"),
            "--tls-client-ca", str(certs / "ca.pem"),
        ]
        for node in c.ids:
            c.start(node)
        s = Secure(c, certs, bearer)
        admin = s.client(retry_deadline=60.0, user="root", password=ROOT_PASSWORD, **s.tls())
        c.leader(admin, timeout=60.0)
        yield s
    finally:
        c.stop()


def test_lock_over_mutual_tls_with_a_password(secure: Secure) -> None:
    client = secure.client(user="alice", password=ALICE_PASSWORD, **secure.tls(tls_domain="localhost"))
    with client.lock("jobs/tls-password", ttl=10) as lock:
        assert lock.token > 0
        info = client.describe("jobs/tls-password")
        assert info is not None and [h.token for h in info.holders] == [lock.token]
    assert client.describe("jobs/tls-password") is None


def test_lock_with_a_bearer_token_and_pem_bytes(secure: Secure) -> None:
    pem = {k: Path(v).read_bytes() for k, v in secure.tls().items()}
    client = secure.client(bearer=secure.bearer, **pem)
    with client.lock("jobs/tls-bearer", ttl=10) as lock:
        assert lock.token > 0
        assert client.verify("jobs/tls-bearer", lock.token).current


def test_a_missing_right_is_permission_denied(secure: Secure) -> None:
    client = secure.client(user="alice", password=ALICE_PASSWORD, **secure.tls())
    with pytest.raises(errors.PermissionDenied) as refused:
        client.lock("reports/not-alices", ttl=10)
    assert refused.value.reason == "PERMISSION_DENIED" and not refused.value.transient
    mine = client.try_lock("jobs/alices")  # her own prefix is still hers
    assert mine is not None
    mine.release()


@pytest.mark.parametrize("credentials", [
    {"user": "alice", "password": "not-her-password"},
    {"user": "nobody", "password": ALICE_PASSWORD},
    {"bearer": "not-a-token-the-cluster-minted-0123456789"},
    {},
])
def test_bad_credentials_are_unauthenticated(secure: Secure, credentials: Dict[str, str]) -> None:
    with pytest.raises(errors.Unauthenticated) as refused:
        secure.client(**credentials, **secure.tls()).lock("jobs/bad-credentials", ttl=10)
    assert refused.value.reason == "UNAUTHENTICATED"


@pytest.mark.parametrize("tls", [
    {"tls_ca": None, "tls_cert": None, "tls_key": None},  # plaintext to a TLS listener
    {"tls_cert": None, "tls_key": None},  # no client certificate for mutual TLS
    {"tls_domain": "not-a-node.invalid"},  # a name the nodes' certificates do not carry
])
def test_tls_refusals(secure: Secure, tls: Dict[str, Optional[str]]) -> None:
    with pytest.raises(errors.FencelockError):
        client = secure.client(retry_deadline=2.0, user="alice", password=ALICE_PASSWORD, **secure.tls(**tls))
        client.lock("jobs/tls-refused", ttl=10)


def test_tls_options_are_checked(secure: Secure) -> None:
    with pytest.raises(errors.ConfigError):
        fencelock.Client(secure.cluster.endpoints, **secure.tls(tls_key=None))
    with pytest.raises(errors.ConfigError):
        fencelock.Client(secure.cluster.endpoints, user="alice", password=ALICE_PASSWORD, bearer=secure.bearer)


def test_async_client_over_mutual_tls_with_a_bearer_token(secure: Secure) -> None:
    async def main() -> None:
        client = await AsyncClient.connect(
            secure.cluster.endpoints, retry_deadline=30.0, bearer=secure.bearer, **secure.tls()
        )
        async with client.lock("jobs/tls-async", ttl=10) as lock:
            assert lock.token > 0
        with pytest.raises(errors.PermissionDenied):
            await client.lock("reports/tls-async", ttl=10)

    asyncio.run(asyncio.wait_for(main(), 60))
