"""Kubernetes discovery against a loopback HTTP server that replays node-list responses.

The responses are in fixtures/kubernetes/ (see its README: constructed after the
v1 Node schema, not recorded).
"""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from kubernetes.client import V1NodeAddress

from prep_assets.inventory.credentials import CredentialKind, CredentialPointer
from prep_assets.inventory.discovery.config import KubernetesSource
from prep_assets.inventory.discovery.kubernetes import discover_kubernetes, node_addresses
from prep_assets.inventory.discovery.records import ErrorKind, RecordKind, SourceState

FIXTURES = Path(__file__).parent / "fixtures" / "kubernetes"
TOKEN = "replay-bearer-token-7f3a"
KUBEADM_CONTINUE = "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6OTEyMDQ0LCJzdGFydCI6ImNwLTFcdTAwMDAifQ"


class ReplayServer(ThreadingHTTPServer):
    """Serves GET /api/v1/nodes from fixture files, by the path prefix of the cluster."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ReplayHandler)
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ReplayHandler(BaseHTTPRequestHandler):
    server: ReplayServer

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self.server.requests.append(self.path)
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, "status-unauthorized.json")
        elif url.path == "/k3s/api/v1/nodes":
            self._send(200, "nodes-k3s.json")
        elif url.path == "/kubeadm/api/v1/nodes" and query.get("continue") == [KUBEADM_CONTINUE]:
            self._send(200, "nodes-kubeadm-page2.json")
        elif url.path == "/kubeadm/api/v1/nodes":
            self._send(200, "nodes-kubeadm-page1.json")
        else:
            self.send_error(404)

    def _send(self, status: int, fixture: str) -> None:
        body = (FIXTURES / fixture).read_bytes()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def api_server() -> Iterator[ReplayServer]:
    server = ReplayServer()
    thread = threading.Thread(target=server.serve_forever, name="kube-replay", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def write_kubeconfig(path: Path, server_url: str, token: str = TOKEN) -> CredentialPointer:
    """Write a kubeconfig with one context per replayed cluster and return its pointer."""
    clusters = []
    contexts = []
    for name in ("k3s", "kubeadm"):
        clusters.append({"name": name, "cluster": {"server": f"{server_url}/{name}"}})
        contexts.append({"name": name, "context": {"cluster": name, "user": "prep"}})
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "contexts": contexts,
        "current-context": "k3s",
        "users": [{"name": "prep", "user": {"token": token}}],
    }
    path.write_text(json.dumps(config), encoding="utf-8")
    path.chmod(0o600)
    return CredentialPointer("kubeconfig", CredentialKind.KUBECONFIG, "file", str(path))


def records_of(result):
    return {record.name: record for record in result.records}


def test_k3s_nodes(api_server, tmp_path):
    pointer = write_kubeconfig(tmp_path / "kubeconfig", api_server.url)

    result = discover_kubernetes(KubernetesSource("k3s", pointer))

    assert result.state is SourceState.UP, result.message
    assert result.endpoint == "current context"
    nodes = records_of(result)
    assert set(nodes) == {"k3s-1", "k3s-2", "k3s-3"}
    server = nodes["k3s-1"]
    assert server.kind is RecordKind.KUBERNETES_NODE
    assert server.id == "node/k3s-1"
    assert server.addresses == ("192.0.2.31",)
    assert server.status == "Ready"
    assert server.attributes == {
        "kubernetes-roles": "control-plane,master",
        "kubelet-version": "v1.30.6+k3s1",
        "os-image": "Debian GNU/Linux 12 (bookworm)",
    }
    assert "kubernetes-roles" not in nodes["k3s-2"].attributes
    assert nodes["k3s-3"].status == "Unknown"
    assert result.api_calls == 1
    assert api_server.requests == ["/k3s/api/v1/nodes?limit=500"]


def test_kubeadm_pages_follow_continue(api_server, tmp_path):
    pointer = write_kubeconfig(tmp_path / "kubeconfig", api_server.url)

    result = discover_kubernetes(KubernetesSource("lab", pointer, context="kubeadm"))

    nodes = records_of(result)
    assert set(nodes) == {"cp-1", "worker-1"}
    assert nodes["cp-1"].addresses == ("192.0.2.41", "198.51.100.41")
    assert nodes["cp-1"].attributes["kubernetes-roles"] == "control-plane"
    assert nodes["cp-1"].attributes["kubelet-version"] == "v1.31.2"
    assert nodes["worker-1"].status == "NotReady"
    assert nodes["worker-1"].addresses == ("192.0.2.42", "2001:db8::42")
    assert result.api_calls == 2
    assert len(api_server.requests) == 2


def test_rejected_token(api_server, tmp_path):
    pointer = write_kubeconfig(tmp_path / "kubeconfig", api_server.url, token="expired")

    result = discover_kubernetes(KubernetesSource("k3s", pointer))

    assert result.state is SourceState.DOWN
    assert result.error_kind is ErrorKind.AUTH_FAILED
    assert "401" in result.message
    assert "expired" not in result.message


def test_unknown_context(api_server, tmp_path):
    pointer = write_kubeconfig(tmp_path / "kubeconfig", api_server.url)

    result = discover_kubernetes(KubernetesSource("k3s", pointer, context="missing"))

    assert result.error_kind is ErrorKind.CONFIG_ERROR
    assert api_server.requests == []


def test_kubeconfig_not_yaml(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text("token: [unclosed secret-value", encoding="utf-8")
    pointer = CredentialPointer("kubeconfig", CredentialKind.KUBECONFIG, "file", str(path))

    result = discover_kubernetes(KubernetesSource("k3s", pointer))

    assert result.error_kind is ErrorKind.CONFIG_ERROR
    assert "secret-value" not in result.message


def test_unreachable_api_server(tmp_path, closed_port):
    pointer = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{closed_port}")

    result = discover_kubernetes(KubernetesSource("k3s", pointer, timeout=2.0))

    assert result.error_kind is ErrorKind.UNREACHABLE


def test_silent_api_server_times_out(tmp_path, silent_port):
    pointer = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{silent_port}")

    result = discover_kubernetes(KubernetesSource("k3s", pointer, timeout=1.0))

    assert result.error_kind is ErrorKind.TIMED_OUT
    assert result.duration_ms < 3000


def test_node_addresses_drop_zones_and_names():
    addresses = [
        V1NodeAddress(type="Hostname", address="k3s-1"),
        V1NodeAddress(type="ExternalIP", address="198.51.100.7"),
        V1NodeAddress(type="InternalIP", address="fd00::7%eth0"),
        V1NodeAddress(type="InternalIP", address="192.0.2.7"),
        V1NodeAddress(type="InternalIP", address="192.0.2.7"),
    ]

    assert node_addresses(addresses) == ("192.0.2.7", "198.51.100.7")
