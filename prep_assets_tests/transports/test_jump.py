"""SSH through chains of jump hosts, against real sshd hosts in network namespaces.

Topology: the test process reaches jump1 on a loopback address. jump2 runs in
namespace A, reachable from the test's namespace over a veth link. The target
runs in namespace B, linked only to namespace A, so only jump2 can reach it.
"""

import dataclasses
from pathlib import Path

import pytest

from prep_assets.models import AccessMethod, AccessState, System
from prep_assets.transports.base import (
    HostKeyMismatchError,
    HostKeyUnknownError,
    JumpHostUnreachableError,
    UnreachableError,
)
from prep_assets.transports.factory import TransportFactory
from prep_assets.transports.ssh import SshTarget, SshTransport
from prep_assets_tests.netns import Namespaces
from prep_assets_tests.sshhosts import HostKind, SshHost, SshHostPool

pytestmark = pytest.mark.integration


@dataclasses.dataclass
class Chain:
    jump1: SshHost
    jump2: SshHost
    target: SshHost


@pytest.fixture
def chain(ssh_hosts: SshHostPool, start_ssh_host, namespaces: Namespaces, tmp_path):
    namespace_a = namespaces.add("a")
    namespace_b = namespaces.add("b")
    link_a = namespaces.link(None, namespace_a)
    link_b = namespaces.link(namespace_a, namespace_b)
    suffix = tmp_path.name[-20:]
    jump1 = start_ssh_host(HostKind.WITH_SYSSTAT, name=f"jump1-{suffix}", allow_tcp_forwarding=True)
    jump2 = start_ssh_host(
        HostKind.WITH_SYSSTAT,
        name=f"jump2-{suffix}",
        namespace=namespace_a,
        address=link_a.far_address,
        allow_tcp_forwarding=True,
    )
    target = start_ssh_host(
        HostKind.WITH_SYSSTAT,
        name=f"target-{suffix}",
        namespace=namespace_b,
        address=link_b.far_address,
    )
    yield Chain(jump1, jump2, target)
    # The hosts in the namespaces stop before the namespaces are deleted.
    for host in (target, jump2):
        ssh_hosts.stop_host(host.name)


def hop(host: SshHost, **changes) -> SshTarget:
    return dataclasses.replace(host.ssh_target(), name=host.name, **changes)


def test_two_hops_reach_target(chain: Chain):
    target = hop(chain.target, jumps=(hop(chain.jump1), hop(chain.jump2)))

    with SshTransport("target", target) as transport:
        result = transport.run(["hostname"], timeout=10)
        assert result.exit_code == 0
        result = transport.run(["printf", "%s", "via two hops"], timeout=10)

    assert result.stdout == "via two hops"
    assert chain.jump1.connection_count() == 1
    assert chain.jump2.connection_count() == 1
    assert chain.target.connection_count() == 1
    assert chain.target.login_count() == 1


def test_target_unreachable_without_jumps(chain: Chain):
    with pytest.raises(UnreachableError) as caught:
        SshTransport("target", hop(chain.target)).run(["true"], timeout=5)

    assert chain.target.address in caught.value.message
    assert chain.target.connection_count() == 0


def test_wrong_host_key_on_jump_host(chain: Chain, ssh_hosts: SshHostPool):
    wrong = ssh_hosts["wrong_host_key"]
    target = hop(chain.target, jumps=(hop(wrong), hop(chain.jump2)))

    with pytest.raises(HostKeyMismatchError) as caught:
        SshTransport("target", target).run(["true"], timeout=5)

    assert caught.value.state is AccessState.HOST_KEY_MISMATCH
    assert caught.value.message.startswith(f"jump host wrong_host_key ({wrong.user}@")
    assert "changed" in caught.value.message
    assert chain.jump2.connection_count() == 0


def test_unknown_host_key_on_second_jump_host(chain: Chain, tmp_path: Path):
    known_hosts = tmp_path / "known_hosts_without_jump2"
    kept = [
        line
        for line in chain.jump1.known_hosts_path.read_text().splitlines()
        if not line.startswith(chain.jump2.address + " ")
    ]
    known_hosts.write_text("\n".join(kept) + "\n")
    target = hop(
        chain.target,
        jumps=(hop(chain.jump1), hop(chain.jump2, known_hosts_path=str(known_hosts))),
    )

    with pytest.raises(HostKeyUnknownError) as caught:
        SshTransport("target", target).run(["true"], timeout=5)

    assert caught.value.message.startswith(f"jump host {chain.jump2.name} (")
    assert "is not in known_hosts" in caught.value.message
    assert chain.target.connection_count() == 0


