"""Tests of parse_system_inventory."""

import pytest

from prep_assets.inventory.access_patterns import AccessPattern
from prep_assets.inventory.errors import DocsError, InventoryFormatError
from prep_assets.inventory.system_inventory import parse_system_inventory
from prep_assets.models import AccessMethod, SourceLocation, System

PATH = "docs/infrastructure/system-inventory.md"


def only_system(text: str, **kwargs: object) -> System:
    result = parse_system_inventory(text, PATH, **kwargs)  # type: ignore[arg-type]
    assert result.problems == []
    (system,) = result.systems
    return system


# (header as written, field of System it fills, cell value, expected field value)
SYNONYM_CASES = [
    ("Name", "name", "pve1", "pve1"),
    ("Hostname", "name", "pve1", "pve1"),
    ("Host name", "name", "pve1", "pve1"),
    ("HOST", "name", "pve1", "pve1"),
    ("System", "name", "pve1", "pve1"),
    ("`name`", "name", "pve1", "pve1"),
    ("Type", "type", "Debian", "debian"),
    ("Kind", "type", "debian", "debian"),
    ("Role", "type", "debian", "debian"),
    ("System_type", "type", "debian", "debian"),
    ("Tier", "tier", "Critical", "critical"),
    ("Criticality", "tier", "critical", "critical"),
    ("Priority", "tier", "critical", "critical"),
    ("Address", "address", "192.0.2.5", "192.0.2.5"),
    ("IP", "address", "192.0.2.5", "192.0.2.5"),
    ("IP address", "address", "192.0.2.5", "192.0.2.5"),
    ("ip_address", "address", "192.0.2.5", "192.0.2.5"),
    ("FQDN", "address", "web.lan", "web.lan"),
    ("Host address", "address", "web.lan", "web.lan"),
    ("Port", "port", "2222", 2222),
    ("SSH port", "port", "2222", 2222),
    ("`ssh-port`", "port", "2222", 2222),
    ("Access", "access", "ssh", AccessMethod.SSH),
    ("Access method", "access", "local", AccessMethod.LOCAL),
    ("Method", "access", "local", AccessMethod.LOCAL),
    ("User", "user", "root", "root"),
    ("Login", "user", "root", "root"),
    ("SSH user", "user", "root", "root"),
    ("SSH_USER", "user", "root", "root"),
    ("Jump", "jump", "pve1", "pve1"),
    ("Jump host", "jump", "pve1", "pve1"),
    ("ProxyJump", "jump", "ops@pve1:2222", "ops@pve1:2222"),
    ("Via", "jump", "pve1", "pve1"),
    ("Credentials", "credentials", "homelab-root", "homelab-root"),
    ("Credential", "credentials", "homelab-root", "homelab-root"),
    ("Credentials pointer", "credentials", "homelab-root", "homelab-root"),
    ("Secret", "credentials", "homelab-root", "homelab-root"),
    ("Managed", "managed", "no", False),
]


@pytest.mark.parametrize(("header", "field_name", "cell", "expected"), SYNONYM_CASES)
def test_header_synonyms(header: str, field_name: str, cell: str, expected: object) -> None:
    columns = {"name": "Name", "type": "Type", "address": "Address"}
    values = {"name": "web", "type": "debian", "address": "192.0.2.9"}
    columns[field_name] = header
    values[field_name] = cell
    text = (
        "| "
        + " | ".join(columns.values())
        + " |\n"
        + "| "
        + " | ".join("---" for _ in columns)
        + " |\n"
        + "| "
        + " | ".join(values.values())
        + " |\n"
    )
    system = only_system(text)
    assert getattr(system, field_name) == expected


def test_full_row_fields() -> None:
    text = (
        "| Name | Type | Tier | Address | Port | Access | User | Jump | Credentials |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        "| pve1 | proxmox-host | critical | 192.0.2.10 | 2222 | ssh | root | bastion | root-key |\n"
    )
    system = only_system(text)
    assert system == System(
        name="pve1",
        type="proxmox-host",
        tier="critical",
        access=AccessMethod.SSH,
        address="192.0.2.10",
        port=2222,
        user="root",
        jump="bastion",
        credentials="root-key",
        managed=True,
        attributes={},
        source=SourceLocation(PATH, 3, 1),
    )


