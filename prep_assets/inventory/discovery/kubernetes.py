"""List the nodes of a Kubernetes cluster through the API server, one kubeconfig context per source.

Each node becomes a record with its addresses (InternalIP, then ExternalIP),
roles (the ``node-role.kubernetes.io/<role>`` labels), kubelet version, OS image
and Ready condition. Nodes are listed in pages of ``PAGE_SIZE``, each request
with the source's timeout and without retries.
"""

import logging
import os
from collections.abc import Mapping
from typing import Any

import urllib3
import yaml
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from prep_assets.inventory.credentials import resolve_secret
from prep_assets.inventory.discovery.config import KubernetesSource
from prep_assets.inventory.discovery.records import (
    DiscoveredRecord,
    ErrorKind,
    RecordKind,
    SourceResult,
    parse_reported_address,
)
from prep_assets.inventory.errors import CredentialError

logger = logging.getLogger(__name__)

PAGE_SIZE = 500
# A bound on pages, so a server that always returns a continue token cannot loop for ever.
MAX_PAGES = 100
ROLE_LABEL_PREFIX = "node-role.kubernetes.io/"
# The label that clusters older than Kubernetes 1.14 used for roles.
LEGACY_ROLE_LABEL = "kubernetes.io/role"
_ADDRESS_ORDER = ("InternalIP", "ExternalIP")
_READY_WORDS = {"True": "Ready", "False": "NotReady"}


class _ListingError(Exception):
    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def discover_kubernetes(
    source: KubernetesSource, environ: Mapping[str, str] = os.environ
) -> SourceResult:
    """Return the nodes of one kubeconfig context, or a down result with the reason."""
    result = SourceResult(source.key, "kubernetes", source.name, source.endpoint)
    with result.timed():
        try:
            api_client = _api_client(source, environ)
            try:
                nodes = _list_nodes(kube_client.CoreV1Api(api_client), source, result)
            finally:
                api_client.close()
            result.records = [_node_record(source, node) for node in nodes]
        except _ListingError as error:
            result.fail(error.kind, error.message)
    if result.error_kind is not None:
        logger.warning(
            "Kubernetes cluster %s (%s) is down for discovery (%s): %s",
            source.name,
            source.endpoint,
            result.error_kind.value,
            result.message,
        )
    else:
        logger.info(
            "Kubernetes cluster %s: %d nodes with %d API calls in %.0f ms",
            source.name,
            len(result.records),
            result.api_calls,
            result.duration_ms,
        )
    return result


def _api_client(source: KubernetesSource, environ: Mapping[str, str]) -> kube_client.ApiClient:
    try:
        text = resolve_secret(source.credential, environ).reveal()
    except CredentialError as error:
        raise _ListingError(ErrorKind.CREDENTIAL_ERROR, str(error)) from None
    try:
        kubeconfig = yaml.safe_load(text)
    except yaml.YAMLError:
        # The YAML error quotes the text, which contains keys and tokens, so it is not shown.
        raise _ListingError(
            ErrorKind.CONFIG_ERROR,
            f"credential {source.credential.name!r} is not a valid YAML kubeconfig",
        ) from None
    if not isinstance(kubeconfig, dict):
        raise _ListingError(
            ErrorKind.CONFIG_ERROR,
            f"credential {source.credential.name!r} is not a kubeconfig: expected a YAML mapping",
        )

    configuration = kube_client.Configuration()
    # One attempt per request: a retry would multiply the timeout.
    configuration.retries = 0
    try:
        return kube_config.new_client_from_config_dict(
            kubeconfig,
            context=source.context,
            persist_config=False,
            client_configuration=configuration,
        )
    except ConfigException as error:
        raise _ListingError(
            ErrorKind.CONFIG_ERROR,
            f"kubeconfig {source.credential.name!r} cannot be used for {source.endpoint}: {error}",
        ) from None


