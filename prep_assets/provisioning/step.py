"""The PROVISION step over the JSON-ready values of the pipeline.

Every partition gets a plan. When provisioning is enabled, the plans of the
selected systems are applied, and every verified package change is appended to
the audit log in the infra repo.
"""

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prep_assets.inventory.access_patterns import parse_access_patterns, pattern_for
from prep_assets.inventory.loader import ACCESS_PATTERNS_PATH
from prep_assets.inventory.markdown import parse_yes_no
from prep_assets.models import AccessMethod, AccessState, System, ToolResult, ToolSpec
from prep_assets.provisioning.apply import ProvisioningSettings, TransportOpener, apply_plans
from prep_assets.provisioning.audit import AUDIT_LOG_PATH, AuditEntry, append_audit_entries
from prep_assets.provisioning.plan import PlanState, new_plan, plan_provisioning

logger = logging.getLogger(__name__)

# Login user of SSH systems whose inventory row and access pattern name none.
DEFAULT_SSH_USER = "root"
_ACCESS_OK = (AccessState.REACHABLE.value, AccessState.NOT_CONTACTED.value)


def read_sudo_settings(root: Path, systems: Sequence[System]) -> dict[str, bool]:
    """Return, per system, whether its commands need the ``sudo -n`` prefix.

    The inventory's Sudo column (stored as the ``sudo`` attribute) wins over the
    Sudo column of the system type's access pattern. sudo is used only where it
    changes something: over SSH when the login user is not root, and for the
    local system when prep-assets does not run as root. pct and qm commands
    already run as root inside the guest.
    """
    patterns: dict[str, Any] = {}
    path = root / ACCESS_PATTERNS_PATH
    if path.is_file():
        patterns, _problems = parse_access_patterns(
            path.read_text(encoding="utf-8-sig"), ACCESS_PATTERNS_PATH
        )
    result: dict[str, bool] = {}
    for system in systems:
        pattern = pattern_for(patterns, system.type)
        use_sudo = pattern.sudo if pattern else False
        cell = system.attributes.get("sudo")
        if cell:
            try:
                use_sudo = parse_yes_no(cell)
            except ValueError:
                logger.warning(
                    "%s: invalid Sudo value %r in the inventory, expected yes or no; using %s",
                    system.name,
                    cell,
                    "yes" if use_sudo else "no",
                )
        result[system.name] = use_sudo and _runs_unprivileged(system)
    return result


def _runs_unprivileged(system: System) -> bool:
    if system.access is AccessMethod.SSH:
        return (system.user or DEFAULT_SSH_USER) != "root"
    if system.access is AccessMethod.LOCAL:
        return os.geteuid() != 0
    return False


def plan_partitions(
    inventory: Mapping[str, Any],
    partitions: Sequence[str],
    tool_values: Mapping[str, Any],
    access_values: Mapping[str, Any],
    sudo: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    """Return the provisioning plan per partition; nothing is installed."""
    systems = _systems(inventory)
    plans: dict[str, Any] = {}
    for name in partitions:
        system = systems.get(name)
        if system is None:
            plans[name] = new_plan(PlanState.NOT_CHECKED, "not in the inventory")
            continue
        tools = tool_values.get(name) or {}
        access = (access_values.get(name) or {}).get("access") or {}
        plans[name] = plan_provisioning(
            system,
            [ToolResult.from_dict(tool) for tool in tools.get("tools", [])],
            _specs(inventory, name),
            tools.get("platform", {}),
            access_ok=access.get("state") in _ACCESS_OK,
            sudo=bool((sudo or {}).get(name)),
        )
    return plans


def provision_partitions(
    inventory: Mapping[str, Any],
    partitions: Sequence[str],
    tool_values: Mapping[str, Any],
    access_values: Mapping[str, Any],
    *,
    root: Path,
    settings: ProvisioningSettings,
    open_transport: TransportOpener,
    run_id: str,
) -> dict[str, Any]:
    """Plan every partition, apply the selected plans when enabled, and audit the changes.

    Returns the plan or outcome per partition. Each value records whether
    provisioning was enabled and, when a rule requested the run, its trigger.
    """
    systems = _systems(inventory)
    present = [systems[name] for name in partitions if name in systems]
    plans = plan_partitions(
        inventory, partitions, tool_values, access_values, read_sudo_settings(root, present)
    )
    results = apply_plans(
        systems, plans, lambda name: _specs(inventory, name), open_transport, settings
    )
    entries: list[AuditEntry] = []
    for name, result in results.items():
        result["enabled"] = settings.enabled
        if settings.trigger:
            result["trigger"] = dict(settings.trigger)
        for change in result.get("changes", []):
            entries.append(
                AuditEntry(
                    time=result["finished_at"],
                    run_id=run_id,
                    system=name,
                    package=change["package"],
                    version=change["version"],
                    previous_version=change["previous_version"],
                    package_manager=result["package_manager"],
                    tools=tuple(change["tools"]),
                    enabled_by=settings.enabled_by,
                    enabled_via=settings.enabled_via,
                )
            )
    if entries:
        append_audit_entries(root / AUDIT_LOG_PATH, entries)
    return results


def _systems(inventory: Mapping[str, Any]) -> dict[str, System]:
    return {data["name"]: System.from_dict(data) for data in inventory["systems"]}


def _specs(inventory: Mapping[str, Any], name: str) -> list[ToolSpec]:
    return [ToolSpec(**spec) for spec in inventory["expected_tools"].get(name, [])]
