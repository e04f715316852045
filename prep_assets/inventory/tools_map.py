"""Parse ``docs/reference/tools-map.md``: which crisis tools each system type must have.

A tools table has a Tool column (the command looked up on the system's PATH),
one column per package manager that names the package providing it (apt, apk,
dnf, pacman, zypper), and optionally Min version. The types a row applies to
come from a Types column when the table has one, otherwise from the heading
above the table. Either way the types are comma-separated, and ``default`` names
the list for types that have none of their own::

    ## default

    | Tool   | apt         | apk     | dnf        | Min version |
    | ------ | ----------- | ------- | ---------- | ----------- |
    | iostat | sysstat     | sysstat | sysstat    |             |
    | perf   | linux-perf  | perf    | perf       |             |

    ## proxmox-host, debian

    | Tool   | apt     |
    | ------ | ------- |
    | iostat | sysstat |
    | zpool  | zfsutils-linux |

or, in one table::

    | Tool   | apt     | Types                  |
    | ------ | ------- | ---------------------- |
    | iostat | sysstat | default, proxmox-host  |
    | zpool  | zfsutils-linux | proxmox-host    |

A type's list replaces the default list; it does not extend it. A type without a
list of its own gets an empty list when it is read-only (``READ_ONLY_TYPES``),
otherwise the map's ``default`` list, otherwise ``DEFAULT_CRISIS_TOOLS``. Empty
cells and ``-`` mean "no package for this manager". A package cell may name
alternatives and a ``{kernel}`` placeholder, as ``package_names`` describes. Other columns, such as
Notes, are ignored. Invalid rows are left out and listed in ``ToolsMap.problems``.
"""

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from prep_assets.inventory.access_patterns import parse_type
from prep_assets.inventory.markdown import (
    Row,
    Table,
    field_cell,
    field_value,
    find_tables,
    map_columns,
    read_field,
)
from prep_assets.inventory.package_names import validate_package_cell
from prep_assets.models import READ_ONLY_TYPES, DocumentProblem, SourceLocation, System, ToolSpec

logger = logging.getLogger(__name__)

DEFAULT_SECTION = "default"
PACKAGE_MANAGERS = ("apt", "apk", "dnf", "pacman", "zypper")

_TOOL_COLUMNS: dict[str, str] = {
    "tool": "command",
    "command": "command",
    "tool command": "command",
    "binary": "command",
    "min version": "min_version",
    "minimum version": "min_version",
    "types": "types",
    "type": "types",
    "system types": "types",
    "applies to": "types",
    **{manager: manager for manager in PACKAGE_MANAGERS},
    **{f"{manager} package": manager for manager in PACKAGE_MANAGERS},
}

_COMMAND = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$")
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+~:-]*$")


def _package_tools(packages: dict[str, str], *commands: str) -> list[ToolSpec]:
    return [ToolSpec(command=command, packages=dict(packages)) for command in commands]


