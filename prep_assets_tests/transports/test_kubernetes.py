"""kubectl exec through the kubernetes client against the loopback API server of kubernetes_server.py."""

import time

import pytest

from prep_assets.checks.runner import SetupError
from prep_assets.models import AccessMethod, AccessState, System
from prep_assets.transports.base import TransportError
from prep_assets.transports.factory import TransportFactory
from prep_assets.transports.kubernetes import (
    NSENTER_PREFIX,
    KubernetesExecTransport,
    KubernetesNodeTransport,
    build_debug_pod_manifest,
)
from prep_assets_tests.kubernetes_server import FakePod, ServedKubernetes
from prep_assets_tests.sshhosts import SshHostPool, link_tools

pytestmark = pytest.mark.integration

TIMEOUT = 3.0
NSENTER_STANDIN = """#!/bin/sh
# Stand-in for nsenter: accept only the options that enter PID 1's namespaces, then run the command.
if [ "$1 $2 $3 $4 $5 $6 $7 $8" != "-t 1 -m -u -i -n -p --" ]; then
  echo "nsenter: unexpected options: $*" >&2
  exit 2
fi
shift 8
exec "$@"
"""


def pod_system(name: str = "web", credentials: str = "k3s", **attributes: str) -> System:
    return System(
        name=name,
        type="container",
        tier="standard",
        access=AccessMethod.KUBECTL,
        credentials=credentials,
        attributes={"namespace": "apps", "pod": "web-0", **attributes},
    )


@pytest.fixture
def kube(fake_kubernetes: ServedKubernetes, ssh_hosts: SshHostPool, tmp_path, monkeypatch):
    suffix = tmp_path.name[-20:]
    pod_bin = ssh_hosts.public_dir / f"pod-{suffix}"
    link_tools(pod_bin, with_sysstat=True)
    node_bin = ssh_hosts.public_dir / f"debug-pod-{suffix}"
    link_tools(node_bin, with_sysstat=False)
    (node_bin / "nsenter").write_text(NSENTER_STANDIN)
    (node_bin / "nsenter").chmod(0o755)
    cluster = fake_kubernetes.cluster
    cluster.created_pod_path = str(node_bin)
    cluster.pods[("apps", "web-0")] = FakePod(["web", "sidecar"], str(pod_bin))
    cluster.pods[("apps", "pending-0")] = FakePod(["web"], str(pod_bin), phase="Pending")
    cluster.pods[("apps", "locked-0")] = FakePod(["web"], str(pod_bin), exec_forbidden=True)
    cluster.pods[("apps", "annotated-0")] = FakePod(
        ["sidecar", "app"],
        str(pod_bin),
        annotations={"kubectl.kubernetes.io/default-container": "app"},
    )
    kubeconfig = fake_kubernetes.kubeconfig(tmp_path / "kubeconfig")
    bad_kubeconfig = fake_kubernetes.kubeconfig(tmp_path / "bad-kubeconfig", token="wrong")
    monkeypatch.setenv("PREP_TEST_KUBECONFIG", kubeconfig.read_text())
    pointers = {
        "k3s": {"name": "k3s", "kind": "kubeconfig", "scheme": "file", "target": str(kubeconfig)},
        "k3s-env": {
            "name": "k3s-env",
            "kind": "kubeconfig",
            "scheme": "env",
            "target": "PREP_TEST_KUBECONFIG",
        },
        "k3s-bad": {
            "name": "k3s-bad",
            "kind": "kubeconfig",
            "scheme": "file",
            "target": str(bad_kubeconfig),
        },
    }

    def factory(**settings) -> TransportFactory:
        return TransportFactory(
            pointers, known_hosts="/nonexistent", timeout=TIMEOUT, ssh_config="", **settings
        )

    return cluster, factory


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


def test_exec_runs_argv_in_container(kube):
    cluster, factory = kube
    argv = ["sh", "-c", 'printf "%s|" "$@"; echo warn >&2; exit 6', "sh", "a b", "`id`"]

    result = run(factory(), pod_system(container="web"), argv)

    assert isinstance(factory()(pod_system()), KubernetesExecTransport)
    assert result.exit_code == 6
    assert result.stdout == "a b|`id`|"
    assert result.stderr == "warn\n"
    assert cluster.exec_commands == [("apps", "web-0", "web", argv)]
    assert [method for method, _ in cluster.requests] == ["GET", "GET"]


def test_exec_success_status_is_exit_zero(kube):
    cluster, factory = kube

    result = run(factory(), pod_system(credentials="k3s-env"), ["printf", "ok"])

    assert (result.exit_code, result.stdout, result.stderr) == (0, "ok", "")


