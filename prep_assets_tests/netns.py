"""Network namespaces joined by veth links, for hosts that only some other hosts can reach.

Each link gets the IPv6 link-local addresses ``fe80::1`` and ``fe80::2``,
added with ``nodad`` so they work at once. Link-local addresses are only valid
on their link, so no route, private range or public address is involved, and
a host is reachable only from the namespaces that share a link with it. A
client names the link in the address's zone: ``fe80::2%ifname``.
"""

import itertools
import logging
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

logger = logging.getLogger(__name__)

IP_PATH = "/usr/sbin/ip"
NEAR_ADDRESS = "fe80::1"
FAR_ADDRESS = "fe80::2"
# Numbers the links of the whole test session, so names never repeat.
_LINK_NUMBERS = itertools.count(1)


@dataclass(frozen=True)
class Link:
    """A veth pair: ``near`` in ``near_namespace`` (None for the test's own), ``far`` in ``far_namespace``."""

    near: str
    far: str
    near_namespace: str | None
    far_namespace: str

    @property
    def far_address(self) -> str:
        """How the near side reaches the far side."""
        return f"{FAR_ADDRESS}%{self.near}"


def run_ip(*args: str, namespace: str | None = None) -> None:
    command = [IP_PATH, *args] if namespace is None else [IP_PATH, "-n", namespace, *args]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} failed with exit code {completed.returncode}: "
            f"{completed.stderr.strip()}",
            pytrace=False,
        )


class Namespaces:
    """Namespaces and links made by one test, deleted again by ``close``."""

    def __init__(self, prefix: str) -> None:
        if not os.access(IP_PATH, os.X_OK):
            pytest.fail(f"{IP_PATH} is missing; install iproute2", pytrace=False)
        self.prefix = prefix
        self.namespaces: list[str] = []

    def add(self, label: str) -> str:
        name = f"{self.prefix}-{label}"
        run_ip("netns", "add", name)
        self.namespaces.append(name)
        run_ip("link", "set", "lo", "up", namespace=name)
        return name

    def link(self, near_namespace: str | None, far_namespace: str) -> Link:
        """Join two namespaces with a veth pair; ``near_namespace`` None is the test's own."""
        number = next(_LINK_NUMBERS)
        # Interface names have at most 15 characters.
        near = f"pn{os.getpid() % 100000}x{number}n"
        far = f"pn{os.getpid() % 100000}x{number}f"
        run_ip("link", "add", near, "type", "veth", "peer", "name", far, "netns", far_namespace)
        if near_namespace is not None:
            run_ip("link", "set", near, "netns", near_namespace)
        for interface, namespace, address in (
            (near, near_namespace, NEAR_ADDRESS),
            (far, far_namespace, FAR_ADDRESS),
        ):
            run_ip("addr", "add", f"{address}/64", "dev", interface, "nodad", namespace=namespace)
            run_ip("link", "set", interface, "up", namespace=namespace)
        return Link(near, far, near_namespace, far_namespace)

    def close(self) -> None:
        # Deleting a namespace deletes the veth ends in it, and with them their peers.
        for name in reversed(self.namespaces):
            completed = subprocess.run(
                [IP_PATH, "netns", "delete", name], capture_output=True, text=True, check=False
            )
            if completed.returncode != 0:
                logger.warning("could not delete network namespace %s: %s", name, completed.stderr)
        self.namespaces.clear()


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    """Namespaces for one test, deleted after it and after its hosts stop."""
    created = Namespaces(f"prep-{os.getpid() % 100000}")
    try:
        yield created
    finally:
        created.close()