# Built-in crisis tools, used for a type when the tools map has neither a list for
# it nor a default list. The selection follows Brendan Gregg's "Linux Crisis Tools"
# list. The Debian 12 package names and the commands they install were checked
# with apt-get download and dpkg -c, but the apk and dnf names were not.
# NOTE: these Alpine names are unverified: procps-ng (procps in older releases),
# util-linux (assumed to pull in the per-command subpackages), iproute2 (ss and
# nstat may be in iproute2-ss and iproute2-misc), numactl-tools and trace-cmd.
# No Alpine or Fedora package for nicstat is known.
DEFAULT_CRISIS_TOOLS: tuple[ToolSpec, ...] = tuple(
    [
        *_package_tools(
            {"apt": "procps", "apk": "procps-ng", "dnf": "procps-ng"},
            "ps",
            "vmstat",
            "uptime",
            "top",
        ),
        *_package_tools(
            {"apt": "util-linux", "apk": "util-linux", "dnf": "util-linux"},
            "dmesg",
            "lsblk",
            "lscpu",
        ),
        *_package_tools(
            {"apt": "sysstat", "apk": "sysstat", "dnf": "sysstat"},
            "iostat",
            "mpstat",
            "pidstat",
            "sar",
        ),
        *_package_tools(
            {"apt": "iproute2", "apk": "iproute2", "dnf": "iproute"},
            "ip",
            "ss",
            "nstat",
        ),
        *_package_tools({"apt": "numactl", "apk": "numactl-tools", "dnf": "numactl"}, "numastat"),
        *_package_tools({"apt": "tcpdump", "apk": "tcpdump", "dnf": "tcpdump"}, "tcpdump"),
        # Ubuntu packages perf as linux-tools-common plus linux-tools-$(uname -r).
        *_package_tools({"apt": "linux-perf", "apk": "perf", "dnf": "perf"}, "perf"),
        # NOTE: the -bpfcc names are Debian's. Fedora's and Alpine's bcc-tools install
        # the same tools without the suffix under /usr/share/bcc/tools, which is not
        # on PATH, so these commands are reported missing there.
        *_package_tools(
            {"apt": "bpfcc-tools", "apk": "bcc-tools", "dnf": "bcc-tools"},
            "execsnoop-bpfcc",
            "opensnoop-bpfcc",
            "biolatency-bpfcc",
            "biosnoop-bpfcc",
            "runqlat-bpfcc",
        ),
        *_package_tools({"apt": "bpftrace", "apk": "bpftrace", "dnf": "bpftrace"}, "bpftrace"),
        *_package_tools({"apt": "trace-cmd", "apk": "trace-cmd", "dnf": "trace-cmd"}, "trace-cmd"),
        *_package_tools({"apt": "nicstat"}, "nicstat"),
        *_package_tools({"apt": "ethtool", "apk": "ethtool", "dnf": "ethtool"}, "ethtool"),
    ]
)


@dataclass
class ToolsMap:
    """Expected crisis tools per system type, with the rows that were left out."""

    # Tool list per system type, including the "default" list when the map has one.
    sections: dict[str, list[ToolSpec]] = field(default_factory=dict)
    problems: list[DocumentProblem] = field(default_factory=list)

    def tools_for(self, system_type: str) -> list[ToolSpec]:
        """Return the tools expected on systems of ``system_type``.

        The type's own list wins. Without one, read-only types get an empty list,
        and other types get the map's default list or ``DEFAULT_CRISIS_TOOLS``.
        """
        key = system_type.strip().lower()
        return self._select(key, key in READ_ONLY_TYPES)

    def tools_for_system(self, system: System) -> list[ToolSpec]:
        """Return the tools expected on ``system``, also honouring its read-only attribute."""
        return self._select(system.type, system.read_only)

    def _select(self, system_type: str, read_only: bool) -> list[ToolSpec]:
        if system_type in self.sections:
            return _copy_tools(self.sections[system_type])
        if read_only:
            return []
        if DEFAULT_SECTION in self.sections:
            return _copy_tools(self.sections[DEFAULT_SECTION])
        return _copy_tools(DEFAULT_CRISIS_TOOLS)


def _copy_tools(tools: list[ToolSpec] | tuple[ToolSpec, ...]) -> list[ToolSpec]:
    """Copy the specs so that a caller changing ``packages`` cannot change the map."""
    return [ToolSpec(tool.command, dict(tool.packages), tool.min_version) for tool in tools]


def parse_tools_map(text: str, path: str) -> ToolsMap:
    """Parse the tools-map document into tool lists per system type."""
    tools_map = ToolsMap()
    # Line of the row that added each command, per type, to report duplicates.
    first_lines: dict[str, dict[str, int]] = {}
    found_table = False

    for table in find_tables(text):
        fields, _ = map_columns(table.header, _TOOL_COLUMNS)
        if "command" not in fields:
            continue
        found_table = True

        heading_types: list[str] | None = None
        if "types" not in fields:
            heading_types = _heading_types(table, path, tools_map.problems)
            if heading_types is None:
                continue

        for row in table.rows:
            _read_tool_row(row, fields, heading_types, path, tools_map, first_lines)

    if not found_table:
        tools_map.problems.append(
            DocumentProblem(
                SourceLocation(path, 1, 1),
                "no tools table found: expected a table with a Tool column and package "
                "columns such as apt, apk and dnf",
            )
        )
    logger.debug(
        "Read tool lists for %d types and %d problems from %s",
        len(tools_map.sections),
        len(tools_map.problems),
        path,
    )
    return tools_map


