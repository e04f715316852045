"""Run commands in Kubernetes pods through the API server's exec endpoint, as ``kubectl exec`` does.

The kubernetes Python client opens a WebSocket to ``pods/{name}/exec`` and
speaks the channel protocol ``v5.channel.k8s.io``, falling back to
``v4.channel.k8s.io``. Every binary frame starts with a channel byte: 1 for
stdout, 2 for stderr and 3 for the final status. The status is a
``metav1.Status`` object whose ``NonZeroExitCode`` cause contains the exit
code. The command is an argument vector that no shell parses.

Before the first command the pod is read once (``get pods``), so a missing pod,
a pod that is not running or a wrong container name each get their own
message. Node-level checks run through a privileged debug pod on the node with
``hostPID`` and ``nsenter -t 1 -m -u -i -n -p --``, which enters the host's
namespaces like ``kubectl debug node``. It creates a pod, so the factory only
builds it when explicitly enabled.
"""

import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import urllib3
import websocket
from kubernetes.client import ApiClient, CoreV1Api, V1Pod
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream
from kubernetes.stream.ws_client import ERROR_CHANNEL, STDERR_CHANNEL, STDOUT_CHANNEL

from prep_assets.models import CommandResult
from prep_assets.transports.base import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    TransportError,
    TransportTimeoutError,
    UnreachableError,
)

logger = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "default"
# kubectl picks this container when a pod has several and none is named.
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
# The debug pod only needs nsenter, which Debian's util-linux package ships.
# NOTE: not run against a real cluster here; that the slim image contains
# util-linux is expected, because it is an essential package, but unchecked.
DEFAULT_DEBUG_IMAGE = "debian:bookworm-slim"
NSENTER_PREFIX = ("nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--")
# The debug pod ends by itself after this long even if prep-assets dies before deleting it.
DEBUG_POD_LIFETIME_SECONDS = 900
DEBUG_POD_POLL_SECONDS = 0.5
DEBUG_CONTAINER_NAME = "prep-assets-debug"
EXIT_COMMAND_NOT_FOUND = 127

_HANDSHAKE_STATUS = re.compile(r"Handshake status (\d{3})")
_DNS_LABEL_INVALID = re.compile(r"[^a-z0-9-]+")

ApiClientFactory = Callable[[], ApiClient]


def build_debug_pod_manifest(
    name: str, namespace: str, node: str, image: str = DEFAULT_DEBUG_IMAGE
) -> dict[str, Any]:
    """Return the manifest of a privileged pod pinned to ``node`` that shares the host's PID namespace.

    The container only sleeps. Commands run in it with nsenter into PID 1's
    namespaces, so they see the node's file systems, processes and network.
    """
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "prep-assets-debug",
                "app.kubernetes.io/managed-by": "prep-assets",
            },
        },
        "spec": {
            "nodeName": node,
            "hostPID": True,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "activeDeadlineSeconds": DEBUG_POD_LIFETIME_SECONDS,
            # Run on control-plane and tainted nodes too: the pod is pinned by nodeName.
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {
                    "name": DEBUG_CONTAINER_NAME,
                    "image": image,
                    "command": ["sleep", str(DEBUG_POD_LIFETIME_SECONDS)],
                    "securityContext": {"privileged": True},
                    "stdin": False,
                    "tty": False,
                }
            ],
        },
    }


def debug_pod_name(node: str) -> str:
    """Return a unique DNS-1123 pod name for a debug pod on ``node``."""
    slug = _DNS_LABEL_INVALID.sub("-", node.lower()).strip("-")[:30] or "node"
    return f"prep-assets-debug-{slug}-{secrets.token_hex(3)}"