# (case id, row after a "| Name | Type | Address | Access |" header, expected (access, address, port))
ROW_VALUE_CASES = [
    ("default tier and ssh", "| a | debian | 192.0.2.1 | |", (AccessMethod.SSH, "192.0.2.1", None)),
    (
        "address with port",
        "| a | debian | 127.0.0.2:2222 | ssh |",
        (AccessMethod.SSH, "127.0.0.2", 2222),
    ),
    ("bracketed ipv6 with port", "| a | debian | [::1]:22 | ssh |", (AccessMethod.SSH, "::1", 22)),
    ("bare ipv6", "| a | debian | 2001:db8::5 | ssh |", (AccessMethod.SSH, "2001:db8::5", None)),
    (
        "host name in backticks",
        "| a | debian | `web.lan` | ssh |",
        (AccessMethod.SSH, "web.lan", None),
    ),
    (
        "access upper case",
        "| a | debian | 192.0.2.1 | SSH |",
        (AccessMethod.SSH, "192.0.2.1", None),
    ),
    ("pct exec", "| a | lxc | | pct exec |", (AccessMethod.PCT, None, None)),
    ("pct_exec", "| a | lxc | | pct_exec |", (AccessMethod.PCT, None, None)),
    ("qm guest exec", "| a | qemu | | qm guest exec |", (AccessMethod.QM, None, None)),
    ("qm-api", "| a | qemu | | qm-api |", (AccessMethod.QM_API, None, None)),
    ("qm api with space", "| a | qemu | | QM API |", (AccessMethod.QM_API, None, None)),
    ("kubectl exec", "| a | pod | | kubectl exec |", (AccessMethod.KUBECTL, None, None)),
    ("local", "| a | debian | | local |", (AccessMethod.LOCAL, None, None)),
    (
        "tcp with port in address",
        "| a | nas | 192.0.2.4:445 | tcp |",
        (AccessMethod.TCP, "192.0.2.4", 445),
    ),
    ("none", "| a | debian | | none |", (AccessMethod.NONE, None, None)),
    (
        "em dash means missing",
        "| a | debian | 192.0.2.1 | \u2014 |",
        (AccessMethod.SSH, "192.0.2.1", None),
    ),
]


@pytest.mark.parametrize(
    ("row", "expected"),
    [case[1:] for case in ROW_VALUE_CASES],
    ids=[case[0] for case in ROW_VALUE_CASES],
)
def test_row_values(row: str, expected: tuple[AccessMethod, str | None, int | None]) -> None:
    text = "| Name | Type | Address | Access |\n| - | - | - | - |\n" + row + "\n"
    system = only_system(text)
    assert (system.access, system.address, system.port) == expected
    assert system.tier == "standard"


def test_other_columns_become_attributes() -> None:
    text = (
        "| Name | Type | Address | Read only | `VM ID` | Notes |\n"
        "| - | - | - | - | - | - |\n"
        "| a | debian | 192.0.2.1 | yes | 101 | - |\n"
    )
    system = only_system(text)
    assert system.attributes == {"read-only": "yes", "vm-id": "101"}
    assert system.read_only


def test_second_name_column_is_attribute() -> None:
    text = "| Name | Hostname | Type | Address |\n| - | - | - | - |\n| a | a.lan | debian | 192.0.2.1 |\n"
    system = only_system(text)
    assert system.name == "a"
    assert system.attributes == {"hostname": "a.lan"}


def test_tables_without_name_column_ignored() -> None:
    text = (
        "| Tier | Meaning |\n| - | - |\n| critical | pages |\n\n"
        "| Name | Type | Address |\n| - | - | - |\n| a | debian | 192.0.2.1 |\n"
    )
    system = only_system(text)
    assert system.name == "a"


def test_rows_from_several_tables() -> None:
    text = (
        "## One\n| Name | Type | Address |\n| - | - | - |\n| a | debian | 192.0.2.1 |\n\n"
        "## Two\n| Host | Role | IP |\n| - | - | - |\n| b | debian | 192.0.2.2 |\n"
    )
    result = parse_system_inventory(text, PATH)
    assert [system.name for system in result.systems] == ["a", "b"]
    assert [system.source for system in result.systems] == [
        SourceLocation(PATH, 4, 1),
        SourceLocation(PATH, 9, 1),
    ]


