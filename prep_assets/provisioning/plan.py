"""Plan the installation of missing crisis tools; nothing here changes a system.

A plan names the package manager, the packages and the exact argument lists
that would run. Read-only systems and appliances are "not provisionable",
which is a fact about the system, not a failure, and so are Kubernetes pods.
Kubernetes nodes get a DaemonSet manifest in place of commands, because their
packages are installed from a privileged pod that enters the node's namespaces.
"""

import enum
from collections.abc import Mapping, Sequence
from typing import Any

from prep_assets.inventory.package_names import resolve_alternatives
from prep_assets.models import AccessMethod, System, ToolResult, ToolSpec, ToolState
from prep_assets.provisioning.manifest import daemonset_manifest


class PlanState(enum.StrEnum):
    """Values of a plan's ``state``. Only applying a plan sets installed or failed."""

    PLANNED = "planned"
    NOTHING_TO_INSTALL = "nothing_to_install"
    NOT_PROVISIONABLE = "not_provisionable"
    UNKNOWN_PACKAGE_MANAGER = "unknown_package_manager"
    NO_PACKAGE = "no_package"
    NOT_CHECKED = "not_checked"
    MANIFEST = "manifest"
    INSTALLED = "installed"
    FAILED = "failed"


# Non-interactive install commands per package manager; packages are appended
# to the last command. apk add --no-cache and dnf install read fresh package
# indexes by themselves, so only apt has a separate refresh command.
# apt-get reads a name that matches no package as a regular expression and would
# install every package it matches ("sysstat." installs libsysstat-qt5-0, checked
# with apt 2.6.1). APT::Cmd::Pattern-Only turns that off; older apt versions
# ignore the unknown option.
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
            "-o",
            "APT::Cmd::Pattern-Only=true",
        ],
    ],
    "apk": [["apk", "add", "--no-cache"]],
    "dnf": [["dnf", "install", "-y", "-q"]],
}

# The program that INSTALL_COMMANDS runs for each package manager.
INSTALLER_PROGRAMS = {"apt": "apt-get", "apk": "apk", "dnf": "dnf"}

# os-release ID -> package manager, used when the check found no package database.
OS_PACKAGE_MANAGERS = {
    "debian": "apt",
    "ubuntu": "apt",
    "raspbian": "apt",
    "linuxmint": "apt",
    "alpine": "apk",
    "fedora": "dnf",
    "rhel": "dnf",
    "centos": "dnf",
    "rocky": "dnf",
    "almalinux": "dnf",
}

# Prefix of every command on a system whose access pattern has Sudo: yes and
# whose login user is not root. -n makes sudo fail at once instead of asking
# for a password that nobody will type.
SUDO_PREFIX = ["sudo", "-n"]

# System types that are Kubernetes nodes, besides systems reached with kubectl.
KUBERNETES_NODE_TYPES = frozenset({"k8s-node", "kubernetes-node", "k3s-node"})

_LACKING = (ToolState.MISSING, ToolState.OUTDATED)


def is_kubernetes_pod(system: System) -> bool:
    """Return whether ``system`` is a pod's container that the kubectl transport execs into.

    A Pod column wins over a Node column, as in the transport factory.
    """
    return system.access is AccessMethod.KUBECTL and bool(system.attributes.get("pod"))


def is_kubernetes_node(system: System) -> bool:
    """Return whether packages reach ``system`` through a DaemonSet rather than commands."""
    if is_kubernetes_pod(system):
        return False
    marked = system.attributes.get("kubernetes", "").lower() in {"yes", "true"}
    return system.access is AccessMethod.KUBECTL or system.type in KUBERNETES_NODE_TYPES or marked


def detect_package_manager(platform: Mapping[str, str]) -> tuple[str | None, str]:
    """Return the package manager that installs on the system, or None with the reason.

    The package database that the tool check read decides (dpkg: apt, apk: apk,
    rpm: dnf), and the os-release ID is used when no database was read. A
    manager whose program the check did not find on PATH is rejected, which
    catches rpm systems that use zypper or only yum.
    """
    database = platform.get("package_manager")
    os_id = platform.get("os_id", "")
    manager = database if database in INSTALL_COMMANDS else OS_PACKAGE_MANAGERS.get(os_id)
    if manager is None:
        return None, (
            f"no apt, apk or rpm package database was found, and the OS {os_id or 'unknown'!r} "
            "has no known package manager"
        )
    reported = platform.get("installers")
    # Values stored before the check reported installer programs have no "installers" key.
    if reported is not None:
        installers = {name for name in reported.split(",") if name}
        program = INSTALLER_PROGRAMS[manager]
        if program not in installers:
            found = ", ".join(sorted(installers)) or "none"
            return None, (
                f"the {manager} package database was found but {program} is not on PATH "
                f"(package manager programs found: {found})"
            )
    return manager, ""


