"""Provisioning inside Proxmox guests: an LXC container with pct exec, a VM with qm guest exec.

The node ``pve1`` is a real sshd test host whose PATH has the stand-in ``pct``
and ``qm`` of prep_assets_tests/proxmox_node.py. Each test runs once for
container ct101 (access ``pct``) and once for VM vm201 (access ``qm``). The
guest's file system is a root prepared like a chroot host's root
(chroot_hosts.py): an overlay over this machine's root in which sysstat was
purged, with a local flat apt repository that contains sysstat's .deb. The
stand-ins run ``pct exec 101 -- ARGV`` and ``qm guest exec 201 --timeout N --
ARGV`` as ``sudo -n chroot <root> env -i PATH=... ARGV``, so apt-get and dpkg
run as root inside the overlay, as commands in a real container run as its root
user and the QEMU guest agent runs them as the VM's root user.

Why sudo: the node host logs in as the unprivileged test user, as every sshd
test host of sshhosts.py does, and chroot needs root. For the length of each
test, a sudoers rule in /etc/sudoers.d on this machine lets that user run only
``chroot <this root> env -i ...`` as root. The root lives in pytest's temp
directory, which only root may write to, so the rule cannot open another
directory to the user even if a killed test leaves it behind.
"""

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterInstance

from prep_assets.defs.provisioning import ProvisioningResource
from prep_assets.state import StateStore
from prep_assets_tests.loop_helpers import (
    INVENTORY,
    InfraRepo,
    credentials_text,
    latest_metadata,
    latest_run_id,
    loop_resources,
    read_audit_log,
    run_pass,
)
from prep_assets_tests.provisioning.chroot_hosts import (
    ChrootRoot,
    file_fingerprint,
    installed_version,
)
from prep_assets_tests.proxmox_node import (
    STANDIN_PROGRAMS,
    guest_root_sudo_rule,
    logged_commands,
    write_guests,
)
from prep_assets_tests.sshhosts import HostKind, SshHost

pytestmark = pytest.mark.integration

# The short baseline sample runs vmstat for about 5 s, so commands get 10 s.
TIMEOUT = 10.0

TOOLS_MAP = """\
# Tools map

## default

| Tool | apt |
|------|-----|
| iostat | sysstat |
| vmstat | procps |
"""

APT_UPDATE = ["apt-get", "update", "-q"]
# Commands through pct and qm run as root in the guest, so the plan has no sudo prefix.
APT_INSTALL = [
    "env",
    "DEBIAN_FRONTEND=noninteractive",
    "apt-get",
    "install",
    "-y",
    "-q",
    "--no-install-recommends",
    "-o",
    "APT::Cmd::Pattern-Only=true",
    "sysstat",
]


@dataclass(frozen=True)
class GuestKind:
    """One kind of Proxmox guest: its inventory row values and the stand-in call that reaches it."""

    access: str
    name: str
    # The inventory type, which is also the guest type in pve-guests.json: lxc or qemu.
    type: str
    vmid: str
    # Timeout that qm passes to the guest agent for apt-get, None for pct, which has none.
    install_timeout: str | None

    def guest_command(self, call: list[str]) -> tuple[str | None, list[str]]:
        """Return the agent timeout and the guest's argument vector of a logged pct or qm call."""
        if self.access == "pct":
            prefix = ["pct", "exec", self.vmid, "--"]
            assert call[: len(prefix)] == prefix, call
            return None, call[len(prefix) :]
        prefix = ["qm", "guest", "exec", self.vmid, "--timeout"]
        assert call[: len(prefix)] == prefix, call
        assert call[len(prefix) + 1] == "--", call
        return call[len(prefix)], call[len(prefix) + 2 :]


CONTAINER = GuestKind("pct", "ct101", "lxc", "101", install_timeout=None)
# qm passes the provisioning command timeout, ProvisioningResource's default 900 s, on to
# the guest agent, so apt-get gets far more than the access timeout of 10 s.
VM = GuestKind("qm", "vm201", "qemu", "201", install_timeout="900")


