"""Parse ``docs/reference/discovery.md``: which discovery sources are on, and how to reach them.

The file is optional. Without it the inventory comes from the docs alone. Each
source kind has its own table under a heading that names it (``## Proxmox``,
``## Kubernetes``, ``## DNS``, at any level)::

    | Cluster | Endpoint            | Token ID           | Credentials | TLS verify | Guest addresses |
    | ------- | ------------------- | ------------------ | ----------- | ---------- | --------------- |
    | homelab | pve1.home.arpa:8006 | prep@pve!discovery | pve-api     | yes        | 50              |

    | Cluster | Context | Credentials |
    | ------- | ------- | ----------- |
    | k3s     | default | k3s         |

    | Resolver     | Domain    |
    | ------------ | --------- |
    | 10.0.0.1:53  | home.arpa |

Credentials name rows of the credentials map: an ``api-token`` for Proxmox, a
``kubeconfig`` for Kubernetes. A row with an invalid value is left out and
reported as a ``DocumentProblem`` at the cell; the other rows are still used.
docs/inventory-format.md describes every column.
"""

import ipaddress
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from prep_assets.inventory.access_patterns import split_address
from prep_assets.inventory.credentials import (
    VALUE_NOT_SHOWN,
    CredentialKind,
    CredentialPointer,
    validate_pointer_name,
)
from prep_assets.inventory.markdown import (
    Cell,
    Row,
    Table,
    field_cell,
    field_value,
    find_tables,
    map_columns,
    parse_yes_no,
    read_field,
)
from prep_assets.models import DocumentProblem, SourceLocation

logger = logging.getLogger(__name__)

DISCOVERY_CONFIG_PATH = "docs/reference/discovery.md"

DEFAULT_PROXMOX_PORT = 8006
DEFAULT_DNS_PORT = 53
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_TIMEOUT_SECONDS = 300.0
# Upper limit of the Guest addresses column, which bounds the per-guest API calls.
MAX_ADDRESS_LOOKUPS = 5000

_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# USER@REALM!TOKENNAME, as Proxmox VE shows a token ID.
_TOKEN_ID = re.compile(r"^[^\s@!=]+@[^\s@!=]+![A-Za-z][A-Za-z0-9._-]*$")
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$"
)

_COMMON_COLUMNS = {
    "credentials": "credentials",
    "credential": "credentials",
    "timeout": "timeout",
    "timeout seconds": "timeout",
    "timeout (s)": "timeout",
    "enabled": "enabled",
}
_PROXMOX_COLUMNS = {
    **_COMMON_COLUMNS,
    "cluster": "name",
    "name": "name",
    "endpoint": "endpoint",
    "api": "endpoint",
    "host": "endpoint",
    "url": "endpoint",
    "token id": "token_id",
    "token": "token_id",
    "tls verify": "verify",
    "verify tls": "verify",
    "ca": "verify",
    "guest addresses": "address_lookups",
    "address lookups": "address_lookups",
}
_KUBERNETES_COLUMNS = {
    **_COMMON_COLUMNS,
    "cluster": "name",
    "name": "name",
    "context": "context",
    "kubeconfig context": "context",
}
_DNS_COLUMNS = {
    **_COMMON_COLUMNS,
    "resolver": "resolver",
    "server": "resolver",
    "nameserver": "resolver",
    "domain": "domain",
    "search domain": "domain",
}


@dataclass(frozen=True)
class ProxmoxSource:
    """One Proxmox VE cluster (or single node) to list guests from."""

    name: str
    host: str
    port: int
    credential: CredentialPointer
    # USER@REALM!TOKENNAME; None when the secret contains the whole "ID=SECRET" token.
    token_id: str | None = None
    # True to verify TLS with the system CAs, False not to verify, or a CA bundle path.
    verify: bool | str = True
    # At most this many guest address lookups per discovery; 0 turns them off.
    address_lookups: int = 0
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    enabled: bool = True
    location: SourceLocation | None = None

    @property
    def key(self) -> str:
        return f"proxmox:{self.name}"

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class KubernetesSource:
    """One kubeconfig context to list nodes from."""

    name: str
    credential: CredentialPointer
    # None means the kubeconfig's current-context.
    context: str | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    enabled: bool = True
    location: SourceLocation | None = None

    @property
    def key(self) -> str:
        return f"kubernetes:{self.name}"

    @property
    def endpoint(self) -> str:
        return f"context {self.context}" if self.context else "current context"