def test_unreachable_first_jump_host(chain: Chain, ssh_hosts: SshHostPool):
    closed = ssh_hosts["closed_port"]
    target = hop(chain.target, jumps=(hop(closed), hop(chain.jump2)))

    with pytest.raises(JumpHostUnreachableError) as caught:
        SshTransport("target", target).run(["true"], timeout=5)

    assert caught.value.state is AccessState.JUMP_HOST_UNREACHABLE
    assert caught.value.message.startswith("jump host closed_port (")
    assert " unreachable: connection to " in caught.value.message


def test_unreachable_second_jump_host(chain: Chain, ssh_hosts: SshHostPool):
    ssh_hosts.stop_host(chain.jump2.name)
    target = hop(chain.target, jumps=(hop(chain.jump1), hop(chain.jump2)))

    with pytest.raises(JumpHostUnreachableError) as caught:
        SshTransport("target", target).run(["true"], timeout=5)

    assert caught.value.message.startswith(
        f"jump host {chain.jump2.name} ({chain.jump2.user}@{chain.jump2.address}:22) "
        f"unreachable from jump host {chain.jump1.name}"
    )


def test_target_down_behind_jump_hosts(chain: Chain, ssh_hosts: SshHostPool):
    ssh_hosts.stop_host(chain.target.name)
    target = hop(chain.target, jumps=(hop(chain.jump1), hop(chain.jump2)))

    with pytest.raises(UnreachableError) as caught:
        SshTransport("target", target).run(["true"], timeout=5)

    assert caught.value.state is AccessState.UNREACHABLE
    assert f"unreachable from jump host {chain.jump2.name}" in caught.value.message


def system_row(name: str, host: SshHost, jump: str | None = None) -> System:
    return System(
        name=name,
        type="linux",
        tier="standard",
        access=AccessMethod.SSH,
        address=host.address,
        port=host.port,
        user=host.user,
        jump=jump,
        credentials="test-key",
    )


def credentials(ssh_hosts: SshHostPool) -> dict[str, dict[str, str]]:
    return {
        "test-key": {
            "name": "test-key",
            "kind": "ssh-key",
            "scheme": "file",
            "target": str(ssh_hosts.client_key.private_key_path),
        }
    }


def test_factory_follows_inventory_jump_names(chain: Chain, ssh_hosts: SshHostPool):
    systems = [
        system_row("jump1", chain.jump1),
        system_row("jump2", chain.jump2, jump="jump1"),
        system_row("target", chain.target, jump="jump2"),
    ]
    factory = TransportFactory(
        credentials(ssh_hosts),
        known_hosts=str(ssh_hosts.known_hosts_path),
        timeout=5,
        systems=systems,
        ssh_config="",
    )

    target = factory.ssh_target(systems[2])
    transport = factory(systems[2])
    try:
        result = transport.run(["printf", "%s", "named hops"], timeout=10)
    finally:
        transport.close()

    assert [jump.name for jump in target.jumps] == ["jump1", "jump2"]
    assert result.stdout == "named hops"


def test_factory_follows_ssh_config_proxy_jump(chain: Chain, ssh_hosts: SshHostPool, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host edge\n"
        f"  HostName {chain.jump1.address}\n"
        f"  Port {chain.jump1.port}\n"
        f"  User {chain.jump1.user}\n"
        f"  IdentityFile {ssh_hosts.client_key.private_key_path}\n"
        "Host inner\n"
        f"  HostName {chain.jump2.address}\n"
        "  ProxyJump edge\n"
        "Host backend\n"
        f"  HostName {chain.target.address}\n"
        "  ProxyJump inner\n"
        "Host *\n"
        f"  User {chain.target.user}\n"
        f"  IdentityFile {ssh_hosts.client_key.private_key_path}\n"
    )
    system = System(
        name="backend",
        type="linux",
        tier="standard",
        access=AccessMethod.SSH,
        address="backend",
    )
    factory = TransportFactory(
        {}, known_hosts=str(ssh_hosts.known_hosts_path), timeout=5, ssh_config=str(config)
    )

    target = factory.ssh_target(system)
    transport = factory(system)
    try:
        result = transport.run(["printf", "%s", "configured hops"], timeout=10)
    finally:
        transport.close()

    assert [(jump.name, jump.host, jump.port) for jump in target.jumps] == [
        ("edge", chain.jump1.address, chain.jump1.port),
        ("inner", chain.jump2.address, 22),
    ]
    assert target.host == chain.target.address
    assert target.key_path == str(ssh_hosts.client_key.private_key_path)
    assert result.stdout == "configured hops"
