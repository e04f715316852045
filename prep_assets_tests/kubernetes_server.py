"""A Kubernetes API server on 127.0.0.1 for the exec transport: recorded answers plus a real exec stream.

Pod reads, creates and deletes are answered with the recorded bodies in
fixtures/kubernetes/ (see the README there). ``pods/{name}/exec`` upgrades to
a WebSocket with the subprotocol that the client offers first of
``v5.channel.k8s.io`` and ``v4.channel.k8s.io``, runs the ``command`` query
parameters as an argument vector without a shell, as the unprivileged SSH
test user with the pod's bin dir as the whole PATH, and sends stdout on
channel 1, stderr on channel 2 and the final ``metav1.Status`` on channel 3,
each frame prefixed with its channel byte. Requests need the bearer token
``TOKEN``.
"""

import asyncio
import copy
import json
import os
import pwd
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from prep_assets_tests.sshhosts import TEST_USER, ensure_test_user

FIXTURES = Path(__file__).parent / "fixtures" / "kubernetes"
TOKEN = "prep-assets-test-token"
HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30
# Seconds a command gets to exit after SIGTERM before its process group is killed.
STOP_GRACE_SECONDS = 2
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDOUT, STDERR, STATUS = 1, 2, 3


@dataclass
class FakePod:
    """A pod of the fake cluster: its containers, phase and the bin dir its commands see."""

    containers: list[str]
    path: str
    phase: str = "Running"
    annotations: dict[str, str] = field(default_factory=dict)
    # When set, exec is refused with 403, like RBAC without create on pods/exec.
    exec_forbidden: bool = False
    # Reads of a created pod before it reports Running.
    pending_reads: int = 0


class FakeKubernetes:
    """The pods, the requests seen and the aiohttp application that serves them."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], FakePod] = {}
        self.requests: list[tuple[str, str]] = []
        self.exec_commands: list[tuple[str, str, str, list[str]]] = []
        self.created: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str]] = []
        # The bin dir of pods created through the API (debug pods).
        self.created_pod_path = ""
        self._running: set[asyncio.subprocess.Process] = set()

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._authenticate])
        pods = "/api/v1/namespaces/{namespace}/pods"
        app.router.add_get(pods + "/{name}", self._read)
        app.router.add_post(pods, self._create)
        app.router.add_delete(pods + "/{name}", self._delete)
        app.router.add_get(pods + "/{name}/exec", self._exec)
        return app

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _status(401, "Unauthorized", "Unauthorized")
        return await handler(request)

    async def _read(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        pod = self.pods.get((namespace, name))
        if pod is None:
            return _not_found(name)
        if pod.pending_reads > 0:
            pod.pending_reads -= 1
            return web.json_response(_pod_body(namespace, name, pod, phase="Pending"))
        return web.json_response(_pod_body(namespace, name, pod))

    async def _create(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        manifest = await request.json()
        self.created.append(manifest)
        name = manifest["metadata"]["name"]
        containers = [container["name"] for container in manifest["spec"]["containers"]]
        self.pods[(namespace, name)] = FakePod(containers, self.created_pod_path, pending_reads=1)
        body = _pod_body(namespace, name, self.pods[(namespace, name)], phase="Pending")
        body["spec"] = manifest["spec"]
        return web.json_response(body, status=201)

    async def _delete(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        pod = self.pods.pop((namespace, name), None)
        if pod is None:
            return _not_found(name)
        self.deleted.append((namespace, name))
        return web.json_response(_pod_body(namespace, name, pod))

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        pod = self.pods.get((namespace, name))
        if pod is None:
            return _not_found(name)
        if pod.exec_forbidden:
            return _status(
                403,
                "Forbidden",
                f'pods "{name}" is forbidden: User "prep" cannot create resource "pods/exec" '
                f'in API group "" in the namespace "{namespace}"',
            )
        argv = request.query.getall("command", [])
        container = request.query.get("container", pod.containers[0])
        if container not in pod.containers:
            return _status(400, "BadRequest", f"container {container} is not valid for pod {name}")
        self.exec_commands.append((namespace, name, container, argv))

        socket = web.WebSocketResponse(protocols=PROTOCOLS)
        await socket.prepare(request)
        status = await self._run(socket, argv, pod.path)
        if status is not None and not socket.closed:
            await socket.send_bytes(bytes([STATUS]) + json.dumps(status).encode())
            await socket.close()
        return socket

    async def _run(
        self, socket: web.WebSocketResponse, argv: list[str], path: str
    ) -> dict[str, Any] | None:
        """Run the command; return its status object, or None when the client left first."""
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={"PATH": path},
                user=TEST_USER,
                group=pwd.getpwnam(TEST_USER).pw_gid,
                start_new_session=True,
            )
        except OSError as error:
            return {
                "metadata": {},
                "status": "Failure",
                "message": f'exec: "{argv[0] if argv else ""}": executable file not found in '
                f"$PATH: {error.strerror}",
                "reason": "InternalError",
                "code": 500,
            }
        self._running.add(process)
        try:
            finished = asyncio.ensure_future(process.communicate())
            left = asyncio.ensure_future(_client_left(socket))
            done, _ = await asyncio.wait({finished, left}, return_when=asyncio.FIRST_COMPLETED)
            if finished not in done:
                await _stop_group(process)
                return None
            left.cancel()
            stdout, stderr = finished.result()
        finally:
            self._running.discard(process)
        if stdout:
            await socket.send_bytes(bytes([STDOUT]) + stdout)
        if stderr:
            await socket.send_bytes(bytes([STDERR]) + stderr)
        code = process.returncode
        if code == 0:
            return {"metadata": {}, "status": "Success"}
        return {
            "metadata": {},
            "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command "
            f"{argv}, exit code {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }

    async def stop_commands(self) -> None:
        for process in list(self._running):
            await _stop_group(process)


async def _client_left(socket: web.WebSocketResponse) -> None:
    while True:
        message = await socket.receive()
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return


async def _stop_group(process: asyncio.subprocess.Process) -> None:
    """Send SIGTERM to the command's process group, then SIGKILL after a grace period."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
    except TimeoutError:
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()