@dataclass(frozen=True)
class DnsSource:
    """The resolver that forward and reverse lookups are sent to."""

    host: str
    port: int = DEFAULT_DNS_PORT
    # Appended to system names without a dot, and stripped from PTR names before matching.
    domain: str | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    enabled: bool = True
    location: SourceLocation | None = None

    @property
    def key(self) -> str:
        return "dns"

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass
class DiscoveryConfig:
    """Every source of ``discovery.md``; empty when the file does not exist."""

    proxmox: list[ProxmoxSource] = field(default_factory=list)
    kubernetes: list[KubernetesSource] = field(default_factory=list)
    dns: DnsSource | None = None
    problems: list[DocumentProblem] = field(default_factory=list)
    # The relative path when the file was read, None when discovery is not configured.
    path: str | None = None

    @property
    def configured(self) -> bool:
        return self.path is not None


def load_discovery_config(
    repo_root: Path, credentials: Mapping[str, CredentialPointer]
) -> DiscoveryConfig:
    """Read ``docs/reference/discovery.md`` under ``repo_root`` if it exists.

    An unreadable file is reported as a problem and discovery stays off.
    """
    path = repo_root / DISCOVERY_CONFIG_PATH
    if not path.is_file():
        logger.info(
            "%s not found under %s; the inventory comes from the docs alone",
            DISCOVERY_CONFIG_PATH,
            repo_root,
        )
        return DiscoveryConfig()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        logger.warning("Cannot read %s under %s: %s", DISCOVERY_CONFIG_PATH, repo_root, error)
        problem = DocumentProblem(
            SourceLocation(DISCOVERY_CONFIG_PATH, 1, 1),
            f"the file could not be read as UTF-8 text ({error}); discovery is off",
        )
        return DiscoveryConfig(problems=[problem])
    return parse_discovery_config(text, DISCOVERY_CONFIG_PATH, credentials)


def parse_discovery_config(
    text: str, path: str, credentials: Mapping[str, CredentialPointer]
) -> DiscoveryConfig:
    """Parse the discovery document; ``credentials`` are the pointers of the credentials map."""
    config = DiscoveryConfig(path=path)
    for table in find_tables(text):
        kind = _table_kind(table)
        if kind == "proxmox":
            _read_rows(
                table,
                _PROXMOX_COLUMNS,
                config,
                path,
                lambda row, fields, problems: _proxmox_row(
                    row, fields, path, credentials, problems
                ),
            )
        elif kind == "kubernetes":
            _read_rows(
                table,
                _KUBERNETES_COLUMNS,
                config,
                path,
                lambda row, fields, problems: _kubernetes_row(
                    row, fields, path, credentials, problems
                ),
            )
        elif kind == "dns":
            _read_rows(
                table,
                _DNS_COLUMNS,
                config,
                path,
                lambda row, fields, problems: _dns_row(row, fields, path, problems),
            )
        else:
            config.problems.append(
                DocumentProblem(
                    SourceLocation(path, table.line, 1),
                    "table ignored: it is not under a heading that names Proxmox, Kubernetes "
                    "or DNS, so its source kind is unknown",
                )
            )

    _drop_duplicates(config, path)
    config.problems.sort(key=lambda problem: (problem.location.line, problem.location.column))
    logger.info(
        "Discovery configuration %s: %d Proxmox, %d Kubernetes, %s DNS, %d problems",
        path,
        len(config.proxmox),
        len(config.kubernetes),
        "one" if config.dns else "no",
        len(config.problems),
    )
    return config


def _table_kind(table: Table) -> str | None:
    """Return the source kind that the nearest heading naming one gives the table."""
    for heading in reversed(table.headings):
        words = heading.text.lower()
        if "proxmox" in words:
            return "proxmox"
        if "kubernetes" in words or "k8s" in words:
            return "kubernetes"
        if re.search(r"\bdns\b", words):
            return "dns"
    return None


_RowReader = Callable[[Row, dict[str, int], list[DocumentProblem]], object | None]


def _read_rows(
    table: Table,
    columns: dict[str, str],
    config: DiscoveryConfig,
    path: str,
    read_row: _RowReader,
) -> None:
    fields, _ = map_columns(table.header, columns)
    for row in table.rows:
        problems: list[DocumentProblem] = []
        source = read_row(row, fields, problems)
        config.problems.extend(problems)
        if problems or source is None:
            continue
        if isinstance(source, ProxmoxSource):
            config.proxmox.append(source)
        elif isinstance(source, KubernetesSource):
            config.kubernetes.append(source)
        elif isinstance(source, DnsSource):
            _add_dns(config, source, path)


def _add_dns(config: DiscoveryConfig, source: DnsSource, path: str) -> None:
    """Keep the first enabled resolver; a second enabled one is reported and left out."""
    current = config.dns
    if current is None or (source.enabled and not current.enabled):
        config.dns = source
        return
    if source.enabled:
        first_line = current.location.line if current.location else 1
        config.problems.append(
            DocumentProblem(
                source.location or SourceLocation(path, 1, 1),
                "a second DNS resolver was left out: prep-assets queries one resolver, "
                f"the one on line {first_line}",
            )
        )


