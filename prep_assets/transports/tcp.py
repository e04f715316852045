"""TCP connections whose name resolution and connect end by one deadline.

``socket.create_connection`` applies its timeout to each connect but not to
name resolution, so a hung DNS server could hold a system far longer than its
timeout. Here a host name is resolved in a daemon thread that the caller
stops waiting for at the deadline. The module also has the TCP connect probe
for systems on which no command may run (appliances, read-only systems).
"""

import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from prep_assets.transports.base import TransportTimeoutError, UnreachableError

# One entry of the list that socket.getaddrinfo returns: family, type, proto,
# canonical name and the address to connect to.
AddressInfo = tuple[int, int, int, str, tuple[Any, ...]]


class ResolutionTimeoutError(TimeoutError):
    """Name resolution of a host did not finish before the deadline."""


def connect_tcp(host: str, port: int, deadline: float) -> socket.socket:
    """Resolve ``host`` and open a TCP connection to it by ``deadline`` (a time.monotonic() value).

    Like socket.create_connection, each resolved address is tried in turn and
    the last error is raised, but each one gets only the time that is left.
    Raises ResolutionTimeoutError, socket.gaierror when the name does not
    resolve, TimeoutError, or another OSError of the connect.
    """
    addresses = resolve_tcp(host, port, deadline)
    error: OSError = OSError(f"{host} resolved to no address")
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            error = TimeoutError()
            break
        try:
            return _connect_to(address, remaining)
        except OSError as exc:
            error = exc
    raise error


def resolve_tcp(host: str, port: int, deadline: float) -> Sequence[AddressInfo]:
    """Return the TCP addresses of ``host``, resolving a host name by ``deadline``.

    A literal IP address is parsed in the calling thread and never reaches a
    resolver. Raises ResolutionTimeoutError or socket.gaierror.
    """
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass

    lookup = _resolve_in_thread(host, port)
    try:
        return lookup.result(timeout=max(deadline - time.monotonic(), 0.0))
    except TimeoutError:
        raise ResolutionTimeoutError(f"resolving host name {host!r} timed out") from None


def _connect_to(address: AddressInfo, timeout: float) -> socket.socket:
    """Open a TCP connection to one address from getaddrinfo, waiting at most ``timeout`` seconds."""
    family, kind, proto, _canonical_name, sockaddr = address
    sock = socket.socket(family, kind, proto)
    try:
        sock.settimeout(timeout)
        sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _resolve_in_thread(host: str, port: int) -> Future[Sequence[AddressInfo]]:
    """Start resolving ``host`` for TCP in a daemon thread and return the future of its addresses.

    getaddrinfo cannot be interrupted, so a caller that stops waiting leaves
    the thread blocked until the resolver returns. Because it is a daemon
    thread, it never delays the exit of the process.
    """
    future: Future[Sequence[AddressInfo]] = Future()

    def resolve() -> None:
        try:
            future.set_result(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except Exception as exc:  # re-raised by future.result() in the waiting caller
            future.set_exception(exc)

    threading.Thread(target=resolve, name=f"resolve-{host}", daemon=True).start()
    return future


def format_seconds(seconds: float) -> str:
    """Format a time limit for a message: 1.5 as "1.5", 10.0 as "10", 0.973 as "0.97"."""
    return f"{round(seconds, 2):g}"


def probe_tcp(system: str, host: str, port: int, timeout: float) -> float:
    """Open and close one TCP connection to ``host:port``; return the connect time in milliseconds.

    ``timeout`` (seconds) covers name resolution and the connect together.
    """
    started = time.monotonic()
    try:
        with connect_tcp(host, port, started + timeout):
            pass
    except ResolutionTimeoutError:
        raise TransportTimeoutError(
            system,
            f"resolving host name {host!r} timed out after {format_seconds(timeout)} s; check "
            "the DNS servers of this machine (/etc/resolv.conf), or put the IP address in the "
            "inventory",
        ) from None
    except TimeoutError:
        raise TransportTimeoutError(
            system, f"TCP connect to {host}:{port} timed out after {format_seconds(timeout)} s"
        ) from None
    except socket.gaierror as error:
        raise UnreachableError(
            system, f"could not resolve host name {host!r}: {error.strerror}"
        ) from None
    except OSError as error:
        raise UnreachableError(
            system, f"TCP connect to {host}:{port} failed: {error.strerror or error}"
        ) from None
    return (time.monotonic() - started) * 1000
