"""Provisioning plans: package managers, package names, sudo, refusals and manifests."""

import shutil
import stat
from pathlib import Path

import pytest
import yaml

from prep_assets.checks.tools import parse_platform, parse_tool_check, tool_check_command
from prep_assets.inventory.package_names import resolve_alternatives, validate_package_cell
from prep_assets.models import AccessMethod, System, ToolResult, ToolSpec, ToolState
from prep_assets.provisioning.apply import ProvisioningSettings, truncate, unknown_packages
from prep_assets.provisioning.plan import detect_package_manager, plan_provisioning
from prep_assets.transports.local import LocalTransport

FIXTURES = Path(__file__).parent / "fixtures"

SPECS = [
    ToolSpec("iostat", {"apt": "sysstat", "apk": "sysstat", "dnf": "sysstat"}),
    ToolSpec("vmstat", {"apt": "procps", "apk": "procps-ng", "dnf": "procps-ng"}),
    ToolSpec("perf", {"apt": "linux-tools-{kernel} | linux-perf", "apk": "perf", "dnf": "perf"}),
    ToolSpec("bpftrace", {"apt": "bpftrace", "apk": "bpftrace", "dnf": "bpftrace"}),
]


def system(name="box", type_="linux", access=AccessMethod.SSH, **values):
    return System(name, type_, "standard", access, address="127.0.0.9", port=22, **values)


def missing(*commands):
    return [ToolResult(command, ToolState.MISSING) for command in commands]


def write_stub(path: Path, text: str) -> None:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def run_check_on_fixture(distribution: str, tmp_path: Path) -> str:
    """Run the real tool check script with the fixture's os-release and stub programs.

    The fixture's os-release is bind-mounted over /etc/os-release in a private
    mount namespace, and PATH holds only stubs that print the recorded outputs.
    """
    fixture = FIXTURES / distribution
    stubs = tmp_path / "bin"
    stubs.mkdir()
    kernel = (fixture / "uname-r").read_text().strip()
    write_stub(stubs / "uname", f"printf '%s\\n' '{kernel}'\n")
    lookup = (
        'for name do :; done\ntab=$(printf "\\t")\n'
        f'while IFS="$tab" read -r package line; do\n'
        '  if [ "$package" = "$name" ]; then printf "%s\\n" "$line"; exit 0; fi\n'
        f"done < {fixture / 'packages.tsv'}\nexit 1\n"
    )
    for command in (fixture / "commands").read_text().split():
        write_stub(stubs / command, lookup if command in ("apk", "rpm") else "exit 0\n")
    if distribution.startswith("fedora"):
        write_stub(stubs / "rpm", lookup)

    wrapper = (
        'mount --bind "$1" /etc/os-release && PATH="$2" && export PATH && shift 2 && exec "$@"'
    )
    argv = [
        shutil.which("unshare") or "unshare",
        "--mount",
        "/bin/sh",
        "-c",
        wrapper,
        "prep-assets-test",
        str(fixture / "os-release"),
        str(stubs),
        *tool_check_command(SPECS),
    ]
    result = LocalTransport("fixture").run(argv, 10)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_alpine_plan_uses_apk(tmp_path):
    output = run_check_on_fixture("alpine-3.20", tmp_path)

    platform = parse_platform(output)
    tools = parse_tool_check(output, SPECS)
    plan = plan_provisioning(system(), tools, SPECS, platform, access_ok=True)

    assert platform["os_id"] == "alpine"
    assert platform["package_manager"] == "apk"
    assert platform["kernel"] == "6.6.58-0-lts"
    assert {tool.command: tool.state for tool in tools} == {
        "iostat": ToolState.MISSING,
        "vmstat": ToolState.INSTALLED,
        "perf": ToolState.MISSING,
        "bpftrace": ToolState.MISSING,
    }
    assert next(tool for tool in tools if tool.command == "vmstat").version == "4.0.4-r0"
    assert plan["state"] == "planned"
    assert plan["package_manager"] == "apk"
    assert plan["commands"] == [["apk", "add", "--no-cache", "sysstat", "perf", "bpftrace"]]


