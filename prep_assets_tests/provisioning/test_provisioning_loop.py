"""Provisioning through the whole PREP loop, with a real apt on chroot test hosts.

Every Debian test system is a chroot host: an overlay over this machine's root
in which sysstat was purged, reached over SSH as a non-root user with
``sudo -n``. apt installs from a local flat repository inside the overlay, so
the tests do not depend on the Debian mirror and never touch the machine's own
packages. haos and appliance systems point at real sshd test hosts, whose logs
prove that no session was opened there.
"""

import subprocess
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    SensorResult,
    SkipReason,
    build_sensor_context,
    materialize,
)

from prep_assets.cli import run_loop
from prep_assets.defs.provisioning import ProvisioningResource
from prep_assets.defs.rules_sensor import rules_sensor
from prep_assets_tests.loop_helpers import (
    INVENTORY,
    STATUS_MARKDOWN,
    InfraRepo,
    credentials_text,
    inventory_text,
    latest_metadata,
    latest_run_id,
    loop_resources,
    read_audit_log,
    run_pass,
)
from prep_assets_tests.provisioning.chroot_hosts import file_fingerprint, installed_version
from prep_assets_tests.sshhosts import HostKind

# The short baseline sample runs vmstat for about 5 s, so commands get 10 s.
TIMEOUT = 10.0
MISSING_PACKAGE = "no-such-package-prep-assets"

TOOLS_MAP = f"""\
# Tools map

## default

| Tool | apt |
|------|-----|
| iostat | sysstat |
| vmstat | procps |

## broken-map

| Tool | apt |
|------|-----|
| iostat | {MISSING_PACKAGE} |
| vmstat | procps |

## fallback-map

| Tool | apt |
|------|-----|
| iostat | `sysstat-{{kernel}} | sysstat` |
| vmstat | procps |
"""

ACCESS_PATTERNS = """\
# Access patterns

| Type | Sudo |
|------|------|
| debian-test | yes |
| broken-map | yes |
| fallback-map | yes |
"""

APT_INSTALL = [
    "sudo",
    "-n",
    "env",
    "DEBIAN_FRONTEND=noninteractive",
    "apt-get",
    "install",
    "-y",
    "-q",
    "--no-install-recommends",
    "-o",
    "APT::Cmd::Pattern-Only=true",
]


def row(name, type_, host):
    return f"| {name} | {type_} | standard | {host.address} | {host.port} | ssh | {host.user} | test-key |"


class Loop:
    """An infra repo, a Dagster instance and the resources of one test."""

    def __init__(self, tmp_path: Path, ssh_hosts) -> None:
        self.repo = InfraRepo(tmp_path / "infra")
        self.repo.write("docs/reference/tools-map.md", TOOLS_MAP)
        self.repo.write("docs/reference/access-patterns.md", ACCESS_PATTERNS)
        self.repo.write(
            "docs/reference/credentials-map.md",
            credentials_text(
                [f"| test-key | ssh-key | file:{ssh_hosts.client_key.private_key_path} |"]
            ),
        )
        (tmp_path / "dagster_home").mkdir()
        self.instance = DagsterInstance.local_temp(str(tmp_path / "dagster_home"))
        self.known_hosts = ssh_hosts.known_hosts_path

    def write_inventory(self, rows: list[str], message: str = "Document the test systems") -> None:
        self.repo.write(INVENTORY, inventory_text(rows))
        self.repo.commit(message)

    def resources(self, enabled: bool, **settings) -> dict:
        provisioning = ProvisioningResource(enabled=enabled, enabled_by="test-operator", **settings)
        return loop_resources(self.repo, self.known_hosts, TIMEOUT, provisioning)

    def provisioning(self) -> dict:
        return {entry["name"]: entry["provisioning"] for entry in self.repo.status()["systems"]}

    def latest_metadata(self, asset: str) -> dict:
        return latest_metadata(self.instance, asset)

    def latest_run_id(self, asset: str) -> str:
        return latest_run_id(self.instance, asset)

    def audit_lines(self) -> list[dict]:
        return read_audit_log(self.repo.root)


@pytest.fixture
def loop(tmp_path, ssh_hosts):
    loop = Loop(tmp_path, ssh_hosts)
    yield loop
    loop.instance.dispose()


@pytest.fixture
def read_only_hosts(start_ssh_host, tmp_path):
    """Real sshd hosts documented as haos and appliance systems."""
    return {
        "haos-1": start_ssh_host(HostKind.WITH_SYSSTAT, name=f"haos-{tmp_path.name}"),
        "appliance-1": start_ssh_host(HostKind.WITH_SYSSTAT, name=f"appliance-{tmp_path.name}"),
    }


