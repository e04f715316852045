"""Building, validating and writing the status documents."""

import json
from datetime import UTC, datetime

import pytest

from prep_assets.models import AccessMethod, System
from prep_assets.report import document as document_module
from prep_assets.report.document import (
    InvalidStatusDocumentError,
    StatusInputs,
    build_status_document,
    validate_status_document,
    write_status_documents,
)
from prep_assets.report.markdown import render_markdown

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def sample_inputs(**overrides) -> StatusInputs:
    systems = [
        System("pve1", "proxmox-host", "critical", AccessMethod.SSH, address="127.0.0.2"),
        System("modem", "appliance", "low", AccessMethod.NONE, managed=False),
    ]
    values = dict(
        generated_at=NOW,
        head="a" * 40,
        branch="main",
        systems=systems,
        checks={
            "pve1": {
                "access": {
                    "state": "reachable",
                    "method": "ssh",
                    "latency_ms": 12.5,
                    "message": "",
                },
                "tools": [
                    {
                        "command": "iostat",
                        "state": "installed",
                        "path": "/usr/bin/iostat",
                        "package": "sysstat",
                        "version": "12.6.1-1",
                    },
                    {
                        "command": "perf",
                        "state": "missing",
                        "path": None,
                        "package": "linux-perf",
                        "version": None,
                    },
                ],
            },
            "modem": {
                "access": {
                    "state": "not_contacted",
                    "method": "none",
                    "latency_ms": None,
                    "message": "not contacted",
                },
                "tools": [],
            },
        },
        baselines={
            "pve1": {
                "source": "sample",
                "metrics": [
                    {"metric": "cpu_utilisation", "unit": "%", "avg": 3.0, "p95": 5.0, "max": 7.0}
                ],
            }
        },
        provisioning={
            "pve1": {
                "state": "planned",
                "package_manager": "apt",
                "packages": ["linux-perf"],
                "commands": [["apt-get", "install", "-y", "linux-perf"]],
                "reason": "missing: perf",
            }
        },
        last_checked={
            "pve1": {"tool_status": "2026-12-04T11:59:00Z", "access_status": "2026-12-04T11:59:00Z"}
        },
        changes={"since": None, "head": "a" * 40, "commits": [], "events": [], "warnings": []},
        drift=[
            {
                "system": "pve2",
                "kind": "system_removed",
                "before": "present",
                "after": "absent",
                "verdict": "UNEXPECTED",
                "reason": "no commit explains it",
                "commit_sha": None,
            }
        ],
        actions=[
            {
                "system": "pve2",
                "action": "alert",
                "reason": "system disappeared unexpectedly",
                "trigger": "system_removed",
                "commit": None,
            }
        ],
        problems=[
            {
                "file": "docs/infrastructure/system-inventory.md",
                "line": 9,
                "column": 3,
                "reason": "duplicate name",
                "name": "pve1",
            }
        ],
    )
    values.update(overrides)
    return StatusInputs(**values)


def test_document_validates_and_counts():
    document = build_status_document(sample_inputs())

    validate_status_document(document)
    assert document["summary"]["systems"] == 2
    assert document["summary"]["managed"] == 1
    assert document["summary"]["reachable"] == 1
    assert document["summary"]["tools_missing"] == 1
    assert document["summary"]["unexpected_drift"] == 1
    assert document["systems"][0]["last_checked"]["tool_status"] == "2026-12-04T11:59:00Z"
    assert document["systems"][0]["last_checked"]["baselines"] is None


def test_former_system_is_listed_out_of_inventory():
    document = build_status_document(sample_inputs(former_systems=["pve-old"]))

    former = [entry for entry in document["systems"] if entry["name"] == "pve-old"]
    assert len(former) == 1
    assert former[0]["in_inventory"] is False
    assert document["summary"]["systems"] == 2


def test_invalid_document_names_the_place():
    document = build_status_document(sample_inputs())
    document["systems"][0]["access"]["state"] = "sort of fine"

    with pytest.raises(InvalidStatusDocumentError, match="systems/0/access/state"):
        validate_status_document(document)


