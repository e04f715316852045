"""Plain data types shared by every step of the PREP loop.

Nothing here imports Dagster, so parsers, transports, checks and renderers can be
tested on their own. Every type converts to JSON-ready dicts with ``to_dict`` and
back with ``from_dict``, because the per-system results are stored as JSON between
runs.
"""

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any


class AccessMethod(enum.StrEnum):
    """How prep-assets runs a command on a system."""

    LOCAL = "local"
    SSH = "ssh"
    PCT = "pct"
    QM = "qm"
    QM_API = "qm-api"
    KUBECTL = "kubectl"
    # No command is ever run: reachability is a TCP connect to the documented port.
    TCP = "tcp"
    # Not contacted at all (unmanaged devices, systems kept only for the record).
    NONE = "none"


# System types whose root file system is read-only or managed by a vendor:
# nothing is installed there and a missing tool is not a failure.
READ_ONLY_TYPES = frozenset({"haos", "appliance", "talos", "router", "switch", "unmanaged"})


@dataclass(frozen=True)
class SourceLocation:
    """A place in a document: file path relative to the infra repo, 1-based line and column."""

    path: str
    line: int
    column: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True)
class DocumentProblem:
    """A row or entry of a document that was left out, with the reason."""

    location: SourceLocation
    reason: str
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.location.path,
            "line": self.location.line,
            "column": self.location.column,
            "reason": self.reason,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DocumentProblem":
        location = SourceLocation(data["file"], data["line"], data.get("column", 1))
        return cls(location, data["reason"], data.get("name"))

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


@dataclass(frozen=True)
class System:
    """One system of the inventory, managed or unmanaged."""

    name: str
    type: str
    tier: str
    access: AccessMethod
    address: str | None = None
    port: int | None = None
    user: str | None = None
    jump: str | None = None
    credentials: str | None = None
    managed: bool = True
    attributes: dict[str, str] = field(default_factory=dict)
    source: SourceLocation | None = None
    # Provenance per field or attribute key: "docs", "derived" (a default chosen for a
    # discovered system) or a discovery source such as "proxmox:homelab". Empty when the
    # inventory was not merged with discovery (System.from_dict of older values too).
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def read_only(self) -> bool:
        return self.type in READ_ONLY_TYPES or self.attributes.get("read-only", "").lower() in {
            "yes",
            "true",
        }

    @property
    def contacted(self) -> bool:
        """Whether prep-assets opens any connection to this system."""
        return self.managed and self.access is not AccessMethod.NONE

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["access"] = self.access.value
        data["source"] = str(self.source) if self.source else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "System":
        values = dict(data)
        values["access"] = AccessMethod(values["access"])
        source = values.pop("source", None)
        if source:
            path, line, column = source.rsplit(":", 2)
            values["source"] = SourceLocation(path, int(line), int(column))
        return cls(**values)


@dataclass(frozen=True)
class ToolSpec:
    """A crisis tool expected on a system: the command to look for and its packages."""

    command: str
    # Package name per package manager, for example {"apt": "sysstat", "apk": "sysstat"}.
    packages: dict[str, str] = field(default_factory=dict)
    min_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class CommandResult:
    """The outcome of one command run through a transport."""

    exit_code: int
    stdout: str
    stderr: str
    duration_seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class AccessState(enum.StrEnum):
    """Outcome of the access check of one system."""

    REACHABLE = "reachable"
    UNREACHABLE = "unreachable"
    AUTH_FAILED = "auth_failed"
    HOST_KEY_UNKNOWN = "host_key_unknown"
    HOST_KEY_MISMATCH = "host_key_mismatch"
    TIMED_OUT = "timed_out"
    # A jump host, or the Proxmox node of a guest, did not accept the connection.
    JUMP_HOST_UNREACHABLE = "jump_host_unreachable"
    # The QEMU guest agent of a VM is not configured or not running.
    AGENT_MISSING = "agent_missing"
    # The API token or Kubernetes identity lacks a privilege or RBAC permission.
    PERMISSION_DENIED = "permission_denied"
    # The container, VM or pod named by the inventory does not exist.
    NOT_FOUND = "not_found"
    ERROR = "error"
    NOT_CONTACTED = "not_contacted"


@dataclass
class AccessResult:
    """Access status of one system as seen by one check."""

    system: str
    state: AccessState
    method: str
    # Connect plus first command, for a reachable system only.
    latency_ms: float | None = None
    message: str = ""
    # How long the whole check took, success or failure; bounded by the access timeout.
    duration_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AccessResult":
        values = dict(data)
        values["state"] = AccessState(values["state"])
        return cls(**values)


class ToolState(enum.StrEnum):
    INSTALLED = "installed"
    MISSING = "missing"
    OUTDATED = "outdated"
    NOT_APPLICABLE = "not_applicable"
    UNKNOWN = "unknown"


@dataclass
class ToolResult:
    """Whether one expected tool is present on one system."""

    command: str
    state: ToolState
    path: str | None = None
    package: str | None = None
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ToolResult":
        values = dict(data)
        values["state"] = ToolState(values["state"])
        return cls(**values)


@dataclass
class SystemCheck:
    """Access and tool results of one system from one pass, made over one connection."""

    system: str
    access: AccessResult
    tools: list[ToolResult]
    # The short vmstat sample taken over the same connection, when one was requested.
    sample: dict[str, Any] | None = None
    # What the tool check found out about the system: package_manager, os_id, os_version.
    platform: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "access": self.access.to_dict(),
            "tools": [tool.to_dict() for tool in self.tools],
            "sample": self.sample,
            "platform": self.platform,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SystemCheck":
        return cls(
            system=data["system"],
            access=AccessResult.from_dict(data["access"]),
            tools=[ToolResult.from_dict(tool) for tool in data["tools"]],
            sample=data.get("sample"),
            platform=data.get("platform", {}),
        )
