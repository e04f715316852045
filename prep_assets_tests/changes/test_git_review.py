"""Tests of the GIT REVIEW step against real git repositories."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from prep_assets.changes.git_review import (
    ChangeContext,
    ChangeEvent,
    ChangeReviewError,
    EventKind,
    EventSource,
    MaintenanceWindow,
    parse_interval,
    parse_trailer,
    review_changes,
)
from prep_assets_tests.changes.conftest import (
    INVENTORY_PATH,
    InfraRepo,
    inventory_text,
    table_system_names,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

BASE_ROWS = [
    ("pve1", "proxmox", "1", "10.0.0.1"),
    ("pve2", "proxmox", "1", "10.0.0.2"),
    ("pve3", "proxmox", "2", "10.0.0.3"),
    ("nas1", "truenas", "1", "10.0.0.10"),
]

HOSTS_INI = (
    "[proxmox]\n"
    "pve1 ansible_host=10.0.0.1\n"
    "pve2 ansible_host=10.0.0.2\n"
    "pve3 ansible_host=10.0.0.3\n"
    "\n"
    "[storage]\n"
    "nas1 ansible_host=10.0.0.10\n"
)


def day(number: int) -> datetime:
    """Return 10:00 UTC on the given day of November 2026."""
    return datetime(2026, 11, number, 10, 0, tzinfo=UTC)


def review(infra: InfraRepo, since: str | None, **options: Any) -> ChangeContext:
    options.setdefault("now", NOW)
    return review_changes(infra.path, since, system_names=table_system_names, **options)


def summarize(event: ChangeEvent) -> tuple[Any, ...]:
    return (
        event.kind,
        event.system,
        event.commit.short_sha,
        event.source,
        event.start,
        event.end,
        event.files,
        event.touches_docs,
    )


def expected(
    kind: EventKind,
    system: str | None,
    short_sha: str,
    source: EventSource,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    files: tuple[str, ...] = (),
    touches_docs: bool = False,
) -> tuple[Any, ...]:
    """Return the ``summarize`` tuple of the event that a test expects."""
    return (kind, system, short_sha, source, start, end, files, touches_docs)


def rows_without(name: str) -> list[tuple[str, str, str, str]]:
    return [row for row in BASE_ROWS if row[0] != name]


class History:
    """The shas of the commits made by ``build_history``."""

    def __init__(self, infra: InfraRepo) -> None:
        self.infra = infra
        self.shas: dict[str, str] = {}

    def short(self, label: str) -> str:
        return self.infra.short(self.shas[label])


def build_history(infra: InfraRepo) -> History:
    history = History(infra)
    rows = list(BASE_ROWS)

    infra.write(INVENTORY_PATH, inventory_text(rows))
    infra.write("ansible/hosts.ini", HOSTS_INI)
    infra.write("backup/retention.yaml", "keep_daily: 7\n")
    history.shas["import"] = infra.commit("Import the infra docs", day(1))

    rows.append(("k3s-4", "k3s", "2", "10.0.0.24"))
    infra.write(INVENTORY_PATH, inventory_text(rows))
    history.shas["add_k3s"] = infra.commit("Add k3s-4 to the inventory", day(10))

    rows = [row for row in rows if row[0] != "pve3"]
    infra.write(INVENTORY_PATH, inventory_text(rows))
    infra.write("ansible/hosts.ini", HOSTS_INI.replace("pve3 ansible_host=10.0.0.3\n", ""))
    history.shas["retire_pve3"] = infra.commit(
        "Shut down the old hypervisor\n\nIts VMs moved to pve1.\n\nDecommission: pve3\n",
        day(12),
    )

    history.shas["maintenance"] = infra.commit(
        "Schedule firmware updates\n\n"
        "Maintenance: pve1 2026-12-05T02:00Z/2026-12-05T04:00Z\n"
        "Maintenance: nas1 2026-12-06T02:00:00+01:00/PT2H\n",
        day(15),
    )

    rows = [
        (name, kind, tier, "10.0.20.2" if name == "pve2" else address)
        for name, kind, tier, address in rows
    ]
    infra.write(INVENTORY_PATH, inventory_text(rows))
    hosts = HOSTS_INI.replace("pve3 ansible_host=10.0.0.3\n", "")
    infra.write("ansible/hosts.ini", hosts.replace("10.0.0.2\n", "10.0.20.2\n"))
    history.shas["move_pve2"] = infra.commit("Move pve2 to the server VLAN", day(20))

    infra.write("backup/retention.yaml", "keep_daily: 14\n")
    history.shas["retention"] = infra.commit("Keep daily backups for two weeks", day(22))

    hosts = hosts.replace("10.0.0.2\n", "10.0.20.2\n")
    infra.write(
        "ansible/hosts.ini", hosts.replace("\n[storage]\nnas1 ansible_host=10.0.0.10\n", "")
    )
    history.shas["remove_nas1"] = infra.commit("Remove nas1 from Ansible", day(25))
    return history


@pytest.fixture
def history(infra_repo: InfraRepo) -> History:
    return build_history(infra_repo)


def expected_history_events(history: History) -> list[tuple[Any, ...]]:
    files_pve2 = ("ansible/hosts.ini", INVENTORY_PATH)
    return [
        expected(
            EventKind.NEW_SYSTEM, "k3s-4", history.short("add_k3s"), EventSource.INVENTORY_DIFF
        ),
        expected(EventKind.DECOMMISSION, "pve3", history.short("retire_pve3"), EventSource.TRAILER),
        expected(
            EventKind.MAINTENANCE,
            "pve1",
            history.short("maintenance"),
            EventSource.TRAILER,
            start=datetime(2026, 12, 5, 2, 0, tzinfo=UTC),
            end=datetime(2026, 12, 5, 4, 0, tzinfo=UTC),
        ),
        expected(
            EventKind.MAINTENANCE,
            "nas1",
            history.short("maintenance"),
            EventSource.TRAILER,
            start=datetime(2026, 12, 6, 1, 0, tzinfo=UTC),
            end=datetime(2026, 12, 6, 3, 0, tzinfo=UTC),
        ),
        expected(
            EventKind.CONFIG_CHANGE,
            "pve2",
            history.short("move_pve2"),
            EventSource.DIFF,
            files=files_pve2,
            touches_docs=True,
        ),
        expected(
            EventKind.CONFIG_CHANGE,
            None,
            history.short("retention"),
            EventSource.DIFF,
            files=("backup/retention.yaml",),
        ),
        expected(EventKind.DECOMMISSION, "nas1", history.short("remove_nas1"), EventSource.KEYWORD),
    ]


# --------------------------------------------------------------------------- full history


def test_review_since_import_events(history: History) -> None:
    context = review(history.infra, history.shas["import"])

    assert [summarize(event) for event in context.events] == expected_history_events(history)


def test_review_since_import_metadata(history: History) -> None:
    context = review(history.infra, history.shas["import"])

    assert context.head_sha == history.shas["remove_nas1"]
    assert context.since_sha == history.shas["import"]
    assert context.inventory_path == INVENTORY_PATH
    assert context.warnings == []
    labels = ["add_k3s", "retire_pve3", "maintenance", "move_pve2", "retention", "remove_nas1"]
    assert [commit.sha for commit in context.commits] == [history.shas[label] for label in labels]


def test_commit_info_fields(history: History) -> None:
    context = review(history.infra, history.shas["import"])
    retire = context.commits[1]

    assert retire.sha == history.shas["retire_pve3"]
    assert retire.short_sha == history.short("retire_pve3")
    assert retire.author == "Test Operator"
    assert retire.committed_at == "2026-11-12T10:00:00Z"
    assert retire.subject == "Shut down the old hypervisor"


def test_review_accepts_short_since_sha(history: History) -> None:
    context = review(history.infra, history.short("move_pve2"))

    assert context.since_sha == history.shas["move_pve2"]
    assert [commit.sha for commit in context.commits] == [
        history.shas["retention"],
        history.shas["remove_nas1"],
    ]


def test_review_since_head_is_empty(history: History) -> None:
    context = review(history.infra, history.shas["remove_nas1"])

    assert context.commits == []
    assert context.events == []
    assert context.warnings == []


def test_context_helpers(history: History) -> None:
    context = review(history.infra, history.shas["import"])

    decommission = context.decommission_for("pve3")
    assert decommission is not None
    assert decommission.commit.sha == history.shas["retire_pve3"]
    assert context.decommission_for("pve1") is None

    addition = context.new_system_for("k3s-4")
    assert addition is not None
    assert addition.commit.sha == history.shas["add_k3s"]
    assert context.new_system_for("pve3") is None

    window = context.window_covering("pve1", datetime(2026, 12, 5, 3, 0, tzinfo=UTC))
    assert window is not None
    assert window.commit.sha == history.shas["maintenance"]
    assert context.window_covering("pve1", datetime(2026, 12, 5, 4, 0, tzinfo=UTC)) is None
    assert context.window_covering("pve2", datetime(2026, 12, 5, 3, 0, tzinfo=UTC)) is None

    row_change = context.inventory_change_for("pve2")
    assert row_change is not None
    assert row_change.commit.sha == history.shas["move_pve2"]
    assert context.inventory_change_for("pve1") is None
    assert [event.commit.sha for event in context.config_changes_for("pve2")] == [
        history.shas["move_pve2"]
    ]


def test_context_round_trips_through_dict(history: History) -> None:
    context = review(history.infra, history.shas["import"])

    restored = ChangeContext.from_dict(context.to_dict())

    assert restored == context


def test_context_dict_uses_json_values(history: History) -> None:
    context = review(history.infra, history.shas["import"])

    data = context.to_dict()
    maintenance = data["events"][2]
    assert maintenance["kind"] == "maintenance"
    assert maintenance["source"] == "trailer"
    assert maintenance["start"] == "2026-12-05T02:00:00Z"
    assert maintenance["end"] == "2026-12-05T04:00:00Z"
    assert data["windows"][1]["start"] == "2026-12-06T01:00:00Z"


# --------------------------------------------------------------------------- commit ranges


def test_first_run_reads_window_before_now(history: History) -> None:
    context = review(history.infra, None, first_run_days=25)

    assert context.since_sha is None
    assert context.warnings == []
    assert [commit.sha for commit in context.commits][0] == history.shas["add_k3s"]
    assert len(context.commits) == 6


def test_first_run_limits_commit_count(history: History) -> None:
    context = review(history.infra, None, max_commits=2)

    assert [commit.sha for commit in context.commits] == [
        history.shas["retention"],
        history.shas["remove_nas1"],
    ]
    assert context.warnings == [
        "More than 2 commits to review; only the newest 2 were read. "
        "Raise max_commits to read them all"
    ]


def test_unknown_since_falls_back(history: History) -> None:
    context = review(history.infra, "0" * 40, first_run_days=25)

    assert context.since_sha is None
    assert len(context.commits) == 6
    assert len(context.warnings) == 1
    assert "no longer exists" in context.warnings[0]
    assert "0" * 40 in context.warnings[0]


def test_rewritten_history_falls_back(history: History) -> None:
    infra = history.infra
    infra.repo.git.reset("--hard", history.shas["retention"])
    infra.write("backup/retention.yaml", "keep_daily: 30\n")
    rewritten = infra.commit("Keep daily backups for a month", day(26))

    context = review(infra, history.shas["remove_nas1"], first_run_days=10)

    assert context.since_sha is None
    assert context.head_sha == rewritten
    assert [commit.sha for commit in context.commits] == [
        history.shas["retention"],
        rewritten,
    ]
    assert len(context.warnings) == 1
    assert "is not an ancestor of HEAD" in context.warnings[0]


def test_earlier_windows_are_kept(history: History) -> None:
    context = review(history.infra, history.shas["move_pve2"])

    assert [event.kind for event in context.events] == [
        EventKind.CONFIG_CHANGE,
        EventKind.DECOMMISSION,
    ]
    assert [(window.system, window.commit.sha) for window in context.windows] == [
        ("pve1", history.shas["maintenance"]),
        ("nas1", history.shas["maintenance"]),
    ]


def test_earlier_windows_take_inventory_spelling(base: InfraRepo) -> None:
    base.commit("Schedule maintenance\n\nMaintenance: PVE1 2026-12-05T02:00Z/PT2H\n", day(2))
    checked = base.commit("Keep the notes", day(3))

    context = review(base, checked)

    assert [window.system for window in context.windows] == ["pve1"]


def test_earlier_windows_respect_lookback(history: History) -> None:
    context = review(history.infra, history.shas["move_pve2"], window_lookback_days=10)

    assert context.windows == []


# --------------------------------------------------------------------------- single commits


@pytest.fixture
def base(infra_repo: InfraRepo) -> InfraRepo:
    infra_repo.write(INVENTORY_PATH, inventory_text(BASE_ROWS))
    infra_repo.write("ansible/hosts.ini", HOSTS_INI)
    infra_repo.commit("Import the infra docs", day(1))
    return infra_repo


def review_last_commit(infra: InfraRepo) -> ChangeContext:
    return review(infra, infra.repo.head.commit.parents[0].hexsha)


def test_inventory_removal_without_trailer(base: InfraRepo) -> None:
    base.write(INVENTORY_PATH, inventory_text(rows_without("pve3")))
    sha = base.commit("Update the inventory", day(2))

    context = review_last_commit(base)

    assert [summarize(event) for event in context.events] == [
        expected(EventKind.DECOMMISSION, "pve3", base.short(sha), EventSource.INVENTORY_DIFF),
    ]


def test_trailer_keys_ignore_case(base: InfraRepo) -> None:
    base.commit("Plan the rack change\n\ndecommission: pve2, pve3\nNEW-SYSTEM: pve1\n", day(2))

    context = review_last_commit(base)

    assert [(event.kind, event.system) for event in context.events] == [
        (EventKind.DECOMMISSION, "pve2"),
        (EventKind.DECOMMISSION, "pve3"),
        (EventKind.NEW_SYSTEM, "pve1"),
    ]
    assert all(event.source is EventSource.TRAILER for event in context.events)


def test_trailer_names_take_inventory_spelling(base: InfraRepo) -> None:
    base.commit("Retire a node\n\nDecommission: PVE3\n", day(2))

    context = review_last_commit(base)

    assert [event.system for event in context.events] == ["pve3"]
    assert context.warnings == []


def test_trailer_with_unknown_system_warns(base: InfraRepo) -> None:
    sha = base.commit("Retire a node\n\nDecommission: pve9\n", day(2))

    context = review_last_commit(base)

    assert [(event.kind, event.system) for event in context.events] == [
        (EventKind.DECOMMISSION, "pve9")
    ]
    assert context.warnings == [
        f"Commit {base.short(sha)}: trailer 'Decommission: pve9' names pve9, which is not in "
        f"{INVENTORY_PATH} at this commit or its parent"
    ]


@pytest.mark.parametrize(
    ("value", "error_part"),
    [
        ("pve1 tomorrow", "is not an ISO 8601 interval"),
        ("pve1 2026-12-05T02:00/PT2H", "has no UTC offset"),
        ("pve1 2026-12-05T04:00Z/2026-12-05T02:00Z", "ends before it starts"),
        ("2026-12-05T02:00Z/PT2H", "needs a system and an interval"),
        ("pve1 2026-12-05T02:00Z/P1M", "is not an ISO 8601 duration"),
    ],
)
def test_invalid_maintenance_trailer_warns(base: InfraRepo, value: str, error_part: str) -> None:
    sha = base.commit(f"Schedule maintenance\n\nMaintenance: {value}\n", day(2))

    context = review_last_commit(base)

    assert context.events == []
    assert len(context.warnings) == 1
    assert context.warnings[0].startswith(
        f"Commit {base.short(sha)}: trailer 'Maintenance: {value}' is invalid and was ignored: "
    )
    assert error_part in context.warnings[0]


def test_trailer_outside_last_paragraph_ignored(base: InfraRepo) -> None:
    base.commit("Retire a node\n\nWe talked about it.\nDecommission: pve3\n", day(2))

    context = review_last_commit(base)

    assert context.events == []


def test_keyword_needs_name_in_removed_lines(base: InfraRepo) -> None:
    base.write("ansible/hosts.ini", HOSTS_INI + "pve3 backup=true\n")
    sha = base.commit("Retire pve3", day(2))

    context = review_last_commit(base)

    assert [summarize(event) for event in context.events] == [
        expected(
            EventKind.CONFIG_CHANGE,
            "pve3",
            base.short(sha),
            EventSource.DIFF,
            files=("ansible/hosts.ini",),
        ),
    ]


def test_keyword_list_stops_at_other_word(base: InfraRepo) -> None:
    base.write("ansible/hosts.ini", HOSTS_INI.replace("pve1 ansible_host=10.0.0.1\n", ""))
    base.commit("Remove old backups from pve1", day(2))

    context = review_last_commit(base)

    assert [(event.kind, event.system) for event in context.events] == [
        (EventKind.CONFIG_CHANGE, "pve1")
    ]


def test_keyword_with_conventional_prefix(base: InfraRepo) -> None:
    hosts = HOSTS_INI.replace("pve2 ansible_host=10.0.0.2\n", "")
    base.write("ansible/hosts.ini", hosts.replace("pve3 ansible_host=10.0.0.3\n", ""))
    sha = base.commit("infra(proxmox): retire pve2 and pve3", day(2))

    context = review_last_commit(base)

    assert [summarize(event) for event in context.events] == [
        expected(EventKind.DECOMMISSION, "pve2", base.short(sha), EventSource.KEYWORD),
        expected(EventKind.DECOMMISSION, "pve3", base.short(sha), EventSource.KEYWORD),
    ]


def test_inventory_diff_wins_over_keyword(base: InfraRepo) -> None:
    base.write(INVENTORY_PATH, inventory_text(rows_without("pve3")))
    base.commit("Decommission pve3", day(2))

    context = review_last_commit(base)

    assert [(event.kind, event.system, event.source) for event in context.events] == [
        (EventKind.DECOMMISSION, "pve3", EventSource.INVENTORY_DIFF)
    ]


def test_docs_change_naming_system_flagged(base: InfraRepo) -> None:
    base.write("docs/runbooks/pve1.md", "# pve1\n\nReboot pve1 from the IPMI console.\n")
    base.write("docs/runbooks/general.md", "# General\n\nCall the on-call person.\n")
    sha = base.commit("Write runbooks", day(2))

    context = review_last_commit(base)

    assert [summarize(event) for event in context.events] == [
        expected(
            EventKind.CONFIG_CHANGE,
            "pve1",
            base.short(sha),
            EventSource.DIFF,
            files=("docs/runbooks/pve1.md",),
            touches_docs=True,
        ),
        expected(
            EventKind.CONFIG_CHANGE,
            None,
            base.short(sha),
            EventSource.DIFF,
            files=("docs/runbooks/general.md",),
        ),
    ]


def test_name_inside_longer_word_ignored(base: InfraRepo) -> None:
    base.write("ansible/extra.ini", "pve10 ansible_host=10.0.0.99\nnas1-old=1\n")
    base.commit("Add lab hosts", day(2))

    context = review_last_commit(base)

    assert [(event.kind, event.system) for event in context.events] == [
        (EventKind.CONFIG_CHANGE, None)
    ]


def test_inventory_deletion_warns(base: InfraRepo) -> None:
    base.delete(INVENTORY_PATH)
    sha = base.commit("Move the inventory to the wiki", day(2))

    context = review_last_commit(base)

    # Every row was removed, so every system got a changed line.
    assert [(event.kind, event.system, event.files) for event in context.events] == [
        (EventKind.CONFIG_CHANGE, name, (INVENTORY_PATH,))
        for name in ["nas1", "pve1", "pve2", "pve3"]
    ]
    assert context.warnings == [
        f"Commit {base.short(sha)}: this commit deletes or moves {INVENTORY_PATH}, so no "
        "system is reported as decommissioned by the inventory diff"
    ]


def test_unparsable_inventory_warns(base: InfraRepo) -> None:
    def strict_names(text: str) -> set[str]:
        if "BROKEN" in text:
            raise ValueError("row 7 has 3 cells, expected 4")
        return table_system_names(text)

    base.write(INVENTORY_PATH, inventory_text(rows_without("pve3")) + "BROKEN\n")
    sha = base.commit("Edit the inventory", day(2))

    context = review_changes(
        base.path,
        base.repo.head.commit.parents[0].hexsha,
        now=NOW,
        system_names=strict_names,
    )

    assert [event.kind for event in context.events] == [EventKind.CONFIG_CHANGE]
    assert len(context.warnings) == 1
    assert context.warnings[0].startswith(f"Commit {base.short(sha)}: {INVENTORY_PATH} at ")
    assert "row 7 has 3 cells, expected 4" in context.warnings[0]


def test_empty_commit_with_maintenance_only(base: InfraRepo) -> None:
    base.commit("Schedule maintenance\n\nMaintenance: pve1, pve2 2026-12-05T02:00Z/PT30M\n", day(2))

    context = review_last_commit(base)

    end = datetime(2026, 12, 5, 2, 30, tzinfo=UTC)
    assert [(event.kind, event.system, event.end) for event in context.events] == [
        (EventKind.MAINTENANCE, "pve1", end),
        (EventKind.MAINTENANCE, "pve2", end),
    ]


def test_root_commit_lists_new_files(infra_repo: InfraRepo) -> None:
    infra_repo.write(INVENTORY_PATH, inventory_text(BASE_ROWS))
    infra_repo.write("ansible/hosts.ini", HOSTS_INI)
    infra_repo.write("backup/retention.yaml", "keep_daily: 7\n")
    sha = infra_repo.commit("Import the infra docs", day(1))

    context = review(infra_repo, None, first_run_days=60)

    # A root commit has no parent inventory, so its rows are config changes, not new systems.
    files = ("ansible/hosts.ini", INVENTORY_PATH)
    assert [summarize(event) for event in context.events] == [
        *[
            expected(
                EventKind.CONFIG_CHANGE,
                name,
                infra_repo.short(sha),
                EventSource.DIFF,
                files=files,
                touches_docs=True,
            )
            for name in ["nas1", "pve1", "pve2", "pve3"]
        ],
        expected(
            EventKind.CONFIG_CHANGE,
            None,
            infra_repo.short(sha),
            EventSource.DIFF,
            files=("backup/retention.yaml",),
        ),
    ]


def test_merge_reports_branch_changes_once(base: InfraRepo) -> None:
    repo = base.repo
    repo.git.checkout("-b", "add-k3s")
    base.write(INVENTORY_PATH, inventory_text([*BASE_ROWS, ("k3s-5", "k3s", "2", "10.0.0.25")]))
    branch_sha = base.commit("Add k3s-5", day(3))
    repo.git.checkout("main")
    base.write("backup/retention.yaml", "keep_daily: 7\n")
    main_sha = base.commit("Add backup retention", day(4))
    date = day(5).isoformat()
    with repo.git.custom_environment(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date):
        repo.git.merge("--no-ff", "-m", "Merge branch 'add-k3s'", "add-k3s")

    context = review(base, repo.head.commit.parents[0].parents[0].hexsha)

    assert len(context.commits) == 3
    assert [(event.kind, event.system, event.commit.sha) for event in context.events] == [
        (EventKind.NEW_SYSTEM, "k3s-5", branch_sha),
        (EventKind.CONFIG_CHANGE, None, main_sha),
    ]


# --------------------------------------------------------------------------- errors


def test_review_rejects_naive_now(history: History) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        review(history.infra, None, now=datetime(2026, 12, 1, 12, 0))


def test_review_rejects_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(ChangeReviewError, match="is not a git repository"):
        review_changes(tmp_path / "absent", None, now=NOW, system_names=table_system_names)


def test_review_rejects_empty_repository(infra_repo: InfraRepo) -> None:
    with pytest.raises(ChangeReviewError, match="has no commits"):
        review(infra_repo, None)


def test_review_rejects_zero_max_commits(history: History) -> None:
    with pytest.raises(ValueError, match="max_commits must be at least 1, got 0"):
        review(history.infra, None, max_commits=0)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2026-12-05T02:00Z/2026-12-05T04:00Z", "2026-12-05T02:00Z", "2026-12-05T04:00Z"),
        ("2026-12-05T02:00:00+01:00/PT2H", "2026-12-05T01:00Z", "2026-12-05T03:00Z"),
        ("PT90M/2026-12-05T04:00Z", "2026-12-05T02:30Z", "2026-12-05T04:00Z"),
        ("2026-12-05T22:00Z/P1DT2H", "2026-12-05T22:00Z", "2026-12-07T00:00Z"),
        ("2026-12-05T02:00Z/P1W", "2026-12-05T02:00Z", "2026-12-12T02:00Z"),
        ("2026-12-05T02:00Z/PT0.5S", "2026-12-05T02:00Z", "2026-12-05T02:00:00.5Z"),
    ],
)
def test_parse_interval_forms(text: str, start: str, end: str) -> None:
    start_utc, end_utc = parse_interval(text)

    assert start_utc == datetime.fromisoformat(start)
    assert end_utc == datetime.fromisoformat(end)
    assert start_utc.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-05T02:00Z",
        "2026-12-05T02:00Z/",
        "2026-12-05T02:00Z/PT",
        "2026-12-05T02:00Z/P",
        "2026-12-05T02:00Z/2026-12-05T02:00Z",
        "2026-12-05T02:00Z/PT2H/PT1H",
        "2026-12-05/PT2H",
    ],
)
def test_parse_interval_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_interval(text)


def test_parse_trailer_ignores_other_keys() -> None:
    assert parse_trailer("Signed-off-by", "Test Operator <operator@example.test>") is None


def test_parse_trailer_rejects_empty_list() -> None:
    with pytest.raises(ValueError, match="names no system"):
        parse_trailer("Decommission", " , ")


def test_window_covers_half_open() -> None:
    context = ChangeContext.from_dict(
        {
            "head_sha": "a" * 40,
            "since_sha": None,
            "windows": [
                {
                    "system": "pve1",
                    "start": "2026-12-05T02:00:00Z",
                    "end": "2026-12-05T04:00:00Z",
                    "commit": {
                        "sha": "b" * 40,
                        "short_sha": "bbbbbbb",
                        "author": "Test Operator",
                        "committed_at": "2026-11-15T10:00:00Z",
                        "subject": "Schedule maintenance",
                    },
                }
            ],
        }
    )
    window: MaintenanceWindow = context.windows[0]
    start = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)

    assert window.covers("pve1", start)
    assert window.covers("pve1", start + timedelta(hours=2) - timedelta(seconds=1))
    assert not window.covers("pve1", start + timedelta(hours=2))
    assert not window.covers("pve1", start - timedelta(seconds=1))
    assert not window.covers("pve2", start)
    with pytest.raises(ValueError, match="timezone-aware"):
        window.covers("pve1", datetime(2026, 12, 5, 3, 0))
