"""Build, validate and write prep-status.json and prep-status.md.

The JSON document is assembled from plain dicts, validated against the JSON
Schema shipped in ``schema/``, and only then written. Both files are written
through a temporary file and a rename, so a failed run leaves the previous good
documents in place.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from prep_assets.changes.git_review import parse_utc
from prep_assets.models import System
from prep_assets.report.markdown import render_markdown
from prep_assets.state import write_atomically

SCHEMA_VERSION = "1"
STATUS_JSON = "prep-status.json"
STATUS_MARKDOWN = "prep-status.md"
PER_SYSTEM_STEPS = ("access_status", "tool_status", "provisioned_tools", "baselines")


class InvalidStatusDocumentError(ValueError):
    """The assembled status document does not match its JSON Schema."""


@dataclass
class StatusInputs:
    """Everything one pass produced, as plain JSON-ready values."""

    generated_at: datetime
    head: str | None
    branch: str | None
    systems: Sequence[System]
    # Per system: {"access": AccessResult dict, "tools": [ToolResult dict]}.
    checks: Mapping[str, Mapping[str, Any]]
    baselines: Mapping[str, Mapping[str, Any]]
    provisioning: Mapping[str, Mapping[str, Any]]
    # Per system and step: ISO time of the latest materialization, or None.
    last_checked: Mapping[str, Mapping[str, str | None]]
    changes: Mapping[str, Any]
    drift: Sequence[Mapping[str, Any]]
    actions: Sequence[Mapping[str, Any]]
    problems: Sequence[Mapping[str, Any]]
    # Systems that have results from earlier passes but left the inventory.
    former_systems: Sequence[str] = field(default_factory=list)
    # The discovery block (prep_assets.inventory.discovery.run.status_block), None without one.
    discovery: Mapping[str, Any] | None = None
    # The provisioning audit log summary (prep_assets.report.audit.audit_summary), None without one.
    audit: Mapping[str, Any] | None = None


def build_status_document(inputs: StatusInputs) -> dict[str, Any]:
    """Assemble the prep-status.json document; the caller validates it."""
    entries = [_system_entry(system, inputs, in_inventory=True) for system in inputs.systems]
    listed = {system.name for system in inputs.systems}
    for name in sorted(set(inputs.former_systems) - listed):
        entries.append(_former_entry(name, inputs))

    managed = [e for e in entries if e["managed"] and e["in_inventory"]]
    document = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": _iso(inputs.generated_at),
        "infra_repo": {"head": inputs.head, "branch": inputs.branch},
        "summary": {
            "systems": sum(1 for e in entries if e["in_inventory"]),
            "managed": len(managed),
            "reachable": sum(1 for e in managed if (e["access"] or {}).get("state") == "reachable"),
            "access_problems": sum(
                1
                for e in managed
                if (e["access"] or {}).get("state") not in (None, "reachable", "not_contacted")
            ),
            "tools_missing": sum(
                1 for e in managed if any(t["state"] in ("missing", "outdated") for t in e["tools"])
            ),
            "unexpected_drift": sum(1 for row in inputs.drift if row["verdict"] == "UNEXPECTED"),
            "actions": len(inputs.actions),
            "document_problems": len(inputs.problems),
        },
        "systems": entries,
        "changes": {
            "since": inputs.changes.get("since_sha"),
            "head": inputs.changes.get("head_sha"),
            "commits": len(inputs.changes.get("commits", [])),
            "events": [_event_entry(event) for event in inputs.changes.get("events", [])],
            "warnings": list(inputs.changes.get("warnings", [])),
            "windows": _current_windows(inputs.changes.get("windows", []), inputs.generated_at),
        },
        "drift": [dict(row) for row in inputs.drift],
        "actions": [dict(action) for action in inputs.actions],
        "problems": [dict(problem) for problem in inputs.problems],
    }
    if inputs.discovery is not None:
        document["discovery"] = dict(inputs.discovery)
    if inputs.audit is not None:
        document["provisioning_audit"] = dict(inputs.audit)
    return document


def validate_status_document(document: Mapping[str, Any]) -> None:
    """Raise InvalidStatusDocumentError naming the first place where the document breaks the schema."""
    errors = list(_validator().iter_errors(document))
    if errors:
        # best_match descends into anyOf branches, so the path names the offending field.
        first = jsonschema.exceptions.best_match(errors)
        where = "/".join(str(part) for part in first.absolute_path) or "(top level)"
        raise InvalidStatusDocumentError(
            f"prep-status.json is invalid at {where}: {first.message} ({len(errors)} errors in all)"
        )


def write_status_documents(document: Mapping[str, Any], directory: Path) -> tuple[Path, Path]:
    """Validate the document, then write the JSON and Markdown files atomically into ``directory``."""
    validate_status_document(document)
    json_path = directory / STATUS_JSON
    markdown_path = directory / STATUS_MARKDOWN
    markdown = render_markdown(document)
    write_atomically(json_path, json.dumps(document, indent=2, sort_keys=False) + "\n")
    write_atomically(markdown_path, markdown)
    return json_path, markdown_path


def load_schema() -> dict[str, Any]:
    text = (
        resources.files("prep_assets.report").joinpath("schema/prep-status.schema.json").read_text()
    )
    return json.loads(text)


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = load_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def _system_entry(system: System, inputs: StatusInputs, in_inventory: bool) -> dict[str, Any]:
    check = inputs.checks.get(system.name) or {}
    last = inputs.last_checked.get(system.name, {})
    return {
        "name": system.name,
        "type": system.type,
        "tier": system.tier,
        "managed": system.managed,
        "read_only": system.read_only,
        "access_method": system.access.value,
        "address": system.address,
        "in_inventory": in_inventory,
        "source": str(system.source) if system.source else None,
        "access": _access_entry(check.get("access")),
        "tools": [_tool_entry(tool) for tool in check.get("tools", [])],
        "baseline": _baseline_entry(inputs.baselines.get(system.name)),
        "provisioning": _provisioning_entry(inputs.provisioning.get(system.name)),
        "last_checked": {step: last.get(step) for step in PER_SYSTEM_STEPS},
    }


def _former_entry(name: str, inputs: StatusInputs) -> dict[str, Any]:
    last = inputs.last_checked.get(name, {})
    return {
        "name": name,
        "type": "unknown",
        "tier": "unknown",
        "managed": False,
        "read_only": False,
        "access_method": "none",
        "address": None,
        "in_inventory": False,
        "source": None,
        "access": None,
        "tools": [],
        "baseline": None,
        "provisioning": None,
        "last_checked": {step: last.get(step) for step in PER_SYSTEM_STEPS},
    }


def _access_entry(access: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not access:
        return None
    return {
        "state": access["state"],
        "method": access["method"],
        "latency_ms": access.get("latency_ms"),
        "duration_ms": access.get("duration_ms"),
        "message": access.get("message", ""),
    }


def _tool_entry(tool: Mapping[str, Any]) -> dict[str, Any]:
    return {key: tool.get(key) for key in ("command", "state", "path", "package", "version")}


_METRIC_KEYS = (
    "metric",
    "unit",
    "avg",
    "p95",
    "max",
    "stddev",
    "samples",
    "coverage",
    "threshold",
    "threshold_inputs",
    "query",
    "window_seconds",
    "source",
    "no_data_reason",
    "low_coverage",
    "resource",
    "signal",
    "device",
    "worst_device",
    "exporter",
    "current",
    "step_seconds",
    "expected_samples",
    "window_end",
)


def _baseline_entry(baseline: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not baseline:
        return None
    return {
        "source": baseline.get("source", "none"),
        "message": baseline.get("message"),
        "metrics": [
            {key: metric[key] for key in _METRIC_KEYS if key in metric}
            for metric in baseline.get("metrics", [])
        ],
    }


def _provisioning_entry(plan: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not plan:
        return None
    return {
        "state": plan["state"],
        "package_manager": plan.get("package_manager"),
        "packages": list(plan.get("packages", [])),
        "commands": [list(command) for command in plan.get("commands", [])],
        "reason": plan.get("reason", ""),
        "applied": bool(plan.get("applied")),
        "enabled": bool(plan.get("enabled")),
        "skipped": plan.get("skipped"),
        "error": plan.get("error"),
        "manifest": plan.get("manifest"),
        "changes": [dict(change) for change in plan.get("changes", [])],
        "trigger": dict(plan["trigger"]) if plan.get("trigger") else None,
    }


def _event_entry(event: Mapping[str, Any]) -> dict[str, Any]:
    commit = event.get("commit") or {}
    sha = (
        commit.get("short_sha") or commit.get("sha") if isinstance(commit, Mapping) else str(commit)
    )
    entry: dict[str, Any] = {
        "kind": event["kind"],
        "system": event.get("system"),
        "commit": sha or "",
        "subject": commit.get("subject", "") if isinstance(commit, Mapping) else "",
        "source": event.get("source", ""),
        "start": event.get("start"),
        "end": event.get("end"),
        "files": list(event.get("files") or []),
    }
    return entry


def _current_windows(
    windows: Sequence[Mapping[str, Any]], generated_at: datetime
) -> list[dict[str, Any]]:
    """Return the maintenance windows that have not ended at ``generated_at``, earliest first."""
    entries = []
    for window in windows:
        start, end = parse_utc(window["start"]), parse_utc(window["end"])
        if end <= generated_at:
            continue
        commit = window.get("commit") or {}
        entries.append(
            {
                "system": window["system"],
                "start": window["start"],
                "end": window["end"],
                "in_force": start <= generated_at,
                "commit": commit.get("short_sha") or commit.get("sha") or "",
                "subject": commit.get("subject", ""),
            }
        )
    return sorted(entries, key=lambda entry: (entry["start"], entry["system"]))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