@pytest.fixture
def machine_sysstat():
    """Fingerprints of the machine's own iostat and sysstat package, taken before the test."""
    iostat = Path("/usr/bin/iostat")
    before = (file_fingerprint(iostat), installed_version("sysstat"))
    yield lambda: (file_fingerprint(iostat), installed_version("sysstat"))
    assert (file_fingerprint(iostat), installed_version("sysstat")) == before


def read_only_rows(hosts):
    return [
        row("haos-1", "haos", hosts["haos-1"]),
        row("appliance-1", "appliance", hosts["appliance-1"]),
    ]


def tool_state(loop, system, command):
    tools = {tool["command"]: tool for tool in loop.repo.systems()[system]["tools"]}
    return tools[command]


def test_disabled_plans_and_changes_nothing(loop, chroot_hosts, read_only_hosts, machine_sysstat):
    host = chroot_hosts("deb-a")
    loop.write_inventory([row("deb-a", "debian-test", host), *read_only_rows(read_only_hosts)])
    dpkg_status = host.path("var/lib/dpkg/status").read_bytes()

    run_pass(loop.instance, loop.resources(enabled=False))

    plan = loop.provisioning()["deb-a"]
    assert plan["state"] == "planned"
    assert plan["applied"] is False
    assert plan["enabled"] is False
    assert "disabled" in plan["skipped"]
    assert plan["commands"] == [
        ["sudo", "-n", "apt-get", "update", "-q"],
        [*APT_INSTALL, "sysstat"],
    ]
    assert host.path("var/lib/dpkg/status").read_bytes() == dpkg_status
    assert not host.path("usr/bin/iostat").exists()
    assert loop.audit_lines() == []
    metadata = loop.latest_metadata("provisioned_tools")
    assert metadata["enabled"] is False
    assert metadata["result"] == "nothing was installed"
    assert "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install" in metadata["commands"]
    markdown = (loop.repo.root / STATUS_MARKDOWN).read_text()
    assert "provisioning is disabled, so this is a plan only" in markdown


def test_enabled_installs_then_nothing_left(loop, chroot_hosts, read_only_hosts, machine_sysstat):
    host = chroot_hosts("deb-a")
    loop.write_inventory([row("deb-a", "debian-test", host), *read_only_rows(read_only_hosts)])
    resources = loop.resources(enabled=True)

    run_pass(loop.instance, resources)

    outcome = loop.provisioning()["deb-a"]
    assert outcome["state"] == "installed", outcome
    assert outcome["applied"] is True
    version = installed_version("sysstat")
    assert outcome["changes"] == [
        {"package": "sysstat", "version": version, "previous_version": None, "tools": ["iostat"]}
    ]
    assert host.dpkg_status("sysstat") == f"ii {version}"
    assert host.path("usr/bin/iostat").exists()

    (line,) = loop.audit_lines()
    assert line["system"] == "deb-a"
    assert line["package"] == "sysstat"
    assert line["version"] == version
    assert line["run_id"] == loop.latest_run_id("provisioned_tools")
    assert line["enabled_by"] == "test-operator"
    assert line["enabled_via"] == "resource"

    metadata = loop.latest_metadata("provisioned_tools")
    assert metadata["enabled"] is True
    assert metadata["installed"] == 1
    assert metadata["not_provisionable"] == 2
    assert "| haos-1 | not_provisionable |" in metadata["plans"]
    assert "| appliance-1 | not_provisionable |" in metadata["plans"]
    assert "sudo -n apt-get update -q" in metadata["output"]
    for name in ("haos-1", "appliance-1"):
        plan = loop.provisioning()[name]
        assert plan["state"] == "not_provisionable", name
        assert "read-only" in plan["reason"]
        assert plan["commands"] == []
        assert read_only_hosts[name].login_count() == 0, f"a session was opened on {name}"
    markdown = (loop.repo.root / STATUS_MARKDOWN).read_text()
    assert "| haos-1 | not_provisionable |" in markdown

    run_pass(loop.instance, resources)

    iostat = tool_state(loop, "deb-a", "iostat")
    assert iostat["state"] == "installed"
    assert iostat["path"] == "/usr/bin/iostat"
    assert iostat["version"] == version
    assert loop.provisioning()["deb-a"]["state"] == "nothing_to_install"
    assert loop.latest_metadata("provisioned_tools")["result"] == "nothing to install"
    assert len(loop.audit_lines()) == 1


