"""Merge the documented systems with the records that discovery sources returned.

A record is matched to a system in this order, and the first rule that finds
exactly one system wins:

1. VMID and node: the system's ``vmid`` and ``node`` attributes (the VMID and
   Node columns of the inventory) equal the guest's;
2. name, ignoring case, with and without the domain: ``web1`` matches
   ``web1.home.arpa``;
3. address: the system's address is one of the record's addresses.

A system takes at most one record per source, so two guests of one cluster are
never merged. Records of different sources can meet in one system, for
example a Proxmox VM that is also a Kubernetes node.

Documented values win over discovered ones, except the facts that only the
source reports and that change at run time: node, VMID, status, tags, pool,
roles and versions, stored in ``System.attributes``. A documented value that
disagrees with the source is kept and listed as a mismatch. ``System.sources``
names where each field and attribute came from.

A record that matches no system becomes an ``undocumented`` system. Its type is
the record kind (``qemu``, ``lxc``, ``proxmox-node``, ``kubernetes-node``). It is
managed, and checked like a documented system, when an access method can be
derived for it: the access pattern of its own type (the ``default`` pattern is
not used, so an unknown machine is never contacted with the fleet's default
login), else ``qm-api`` for a QEMU VM and ``pct`` through its node for a
container. Nodes get no derived method and stay unmanaged. A guest that is not
running is not contacted.
"""

import enum
import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from prep_assets.inventory.access_patterns import AccessPattern
from prep_assets.inventory.discovery.records import (
    DiscoveredRecord,
    RecordKind,
    SourceResult,
    SourceState,
)
from prep_assets.inventory.system_inventory import DEFAULT_TIER
from prep_assets.models import AccessMethod, System

logger = logging.getLogger(__name__)

DOCS = "docs"
DERIVED = "derived"

MATCH_VMID_NODE = "vmid+node"
MATCH_NAME = "name"
MATCH_ADDRESS = "address"

# Access methods that mark a documented system as a Proxmox guest.
_PROXMOX_GUEST_METHODS = frozenset({AccessMethod.PCT, AccessMethod.QM, AccessMethod.QM_API})
_FORBIDDEN_NAME_CHARACTERS = re.compile(r"[/\\\x00-\x1f\x7f\s]+")
_SYSTEM_FIELDS = (
    "name",
    "type",
    "tier",
    "access",
    "address",
    "port",
    "user",
    "jump",
    "credentials",
)


class DiscoveryState(enum.StrEnum):
    """The relation of a merged system to discovery."""

    # Documented, and no configured source is expected to list it.
    DOCUMENTED = "documented"
    # Documented and found by a source.
    MATCHED = "matched"
    # Found by a source but not in the docs.
    UNDOCUMENTED = "undocumented"
    # Documented as a guest or node of a source that is up, but that source did not list it.
    NOT_FOUND = "not_found"
    # Documented as a guest or node of a source that is down, so it could not be verified.
    UNVERIFIED = "unverified"


@dataclass(frozen=True)
class SourceContext:
    """The facts about a source that the merge needs to derive access for its records."""

    key: str
    kind: str
    name: str
    state: SourceState
    # The credentials-map name that reaches the source's API (Proxmox: the API token).
    credentials: str | None = None
    # Attributes given to every system found by this source, such as the API endpoint.
    attributes: Mapping[str, str] = field(default_factory=dict)
    # Attributes that a node's system gets where the docs do not set them (API port and TLS).
    node_attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass
class SystemDiscovery:
    """The discovery side of one merged system."""

    state: DiscoveryState
    records: list[DiscoveredRecord] = field(default_factory=list)
    # How each record was matched, by record identity; undocumented systems have none.
    matched_by: dict[str, str] = field(default_factory=dict)
    # Documented values that the source disagrees with.
    mismatches: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "records": [record.to_dict() for record in self.records],
            "matched_by": dict(self.matched_by),
            "mismatches": [dict(mismatch) for mismatch in self.mismatches],
        }


@dataclass
class MergeResult:
    systems: list[System]
    discovery: dict[str, SystemDiscovery]

    def names_in_state(self, state: DiscoveryState) -> list[str]:
        return sorted(name for name, entry in self.discovery.items() if entry.state is state)


@dataclass
class _Entry:
    system: System
    documented: bool
    records: list[DiscoveredRecord] = field(default_factory=list)
    matched_by: dict[str, str] = field(default_factory=dict)
    mismatches: list[dict[str, Any]] = field(default_factory=list)

    def has_record_from(self, source: str) -> bool:
        return any(record.source == source for record in self.records)