def test_write_produces_both_files(tmp_path):
    document = build_status_document(sample_inputs())

    json_path, markdown_path = write_status_documents(document, tmp_path)

    assert json.loads(json_path.read_text()) == document
    markdown = markdown_path.read_text()
    assert "| pve2 | alert | system disappeared unexpectedly | system_removed |" in markdown
    assert "| iostat | installed | /usr/bin/iostat | sysstat | 12.6.1-1 |" in markdown
    assert "docs/infrastructure/system-inventory.md | 9 | 3 | duplicate name" in markdown


def test_invalid_document_keeps_previous_files(tmp_path):
    good = build_status_document(sample_inputs())
    write_status_documents(good, tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    bad = build_status_document(sample_inputs())
    bad["summary"]["systems"] = -1

    with pytest.raises(InvalidStatusDocumentError):
        write_status_documents(bad, tmp_path)

    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    good = build_status_document(sample_inputs())
    write_status_documents(good, tmp_path)
    before = (tmp_path / "prep-status.md").read_bytes()

    def fail(document):
        raise OSError("disk full")

    monkeypatch.setattr(document_module, "render_markdown", fail)
    with pytest.raises(OSError):
        write_status_documents(good, tmp_path)

    assert (tmp_path / "prep-status.md").read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "prep-status.json",
        "prep-status.md",
    ]


def window(system: str, start: str, end: str) -> dict:
    commit = {
        "sha": "b" * 40,
        "short_sha": "bbbbbbb",
        "author": "Test Operator",
        "committed_at": "2026-12-01T09:00:00Z",
        "subject": f"Maintain {system}",
    }
    return {"system": system, "start": start, "end": end, "commit": commit}


def test_windows_listed_until_they_end():
    changes = {
        "since": None,
        "head": "a" * 40,
        "commits": [],
        "events": [],
        "warnings": [],
        "windows": [
            window("pve3", "2026-12-05T00:00:00Z", "2026-12-05T02:00:00Z"),
            window("pve1", "2026-12-04T11:00:00Z", "2026-12-04T13:00:00Z"),
            window("pve2", "2026-12-04T10:00:00Z", "2026-12-04T12:00:00Z"),
        ],
    }

    document = build_status_document(sample_inputs(changes=changes))

    validate_status_document(document)
    windows = document["changes"]["windows"]
    # pve2's window ends at the generation time, and the end is excluded.
    assert [entry["system"] for entry in windows] == ["pve1", "pve3"]
    assert [entry["in_force"] for entry in windows] == [True, False]
    assert windows[0]["commit"] == "bbbbbbb"
    assert windows[0]["subject"] == "Maintain pve1"
    markdown = render_markdown(document)
    assert "| pve1 | 2026-12-04T11:00:00Z | 2026-12-04T13:00:00Z | in force | bbbbbbb |" in markdown
    assert "| pve3 | 2026-12-05T00:00:00Z | 2026-12-05T02:00:00Z | planned | bbbbbbb |" in markdown


def test_first_review_names_no_commit():
    changes = {
        "since_sha": None,
        "head_sha": "a" * 40,
        "commits": [{"sha": "c" * 40}],
        "events": [],
        "warnings": [],
    }

    markdown = render_markdown(build_status_document(sample_inputs(changes=changes)))

    assert "Commits reviewed: 1 (first review: recent commits)." in markdown
    assert "since `unknown`" not in markdown


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (["installed", "missing"], "perf"),
        (["installed", "installed"], "all present"),
        (["unknown", "unknown"], "unknown (not checked)"),
        (["unknown", "missing"], "perf, 1 unknown"),
    ],
)
def test_tools_cell_counts_unknown(states, expected):
    inputs = sample_inputs()
    tools = inputs.checks["pve1"]["tools"]
    for tool, state in zip(tools, states, strict=True):
        tool["state"] = state

    markdown = render_markdown(build_status_document(inputs))

    (row,) = [line for line in markdown.splitlines() if line.startswith("| pve1 | proxmox-host")]
    assert f"| {expected} |" in row


def test_access_column_shows_method_used():
    inputs = sample_inputs()
    inputs.checks["pve1"]["access"]["method"] = "tcp"

    markdown = render_markdown(build_status_document(inputs))

    (row,) = [line for line in markdown.splitlines() if line.startswith("| pve1 | proxmox-host")]
    assert "| tcp |" in row
    assert "| ssh |" not in row