UNMANAGED_TEXT = """\
# Inventory

| Name | Type | Address | Access |
| --- | --- | --- | --- |
| pve1 | proxmox-host | 192.0.2.10 | ssh |

## Unmanaged devices

### Network

| Name | Type | Address | Port | Access |
| --- | --- | --- | --- | --- |
| core-switch | switch | 192.0.2.2 | 22 | ssh |
| printer | printer | 192.0.2.40 | 9100 | tcp |
| smart-tv | | | | |

## Servers again

| Name | Type | Address | Managed |
| --- | --- | --- | --- |
| nas | debian | 192.0.2.5 | |
| old-box | debian | 192.0.2.6 | no |
"""


def test_unmanaged_section() -> None:
    result = parse_system_inventory(UNMANAGED_TEXT, PATH)
    assert result.problems == []
    systems = {system.name: system for system in result.systems}

    assert systems["pve1"].managed
    assert systems["pve1"].access is AccessMethod.SSH
    assert systems["pve1"].contacted

    assert not systems["core-switch"].managed
    assert systems["core-switch"].access is AccessMethod.NONE
    assert not systems["core-switch"].contacted

    assert not systems["printer"].managed
    assert systems["printer"].access is AccessMethod.TCP
    assert (systems["printer"].address, systems["printer"].port) == ("192.0.2.40", 9100)

    assert systems["smart-tv"].type == "unmanaged"
    assert systems["smart-tv"].access is AccessMethod.NONE

    assert systems["nas"].managed
    assert not systems["old-box"].managed
    assert systems["old-box"].access is AccessMethod.NONE


def test_managed_column_overrides_unmanaged_heading() -> None:
    text = (
        "## Unmanaged\n| Name | Type | Address | Managed |\n| - | - | - | - |\n"
        "| a | debian | 192.0.2.1 | yes |\n"
    )
    system = only_system(text)
    assert system.managed
    assert system.access is AccessMethod.SSH


PATTERNS = {
    "default": AccessPattern(type="default", method=AccessMethod.SSH, user="ops", sudo=True),
    "proxmox-host": AccessPattern(type="proxmox-host", user="root", port=22),
    "lxc": AccessPattern(type="lxc", method=AccessMethod.PCT, jump="pve1"),
    "printer": AccessPattern(type="printer", method=AccessMethod.TCP, port=9100),
}

# (case id, row after a "| Name | Type | Address | Access | User | Port |" header,
#  expected (access, user, port, jump))
PATTERN_CASES = [
    (
        "type pattern fills user and port",
        "| a | proxmox-host | 192.0.2.1 | | | |",
        (AccessMethod.SSH, "root", 22, None),
    ),
    (
        "row values win",
        "| a | proxmox-host | 192.0.2.1 | | admin | 2222 |",
        (AccessMethod.SSH, "admin", 2222, None),
    ),
    (
        "address port wins over pattern",
        "| a | proxmox-host | 192.0.2.1:2200 | | | |",
        (AccessMethod.SSH, "root", 2200, None),
    ),
    (
        "method and jump from pattern",
        "| a | lxc | | | | |",
        (AccessMethod.PCT, "ops", None, "pve1"),
    ),
    (
        "row method wins",
        "| a | lxc | 192.0.2.7 | ssh | | |",
        (AccessMethod.SSH, "ops", None, "pve1"),
    ),
    (
        "default pattern for unknown type",
        "| a | debian | 192.0.2.1 | | | |",
        (AccessMethod.SSH, "ops", None, None),
    ),
]


@pytest.mark.parametrize(
    ("row", "expected"),
    [case[1:] for case in PATTERN_CASES],
    ids=[case[0] for case in PATTERN_CASES],
)
def test_access_pattern_defaults(row: str, expected: tuple[object, ...]) -> None:
    text = (
        "| Name | Type | Address | Access | User | Port |\n| - | - | - | - | - | - |\n" + row + "\n"
    )
    system = only_system(text, patterns=PATTERNS)
    assert (system.access, system.user, system.port, system.jump) == expected


def test_unmanaged_tcp_from_pattern() -> None:
    text = "## Unmanaged\n| Name | Type | Address |\n| - | - | - |\n| p | printer | 192.0.2.40 |\n"
    system = only_system(text, patterns=PATTERNS)
    assert system.access is AccessMethod.TCP
    assert system.port == 9100


def test_unmanaged_ignores_ssh_pattern() -> None:
    text = "## Unmanaged\n| Name | Type | Address |\n| - | - | - |\n| s | switch | 192.0.2.2 |\n"
    system = only_system(text, patterns=PATTERNS)
    assert system.access is AccessMethod.NONE