def plan_provisioning(
    system: System,
    tools: Sequence[ToolResult],
    specs: Sequence[ToolSpec],
    platform: Mapping[str, str],
    access_ok: bool,
    *,
    sudo: bool = False,
) -> dict[str, Any]:
    """Return the provisioning plan of one system as a JSON-ready dict.

    ``sudo`` prefixes every command with ``sudo -n``. ``platform`` is what the
    tool check reported: package_manager, os_id, kernel and installers.
    """
    read_only_reason = not_provisionable_reason(system)
    if read_only_reason:
        return new_plan(PlanState.NOT_PROVISIONABLE, read_only_reason)
    if not access_ok:
        return new_plan(
            PlanState.NOT_CHECKED, "access failed, so the installed tools are not known"
        )

    lacking = [tool for tool in tools if tool.state in _LACKING]
    if not lacking:
        return new_plan(
            PlanState.NOTHING_TO_INSTALL, "nothing to install: every expected tool is installed"
        )

    manager, why_unknown = detect_package_manager(platform)
    if manager is None:
        return new_plan(PlanState.UNKNOWN_PACKAGE_MANAGER, why_unknown)

    packages, tool_packages, alternatives, unmapped = _choose_packages(
        lacking, specs, manager, platform
    )
    reason = "missing or outdated: " + ", ".join(tool.command for tool in lacking)
    if unmapped:
        reason += f"; the tools map names no installable {manager} package for: " + ", ".join(
            unmapped
        )
    if not packages:
        return new_plan(PlanState.NO_PACKAGE, reason, manager)

    commands = install_commands(manager, packages, sudo=sudo)
    plan = new_plan(PlanState.PLANNED, reason, manager, packages, commands)
    plan["tools"] = tool_packages
    plan["alternatives"] = alternatives
    plan["sudo"] = sudo
    if is_kubernetes_node(system):
        # The node's own commands run inside the DaemonSet's pod, as root, without sudo.
        node_commands = install_commands(manager, packages, sudo=False)
        plan["state"] = PlanState.MANIFEST
        plan["commands"] = []
        plan["sudo"] = False
        # An inventory "Node" column names the node when it differs from the system's name.
        node = system.attributes.get("node") or system.name
        plan["manifest"] = daemonset_manifest(node, node_commands)
        plan["reason"] = reason + "; Kubernetes node: apply the DaemonSet manifest to install"
    return plan


def not_provisionable_reason(system: System) -> str | None:
    """Return why nothing may be installed on ``system``, or None when it may."""
    if system.read_only:
        if system.attributes.get("read-only", "").lower() in {"yes", "true"}:
            return "marked read-only in the inventory: nothing is installed there"
        return f"{system.type} systems are read-only or vendor-managed: nothing is installed there"
    if not system.contacted:
        return "not contacted (unmanaged, or access method none): nothing is installed there"
    if system.access is AccessMethod.TCP:
        return "reached only by a TCP connect, so no command can run there"
    if is_kubernetes_pod(system):
        return (
            "Kubernetes pod: a package installed in a running container is lost when the pod "
            "is recreated, so nothing is installed there; add the tool to the container image"
        )
    return None


def install_commands(manager: str, packages: Sequence[str], *, sudo: bool) -> list[list[str]]:
    """Return the argument lists that install ``packages`` with ``manager``."""
    commands = [list(command) for command in INSTALL_COMMANDS[manager]]
    commands[-1] = commands[-1] + list(packages)
    if sudo:
        commands = [SUDO_PREFIX + command for command in commands]
    return commands


def _choose_packages(
    lacking: Sequence[ToolResult],
    specs: Sequence[ToolSpec],
    manager: str,
    platform: Mapping[str, str],
) -> tuple[list[str], dict[str, str], dict[str, list[str]], list[str]]:
    """Pick the first alternative per tool; return packages, tool -> package, fallbacks, unmapped tools."""
    by_command = {spec.command: spec for spec in specs}
    packages: list[str] = []
    tool_packages: dict[str, str] = {}
    alternatives: dict[str, list[str]] = {}
    unmapped: list[str] = []
    for tool in lacking:
        spec = by_command.get(tool.command)
        cell = spec.packages.get(manager) if spec else None
        names = resolve_alternatives(cell, platform) if cell else []
        if not names:
            unmapped.append(tool.command)
            continue
        chosen = names[0]
        tool_packages[tool.command] = chosen
        if chosen not in packages:
            packages.append(chosen)
        if len(names) > 1:
            alternatives[chosen] = names[1:]
    return packages, tool_packages, alternatives, unmapped


def new_plan(
    state: str,
    reason: str,
    manager: str | None = None,
    packages: Sequence[str] = (),
    commands: Sequence[Sequence[str]] = (),
) -> dict[str, Any]:
    """Return a plan dict with every key that readers expect."""
    return {
        "state": state,
        "package_manager": manager,
        "packages": list(packages),
        "commands": [list(command) for command in commands],
        "reason": reason,
        "tools": {},
        "alternatives": {},
        "sudo": False,
        "manifest": None,
        "applied": False,
    }