def _list_nodes(
    api: kube_client.CoreV1Api, source: KubernetesSource, result: SourceResult
) -> list[Any]:
    nodes: list[Any] = []
    continue_token: str | None = None
    for _ in range(MAX_PAGES):
        result.api_calls += 1
        arguments: dict[str, Any] = {"limit": PAGE_SIZE, "_request_timeout": source.timeout}
        if continue_token:
            arguments["_continue"] = continue_token
        try:
            page = api.list_node(**arguments)
        except ApiException as error:
            raise _ListingError(_api_error_kind(error.status), _api_error_message(error)) from None
        except urllib3.exceptions.MaxRetryError as error:
            raise _request_error(error.reason or error, source) from None
        except urllib3.exceptions.HTTPError as error:
            raise _request_error(error, source) from None
        except ValueError as error:
            raise _ListingError(
                ErrorKind.INVALID_RESPONSE,
                f"GET /api/v1/nodes returned an invalid node list: {error}",
            ) from None
        nodes.extend(page.items or [])
        continue_token = page.metadata._continue if page.metadata else None
        if not continue_token:
            return nodes
    logger.warning("Kubernetes cluster %s: stopped after %d pages of nodes", source.name, MAX_PAGES)
    return nodes


def _api_error_kind(status: int | None) -> ErrorKind:
    if status == 401:
        return ErrorKind.AUTH_FAILED
    if status == 403:
        return ErrorKind.FORBIDDEN
    return ErrorKind.ERROR


def _api_error_message(error: ApiException) -> str:
    # The body is left out because it can be long; the status line names the failure.
    return f"GET /api/v1/nodes failed: HTTP {error.status} {error.reason}"


def _request_error(error: BaseException, source: KubernetesSource) -> _ListingError:
    # urllib3's NewConnectionError subclasses ConnectTimeoutError, so it is tested first.
    if isinstance(error, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ProtocolError):
        return _ListingError(ErrorKind.UNREACHABLE, f"GET /api/v1/nodes failed to connect: {error}")
    if isinstance(error, urllib3.exceptions.TimeoutError):
        return _ListingError(
            ErrorKind.TIMED_OUT, f"GET /api/v1/nodes timed out after {source.timeout:g} s"
        )
    if isinstance(error, urllib3.exceptions.SSLError):
        return _ListingError(ErrorKind.TLS_ERROR, f"TLS verification failed: {error}")
    return _ListingError(ErrorKind.ERROR, f"GET /api/v1/nodes failed: {error}")


def _node_record(source: KubernetesSource, node: Any) -> DiscoveredRecord:
    name = node.metadata.name
    labels = node.metadata.labels or {}
    status = node.status
    info = status.node_info if status else None

    attributes: dict[str, str] = {}
    roles = node_roles(labels)
    if roles:
        attributes["kubernetes-roles"] = ",".join(roles)
    if info is not None and info.kubelet_version:
        attributes["kubelet-version"] = info.kubelet_version
    if info is not None and info.os_image:
        attributes["os-image"] = info.os_image
    return DiscoveredRecord(
        source=source.key,
        kind=RecordKind.KUBERNETES_NODE,
        id=f"node/{name}",
        name=name,
        status=ready_state(status.conditions if status else None),
        addresses=node_addresses(status.addresses if status else None),
        attributes=attributes,
    )


def node_roles(labels: Mapping[str, str]) -> list[str]:
    """Return the sorted roles of ``node-role.kubernetes.io/<role>`` labels and the legacy label."""
    roles = {key[len(ROLE_LABEL_PREFIX) :] for key in labels if key.startswith(ROLE_LABEL_PREFIX)}
    legacy = labels.get(LEGACY_ROLE_LABEL)
    if legacy:
        roles.add(legacy)
    return sorted(role for role in roles if role)


def ready_state(conditions: list[Any] | None) -> str:
    """Return Ready, NotReady or Unknown from the node's Ready condition."""
    for condition in conditions or []:
        if condition.type == "Ready":
            return _READY_WORDS.get(condition.status, "Unknown")
    return "Unknown"


def node_addresses(addresses: list[Any] | None) -> tuple[str, ...]:
    """Return the node's InternalIP then ExternalIP addresses, skipping anything not an IP."""
    found: list[str] = []
    for wanted in _ADDRESS_ORDER:
        for entry in addresses or []:
            if entry.type != wanted:
                continue
            address = parse_reported_address(entry.address)
            if address is not None and str(address) not in found:
                found.append(str(address))
    return tuple(found)
