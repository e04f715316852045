"""Tests of parse_tools_map, ToolsMap.tools_for and the built-in crisis tools."""

from pathlib import Path

import pytest

from prep_assets.inventory.tools_map import (
    DEFAULT_CRISIS_TOOLS,
    ToolsMap,
    parse_tools_map,
    parse_type_list,
)
from prep_assets.models import READ_ONLY_TYPES, AccessMethod, SourceLocation, System, ToolSpec

PATH = "docs/reference/tools-map.md"
FIXTURES = Path(__file__).parent / "fixtures"

SECTIONS_TEXT = """\
# Tools map

## default

| Tool | apt | apk | dnf | Min version |
| --- | --- | --- | --- | --- |
| iostat | sysstat | sysstat | sysstat | |
| perf | linux-perf | perf | perf | |
| bpftrace | bpftrace | bpftrace | bpftrace | 0.16 |

## proxmox-host, debian

| `Command` | APT package | Notes |
| --- | --- | --- |
| iostat | sysstat | |
| zpool | zfsutils-linux | ZFS pools |

## haos

| Tool | apk |
| --- | --- |
| ha | - |
"""


def commands(tools: list[ToolSpec]) -> list[str]:
    return [tool.command for tool in tools]


def test_sections_by_heading() -> None:
    tools_map = parse_tools_map(SECTIONS_TEXT, PATH)
    assert tools_map.problems == []
    assert sorted(tools_map.sections) == ["debian", "default", "haos", "proxmox-host"]
    assert tools_map.tools_for("default") == [
        ToolSpec("iostat", {"apt": "sysstat", "apk": "sysstat", "dnf": "sysstat"}),
        ToolSpec("perf", {"apt": "linux-perf", "apk": "perf", "dnf": "perf"}),
        ToolSpec("bpftrace", {"apt": "bpftrace", "apk": "bpftrace", "dnf": "bpftrace"}, "0.16"),
    ]
    assert tools_map.tools_for("proxmox-host") == [
        ToolSpec("iostat", {"apt": "sysstat"}),
        ToolSpec("zpool", {"apt": "zfsutils-linux"}),
    ]
    assert tools_map.tools_for("debian") == tools_map.tools_for("proxmox-host")
    assert tools_map.tools_for("haos") == [ToolSpec("ha", {})]


TYPES_COLUMN_TEXT = """\
# Tools map

| Tool | apt | dnf | Types |
| --- | --- | --- | --- |
| iostat | sysstat | sysstat | default, proxmox-host |
| perf | linux-perf | perf | default |
| zpool | zfsutils-linux | | proxmox-host |
"""


def test_types_column() -> None:
    tools_map = parse_tools_map(TYPES_COLUMN_TEXT, PATH)
    assert tools_map.problems == []
    assert commands(tools_map.tools_for("default")) == ["iostat", "perf"]
    assert commands(tools_map.tools_for("proxmox-host")) == ["iostat", "zpool"]
    assert tools_map.tools_for("proxmox-host")[1].packages == {"apt": "zfsutils-linux"}


# (case id, system type asked for, expected commands)
FALLBACK_CASES = [
    ("listed type", "proxmox-host", ["iostat", "zpool"]),
    ("listed type in other case", "Proxmox-Host", ["iostat", "zpool"]),
    ("unlisted type gets default", "ubuntu", ["iostat", "perf", "bpftrace"]),
    ("read-only type gets nothing", "router", []),
    ("read-only type listed in map", "haos", ["ha"]),
]


@pytest.mark.parametrize(
    ("system_type", "expected"),
    [case[1:] for case in FALLBACK_CASES],
    ids=[case[0] for case in FALLBACK_CASES],
)
def test_tools_for_fallback(system_type: str, expected: list[str]) -> None:
    tools_map = parse_tools_map(SECTIONS_TEXT, PATH)
    assert commands(tools_map.tools_for(system_type)) == expected


def test_tools_for_without_default_uses_builtin() -> None:
    text = "## proxmox-host\n| Tool | apt |\n| - | - |\n| zpool | zfsutils-linux |\n"
    tools_map = parse_tools_map(text, PATH)
    assert tools_map.tools_for("debian") == list(DEFAULT_CRISIS_TOOLS)
    assert commands(tools_map.tools_for("proxmox-host")) == ["zpool"]


