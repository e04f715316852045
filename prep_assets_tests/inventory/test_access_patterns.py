"""Tests of parse_access_patterns, pattern_for and the shared value parsers."""

import pytest

from prep_assets.inventory.access_patterns import (
    AccessPattern,
    parse_access_method,
    parse_access_patterns,
    parse_port,
    pattern_for,
    split_address,
    validate_jump,
)
from prep_assets.models import AccessMethod, SourceLocation

PATH = "docs/reference/access-patterns.md"

PATTERNS_TEXT = """\
# Access patterns

| Type | Method | User | Port | Jump | Sudo | Notes |
| --- | --- | --- | --- | --- | --- | --- |
| default | ssh | ops | | | yes | most hosts |
| proxmox-host | SSH | root | 22 | | no | |
| LXC | pct exec | | | pve1 | | |
"""


def test_parse_patterns() -> None:
    patterns, problems = parse_access_patterns(PATTERNS_TEXT, PATH)
    assert problems == []
    assert patterns == {
        "default": AccessPattern(
            type="default",
            method=AccessMethod.SSH,
            user="ops",
            sudo=True,
            source=SourceLocation(PATH, 5, 1),
        ),
        "proxmox-host": AccessPattern(
            type="proxmox-host",
            method=AccessMethod.SSH,
            user="root",
            port=22,
            sudo=False,
            source=SourceLocation(PATH, 6, 1),
        ),
        "lxc": AccessPattern(
            type="lxc",
            method=AccessMethod.PCT,
            jump="pve1",
            source=SourceLocation(PATH, 7, 1),
        ),
    }


@pytest.mark.parametrize(
    "header",
    [
        "| Kind | Access | Login | SSH port | ProxyJump | Use sudo |",
        "| `type` | access_method | ssh-user | ssh_port | Jump host | SUDO |",
        "| Role | Method | User | Port | Via | Sudo |",
    ],
)
def test_header_synonyms(header: str) -> None:
    text = header + "\n|-|-|-|-|-|-|\n| debian | ssh | ops | 2222 | pve1 | yes |\n"
    patterns, problems = parse_access_patterns(text, PATH)
    assert problems == []
    pattern = patterns["debian"]
    assert (pattern.method, pattern.user, pattern.port, pattern.jump, pattern.sudo) == (
        AccessMethod.SSH,
        "ops",
        2222,
        "pve1",
        True,
    )


HEADER = "| Type | Method | User | Port | Jump | Sudo |\n| - | - | - | - | - | - |\n"

# (case id, row on line 3, caret under the offending cell, expected reason)
BAD_ROW_CASES = [
    (
        "missing type",
        "|  | ssh | | | | |",
        " ^",
        "missing type: every access pattern needs a system type or 'default'",
    ),
    (
        "invalid type",
        "| Proxmox host | ssh | | | | |",
        "  ^",
        "invalid type 'Proxmox host': expected a name such as debian or proxmox-host "
        "(letters, digits, '.', '_' or '-', no spaces)",
    ),
    (
        "unknown method",
        "| debian | rsh | | | | |",
        "           ^",
        "unknown access method 'rsh': expected one of local, ssh, pct, qm, qm-api, kubectl, "
        "tcp, none (pct exec, qm guest exec and kubectl exec are accepted too)",
    ),
    (
        "invalid port",
        "| debian | ssh | | 65536 | | |",
        "                   ^",
        "invalid port '65536': expected a whole number from 1 to 65535",
    ),
    (
        "invalid sudo",
        "| debian | ssh | | | | sometimes |",
        "                       ^",
        "invalid Sudo value 'sometimes': expected yes or no",
    ),
    (
        "invalid user",
        "| debian | ssh | root user | | | |",
        "                 ^",
        "invalid user 'root user': expected a login name such as root (letters, digits, '.', "
        "'_' or '-', not starting with '-')",
    ),
]


@pytest.mark.parametrize(
    ("row", "caret", "reason"),
    [case[1:] for case in BAD_ROW_CASES],
    ids=[case[0] for case in BAD_ROW_CASES],
)
def test_bad_row_reported_at_cell(row: str, caret: str, reason: str) -> None:
    text = HEADER + row + "\n| ok | ssh | | | | |\n"
    patterns, problems = parse_access_patterns(text, PATH)
    assert list(patterns) == ["ok"]
    (problem,) = problems
    assert str(problem.location) == f"{PATH}:3:{caret.index('^') + 1}"
    assert problem.reason == reason


