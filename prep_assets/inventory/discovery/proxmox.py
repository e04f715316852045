"""List the nodes, QEMU VMs and LXC containers of a Proxmox VE cluster through its API.

The listing takes two requests per cluster, whatever its size:
``GET /cluster/resources`` for nodes and guests (node, vmid, name, status, tags,
pool) and ``GET /cluster/status`` for the node addresses. Guest addresses need
one more request per guest (the QEMU guest agent's ``network-get-interfaces``,
or ``/lxc/{vmid}/interfaces``), so they are looked up only for running guests,
in VMID order, up to the source's ``address_lookups`` limit.

Every request has the source's timeout. A failure of the listing marks the
source as down with the reason; a failed address lookup only leaves that
guest without an address.
"""

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests
from proxmoxer import ProxmoxAPI, ResourceException

from prep_assets.inventory.credentials import resolve_secret
from prep_assets.inventory.discovery.config import ProxmoxSource
from prep_assets.inventory.discovery.records import (
    DiscoveredRecord,
    ErrorKind,
    IPAddress,
    RecordKind,
    SourceResult,
    parse_reported_address,
)
from prep_assets.inventory.errors import CredentialError

logger = logging.getLogger(__name__)

_GUEST_KINDS = {"qemu": RecordKind.QEMU, "lxc": RecordKind.LXC}
_TAG_SEPARATORS = re.compile(r"[;,\s]+")
# The HTTP status codes that Proxmox VE's proxy uses when it cannot reach the node.
_PROXY_UNREACHABLE = {595, 596}

ApiFactory = Callable[..., Any]


