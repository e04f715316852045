"""Plan the installation of missing crisis tools; nothing here changes a system.

A plan names the package manager, the packages and the exact argument lists
that would run. Read-only systems and appliances are "not provisionable",
which is a fact about the system, not a failure.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from prep_assets.models import System, ToolResult, ToolSpec, ToolState

# Non-interactive install commands per package manager; packages are appended as arguments.
INSTALL_COMMANDS: dict[str, list[list[str]]] = {
    "apt": [
        ["apt-get", "update", "-q"],
        [
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
        ],
    ],
    "apk": [["apk", "add", "--no-cache"]],
    "dnf": [["dnf", "install", "-y", "-q"]],
}


def plan_provisioning(
    system: System,
    tools: Sequence[ToolResult],
    specs: Sequence[ToolSpec],
    platform: Mapping[str, str],
    access_ok: bool,
) -> dict[str, Any]:
    """Return the provisioning plan of one system as a JSON-ready dict."""
    if system.read_only or not system.contacted:
        reason = f"{system.type} systems are read-only or not managed: nothing is installed there"
        return _plan("not_provisionable", reason)
    if not access_ok:
        return _plan("not_checked", "access failed, so the installed tools are not known")

    lacking = [tool for tool in tools if tool.state in (ToolState.MISSING, ToolState.OUTDATED)]
    if not lacking:
        return _plan("nothing_to_install", "every expected tool is installed")

    manager = platform.get("package_manager")
    if manager not in INSTALL_COMMANDS:
        return _plan(
            "unknown_package_manager",
            "no apt, apk or dnf package database was found on the system",
            manager,
        )

    by_command = {spec.command: spec for spec in specs}
    packages: list[str] = []
    unmapped: list[str] = []
    for tool in lacking:
        spec = by_command.get(tool.command)
        package = spec.packages.get(manager) if spec else None
        if package is None:
            unmapped.append(tool.command)
        elif package not in packages:
            packages.append(package)

    commands = [list(command) for command in INSTALL_COMMANDS[manager]]
    commands[-1] = commands[-1] + packages
    reason = "missing: " + ", ".join(tool.command for tool in lacking)
    if unmapped:
        reason += f"; no {manager} package is known for: " + ", ".join(unmapped)
    if not packages:
        return _plan("unknown_package_manager", reason, manager)
    return _plan("planned", reason, manager, packages, commands)


def _plan(
    state: str,
    reason: str,
    manager: str | None = None,
    packages: Sequence[str] = (),
    commands: Sequence[Sequence[str]] = (),
) -> dict[str, Any]:
    return {
        "state": state,
        "package_manager": manager,
        "packages": list(packages),
        "commands": [list(command) for command in commands],
        "reason": reason,
        "applied": False,
    }