def _drop_duplicates(config: DiscoveryConfig, path: str) -> None:
    config.proxmox = _unique_names(config.proxmox, config.problems, path)
    config.kubernetes = _unique_names(config.kubernetes, config.problems, path)


_Named = TypeVar("_Named", ProxmoxSource, KubernetesSource)


def _unique_names(
    sources: list[_Named], problems: list[DocumentProblem], path: str
) -> list[_Named]:
    """Return the sources without the later rows of a name that is used twice (ignoring case)."""
    seen: dict[str, int] = {}
    kept: list[_Named] = []
    for source in sources:
        key = source.name.casefold()
        if key in seen:
            problems.append(
                DocumentProblem(
                    source.location or SourceLocation(path, 1, 1),
                    f"duplicate cluster name {source.name!r}: line {seen[key]} already uses "
                    "it (names are compared ignoring case); this row was left out",
                    name=source.name,
                )
            )
            continue
        seen[key] = source.location.line if source.location else 0
        kept.append(source)
    return kept


# --------------------------------------------------------------------------- rows


def _require(
    row: Row,
    fields: dict[str, int],
    field_name: str,
    label: str,
    path: str,
    problems: list[DocumentProblem],
    reason: str,
) -> None:
    if field_value(row, fields, field_name) is not None:
        return
    cell = field_cell(row, fields, field_name)
    where = cell.location(path) if cell else SourceLocation(path, row.line, 1)
    problems.append(DocumentProblem(where, f"missing {label}: {reason}"))


def _proxmox_row(
    row: Row,
    fields: dict[str, int],
    path: str,
    credentials: Mapping[str, CredentialPointer],
    problems: list[DocumentProblem],
) -> ProxmoxSource | None:
    name = read_field(row, fields, "name", _parse_source_name, path, problems)
    _require(
        row,
        fields,
        "name",
        "Cluster",
        path,
        problems,
        "every Proxmox row needs a cluster name such as homelab",
    )
    endpoint = read_field(row, fields, "endpoint", _parse_proxmox_endpoint, path, problems, name)
    _require(
        row,
        fields,
        "endpoint",
        "Endpoint",
        path,
        problems,
        "write the API address as host or host:port (port 8006 by default)",
    )
    token_id = read_field(row, fields, "token_id", _parse_token_id, path, problems, name)
    credential = _read_credential(
        row, fields, path, credentials, CredentialKind.API_TOKEN, problems, name
    )
    verify = read_field(row, fields, "verify", _parse_verify, path, problems, name)
    lookups = read_field(
        row, fields, "address_lookups", _parse_address_lookups, path, problems, name
    )
    timeout = read_field(row, fields, "timeout", _parse_timeout, path, problems, name)
    enabled = read_field(row, fields, "enabled", _parse_enabled, path, problems, name)
    if problems or name is None or endpoint is None or credential is None:
        return None
    host, port = endpoint
    return ProxmoxSource(
        name=name,
        host=host,
        port=port,
        credential=credential,
        token_id=token_id,
        verify=True if verify is None else verify,
        address_lookups=lookups or 0,
        timeout=timeout or DEFAULT_TIMEOUT_SECONDS,
        enabled=True if enabled is None else enabled,
        location=SourceLocation(path, row.line, 1),
    )


def _kubernetes_row(
    row: Row,
    fields: dict[str, int],
    path: str,
    credentials: Mapping[str, CredentialPointer],
    problems: list[DocumentProblem],
) -> KubernetesSource | None:
    name = read_field(row, fields, "name", _parse_source_name, path, problems)
    _require(
        row,
        fields,
        "name",
        "Cluster",
        path,
        problems,
        "every Kubernetes row needs a cluster name such as k3s",
    )
    context = field_value(row, fields, "context")
    credential = _read_credential(
        row, fields, path, credentials, CredentialKind.KUBECONFIG, problems, name
    )
    timeout = read_field(row, fields, "timeout", _parse_timeout, path, problems, name)
    enabled = read_field(row, fields, "enabled", _parse_enabled, path, problems, name)
    if problems or name is None or credential is None:
        return None
    return KubernetesSource(
        name=name,
        credential=credential,
        context=context,
        timeout=timeout or DEFAULT_TIMEOUT_SECONDS,
        enabled=True if enabled is None else enabled,
        location=SourceLocation(path, row.line, 1),
    )


def _dns_row(
    row: Row, fields: dict[str, int], path: str, problems: list[DocumentProblem]
) -> DnsSource | None:
    resolver = read_field(row, fields, "resolver", _parse_resolver, path, problems)
    _require(
        row,
        fields,
        "resolver",
        "Resolver",
        path,
        problems,
        "write the resolver's IP address, optionally with a port such as 10.0.0.1:53",
    )
    domain = read_field(row, fields, "domain", _parse_domain, path, problems)
    timeout = read_field(row, fields, "timeout", _parse_timeout, path, problems)
    enabled = read_field(row, fields, "enabled", _parse_enabled, path, problems)
    if problems or resolver is None:
        return None
    host, port = resolver
    return DnsSource(
        host=host,
        port=port,
        domain=domain,
        timeout=timeout or DEFAULT_TIMEOUT_SECONDS,
        enabled=True if enabled is None else enabled,
        location=SourceLocation(path, row.line, 1),
    )


