"""The steps of the PREP loop as plain functions over JSON-ready values.

Each Dagster asset calls one function here and one that builds its metadata.
Values passed between steps are dicts and lists, because they are stored as
JSON between runs. This module converts them to and from the domain types.
"""

import logging
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import git

from prep_assets.baselines.alerts import find_breaches_in_values
from prep_assets.baselines.checklists import write_checklist_pages
from prep_assets.baselines.prometheus import collect_prometheus_baselines
from prep_assets.baselines.sample import (
    SAMPLE_COMMAND,
    VMSTAT_INTERVAL_SECONDS,
    VMSTAT_REPORTS,
    parse_sample,
)
from prep_assets.changes.drift import Snapshot, compute_drift
from prep_assets.changes.git_review import ChangeContext, MaintenanceWindow, review_changes
from prep_assets.checks.runner import CheckSettings, SampleRequest, check_systems
from prep_assets.inventory.discovery.run import discover_inventory, status_block
from prep_assets.inventory.loader import load_docs
from prep_assets.inventory.system_inventory import parse_system_inventory
from prep_assets.models import System, SystemCheck, ToolSpec
from prep_assets.provisioning import step as provisioning_step
from prep_assets.provisioning.apply import truncate
from prep_assets.report.audit import audit_summary
from prep_assets.report.document import StatusInputs, build_status_document, write_status_documents
from prep_assets.report.metadata import FilePath, markdown_table
from prep_assets.rules import decide_actions
from prep_assets.transports.factory import TransportFactory, pointer_to_dict
from prep_assets.transports.kubernetes import DEFAULT_DEBUG_IMAGE

logger = logging.getLogger(__name__)

INVENTORY_PATH = "docs/infrastructure/system-inventory.md"
# Characters of each command's output shown in the provisioned_tools metadata, from its end.
METADATA_OUTPUT_LIMIT = 500
STATUS_DIRECTORY = "docs/infrastructure"


# GIT REVIEW


def _inventory_names(text: str) -> set[str]:
    try:
        parsed = parse_system_inventory(text, INVENTORY_PATH)
    except ValueError:
        # A commit whose inventory has no table lists no systems.
        return set()
    # A row with a problem still names a system: without it, breaking a row would
    # look like a decommission.
    names = {system.name for system in parsed.systems}
    return names | {problem.name for problem in parsed.problems if problem.name}


def review_git(root: Path, since: str | None, now: datetime, first_run_days: int) -> dict[str, Any]:
    """Classify the commits since ``since`` and return the change context as a dict."""
    if not root.exists():
        raise FileNotFoundError(
            f"infra repo {root} does not exist: set PREP_INFRA_REPO (or the infra_repo resource's "
            "path) to your docs repo, or run `make demo` to build the example there"
        )
    changes = review_changes(
        root,
        since,
        now=now,
        inventory_path=INVENTORY_PATH,
        system_names=_inventory_names,
        first_run_days=first_run_days,
    )
    return changes.to_dict()


def change_metadata(changes: Mapping[str, Any]) -> dict[str, Any]:
    events = changes.get("events", [])
    rows = [
        [
            event["kind"],
            event.get("system") or "-",
            event["commit"]["short_sha"],
            event["commit"]["subject"],
        ]
        for event in events
    ]
    return {
        "head": changes.get("head_sha") or "",
        "since": changes.get("since_sha") or "",
        "commits": len(changes.get("commits", [])),
        "events": len(events),
        "event_table": markdown_table(["Kind", "System", "Commit", "Subject"], rows),
    }


# DISCOVER


def read_inventory(root: Path) -> dict[str, Any]:
    """Read the docs of the infra repo, merged with live discovery, into the inventory value.

    Discovery runs only when the infra repo has docs/reference/discovery.md. The
    "discovery" entry contains each source's state and error, each system's discovery
    state and records, and the DNS findings.
    """
    docs = load_docs(root)
    discovered = discover_inventory(root, docs)
    systems = sorted(discovered.systems, key=lambda system: system.name)
    problems = [*docs.problems, *discovered.problems]
    return {
        "systems": [system.to_dict() for system in systems],
        "problems": [problem.to_dict() for problem in problems],
        "expected_tools": {
            system.name: [spec.to_dict() for spec in docs.tools.tools_for(system.type)]
            for system in systems
        },
        # Pointers only: the secret values are read when a connection is opened.
        "credentials": {
            name: pointer_to_dict(pointer) for name, pointer in docs.credentials.items()
        },
        "discovery": discovered.report,
    }


