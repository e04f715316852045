"""Tests of load_docs on sample infra repos."""

import logging
import shutil
from pathlib import Path

import pytest

from prep_assets.inventory.errors import InventoryFormatError
from prep_assets.inventory.loader import (
    ACCESS_PATTERNS_PATH,
    CREDENTIALS_MAP_PATH,
    INVENTORY_PATH,
    TOOLS_MAP_PATH,
    load_docs,
)
from prep_assets.inventory.tools_map import DEFAULT_CRISIS_TOOLS
from prep_assets.models import AccessMethod, SourceLocation, System

SAMPLE_REPO = Path(__file__).parent / "fixtures" / "infra-repo"


def locate(relative_path: str, row_fragment: str, cell_fragment: str) -> str:
    """Return ``path:line:column`` of ``cell_fragment`` in the first line containing ``row_fragment``.

    This searches the fixture text directly, so the expected positions do not
    depend on the parser under test.
    """
    lines = (SAMPLE_REPO / relative_path).read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if row_fragment in line:
            return f"{relative_path}:{number}:{line.index(cell_fragment) + 1}"
    raise AssertionError(f"{row_fragment!r} not found in {relative_path}")


def line_of(relative_path: str, row_fragment: str) -> int:
    return int(locate(relative_path, row_fragment, row_fragment).split(":")[1])


def copy_sample(tmp_path: Path) -> Path:
    root = tmp_path / "infra"
    shutil.copytree(SAMPLE_REPO, root)
    return root


def by_name(systems: list[System]) -> dict[str, System]:
    return {system.name: system for system in systems}


def test_sample_repo_systems() -> None:
    snapshot = load_docs(SAMPLE_REPO)
    systems = by_name(snapshot.systems)

    assert list(systems) == [
        "pve1",
        "pve2",
        "ct-dns",
        "vm-media",
        "k3s-web",
        "haos",
        "core-switch",
        "printer",
        "smart-tv",
    ]
    assert systems["pve1"] == System(
        name="pve1",
        type="proxmox-host",
        tier="critical",
        access=AccessMethod.SSH,
        address="192.0.2.10",
        port=22,
        user="root",
        jump=None,
        credentials="homelab-root",
        managed=True,
        attributes={"rack": "A1"},
        source=SourceLocation(INVENTORY_PATH, line_of(INVENTORY_PATH, "| pve1 |"), 1),
    )


# (system name, expected (access, address, port, user, jump, managed))
SAMPLE_SYSTEM_CASES = [
    ("pve2", (AccessMethod.SSH, "192.0.2.11", 2222, "admin", None, True)),
    ("ct-dns", (AccessMethod.PCT, None, None, "ops", "pve1", True)),
    ("vm-media", (AccessMethod.QM, None, None, "ops", "pve1", True)),
    ("k3s-web", (AccessMethod.KUBECTL, None, None, "ops", None, True)),
    ("haos", (AccessMethod.SSH, "2001:db8::20", 22222, "root", None, True)),
    ("core-switch", (AccessMethod.NONE, "192.0.2.2", None, "ops", None, False)),
    ("printer", (AccessMethod.TCP, "192.0.2.40", 9100, "ops", None, False)),
    ("smart-tv", (AccessMethod.NONE, None, None, "ops", None, False)),
]


@pytest.mark.parametrize(("name", "expected"), SAMPLE_SYSTEM_CASES)
def test_sample_repo_system_fields(name: str, expected: tuple[object, ...]) -> None:
    system = by_name(load_docs(SAMPLE_REPO).systems)[name]
    assert (
        system.access,
        system.address,
        system.port,
        system.user,
        system.jump,
        system.managed,
    ) == expected


def test_sample_repo_problems() -> None:
    snapshot = load_docs(SAMPLE_REPO)
    pve1_line = line_of(INVENTORY_PATH, "| pve1 |")

    assert [(str(problem.location), problem.reason) for problem in snapshot.problems] == [
        (
            locate(ACCESS_PATTERNS_PATH, "| nas |", "rsync"),
            "unknown access method 'rsync': expected one of local, ssh, pct, qm, qm-api, "
            "kubectl, tcp, none (pct exec, qm guest exec and kubectl exec are accepted too)",
        ),
        (
            locate(CREDENTIALS_MAP_PATH, "| grafana-admin |", "correct-horse"),
            "invalid Location: expected env:VARIABLE, file:/absolute/path, /absolute/path or "
            "~/path; the value is not shown because it may be a secret",
        ),
        (
            locate(INVENTORY_PATH, "| k3s-node1 |", "ssh"),
            "missing address: ssh access needs a host name or IP address in the Address column",
        ),
        (
            locate(INVENTORY_PATH, "| PVE1 |", "PVE1"),
            f"duplicate name 'PVE1': line {pve1_line} already uses this name "
            "(names are compared ignoring case)",
        ),
        (
            locate(INVENTORY_PATH, "| backup |", "70000"),
            "invalid port '70000': expected a whole number from 1 to 65535",
        ),
        (
            locate(INVENTORY_PATH, "| router |", "telnet"),
            "unknown access method 'telnet': expected one of local, ssh, pct, qm, qm-api, "
            "kubectl, tcp, none (pct exec, qm guest exec and kubectl exec are accepted too)",
        ),
        (
            locate(INVENTORY_PATH, "|  | debian | 192.0.2.33", " "),
            "missing name: every system needs a name in the 'Name' column",
        ),
        (
            locate(INVENTORY_PATH, "| grafana |", "hunter2"),
            "unknown credential name: no row of the credentials map has this Name; the value "
            "is not shown because it may be a secret",
        ),
    ]
    assert all("hunter2" not in str(problem) for problem in snapshot.problems)
    assert all("correct-horse" not in str(problem) for problem in snapshot.problems)