def test_fedora_plan_uses_dnf(tmp_path):
    output = run_check_on_fixture("fedora-40", tmp_path)

    platform = parse_platform(output)
    tools = parse_tool_check(output, SPECS)
    plan = plan_provisioning(system(), tools, SPECS, platform, access_ok=True, sudo=True)

    assert platform["os_id"] == "fedora"
    assert platform["package_manager"] == "dnf"
    assert set(platform["installers"].split(",")) == {"dnf", "yum"}
    assert next(tool for tool in tools if tool.command == "vmstat").version == "4.0.4-3.fc40"
    assert plan["state"] == "planned"
    assert plan["commands"] == [
        ["sudo", "-n", "dnf", "install", "-y", "-q", "sysstat", "perf", "bpftrace"]
    ]


def test_debian_plan_prefers_kernel_matched_perf():
    platform = {"package_manager": "apt", "os_id": "debian", "kernel": "6.1.0-18-amd64"}

    plan = plan_provisioning(system(), missing("perf"), SPECS, platform, access_ok=True)

    assert plan["packages"] == ["linux-tools-6.1.0-18-amd64"]
    assert plan["alternatives"] == {"linux-tools-6.1.0-18-amd64": ["linux-perf"]}
    assert plan["commands"] == [
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
            "linux-tools-6.1.0-18-amd64",
        ],
    ]


def test_unknown_kernel_falls_back_to_generic_package():
    platform = {"package_manager": "apt", "os_id": "debian"}

    plan = plan_provisioning(system(), missing("perf"), SPECS, platform, access_ok=True)

    assert plan["packages"] == ["linux-perf"]
    assert plan["alternatives"] == {}


@pytest.mark.parametrize(
    ("type_", "attributes", "access", "expected"),
    [
        ("haos", {}, AccessMethod.SSH, "haos systems are read-only"),
        ("appliance", {}, AccessMethod.TCP, "appliance systems are read-only"),
        ("talos", {}, AccessMethod.KUBECTL, "talos systems are read-only"),
        ("linux", {"read-only": "yes"}, AccessMethod.SSH, "marked read-only in the inventory"),
        ("linux", {}, AccessMethod.NONE, "not contacted"),
        ("printer", {}, AccessMethod.TCP, "only by a TCP connect"),
    ],
)
def test_read_only_systems_are_not_provisionable(type_, attributes, access, expected):
    target = system(type_=type_, access=access, attributes=attributes)
    platform = {"package_manager": "apt"}

    plan = plan_provisioning(target, missing("iostat"), SPECS, platform, access_ok=True)

    assert plan["state"] == "not_provisionable"
    assert expected in plan["reason"]
    assert plan["commands"] == []