class _PodExec:
    """Shared part of the pod and node transports: one API client, exec and error mapping."""

    def __init__(
        self, system: str, client_factory: ApiClientFactory, namespace: str, request_timeout: float
    ) -> None:
        self.system = system
        self.namespace = namespace
        self.request_timeout = request_timeout
        self._client_factory = client_factory
        self._client: ApiClient | None = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _api(self) -> CoreV1Api:
        if self._client is None:
            self._client = self._client_factory()
        return CoreV1Api(self._client)

    @property
    def _server(self) -> str:
        if self._client is None:
            return "the API server"
        return str(self._client.configuration.host)

    def _exec(
        self, api: CoreV1Api, pod: str, container: str, argv: Sequence[str], timeout: float
    ) -> CommandResult:
        started = time.monotonic()
        # NOTE: websocket-client has no per-connection connect timeout that the
        # kubernetes client passes on, so this sets its process-wide default. It
        # does not cover resolving the API server's host name; an IP address in
        # the kubeconfig's server URL avoids that.
        websocket.setdefaulttimeout(self.request_timeout)
        try:
            client = stream(
                api.connect_get_namespaced_pod_exec,
                pod,
                self.namespace,
                command=list(argv),
                container=container,
                stderr=True,
                stdin=False,
                stdout=True,
                tty=False,
                _preload_content=False,
            )
        except ApiException as error:
            raise self._exec_error(error, pod) from None
        try:
            client.run_forever(timeout=timeout)
            if client.is_open():
                raise TransportTimeoutError(
                    self.system,
                    f"command {argv[0]!r} did not finish within {timeout:g} s in pod "
                    f"{self.namespace}/{pod}; the exec stream was closed. Raise the access "
                    "timeout if the command is expected to take longer.",
                )
            stdout = client.read_channel(STDOUT_CHANNEL)
            stderr = client.read_channel(STDERR_CHANNEL)
            status_text = client.read_channel(ERROR_CHANNEL)
        finally:
            client.close()
        exit_code, stderr = self._exit_code(status_text, stderr, pod)
        return CommandResult(
            exit_code=exit_code,
            stdout=stdout,
            stderr=stderr,
            duration_seconds=time.monotonic() - started,
        )

    def _exit_code(self, status_text: str, stderr: str, pod: str) -> tuple[int, str]:
        """Read the exit code from the status object of the error channel."""
        try:
            status = json.loads(status_text) if status_text else None
        except ValueError:
            status = None
        if not isinstance(status, dict):
            raise TransportError(
                self.system,
                f"the exec stream of pod {self.namespace}/{pod} closed without an exit status "
                f"({status_text[:200]!r}); the connection to {self._server} may have dropped",
            )
        if status.get("status") == "Success":
            return 0, stderr
        message = str(status.get("message", ""))
        if status.get("reason") == "NonZeroExitCode":
            for cause in (status.get("details") or {}).get("causes") or []:
                if cause.get("reason") == "ExitCode":
                    return int(cause["message"]), stderr
        if "executable file not found" in message or "no such file or directory" in message:
            # The container runtime could not start the program: report it as a shell would.
            return EXIT_COMMAND_NOT_FOUND, stderr + message + "\n"
        raise TransportError(
            self.system, f"exec in pod {self.namespace}/{pod} failed: {message[:300]}"
        )

    def _exec_error(self, error: ApiException, pod: str) -> TransportError:
        # The client reports a failed WebSocket handshake as status 0 with the
        # HTTP status only in the text.
        reason = str(error.reason or "")
        match = _HANDSHAKE_STATUS.search(reason)
        status = int(match.group(1)) if match else error.status
        where = f"pod {self.namespace}/{pod}"

        if status == 404:
            return NotFoundError(
                self.system, f"{where} not found on {self._server}; it may have been replaced"
            )
        if status == 403:
            return PermissionDeniedError(
                self.system,
                f"{self._server} refused exec in {where}: the identity of the kubeconfig needs "
                f"the RBAC verb create on pods/exec in namespace {self.namespace}",
            )
        if status == 401:
            return AuthenticationError(
                self.system, f"{self._server} rejected the credentials of the kubeconfig"
            )

        if "timed out" in reason.lower():
            return TransportTimeoutError(
                self.system,
                f"opening the exec stream to {where} on {self._server} timed out after "
                f"{self.request_timeout:g} s",
            )
        if status:
            return TransportError(
                self.system, f"exec in {where} failed with HTTP {status}: {reason[:300]}"
            )
        return UnreachableError(
            self.system,
            f"could not open the exec stream to {where} on {self._server}: {reason[:300]}",
        )

    def _api_error(self, error: Exception, action: str, verbs: str) -> TransportError:
        """Map an error of a plain API request (not exec) to an access error."""
        if isinstance(error, ApiException):
            detail = _status_message(error)
            if error.status == 401:
                return AuthenticationError(
                    self.system,
                    f"{self._server} rejected the credentials of the kubeconfig ({detail})",
                )
            if error.status == 403:
                return PermissionDeniedError(
                    self.system,
                    f"{self._server} refused to {action} ({detail}); the identity of the "
                    f"kubeconfig needs {verbs} in namespace {self.namespace}",
                )
            return TransportError(self.system, f"could not {action}: HTTP {error.status}: {detail}")
        if isinstance(
            error, (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ConnectTimeoutError)
        ):
            return TransportTimeoutError(
                self.system,
                f"{self._server} did not answer within {self.request_timeout:g} s while "
                f"trying to {action}",
            )
        return UnreachableError(
            self.system, f"could not connect to {self._server} to {action}: {error}"
        )


