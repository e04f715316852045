"""One loop pass over a system of every access method, and over every access failure mode.

Real parts only: OpenSSH hosts on loopback addresses and in network namespaces
(the 2-hop jump chain), a Proxmox node host with stand-in pct and qm
(proxmox_node.py), fakepve with executing guest agents (fake_pve.py) and the
loopback Kubernetes API (kubernetes_server.py).
"""

import dataclasses
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance

from prep_assets import pipeline
from prep_assets.checks.tools import tool_check_command
from prep_assets.inventory.loader import load_docs
from prep_assets.models import ToolSpec
from prep_assets.transports.factory import TransportFactory
from prep_assets_tests.fake_pve import ServedPve
from prep_assets_tests.kubernetes_server import FakePod, ServedKubernetes
from prep_assets_tests.loop_helpers import (
    INVENTORY,
    TOOLS_MAP,
    InfraRepo,
    credentials_text,
    inventory_text,
    loop_resources,
    run_pass,
)
from prep_assets_tests.netns import Namespaces
from prep_assets_tests.proxmox_node import STANDIN_PROGRAMS, write_guests
from prep_assets_tests.sshhosts import HostKind, SshHost, SshHostPool, link_tools

pytestmark = pytest.mark.integration

TIMEOUT = 3.0
TOKEN_ID = "prep@pve!check"
TOKEN_SECRET = "6a1f0c7e-2b4d-4c8e-9f10-3d5e7a9b1c2d"
COLUMNS = [
    "Name",
    "Type",
    "Tier",
    "Address",
    "Port",
    "Access",
    "User",
    "Credentials",
    "Jump",
    "Node",
    "VMID",
    "Namespace",
    "Pod",
    "Api port",
    "Api ca",
]


def row(name: str, type_: str, access: str, **values: object) -> str:
    cells = {"name": name, "type": type_, "tier": "standard", "access": access}
    cells.update({key.replace("_", " "): str(value) for key, value in values.items()})
    return "| " + " | ".join(cells.get(column.lower(), "") for column in COLUMNS) + " |"


def table(rows: list[str]) -> str:
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    return header + "".join(line + "\n" for line in rows)


def ssh_values(host: SshHost) -> dict[str, object]:
    return {
        "address": host.address,
        "port": host.port,
        "user": host.user,
        "credentials": "test-key",
    }


def literal_jump(host: SshHost) -> str:
    return f"{host.user}@{host.address}:{host.port}"


@dataclasses.dataclass
class Matrix:
    repo: InfraRepo
    instance: DagsterInstance
    resources: dict
    factory: TransportFactory
    hosts: dict[str, SshHost]
    pve: ServedPve
    kubernetes: ServedKubernetes