@dataclass
class ProxmoxLoop:
    """An infra repo that documents pve1 and one guest of it, with a Dagster instance."""

    repo: InfraRepo
    instance: DagsterInstance
    known_hosts: Path
    node: SshHost
    kind: GuestKind
    guest: ChrootRoot
    pve_log: Path

    def resources(self, enabled: bool) -> dict:
        provisioning = ProvisioningResource(enabled=enabled, enabled_by="test-operator")
        return loop_resources(self.repo, self.known_hosts, TIMEOUT, provisioning)

    def provisioning(self) -> dict:
        return {entry["name"]: entry["provisioning"] for entry in self.repo.status()["systems"]}

    def stored_value(self, asset: str, partition: str) -> dict:
        """Return the stored asset value, which has keys that the status document leaves out."""
        store = StateStore(Path(self.instance.storage_directory()) / "prep_state")
        return store.read(asset, partition)

    def latest_metadata(self, asset: str) -> dict:
        return latest_metadata(self.instance, asset)

    def latest_run_id(self, asset: str) -> str:
        return latest_run_id(self.instance, asset)

    def audit_lines(self) -> list[dict]:
        return read_audit_log(self.repo.root)

    def guest_calls(self) -> list[tuple[str | None, list[str]]]:
        """Return the agent timeout and argument vector of every command the guest ran so far."""
        return [self.kind.guest_command(call) for call in logged_commands(self.pve_log)]

    def guest_commands(self) -> list[list[str]]:
        """Return the argument vectors that the stand-in pct or qm ran in the guest so far."""
        return [argv for _timeout, argv in self.guest_calls()]


def inventory_text(node: SshHost, kind: GuestKind) -> str:
    return (
        "# System inventory\n\n## Managed\n\n"
        "| Name | Type | Tier | Address | Port | Access | User | Credentials | Node | VMID |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        f"| pve1 | proxmox-host | critical | {node.address} | {node.port} | ssh | {node.user} "
        "| test-key | | |\n"
        f"| {kind.name} | {kind.type} | standard | | | {kind.access} | | | pve1 | {kind.vmid} |\n"
    )


