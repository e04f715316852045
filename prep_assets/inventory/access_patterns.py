"""Parse ``docs/reference/access-patterns.md``: how each system type is reached by default.

The file contains one or more pipe tables with a Type column. Each row gives the
defaults for the systems of that type. A value in the inventory row of a system
always wins over its pattern. A row of type ``default`` applies to every type
without a row of its own, field by field::

    | Type         | Method | User | Port | Jump | Sudo |
    | ------------ | ------ | ---- | ---- | ---- | ---- |
    | default      | ssh    | ops  |      |      | yes  |
    | proxmox-host | ssh    | root | 22   |      | no   |
    | lxc          | pct    |      |      | pve1 | no   |

Column names are matched like the inventory's (case, spacing, backticks, ``_`` and
``-`` do not matter): Type (Kind, Role, System type), Method (Access, Access
method), User (Login, SSH user), Port (SSH port), Jump (Jump host, ProxyJump, Via)
and Sudo. Other columns, such as Notes, are ignored.

This module also contains the value parsers shared with the inventory parser:
access methods, ports, addresses, users, jump hosts and types.
"""

import ipaddress
import logging
import re
from dataclasses import dataclass, replace

from prep_assets.inventory.markdown import (
    Row,
    field_cell,
    find_tables,
    map_columns,
    parse_yes_no,
    read_field,
)
from prep_assets.models import AccessMethod, DocumentProblem, SourceLocation

logger = logging.getLogger(__name__)

# Name of the pattern row that applies to types without a row of their own.
DEFAULT_PATTERN_TYPE = "default"

# Normalised access-method spelling (lower case, "-" and "_" as spaces) to method.
ACCESS_METHOD_NAMES: dict[str, AccessMethod] = {
    "local": AccessMethod.LOCAL,
    "ssh": AccessMethod.SSH,
    "pct": AccessMethod.PCT,
    "pct exec": AccessMethod.PCT,
    "qm": AccessMethod.QM,
    "qm guest exec": AccessMethod.QM,
    "qm api": AccessMethod.QM_API,
    "proxmox api": AccessMethod.QM_API,
    "kubectl": AccessMethod.KUBECTL,
    "kubectl exec": AccessMethod.KUBECTL,
    "tcp": AccessMethod.TCP,
    "tcp connect": AccessMethod.TCP,
    "none": AccessMethod.NONE,
}

# Header synonyms for the columns that describe access, shared with the inventory.
ACCESS_COLUMNS: dict[str, str] = {
    "type": "type",
    "kind": "type",
    "role": "type",
    "system type": "type",
    "access": "access",
    "access method": "access",
    "method": "access",
    "port": "port",
    "ssh port": "port",
    "user": "user",
    "login": "user",
    "ssh user": "user",
    "jump": "jump",
    "jump host": "jump",
    "proxyjump": "jump",
    "proxy jump": "jump",
    "via": "jump",
}

_PATTERN_COLUMNS: dict[str, str] = {**ACCESS_COLUMNS, "sudo": "sudo", "use sudo": "sudo"}

_TYPE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_HOST_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_BRACKETED_HOST = re.compile(r"^\[([^\]]+)\](?::(.*))?$")


@dataclass(frozen=True)
class AccessPattern:
    """Default access settings for the systems of one type."""

    type: str
    method: AccessMethod | None = None
    user: str | None = None
    port: int | None = None
    jump: str | None = None
    sudo: bool = False
    source: SourceLocation | None = None


def parse_access_method(value: str) -> AccessMethod:
    """Parse an access method such as ``ssh`` or ``pct exec``; raise ValueError naming the value."""
    normalized = " ".join(value.replace("-", " ").replace("_", " ").lower().split())
    method = ACCESS_METHOD_NAMES.get(normalized)
    if method is None:
        accepted = ", ".join(member.value for member in AccessMethod)
        raise ValueError(
            f"unknown access method {value!r}: expected one of {accepted} "
            "(pct exec, qm guest exec and kubectl exec are accepted too)"
        )
    return method


def parse_port(value: str) -> int:
    """Parse a TCP port from 1 to 65535; raise ValueError naming the value."""
    text = value.strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"invalid port {value!r}: expected a whole number from 1 to 65535")
    return int(text)


def split_address(value: str) -> tuple[str, int | None]:
    """Split ``host``, ``host:port``, ``[ipv6]:port`` or a bare IPv6 address into host and port.

    The host is returned without brackets. Raise ValueError naming the value when
    the host contains characters that no host name or IP address has, or the port
    is invalid.
    """
    text = value.strip()
    port_text: str | None = None
    bracketed = _BRACKETED_HOST.match(text)
    if bracketed:
        host, port_text = bracketed.group(1), bracketed.group(2)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        # No colon, or several: a host name or a bare IPv6 address without a port.
        host = text

    if not _is_host(host):
        raise ValueError(
            f"invalid address {value!r}: expected a host name or IP address, "
            "optionally with a port such as 10.0.0.5:2222 or [fd00::5]:22"
        )
    if port_text is None:
        return host, None
    try:
        return host, parse_port(port_text)
    except ValueError:
        raise ValueError(
            f"invalid port in address {value!r}: expected a whole number from 1 to 65535 "
            "after the colon"
        ) from None