def test_sample_repo_other_documents() -> None:
    snapshot = load_docs(SAMPLE_REPO)
    assert snapshot.files_read == [
        INVENTORY_PATH,
        ACCESS_PATTERNS_PATH,
        CREDENTIALS_MAP_PATH,
        TOOLS_MAP_PATH,
    ]
    assert sorted(snapshot.credentials) == ["homelab-root", "k3s", "pve-api"]
    assert "nas" not in snapshot.access_patterns
    assert [tool.command for tool in snapshot.tools.tools_for("proxmox-host")] == [
        "vmstat",
        "iostat",
        "zpool",
        "perf",
    ]

    systems = by_name(snapshot.systems)
    assert snapshot.tools.tools_for_system(systems["haos"]) == []
    pointer = snapshot.credential_for(systems["pve1"])
    assert pointer is not None
    assert pointer.location == "file:~/.ssh/id_ed25519_homelab"
    assert snapshot.credential_for(systems["printer"]) is None

    pattern = snapshot.access_pattern_for(systems["pve1"])
    assert pattern is not None
    assert (pattern.user, pattern.sudo) == ("root", False)
    default_pattern = snapshot.access_pattern_for(systems["smart-tv"])
    assert default_pattern is not None
    assert default_pattern.sudo is True


def test_problem_paths_are_relative(tmp_path: Path) -> None:
    snapshot = load_docs(copy_sample(tmp_path))
    assert {problem.location.path for problem in snapshot.problems} == {
        INVENTORY_PATH,
        ACCESS_PATTERNS_PATH,
        CREDENTIALS_MAP_PATH,
    }


def test_only_inventory_uses_defaults(tmp_path: Path) -> None:
    root = copy_sample(tmp_path)
    shutil.rmtree(root / "docs/reference")
    snapshot = load_docs(root)

    assert snapshot.files_read == [INVENTORY_PATH]
    assert snapshot.access_patterns == {}
    assert snapshot.credentials == {}
    assert snapshot.tools.tools_for("debian") == list(DEFAULT_CRISIS_TOOLS)

    # Without patterns, ct-dns falls back to ssh and has no address.
    systems = by_name(snapshot.systems)
    assert "pve1" not in systems
    assert "ct-dns" not in systems
    assert systems["vm-media"].access is AccessMethod.QM
    address_problems = [
        problem for problem in snapshot.problems if problem.reason.startswith("missing address")
    ]
    assert [problem.location.line for problem in address_problems] == [
        line_of(INVENTORY_PATH, "| ct-dns |"),
        line_of(INVENTORY_PATH, "| k3s-node1 |"),
    ]
    credential_problems = [
        problem
        for problem in snapshot.problems
        if problem.reason.startswith("unknown credential name")
    ]
    assert [problem.location.line for problem in credential_problems] == [
        line_of(INVENTORY_PATH, "| pve1 |"),
        line_of(INVENTORY_PATH, "| pve2 |"),
        line_of(INVENTORY_PATH, "| grafana |"),
    ]


def test_missing_inventory_names_path(tmp_path: Path) -> None:
    with pytest.raises(InventoryFormatError) as raised:
        load_docs(tmp_path)
    assert raised.value.path == INVENTORY_PATH
    assert str(raised.value) == (
        f"{INVENTORY_PATH}: file not found under {tmp_path}: the system inventory is required "
        "and must contain a table with a Name column"
    )


def test_inventory_without_table(tmp_path: Path) -> None:
    inventory = tmp_path / INVENTORY_PATH
    inventory.parent.mkdir(parents=True)
    inventory.write_text("# Inventory\n\nTo do.\n")
    with pytest.raises(InventoryFormatError, match=f"^{INVENTORY_PATH}: no inventory table found"):
        load_docs(tmp_path)


def test_inventory_not_utf8(tmp_path: Path) -> None:
    inventory = tmp_path / INVENTORY_PATH
    inventory.parent.mkdir(parents=True)
    inventory.write_bytes(b"| Name |\n| - |\n| caf\xe9 |\n")
    with pytest.raises(InventoryFormatError, match="cannot read the file as UTF-8 text"):
        load_docs(tmp_path)


def test_inventory_with_byte_order_mark(tmp_path: Path) -> None:
    inventory = tmp_path / INVENTORY_PATH
    inventory.parent.mkdir(parents=True)
    inventory.write_bytes(
        "\ufeff| Name | Type | Address |\n| - | - | - |\n| a | debian | 192.0.2.1 |\n".encode()
    )
    snapshot = load_docs(tmp_path)
    assert [system.name for system in snapshot.systems] == ["a"]


def test_optional_file_not_utf8_is_problem(tmp_path: Path) -> None:
    root = copy_sample(tmp_path)
    (root / TOOLS_MAP_PATH).write_bytes(b"## default\n| Tool |\n| - |\n| caf\xe9 |\n")
    snapshot = load_docs(root)

    assert TOOLS_MAP_PATH not in snapshot.files_read
    assert snapshot.tools.tools_for("debian") == list(DEFAULT_CRISIS_TOOLS)
    (problem,) = [
        problem for problem in snapshot.problems if problem.location.path == TOOLS_MAP_PATH
    ]
    assert problem.location == SourceLocation(TOOLS_MAP_PATH, 1, 1)
    assert problem.reason.startswith("the file could not be read as UTF-8 text")


def test_unused_types_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = copy_sample(tmp_path)
    with caplog.at_level(logging.WARNING, logger="prep_assets.inventory.loader"):
        load_docs(root)
    messages = [record.getMessage() for record in caplog.records]
    # The only k8s-node system is left out because it has no address.
    assert messages == [
        f"{TOOLS_MAP_PATH} lists types that no system in {INVENTORY_PATH} has: k8s-node"
    ]