def merge_inventory(
    documented: Sequence[System],
    results: Sequence[SourceResult],
    contexts: Mapping[str, SourceContext],
    patterns: Mapping[str, AccessPattern],
) -> MergeResult:
    """Merge documented systems with the records of the sources that are up.

    ``contexts`` describes every configured source by key, including those that are
    down or disabled, so that documented guests of a down source are reported as
    unverified rather than not found.
    """
    merger = _Merger(documented, patterns)
    for result in results:
        if result.state is not SourceState.UP:
            continue
        context = contexts.get(result.key) or SourceContext(
            result.key, result.kind, result.name, result.state
        )
        for record in sorted(result.records, key=_record_order):
            merger.add(record, context)

    systems: list[System] = []
    discovery: dict[str, SystemDiscovery] = {}
    for entry in merger.entries:
        system = _with_documented_sources(entry) if entry.documented else entry.system
        systems.append(system)
        discovery[system.name] = SystemDiscovery(
            state=_state(entry, contexts),
            records=list(entry.records),
            matched_by=dict(entry.matched_by),
            mismatches=list(entry.mismatches),
        )
    counts = {state: 0 for state in DiscoveryState}
    for item in discovery.values():
        counts[item.state] += 1
    logger.info(
        "Merged inventory: %s",
        ", ".join(f"{count} {state.value}" for state, count in counts.items() if count),
    )
    return MergeResult(systems=systems, discovery=discovery)


def _record_order(record: DiscoveredRecord) -> tuple[int, int, str]:
    # Nodes first, so a guest named like a node never takes the node's system.
    is_guest = record.kind in (RecordKind.QEMU, RecordKind.LXC)
    return (1 if is_guest else 0, record.vmid or 0, record.id)


def short_name(name: str) -> str:
    """Return the name without its domain, in lower case: ``Web1.home.arpa`` -> ``web1``."""
    return name.strip().rstrip(".").split(".", 1)[0].lower()


