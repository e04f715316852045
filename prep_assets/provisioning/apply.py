"""Apply provisioning plans through the systems' transports, only when enabled.

For each selected system with a ``planned`` plan, one transport is opened and:

1. the tool check runs for the planned tools, which records the package
   versions before the change and drops tools installed since the plan;
2. the refresh command (apt-get update) and the install command run without a
   terminal, each limited by ``command_timeout``. When the package manager
   reports a package as unknown and the tools map names an alternative, the
   install is retried with the alternative, once per alternative;
3. the tool check runs again, and only its result decides ``installed`` or
   ``failed``: a zero exit code of the package manager is not enough.

Systems are provisioned concurrently, at most ``max_workers`` at a time. A
failure on one system becomes that system's result and never stops the others.
"""

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prep_assets.checks.runner import SetupError
from prep_assets.checks.tools import parse_package_versions, parse_tool_check, tool_check_command
from prep_assets.inventory.package_names import ALTERNATIVE_SEPARATOR
from prep_assets.models import CommandResult, System, ToolResult, ToolSpec, ToolState
from prep_assets.provisioning.plan import PlanState, install_commands
from prep_assets.transports.base import Transport, TransportError, shell_command

logger = logging.getLogger(__name__)

TransportOpener = Callable[[System], Transport]

# Maximum characters kept from a failing command's output in the result's "error".
ERROR_MESSAGE_LIMIT = 600

# Messages of apt-get, apk and dnf that name a package they do not know.
UNKNOWN_PACKAGE_PATTERNS: dict[str, list[re.Pattern[str]]] = {
    "apt": [
        re.compile(r"Unable to locate package (\S+)"),
        re.compile(r"Package '?([^'\s]+)'? has no installation candidate"),
    ],
    "apk": [re.compile(r"^\s*(\S+) \(no such package\)", re.MULTILINE)],
    "dnf": [
        re.compile(r"No match for argument: (\S+)"),
        re.compile(r"Unable to find a match: ([^\n]+)"),
    ],
}

# Lines that carry a package manager's error, as opposed to progress output.
_ERROR_LINE = re.compile(r"^(E:|ERROR|Error|No match|.*no such package|sudo:)")


@dataclass(frozen=True)
class ProvisioningSettings:
    """Whether and where plans are applied, and the limits of one apply pass."""

    enabled: bool = False
    # Systems and tiers that may be provisioned. A system is selected when either
    # set names it (its name or its tier). Both empty selects every system.
    systems: frozenset[str] = frozenset()
    tiers: frozenset[str] = frozenset()
    # Seconds allowed for each refresh or install command.
    command_timeout: float = 900.0
    # Seconds allowed for each tool check before and after installing.
    check_timeout: float = 60.0
    # Systems provisioned at the same time.
    max_workers: int = 4
    # Characters of each command's output kept in the result, from its end.
    output_limit: int = 4000
    # Who turned provisioning on, and through what: "resource" or "run config".
    enabled_by: str = ""
    enabled_via: str = ""
    # Extra values to record with every result, such as the rule that requested the run.
    trigger: Mapping[str, str] = field(default_factory=dict)

    def skip_reason(self, system: System) -> str | None:
        """Return why the plan of ``system`` is not applied in this pass, or None."""
        if not self.enabled:
            return "provisioning is disabled, so this is a plan only"
        if not self.systems and not self.tiers:
            return None
        if system.name in self.systems or system.tier in self.tiers:
            return None
        limits = []
        if self.systems:
            limits.append("systems " + ", ".join(sorted(self.systems)))
        if self.tiers:
            limits.append("tiers " + ", ".join(sorted(self.tiers)))
        return "provisioning is limited to " + " and ".join(limits)