@pytest.fixture(scope="module")
def matrix(ssh_hosts: SshHostPool, tmp_path_factory) -> Iterator[Matrix]:
    root = tmp_path_factory.mktemp("access-matrix")
    suffix = root.name[-12:]
    namespaces = Namespaces(f"prep-matrix-{secrets.token_hex(2)}")
    started: list[str] = []
    pve = kubernetes = None
    monkeypatch = pytest.MonkeyPatch()
    try:
        namespace_a = namespaces.add("a")
        namespace_b = namespaces.add("b")
        link_a = namespaces.link(None, namespace_a)
        link_b = namespaces.link(namespace_a, namespace_b)

        def start(kind: HostKind, name: str, **options) -> SshHost:
            host = ssh_hosts.start_host(kind, name=f"{name}-{suffix}", **options)
            started.append(host.name)
            return host

        hosts = {
            "ssh": start(HostKind.WITH_SYSSTAT, "m-ssh"),
            "jump1": start(HostKind.WITH_SYSSTAT, "m-jump1", allow_tcp_forwarding=True),
            "jump2": start(
                HostKind.WITH_SYSSTAT,
                "m-jump2",
                namespace=namespace_a,
                address=link_a.far_address,
                allow_tcp_forwarding=True,
            ),
            "behind": start(
                HostKind.WITHOUT_SYSSTAT,
                "m-behind",
                namespace=namespace_b,
                address=link_b.far_address,
            ),
            "pve": start(HostKind.WITH_SYSSTAT, "m-pve", programs=STANDIN_PROGRAMS),
            "appliance": start(HostKind.WITH_SYSSTAT, "m-appliance"),
        }
        guest_bin = ssh_hosts.public_dir / f"matrix-guest-{suffix}"
        link_tools(guest_bin, with_sysstat=True)
        write_guests(
            hosts["pve"].bin_dir,
            "pve1",
            {
                "101": {"type": "lxc", "status": "running", "path": str(guest_bin)},
                "201": {
                    "type": "qemu",
                    "status": "running",
                    "agent": "running",
                    "path": str(guest_bin),
                },
            },
        )

        pve = ServedPve(root)
        pve.pve.apitokens[TOKEN_ID] = TOKEN_SECRET
        agent = {"agent": "1"}
        pve.pve.add_vm(301, "api-works", node="pve-api", status="running", config=agent).agent = {}
        pve.pve.add_vm(302, "api-no-agent", node="pve-api", status="running")
        pve.pve.add_vm(
            303, "api-forbidden", node="pve-api", status="running", config=agent
        ).agent = {}
        hangs = pve.pve.add_vm(304, "api-hangs", node="pve-api", status="running", config=agent)
        hangs.agent, hangs.agent_hangs = {}, True
        pve.pve.guest_paths[301] = str(guest_bin)
        for vmid in (301, 302, 304):
            pve.pve.grant(TOKEN_ID, f"/vms/{vmid}", "VM.Audit", "VM.GuestAgent.Unrestricted")
        pve.pve.grant(TOKEN_ID, "/vms/303", "VM.Audit", "VM.GuestAgent.Audit")

        kubernetes = ServedKubernetes()
        kubernetes.cluster.pods[("apps", "web-0")] = FakePod(["web"], str(guest_bin))
        kubeconfig = kubernetes.kubeconfig(root / "kubeconfig")
        monkeypatch.setenv("PREP_TEST_PVE_TOKEN", f"{TOKEN_ID}={TOKEN_SECRET}")

        wrong = ssh_hosts["wrong_host_key"]
        closed = ssh_hosts["closed_port"]
        appliance = hosts["appliance"]
        managed = [
            row("local-1", "linux", "local"),
            row("ssh-1", "linux", "ssh", **ssh_values(hosts["ssh"])),
            row("jump1", "linux", "ssh", **ssh_values(hosts["jump1"])),
            row("jump2", "linux", "ssh", jump="jump1", **ssh_values(hosts["jump2"])),
            row("behind-jumps", "linux", "ssh", jump="jump1,jump2", **ssh_values(hosts["behind"])),
            row("pve1", "proxmox-host", "ssh", **ssh_values(hosts["pve"])),
            row("ct101", "lxc", "pct", node="pve1", vmid=101),
            row("vm201", "qemu", "qm", node="pve1", vmid=201),
            row(
                "pve-api",
                "proxmox-host",
                "tcp",
                address="127.0.0.1",
                port=pve.port,
                api_port=pve.port,
                api_ca=pve.cafile,
            ),
            row("vm301", "qemu", "qm-api", node="pve-api", vmid=301, credentials="pve-token"),
            row("vm302", "qemu", "qm-api", node="pve-api", vmid=302, credentials="pve-token"),
            row("vm303", "qemu", "qm-api", node="pve-api", vmid=303, credentials="pve-token"),
            row("vm304", "qemu", "qm-api", node="pve-api", vmid=304, credentials="pve-token"),
            row("web", "k8s-pod", "kubectl", namespace="apps", pod="web-0", credentials="k3s"),
            row(
                "web-gone", "k8s-pod", "kubectl", namespace="apps", pod="gone-0", credentials="k3s"
            ),
            row("modem", "appliance", "ssh", address=appliance.address, port=appliance.port),
            row("jump-down", "linux", "ssh", jump=literal_jump(closed), **ssh_values(hosts["ssh"])),
            row(
                "jump-wrong-key",
                "linux",
                "ssh",
                jump=literal_jump(wrong),
                **ssh_values(hosts["ssh"]),
            ),
        ]
        repo = InfraRepo(root / "infra")
        repo.write(INVENTORY, "# System inventory\n\n## Managed\n\n" + table(managed))
        repo.write("docs/reference/tools-map.md", TOOLS_MAP)
        repo.write(
            "docs/reference/credentials-map.md",
            credentials_text(
                [
                    f"| test-key | ssh-key | file:{ssh_hosts.client_key.private_key_path} |",
                    "| pve-token | api-token | env:PREP_TEST_PVE_TOKEN |",
                    f"| k3s | kubeconfig | file:{kubeconfig} |",
                ]
            ),
        )
        repo.commit("Document one system per access method")

        systems = load_docs(repo.root).systems
        assert not load_docs(repo.root).problems

        (root / "dagster_home").mkdir()
        instance = DagsterInstance.local_temp(str(root / "dagster_home"))
        resources = loop_resources(repo, ssh_hosts.known_hosts_path, TIMEOUT)
        factory = TransportFactory(
            {
                name: pipeline.pointer_to_dict(pointer)
                for name, pointer in load_docs(repo.root).credentials.items()
            },
            known_hosts=str(ssh_hosts.known_hosts_path),
            timeout=TIMEOUT,
            systems=systems,
            ssh_config="",
        )
        yield Matrix(repo, instance, resources, factory, hosts, pve, kubernetes)
        instance.dispose()
    finally:
        monkeypatch.undo()
        for name in started:
            ssh_hosts.stop_host(name)
        namespaces.close()
        if pve is not None:
            pve.close()
        if kubernetes is not None:
            kubernetes.close()


