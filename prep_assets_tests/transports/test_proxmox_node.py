"""pct exec and qm guest exec over SSH against a test host with stand-in pct and qm.

The stand-ins and the sources of the formats they follow are described in
prep_assets_tests/proxmox_node.py.
"""

import dataclasses

import pytest

from prep_assets.models import AccessMethod, AccessState, System
from prep_assets.transports.base import TransportError
from prep_assets.transports.factory import TransportFactory
from prep_assets.transports.proxmox import PctTransport, QmGuestTransport
from prep_assets_tests.proxmox_node import STANDIN_PROGRAMS, logged_commands, write_guests
from prep_assets_tests.sshhosts import HostKind, SshHost, SshHostPool, link_tools

pytestmark = pytest.mark.integration

TIMEOUT = 3.0


@dataclasses.dataclass
class Pve:
    node: SshHost
    factory: TransportFactory
    systems: dict[str, System]
    guests: dict
    log: object


def guest(name: str, method: AccessMethod, vmid: int, node: str = "pve1") -> System:
    return System(
        name=name,
        type="lxc" if method is AccessMethod.PCT else "vm",
        tier="standard",
        access=method,
        attributes={"node": node, "vmid": str(vmid)},
    )


@pytest.fixture
def pve(ssh_hosts: SshHostPool, start_ssh_host, tmp_path) -> Pve:
    suffix = tmp_path.name[-20:]
    node = start_ssh_host(HostKind.WITH_SYSSTAT, name=f"pve-{suffix}", programs=STANDIN_PROGRAMS)
    full = ssh_hosts.public_dir / f"guest-full-{suffix}"
    link_tools(full, with_sysstat=True)
    guests = {
        "101": {"type": "lxc", "status": "running", "path": str(full)},
        "102": {"type": "lxc", "status": "stopped", "path": str(full)},
        "201": {"type": "qemu", "status": "running", "agent": "running", "path": str(full)},
        "202": {"type": "qemu", "status": "running", "agent": "disabled"},
        "203": {"type": "qemu", "status": "running", "agent": "stopped"},
        "204": {"type": "qemu", "status": "running", "agent": "hang", "hang_seconds": 0.2},
        "205": {"type": "qemu", "status": "stopped", "agent": "running"},
    }
    log = write_guests(node.bin_dir, "pve1", guests)
    systems = [
        System(
            name="pve1",
            type="proxmox-host",
            tier="critical",
            access=AccessMethod.SSH,
            address=node.address,
            port=node.port,
            user=node.user,
            credentials="test-key",
        ),
        System(
            name="nas",
            type="debian",
            tier="standard",
            access=AccessMethod.SSH,
            address=ssh_hosts["with_sysstat"].address,
            port=ssh_hosts["with_sysstat"].port,
            user=node.user,
            credentials="test-key",
        ),
        System(
            name="pve-down",
            type="proxmox-host",
            tier="critical",
            access=AccessMethod.SSH,
            address=ssh_hosts["closed_port"].address,
            port=ssh_hosts["closed_port"].port,
            user=node.user,
            credentials="test-key",
        ),
    ]
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
        timeout=TIMEOUT,
        systems=systems,
        ssh_config="",
    )
    return Pve(node, factory, {system.name: system for system in systems}, guests, log)


def run(pve: Pve, system: System, argv: list[str]):
    transport = pve.factory(system)
    try:
        return transport.run(argv, TIMEOUT)
    finally:
        transport.close()


def failure(pve: Pve, system: System) -> TransportError:
    with pytest.raises(TransportError) as caught:
        run(pve, system, ["true"])
    return caught.value


def test_pct_runs_argv_in_container(pve: Pve):
    system = guest("ct101", AccessMethod.PCT, 101)

    result = run(pve, system, ["sh", "-c", 'printf "%s|" "$@"; exit 3', "sh", "a b", "$HOME;x"])

    assert isinstance(pve.factory(system), PctTransport)
    assert result.exit_code == 3
    assert result.stdout == "a b|$HOME;x|"
    assert logged_commands(pve.log) == [
        [
            "pct",
            "exec",
            "101",
            "--",
            "sh",
            "-c",
            'printf "%s|" "$@"; exit 3',
            "sh",
            "a b",
            "$HOME;x",
        ]
    ]


