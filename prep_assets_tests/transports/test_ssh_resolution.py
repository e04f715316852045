"""Name resolution of SshTransport and the TCP probe: bounded by the timeout, each address tried.

A fake resolver replaces socket.getaddrinfo for the names under ``.test``
(a TLD reserved for tests by RFC 2606) and passes every other call to the
real function, so no test name ever reaches a real resolver. The one real
name, ``localhost``, comes from /etc/hosts.
"""

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prep_assets.models import AccessState
from prep_assets.transports.base import TransportTimeoutError, UnreachableError
from prep_assets.transports.ssh import SshTarget, SshTransport
from prep_assets.transports.tcp import probe_tcp
from prep_assets_tests.sshhosts import HostKind, SshHost, SshHostPool

pytestmark = pytest.mark.integration

HUNG_NAME = "hung-resolver.test"
UNKNOWN_NAME = "unknown-name.test"
TWO_ADDRESSES_NAME = "two-addresses.test"
# Maximum time that the fake resolver blocks a lookup of HUNG_NAME when no
# teardown releases it, so code without a bound still ends.
HANG_SECONDS = 10.0

AddressInfo = tuple[int, int, int, str, tuple[str, int]]


@dataclasses.dataclass
class FakeResolver:
    """Addresses per test name, the (host, flags, thread name) of every call, and the hang's end."""

    addresses: dict[str, list[AddressInfo]] = dataclasses.field(default_factory=dict)
    calls: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)
    release: threading.Event = dataclasses.field(default_factory=threading.Event)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeResolver]:
    fake = FakeResolver()
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(
        host: str, port: int, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list:
        fake.calls.append((host, flags, threading.current_thread().name))
        # A numeric-only lookup of a name fails without asking a resolver, as the real one does.
        if not host.endswith(".test") or flags & socket.AI_NUMERICHOST:
            return real_getaddrinfo(host, port, family, type, proto, flags)
        if host == HUNG_NAME:
            fake.release.wait(HANG_SECONDS)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host in fake.addresses:
            return list(fake.addresses[host])
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield fake
    fake.release.set()


def connect(target: SshTarget) -> SshTransport:
    transport = SshTransport("resolution-test", target)
    transport.run(["true"])
    return transport


def known_hosts_for(ssh_hosts: SshHostPool, host: SshHost, name: str, path: Path) -> str:
    """Write a known_hosts file that has the host key of ``host`` under ``name`` and return its path."""
    stored_name = f"[{host.address}]:{host.port} "
    for line in ssh_hosts.known_hosts_path.read_text().splitlines():
        if line.startswith(stored_name):
            path.write_text(f"[{name}]:{host.port} {line[len(stored_name) :]}\n")
            return str(path)
    raise AssertionError(f"no known_hosts line for {stored_name.strip()}")


def test_hung_resolver_bounded_by_timeout(resolver: FakeResolver, ssh_hosts: SshHostPool):
    connect_timeout = 1.0
    target = dataclasses.replace(
        ssh_hosts["with_sysstat"].ssh_target(connect_timeout=connect_timeout), host=HUNG_NAME
    )

    started = time.monotonic()
    with pytest.raises(TransportTimeoutError) as caught:
        connect(target)
    elapsed = time.monotonic() - started

    assert caught.value.state is AccessState.TIMED_OUT
    assert caught.value.message.startswith(
        f"resolving host name {HUNG_NAME!r} timed out after 1 s"
    ), caught.value.message
    # A correctness bound with a generous margin, not a benchmark.
    assert elapsed < connect_timeout + 2


def test_unresolvable_name_unreachable(resolver: FakeResolver, ssh_hosts: SshHostPool):
    target = dataclasses.replace(ssh_hosts["with_sysstat"].ssh_target(), host=UNKNOWN_NAME)

    with pytest.raises(UnreachableError) as caught:
        connect(target)

    assert caught.value.message == (
        f"could not resolve host name {UNKNOWN_NAME!r}: Name or service not known; "
        "check the address in the inventory"
    )


def test_ip_address_resolved_in_caller_thread(resolver: FakeResolver, ssh_hosts: SshHostPool):
    host = ssh_hosts["with_sysstat"]

    with connect(host.ssh_target()):
        pass

    lookups = [call for call in resolver.calls if call[0] == host.address]
    assert lookups
    assert all(flags & socket.AI_NUMERICHOST for _host, flags, _thread in lookups)
    assert all(thread == threading.current_thread().name for _host, _flags, thread in lookups)


def test_next_address_after_refused(
    resolver: FakeResolver, ssh_hosts: SshHostPool, start_ssh_host, tmp_path: Path
):
    closed = ssh_hosts["closed_port"]
    host = start_ssh_host(HostKind.WITH_SYSSTAT, name=f"two-addresses-{tmp_path.name[-20:]}")
    resolver.addresses[TWO_ADDRESSES_NAME] = [
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (closed.address, closed.port)),
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host.address, host.port)),
    ]
    known_hosts = known_hosts_for(ssh_hosts, host, TWO_ADDRESSES_NAME, tmp_path / "known_hosts")
    target = dataclasses.replace(
        host.ssh_target(), host=TWO_ADDRESSES_NAME, known_hosts_path=known_hosts
    )

    with SshTransport("resolution-test", target) as transport:
        result = transport.run(["printf", "%s", "second address"])

    assert result.stdout == "second address"
    assert host.login_count() == 1


def test_localhost_name_connects(ssh_hosts: SshHostPool, start_ssh_host, tmp_path: Path):
    host = start_ssh_host(
        HostKind.WITH_SYSSTAT, name=f"localhost-{tmp_path.name[-20:]}", address="127.0.0.1"
    )
    known_hosts = known_hosts_for(ssh_hosts, host, "localhost", tmp_path / "known_hosts")
    target = dataclasses.replace(host.ssh_target(), host="localhost", known_hosts_path=known_hosts)

    with SshTransport("resolution-test", target) as transport:
        result = transport.run(["printf", "%s", "by name"])

    assert result.stdout == "by name"


def test_tcp_probe_hung_resolver_bounded(resolver: FakeResolver):
    timeout = 1.0

    started = time.monotonic()
    with pytest.raises(TransportTimeoutError) as caught:
        probe_tcp("appliance", HUNG_NAME, 443, timeout)
    elapsed = time.monotonic() - started

    assert caught.value.message.startswith(f"resolving host name {HUNG_NAME!r} timed out")
    # A correctness bound with a generous margin, not a benchmark.
    assert elapsed < timeout + 2


def test_tcp_probe_unknown_name_unreachable(resolver: FakeResolver):
    with pytest.raises(UnreachableError) as caught:
        probe_tcp("appliance", UNKNOWN_NAME, 443, 1.0)

    assert caught.value.message == (
        f"could not resolve host name {UNKNOWN_NAME!r}: Name or service not known"
    )