# An IPv6 zone is an interface name or index; anything else (a shell character
# planted in a guest-agent address, say) makes the address invalid.
_ZONE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def _is_host(host: str) -> bool:
    """Return whether ``host`` is a host name, an IPv4 address or an IPv6 address with optional zone."""
    if ":" not in host:
        return bool(_HOST_NAME.match(host))
    address, _, zone = host.partition("%")
    if "%" in host and not _ZONE.match(zone):
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


def validate_user(value: str) -> str:
    """Return the login name, or raise ValueError naming the value."""
    if not _USER.match(value):
        raise ValueError(
            f"invalid user {value!r}: expected a login name such as root "
            "(letters, digits, '.', '_' or '-', not starting with '-')"
        )
    return value


def validate_jump(value: str) -> str:
    """Return the jump hosts, ``[user@]host[:port]`` entries separated by commas, first hop first.

    Raise ValueError naming the value when an entry is empty or invalid.
    """
    for entry in value.split(","):
        user, at_sign, host = entry.strip().rpartition("@")
        try:
            if at_sign:
                validate_user(user)
            split_address(host)
        except ValueError:
            raise ValueError(
                f"invalid jump host {value!r}: expected a system name or [user@]host[:port], "
                "several separated by commas with the first hop first"
            ) from None
    return value


def parse_type(value: str) -> str:
    """Return the system type in lower case, or raise ValueError naming the value."""
    lowered = value.strip().lower()
    if not _TYPE.match(lowered):
        raise ValueError(
            f"invalid type {value!r}: expected a name such as debian or proxmox-host "
            "(letters, digits, '.', '_' or '-', no spaces)"
        )
    return lowered


def pattern_for(patterns: dict[str, AccessPattern], system_type: str) -> AccessPattern | None:
    """Return the pattern for a type, with fields it leaves empty taken from the default row.

    Return None when neither the type nor ``default`` has a row. ``sudo`` comes
    from the type's own row whenever it has one.
    """
    specific = patterns.get(system_type)
    fallback = patterns.get(DEFAULT_PATTERN_TYPE)
    if specific is None or fallback is None or specific is fallback:
        return specific or fallback
    return replace(
        specific,
        method=specific.method if specific.method is not None else fallback.method,
        user=specific.user if specific.user is not None else fallback.user,
        port=specific.port if specific.port is not None else fallback.port,
        jump=specific.jump if specific.jump is not None else fallback.jump,
    )


def parse_access_patterns(
    text: str, path: str
) -> tuple[dict[str, AccessPattern], list[DocumentProblem]]:
    """Parse the access-patterns document and return the patterns by type and the problems.

    Rows with an invalid value are left out and reported. A document without any
    table that has a Type column is reported as one problem at line 1.
    """
    patterns: dict[str, AccessPattern] = {}
    problems: list[DocumentProblem] = []
    found_table = False

    for table in find_tables(text):
        fields, _ = map_columns(table.header, _PATTERN_COLUMNS)
        if "type" not in fields:
            continue
        found_table = True
        for row in table.rows:
            pattern, row_problems = _read_pattern_row(row, fields, path)
            problems.extend(row_problems)
            if pattern is None:
                continue
            first = patterns.get(pattern.type)
            if first is not None and first.source is not None:
                type_cell = field_cell(row, fields, "type")
                assert type_cell is not None
                problems.append(
                    DocumentProblem(
                        type_cell.location(path),
                        f"duplicate type {pattern.type!r}: already listed on line "
                        f"{first.source.line}",
                        name=pattern.type,
                    )
                )
                continue
            patterns[pattern.type] = pattern

    if not found_table:
        problems.append(
            DocumentProblem(
                SourceLocation(path, 1, 1),
                "no access-pattern table found: expected a table with a Type column "
                "and any of Method, User, Port, Jump and Sudo",
            )
        )
    logger.debug("Read %d access patterns from %s", len(patterns), path)
    return patterns, problems


def _read_pattern_row(
    row: Row, fields: dict[str, int], path: str
) -> tuple[AccessPattern | None, list[DocumentProblem]]:
    problems: list[DocumentProblem] = []

    system_type = read_field(row, fields, "type", parse_type, path, problems)
    if system_type is None and not problems:
        type_cell = field_cell(row, fields, "type")
        assert type_cell is not None
        problems.append(
            DocumentProblem(
                type_cell.location(path),
                "missing type: every access pattern needs a system type or 'default'",
            )
        )
    name = system_type

    method = read_field(row, fields, "access", parse_access_method, path, problems, name)
    user = read_field(row, fields, "user", validate_user, path, problems, name)
    port = read_field(row, fields, "port", parse_port, path, problems, name)
    jump = read_field(row, fields, "jump", validate_jump, path, problems, name)
    sudo = read_field(row, fields, "sudo", _parse_sudo, path, problems, name)

    if system_type is None or problems:
        return None, problems
    pattern = AccessPattern(
        type=system_type,
        method=method,
        user=user,
        port=port,
        jump=jump,
        sudo=bool(sudo),
        source=SourceLocation(path, row.line, 1),
    )
    return pattern, problems


def _parse_sudo(value: str) -> bool:
    try:
        return parse_yes_no(value)
    except ValueError:
        raise ValueError(f"invalid Sudo value {value!r}: expected yes or no") from None