def test_missing_address_names_own_pattern() -> None:
    patterns = {
        **PATTERNS,
        "debian": AccessPattern(type="debian", method=AccessMethod.TCP, port=80),
    }
    result = parse_system_inventory(
        "| Name | Type |\n| - | - |\n| a | debian |\n", PATH, patterns=patterns
    )
    (problem,) = result.problems
    assert problem.reason == (
        "missing address: tcp access needs a host name or IP address in the Address column "
        "(the method comes from the access pattern of type 'debian')"
    )


@pytest.mark.parametrize("system_type", ["debian", "proxmox-host"])
def test_missing_address_names_default_pattern(system_type: str) -> None:
    # proxmox-host has a pattern row, but its method comes from the default row.
    text = f"| Name | Type |\n| - | - |\n| a | {system_type} |\n"
    result = parse_system_inventory(text, PATH, patterns=PATTERNS)
    (problem,) = result.problems
    assert problem.reason == (
        "missing address: ssh access needs a host name or IP address in the Address column "
        "(the method comes from the access pattern of type 'default')"
    )


HEADER = "| Name | Type | Address | Port | Access | User | Jump | Managed | Credentials |"
DELIMITER = "| - | - | - | - | - | - | - | - | - |"

# (case id, row on line 3 below HEADER, caret under the offending cell, expected reason)
BAD_ROW_CASES = [
    (
        "unknown access method",
        "| web | debian | 192.0.2.5 | | telnet | | | | |",
        "                               ^",
        "unknown access method 'telnet': expected one of local, ssh, pct, qm, qm-api, "
        "kubectl, tcp, none (pct exec, qm guest exec and kubectl exec are accepted too)",
    ),
    (
        "missing name",
        "|  | debian | 192.0.2.5 | | ssh | | | | |",
        " ^",
        "missing name: every system needs a name in the 'Name' column",
    ),
    (
        "missing name as dash",
        "| - | debian | 192.0.2.5 | | ssh | | | | |",
        "  ^",
        "missing name: every system needs a name in the 'Name' column",
    ),
    (
        "port above range",
        "| web | debian | 192.0.2.5 | 70000 | ssh | | | | |",
        "                             ^",
        "invalid port '70000': expected a whole number from 1 to 65535",
    ),
    (
        "port zero",
        "| web | debian | 192.0.2.5 | 0 | ssh | | | | |",
        "                             ^",
        "invalid port '0': expected a whole number from 1 to 65535",
    ),
    (
        "port not a number",
        "| web | debian | 192.0.2.5 | ssh | ssh | | | | |",
        "                             ^",
        "invalid port 'ssh': expected a whole number from 1 to 65535",
    ),
    (
        "invalid port in address",
        "| web | debian | 192.0.2.5:99999 | | ssh | | | | |",
        "                 ^",
        "invalid port in address '192.0.2.5:99999': expected a whole number from 1 to 65535 "
        "after the colon",
    ),
    (
        "ports conflict",
        "| web | debian | 192.0.2.5:2222 | 22 | ssh | | | | |",
        "                                  ^",
        "conflicting ports: Port is 22 but the address '192.0.2.5:2222' contains port 2222; "
        "write the port in one place",
    ),
    (
        "ssh without address",
        "| web | debian | | | ssh | | | | |",
        "                ^",
        "missing address: ssh access needs a host name or IP address in the Address column",
    ),
    (
        "default ssh without address",
        "| web | debian | | | | | | | |",
        "                ^",
        "missing address: ssh access needs a host name or IP address in the Address column",
    ),
    (
        "tcp without port",
        "| nas | nas | 192.0.2.4 | | tcp | | | | |",
        "                         ^",
        "missing port: tcp access needs a port, in the Port column or as host:port in the "
        "Address column",
    ),
    (
        "address that is an option",
        "| web | debian | -oProxyCommand=x | | ssh | | | | |",
        "                 ^",
        "invalid address '-oProxyCommand=x': expected a host name or IP address, optionally "
        "with a port such as 10.0.0.5:2222 or [fd00::5]:22",
    ),
    (
        "address with spaces",
        "| web | debian | 192.0.2.5 (vlan 20) | | ssh | | | | |",
        "                 ^",
        "invalid address '192.0.2.5 (vlan 20)': expected a host name or IP address, "
        "optionally with a port such as 10.0.0.5:2222 or [fd00::5]:22",
    ),
    (
        "invalid user",
        "| web | debian | 192.0.2.5 | | ssh | -l root | | | |",
        "                                     ^",
        "invalid user '-l root': expected a login name such as root (letters, digits, '.', "
        "'_' or '-', not starting with '-')",
    ),
    (
        "invalid jump host",
        "| web | debian | 192.0.2.5 | | ssh | | pve1 -v | | |",
        "                                       ^",
        "invalid jump host 'pve1 -v': expected a system name or [user@]host[:port], "
        "several separated by commas with the first hop first",
    ),
    (
        "invalid managed value",
        "| web | debian | 192.0.2.5 | | ssh | | | maybe | |",
        "                                         ^",
        "invalid Managed value 'maybe': expected yes or no",
    ),
    (
        "missing type",
        "| web | | 192.0.2.5 | | ssh | | | | |",
        "       ^",
        "missing type: a managed system needs a type such as debian or proxmox-host, because "
        "its access pattern and tool list are chosen by type",
    ),
    (
        "type with spaces",
        "| web | Proxmox host | 192.0.2.5 | | ssh | | | | |",
        "        ^",
        "invalid type 'Proxmox host': expected a name such as debian or proxmox-host "
        "(letters, digits, '.', '_' or '-', no spaces)",
    ),
    (
        "name with slash",
        "| ../web | debian | 192.0.2.5 | | ssh | | | | |",
        "  ^",
        "invalid name '../web': a name must not contain '/', '\\' or control characters",
    ),
]


