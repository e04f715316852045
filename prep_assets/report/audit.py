"""Summarise the provisioning audit log for the status document.

``audit_summary`` reads ``docs/infrastructure/provisioning-audit.jsonl`` of the
infra repo and returns a JSON-ready dict. ``audit_markdown`` renders that dict
as the lines of a "Provisioning audit" section.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prep_assets.provisioning.audit import AUDIT_LOG_PATH, read_audit_entries

# Newest audit entries listed in the status document.
RECENT_ENTRIES = 20


def audit_summary(root: Path, recent: int = RECENT_ENTRIES) -> dict[str, Any]:
    """Return the number of changes, changes per system and the newest ``recent`` entries."""
    entries, invalid = read_audit_entries(root / AUDIT_LOG_PATH)
    per_system: dict[str, int] = {}
    for entry in entries:
        system = str(entry.get("system", "unknown"))
        per_system[system] = per_system.get(system, 0) + 1
    return {
        "path": AUDIT_LOG_PATH,
        "changes": len(entries),
        "invalid_lines": invalid,
        "changes_per_system": dict(sorted(per_system.items())),
        "recent": entries[-recent:][::-1] if recent > 0 else [],
    }


def audit_markdown(summary: Mapping[str, Any]) -> list[str]:
    """Return the Markdown lines that describe the audit summary, newest change first."""
    lines = [
        f"Package changes recorded in `{summary['path']}`: {summary['changes']}.",
    ]
    if summary["invalid_lines"]:
        lines.append(f"Lines that are not valid JSON objects: {summary['invalid_lines']}.")
    if not summary["recent"]:
        return lines
    lines += [
        "",
        "| Time | System | Package | Version | Previous | Run | Enabled by |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in summary["recent"]:
        cells = [
            entry.get("time"),
            entry.get("system"),
            entry.get("package"),
            entry.get("version"),
            entry.get("previous_version"),
            str(entry.get("run_id") or "")[:8],
            f"{entry.get('enabled_by') or '-'} ({entry.get('enabled_via') or '-'})",
        ]
        lines.append("| " + " | ".join(_cell(value) for value in cells) + " |")
    return lines


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    return str(value).replace("\n", " ").replace("|", "\\|")
