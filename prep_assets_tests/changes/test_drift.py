"""Tests of the MONITOR step: drift between two snapshots, judged against the git review."""

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from prep_assets.changes.drift import DriftKind, DriftRow, Snapshot, Verdict, compute_drift
from prep_assets.changes.git_review import (
    ChangeContext,
    ChangeEvent,
    CommitInfo,
    EventKind,
    EventSource,
    MaintenanceWindow,
    review_changes,
)
from prep_assets.models import (
    AccessMethod,
    AccessResult,
    AccessState,
    System,
    SystemCheck,
    ToolResult,
    ToolState,
)
from prep_assets_tests.changes.conftest import (
    INVENTORY_PATH,
    InfraRepo,
    inventory_text,
    table_system_names,
)

INVENTORY = INVENTORY_PATH
WINDOW_START = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
WINDOW_END = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)
WINDOW_TEXT = "2026-12-05T02:00:00Z/2026-12-05T04:00:00Z"
INSIDE_WINDOW = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)
AFTER_WINDOW = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)


def commit_info(digit: str, subject: str) -> CommitInfo:
    return CommitInfo(
        sha=digit * 40,
        short_sha=digit * 7,
        author="Test Operator",
        committed_at="2026-11-20T10:00:00Z",
        subject=subject,
    )


RETIRE = commit_info("1", "Retire pve3")
SCHEDULE = commit_info("2", "Schedule firmware updates")
MOVE = commit_info("3", "Move pve2 to the server VLAN")
ANSIBLE = commit_info("4", "Change the nas1 Ansible vars")
ADD = commit_info("5", "Add k3s-4")
READD = commit_info("6", "Bring pve3 back")

DECOMMISSION_PVE3 = ChangeEvent(EventKind.DECOMMISSION, "pve3", RETIRE, EventSource.TRAILER)
NEW_K3S = ChangeEvent(EventKind.NEW_SYSTEM, "k3s-4", ADD, EventSource.INVENTORY_DIFF)
NEW_PVE3 = ChangeEvent(EventKind.NEW_SYSTEM, "pve3", READD, EventSource.TRAILER)
MAINTENANCE_PVE1 = ChangeEvent(
    EventKind.MAINTENANCE,
    "pve1",
    SCHEDULE,
    EventSource.TRAILER,
    start=WINDOW_START,
    end=WINDOW_END,
)
ROW_PVE2 = ChangeEvent(
    EventKind.CONFIG_CHANGE,
    "pve2",
    MOVE,
    EventSource.DIFF,
    files=("ansible/hosts.ini", INVENTORY),
    touches_docs=True,
)
VARS_NAS1 = ChangeEvent(
    EventKind.CONFIG_CHANGE, "nas1", ANSIBLE, EventSource.DIFF, files=("ansible/nas1.yml",)
)


def context_with(*events: ChangeEvent) -> ChangeContext:
    windows = [
        MaintenanceWindow.from_event(event)
        for event in events
        if event.kind is EventKind.MAINTENANCE
    ]
    return ChangeContext(
        head_sha="f" * 40,
        since_sha="e" * 40,
        inventory_path=INVENTORY,
        events=list(events),
        windows=windows,
    )


def system_dict(name: str, kind: str, tier: str, address: str) -> dict[str, Any]:
    return System(name, kind, tier, AccessMethod.SSH, address=address).to_dict()


def base_snapshot() -> Snapshot:
    return Snapshot(
        systems={
            "nas1": system_dict("nas1", "truenas", "1", "10.0.0.10"),
            "pve1": system_dict("pve1", "proxmox", "1", "10.0.0.1"),
            "pve2": system_dict("pve2", "proxmox", "1", "10.0.0.2"),
            "pve3": system_dict("pve3", "proxmox", "2", "10.0.0.3"),
        },
        access={name: "reachable" for name in ["nas1", "pve1", "pve2", "pve3"]},
        tools={
            name: {"htop": "installed", "jq": "missing"}
            for name in ["nas1", "pve1", "pve2", "pve3"]
        },
    )