def systems_of(inventory: Mapping[str, Any]) -> dict[str, System]:
    return {data["name"]: System.from_dict(data) for data in inventory["systems"]}


def specs_of(inventory: Mapping[str, Any], name: str) -> list[ToolSpec]:
    return [ToolSpec(**spec) for spec in inventory["expected_tools"].get(name, [])]


def inventory_metadata(inventory: Mapping[str, Any], new: Sequence[str]) -> dict[str, Any]:
    systems = inventory["systems"]
    problems = inventory["problems"]
    return {
        "systems": len(systems),
        "managed": sum(1 for system in systems if system["managed"]),
        "new_partitions": len(new),
        "problems": len(problems),
        "problem_table": markdown_table(
            ["File", "Line", "Column", "Problem"],
            [[p["file"], p["line"], p["column"], p["reason"]] for p in problems],
        ),
    }


# CHECK TOOLS and VERIFY ACCESS


@dataclass(frozen=True)
class AccessSettings:
    """Settings with which the check and provisioning steps reach systems, filled from the access resource."""

    known_hosts: str
    timeout: float
    max_workers: int = 16
    max_per_node: int | None = 4
    # None reads ~/.ssh/config when it exists, "" reads none, a path must exist.
    ssh_config: str | None = None
    allow_agent: bool = False
    kubernetes_debug_pods: bool = False
    debug_pod_image: str | None = None


def transport_factory(inventory: Mapping[str, Any], settings: AccessSettings) -> TransportFactory:
    """Build the transport opener shared by every step that contacts systems.

    The factory gets every system of the inventory, because a guest is reached
    through its node's row and a jump host may be another system.
    """
    return TransportFactory(
        inventory.get("credentials", {}),
        known_hosts=settings.known_hosts,
        timeout=settings.timeout,
        systems=systems_of(inventory).values(),
        ssh_config=settings.ssh_config,
        allow_agent=settings.allow_agent,
        kubernetes_debug_pods=settings.kubernetes_debug_pods,
        debug_pod_image=settings.debug_pod_image or DEFAULT_DEBUG_IMAGE,
    )


