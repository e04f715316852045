"""qm guest exec through the Proxmox VE API (proxmoxer) against fakepve on 127.0.0.1.

See prep_assets_tests/fake_pve.py for what the tests add to fakepve.
"""

import dataclasses

import pytest

from prep_assets.models import AccessMethod, AccessState, System
from prep_assets.transports.base import TransportError
from prep_assets.transports.factory import TransportFactory
from prep_assets.transports.proxmox import QmApiTransport, parse_api_token
from prep_assets_tests.fake_pve import ServedPve
from prep_assets_tests.sshhosts import SshHostPool, link_tools

pytestmark = pytest.mark.integration

TOKEN_ID = "prep@pve!check"
TOKEN_SECRET = "0b6c1f52-34d5-4f2b-9a57-2f1c9c6f1e11"
TIMEOUT = 3.0


@dataclasses.dataclass
class Cluster:
    served: ServedPve
    factory: TransportFactory


def node_row(served: ServedPve, **attributes: str) -> System:
    return System(
        name="pve1",
        type="proxmox-host",
        tier="critical",
        access=AccessMethod.SSH,
        address="127.0.0.1",
        attributes={"api-port": str(served.port), "api-ca": served.cafile, **attributes},
    )


def vm(vmid: int, credentials: str = "pve-token") -> System:
    return System(
        name=f"vm{vmid}",
        type="vm",
        tier="standard",
        access=AccessMethod.QM_API,
        credentials=credentials,
        attributes={"node": "pve1", "vmid": str(vmid)},
    )


def make_factory(served: ServedPve, monkeypatch, **node_attributes: str) -> TransportFactory:
    monkeypatch.setenv("PREP_TEST_PVE_TOKEN", f"{TOKEN_ID}={TOKEN_SECRET}")
    monkeypatch.setenv("PREP_TEST_BAD_TOKEN", f"{TOKEN_ID}=wrong")
    return TransportFactory(
        {
            "pve-token": {
                "name": "pve-token",
                "kind": "api-token",
                "scheme": "env",
                "target": "PREP_TEST_PVE_TOKEN",
            },
            "bad-token": {
                "name": "bad-token",
                "kind": "api-token",
                "scheme": "env",
                "target": "PREP_TEST_BAD_TOKEN",
            },
        },
        known_hosts="/nonexistent/known_hosts",
        timeout=TIMEOUT,
        systems=[node_row(served, **node_attributes)],
        ssh_config="",
    )


@pytest.fixture
def cluster(fake_pve: ServedPve, ssh_hosts: SshHostPool, tmp_path, monkeypatch) -> Cluster:
    guest_bin = ssh_hosts.public_dir / f"api-guest-{tmp_path.name[-20:]}"
    link_tools(guest_bin, with_sysstat=True)
    pve = fake_pve.pve
    pve.apitokens[TOKEN_ID] = TOKEN_SECRET
    agent = {"agent": "1"}
    pve.add_vm(201, "works", node="pve1", status="running", config=agent).agent = {}
    pve.add_vm(202, "no-agent", node="pve1", status="running")
    pve.add_vm(203, "agent-down", node="pve1", status="running", config=agent)
    hangs = pve.add_vm(204, "agent-hangs", node="pve1", status="running", config=agent)
    hangs.agent, hangs.agent_hangs = {}, True
    pve.add_vm(205, "command-hangs", node="pve1", status="running", config=agent).agent = {}
    pve.add_vm(206, "forbidden", node="pve1", status="running", config=agent).agent = {}
    pve.add_vm(207, "stopped", node="pve1", status="stopped", config=agent).agent = {}
    pve.guest_paths.update({201: str(guest_bin), 206: str(guest_bin)})
    pve.never_exits.add(205)
    # Proxmox VE 9 needs VM.GuestAgent.Unrestricted for exec; VM 206 gets only Audit.
    for vmid in (201, 202, 203, 204, 205, 207, 299):
        pve.grant(TOKEN_ID, f"/vms/{vmid}", "VM.Audit", "VM.GuestAgent.Unrestricted")
    pve.grant(TOKEN_ID, "/vms/206", "VM.Audit", "VM.GuestAgent.Audit")
    return Cluster(fake_pve, make_factory(fake_pve, monkeypatch))


def run(factory: TransportFactory, system: System, argv: list[str]):
    transport = factory(system)
    try:
        return transport.run(argv, TIMEOUT)
    finally:
        transport.close()