@pytest.mark.parametrize(
    ("row", "caret", "reason"),
    [case[1:] for case in BAD_ROW_CASES],
    ids=[case[0] for case in BAD_ROW_CASES],
)
def test_bad_row_reported_at_cell(row: str, caret: str, reason: str) -> None:
    good_row = "| ok | debian | 192.0.2.1 | | ssh | | | | |"
    text = f"{HEADER}\n{DELIMITER}\n{row}\n{good_row}\n"
    result = parse_system_inventory(text, PATH)

    assert [system.name for system in result.systems] == ["ok"]
    (problem,) = result.problems
    assert str(problem.location) == f"{PATH}:3:{caret.index('^') + 1}"
    assert problem.reason == reason


def test_duplicate_name_reports_later_row() -> None:
    text = (
        "| Name | Type | Address |\n"
        "| --- | --- | --- |\n"
        "| web | debian | 192.0.2.1 |\n"
        "| db | debian | 192.0.2.2 |\n"
        "| Web | debian | 192.0.2.3 |\n"
    )
    result = parse_system_inventory(text, PATH)
    assert [(system.name, system.address) for system in result.systems] == [
        ("web", "192.0.2.1"),
        ("db", "192.0.2.2"),
    ]
    (problem,) = result.problems
    assert str(problem) == (
        f"{PATH}:5:3: duplicate name 'Web': line 3 already uses this name "
        "(names are compared ignoring case)"
    )
    assert problem.name == "Web"


def test_duplicate_across_tables() -> None:
    text = (
        "| Name | Type | Address |\n| - | - | - |\n| web | debian | 192.0.2.1 |\n\n"
        "## Unmanaged\n| Name | Type |\n| - | - |\n| web | switch |\n"
    )
    result = parse_system_inventory(text, PATH)
    (problem,) = result.problems
    assert problem.location == SourceLocation(PATH, 8, 3)
    assert "line 3" in problem.reason


def test_duplicate_of_rejected_row_still_reported() -> None:
    text = (
        "| Name | Type | Address | Port |\n| - | - | - | - |\n"
        "| web | debian | 192.0.2.1 | 0 |\n"
        "| web | debian | 192.0.2.2 | |\n"
    )
    result = parse_system_inventory(text, PATH)
    assert result.systems == []
    assert [str(problem.location) for problem in result.problems] == [f"{PATH}:3:30", f"{PATH}:4:3"]


def test_row_with_several_problems_reports_each() -> None:
    text = (
        "| Name | Type | Address | Port | Access |\n| - | - | - | - | - |\n"
        "| web | debian | 192.0.2.1 | 0 | telnet |\n"
    )
    result = parse_system_inventory(text, PATH)
    assert result.systems == []
    assert [problem.location.column for problem in result.problems] == [30, 34]
    assert all(problem.name == "web" for problem in result.problems)