def test_unknown_package_fails_one_system(loop, chroot_hosts, machine_sysstat):
    good = chroot_hosts("deb-good")
    broken = chroot_hosts("deb-broken")
    fallback = chroot_hosts("deb-fallback")
    loop.write_inventory(
        [
            row("deb-good", "debian-test", good),
            row("deb-broken", "broken-map", broken),
            row("deb-fallback", "fallback-map", fallback),
        ]
    )

    run_pass(loop.instance, loop.resources(enabled=True))

    outcomes = loop.provisioning()
    assert outcomes["deb-good"]["state"] == "installed"
    assert outcomes["deb-fallback"]["state"] == "installed"
    assert outcomes["deb-fallback"]["packages"] == ["sysstat"]
    failed = outcomes["deb-broken"]
    assert failed["state"] == "failed"
    assert f"E: Unable to locate package {MISSING_PACKAGE}" in failed["error"]
    assert broken.dpkg_status(MISSING_PACKAGE) == "not known to dpkg"
    assert not broken.path("usr/bin/iostat").exists()
    assert {line["system"] for line in loop.audit_lines()} == {"deb-good", "deb-fallback"}
    markdown = (loop.repo.root / STATUS_MARKDOWN).read_text()
    assert f"E: Unable to locate package {MISSING_PACKAGE}" in markdown


def test_fallback_package_is_installed(loop, chroot_hosts, machine_sysstat):
    host = chroot_hosts("deb-fallback")
    loop.write_inventory([row("deb-fallback", "fallback-map", host)])
    kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True, check=True).stdout
    resources = loop.resources(enabled=False)

    run_pass(loop.instance, resources)
    planned = loop.provisioning()["deb-fallback"]["packages"]
    run_pass(loop.instance, loop.resources(enabled=True))

    assert planned == [f"sysstat-{kernel.strip()}"]
    outcome = loop.provisioning()["deb-fallback"]
    assert outcome["state"] == "installed"
    assert outcome["packages"] == ["sysstat"]
    assert host.dpkg_status("sysstat").startswith("ii ")


def test_rules_sensor_provisions_new_system(loop, chroot_hosts, start_ssh_host, tmp_path):
    first = start_ssh_host(HostKind.WITH_SYSSTAT, name=f"first-{tmp_path.name}")
    loop.write_inventory([row("first", "linux", first)])
    resources = loop.resources(enabled=True)
    run_pass(loop.instance, resources)

    host = chroot_hosts("deb-new")
    loop.write_inventory(
        [row("first", "linux", first), row("deb-new", "debian-test", host)],
        "Add deb-new to the inventory",
    )
    # The per-system pass covers only "first"; deb-new is left to the rules sensor.
    assert run_loop(loop.instance, systems=["first"], resources=resources)
    actions = {(a["system"], a["action"], a["trigger"]) for a in loop.repo.status()["actions"]}
    assert ("deb-new", "provision", "system_added") in actions
    assert ("deb-new", "baseline", "system_added") in actions

    sensor_resources = {"state": resources["state"], "provisioning": resources["provisioning"]}
    context = build_sensor_context(instance=loop.instance, resources=sensor_resources)
    result = rules_sensor(context)

    assert isinstance(result, SensorResult)
    (request,) = result.run_requests
    assert request.partition_key == "deb-new"
    assert request.tags["prep/triggers"] == "system_added"
    from prep_assets.definitions import defs

    executed = materialize(
        list(defs.assets or []),
        instance=loop.instance,
        resources={**(defs.resources or {}), **resources},
        selection=request.asset_selection,
        partition_key=request.partition_key,
        tags=request.tags,
    )
    assert executed.success

    for asset in ("tool_status", "provisioned_tools", "baselines"):
        assert "deb-new" in loop.instance.get_materialized_partitions(AssetKey(asset)), asset
    entry = loop.repo.systems()["deb-new"]
    assert {tool["command"] for tool in entry["tools"]} == {"iostat", "vmstat"}
    assert entry["baseline"]["source"] == "sample", entry["baseline"]
    assert entry["provisioning"]["state"] == "installed"
    assert entry["provisioning"]["trigger"]["triggers"] == "system_added"
    assert host.path("usr/bin/iostat").exists()

    again = rules_sensor(
        build_sensor_context(
            instance=loop.instance, cursor=result.cursor, resources=sensor_resources
        )
    )
    assert isinstance(again, SkipReason)
