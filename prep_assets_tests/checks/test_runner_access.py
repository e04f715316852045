"""check_systems: the per-Proxmox-node limit and read-only systems that never get a command."""

import threading
import time
from collections import Counter

import pytest

from prep_assets.checks.runner import CheckSettings, check_systems
from prep_assets.models import AccessMethod, CommandResult, System, ToolSpec
from prep_assets.transports.factory import TransportFactory
from prep_assets_tests.sshhosts import HostKind, SshHostPool

SPECS = [ToolSpec("vmstat")]


class CountingOpener:
    """Open transports that hold each command for a while and count how many run per node."""

    def __init__(self, hold_seconds: float) -> None:
        self.hold_seconds = hold_seconds
        self.lock = threading.Lock()
        self.running: Counter[str] = Counter()
        self.max_per_node_seen: Counter[str] = Counter()
        self.max_overall_seen = 0

    def __call__(self, system: System):
        opener = self
        node = system.attributes.get("node", system.name)

        class HoldingTransport:
            def run(self, argv, timeout):
                with opener.lock:
                    opener.running[node] += 1
                    opener.max_per_node_seen[node] = max(
                        opener.max_per_node_seen[node], opener.running[node]
                    )
                    opener.max_overall_seen = max(
                        opener.max_overall_seen, sum(opener.running.values())
                    )
                time.sleep(opener.hold_seconds)
                with opener.lock:
                    opener.running[node] -= 1
                return CommandResult(0, "tool\tvmstat\t/usr/bin/vmstat\n", "", opener.hold_seconds)

            def close(self):
                pass

        return HoldingTransport()


def guest(name: str, node: str) -> System:
    return System(
        name=name,
        type="lxc",
        tier="standard",
        access=AccessMethod.PCT,
        attributes={"node": node, "vmid": "101"},
    )


def test_node_limit_caps_guests_per_node():
    systems = [guest(f"a{index}", "pve-a") for index in range(6)]
    systems += [guest(f"b{index}", "pve-b") for index in range(6)]
    opener = CountingOpener(hold_seconds=0.2)

    checks = check_systems(
        systems, lambda system: SPECS, opener, CheckSettings(max_workers=8, max_per_node=2)
    )

    assert {check.access.state.value for check in checks.values()} == {"reachable"}
    assert opener.max_per_node_seen == {"pve-a": 2, "pve-b": 2}
    # Guests waiting for their node hold no worker, so both nodes work at once.
    assert opener.max_overall_seen == 4


def test_node_limit_includes_the_node_itself():
    node = System(name="pve-a", type="proxmox-host", tier="critical", access=AccessMethod.SSH)
    systems = [node, guest("a0", "pve-a"), guest("a1", "pve-a")]
    opener = CountingOpener(hold_seconds=0.2)

    check_systems(systems, lambda system: SPECS, opener, CheckSettings(max_per_node=1))

    assert opener.max_per_node_seen == {"pve-a": 1}


def test_node_limit_none_leaves_max_workers():
    systems = [guest(f"a{index}", "pve-a") for index in range(5)]
    opener = CountingOpener(hold_seconds=0.2)

    check_systems(
        systems, lambda system: SPECS, opener, CheckSettings(max_workers=5, max_per_node=None)
    )

    assert opener.max_per_node_seen == {"pve-a": 5}


def test_node_limit_rejects_zero():
    with pytest.raises(ValueError, match="max_per_node must be at least 1"):
        check_systems(
            [guest("a0", "pve-a")],
            lambda s: SPECS,
            CountingOpener(0),
            CheckSettings(max_per_node=0),
        )


@pytest.mark.integration
@pytest.mark.parametrize("system_type", ["haos", "appliance", "unmanaged"])
def test_read_only_types_get_no_command(system_type: str, ssh_hosts: SshHostPool, start_ssh_host):
    host = start_ssh_host(HostKind.WITH_SYSSTAT, name=f"read-only-{system_type}")
    system = System(
        name=f"box-{system_type}",
        type=system_type,
        tier="standard",
        access=AccessMethod.SSH,
        address=host.address,
        port=host.port,
        user=host.user,
        credentials="test-key",
    )
    opened: list[str] = []
    factory = TransportFactory(
        {
            "test-key": {
                "name": "test-key",
                "kind": "ssh-key",
                "scheme": "file",
                "target": str(ssh_hosts.client_key.private_key_path),
            }
        },
        known_hosts=str(ssh_hosts.known_hosts_path),
        timeout=3,
        ssh_config="",
    )

    def open_transport(system: System):
        opened.append(system.name)
        return factory(system)

    checks = check_systems([system], lambda s: SPECS, open_transport, CheckSettings(timeout=3))

    access = checks[system.name].access
    assert (access.state.value, access.method) == ("reachable", "tcp")
    assert opened == []
    # sshd logs the accepted connection just after the probe closed it.
    deadline = time.monotonic() + 5
    while host.connection_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host.connection_count() == 1
    assert host.login_count() == 0