class _ListingError(Exception):
    """The cluster listing failed, for the reason in ``kind``."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def discover_proxmox(
    source: ProxmoxSource,
    environ: Mapping[str, str] = os.environ,
    api_factory: ApiFactory = ProxmoxAPI,
) -> SourceResult:
    """Return the nodes and guests of one cluster, or a down result with the reason."""
    result = SourceResult(source.key, "proxmox", source.name, source.endpoint)
    with result.timed():
        try:
            api = _connect(source, environ, api_factory)
            _list_cluster(api, source, result)
        except _ListingError as error:
            result.fail(error.kind, error.message)
    if result.error_kind is not None:
        logger.warning(
            "Proxmox cluster %s at %s is down for discovery (%s): %s",
            source.name,
            source.endpoint,
            result.error_kind.value,
            result.message,
        )
    else:
        logger.info(
            "Proxmox cluster %s: %d records with %d API calls in %.0f ms (%d address lookups, "
            "%d failed)",
            source.name,
            len(result.records),
            result.api_calls,
            result.duration_ms,
            result.address_lookups,
            result.address_failures,
        )
    return result


def _connect(source: ProxmoxSource, environ: Mapping[str, str], api_factory: ApiFactory) -> Any:
    try:
        secret = resolve_secret(source.credential, environ).reveal()
    except CredentialError as error:
        raise _ListingError(ErrorKind.CREDENTIAL_ERROR, str(error)) from None
    user, token_name, token_value = _split_token(source, secret)
    verify: bool | str = source.verify
    if isinstance(verify, str):
        verify = str(Path(verify).expanduser())
    return api_factory(
        source.host,
        port=source.port,
        user=user,
        token_name=token_name,
        token_value=token_value,
        verify_ssl=verify,
        timeout=source.timeout,
    )


def _split_token(source: ProxmoxSource, secret: str) -> tuple[str, str, str]:
    """Return user, token name and token value from the Token ID and the secret.

    Without a Token ID the secret must be the whole token, ``USER@REALM!TOKENNAME=VALUE``,
    as in the ``PVEAPIToken=`` header (that prefix is accepted too).
    """
    token_id = source.token_id
    value = secret.strip()
    if token_id is None:
        whole = value.removeprefix("PVEAPIToken=")
        token_id, separator, value = whole.partition("=")
        if not separator or "!" not in token_id or "@" not in token_id or not value:
            raise _ListingError(
                ErrorKind.CONFIG_ERROR,
                f"credential {source.credential.name!r} holds no token ID: add a Token ID column "
                "(USER@REALM!TOKENNAME) to the Proxmox row, or store the whole token as "
                "USER@REALM!TOKENNAME=SECRET",
            )
    user, _, token_name = token_id.partition("!")
    return user, token_name, value


def _list_cluster(api: Any, source: ProxmoxSource, result: SourceResult) -> None:
    resources = _call(
        result, source.timeout, "cluster/resources", lambda: api.cluster.resources.get()
    )
    if not isinstance(resources, list) or not all(isinstance(item, dict) for item in resources):
        raise _ListingError(
            ErrorKind.INVALID_RESPONSE,
            "GET /cluster/resources did not return a list of resources; is the endpoint a "
            "Proxmox VE API?",
        )
    node_addresses = _node_addresses(api, source, result)

    records: list[DiscoveredRecord] = []
    templates = 0
    for item in resources:
        kind = item.get("type")
        if kind == "node":
            records.append(_node_record(source, item, node_addresses))
        elif kind in _GUEST_KINDS:
            if item.get("template") in (1, "1", True):
                templates += 1
                continue
            record = _guest_record(source, item)
            if record is not None:
                records.append(record)
    if templates:
        logger.debug("Skipped %d templates of Proxmox cluster %s", templates, source.name)

    result.records = _add_guest_addresses(api, source, result, records)


def _call(result: SourceResult, timeout: float, what: str, request: Callable[[], Any]) -> Any:
    """Send one API request, count it, and turn its failure into a _ListingError."""
    result.api_calls += 1
    try:
        return request()
    except ResourceException as error:
        raise _ListingError(
            _resource_error_kind(error.status_code), f"GET /{what} failed: {error}"
        ) from None
    except requests.exceptions.SSLError as error:
        raise _ListingError(
            ErrorKind.TLS_ERROR,
            f"TLS verification failed for GET /{what}: {error}; set TLS verify to the cluster's "
            "CA certificate file",
        ) from None
    except requests.exceptions.Timeout:
        raise _ListingError(
            ErrorKind.TIMED_OUT, f"GET /{what} timed out after {timeout:g} s"
        ) from None
    except requests.exceptions.ConnectionError as error:
        raise _ListingError(
            ErrorKind.UNREACHABLE, f"GET /{what} failed to connect: {error}"
        ) from None
    except requests.exceptions.RequestException as error:
        raise _ListingError(ErrorKind.ERROR, f"GET /{what} failed: {error}") from None
    except ValueError as error:
        raise _ListingError(
            ErrorKind.INVALID_RESPONSE, f"GET /{what} returned invalid JSON: {error}"
        ) from None


def _resource_error_kind(status: int) -> ErrorKind:
    if status == 401:
        return ErrorKind.AUTH_FAILED
    if status == 403:
        return ErrorKind.FORBIDDEN
    if status in _PROXY_UNREACHABLE:
        return ErrorKind.UNREACHABLE
    return ErrorKind.ERROR


def _node_addresses(api: Any, source: ProxmoxSource, result: SourceResult) -> dict[str, str]:
    """Return each node's address from /cluster/status, or nothing when the call fails.

    The listing succeeded already, so a failure here only leaves nodes without addresses.
    """
    try:
        status = _call(result, source.timeout, "cluster/status", lambda: api.cluster.status.get())
    except _ListingError as error:
        logger.warning(
            "Node addresses of Proxmox cluster %s are unknown: %s", source.name, error.message
        )
        return {}
    if not isinstance(status, list):
        return {}
    addresses = {}
    for item in status:
        if not isinstance(item, dict) or item.get("type") != "node" or not item.get("name"):
            continue
        address = parse_reported_address(item.get("ip"))
        if address is not None:
            addresses[str(item["name"])] = str(address)
    return addresses


def _node_record(
    source: ProxmoxSource, item: dict[str, Any], node_addresses: dict[str, str]
) -> DiscoveredRecord:
    node = str(item.get("node") or item.get("id", "").removeprefix("node/"))
    address = node_addresses.get(node)
    return DiscoveredRecord(
        source=source.key,
        kind=RecordKind.PROXMOX_NODE,
        id=f"node/{node}",
        name=node,
        status=str(item["status"]) if item.get("status") else None,
        addresses=(address,) if address else (),
    )


def _guest_record(source: ProxmoxSource, item: dict[str, Any]) -> DiscoveredRecord | None:
    kind = _GUEST_KINDS[item["type"]]
    try:
        vmid = int(item["vmid"])
    except (KeyError, TypeError, ValueError):
        logger.warning(
            "Proxmox cluster %s listed a %s without a valid vmid; it was left out: %r",
            source.name,
            item["type"],
            item.get("id"),
        )
        return None
    attributes: dict[str, str] = {}
    tags = [tag for tag in _TAG_SEPARATORS.split(str(item.get("tags") or "")) if tag]
    if tags:
        attributes["tags"] = ",".join(sorted(tags))
    if item.get("pool"):
        attributes["pool"] = str(item["pool"])
    return DiscoveredRecord(
        source=source.key,
        kind=kind,
        id=f"{item['type']}/{vmid}",
        name=str(item.get("name") or f"{item['type']}-{vmid}"),
        status=str(item["status"]) if item.get("status") else None,
        node=str(item["node"]) if item.get("node") else None,
        vmid=vmid,
        attributes=attributes,
    )


# --------------------------------------------------------------------------- addresses


def _add_guest_addresses(
    api: Any, source: ProxmoxSource, result: SourceResult, records: list[DiscoveredRecord]
) -> list[DiscoveredRecord]:
    """Return the records with the addresses of at most ``address_lookups`` running guests.

    A lookup that times out or cannot connect ends the lookups of this pass, so a
    cluster that stops responding costs one timeout, not one per guest.
    """
    if source.address_lookups <= 0:
        return records
    candidates = sorted(
        (
            record
            for record in records
            if record.kind in (RecordKind.QEMU, RecordKind.LXC)
            and record.status == "running"
            and record.node
        ),
        key=lambda record: record.vmid or 0,
    )
    skipped = max(0, len(candidates) - source.address_lookups)
    if skipped:
        logger.info(
            "Proxmox cluster %s: addresses of %d running guests not looked up (limit %d)",
            source.name,
            skipped,
            source.address_lookups,
        )

    addresses: dict[str, tuple[str, ...]] = {}
    for record in candidates[: source.address_lookups]:
        result.address_lookups += 1
        try:
            found = _guest_addresses(api, record, result, source.timeout)
        except _ListingError as error:
            result.address_failures += 1
            if error.kind in (ErrorKind.TIMED_OUT, ErrorKind.UNREACHABLE):
                logger.warning(
                    "Proxmox cluster %s: address lookups stopped at %s: %s",
                    source.name,
                    record.identity,
                    error.message,
                )
                break
            logger.debug("No address for %s: %s", record.identity, error.message)
            continue
        if found:
            addresses[record.id] = found

    return [
        replace(record, addresses=addresses[record.id]) if record.id in addresses else record
        for record in records
    ]


def _guest_addresses(
    api: Any, record: DiscoveredRecord, result: SourceResult, timeout: float
) -> tuple[str, ...]:
    node = api.nodes(record.node)
    if record.kind is RecordKind.QEMU:
        path = f"nodes/{record.node}/qemu/{record.vmid}/agent/network-get-interfaces"
        answer = _call(
            result,
            timeout,
            path,
            lambda: node.qemu(record.vmid).agent("network-get-interfaces").get(),
        )
        interfaces = answer.get("result") if isinstance(answer, dict) else None
    else:
        path = f"nodes/{record.node}/lxc/{record.vmid}/interfaces"
        interfaces = _call(result, timeout, path, lambda: node.lxc(record.vmid).interfaces.get())
    return usable_addresses(interfaces)


def usable_addresses(interfaces: Any) -> tuple[str, ...]:
    """Return the IPv4 then IPv6 addresses of an interface list, without ``lo`` and link-local.

    Both the guest agent's and the LXC endpoint's lists name each address
    ``ip-address`` inside ``ip-addresses``.
    """
    if not isinstance(interfaces, list):
        return ()
    found: list[IPAddress] = []
    for interface in interfaces:
        if not isinstance(interface, dict) or interface.get("name") == "lo":
            continue
        for entry in interface.get("ip-addresses") or []:
            if not isinstance(entry, dict):
                continue
            address = parse_reported_address(entry.get("ip-address"))
            if address is None or address.is_link_local or address in found:
                continue
            found.append(address)
    found.sort(key=lambda address: address.version)
    return tuple(str(address) for address in found)