def test_duplicate_type_reports_later_row() -> None:
    text = HEADER + "| debian | ssh | | | | |\n| Debian | pct | | | | |\n"
    patterns, problems = parse_access_patterns(text, PATH)
    assert patterns["debian"].method is AccessMethod.SSH
    (problem,) = problems
    assert str(problem) == f"{PATH}:4:3: duplicate type 'debian': already listed on line 3"


def test_no_pattern_table_is_one_problem() -> None:
    patterns, problems = parse_access_patterns("# Access\n\nWe use ssh.\n", PATH)
    assert patterns == {}
    (problem,) = problems
    assert problem.location == SourceLocation(PATH, 1, 1)
    assert problem.reason.startswith("no access-pattern table found")


PATTERNS = {
    "default": AccessPattern(
        type="default", method=AccessMethod.SSH, user="ops", port=22, sudo=True
    ),
    "lxc": AccessPattern(type="lxc", method=AccessMethod.PCT, jump="pve1"),
    "debian": AccessPattern(type="debian", user="admin"),
}


def test_pattern_for_merges_default() -> None:
    merged = pattern_for(PATTERNS, "debian")
    assert merged == AccessPattern(
        type="debian", method=AccessMethod.SSH, user="admin", port=22, sudo=False
    )


def test_pattern_for_type_without_row() -> None:
    assert pattern_for(PATTERNS, "nas") is PATTERNS["default"]


def test_pattern_for_without_default() -> None:
    patterns = {"lxc": PATTERNS["lxc"]}
    assert pattern_for(patterns, "lxc") is PATTERNS["lxc"]
    assert pattern_for(patterns, "nas") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ssh", AccessMethod.SSH),
        ("SSH", AccessMethod.SSH),
        (" Local ", AccessMethod.LOCAL),
        ("pct", AccessMethod.PCT),
        ("pct exec", AccessMethod.PCT),
        ("PCT-EXEC", AccessMethod.PCT),
        ("qm", AccessMethod.QM),
        ("qm guest exec", AccessMethod.QM),
        ("qm_guest_exec", AccessMethod.QM),
        ("qm-api", AccessMethod.QM_API),
        ("Proxmox API", AccessMethod.QM_API),
        ("kubectl", AccessMethod.KUBECTL),
        ("kubectl exec", AccessMethod.KUBECTL),
        ("tcp", AccessMethod.TCP),
        ("TCP connect", AccessMethod.TCP),
        ("none", AccessMethod.NONE),
    ],
)
def test_parse_access_method(value: str, expected: AccessMethod) -> None:
    assert parse_access_method(value) is expected


@pytest.mark.parametrize("value", ["telnet", "ssh2", "pct enter", "", "exec"])
def test_parse_access_method_rejects(value: str) -> None:
    with pytest.raises(ValueError, match=f"unknown access method {value!r}"):
        parse_access_method(value)


@pytest.mark.parametrize(
    ("value", "expected"), [("1", 1), ("22", 22), ("65535", 65535), (" 443 ", 443)]
)
def test_parse_port(value: str, expected: int) -> None:
    assert parse_port(value) == expected


@pytest.mark.parametrize("value", ["0", "65536", "-1", "22.0", "ssh", "", "\u0662\u0662"])
def test_parse_port_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="expected a whole number from 1 to 65535"):
        parse_port(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("web.lan", ("web.lan", None)),
        ("192.0.2.5", ("192.0.2.5", None)),
        ("192.0.2.5:2222", ("192.0.2.5", 2222)),
        ("127.0.0.2:2222", ("127.0.0.2", 2222)),
        ("[::1]:22", ("::1", 22)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
        ("2001:db8::5", ("2001:db8::5", None)),
        ("fe80::1%eth0", ("fe80::1%eth0", None)),
        ("[2001:db8::5]:2222", ("2001:db8::5", 2222)),
    ],
)
def test_split_address(value: str, expected: tuple[str, int | None]) -> None:
    assert split_address(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-oProxyCommand=x", "invalid address"),
        ("web lan", "invalid address"),
        ("2001:db8::zz", "invalid address"),
        ("[::1]:0", "invalid port in address"),
        ("web:ssh", "invalid port in address"),
        ("web:", "invalid port in address"),
    ],
)
def test_split_address_rejects(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_address(value)


@pytest.mark.parametrize(
    "value",
    [
        "pve1",
        "ops@pve1",
        "ops@192.0.2.1:2222",
        "[::1]:22",
        "bastion,ops@pve1:2222",
        "bastion, [fe80::2%veth1]:22",
    ],
)
def test_validate_jump(value: str) -> None:
    assert validate_jump(value) == value


@pytest.mark.parametrize("value", ["-J x", "ops@", "@pve1", "a b", "bastion,", ",pve1", "a,,b"])
def test_validate_jump_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="invalid jump host"):
        validate_jump(value)
