"""Keep the tests on this machine: a clean environment and a guard on outgoing connections.

The tests may reach only 127.0.0.0/8, ::1, Unix sockets and the IPv6 link-local
addresses of network namespaces that they create themselves. Every connect()
of the pytest process to anything else is refused and recorded, and the test
that made it fails, so a wrong address cannot hide behind an "unreachable"
result. Child processes (sshd, Prometheus, the Dagster daemon) are not
guarded here; they get the cleaned environment and loopback addresses only.
"""

import ipaddress
import os
import socket
from collections.abc import Iterator

import pytest

# Settings of the operator's shell that would send test traffic elsewhere or
# change what the tests check: proxies and every prep-assets variable.
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")
LOOPBACK_ONLY = "127.0.0.0/8,localhost,::1"

_violations: list[str] = []
_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


def _allowed(family: int, address: object) -> bool:
    if family == getattr(socket, "AF_UNIX", None):
        return True
    if not isinstance(address, tuple) or not address:
        return False
    host = str(address[0])
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or (isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local)


def _check(sock: socket.socket, address: object) -> None:
    if not _allowed(sock.family, address):
        _violations.append(repr(address))
        raise ConnectionRefusedError(f"the test network guard refused a connection to {address!r}")


def _guarded_connect(self: socket.socket, address: object) -> None:
    _check(self, address)
    _original_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _check(self, address)
    return _original_connect_ex(self, address)


def pytest_configure(config: pytest.Config) -> None:
    for name in list(os.environ):
        if name.startswith("PREP_") or name.lower() in _PROXY_VARIABLES:
            del os.environ[name]
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = LOOPBACK_ONLY
    # Tests describe every SSH setting they use; the operator's ~/.ssh/config must not apply.
    os.environ["PREP_SSH_CONFIG"] = ""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


def pytest_unconfigure(config: pytest.Config) -> None:
    socket.socket.connect = _original_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _original_connect_ex  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def no_connection_outside_loopback() -> Iterator[None]:
    """Fail the test that tried to connect outside loopback and its own namespaces."""
    start = len(_violations)
    yield
    refused = _violations[start:]
    assert not refused, f"connections outside loopback were attempted: {', '.join(refused)}"