def test_pct_container_stopped(pve: Pve):
    error = failure(pve, guest("ct102", AccessMethod.PCT, 102))

    assert error.state is AccessState.UNREACHABLE
    assert error.message == (
        "container 102 on Proxmox node pve1 is not running; start it with pct start 102, "
        "or mark it unmanaged"
    )


def test_pct_container_missing(pve: Pve):
    error = failure(pve, guest("ct109", AccessMethod.PCT, 109))

    assert error.state is AccessState.NOT_FOUND
    assert error.message.startswith(
        "container 109 does not exist on Proxmox node pve1 (Configuration file "
        "'nodes/pve1/lxc/109.conf' does not exist)"
    )


def test_pct_node_without_pct(pve: Pve):
    error = failure(pve, guest("ct101", AccessMethod.PCT, 101, node="nas"))

    assert error.state is AccessState.ERROR
    assert error.message.startswith("Proxmox node nas has no pct command (")


def test_pct_node_unreachable(pve: Pve):
    error = failure(pve, guest("ct101", AccessMethod.PCT, 101, node="pve-down"))

    assert error.state is AccessState.JUMP_HOST_UNREACHABLE
    assert error.message.startswith("Proxmox node pve-down unreachable: connection to ")


def test_qm_parses_guest_exec_json(pve: Pve):
    system = guest("vm201", AccessMethod.QM, 201)

    result = run(pve, system, ["sh", "-c", 'echo "out $1"; echo err >&2; exit 4', "sh", "x;y"])

    assert isinstance(pve.factory(system), QmGuestTransport)
    assert result.exit_code == 4
    assert result.stdout == "out x;y\n"
    assert result.stderr == "err\n"
    assert logged_commands(pve.log)[0][:7] == ["qm", "guest", "exec", "201", "--timeout", "3", "--"]


def test_qm_command_slower_than_timeout(pve: Pve):
    with pytest.raises(TransportError) as caught:
        run(pve, guest("vm201", AccessMethod.QM, 201), ["sleep", "10"])

    assert caught.value.state is AccessState.TIMED_OUT
    assert caught.value.message.startswith("the command did not finish within 3 s in VM 201")


@pytest.mark.parametrize(
    ("vmid", "state", "message"),
    [
        (
            202,
            AccessState.AGENT_MISSING,
            "VM 202 has no QEMU guest agent configured (No QEMU guest agent configured); enable "
            "it with qm set 202 --agent enabled=1, install qemu-guest-agent in the VM and "
            "restart the VM",
        ),
        (
            203,
            AccessState.AGENT_MISSING,
            "the QEMU guest agent of VM 203 is not running; install and start it in the VM "
            "(apt install qemu-guest-agent, then systemctl enable --now qemu-guest-agent)",
        ),
        (
            204,
            AccessState.TIMED_OUT,
            "the QEMU guest agent of VM 204 did not answer (VM 204 qmp command 'guest-exec' "
            "failed - got timeout); check that qemu-guest-agent runs in the VM (systemctl "
            "status qemu-guest-agent) and that the VM is not frozen or overloaded",
        ),
        (
            205,
            AccessState.UNREACHABLE,
            "VM 205 on Proxmox node pve1 is not running; start it with qm start 205, or mark "
            "it unmanaged",
        ),
        (
            299,
            AccessState.NOT_FOUND,
            "VM 299 does not exist on Proxmox node pve1 (Configuration file "
            "'nodes/pve1/qemu-server/299.conf' does not exist); fix the vmid or node in the "
            "inventory, the VM may have moved to another node",
        ),
    ],
)
def test_qm_failure_modes(pve: Pve, vmid: int, state: AccessState, message: str):
    error = failure(pve, guest(f"vm{vmid}", AccessMethod.QM, vmid))

    assert error.state is state
    assert error.message == message