def package_status(root: ChrootRoot, package: str) -> str:
    """Return dpkg's Status field of ``package`` inside ``root``, such as "install ok installed"."""
    completed = subprocess.run(
        ["chroot", str(root.merged), "dpkg-query", "-W", "-f=${Status}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    return completed.stdout if completed.returncode == 0 else "not known to dpkg"


def tool_state(loop: ProxmoxLoop, system: str, command: str) -> dict:
    tools = {tool["command"]: tool for tool in loop.repo.systems()[system]["tools"]}
    return tools[command]


@pytest.fixture(params=[CONTAINER, VM], ids=lambda kind: kind.access)
def proxmox_loop(request, ssh_hosts, start_ssh_host, chroot_roots, tmp_path):
    kind: GuestKind = request.param
    guest = chroot_roots(kind.name)
    node = start_ssh_host(
        HostKind.WITH_SYSSTAT, name=f"pve-{tmp_path.name[-20:]}", programs=STANDIN_PROGRAMS
    )
    pve_log = write_guests(
        node.bin_dir,
        "pve1",
        {kind.vmid: {"type": kind.type, "status": "running", "root": str(guest.merged)}},
    )

    repo = InfraRepo(tmp_path / "infra")
    repo.write("docs/reference/tools-map.md", TOOLS_MAP)
    repo.write(
        "docs/reference/credentials-map.md",
        credentials_text(
            [f"| test-key | ssh-key | file:{ssh_hosts.client_key.private_key_path} |"]
        ),
    )
    repo.write(INVENTORY, inventory_text(node, kind))
    repo.commit(f"Document pve1 and its guest {kind.name}")
    (tmp_path / "dagster_home").mkdir()
    instance = DagsterInstance.local_temp(str(tmp_path / "dagster_home"))

    try:
        with guest_root_sudo_rule(guest.merged):
            yield ProxmoxLoop(
                repo, instance, ssh_hosts.known_hosts_path, node, kind, guest, pve_log
            )
    finally:
        instance.dispose()


@pytest.fixture
def machine_sysstat():
    """Fail the test if the machine's own iostat or sysstat package changed during it."""
    iostat = Path("/usr/bin/iostat")
    before = (file_fingerprint(iostat), installed_version("sysstat"))
    yield
    assert (file_fingerprint(iostat), installed_version("sysstat")) == before


def test_guest_plan_only_when_disabled(proxmox_loop, machine_sysstat):
    kind = proxmox_loop.kind
    guest = proxmox_loop.guest
    dpkg_status = guest.path("var/lib/dpkg/status").read_bytes()

    run_pass(proxmox_loop.instance, proxmox_loop.resources(enabled=False))

    plan = proxmox_loop.provisioning()[kind.name]
    assert plan["state"] == "planned", plan
    assert plan["applied"] is False
    assert plan["enabled"] is False
    assert plan["skipped"] == "provisioning is disabled, so this is a plan only"
    assert plan["package_manager"] == "apt"
    assert plan["packages"] == ["sysstat"]
    assert plan["commands"] == [APT_UPDATE, APT_INSTALL]
    assert proxmox_loop.stored_value("provisioned_tools", kind.name)["sudo"] is False
    assert tool_state(proxmox_loop, kind.name, "iostat")["state"] == "missing"

    commands = proxmox_loop.guest_commands()
    assert commands, f"no command reached guest {kind.vmid} through {kind.access}"
    assert [command for command in commands if "apt-get" in command] == []
    assert guest.path("var/lib/dpkg/status").read_bytes() == dpkg_status
    assert not guest.path("usr/bin/iostat").exists()
    assert proxmox_loop.audit_lines() == []


def test_guest_installs_then_nothing_left(proxmox_loop, machine_sysstat):
    kind = proxmox_loop.kind
    guest = proxmox_loop.guest
    resources = proxmox_loop.resources(enabled=True)
    version = installed_version("sysstat")
    # dpkg keeps a purged package's entry, marked as not installed.
    assert package_status(guest, "sysstat") == "unknown ok not-installed"

    run_pass(proxmox_loop.instance, resources)

    entry = proxmox_loop.provisioning()[kind.name]
    assert entry["state"] == "installed", entry
    assert entry["applied"] is True
    assert entry["enabled"] is True
    assert entry["commands"] == [APT_UPDATE, APT_INSTALL]
    assert entry["changes"] == [
        {"package": "sysstat", "version": version, "previous_version": None, "tools": ["iostat"]}
    ]
    outcome = proxmox_loop.stored_value("provisioned_tools", kind.name)
    assert outcome["state"] == "installed"
    assert outcome["sudo"] is False
    assert [step["command"] for step in outcome["steps"]] == [APT_UPDATE, APT_INSTALL]
    assert [step["exit_code"] for step in outcome["steps"]] == [0, 0]
    assert outcome["verified"] == {"iostat": "installed"}
    assert package_status(guest, "sysstat") == "install ok installed"
    assert guest.dpkg_status("sysstat") == f"ii {version}"
    assert guest.path("usr/bin/iostat").exists()
    assert proxmox_loop.provisioning()["pve1"]["state"] == "nothing_to_install"

    assert proxmox_loop.audit_lines() == [
        {
            "time": outcome["finished_at"],
            "run_id": proxmox_loop.latest_run_id("provisioned_tools"),
            "system": kind.name,
            "package": "sysstat",
            "version": version,
            "previous_version": None,
            "package_manager": "apt",
            "tools": ["iostat"],
            "enabled_by": "test-operator",
            "enabled_via": "resource",
        }
    ]

    calls = proxmox_loop.guest_calls()
    apt_calls = [(timeout, argv) for timeout, argv in calls if "apt-get" in argv]
    assert apt_calls == [
        (kind.install_timeout, APT_UPDATE),
        (kind.install_timeout, APT_INSTALL),
    ]
    metadata = proxmox_loop.latest_metadata("provisioned_tools")
    assert metadata["installed"] == 1

    run_pass(proxmox_loop.instance, resources)

    iostat = tool_state(proxmox_loop, kind.name, "iostat")
    assert iostat["state"] == "installed"
    assert iostat["path"] == "/usr/bin/iostat"
    assert iostat["version"] == version
    plan = proxmox_loop.provisioning()[kind.name]
    assert plan["state"] == "nothing_to_install"
    assert plan["commands"] == []
    assert proxmox_loop.latest_metadata("provisioned_tools")["result"] == "nothing to install"
    assert len(proxmox_loop.audit_lines()) == 1
    later = proxmox_loop.guest_commands()[len(calls) :]
    assert later, f"the second pass sent no command to guest {kind.vmid}"
    assert [command for command in later if "apt-get" in command] == []