class KubernetesExecTransport(_PodExec):
    """Run commands in one container of one pod."""

    def __init__(
        self,
        system: str,
        client_factory: ApiClientFactory,
        namespace: str,
        pod: str,
        container: str | None,
        request_timeout: float,
    ) -> None:
        super().__init__(system, client_factory, namespace, request_timeout)
        self.pod = pod
        self.container = container
        self._checked_container: str | None = None

    def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        if not argv:
            raise ValueError("an empty argument list is not a command")
        api = self._api()
        if self._checked_container is None:
            self._checked_container = self._check_pod(api)
        return self._exec(api, self.pod, self._checked_container, argv, timeout)

    def _check_pod(self, api: CoreV1Api) -> str:
        """Read the pod once; return the container to use, or raise the matching error."""
        where = f"pod {self.namespace}/{self.pod}"
        try:
            pod = api.read_namespaced_pod(
                self.pod, self.namespace, _request_timeout=float(self.request_timeout)
            )
        except ApiException as error:
            if error.status == 404:
                raise NotFoundError(
                    self.system,
                    f"{where} not found on {self._server} ({_status_message(error)}); fix the "
                    "pod or namespace in the inventory. Pods of a Deployment get new names, so "
                    "name a StatefulSet pod or a pod with a stable name",
                ) from None
            raise self._api_error(error, f"read {where}", "get on pods") from None
        except urllib3.exceptions.HTTPError as error:
            raise self._api_error(error, f"read {where}", "get on pods") from None

        containers = [container.name for container in (pod.spec.containers if pod.spec else [])]
        phase = pod.status.phase if pod.status else None
        if phase != "Running":
            raise UnreachableError(
                self.system,
                f"{where} is {phase or 'in an unknown phase'}, not Running; check it with "
                f"kubectl -n {self.namespace} describe pod {self.pod}",
            )
        if self.container is not None:
            if self.container not in containers:
                raise NotFoundError(
                    self.system,
                    f"container {self.container!r} is not in {where}; its containers are "
                    f"{', '.join(containers) or 'none'}",
                )
            return self.container
        annotations = (pod.metadata.annotations if pod.metadata else None) or {}
        preferred = annotations.get(DEFAULT_CONTAINER_ANNOTATION)
        if preferred in containers:
            return str(preferred)
        if not containers:
            raise TransportError(self.system, f"{where} has no containers")
        if len(containers) > 1:
            logger.info(
                "%s: %s has containers %s and none is named, using %s",
                self.system,
                where,
                ", ".join(containers),
                containers[0],
            )
        return containers[0]