@pytest.fixture(scope="module")
def passed(matrix: Matrix) -> dict[str, dict]:
    """Run one loop pass and return the status document's systems."""
    run_pass(matrix.instance, matrix.resources)
    return matrix.repo.systems()


def access_of(systems: dict[str, dict], name: str) -> tuple[str, str, str]:
    access = systems[name]["access"]
    return access["state"], access["method"], access["message"]


def tools_of(systems: dict[str, dict], name: str) -> dict[str, str]:
    return {tool["command"]: tool["state"] for tool in systems[name]["tools"]}


REACHABLE = {
    "local-1": "local",
    "ssh-1": "ssh",
    "jump1": "ssh",
    "jump2": "ssh",
    "behind-jumps": "ssh",
    "pve1": "ssh",
    "ct101": "pct",
    "vm201": "qm",
    "pve-api": "tcp",
    "vm301": "qm-api",
    "web": "kubectl",
    "modem": "tcp",
}
WITH_SYSSTAT = {
    "iostat": "installed",
    "mpstat": "installed",
    "vmstat": "installed",
    "bpftrace": "missing",
}


def test_matrix_every_access_method(passed: dict[str, dict], matrix: Matrix):
    for name, method in REACHABLE.items():
        state, reported_method, message = access_of(passed, name)
        assert (state, reported_method, message) == ("reachable", method, ""), name

    for name in ("ssh-1", "jump1", "jump2", "pve1", "ct101", "vm201", "vm301", "web"):
        assert tools_of(passed, name) == WITH_SYSSTAT, name
    assert tools_of(passed, "behind-jumps") == {
        "iostat": "missing",
        "mpstat": "missing",
        "vmstat": "installed",
        "bpftrace": "missing",
    }
    assert passed["modem"]["tools"] == []
    assert set(tools_of(passed, "pve-api").values()) == {"not_applicable"}
    # The appliance got a TCP connect and no login, so no command reached it.
    assert matrix.hosts["appliance"].connection_count() == 1
    assert matrix.hosts["appliance"].login_count() == 0
    # Every hop of the chain was passed once; the pass samples over the same connection.
    assert matrix.hosts["behind"].login_count() == 1