def _read_credential(
    row: Row,
    fields: dict[str, int],
    path: str,
    credentials: Mapping[str, CredentialPointer],
    kind: CredentialKind,
    problems: list[DocumentProblem],
    name: str | None,
) -> CredentialPointer | None:
    """Return the pointer that the Credentials cell names; report a missing, unknown or wrong one."""
    pointer_name = read_field(
        row, fields, "credentials", validate_pointer_name, path, problems, name
    )
    cell: Cell | None = field_cell(row, fields, "credentials")
    where = cell.location(path) if cell else SourceLocation(path, row.line, 1)
    if field_value(row, fields, "credentials") is None:
        problems.append(
            DocumentProblem(
                where,
                f"missing Credentials: name the {kind.value} row of the credentials map",
                name=name,
            )
        )
        return None
    if pointer_name is None:
        return None
    pointer = credentials.get(pointer_name)
    if pointer is None:
        problems.append(
            DocumentProblem(
                where,
                f"unknown credential name: no row of the credentials map has this Name; {VALUE_NOT_SHOWN}",
                name=name,
            )
        )
        return None
    if pointer.kind is not kind:
        problems.append(
            DocumentProblem(
                where,
                f"credential {pointer.name!r} is a {pointer.kind.value}, but this source needs "
                f"a {kind.value}",
                name=name,
            )
        )
        return None
    return pointer


# --------------------------------------------------------------------------- values


def _parse_source_name(value: str) -> str:
    if not _SOURCE_NAME.match(value):
        raise ValueError(
            f"invalid cluster name {value!r}: expected up to 64 letters, digits, '.', '_' or '-'"
        )
    return value


def _parse_proxmox_endpoint(value: str) -> tuple[str, int]:
    text = value.strip()
    if text.lower().startswith("http://"):
        raise ValueError(f"invalid endpoint {value!r}: the Proxmox API is served over https only")
    text = re.sub(r"^https://", "", text, flags=re.IGNORECASE)
    text = re.sub(r"(/api2/json)?/*$", "", text)
    host, port = split_address(text)
    return host, port or DEFAULT_PROXMOX_PORT


def _parse_token_id(value: str) -> str:
    if not _TOKEN_ID.match(value):
        raise ValueError(
            f"invalid Token ID {value!r}: expected USER@REALM!TOKENNAME such as "
            "prep@pve!discovery (the secret itself belongs in the credentials map)"
        )
    return value


def _parse_verify(value: str) -> bool | str:
    text = value.strip()
    if text.startswith("file:"):
        text = text[len("file:") :].strip()
    if text.startswith("/") or text.startswith("~/"):
        return text
    try:
        return parse_yes_no(text)
    except ValueError:
        raise ValueError(
            f"invalid TLS verify value {value!r}: expected yes, no, or the absolute path of a "
            "CA certificate file"
        ) from None


def _parse_address_lookups(value: str) -> int:
    text = value.strip().lower()
    if text in ("no", "off", "none"):
        return 0
    if not text.isdigit() or int(text) > MAX_ADDRESS_LOOKUPS:
        raise ValueError(
            f"invalid Guest addresses value {value!r}: expected the maximum number of guests "
            f"whose addresses are looked up, 0 to {MAX_ADDRESS_LOOKUPS}, or no"
        )
    return int(text)


def _parse_timeout(value: str) -> float:
    try:
        seconds = float(value.strip().removesuffix("s").strip())
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_TIMEOUT_SECONDS:
        raise ValueError(
            f"invalid Timeout {value!r}: expected seconds greater than 0 and at most "
            f"{MAX_TIMEOUT_SECONDS:.0f}"
        )
    return seconds


def _parse_enabled(value: str) -> bool:
    try:
        return parse_yes_no(value)
    except ValueError:
        raise ValueError(f"invalid Enabled value {value!r}: expected yes or no") from None


def _parse_resolver(value: str) -> tuple[str, int]:
    host, port = split_address(value)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"invalid Resolver {value!r}: expected an IP address such as 10.0.0.1 or "
            "10.0.0.1:53, because the resolver's own name cannot be looked up"
        ) from None
    return host, port or DEFAULT_DNS_PORT


def _parse_domain(value: str) -> str:
    if not _DOMAIN.match(value.strip()):
        raise ValueError(f"invalid Domain {value!r}: expected a DNS name such as home.arpa")
    return value.strip().rstrip(".").lower()