class _Merger:
    def __init__(self, documented: Sequence[System], patterns: Mapping[str, AccessPattern]) -> None:
        self.patterns = patterns
        self.entries: list[_Entry] = []
        self.by_vmid_node: dict[tuple[int, str], list[_Entry]] = {}
        self.by_name: dict[str, list[_Entry]] = {}
        self.by_short_name: dict[str, list[_Entry]] = {}
        self.by_address: dict[str, list[_Entry]] = {}
        self.names: set[str] = set()
        # Inventory name of the system that each Proxmox node was merged into, by (source, node name).
        self.node_holders: dict[tuple[str, str], str] = {}
        for system in documented:
            self._index(_Entry(system, documented=True))

    def _index(self, entry: _Entry) -> None:
        system = entry.system
        self.entries.append(entry)
        self.names.add(system.name.casefold())
        self.by_name.setdefault(system.name.rstrip(".").lower(), []).append(entry)
        self.by_short_name.setdefault(short_name(system.name), []).append(entry)
        if system.address:
            self.by_address.setdefault(_normal_address(system.address), []).append(entry)
        vmid = _int(system.attributes.get("vmid"))
        node = system.attributes.get("node")
        if entry.documented and vmid is not None and node:
            self.by_vmid_node.setdefault((vmid, node.lower()), []).append(entry)

    def add(self, record: DiscoveredRecord, context: SourceContext) -> None:
        entry, how = self._find(record)
        if entry is None:
            self._index(self._undocumented(record, context))
            return
        self._attach(entry, record, context, how)

    def _find(self, record: DiscoveredRecord) -> tuple[_Entry | None, str]:
        def free(candidates: Iterable[_Entry]) -> list[_Entry]:
            return [entry for entry in candidates if not entry.has_record_from(record.source)]

        if record.vmid is not None and record.node:
            found = free(self.by_vmid_node.get((record.vmid, record.node.lower()), []))
            if len(found) == 1:
                return found[0], MATCH_VMID_NODE

        found = free(self.by_name.get(record.name.rstrip(".").lower(), []))
        if len(found) != 1:
            found = free(self.by_short_name.get(short_name(record.name), []))
        if len(found) == 1:
            return found[0], MATCH_NAME

        matches: list[_Entry] = []
        for address in record.addresses:
            for entry in free(self.by_address.get(_normal_address(address), [])):
                if entry not in matches:
                    matches.append(entry)
        if len(matches) == 1:
            return matches[0], MATCH_ADDRESS
        if len(matches) > 1:
            logger.warning(
                "%s matches %d systems by address (%s); it is listed as undocumented",
                record.identity,
                len(matches),
                ", ".join(entry.system.name for entry in matches),
            )
        return None, ""

    def _live_attributes(self, record: DiscoveredRecord, context: SourceContext) -> dict[str, str]:
        """The run-time facts of a record as System attributes.

        A guest's ``node`` attribute is the inventory name of its node's system, because
        the pct, qm and qm-api transports look that name up. The ``pve-node`` attribute of
        the node's system is the name that the Proxmox API uses.
        """
        attributes: dict[str, str] = {}
        if record.kind is RecordKind.KUBERNETES_NODE:
            attributes["kubernetes-cluster"] = context.name
            if record.status:
                attributes["kubernetes-status"] = record.status
        else:
            attributes.update(context.attributes)
            if record.kind is RecordKind.PROXMOX_NODE:
                attributes["pve-node"] = record.name
            if record.node:
                attributes["node"] = self.node_holders.get(
                    (record.source, record.node), record.node
                )
            if record.vmid is not None:
                attributes["vmid"] = str(record.vmid)
            if record.status:
                attributes["status"] = record.status
        attributes.update(record.attributes)
        return attributes

    def _attach(
        self, entry: _Entry, record: DiscoveredRecord, context: SourceContext, how: str
    ) -> None:
        system = entry.system
        attributes = dict(system.attributes)
        sources = dict(system.sources)
        if record.kind is RecordKind.PROXMOX_NODE:
            self.node_holders[(record.source, record.name)] = system.name
            for key, value in context.node_attributes.items():
                if key not in attributes:
                    attributes[key] = value
                    sources[key] = record.source
        for key, value in self._live_attributes(record, context).items():
            documented = attributes.get(key)
            if entry.documented and documented is not None and documented.lower() != value.lower():
                entry.mismatches.append(_mismatch(key, documented, value, record))
            attributes[key] = value
            sources[key] = record.source

        address = system.address
        if address is None and record.addresses:
            address = record.addresses[0]
            sources["address"] = record.source
        elif (
            address is not None
            and _ip(address) is not None
            and record.addresses
            and not _has_address(record, address)
        ):
            entry.mismatches.append(
                _mismatch("address", address, ", ".join(record.addresses), record)
            )

        if how != MATCH_NAME and short_name(record.name) != short_name(system.name):
            entry.mismatches.append(_mismatch("name", system.name, record.name, record))

        entry.system = replace(system, address=address, attributes=attributes, sources=sources)
        entry.records.append(record)
        if entry.documented:
            entry.matched_by[record.identity] = how
        if address and address != system.address:
            self.by_address.setdefault(_normal_address(address), []).append(entry)

    def _undocumented(self, record: DiscoveredRecord, context: SourceContext) -> _Entry:
        name = self._unique_name(record, context)
        system_type = record.kind.value
        address = record.addresses[0] if record.addresses else None
        method, user, port, jump, credentials, method_source = self._derive_access(
            record, context, system_type, address
        )

        attributes: dict[str, str] = {}
        if record.kind is RecordKind.PROXMOX_NODE:
            self.node_holders[(record.source, record.name)] = name
            attributes.update(context.node_attributes)
        attributes.update(self._live_attributes(record, context))

        sources = {key: record.source for key in attributes}
        sources.update(name=record.source, type=record.source, tier=DERIVED, access=method_source)
        if address:
            sources["address"] = record.source
        for key, value in (
            ("user", user),
            ("port", port),
            ("jump", jump),
            ("credentials", credentials),
        ):
            if value is not None:
                sources[key] = method_source

        system = System(
            name=name,
            type=system_type,
            tier=DEFAULT_TIER,
            access=method,
            address=address,
            port=port,
            user=user,
            jump=jump,
            credentials=credentials,
            managed=method is not AccessMethod.NONE or _derivable(record),
            attributes=attributes,
            source=None,
            sources=sources,
        )
        logger.info(
            "%s (%s) is not in the docs; added as undocumented system %s with access %s",
            record.identity,
            record.name,
            name,
            method.value,
        )
        return _Entry(system, documented=False, records=[record])

    def _unique_name(self, record: DiscoveredRecord, context: SourceContext) -> str:
        base = _FORBIDDEN_NAME_CHARACTERS.sub("-", record.name).strip("-") or record.id.replace(
            "/", "-"
        )
        candidates = [base]
        if record.vmid is not None:
            candidates.append(f"{base}-{record.vmid}")
        candidates.append(f"{base}-{context.name}")
        for candidate in candidates:
            if candidate.casefold() not in self.names:
                if candidate != base:
                    logger.warning(
                        "%s is named %s like another system; it is listed as %s",
                        record.identity,
                        record.name,
                        candidate,
                    )
                return candidate
        suffix = 2
        while f"{base}-{suffix}".casefold() in self.names:
            suffix += 1
        return f"{base}-{suffix}"

    def _node_holder(self, record: DiscoveredRecord) -> str | None:
        if record.node is None:
            return None
        return self.node_holders.get((record.source, record.node), record.node)

    def _derive_access(
        self,
        record: DiscoveredRecord,
        context: SourceContext,
        system_type: str,
        address: str | None,
    ) -> tuple[AccessMethod, str | None, int | None, str | None, str | None, str]:
        """Return method, user, port, jump, credentials and the provenance of the method."""
        if record.kind in (RecordKind.QEMU, RecordKind.LXC) and record.status != "running":
            return AccessMethod.NONE, None, None, None, None, DERIVED

        pattern = self.patterns.get(system_type)
        if pattern is not None and pattern.method is not None:
            method = pattern.method
            needs_address = method in (AccessMethod.SSH, AccessMethod.TCP)
            if needs_address and address is None:
                return AccessMethod.NONE, None, None, None, None, DERIVED
            jump = pattern.jump
            if method is AccessMethod.PCT and jump is None:
                jump = self._node_holder(record)
            credentials = context.credentials if method is AccessMethod.QM_API else None
            return method, pattern.user, pattern.port, jump, credentials, DOCS

        if record.kind is RecordKind.QEMU:
            return AccessMethod.QM_API, None, None, None, context.credentials, DERIVED
        if record.kind is RecordKind.LXC:
            return AccessMethod.PCT, None, None, self._node_holder(record), None, DERIVED
        return AccessMethod.NONE, None, None, None, None, DERIVED