def test_kubernetes_node_gets_daemonset_manifest():
    node = system(name="k8s-worker-1", type_="k8s-node", attributes={"node": "worker-1"})
    platform = {"package_manager": "apt", "installers": "apt-get"}

    plan = plan_provisioning(node, missing("iostat"), SPECS, platform, access_ok=True, sudo=True)

    assert plan["state"] == "manifest"
    assert plan["commands"] == []
    manifest = yaml.safe_load(plan["manifest"])
    assert manifest["kind"] == "DaemonSet"
    pod = manifest["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "worker-1"}
    install = pod["initContainers"][0]
    assert install["securityContext"] == {"privileged": True}
    assert install["command"][:9] == [
        "nsenter",
        "--target",
        "1",
        "--mount",
        "--uts",
        "--ipc",
        "--net",
        "--pid",
        "--",
    ]
    script = install["command"][-1]
    assert script.startswith("apt-get update -q && env DEBIAN_FRONTEND=noninteractive apt-get")
    assert script.endswith("--no-install-recommends -o APT::Cmd::Pattern-Only=true sysstat")
    assert "sudo" not in script


def test_kubernetes_pod_is_not_provisionable():
    pod = system(
        name="web",
        type_="k8s-pod",
        access=AccessMethod.KUBECTL,
        attributes={"namespace": "apps", "pod": "web-0"},
    )
    platform = {"package_manager": "apt", "installers": "apt-get"}

    plan = plan_provisioning(pod, missing("iostat"), SPECS, platform, access_ok=True)

    assert plan["state"] == "not_provisionable"
    assert plan["reason"] == (
        "Kubernetes pod: a package installed in a running container is lost when the pod "
        "is recreated, so nothing is installed there; add the tool to the container image"
    )
    assert plan["commands"] == []
    assert plan["manifest"] is None


def test_kubectl_node_row_gets_manifest():
    node = system(
        name="k8s-worker-2",
        type_="linux",
        access=AccessMethod.KUBECTL,
        attributes={"node": "worker-2"},
    )
    platform = {"package_manager": "apt", "installers": "apt-get"}

    plan = plan_provisioning(node, missing("iostat"), SPECS, platform, access_ok=True)

    assert plan["state"] == "manifest"
    manifest = yaml.safe_load(plan["manifest"])
    pod = manifest["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "worker-2"}


def test_nothing_missing_means_nothing_to_install():
    tools = [ToolResult("iostat", ToolState.INSTALLED, "/usr/bin/iostat")]

    plan = plan_provisioning(system(), tools, SPECS, {"package_manager": "apt"}, access_ok=True)

    assert plan["state"] == "nothing_to_install"
    assert plan["reason"].startswith("nothing to install")


def test_failed_access_is_not_checked():
    plan = plan_provisioning(system(), missing("iostat"), SPECS, {}, access_ok=False)

    assert plan["state"] == "not_checked"


@pytest.mark.parametrize(
    ("platform", "expected_manager", "reason_part"),
    [
        ({"package_manager": "apt", "installers": "apt-get"}, "apt", ""),
        ({"os_id": "ubuntu"}, "apt", ""),
        (
            {"package_manager": "dnf", "os_id": "opensuse-leap", "installers": "zypper"},
            None,
            "zypper",
        ),
        ({"package_manager": "dnf", "installers": "yum"}, None, "dnf is not on PATH"),
        ({"os_id": "gentoo"}, None, "'gentoo'"),
    ],
)
def test_detect_package_manager(platform, expected_manager, reason_part):
    manager, reason = detect_package_manager(platform)

    assert manager == expected_manager
    assert reason_part in reason


def test_unmapped_tool_is_named():
    specs = [ToolSpec("nicstat", {"apt": "nicstat"})]

    plan = plan_provisioning(system(), missing("nicstat"), specs, {"os_id": "alpine"}, True)

    assert plan["state"] == "no_package"
    assert "no installable apk package for: nicstat" in plan["reason"]


@pytest.mark.parametrize(
    ("cell", "platform", "expected"),
    [
        ("sysstat", {}, ["sysstat"]),
        (
            "linux-tools-{kernel} | linux-perf",
            {"kernel": "6.1.0-18-amd64"},
            ["linux-tools-6.1.0-18-amd64", "linux-perf"],
        ),
        ("linux-tools-{kernel} | linux-perf", {}, ["linux-perf"]),
        ("linux-tools-{kernel}", {"kernel": "6.1 ; rm -rf /"}, []),
    ],
)
def test_resolve_alternatives(cell, platform, expected):
    assert resolve_alternatives(cell, platform) == expected


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("sysstat; rm", "invalid package 'sysstat; rm'"),
        ("linux-tools-{release}", "unknown placeholder {release}"),
        ("a | ", "invalid package ''"),
        ("sysstat-", "invalid package 'sysstat-'"),
    ],
)
def test_invalid_package_cells(cell, message):
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        validate_package_cell(cell)


@pytest.mark.parametrize(
    ("manager", "output", "expected"),
    [
        ("apt", "E: Unable to locate package no-such-tool\n", ["no-such-tool"]),
        ("apt", "E: Package 'linux-perf' has no installation candidate\n", ["linux-perf"]),
        (
            "apk",
            "ERROR: unable to select packages:\n  no-such-tool (no such package):\n"
            "    required by: world[no-such-tool]\n",
            ["no-such-tool"],
        ),
        (
            "dnf",
            "No match for argument: no-such-tool\nError: Unable to find a match: no-such-tool\n",
            ["no-such-tool"],
        ),
        ("apt", "E: Could not get lock /var/lib/dpkg/lock-frontend\n", []),
    ],
)
def test_unknown_packages_from_manager_output(manager, output, expected):
    assert unknown_packages(manager, output, ["sysstat", "no-such-tool", "linux-perf"]) == expected


def test_selection_by_system_or_tier():
    settings = ProvisioningSettings(enabled=True, systems=frozenset({"a"}), tiers={"lab"})

    assert settings.skip_reason(system(name="a")) is None
    assert settings.skip_reason(System("b", "linux", "lab", AccessMethod.SSH)) is None
    assert "limited to systems a and tiers lab" in settings.skip_reason(system(name="c"))
    assert "disabled" in ProvisioningSettings().skip_reason(system())


def test_truncate_keeps_the_end():
    assert truncate("abcdef", 10) == "abcdef"
    assert truncate("abcdefghij" * 3, 5) == "[25 characters cut]\nfghij"
