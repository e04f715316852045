"""The provisioning audit log: JSON lines appended safely by concurrent processes."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from prep_assets.provisioning.audit import AuditEntry, append_audit_entries, read_audit_entries
from prep_assets.report.audit import audit_markdown, audit_summary

LINES_PER_PROCESS = 2000
# Longer than PIPE_BUF (4096 bytes), so atomicity does not rest on small writes.
PADDING = "x" * 5000

APPENDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from prep_assets.provisioning.audit import AuditEntry, append_audit_entries

    path, writer, count, padding = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    for index in range(count):
        entry = AuditEntry(
            time="2026-01-01T00:00:00Z", run_id=f"run-{writer}", system=f"{writer}-{index}",
            package="sysstat", version=padding, previous_version=None, package_manager="apt",
            tools=("iostat",), enabled_by="test", enabled_via="resource",
        )
        append_audit_entries(path, [entry])
    """
)


def entry(system: str, package: str = "sysstat", version: str = "12.6.1-1") -> AuditEntry:
    return AuditEntry(
        time="2026-05-01T10:00:00Z",
        run_id="run-1",
        system=system,
        package=package,
        version=version,
        previous_version=None,
        package_manager="apt",
        tools=("iostat", "mpstat"),
        enabled_by="alice",
        enabled_via="run config",
    )


def test_append_writes_one_json_line_per_entry(tmp_path):
    path = tmp_path / "docs/infrastructure/provisioning-audit.jsonl"

    append_audit_entries(path, [entry("pve1"), entry("pve2", "procps", "2:4.0.2-3")])

    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first == {
        "time": "2026-05-01T10:00:00Z",
        "run_id": "run-1",
        "system": "pve1",
        "package": "sysstat",
        "version": "12.6.1-1",
        "previous_version": None,
        "package_manager": "apt",
        "tools": ["iostat", "mpstat"],
        "enabled_by": "alice",
        "enabled_via": "run config",
    }
    assert json.loads(lines[1])["version"] == "2:4.0.2-3"


def test_two_processes_append_without_loss(tmp_path):
    path = tmp_path / "provisioning-audit.jsonl"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(path), writer, str(LINES_PER_PROCESS), PADDING]
        )
        for writer in ("a", "b")
    ]
    for process in processes:
        assert process.wait(timeout=120) == 0

    entries, invalid = read_audit_entries(path)

    assert invalid == 0
    assert len(entries) == 2 * LINES_PER_PROCESS
    systems = [entry["system"] for entry in entries]
    expected = {f"{writer}-{index}" for writer in "ab" for index in range(LINES_PER_PROCESS)}
    assert set(systems) == expected
    assert all(entry["version"] == PADDING for entry in entries)
    # Each writer's lines keep their own order.
    for writer in "ab":
        own = [int(name.split("-")[1]) for name in systems if name.startswith(writer)]
        assert own == sorted(own)


def test_summary_lists_newest_first_and_counts_bad_lines(tmp_path):
    path = tmp_path / "docs/infrastructure/provisioning-audit.jsonl"
    append_audit_entries(path, [entry("pve1"), entry("pve2")])
    with path.open("a") as log:
        log.write("not json\n")

    summary = audit_summary(tmp_path, recent=1)

    assert summary["changes"] == 2
    assert summary["invalid_lines"] == 1
    assert summary["changes_per_system"] == {"pve1": 1, "pve2": 1}
    assert [item["system"] for item in summary["recent"]] == ["pve2"]
    markdown = "\n".join(audit_markdown(summary))
    assert (
        "| 2026-05-01T10:00:00Z | pve2 | sysstat | 12.6.1-1 | - | run-1 | alice (run config) |"
        in (markdown)
    )


def test_summary_of_missing_log_is_empty(tmp_path: Path):
    summary = audit_summary(tmp_path)

    assert summary["changes"] == 0
    assert summary["recent"] == []