def test_matrix_failure_modes(passed: dict[str, dict], matrix: Matrix, ssh_hosts: SshHostPool):
    closed = ssh_hosts["closed_port"]
    wrong = ssh_hosts["wrong_host_key"]
    expected = {
        "vm302": (
            "agent_missing",
            "VM 302 has no QEMU guest agent configured (No QEMU guest agent configured); enable "
            "it with qm set 302 --agent enabled=1, install qemu-guest-agent in the VM and "
            "restart the VM",
        ),
        "vm303": (
            "permission_denied",
            "API token prep@pve!check may not run commands in VM 303 (Permission check failed "
            "(/vms/303, VM.GuestAgent.Unrestricted)). Proxmox VE 9 needs",
        ),
        "vm304": (
            "timed_out",
            "the QEMU guest agent of VM 304 did not answer (VM 304 qmp command 'guest-ping' "
            "failed - got timeout)",
        ),
        "jump-down": (
            "jump_host_unreachable",
            f"jump host {closed.user}@{closed.address}:{closed.port} unreachable: connection to "
            f"{closed.address}:{closed.port} was refused",
        ),
        "jump-wrong-key": (
            "host_key_mismatch",
            f"jump host {wrong.user}@{wrong.address}:{wrong.port}: host key of "
            f"[{wrong.address}]:{wrong.port} changed: the server presents",
        ),
        "web-gone": (
            "not_found",
            f'pod apps/gone-0 not found on {matrix.kubernetes.url} (pods "gone-0" not found)',
        ),
    }
    for name, (state, start) in expected.items():
        actual_state, _, message = access_of(passed, name)
        assert actual_state == state, (name, message)
        assert message.startswith(start), (name, message)
        assert set(tools_of(passed, name).values()) == {"unknown"}, name
    # Each failure stays with its own system: every other system was reachable.
    assert {access_of(passed, name)[0] for name in REACHABLE} == {"reachable"}


def test_metacharacters_stay_literal_on_every_transport(matrix: Matrix, passed: dict[str, dict]):
    marker = Path(f"/tmp/pwned-{secrets.token_hex(6)}")
    argument = f"iostat; touch {marker}"
    systems = {system.name: system for system in load_docs(matrix.repo.root).systems}
    argvs = [
        tool_check_command([ToolSpec(argument)]),
        ["printf", "%s\n", argument],
        ["sh", "-c", 'printf "%s\\n" "$1"', "sh", argument],
    ]

    for name in ("local-1", "ssh-1", "behind-jumps", "ct101", "vm201", "vm301", "web"):
        transport = matrix.factory(systems[name])
        try:
            outputs = [transport.run(argv, 10) for argv in argvs]
        finally:
            transport.close()
        assert f"missing\t{argument}\n" in outputs[0].stdout, (name, outputs[0])
        assert outputs[1].stdout == argument + "\n", (name, outputs[1])
        assert outputs[2].stdout == argument + "\n", (name, outputs[2])
        assert not marker.exists(), name


def test_fifty_ssh_systems_one_connection_each(ssh_hosts: SshHostPool, tmp_path: Path):
    hosts = ssh_hosts.start_hosts(HostKind.WITH_SYSSTAT, 50, prefix=f"fifty-{tmp_path.name[-12:]}")
    try:
        repo = InfraRepo(tmp_path / "infra")
        rows = [
            f"| s{index:02d} | linux | standard | {host.address} | {host.port} | ssh | {host.user} | test-key |"
            for index, host in enumerate(hosts)
        ]
        repo.write(INVENTORY, inventory_text(rows))
        repo.write("docs/reference/tools-map.md", TOOLS_MAP)
        repo.write(
            "docs/reference/credentials-map.md",
            credentials_text(
                [f"| test-key | ssh-key | file:{ssh_hosts.client_key.private_key_path} |"]
            ),
        )
        repo.commit("Document fifty systems")
        (tmp_path / "dagster_home").mkdir()
        instance = DagsterInstance.local_temp(str(tmp_path / "dagster_home"))
        started = time.monotonic()

        run_pass(instance, loop_resources(repo, ssh_hosts.known_hosts_path, TIMEOUT))

        elapsed = time.monotonic() - started
        instance.dispose()
        states = {entry["access"]["state"] for entry in repo.systems().values()}
        assert states == {"reachable"}
        assert [host.connection_count() for host in hosts] == [1] * 50
        assert [host.login_count() for host in hosts] == [1] * 50
        print(json.dumps({"fifty_ssh_systems_pass_seconds": round(elapsed, 1)}))
    finally:
        for host in hosts:
            ssh_hosts.stop_host(host.name)