def _derivable(record: DiscoveredRecord) -> bool:
    """Whether a guest that is not running would get a derived access method once it runs."""
    return record.kind in (RecordKind.QEMU, RecordKind.LXC)


def _with_documented_sources(entry: _Entry) -> System:
    """Return the system with "docs" as the provenance of every field the merge did not set."""
    system = entry.system
    sources = dict(system.sources)
    for name in _SYSTEM_FIELDS:
        value = getattr(system, name)
        if value is not None and name not in sources:
            sources[name] = DOCS
    for key in system.attributes:
        sources.setdefault(key, DOCS)
    return replace(system, sources=sources)


def _state(entry: _Entry, contexts: Mapping[str, SourceContext]) -> DiscoveryState:
    if not entry.documented:
        return DiscoveryState.UNDOCUMENTED
    if entry.records:
        return DiscoveryState.MATCHED
    expected = [context for context in contexts.values() if _expected_in(entry.system, context)]
    if any(context.state is SourceState.DOWN for context in expected):
        return DiscoveryState.UNVERIFIED
    if any(context.state is SourceState.UP for context in expected):
        return DiscoveryState.NOT_FOUND
    return DiscoveryState.DOCUMENTED


def _expected_in(system: System, context: SourceContext) -> bool:
    """Whether the docs say that this source should list the system.

    A ``cluster`` attribute that names the source decides for every kind. Without one, a
    system with a VMID or a pct, qm or qm-api access method is expected in every
    Proxmox source.
    """
    cluster = system.attributes.get("cluster")
    if cluster:
        return cluster.casefold() == context.name.casefold()
    if context.kind != "proxmox":
        return False
    return "vmid" in system.attributes or system.access in _PROXMOX_GUEST_METHODS


def _mismatch(
    key: str, documented: str, discovered: str, record: DiscoveredRecord
) -> dict[str, Any]:
    return {
        "field": key,
        "documented": documented,
        "discovered": discovered,
        "source": record.source,
        "record": record.identity,
    }


def _ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value) if value else None
    except ValueError:
        return None


def _normal_address(value: str) -> str:
    address = _ip(value)
    return str(address) if address is not None else value.rstrip(".").lower()


def _has_address(record: DiscoveredRecord, address: str) -> bool:
    return _normal_address(address) in {_normal_address(item) for item in record.addresses}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
