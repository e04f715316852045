"""Fixtures of the discovery tests: fake Proxmox VE clusters on loopback and infra repos that configure them."""

import asyncio
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from fakepve import FakePve
from fakepve.certs import make_cert

HOST = "127.0.0.1"
TOKEN_ID = "prep@pve!discovery"
START_TIMEOUT = 30.0


class PveCluster:
    """A fakepve cluster served over TLS on 127.0.0.1 from its own event loop in a thread.

    The API accepts the token ``TOKEN_ID`` with ``secret``; ``cafile`` verifies its certificate.
    """

    def __init__(self, directory: Path, secret: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.cafile, keyfile, _ = make_cert(str(directory), hosts=(HOST,))
        self.secret = secret
        self.pve = FakePve(host=HOST, port=0)
        self.pve.time_scale = 0
        self.pve.apitokens[TOKEN_ID] = secret
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fakepve", daemon=True)
        self._thread.start()
        try:
            self._run(self.pve.start(self.cafile, keyfile))
        except BaseException:
            self.stop()
            raise

    @property
    def port(self) -> int:
        return int(self.pve.port)

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.port}"

    def request_count(self) -> int:
        return len(self.pve.requests)

    def _run(self, coroutine: object) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(START_TIMEOUT)  # type: ignore[arg-type]

    def stop(self) -> None:
        """Stop listening, then stop the event loop and join its thread."""
        try:
            if self.pve.runner is not None:
                self._run(self.pve.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(START_TIMEOUT)
            if not self._thread.is_alive():
                self._loop.close()


@pytest.fixture
def start_pve(tmp_path: Path) -> Iterator:
    """Start fake clusters with ``start_pve(name, secret)``; every one is stopped after the test."""
    clusters: list[PveCluster] = []

    def start(name: str = "pve", secret: str = "pve-token-secret-0001") -> PveCluster:
        cluster = PveCluster(tmp_path / f"pki-{name}", secret)
        clusters.append(cluster)
        return cluster

    yield start
    for cluster in clusters:
        cluster.stop()


@pytest.fixture
def closed_port() -> int:
    """A loopback port that nothing listens on: connections to it are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections into its backlog and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def discovery_text(
    proxmox: Sequence[str] = (), kubernetes: Sequence[str] = (), dns: Sequence[str] = ()
) -> str:
    """Render docs/reference/discovery.md with the given table rows."""
    text = "# Discovery\n"
    if proxmox:
        text += (
            "\n## Proxmox\n\n| Cluster | Endpoint | Token ID | Credentials | TLS verify | "
            "Guest addresses | Timeout |\n|---|---|---|---|---|---|---|\n"
        )
        text += "".join(row + "\n" for row in proxmox)
    if kubernetes:
        text += (
            "\n## Kubernetes\n\n| Cluster | Context | Credentials | Timeout |\n|---|---|---|---|\n"
        )
        text += "".join(row + "\n" for row in kubernetes)
    if dns:
        text += "\n## DNS\n\n| Resolver | Domain | Timeout |\n|---|---|---|\n"
        text += "".join(row + "\n" for row in dns)
    return text


def proxmox_row(
    name: str,
    cluster: PveCluster | None = None,
    *,
    endpoint: str | None = None,
    credentials: str = "pve-token",
    verify: str | None = None,
    lookups: int = 0,
    timeout: float = 3.0,
    token_id: str = TOKEN_ID,
) -> str:
    """A Proxmox row for ``cluster``, or for ``endpoint`` when no cluster answers there.

    An empty ``token_id`` means the credential holds the whole token.
    """
    target = endpoint or (cluster.endpoint if cluster else "")
    ca = verify or (cluster.cafile if cluster else "no")
    return f"| {name} | {target} | {token_id} | {credentials} | {ca} | {lookups} | {timeout} |"