class KubernetesNodeTransport(_PodExec):
    """Run commands on a Kubernetes node through a privileged debug pod with nsenter.

    The pod is created by the first command and deleted by close(); its
    activeDeadlineSeconds ends it anyway if prep-assets stops before that.
    """

    def __init__(
        self,
        system: str,
        client_factory: ApiClientFactory,
        namespace: str,
        node: str,
        image: str,
        request_timeout: float,
        startup_timeout: float,
    ) -> None:
        super().__init__(system, client_factory, namespace, request_timeout)
        self.node = node
        self.image = image
        self.startup_timeout = startup_timeout
        self.pod_name: str | None = None
        self._running = False

    def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        if not argv:
            raise ValueError("an empty argument list is not a command")
        api = self._api()
        if not self._running:
            self._start_pod(api)
        assert self.pod_name is not None
        return self._exec(
            api, self.pod_name, DEBUG_CONTAINER_NAME, [*NSENTER_PREFIX, *argv], timeout
        )

    def close(self) -> None:
        if self.pod_name is not None and self._client is not None:
            try:
                self._api().delete_namespaced_pod(
                    self.pod_name,
                    self.namespace,
                    grace_period_seconds=0,
                    _request_timeout=float(self.request_timeout),
                )
                logger.info(
                    "%s: deleted debug pod %s/%s", self.system, self.namespace, self.pod_name
                )
            except (ApiException, urllib3.exceptions.HTTPError) as error:
                logger.warning(
                    "%s: could not delete debug pod %s/%s, it ends by itself after %d s: %s",
                    self.system,
                    self.namespace,
                    self.pod_name,
                    DEBUG_POD_LIFETIME_SECONDS,
                    error,
                )
            self.pod_name = None
            self._running = False
        super().close()

    def _start_pod(self, api: CoreV1Api) -> None:
        name = debug_pod_name(self.node)
        manifest = build_debug_pod_manifest(name, self.namespace, self.node, self.image)
        body = V1Pod.from_dict(manifest)
        assert body is not None
        try:
            api.create_namespaced_pod(
                self.namespace,
                body,
                _request_timeout=float(self.request_timeout),
            )
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            raise self._api_error(
                error,
                f"create debug pod {self.namespace}/{name} on node {self.node}",
                "create on pods (and a PodSecurity level that admits privileged pods)",
            ) from None
        self.pod_name = name
        logger.info(
            "%s: created debug pod %s/%s on node %s", self.system, self.namespace, name, self.node
        )

        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                pod = api.read_namespaced_pod(
                    name, self.namespace, _request_timeout=float(self.request_timeout)
                )
            except (ApiException, urllib3.exceptions.HTTPError) as error:
                raise self._api_error(
                    error, f"read debug pod {self.namespace}/{name}", "get on pods"
                ) from None
            phase = pod.status.phase if pod.status else None
            if phase == "Running":
                self._running = True
                return
            if phase in ("Failed", "Succeeded"):
                raise TransportError(
                    self.system,
                    f"debug pod {self.namespace}/{name} on node {self.node} ended ({phase}) "
                    f"before it ran a command; check kubectl -n {self.namespace} describe pod {name}",
                )
            if time.monotonic() >= deadline:
                raise TransportTimeoutError(
                    self.system,
                    f"debug pod {self.namespace}/{name} on node {self.node} was not running "
                    f"after {self.startup_timeout:g} s (phase {phase}); check that the node is "
                    f"ready and can pull image {self.image}",
                )
            time.sleep(DEBUG_POD_POLL_SECONDS)


def _status_message(error: ApiException) -> str:
    """Return the message of the metav1.Status body of an API error, or its reason."""
    try:
        body = json.loads(error.body) if error.body else {}
    except (TypeError, ValueError):
        body = {}
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(error.reason or "")