def apply_plans(
    systems: Mapping[str, System],
    plans: Mapping[str, dict[str, Any]],
    specs_for: Callable[[str], Sequence[ToolSpec]],
    open_transport: TransportOpener,
    settings: ProvisioningSettings,
) -> dict[str, dict[str, Any]]:
    """Apply every selected ``planned`` plan; return all plans, applied ones with their outcome.

    Plans that are not applied are returned unchanged, with ``skipped`` giving
    the reason when the plan had something to install.
    """
    results: dict[str, dict[str, Any]] = {}
    selected: list[str] = []
    for name, plan in plans.items():
        result = dict(plan)
        results[name] = result
        system = systems.get(name)
        if plan["state"] != PlanState.PLANNED or system is None:
            continue
        reason = settings.skip_reason(system)
        if reason:
            result["skipped"] = reason
        else:
            selected.append(name)
    if not selected:
        return results

    workers = max(1, min(settings.max_workers, len(selected)))
    logger.info("provisioning %d systems, %d at a time", len(selected), workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prep-provision") as pool:
        futures = {
            name: pool.submit(
                provision_system,
                systems[name],
                plans[name],
                specs_for(name),
                open_transport,
                settings,
            )
            for name in selected
        }
        for name, future in futures.items():
            results[name] = future.result()
    return results


def provision_system(
    system: System,
    plan: Mapping[str, Any],
    specs: Sequence[ToolSpec],
    open_transport: TransportOpener,
    settings: ProvisioningSettings,
) -> dict[str, Any]:
    """Open a transport to ``system``, apply its plan and close the transport."""
    started = time.monotonic()
    logger.info("provisioning %s: %s", system.name, ", ".join(plan["packages"]))
    transport: Transport | None = None
    try:
        transport = open_transport(system)
        result = apply_plan(system, plan, specs, transport, settings)
    except (SetupError, TransportError) as error:
        message = error.message if isinstance(error, TransportError) else str(error)
        logger.warning("provisioning %s failed before any command ran: %s", system.name, message)
        result = _failed(dict(plan), f"could not open a connection: {message}")
    except Exception as error:
        # One system's unexpected error must not stop the other systems' installs.
        logger.error("provisioning %s failed unexpectedly", system.name, exc_info=True)
        result = _failed(dict(plan), f"unexpected {type(error).__name__}; see the step log")
    finally:
        if transport is not None:
            transport.close()
    result["duration_seconds"] = round(time.monotonic() - started, 1)
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    logger.info(
        "provisioning %s finished: %s in %.1f s",
        system.name,
        result["state"],
        result["duration_seconds"],
    )
    return result


def apply_plan(
    system: System,
    plan: Mapping[str, Any],
    specs: Sequence[ToolSpec],
    transport: Transport,
    settings: ProvisioningSettings,
) -> dict[str, Any]:
    """Run the plan's commands over ``transport`` and verify them with the tool check.

    Returns the plan with ``state`` installed, failed or nothing_to_install, the
    ``steps`` that ran with their truncated output, the package ``changes`` and,
    on failure, the package manager's ``error`` message.
    """
    result = _apply_plan(system, plan, specs, transport, settings)
    for step in result["steps"]:
        step.pop("full_output", None)
    return result


def _apply_plan(
    system: System,
    plan: Mapping[str, Any],
    specs: Sequence[ToolSpec],
    transport: Transport,
    settings: ProvisioningSettings,
) -> dict[str, Any]:
    result: dict[str, Any] = dict(plan)
    result.update(applied=True, steps=[], changes=[], error=None, warnings=[])
    manager: str = plan["package_manager"]
    tool_packages: dict[str, str] = dict(plan["tools"])
    fallbacks = {package: list(names) for package, names in plan.get("alternatives", {}).items()}
    min_versions = {spec.command: spec.min_version for spec in specs}

    def check() -> tuple[dict[str, ToolResult], dict[str, str]]:
        check_specs = [
            ToolSpec(
                command,
                {manager: ALTERNATIVE_SEPARATOR.join([package, *fallbacks.get(package, [])])},
                min_versions.get(command),
            )
            for command, package in tool_packages.items()
        ]
        output = transport.run(tool_check_command(check_specs), settings.check_timeout)
        if output.exit_code != 0:
            raise TransportError(
                system.name, f"the tool check exited with {output.exit_code}: {_message(output)}"
            )
        tools = {tool.command: tool for tool in parse_tool_check(output.stdout, check_specs)}
        return tools, parse_package_versions(output.stdout)

    try:
        before_tools, before_versions = check()
    except TransportError as check_error:
        return _failed(result, f"the tool check before installing failed: {check_error.message}")

    lacking = [command for command, tool in before_tools.items() if _lacking(tool)]
    if not lacking:
        result["state"] = PlanState.NOTHING_TO_INSTALL
        result["reason"] = (
            "nothing to install: the planned tools were installed since the tool check"
        )
        return result
    tool_packages = {command: tool_packages[command] for command in lacking}
    packages = list(dict.fromkeys(tool_packages.values()))
    sudo = bool(plan.get("sudo"))

    install_error = None
    try:
        for command in install_commands(manager, packages, sudo=sudo)[:-1]:
            step = _run_step(transport, command, settings)
            result["steps"].append(step)
            if step["exit_code"] != 0:
                result["warnings"].append(
                    f"{shell_command(command)} failed: {step['message']}; "
                    "installing from the package lists already on the system"
                )
        install_error = _install(
            transport, manager, packages, tool_packages, fallbacks, sudo, settings, result
        )
    except TransportError as transport_error:
        install_error = transport_error.message
        logger.warning("provisioning %s: %s", system.name, install_error)

    result["packages"] = packages
    result["tools"] = tool_packages
    result["commands"] = install_commands(manager, packages, sudo=sudo)
    try:
        after_tools, after_versions = check()
    except TransportError as check_error:
        return _failed(
            result,
            _join(install_error, f"the tool check after installing failed: {check_error.message}"),
        )

    result["changes"] = _changes(tool_packages, fallbacks, before_versions, after_versions)
    result["verified"] = {command: after_tools[command].state.value for command in tool_packages}
    still = [command for command in tool_packages if _lacking(after_tools[command])]
    if still:
        states = ", ".join(f"{command} {after_tools[command].state.value}" for command in still)
        return _failed(
            result, _join(install_error, f"after installing, the tool check reports {states}")
        )
    result["state"] = PlanState.INSTALLED
    result["reason"] = "installed and verified by the tool check: " + ", ".join(tool_packages)
    if install_error:
        result["warnings"].append(
            f"the tools are installed although a command failed: {install_error}"
        )
    return result


def _install(
    transport: Transport,
    manager: str,
    packages: list[str],
    tool_packages: dict[str, str],
    fallbacks: dict[str, list[str]],
    sudo: bool,
    settings: ProvisioningSettings,
    result: dict[str, Any],
) -> str | None:
    """Run the install command, switching unknown packages to their alternatives; return the error."""
    while True:
        command = install_commands(manager, packages, sudo=sudo)[-1]
        step = _run_step(transport, command, settings)
        result["steps"].append(step)
        if step["exit_code"] == 0:
            return None
        unknown = unknown_packages(manager, step["full_output"], packages)
        switched = False
        for name in unknown:
            remaining = fallbacks.pop(name, [])
            if not remaining:
                continue
            replacement, rest = remaining[0], remaining[1:]
            fallbacks[replacement] = rest
            packages[packages.index(name)] = replacement
            for command_name, package in tool_packages.items():
                if package == name:
                    tool_packages[command_name] = replacement
            result.setdefault("substitutions", []).append(
                {
                    "package": name,
                    "replacement": replacement,
                    "reason": f"{manager}: unknown package",
                }
            )
            switched = True
        if not switched:
            return step["message"]
        # The same package may name a replacement that is already in the list.
        packages[:] = list(dict.fromkeys(packages))


def unknown_packages(manager: str, output: str, packages: Sequence[str]) -> list[str]:
    """Return the packages of ``packages`` that the package manager's output reports as unknown."""
    found: list[str] = []
    for pattern in UNKNOWN_PACKAGE_PATTERNS.get(manager, []):
        for match in pattern.finditer(output):
            for name in match.group(1).split():
                if name in packages and name not in found:
                    found.append(name)
    return found


def _run_step(
    transport: Transport, command: Sequence[str], settings: ProvisioningSettings
) -> dict[str, Any]:
    """Run one command; return its exit code, truncated output and error message.

    ``full_output`` is for parsing in this module only and is removed before the result is stored.
    """
    result = transport.run(command, settings.command_timeout)
    output = result.stdout + (("\n" + result.stderr) if result.stderr else "")
    return {
        "command": list(command),
        "exit_code": result.exit_code,
        "duration_seconds": round(result.duration_seconds, 1),
        "output": truncate(output, settings.output_limit),
        "message": _message(result) if result.exit_code != 0 else "",
        "full_output": output,
    }


def truncate(text: str, limit: int) -> str:
    """Return the last ``limit`` characters of ``text``, saying how many were cut before them."""
    if len(text) <= limit:
        return text
    return f"[{len(text) - limit} characters cut]\n" + text[-limit:]


def _message(result: CommandResult) -> str:
    """Return the error lines of a failed command, or its last lines when none look like errors."""
    text = result.stderr.strip() or result.stdout.strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if _ERROR_LINE.match(line)]
    chosen = errors or lines[-3:] or [f"exit code {result.exit_code} without output"]
    return truncate(" ".join(chosen), ERROR_MESSAGE_LIMIT)


def _lacking(tool: ToolResult) -> bool:
    return tool.state in (ToolState.MISSING, ToolState.OUTDATED, ToolState.UNKNOWN)


def _changes(
    tool_packages: Mapping[str, str],
    fallbacks: Mapping[str, list[str]],
    before: Mapping[str, str],
    after: Mapping[str, str],
) -> list[dict[str, Any]]:
    """Return one change per package whose installed version differs after the install."""
    changes = []
    for package in dict.fromkeys(tool_packages.values()):
        version = after.get(package)
        if version is None or version == before.get(package):
            continue
        changes.append(
            {
                "package": package,
                "version": version,
                "previous_version": before.get(package),
                "tools": sorted(c for c, p in tool_packages.items() if p == package),
            }
        )
    return changes


def _failed(result: dict[str, Any], error: str) -> dict[str, Any]:
    result["applied"] = True
    result["state"] = PlanState.FAILED
    result["error"] = error
    result["reason"] = "provisioning failed: " + error
    return result


def _join(first: str | None, second: str) -> str:
    return f"{first}; {second}" if first else second