def parse_type_list(value: str) -> list[str]:
    """Parse comma-separated system types such as ``debian, proxmox-host``; raise ValueError."""
    # dict.fromkeys drops repeated types and keeps the order.
    types = list(dict.fromkeys(parse_type(part) for part in value.split(",") if part.strip()))
    if not types:
        raise ValueError(f"invalid types {value!r}: expected system types separated by commas")
    return types


def _heading_types(table: Table, path: str, problems: list[DocumentProblem]) -> list[str] | None:
    """Return the types named by the table's heading, or report the table and return None."""
    heading = table.heading
    try:
        if heading is None:
            raise ValueError("the table has no heading")
        return parse_type_list(heading)
    except ValueError:
        where = table.headings[-1].line if table.headings else table.line
        problems.append(
            DocumentProblem(
                SourceLocation(path, where, 1),
                f"tools table on line {table.line} is left out: it has no Types column, and "
                f"its heading {heading!r} is not a list of system types. Put the table under "
                "a heading such as '## debian' or '## default', or add a Types column.",
            )
        )
        return None


def _read_tool_row(
    row: Row,
    fields: dict[str, int],
    heading_types: list[str] | None,
    path: str,
    tools_map: ToolsMap,
    first_lines: dict[str, dict[str, int]],
) -> None:
    """Add the row's tool to the lists of its types, or report why the row is left out."""
    problems: list[DocumentProblem] = []
    command = read_field(row, fields, "command", _validate_command, path, problems)
    command_cell = field_cell(row, fields, "command")
    assert command_cell is not None
    if command is None and not problems:
        problems.append(
            DocumentProblem(command_cell.location(path), "missing tool: the Tool column is empty")
        )

    types = heading_types
    if types is None:
        types = read_field(row, fields, "types", parse_type_list, path, problems, command)
        if types is None and field_value(row, fields, "types") is None:
            types_cell = field_cell(row, fields, "types")
            assert types_cell is not None
            problems.append(
                DocumentProblem(
                    types_cell.location(path),
                    "missing types: write the system types this tool applies to, or 'default'",
                    name=command,
                )
            )

    packages: dict[str, str] = {}
    for manager in PACKAGE_MANAGERS:
        package = read_field(
            row, fields, manager, _package_validator(manager), path, problems, command
        )
        if package is not None:
            packages[manager] = package
    min_version = read_field(row, fields, "min_version", _validate_version, path, problems, command)

    if command is not None and types is not None:
        for system_type in types:
            first_line = first_lines.get(system_type, {}).get(command)
            if first_line is not None:
                problems.append(
                    DocumentProblem(
                        command_cell.location(path),
                        f"duplicate tool {command!r} for type {system_type!r}: already listed "
                        f"on line {first_line}",
                        name=command,
                    )
                )

    tools_map.problems.extend(problems)
    if problems or command is None or types is None:
        return
    for system_type in types:
        first_lines.setdefault(system_type, {})[command] = row.line
        spec = ToolSpec(command=command, packages=dict(packages), min_version=min_version)
        tools_map.sections.setdefault(system_type, []).append(spec)


def _validate_command(value: str) -> str:
    if not _COMMAND.match(value):
        raise ValueError(
            f"invalid tool {value!r}: expected a command name as found on PATH, such as "
            "iostat (no spaces or '/')"
        )
    return value


def _package_validator(manager: str) -> Callable[[str], str]:
    def validate(value: str) -> str:
        return validate_package_cell(value, f"{manager} package")

    return validate


def _validate_version(value: str) -> str:
    if not _VERSION.match(value):
        raise ValueError(
            f"invalid minimum version {value!r}: expected a version such as 1.2 or 12.6.1"
        )
    return value