def test_empty_map_uses_builtin() -> None:
    assert ToolsMap().tools_for("debian") == list(DEFAULT_CRISIS_TOOLS)


@pytest.mark.parametrize("system_type", sorted(READ_ONLY_TYPES))
def test_read_only_types_get_no_builtin_tools(system_type: str) -> None:
    assert ToolsMap().tools_for(system_type) == []


def test_tools_for_system_honours_read_only_attribute() -> None:
    tools_map = parse_tools_map(SECTIONS_TEXT, PATH)
    appliance = System(
        "nas", "truenas", "standard", AccessMethod.SSH, attributes={"read-only": "yes"}
    )
    plain = System("box", "truenas", "standard", AccessMethod.SSH)
    assert tools_map.tools_for_system(appliance) == []
    assert commands(tools_map.tools_for_system(plain)) == ["iostat", "perf", "bpftrace"]


def test_tools_for_returns_copies() -> None:
    tools_map = parse_tools_map(SECTIONS_TEXT, PATH)
    tools_map.tools_for("default")[0].packages["apt"] = "changed"
    ToolsMap().tools_for("debian")[0].packages["apt"] = "changed"
    assert tools_map.tools_for("default")[0].packages["apt"] == "sysstat"
    assert DEFAULT_CRISIS_TOOLS[0].packages["apt"] == "procps"


# Debian 12 package per command, as checked with apt-get download and dpkg -c.
BUILTIN_DEBIAN_PACKAGES = {
    "ps": "procps",
    "vmstat": "procps",
    "uptime": "procps",
    "top": "procps",
    "dmesg": "util-linux",
    "lsblk": "util-linux",
    "lscpu": "util-linux",
    "iostat": "sysstat",
    "mpstat": "sysstat",
    "pidstat": "sysstat",
    "sar": "sysstat",
    "ip": "iproute2",
    "ss": "iproute2",
    "nstat": "iproute2",
    "numastat": "numactl",
    "tcpdump": "tcpdump",
    "perf": "linux-perf",
    "execsnoop-bpfcc": "bpfcc-tools",
    "opensnoop-bpfcc": "bpfcc-tools",
    "biolatency-bpfcc": "bpfcc-tools",
    "biosnoop-bpfcc": "bpfcc-tools",
    "runqlat-bpfcc": "bpfcc-tools",
    "bpftrace": "bpftrace",
    "trace-cmd": "trace-cmd",
    "nicstat": "nicstat",
    "ethtool": "ethtool",
}


def test_builtin_crisis_tools_debian_packages() -> None:
    assert {
        tool.command: tool.packages["apt"] for tool in DEFAULT_CRISIS_TOOLS
    } == BUILTIN_DEBIAN_PACKAGES


def test_builtin_crisis_tools_other_managers() -> None:
    by_command = {tool.command: tool.packages for tool in DEFAULT_CRISIS_TOOLS}
    assert by_command["ps"]["dnf"] == "procps-ng"
    assert by_command["ip"]["dnf"] == "iproute"
    assert by_command["execsnoop-bpfcc"]["dnf"] == "bcc-tools"
    assert "apk" not in by_command["nicstat"]
    assert len(by_command) == len(DEFAULT_CRISIS_TOOLS)


HEADER = "## debian\n\n| Tool | apt | Min version |\n| --- | --- | --- |\n"

# (case id, row on line 6 after a valid "ok" row, caret under the offending cell, reason)
BAD_ROW_CASES = [
    (
        "missing tool",
        "|  | sysstat | |",
        " ^",
        "missing tool: the Tool column is empty",
    ),
    (
        "tool with a path",
        "| /usr/bin/iostat | sysstat | |",
        "  ^",
        "invalid tool '/usr/bin/iostat': expected a command name as found on PATH, such as "
        "iostat (no spaces or '/')",
    ),
    (
        "tool with spaces",
        "| iostat -x | sysstat | |",
        "  ^",
        "invalid tool 'iostat -x': expected a command name as found on PATH, such as iostat "
        "(no spaces or '/')",
    ),
    (
        "invalid package",
        "| iostat | sysstat; rm | |",
        "           ^",
        "invalid apt package 'sysstat; rm': expected a package name such as sysstat",
    ),
    (
        "invalid version",
        "| iostat | sysstat | latest |",
        "                     ^",
        "invalid minimum version 'latest': expected a version such as 1.2 or 12.6.1",
    ),
    (
        "duplicate tool",
        "| ok | procps | |",
        "  ^",
        "duplicate tool 'ok' for type 'debian': already listed on line 5",
    ),
]