def check_partitions(
    inventory: Mapping[str, Any],
    partitions: Sequence[str],
    settings: AccessSettings,
    *,
    take_samples: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the systems named by ``partitions`` and return (access values, tool values) per partition.

    A partition whose system left the inventory gets a "not in the inventory" value, so
    its history stays readable and nothing is contacted.
    """
    systems = systems_of(inventory)
    present = [systems[name] for name in partitions if name in systems]
    opener = transport_factory(inventory, settings)

    def sample_for(system: System) -> SampleRequest | None:
        if not take_samples:
            return None
        return SampleRequest(
            SAMPLE_COMMAND,
            lambda text: parse_sample(text, system=system.name).to_dict(),
            duration_seconds=VMSTAT_INTERVAL_SECONDS * VMSTAT_REPORTS,
        )

    checks = check_systems(
        present,
        lambda system: specs_of(inventory, system.name),
        opener,
        CheckSettings(
            timeout=settings.timeout,
            max_workers=settings.max_workers,
            max_per_node=settings.max_per_node,
        ),
        sample_for=sample_for,
    )

    access_values: dict[str, Any] = {}
    tool_values: dict[str, Any] = {}
    for name in partitions:
        check = checks.get(name)
        if check is None:
            access_values[name] = {"in_inventory": False, "access": None, "sample": None}
            tool_values[name] = {"in_inventory": False, "tools": [], "platform": {}}
            continue
        access_values[name] = {
            "in_inventory": True,
            "access": check.access.to_dict(),
            "sample": check.sample,
        }
        tool_values[name] = {
            "in_inventory": True,
            "tools": [tool.to_dict() for tool in check.tools],
            "platform": check.platform,
        }
    return access_values, tool_values


def access_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    checked = {name: value["access"] for name, value in values.items() if value["access"]}
    failing = [
        [name, access["state"], access["message"]]
        for name, access in sorted(checked.items())
        if access["state"] not in ("reachable", "not_contacted")
    ]
    return {
        "systems": len(values),
        "reachable": sum(1 for access in checked.values() if access["state"] == "reachable"),
        "failing": len(failing),
        "failing_systems": markdown_table(["System", "State", "Message"], failing),
    }


def tool_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    lacking = []
    for name, value in sorted(values.items()):
        missing = [
            tool["command"] for tool in value["tools"] if tool["state"] in ("missing", "outdated")
        ]
        if missing:
            lacking.append([name, ", ".join(missing)])
    return {
        "systems": len(values),
        "systems_missing_tools": len(lacking),
        "missing_tools": markdown_table(["System", "Missing or outdated"], lacking),
    }


# PROVISION


def plan_partitions(
    inventory: Mapping[str, Any],
    partitions: Sequence[str],
    tool_values: Mapping[str, Any],
    access_values: Mapping[str, Any],
    sudo: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    """Return the provisioning plan per partition; nothing is installed.

    ``sudo`` names the systems whose commands get the ``sudo -n`` prefix.
    """
    return provisioning_step.plan_partitions(
        inventory, partitions, tool_values, access_values, sudo
    )


def provisioning_metadata(plans: Mapping[str, Any], enabled: bool = False) -> dict[str, Any]:
    """Count plans and outcomes by state, and tabulate plans, commands and command output."""
    states = [plan["state"] for plan in plans.values()]
    rows = [
        [
            name,
            plan["state"],
            ", ".join(plan["packages"]),
            plan.get("error") or plan.get("skipped") or plan["reason"],
        ]
        for name, plan in sorted(plans.items())
    ]
    commands = [
        [name, shlex.join(command)]
        for name, plan in sorted(plans.items())
        for command in plan["commands"]
    ]
    steps = [
        [
            name,
            shlex.join(step["command"]),
            step["exit_code"],
            truncate(step["output"], METADATA_OUTPUT_LIMIT),
        ]
        for name, plan in sorted(plans.items())
        for step in plan.get("steps", [])
    ]
    applied = sum(1 for plan in plans.values() if plan.get("applied"))
    changes = sum(len(plan.get("changes", [])) for plan in plans.values())
    if all(state in ("nothing_to_install", "not_provisionable") for state in states):
        result = "nothing to install"
    elif applied:
        result = f"{changes} packages changed on {applied} systems"
    else:
        result = "nothing was installed"
    return {
        "enabled": enabled,
        "result": result,
        "systems": len(plans),
        "planned": states.count("planned"),
        "applied": applied,
        "installed": states.count("installed"),
        "failed": states.count("failed"),
        "not_provisionable": states.count("not_provisionable"),
        "nothing_to_install": states.count("nothing_to_install"),
        "packages_changed": changes,
        "plans": markdown_table(["System", "State", "Packages", "Reason"], rows),
        "commands": markdown_table(["System", "Command"], commands),
        "output": markdown_table(["System", "Command", "Exit code", "Output (end)"], steps),
    }


# COLLECT BASELINES


def baseline_partitions(
    inventory: Mapping[str, Any],
    partitions: Sequence[str],
    access_values: Mapping[str, Any],
    now: datetime,
    *,
    prometheus_url: str,
    window_hours: float,
    step_seconds: float,
    timeout: float,
) -> dict[str, Any]:
    """Return a baseline per partition: Prometheus history, a labelled short sample, or no data."""
    systems = systems_of(inventory)
    present = [systems[name] for name in partitions if name in systems and systems[name].contacted]
    values: dict[str, Any] = {}
    if prometheus_url and present:
        collected = collect_prometheus_baselines(
            prometheus_url,
            present,
            window=timedelta(hours=window_hours),
            step=timedelta(seconds=step_seconds),
            end=now,
            timeout=timeout,
        )
        values.update({name: baseline.to_dict() for name, baseline in collected.items()})

    for name in partitions:
        if name in values:
            continue
        system = systems.get(name)
        sample = (access_values.get(name) or {}).get("sample")
        if system is None:
            values[name] = _no_baseline("not in the inventory")
        elif not system.contacted:
            values[name] = _no_baseline("not contacted: unmanaged or access method none")
        elif sample and "error" not in sample:
            values[name] = sample
        elif sample:
            values[name] = _no_baseline(f"short sample failed: {sample['error']}")
        else:
            values[name] = _no_baseline("no Prometheus configured and no sample was taken")
    return values


def _no_baseline(reason: str) -> dict[str, Any]:
    return {"source": "none", "metrics": [], "message": reason}


def baseline_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    def number(value: float | None) -> str:
        # Error rates below 0.1/s and throughput in bytes/s share the columns.
        if value is None:
            return "-"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"

    rows = []
    for name, baseline in sorted(values.items()):
        for metric in baseline.get("metrics", []):
            rows.append(
                [
                    name,
                    metric.get("resource") or "-",
                    metric["metric"],
                    metric.get("device") or "-",
                    baseline["source"],
                    number(metric.get("avg")),
                    number(metric.get("p95")),
                    number(metric.get("max")),
                    number(metric.get("current")),
                    number(metric.get("threshold")),
                ]
            )
    breaches = find_breaches_in_values(values)
    breach_rows = [
        [
            breach.system,
            breach.metric,
            breach.device or "-",
            number(breach.current),
            number(breach.threshold),
            breach.unit,
        ]
        for breach in breaches
    ]
    return {
        "systems": len(values),
        "from_prometheus": sum(
            1 for value in values.values() if value.get("source") == "prometheus"
        ),
        "from_sample": sum(1 for value in values.values() if value.get("source") == "sample"),
        "no_data": sum(1 for value in values.values() if value.get("source") == "none"),
        "systems_above_threshold": len({breach.system for breach in breaches}),
        "above_threshold": markdown_table(
            ["System", "Metric", "Device", "Current", "Threshold", "Unit"], breach_rows
        ),
        "baselines": markdown_table(
            [
                "System",
                "Resource",
                "Metric",
                "Device",
                "Source",
                "Avg",
                "P95",
                "Max",
                "Current",
                "Threshold",
            ],
            rows,
        ),
    }


# MONITOR


def _snapshot(
    inventory: Mapping[str, Any], access_values: Mapping[str, Any], tool_values: Mapping[str, Any]
) -> Snapshot:
    systems = {data["name"]: dict(data) for data in inventory["systems"]}
    access = {
        name: value["access"]["state"]
        for name, value in access_values.items()
        if name in systems and value.get("access")
    }
    tools = {
        name: {tool["command"]: tool["state"] for tool in value.get("tools", [])}
        for name, value in tool_values.items()
        if name in systems
    }
    # Inventory values stored before discovery existed have no "discovery" entry.
    discovery = inventory.get("discovery") or {}
    discovered = {
        name: list(entry["records"])
        for name, entry in (discovery.get("systems") or {}).items()
        if entry.get("records")
    }
    sources = {source["key"]: source["state"] for source in discovery.get("sources", [])}
    return Snapshot(
        systems=systems, access=access, tools=tools, discovered=discovered, sources=sources
    )


def drift(
    previous: Mapping[str, Any] | None,
    inventory: Mapping[str, Any],
    changes: Mapping[str, Any],
    access_values: Mapping[str, Any],
    tool_values: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """Compare this pass with the snapshot stored by the previous drift report."""
    current = _snapshot(inventory, access_values, tool_values)
    before = (
        Snapshot.from_dict(previous["snapshot"]) if previous and previous.get("snapshot") else None
    )
    if before is not None:
        # Keep what a discovery source that is down reported last time, for the next pass too.
        current = current.carry_down_sources(before)
    context = ChangeContext.from_dict(dict(changes))
    rows = compute_drift(before, current, context, now)
    sources_down = sorted(key for key, state in current.sources.items() if state == "down")
    return {
        "rows": [row.to_dict() for row in rows],
        "snapshot": current.to_dict(),
        "sources_down": sources_down,
        # The RULES step reads these, so that it judges access at the time drift was computed.
        "windows_in_force": [
            window.to_dict() for window in context.windows if window.start <= now < window.end
        ],
    }


def drift_metadata(report: Mapping[str, Any]) -> dict[str, Any]:
    rows = report["rows"]
    table = [
        [
            r["verdict"],
            r["system"],
            r["kind"],
            r.get("before"),
            r.get("after"),
            r["reason"],
            r.get("commit_sha"),
        ]
        for r in rows
    ]
    # Rows are sorted unexpected first by compute_drift, so the table starts with them.
    return {
        "changes": len(rows),
        "unexpected": sum(1 for row in rows if row["verdict"] == "UNEXPECTED"),
        "sources_down": ", ".join(report.get("sources_down", [])) or "none",
        "drift": markdown_table(
            ["Verdict", "System", "Change", "Before", "After", "Reason", "Commit"], table
        ),
    }


# RULES


def rules(
    inventory: Mapping[str, Any],
    drift_report: Mapping[str, Any],
    access_values: Mapping[str, Any],
    tool_values: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Apply the RULES table and return the actions as dicts."""
    systems = systems_of(inventory)
    checks = _checks(systems, access_values, tool_values)
    rows = [_Row(row) for row in drift_report["rows"]]
    windows = [
        MaintenanceWindow.from_dict(item) for item in drift_report.get("windows_in_force", [])
    ]
    actions = decide_actions(list(systems.values()), checks, rows, windows)
    return [action.to_dict() for action in actions]


class _Row:
    """Attribute access to a stored drift row."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.__dict__.update(data)


def _checks(
    systems: Mapping[str, System], access_values: Mapping[str, Any], tool_values: Mapping[str, Any]
) -> dict[str, SystemCheck]:
    checks = {}
    for name in systems:
        access = (access_values.get(name) or {}).get("access")
        if not access:
            continue
        tools = (tool_values.get(name) or {}).get("tools", [])
        checks[name] = SystemCheck.from_dict({"system": name, "access": access, "tools": tools})
    return checks


def actions_metadata(actions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "actions": len(actions),
        "alerts": sum(1 for action in actions if action["action"] == "alert"),
        "action_table": markdown_table(
            ["System", "Action", "Reason", "Trigger"],
            [[a["system"], a["action"], a["reason"], a["trigger"]] for a in actions],
        ),
    }


# UPDATE STATE


def known_systems(inventory: Mapping[str, Any], access_values: Mapping[str, Any]) -> list[str]:
    """Names of the systems in the inventory plus those with results from earlier passes."""
    names = {system["name"] for system in inventory["systems"]}
    return sorted(names | set(access_values))


def write_status(
    root: Path,
    now: datetime,
    *,
    inventory: Mapping[str, Any],
    changes: Mapping[str, Any],
    drift: Mapping[str, Any],
    actions: Sequence[Mapping[str, Any]],
    access: Mapping[str, Any],
    tools: Mapping[str, Any],
    provisioning: Mapping[str, Any],
    baselines: Mapping[str, Any],
    last_checked: Mapping[str, Mapping[str, str | None]],
) -> dict[str, Any]:
    """Build, validate and write prep-status.json and prep-status.md; return paths and the summary."""
    systems = systems_of(inventory)
    checks = {
        name: {
            "access": (access.get(name) or {}).get("access"),
            "tools": (tools.get(name) or {}).get("tools", []),
        }
        for name in systems
    }
    inputs = StatusInputs(
        generated_at=now,
        head=changes.get("head_sha"),
        branch=_branch(root),
        systems=list(systems.values()),
        checks=checks,
        baselines={name: baselines[name] for name in systems if name in baselines},
        provisioning={name: provisioning[name] for name in systems if name in provisioning},
        last_checked=last_checked,
        changes=changes,
        drift=drift["rows"],
        actions=actions,
        problems=inventory["problems"],
        former_systems=[name for name in access if name not in systems],
        discovery=status_block(inventory.get("discovery")),
        audit=audit_summary(root),
    )
    document = build_status_document(inputs)
    json_path, markdown_path = write_status_documents(document, root / STATUS_DIRECTORY)
    checklists = write_checklist_pages(root, list(systems.values()), baselines)
    return {
        "json": str(json_path),
        "markdown": str(markdown_path),
        "checklists": [str(path) for path in checklists],
        "summary": document["summary"],
    }


def _branch(root: Path) -> str | None:
    try:
        repo = git.Repo(root)
        return None if repo.head.is_detached else repo.active_branch.name
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, TypeError):
        return None


def status_metadata(written: Mapping[str, Any]) -> dict[str, Any]:
    summary = written["summary"]
    return {
        "prep_status_json": FilePath(written["json"]),
        "prep_status_md": FilePath(written["markdown"]),
        "use_checklist_pages": len(written.get("checklists", [])),
        **{key: value for key, value in summary.items()},
    }