def _signal_group(process_group: int, signal_number: int) -> None:
    try:
        os.killpg(process_group, signal_number)
    except ProcessLookupError:
        pass


def _pod_body(namespace: str, name: str, pod: FakePod, phase: str | None = None) -> dict[str, Any]:
    body = copy.deepcopy(json.loads((FIXTURES / "pod-running.json").read_text()))
    body["metadata"].update(name=name, namespace=namespace, annotations=dict(pod.annotations))
    recorded = body["spec"]["containers"][0]
    body["spec"]["containers"] = [dict(recorded, name=container) for container in pod.containers]
    recorded_status = body["status"]["containerStatuses"][0]
    body["status"]["containerStatuses"] = [
        dict(recorded_status, name=container) for container in pod.containers
    ]
    body["status"]["phase"] = phase or pod.phase
    return body


def _not_found(name: str) -> web.Response:
    body = json.loads((FIXTURES / "status-pod-not-found.json").read_text())
    body["message"] = f'pods "{name}" not found'
    body["details"]["name"] = name
    return web.json_response(body, status=404)


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


class ServedKubernetes:
    """FakeKubernetes served over HTTP on 127.0.0.1 by an event loop in a daemon thread."""

    def __init__(self) -> None:
        ensure_test_user()
        self.cluster = FakeKubernetes()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-kubernetes", daemon=True
        )
        self._thread.start()
        self._runner = web.AppRunner(self.cluster.application())
        self._call(self._start())

    async def _start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def kubeconfig(self, path: Path, token: str = TOKEN) -> Path:
        """Write a kubeconfig with context ``test`` for this server and return its path."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "prep", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "fake", "user": "prep"}}],
            "current-context": "test",
        }
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(START_TIMEOUT_SECONDS)

    def close(self) -> None:
        try:
            self._call(self.cluster.stop_commands())
            self._call(self._runner.cleanup())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(START_TIMEOUT_SECONDS)
            if not self._thread.is_alive():
                self._loop.close()


@pytest.fixture
def fake_kubernetes() -> Iterator[ServedKubernetes]:
    """A started fake API server for one test."""
    served = ServedKubernetes()
    try:
        yield served
    finally:
        served.close()