def test_secret_column_not_read() -> None:
    text = (
        "| Name | Type | Address | Root password | API token |\n| - | - | - | - | - |\n"
        "| web | debian | 192.0.2.1 | hunter2 | abc123 |\n"
    )
    result = parse_system_inventory(text, PATH)
    (system,) = result.systems
    assert system.attributes == {}
    assert [str(problem.location) for problem in result.problems] == [
        f"{PATH}:1:27",
        f"{PATH}:1:43",
    ]
    assert result.problems[0].reason.startswith(
        "column 'Root password' is ignored because it may contain secrets."
    )
    assert all("hunter2" not in str(problem) for problem in result.problems)


def test_unknown_credential_not_echoed() -> None:
    text = (
        "| Name | Type | Address | Credentials |\n| - | - | - | - |\n"
        "| web | debian | 192.0.2.1 | hunter2 |\n"
        "| db | debian | 192.0.2.2 | homelab-root |\n"
    )
    result = parse_system_inventory(text, PATH, known_credentials={"homelab-root"})
    assert [system.name for system in result.systems] == ["db"]
    (problem,) = result.problems
    assert problem.location == SourceLocation(PATH, 3, 30)
    assert "hunter2" not in str(problem)
    assert problem.reason == (
        "unknown credential name: no row of the credentials map has this Name; the value is "
        "not shown because it may be a secret"
    )


def test_secret_shaped_credential_not_echoed() -> None:
    text = (
        "| Name | Type | Address | Credentials |\n| - | - | - | - |\n"
        "| web | debian | 192.0.2.1 | -----BEGIN OPENSSH PRIVATE KEY----- |\n"
    )
    result = parse_system_inventory(text, PATH)
    (problem,) = result.problems
    assert "BEGIN" not in str(problem)
    assert problem.location == SourceLocation(PATH, 3, 30)


def test_no_table_error_names_file_and_columns() -> None:
    text = "# Inventory\n\nNothing here yet.\n\n| Tier | Meaning |\n| - | - |\n| a | b |\n"
    with pytest.raises(InventoryFormatError) as raised:
        parse_system_inventory(text, PATH)
    assert str(raised.value) == (
        f"{PATH}: no inventory table found: expected a Markdown pipe table with a name column "
        "(Name, Hostname, Host or System), for example a '| Name | Type | Address | Access |' "
        "line followed by a '| --- | --- | --- | --- |' line"
    )
    assert raised.value.path == PATH
    assert isinstance(raised.value, DocsError)
    assert isinstance(raised.value, ValueError)


def test_table_only_in_code_fence_is_no_table() -> None:
    text = "```\n| Name | Type |\n| - | - |\n| a | debian |\n```\n"
    with pytest.raises(InventoryFormatError, match="no inventory table found"):
        parse_system_inventory(text, PATH)


def test_empty_inventory_table_is_accepted() -> None:
    result = parse_system_inventory("| Name | Type |\n| - | - |\n", PATH)
    assert result.systems == []
    assert result.problems == []


def test_systems_round_trip_through_dict() -> None:
    system = only_system(
        "| Name | Type | Address | Notes |\n| - | - | - | - |\n| a | debian | [::1]:22 | x |\n"
    )
    assert System.from_dict(system.to_dict()) == system


GUEST_HEADER = (
    "| Name | Type | Access | Jump | Node | VMID |\n| --- | --- | --- | --- | --- | --- |\n"
)


def test_guest_vmid_and_node_read():
    parsed = parse_system_inventory(
        GUEST_HEADER + "| ct101 | lxc | pct | | pve2 | 101 |\n", "inventory.md"
    )

    assert parsed.problems == []
    assert parsed.systems[0].attributes == {"node": "pve2", "vmid": "101"}


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (
            "| ct101 | lxc | pct | | pve1 | 42 |",
            "invalid vmid '42': expected a Proxmox guest ID from 100 to 999999999",
        ),
        (
            "| vm201 | qemu | qm | pve1 | pve2 | 201 |",
            "conflicting nodes: Node is 'pve2' but Jump is 'pve1'; a guest is reached through "
            "its node, so write the node in one place",
        ),
    ],
)
def test_guest_attribute_problems(row: str, reason: str):
    parsed = parse_system_inventory(GUEST_HEADER + row + "\n", "inventory.md")

    assert parsed.systems == []
    assert [problem.reason for problem in parsed.problems] == [reason]
