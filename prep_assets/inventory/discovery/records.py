"""Results of discovery sources: the records found and the outcome of each query.

Records and results are plain data with ``to_dict``/``from_dict``, because they
are stored with the inventory value between runs.
"""

import enum
import ipaddress
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


class RecordKind(enum.StrEnum):
    """The kind of machine that a discovered record describes."""

    QEMU = "qemu"
    LXC = "lxc"
    PROXMOX_NODE = "proxmox-node"
    KUBERNETES_NODE = "kubernetes-node"


class SourceState(enum.StrEnum):
    UP = "up"
    DOWN = "down"
    # Turned off in the discovery configuration, so it was not queried.
    DISABLED = "disabled"


class ErrorKind(enum.StrEnum):
    """The reason a discovery source is down."""

    UNREACHABLE = "unreachable"
    TIMED_OUT = "timed_out"
    AUTH_FAILED = "auth_failed"
    FORBIDDEN = "forbidden"
    TLS_ERROR = "tls_error"
    CREDENTIAL_ERROR = "credential_error"
    CONFIG_ERROR = "config_error"
    INVALID_RESPONSE = "invalid_response"
    ERROR = "error"


@dataclass(frozen=True)
class DiscoveredRecord:
    """One node or guest that a discovery source reported."""

    # The source key, for example "proxmox:homelab" or "kubernetes:k3s".
    source: str
    kind: RecordKind
    # Unique within the source and stable across renames where the source allows it:
    # "qemu/101", "lxc/102", "node/pve1".
    id: str
    name: str
    status: str | None = None
    # The Proxmox node a guest runs on.
    node: str | None = None
    vmid: int | None = None
    addresses: tuple[str, ...] = ()
    # Facts without a System field, such as tags, pool, roles or the kubelet version.
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        """The record's key across sources and runs: source and id."""
        return f"{self.source}/{self.id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind.value,
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "node": self.node,
            "vmid": self.vmid,
            "addresses": list(self.addresses),
            "attributes": dict(self.attributes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DiscoveredRecord":
        return cls(
            source=data["source"],
            kind=RecordKind(data["kind"]),
            id=data["id"],
            name=data["name"],
            status=data.get("status"),
            node=data.get("node"),
            vmid=data.get("vmid"),
            addresses=tuple(data.get("addresses", ())),
            attributes=dict(data.get("attributes", {})),
        )


@dataclass
class SourceResult:
    """The outcome of querying one discovery source once."""

    key: str
    # "proxmox", "kubernetes" or "dns".
    kind: str
    name: str
    # Where the source was queried, without credentials: host:port or a kubeconfig context.
    endpoint: str
    state: SourceState = SourceState.UP
    error_kind: ErrorKind | None = None
    message: str = ""
    records: list[DiscoveredRecord] = field(default_factory=list)
    # HTTP requests sent to the source's API (DNS: queries sent).
    api_calls: int = 0
    duration_ms: float = 0.0
    # Per-guest address lookups tried and failed (Proxmox only).
    address_lookups: int = 0
    address_failures: int = 0

    def fail(self, kind: ErrorKind, message: str) -> None:
        """Mark the source as down; records found before the failure are dropped."""
        self.state = SourceState.DOWN
        self.error_kind = kind
        self.message = message
        self.records = []

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Record the duration of the enclosed block in ``duration_ms``."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.duration_ms = round((time.monotonic() - started) * 1000, 1)

    def summary(self) -> dict[str, Any]:
        """The result without its records, as shown in the status document."""
        return {
            "key": self.key,
            "kind": self.kind,
            "name": self.name,
            "endpoint": self.endpoint,
            "state": self.state.value,
            "error_kind": self.error_kind.value if self.error_kind else None,
            "message": self.message,
            "records": len(self.records),
            "api_calls": self.api_calls,
            "duration_ms": self.duration_ms,
            "address_lookups": self.address_lookups,
            "address_failures": self.address_failures,
        }


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_reported_address(value: object) -> IPAddress | None:
    """Parse an IP address that a discovery source reported, or return None if it is not one.

    Guests and nodes report their own addresses, so the text is untrusted.
    Python's ipaddress accepts any text after "%" as an IPv6 zone, such as
    "fd00::1%$(reboot)". A zone only qualifies link-local addresses, which
    discovery does not use, so an address with a zone is rejected as well.
    """
    if not isinstance(value, str) or "%" in value:
        return None
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None
