"""A TCP connect probe for systems on which no command may run (appliances, read-only systems)."""

import socket
import time

from prep_assets.transports.base import TransportTimeoutError, UnreachableError


def probe_tcp(system: str, host: str, port: int, timeout: float) -> float:
    """Open and close one TCP connection to ``host:port``; return the connect time in milliseconds."""
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except TimeoutError as error:
        raise TransportTimeoutError(
            system, f"TCP connect to {host}:{port} timed out after {timeout:g} s"
        ) from error
    except OSError as error:
        raise UnreachableError(
            system, f"TCP connect to {host}:{port} failed: {error.strerror or error}"
        ) from error
    return (time.monotonic() - started) * 1000