def failure(factory: TransportFactory, system: System) -> TransportError:
    with pytest.raises(TransportError) as caught:
        run(factory, system, ["true"])
    return caught.value


def test_api_runs_argv_in_vm(cluster: Cluster):
    argv = ["/bin/sh", "-c", 'printf "%s|" "$@"; echo warn >&2; exit 5', "sh", "a b", "$(id)"]

    transport = cluster.factory(vm(201))
    result = run(cluster.factory, vm(201), argv)

    assert isinstance(transport, QmApiTransport)
    assert transport.endpoint.verify == cluster.served.cafile
    assert result.exit_code == 5
    assert result.stdout == "a b|$(id)|"
    assert result.stderr == "warn\n"
    posted = [
        body
        for method, path, body in cluster.served.pve.requests
        if method == "POST" and path.endswith("/nodes/pve1/qemu/201/agent/exec")
    ]
    assert len(posted) == 1


def test_api_token_never_in_repr(cluster: Cluster):
    transport = cluster.factory(vm(201))

    assert TOKEN_SECRET not in repr(transport.endpoint)
    assert TOKEN_SECRET not in repr(parse_api_token(f"{TOKEN_ID}={TOKEN_SECRET}"))


@pytest.mark.parametrize(
    ("vmid", "state", "start"),
    [
        (
            202,
            AccessState.AGENT_MISSING,
            "VM 202 has no QEMU guest agent configured (No QEMU guest agent configured); "
            "enable it with qm set 202 --agent enabled=1",
        ),
        (
            203,
            AccessState.AGENT_MISSING,
            "the QEMU guest agent of VM 203 is not running; install and start it in the VM",
        ),
        (
            204,
            AccessState.TIMED_OUT,
            "the QEMU guest agent of VM 204 did not answer (VM 204 qmp command 'guest-ping' "
            "failed - got timeout)",
        ),
        (
            205,
            AccessState.TIMED_OUT,
            "the command did not finish within 3 s in VM 205 (guest agent pid 5001); it keeps "
            "running in the guest",
        ),
        (
            206,
            AccessState.PERMISSION_DENIED,
            "API token prep@pve!check may not run commands in VM 206 (Permission check failed "
            "(/vms/206, VM.GuestAgent.Unrestricted)). Proxmox VE 9 needs "
            "VM.GuestAgent.Unrestricted on /vms/206 (Proxmox VE 8: VM.Monitor)",
        ),
        (
            207,
            AccessState.UNREACHABLE,
            "VM 207 on Proxmox node pve1 is not running; start it with qm start 207",
        ),
        (
            299,
            AccessState.NOT_FOUND,
            "VM 299 does not exist on Proxmox node pve1 (Configuration file "
            "'nodes/pve1/qemu-server/299.conf' does not exist)",
        ),
    ],
)
def test_api_failure_modes(cluster: Cluster, vmid: int, state: AccessState, start: str):
    error = failure(cluster.factory, vm(vmid))

    assert error.state is state
    assert error.message.startswith(start), error.message


def test_api_command_hang_bounded_by_timeout(cluster: Cluster):
    import time

    started = time.monotonic()
    failure(cluster.factory, vm(205))
    elapsed = time.monotonic() - started

    assert TIMEOUT <= elapsed <= TIMEOUT + 1.5


def test_api_rejected_token(cluster: Cluster):
    error = failure(cluster.factory, vm(201, credentials="bad-token"))

    assert error.state is AccessState.AUTH_FAILED
    assert error.message.startswith(
        f"the Proxmox API at https://127.0.0.1:{cluster.served.port} rejected API token "
        "prep@pve!check"
    )
    assert "wrong" not in error.message


def test_api_tls_checked_against_system_store(cluster: Cluster, monkeypatch):
    factory = make_factory(cluster.served, monkeypatch, **{"api-ca": ""})

    error = failure(factory, vm(201))

    assert error.state is AccessState.ERROR
    assert error.message.startswith(
        f"TLS certificate of https://127.0.0.1:{cluster.served.port} could not be verified "
        "against the system's trust store"
    )


def test_api_tls_check_disabled_per_cluster(cluster: Cluster, monkeypatch):
    factory = make_factory(cluster.served, monkeypatch, **{"api-tls-verify": "no", "api-ca": ""})

    result = run(factory, vm(201), ["printf", "%s", "unverified"])

    assert result.stdout == "unverified"