def changed(**edits: Any) -> Snapshot:
    """Return a copy of the base snapshot with the given edits applied.

    Keys: ``remove``, ``keep_results``, ``add``, ``access``, ``tools`` and ``fields``.
    """
    snapshot = copy.deepcopy(base_snapshot())
    for name in edits.get("remove", []):
        del snapshot.systems[name]
        if not edits.get("keep_results"):
            del snapshot.access[name]
            del snapshot.tools[name]
    for name, values in edits.get("add", {}).items():
        snapshot.systems[name] = system_dict(name, *values)
        snapshot.access[name] = "reachable"
        snapshot.tools[name] = {"htop": "installed"}
    snapshot.access.update(edits.get("access", {}))
    for name, tools in edits.get("tools", {}).items():
        snapshot.tools[name].update(tools)
    for name, values in edits.get("fields", {}).items():
        snapshot.systems[name].update(values)
    return snapshot


@dataclass
class DriftCase:
    id: str
    current: Snapshot
    changes: ChangeContext
    expected: list[DriftRow]
    now: datetime = INSIDE_WINDOW
    previous: Snapshot | None = field(default_factory=base_snapshot)


CASES = [
    DriftCase("unchanged", base_snapshot(), context_with(), []),
    DriftCase(
        "first run",
        changed(remove=["pve3"], access={"pve1": "unreachable"}),
        context_with(),
        [],
        previous=None,
    ),
    DriftCase(
        "removed with decommission",
        changed(remove=["pve3"]),
        context_with(DECOMMISSION_PVE3),
        [
            DriftRow(
                "pve3",
                DriftKind.SYSTEM_REMOVED,
                "present",
                "absent",
                Verdict.EXPECTED,
                "Commit 1111111 decommissioned pve3 (Decommission trailer).",
                commit_sha="1111111",
            )
        ],
    ),
    DriftCase(
        "removed without decommission",
        changed(remove=["pve3"]),
        context_with(),
        [
            DriftRow(
                "pve3",
                DriftKind.SYSTEM_REMOVED,
                "present",
                "absent",
                Verdict.UNEXPECTED,
                "pve3 is no longer in the inventory, and no commit since the last check "
                "decommissions it.",
            )
        ],
    ),
    DriftCase(
        "removed system has no access row",
        changed(remove=["pve3"], keep_results=True, access={"pve3": "unreachable"}),
        context_with(DECOMMISSION_PVE3),
        [
            DriftRow(
                "pve3",
                DriftKind.SYSTEM_REMOVED,
                "present",
                "absent",
                Verdict.EXPECTED,
                "Commit 1111111 decommissioned pve3 (Decommission trailer).",
                commit_sha="1111111",
            )
        ],
    ),
    DriftCase(
        "added with new system event",
        changed(add={"k3s-4": ("k3s", "2", "10.0.0.24")}),
        context_with(NEW_K3S),
        [
            DriftRow(
                "k3s-4",
                DriftKind.SYSTEM_ADDED,
                "absent",
                "present",
                Verdict.EXPECTED,
                "Commit 5555555 added k3s-4 as a new system (inventory row added).",
                commit_sha="5555555",
            )
        ],
    ),
    DriftCase(
        "added without event",
        changed(add={"k3s-4": ("k3s", "2", "10.0.0.24")}),
        context_with(),
        [
            DriftRow(
                "k3s-4",
                DriftKind.SYSTEM_ADDED,
                "absent",
                "present",
                Verdict.UNEXPECTED,
                "k3s-4 is new in the inventory, but no commit since the last check adds it "
                "(undocumented addition).",
            )
        ],
    ),
    DriftCase(
        "access lost inside window",
        changed(access={"pve1": "unreachable"}),
        context_with(MAINTENANCE_PVE1),
        [
            DriftRow(
                "pve1",
                DriftKind.ACCESS_CHANGED,
                "reachable",
                "unreachable",
                Verdict.EXPECTED,
                f"pve1 is in the maintenance window {WINDOW_TEXT} set by commit 2222222.",
                commit_sha="2222222",
                window=WINDOW_TEXT,
            )
        ],
    ),
    DriftCase(
        "access lost after window",
        changed(access={"pve1": "timed_out"}),
        context_with(MAINTENANCE_PVE1),
        [
            DriftRow(
                "pve1",
                DriftKind.ACCESS_CHANGED,
                "reachable",
                "timed_out",
                Verdict.UNEXPECTED,
                "pve1 was reachable at the last check and is timed out now, and no "
                "maintenance window covers 2026-12-05T04:00:00Z.",
            )
        ],
        now=AFTER_WINDOW,
    ),
    DriftCase(
        "window of other system",
        changed(access={"pve2": "unreachable"}),
        context_with(MAINTENANCE_PVE1),
        [
            DriftRow(
                "pve2",
                DriftKind.ACCESS_CHANGED,
                "reachable",
                "unreachable",
                Verdict.UNEXPECTED,
                "pve2 was reachable at the last check and is unreachable now, and no "
                "maintenance window covers 2026-12-05T03:00:00Z.",
            )
        ],
    ),
    DriftCase(
        "access recovered",
        base_snapshot(),
        context_with(),
        [
            DriftRow(
                "pve1",
                DriftKind.ACCESS_CHANGED,
                "unreachable",
                "reachable",
                Verdict.EXPECTED,
                "Access recovered: pve1 is reachable again.",
            )
        ],
        previous=changed(access={"pve1": "unreachable"}),
    ),
    DriftCase(
        "failure mode changed",
        changed(access={"pve1": "auth_failed"}),
        context_with(),
        [
            DriftRow(
                "pve1",
                DriftKind.ACCESS_CHANGED,
                "unreachable",
                "auth_failed",
                Verdict.UNEXPECTED,
                "pve1 was unreachable at the last check and is auth failed now, and no "
                "maintenance window covers 2026-12-05T03:00:00Z.",
            )
        ],
        previous=changed(access={"pve1": "unreachable"}),
    ),
    DriftCase(
        "decommissioned system still listed",
        changed(access={"pve3": "unreachable"}),
        context_with(DECOMMISSION_PVE3),
        [
            DriftRow(
                "pve3",
                DriftKind.ACCESS_CHANGED,
                "reachable",
                "unreachable",
                Verdict.EXPECTED,
                "Commit 1111111 decommissioned pve3 (Decommission trailer).",
                commit_sha="1111111",
            )
        ],
    ),
    DriftCase(
        "decommission undone by new system",
        changed(access={"pve3": "unreachable"}),
        context_with(DECOMMISSION_PVE3, NEW_PVE3),
        [
            DriftRow(
                "pve3",
                DriftKind.ACCESS_CHANGED,
                "reachable",
                "unreachable",
                Verdict.UNEXPECTED,
                "pve3 was reachable at the last check and is unreachable now, and no "
                "maintenance window covers 2026-12-05T03:00:00Z.",
            )
        ],
    ),
    DriftCase(
        "not contacted after row change",
        changed(access={"pve2": "not_contacted"}),
        context_with(ROW_PVE2),
        [
            DriftRow(
                "pve2",
                DriftKind.ACCESS_CHANGED,
                "reachable",
                "not_contacted",
                Verdict.EXPECTED,
                "Commit 3333333 changed the inventory row of pve2, so it is no longer contacted.",
                commit_sha="3333333",
            )
        ],
    ),
    DriftCase(
        "tool lost inside window",
        changed(tools={"pve1": {"htop": "missing"}}),
        context_with(MAINTENANCE_PVE1),
        [
            DriftRow(
                "pve1",
                DriftKind.TOOL_CHANGED,
                "installed",
                "missing",
                Verdict.EXPECTED,
                f"pve1 is in the maintenance window {WINDOW_TEXT} set by commit 2222222.",
                commit_sha="2222222",
                window=WINDOW_TEXT,
                tool="htop",
            )
        ],
    ),
    DriftCase(
        "tool lost after config change",
        changed(tools={"nas1": {"htop": "missing"}}),
        context_with(VARS_NAS1),
        [
            DriftRow(
                "nas1",
                DriftKind.TOOL_CHANGED,
                "installed",
                "missing",
                Verdict.EXPECTED,
                "Commit 4444444 changed the configuration of nas1 (ansible/nas1.yml).",
                commit_sha="4444444",
                tool="htop",
            )
        ],
    ),
    DriftCase(
        "tool lost without reason",
        changed(tools={"pve2": {"htop": "outdated"}}),
        context_with(VARS_NAS1, MAINTENANCE_PVE1),
        [
            DriftRow(
                "pve2",
                DriftKind.TOOL_CHANGED,
                "installed",
                "outdated",
                Verdict.UNEXPECTED,
                "htop on pve2 was installed at the last check and is outdated now, and no "
                "maintenance window or commit since the last check explains it.",
                tool="htop",
            )
        ],
    ),
    DriftCase(
        "tool provisioned",
        changed(tools={"pve2": {"jq": "installed"}}),
        context_with(),
        [
            DriftRow(
                "pve2",
                DriftKind.TOOL_CHANGED,
                "missing",
                "installed",
                Verdict.EXPECTED,
                "jq was provisioned on pve2.",
                tool="jq",
            )
        ],
    ),
    DriftCase(
        "tool states without rank ignored",
        changed(tools={"pve2": {"htop": "unknown", "jq": "not_applicable"}}),
        context_with(),
        [],
    ),
    DriftCase(
        "address change with row change",
        changed(fields={"pve2": {"address": "10.0.20.2"}}),
        context_with(ROW_PVE2),
        [
            DriftRow(
                "pve2",
                DriftKind.ADDRESS_CHANGED,
                "10.0.0.2",
                "10.0.20.2",
                Verdict.EXPECTED,
                "Commit 3333333 changed the inventory row of pve2.",
                commit_sha="3333333",
            )
        ],
    ),
    DriftCase(
        "config change outside inventory",
        changed(fields={"nas1": {"tier": "2"}}),
        context_with(VARS_NAS1),
        [
            DriftRow(
                "nas1",
                DriftKind.TIER_CHANGED,
                "1",
                "2",
                Verdict.UNEXPECTED,
                "The tier of nas1 changed from 1 to 2, but no commit since the last check "
                "changed its inventory row.",
            )
        ],
    ),
    DriftCase(
        "type change without commit",
        changed(fields={"pve1": {"type": "debian"}}),
        context_with(),
        [
            DriftRow(
                "pve1",
                DriftKind.TYPE_CHANGED,
                "proxmox",
                "debian",
                Verdict.UNEXPECTED,
                "The type of pve1 changed from proxmox to debian, but no commit since the "
                "last check changed its inventory row.",
            )
        ],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_drift_rows(case: DriftCase) -> None:
    rows = compute_drift(case.previous, case.current, case.changes, case.now)

    assert rows == case.expected


def test_unexpected_rows_sort_first() -> None:
    current = changed(
        remove=["pve3"],
        add={"k3s-4": ("k3s", "2", "10.0.0.24")},
        access={"pve1": "unreachable", "nas1": "unreachable"},
        tools={"pve2": {"jq": "installed"}},
    )

    rows = compute_drift(
        base_snapshot(), current, context_with(DECOMMISSION_PVE3, MAINTENANCE_PVE1), INSIDE_WINDOW
    )

    assert [(row.verdict, row.system, row.kind) for row in rows] == [
        (Verdict.UNEXPECTED, "k3s-4", DriftKind.SYSTEM_ADDED),
        (Verdict.UNEXPECTED, "nas1", DriftKind.ACCESS_CHANGED),
        (Verdict.EXPECTED, "pve1", DriftKind.ACCESS_CHANGED),
        (Verdict.EXPECTED, "pve2", DriftKind.TOOL_CHANGED),
        (Verdict.EXPECTED, "pve3", DriftKind.SYSTEM_REMOVED),
    ]


def test_drift_rejects_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        compute_drift(base_snapshot(), base_snapshot(), context_with(), datetime(2026, 12, 5))


def test_drift_row_round_trips() -> None:
    row = DriftRow(
        "pve1",
        DriftKind.TOOL_CHANGED,
        "installed",
        "missing",
        Verdict.EXPECTED,
        f"pve1 is in the maintenance window {WINDOW_TEXT} set by commit 2222222.",
        commit_sha="2222222",
        window=WINDOW_TEXT,
        tool="htop",
    )

    data = row.to_dict()

    assert data["kind"] == "tool_changed"
    assert data["verdict"] == "EXPECTED"
    assert DriftRow.from_dict(data) == row


def test_snapshot_round_trips() -> None:
    snapshot = base_snapshot()

    assert Snapshot.from_dict(snapshot.to_dict()) == snapshot


def test_snapshot_from_results() -> None:
    system = System("pve1", "proxmox", "1", AccessMethod.SSH, address="10.0.0.1")
    check = SystemCheck(
        system="pve1",
        access=AccessResult("pve1", AccessState.REACHABLE, "ssh"),
        tools=[
            ToolResult("htop", ToolState.INSTALLED),
            ToolResult("jq", ToolState.MISSING),
        ],
    )

    snapshot = Snapshot.from_results([system], [check])

    assert snapshot.systems == {"pve1": system.to_dict()}
    assert snapshot.access == {"pve1": "reachable"}
    assert snapshot.tools == {"pve1": {"htop": "installed", "jq": "missing"}}


# --------------------------------------------------------------------------- with a real repo


def test_drift_from_reviewed_repository(infra_repo: InfraRepo) -> None:
    rows = [
        ("nas1", "truenas", "1", "10.0.0.10"),
        ("pve1", "proxmox", "1", "10.0.0.1"),
        ("pve2", "proxmox", "1", "10.0.0.2"),
        ("pve3", "proxmox", "2", "10.0.0.3"),
    ]
    infra_repo.write(INVENTORY, inventory_text(rows))
    checked_sha = infra_repo.commit("Import the infra docs", datetime(2026, 11, 1, tzinfo=UTC))

    infra_repo.write(INVENTORY, inventory_text([row for row in rows if row[0] != "pve3"]))
    retire_sha = infra_repo.commit(
        "Shut down pve3\n\nDecommission: pve3\n", datetime(2026, 11, 12, tzinfo=UTC)
    )
    window_sha = infra_repo.commit(
        "Schedule firmware updates\n\nMaintenance: pve1 2026-12-05T02:00Z/PT2H\n",
        datetime(2026, 11, 15, tzinfo=UTC),
    )

    changes = review_changes(
        infra_repo.path, checked_sha, now=INSIDE_WINDOW, system_names=table_system_names
    )
    current = changed(remove=["pve3"], access={"pve1": "unreachable", "pve2": "unreachable"})
    drift = compute_drift(base_snapshot(), current, changes, INSIDE_WINDOW)

    assert drift == [
        DriftRow(
            "pve2",
            DriftKind.ACCESS_CHANGED,
            "reachable",
            "unreachable",
            Verdict.UNEXPECTED,
            "pve2 was reachable at the last check and is unreachable now, and no "
            "maintenance window covers 2026-12-05T03:00:00Z.",
        ),
        DriftRow(
            "pve1",
            DriftKind.ACCESS_CHANGED,
            "reachable",
            "unreachable",
            Verdict.EXPECTED,
            f"pve1 is in the maintenance window {WINDOW_TEXT} set by commit "
            f"{infra_repo.short(window_sha)}.",
            commit_sha=infra_repo.short(window_sha),
            window=WINDOW_TEXT,
        ),
        DriftRow(
            "pve3",
            DriftKind.SYSTEM_REMOVED,
            "present",
            "absent",
            Verdict.EXPECTED,
            f"Commit {infra_repo.short(retire_sha)} decommissioned pve3 (Decommission trailer).",
            commit_sha=infra_repo.short(retire_sha),
        ),
    ]


def test_missing_address_reads_empty() -> None:
    current = changed(fields={"pve1": {"address": None}})

    rows = compute_drift(base_snapshot(), current, context_with(), INSIDE_WINDOW)

    assert rows == [
        DriftRow(
            "pve1",
            DriftKind.ADDRESS_CHANGED,
            "10.0.0.1",
            None,
            Verdict.UNEXPECTED,
            "The address of pve1 changed from 10.0.0.1 to (empty), but no commit since the "
            "last check changed its inventory row.",
        )
    ]