def test_exec_picks_default_container(kube):
    cluster, factory = kube

    run(factory(), pod_system(pod="annotated-0"), ["true"])
    run(factory(), pod_system(), ["true"])

    assert [command[2] for command in cluster.exec_commands] == ["app", "web"]


@pytest.mark.parametrize(
    ("attributes", "state", "message"),
    [
        (
            {"pod": "gone-0"},
            AccessState.NOT_FOUND,
            'pod apps/gone-0 not found on http://127.0.0.1:{port} (pods "gone-0" not found); '
            "fix the pod or namespace in the inventory",
        ),
        (
            {"container": "db"},
            AccessState.NOT_FOUND,
            "container 'db' is not in pod apps/web-0; its containers are web, sidecar",
        ),
        (
            {"pod": "pending-0"},
            AccessState.UNREACHABLE,
            "pod apps/pending-0 is Pending, not Running; check it with kubectl -n apps "
            "describe pod pending-0",
        ),
        (
            {"pod": "locked-0"},
            AccessState.PERMISSION_DENIED,
            "http://127.0.0.1:{port} refused exec in pod apps/locked-0: the identity of the "
            "kubeconfig needs the RBAC verb create on pods/exec in namespace apps",
        ),
    ],
)
def test_exec_failure_modes(kube, fake_kubernetes, attributes, state, message):
    cluster, factory = kube

    error = failure(factory(), pod_system(**attributes))

    assert error.state is state
    assert error.message.startswith(message.format(port=fake_kubernetes.port)), error.message


def test_exec_rejected_token(kube, fake_kubernetes):
    cluster, factory = kube

    error = failure(factory(), pod_system(credentials="k3s-bad"))

    assert error.state is AccessState.AUTH_FAILED
    assert "wrong" not in error.message


def test_exec_unknown_context(kube):
    cluster, factory = kube

    with pytest.raises(SetupError, match="kubeconfig 'k3s' cannot be used with context 'prod'"):
        run(factory(), pod_system(context="prod"), ["true"])


def test_exec_timeout_stops_command(kube):
    cluster, factory = kube
    started = time.monotonic()

    with pytest.raises(TransportError) as caught:
        run(factory(), pod_system(), ["sleep", "30"])

    assert caught.value.state is AccessState.TIMED_OUT
    assert time.monotonic() - started <= TIMEOUT + 1.5
    assert caught.value.message.startswith("command 'sleep' did not finish within 3 s in pod")


def node_system(**attributes: str) -> System:
    return System(
        name="k8s-node-1",
        type="k8s-node",
        tier="standard",
        access=AccessMethod.KUBECTL,
        credentials="k3s",
        attributes={"namespace": "prep-debug", "node": "worker-1", **attributes},
    )


def test_node_checks_need_explicit_setting(kube):
    cluster, factory = kube

    with pytest.raises(
        SetupError, match="creates a privileged debug pod on the node, which is off"
    ):
        factory()(node_system())
    assert cluster.created == []


def test_node_check_through_debug_pod(kube):
    cluster, factory = kube
    transport = factory(kubernetes_debug_pods=True, debug_pod_image="debian:bookworm-slim")(
        node_system()
    )

    try:
        result = transport.run(["printf", "%s", "on the node"], TIMEOUT)
        name = transport.pod_name
    finally:
        transport.close()

    assert isinstance(transport, KubernetesNodeTransport)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "on the node"
    assert len(cluster.created) == 1
    manifest = cluster.created[0]
    assert manifest["metadata"]["name"] == name
    assert manifest["spec"]["nodeName"] == "worker-1"
    assert manifest["spec"]["hostPID"] is True
    assert manifest["spec"]["containers"][0]["securityContext"] == {"privileged": True}
    assert manifest["spec"]["containers"][0]["image"] == "debian:bookworm-slim"
    assert cluster.exec_commands == [
        ("prep-debug", name, "prep-assets-debug", [*NSENTER_PREFIX, "printf", "%s", "on the node"])
    ]
    assert cluster.deleted == [("prep-debug", name)]


def test_debug_pod_manifest():
    manifest = build_debug_pod_manifest("prep-assets-debug-n1-abc", "ops", "n1", "busybox:1.36")

    assert manifest["metadata"]["namespace"] == "ops"
    assert manifest["spec"]["restartPolicy"] == "Never"
    assert manifest["spec"]["tolerations"] == [{"operator": "Exists"}]
    assert manifest["spec"]["activeDeadlineSeconds"] > 0
    assert manifest["spec"]["containers"][0]["command"][0] == "sleep"
    assert "hostNetwork" not in manifest["spec"]
