"""One connect deadline for a whole jump chain: the target's connect_timeout.

The hosts run on loopback addresses: a jump host's sshd reaches the target
over loopback too, so no network namespace is needed. A silent listener
stands for a hop or target that accepts TCP and never sends a byte, and a
delaying relay for a hop that responds late but within its own timeout.
"""

import dataclasses
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prep_assets.models import AccessState
from prep_assets.transports.base import TransportTimeoutError
from prep_assets.transports.ssh import SshTarget, SshTransport
from prep_assets_tests.sshhosts import HostKind, SshHost, SshHostPool

pytestmark = pytest.mark.integration

RELAY_ADDRESS = "127.0.0.1"
RELAY_BUFFER_BYTES = 65536
# How often the relay threads check whether the test has ended.
RELAY_POLL_SECONDS = 0.2
JOIN_SECONDS = 5.0


class DelayingRelay:
    """A TCP relay on loopback that waits ``delay`` seconds before it connects a client upstream."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self._server = socket.create_server((RELAY_ADDRESS, 0))
        self._server.settimeout(RELAY_POLL_SECONDS)
        self.port = int(self._server.getsockname()[1])
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _peer = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._sockets.append(client)
            thread = threading.Thread(target=self._relay, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _relay(self, client: socket.socket) -> None:
        # Whatever the client sends meanwhile waits in the kernel's receive buffer.
        if self._stop.wait(self.delay):
            return
        upstream = socket.create_connection(self.upstream, timeout=JOIN_SECONDS)
        self._sockets.append(upstream)
        peers = {client: upstream, upstream: client}
        while not self._stop.is_set():
            readable, _, _ = select.select(list(peers), [], [], RELAY_POLL_SECONDS)
            for sock in readable:
                try:
                    data = sock.recv(RELAY_BUFFER_BYTES)
                    if not data:
                        return
                    peers[sock].sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(JOIN_SECONDS)
        self._server.close()
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def jump_host(start_ssh_host, tmp_path: Path) -> SshHost:
    return start_ssh_host(
        HostKind.WITH_SYSSTAT, name=f"jump-{tmp_path.name[-20:]}", allow_tcp_forwarding=True
    )


@pytest.fixture
def slow_jump(
    jump_host: SshHost, ssh_hosts: SshHostPool, tmp_path: Path
) -> Iterator[tuple[DelayingRelay, str]]:
    """Return a relay that delays connections to ``jump_host`` and a known_hosts file naming it."""
    relay = DelayingRelay((jump_host.address, jump_host.port), delay=3.0)
    stored_name = f"[{jump_host.address}]:{jump_host.port} "
    lines = [
        f"[{RELAY_ADDRESS}]:{relay.port} {line[len(stored_name) :]}"
        for line in ssh_hosts.known_hosts_path.read_text().splitlines()
        if line.startswith(stored_name)
    ]
    known_hosts = tmp_path / "known_hosts_relay"
    known_hosts.write_text("\n".join(lines) + "\n")
    try:
        yield relay, str(known_hosts)
    finally:
        relay.close()


def hop(test_host: SshHost, connect_timeout: float, **changes) -> SshTarget:
    target = test_host.ssh_target(connect_timeout=connect_timeout)
    return dataclasses.replace(target, name=test_host.name, **changes)


def connect_failure(target: SshTarget) -> tuple[TransportTimeoutError, float]:
    started = time.monotonic()
    with pytest.raises(TransportTimeoutError) as caught:
        SshTransport("target", target).run(["true"], timeout=5)
    return caught.value, time.monotonic() - started


def test_silent_hop_bounded_by_target_timeout(ssh_hosts: SshHostPool):
    silent = ssh_hosts["silent"]
    target = hop(
        ssh_hosts["with_sysstat"], connect_timeout=1.5, jumps=(hop(silent, connect_timeout=8),)
    )

    error, elapsed = connect_failure(target)

    assert error.state is AccessState.TIMED_OUT
    assert error.message.startswith(f"jump host silent ({silent.user}@"), error.message
    assert "banner" in error.message
    assert "connect timeout of 1.5 s" in error.message
    # A correctness bound with a generous margin, not a benchmark.
    assert elapsed < 1.5 + 2


def test_silent_hop_keeps_own_shorter_timeout(ssh_hosts: SshHostPool):
    silent = ssh_hosts["silent"]
    # 1.3 has no exact binary form, so a rounding error would show as a cut limit.
    target = hop(
        ssh_hosts["with_sysstat"], connect_timeout=10, jumps=(hop(silent, connect_timeout=1.3),)
    )

    error, elapsed = connect_failure(target)

    assert error.message.startswith("jump host silent ("), error.message
    assert "timed out after 1.3 s" in error.message
    assert "covers its jump hosts" not in error.message
    assert elapsed < 1.3 + 2


def test_slow_hop_shares_target_timeout(
    slow_jump: tuple[DelayingRelay, str], jump_host: SshHost, ssh_hosts: SshHostPool
):
    relay, known_hosts = slow_jump
    silent = ssh_hosts["silent"]
    # The relay delays the hop by 3 s, within its own 8 s. The target then gets
    # only the rest of its 4 s, not 4 s of its own.
    jump = hop(
        jump_host,
        connect_timeout=8,
        host=RELAY_ADDRESS,
        port=relay.port,
        known_hosts_path=known_hosts,
    )
    target = hop(silent, connect_timeout=4, jumps=(jump,))

    error, elapsed = connect_failure(target)

    assert error.message.startswith(f"SSH connection to {silent.address}:"), error.message
    assert "banner" in error.message
    assert jump_host.login_count() == 1
    # Separate timeouts would take about 3 + 4 s.
    assert elapsed < 4 + 2