@pytest.mark.parametrize(
    ("row", "caret", "reason"),
    [case[1:] for case in BAD_ROW_CASES],
    ids=[case[0] for case in BAD_ROW_CASES],
)
def test_bad_row_reported_at_cell(row: str, caret: str, reason: str) -> None:
    # The valid row is on line 5, so the row under test is on line 6.
    text = HEADER + "| ok | sysstat | |\n" + row + "\n"
    tools_map = parse_tools_map(text, PATH)

    assert commands(tools_map.tools_for("debian")) == ["ok"]
    (problem,) = tools_map.problems
    assert str(problem.location) == f"{PATH}:6:{caret.index('^') + 1}"
    assert problem.reason == reason


def test_missing_types_cell() -> None:
    text = "| Tool | apt | Types |\n| - | - | - |\n| iostat | sysstat | |\n"
    tools_map = parse_tools_map(text, PATH)
    assert tools_map.sections == {}
    (problem,) = tools_map.problems
    assert problem.location == SourceLocation(PATH, 3, 21)
    assert (
        problem.reason == "missing types: write the system types this tool applies to, or 'default'"
    )


def test_invalid_types_cell() -> None:
    text = "| Tool | apt | Types |\n| - | - | - |\n| iostat | sysstat | Proxmox hosts |\n"
    tools_map = parse_tools_map(text, PATH)
    (problem,) = tools_map.problems
    assert problem.location == SourceLocation(PATH, 3, 22)
    assert problem.reason.startswith("invalid type 'Proxmox hosts'")


def test_table_under_non_type_heading_left_out() -> None:
    text = "# Tools map\n\n| Tool | apt |\n| - | - |\n| iostat | sysstat |\n"
    tools_map = parse_tools_map(text, PATH)
    assert tools_map.sections == {}
    (problem,) = tools_map.problems
    assert problem.location == SourceLocation(PATH, 1, 1)
    assert problem.reason == (
        "tools table on line 3 is left out: it has no Types column, and its heading "
        "'Tools map' is not a list of system types. Put the table under a heading such as "
        "'## debian' or '## default', or add a Types column."
    )


def test_table_without_heading_left_out() -> None:
    tools_map = parse_tools_map("| Tool | apt |\n| - | - |\n| iostat | sysstat |\n", PATH)
    (problem,) = tools_map.problems
    assert problem.location == SourceLocation(PATH, 1, 1)
    assert "its heading None" in problem.reason


def test_no_tools_table_is_one_problem() -> None:
    tools_map = parse_tools_map("# Tools\n\nInstall sysstat everywhere.\n", PATH)
    (problem,) = tools_map.problems
    assert problem.reason.startswith("no tools table found")
    assert tools_map.tools_for("debian") == list(DEFAULT_CRISIS_TOOLS)


def test_tables_without_tool_column_ignored() -> None:
    text = "## debian\n| Package | Why |\n| - | - |\n| sysstat | iostat |\n"
    tools_map = parse_tools_map(text, PATH)
    assert tools_map.sections == {}
    assert [problem.reason[:22] for problem in tools_map.problems] == ["no tools table found: "]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("debian", ["debian"]),
        ("debian, proxmox-host", ["debian", "proxmox-host"]),
        ("Default,Ubuntu", ["default", "ubuntu"]),
        ("debian, ", ["debian"]),
        ("debian, Debian, ubuntu", ["debian", "ubuntu"]),
    ],
)
def test_parse_type_list(value: str, expected: list[str]) -> None:
    assert parse_type_list(value) == expected


@pytest.mark.parametrize("value", [",", "proxmox host", "debian; ubuntu"])
def test_parse_type_list_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="invalid type"):
        parse_type_list(value)


def test_fixture_tools_map() -> None:
    text = (FIXTURES / "infra-repo/docs/reference/tools-map.md").read_text()
    tools_map = parse_tools_map(text, PATH)
    assert tools_map.problems == []
    assert "zpool" in commands(tools_map.tools_for("proxmox-host"))
    assert commands(tools_map.tools_for("k8s-node")) == ["kubectl"]
    assert commands(tools_map.tools_for("lxc")) == commands(tools_map.tools_for("default"))
