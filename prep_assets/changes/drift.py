"""Compare two snapshots of the fleet and judge each difference (the MONITOR step).

A difference is expected when a commit or a maintenance window found by the GIT
REVIEW step explains it, and its row names that commit. Any other difference is
unexpected. Snapshots are plain dicts,
so they can be stored as JSON between runs.
"""

import copy
import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prep_assets.changes.git_review import (
    ChangeContext,
    ChangeEvent,
    EventKind,
    EventSource,
    MaintenanceWindow,
    format_utc,
)
from prep_assets.models import AccessState, System, SystemCheck, ToolState

logger = logging.getLogger(__name__)

# Fields of System.to_dict whose change is reported, with the kind of row they produce.
_COMPARED_FIELDS = ("address", "type", "tier")

# SourceState values as stored in Snapshot.sources (prep_assets.inventory.discovery.records).
SOURCE_UP = "up"
SOURCE_DOWN = "down"
# Provenance values of System.sources that name no discovery source.
_NON_SOURCE_ORIGINS = frozenset({"docs", "derived"})
# Statuses that a guest or node returns to when it recovers, so a change to them is expected.
_HEALTHY_STATUSES = frozenset({"running", "online", "Ready"})
_SOURCE_KIND_LABELS = {"proxmox": "Proxmox cluster", "kubernetes": "Kubernetes cluster"}

# Tool states ordered from worst to best. Other states (unknown, not_applicable)
# follow from access or the system type, which other rows already report.
_TOOL_RANK = {
    ToolState.MISSING.value: 0,
    ToolState.OUTDATED.value: 1,
    ToolState.INSTALLED.value: 2,
}

_SOURCE_LABELS = {
    (EventKind.DECOMMISSION, EventSource.TRAILER): "Decommission trailer",
    (EventKind.DECOMMISSION, EventSource.INVENTORY_DIFF): "inventory row removed",
    (EventKind.DECOMMISSION, EventSource.KEYWORD): "commit subject",
    (EventKind.NEW_SYSTEM, EventSource.TRAILER): "New-System trailer",
    (EventKind.NEW_SYSTEM, EventSource.INVENTORY_DIFF): "inventory row added",
}


class DriftKind(enum.StrEnum):
    SYSTEM_ADDED = "system_added"
    SYSTEM_REMOVED = "system_removed"
    # A discovered guest or node that kept its identity (source and id) under another name.
    RENAMED = "renamed"
    # A Proxmox guest that runs on another node.
    MOVED = "moved"
    # The status that a discovery source reports: running, stopped, online, Ready, ...
    STATUS_CHANGED = "status_changed"
    ACCESS_CHANGED = "access_changed"
    TOOL_CHANGED = "tool_changed"
    ADDRESS_CHANGED = "address_changed"
    TYPE_CHANGED = "type_changed"
    TIER_CHANGED = "tier_changed"


_FIELD_KINDS = {
    "address": DriftKind.ADDRESS_CHANGED,
    "type": DriftKind.TYPE_CHANGED,
    "tier": DriftKind.TIER_CHANGED,
}
_KIND_ORDER = {kind: index for index, kind in enumerate(DriftKind)}


class Verdict(enum.StrEnum):
    EXPECTED = "EXPECTED"
    UNEXPECTED = "UNEXPECTED"


@dataclass
class Snapshot:
    """The state of every system at one check, as stored between runs."""

    # System.to_dict() per system name.
    systems: dict[str, dict[str, Any]] = field(default_factory=dict)
    # AccessState value per system name.
    access: dict[str, str] = field(default_factory=dict)
    # ToolState value per command, per system name.
    tools: dict[str, dict[str, str]] = field(default_factory=dict)
    # DiscoveredRecord.to_dict() of every record merged into a system, per system name.
    discovered: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # SourceState value per discovery source key, such as {"proxmox:homelab": "up"}.
    sources: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_results(cls, systems: Iterable[System], checks: Iterable[SystemCheck]) -> "Snapshot":
        """Build a snapshot from the inventory and the results of one check."""
        snapshot = cls(systems={system.name: system.to_dict() for system in systems})
        for check in checks:
            snapshot.access[check.system] = check.access.state.value
            snapshot.tools[check.system] = {tool.command: tool.state.value for tool in check.tools}
        return snapshot

    def to_dict(self) -> dict[str, Any]:
        return {
            "systems": {name: dict(data) for name, data in self.systems.items()},
            "access": dict(self.access),
            "tools": {name: dict(tools) for name, tools in self.tools.items()},
            "discovered": {
                name: [dict(record) for record in records]
                for name, records in self.discovered.items()
            },
            "sources": dict(self.sources),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Snapshot":
        """Read a stored snapshot; snapshots stored before discovery existed have no records."""
        return cls(
            systems={
                name: copy.deepcopy(values) for name, values in data.get("systems", {}).items()
            },
            access=dict(data.get("access", {})),
            tools={name: dict(tools) for name, tools in data.get("tools", {}).items()},
            discovered={
                name: [copy.deepcopy(record) for record in records]
                for name, records in data.get("discovered", {}).items()
            },
            sources=dict(data.get("sources", {})),
        )

    def carry_down_sources(self, previous: "Snapshot") -> "Snapshot":
        """Return a copy that keeps what ``previous`` knew from the sources that are down now.

        A source that is down lists nothing, which must not read as "every system of
        that source is gone". So the systems that only that source knew are copied from
        ``previous`` with their access and tool states, and the records, fields and
        attributes that came from it are restored in the other systems. The next
        comparison then starts from the last state the source reported.
        """
        down = {key for key, state in self.sources.items() if state == SOURCE_DOWN}
        if not down:
            return self
        up = {key for key, state in self.sources.items() if state == SOURCE_UP}
        carried = Snapshot.from_dict(self.to_dict())
        for name, records in previous.discovered.items():
            kept = [record for record in records if record.get("source") in down]
            if not kept or name not in previous.systems:
                continue
            if name not in carried.systems:
                carried.systems[name] = copy.deepcopy(previous.systems[name])
                carried.discovered[name] = [copy.deepcopy(record) for record in kept]
                if name in previous.access:
                    carried.access[name] = previous.access[name]
                if name in previous.tools:
                    carried.tools[name] = dict(previous.tools[name])
                continue
            present = {record.get("source") for record in carried.discovered.get(name, [])}
            carried.discovered.setdefault(name, []).extend(
                copy.deepcopy(record) for record in kept if record.get("source") not in present
            )
            _restore_fields(carried.systems[name], previous.systems[name], down, up)
        return carried


@dataclass(frozen=True)
class DriftRow:
    """One difference between the previous and the current snapshot, with its verdict."""

    system: str
    kind: DriftKind
    before: str | None
    after: str | None
    verdict: Verdict
    # A full sentence for the report.
    reason: str
    # Short sha of the commit that explains the change, if any.
    commit_sha: str | None = None
    # The maintenance window that explains the change, as an ISO 8601 interval in UTC.
    window: str | None = None
    # The command, for tool_changed rows.
    tool: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "kind": self.kind.value,
            "before": self.before,
            "after": self.after,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "commit_sha": self.commit_sha,
            "window": self.window,
            "tool": self.tool,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DriftRow":
        return cls(
            system=data["system"],
            kind=DriftKind(data["kind"]),
            before=data.get("before"),
            after=data.get("after"),
            verdict=Verdict(data["verdict"]),
            reason=data["reason"],
            commit_sha=data.get("commit_sha"),
            window=data.get("window"),
            tool=data.get("tool"),
        )


@dataclass(frozen=True)
class _Explanation:
    """The reason a change is expected: the sentence and the commit or window behind it."""

    reason: str
    commit_sha: str | None = None
    window: str | None = None


def _state_words(state: str) -> str:
    return state.replace("_", " ")


def _value_words(value: Any) -> str:
    return "(empty)" if value is None else str(value)


def _label(event: ChangeEvent) -> str:
    return _SOURCE_LABELS.get((event.kind, event.source), event.source.value)


def _current_decommission(changes: ChangeContext, system: str) -> ChangeEvent | None:
    """Return the decommission event of ``system`` unless a later commit added it again."""
    for event in reversed(changes.events):
        if event.system != system:
            continue
        if event.kind is EventKind.DECOMMISSION:
            return event
        if event.kind is EventKind.NEW_SYSTEM:
            return None
    return None


def _decommission_explanation(changes: ChangeContext, system: str) -> _Explanation | None:
    event = _current_decommission(changes, system)
    if event is None:
        return None
    return _Explanation(
        f"Commit {event.commit.short_sha} decommissioned {system} ({_label(event)}).",
        commit_sha=event.commit.short_sha,
    )


def _window_explanation(changes: ChangeContext, system: str, now: datetime) -> _Explanation | None:
    window: MaintenanceWindow | None = changes.window_covering(system, now)
    if window is None:
        return None
    return _Explanation(
        f"{system} is in the maintenance window {window.interval} "
        f"set by commit {window.commit.short_sha}.",
        commit_sha=window.commit.short_sha,
        window=window.interval,
    )


def _row(
    system: str,
    kind: DriftKind,
    before: str | None,
    after: str | None,
    explanation: _Explanation | None,
    unexpected_reason: str,
    tool: str | None = None,
) -> DriftRow:
    if explanation is None:
        return DriftRow(
            system, kind, before, after, Verdict.UNEXPECTED, unexpected_reason, tool=tool
        )
    return DriftRow(
        system,
        kind,
        before,
        after,
        Verdict.EXPECTED,
        explanation.reason,
        commit_sha=explanation.commit_sha,
        window=explanation.window,
        tool=tool,
    )


def _membership_rows(
    previous: Snapshot,
    current: Snapshot,
    changes: ChangeContext,
    now: datetime,
    renamed: set[tuple[str, str]],
) -> list[DriftRow]:
    """Return rows for systems that left or joined the inventory, except renamed ones."""
    rows: list[DriftRow] = []
    renamed_from = {old for old, _ in renamed}
    renamed_to = {new for _, new in renamed}
    for system in sorted(previous.systems.keys() - current.systems.keys() - renamed_from):
        sources = _record_sources(previous, system)
        if sources and not sources & _queried_sources(current):
            logger.info(
                "%s left the inventory because %s is no longer configured or is disabled; "
                "not reported",
                system,
                ", ".join(sorted(sources)),
            )
            continue
        explanation = _decommission_explanation(changes, system) or _window_explanation(
            changes, system, now
        )
        if _is_documented(previous.systems[system]) or not sources:
            reason = (
                f"{system} is no longer in the inventory, and no commit since the last "
                "check decommissions it."
            )
        else:
            reason = (
                f"{system} is no longer found in {_source_labels(sources)}, and no commit since "
                f"the last check decommissions it and no maintenance window covers "
                f"{format_utc(now)}."
            )
        rows.append(
            _row(system, DriftKind.SYSTEM_REMOVED, "present", "absent", explanation, reason)
        )

    for system in sorted(current.systems.keys() - previous.systems.keys() - renamed_to):
        sources = _record_sources(current, system)
        documented = _is_documented(current.systems[system]) or not sources
        if not documented and not sources & _queried_sources(previous):
            # The first pass of a newly configured source finds everything: not a change.
            logger.info(
                "%s is found by %s, which the previous check did not query; not reported",
                system,
                ", ".join(sorted(sources)),
            )
            continue
        addition = changes.new_system_for(system)
        explanation = None
        if addition is not None:
            explanation = _Explanation(
                f"Commit {addition.commit.short_sha} added {system} as a new system "
                f"({_label(addition)}).",
                commit_sha=addition.commit.short_sha,
            )
        if documented:
            reason = (
                f"{system} is new in the inventory, but no commit since the last check "
                "adds it (undocumented addition)."
            )
        else:
            reason = (
                f"{system} was found in {_source_labels(sources)} but is not in the inventory, "
                "and no commit since the last check adds it (undocumented system)."
            )
        rows.append(_row(system, DriftKind.SYSTEM_ADDED, "absent", "present", explanation, reason))
    return rows


def _field_rows(
    system: str,
    before: dict[str, Any],
    after: dict[str, Any],
    changes: ChangeContext,
    now: datetime,
) -> list[DriftRow]:
    rows: list[DriftRow] = []
    for name in _COMPARED_FIELDS:
        old_value = before.get(name)
        new_value = after.get(name)
        if old_value == new_value:
            continue

        if _from_discovery(before, name) or _from_discovery(after, name):
            rows.append(_discovered_field_row(system, name, old_value, new_value, changes, now))
            continue
        explanation = None
        row_change = changes.inventory_change_for(system)
        addition = changes.new_system_for(system)
        if row_change is not None:
            explanation = _Explanation(
                f"Commit {row_change.commit.short_sha} changed the inventory row of {system}.",
                commit_sha=row_change.commit.short_sha,
            )
        elif addition is not None:
            explanation = _Explanation(
                f"Commit {addition.commit.short_sha} added {system} to the inventory again.",
                commit_sha=addition.commit.short_sha,
            )
        rows.append(
            _row(
                system,
                _FIELD_KINDS[name],
                None if old_value is None else str(old_value),
                None if new_value is None else str(new_value),
                explanation,
                f"The {name} of {system} changed from {_value_words(old_value)} to "
                f"{_value_words(new_value)}, but no "
                "commit since the last check changed its inventory row.",
            )
        )
    return rows


def _access_row(
    system: str,
    before: str | None,
    after: str | None,
    changes: ChangeContext,
    now: datetime,
) -> DriftRow | None:
    if before is None or after is None or before == after:
        return None

    if after == AccessState.REACHABLE.value:
        return DriftRow(
            system,
            DriftKind.ACCESS_CHANGED,
            before,
            after,
            Verdict.EXPECTED,
            f"Access recovered: {system} is reachable again.",
        )

    explanation = _decommission_explanation(changes, system) or _window_explanation(
        changes, system, now
    )
    if explanation is None and after == AccessState.NOT_CONTACTED.value:
        # A system is not contacted when its inventory row sets access "none" or marks it
        # unmanaged (System.contacted), so only a row change explains this state.
        row_change = changes.inventory_change_for(system)
        if row_change is not None:
            explanation = _Explanation(
                f"Commit {row_change.commit.short_sha} changed the inventory row of {system}, "
                "so it is no longer contacted.",
                commit_sha=row_change.commit.short_sha,
            )
    return _row(
        system,
        DriftKind.ACCESS_CHANGED,
        before,
        after,
        explanation,
        f"{system} was {_state_words(before)} at the last check and is {_state_words(after)} "
        f"now, and no maintenance window covers {format_utc(now)}.",
    )


def _tool_rows(
    system: str,
    before: dict[str, str],
    after: dict[str, str],
    changes: ChangeContext,
    now: datetime,
) -> list[DriftRow]:
    rows: list[DriftRow] = []
    for command in sorted(before.keys() & after.keys()):
        old_state = before[command]
        new_state = after[command]
        if old_state == new_state or old_state not in _TOOL_RANK or new_state not in _TOOL_RANK:
            continue

        if _TOOL_RANK[new_state] > _TOOL_RANK[old_state]:
            if new_state == ToolState.INSTALLED.value and old_state == ToolState.MISSING.value:
                reason = f"{command} was provisioned on {system}."
            elif new_state == ToolState.INSTALLED.value:
                reason = f"{command} was updated on {system}."
            else:
                reason = f"{command} was provisioned on {system}, below the minimum version."
            rows.append(
                DriftRow(
                    system,
                    DriftKind.TOOL_CHANGED,
                    old_state,
                    new_state,
                    Verdict.EXPECTED,
                    reason,
                    tool=command,
                )
            )
            continue

        explanation = (
            _decommission_explanation(changes, system)
            or _window_explanation(changes, system, now)
            or _config_change_explanation(changes, system)
        )
        rows.append(
            _row(
                system,
                DriftKind.TOOL_CHANGED,
                old_state,
                new_state,
                explanation,
                f"{command} on {system} was {_state_words(old_state)} at the last check and "
                f"is {_state_words(new_state)} now, and no maintenance window or commit since "
                "the last check explains it.",
                tool=command,
            )
        )
    return rows


def _config_change_explanation(changes: ChangeContext, system: str) -> _Explanation | None:
    config_changes = changes.config_changes_for(system)
    if not config_changes:
        return None
    latest = config_changes[-1]
    return _Explanation(
        f"Commit {latest.commit.short_sha} changed the configuration of {system} "
        f"({', '.join(latest.files)}).",
        commit_sha=latest.commit.short_sha,
    )


def _sort_key(row: DriftRow) -> tuple[bool, str, int, str]:
    return (
        row.verdict is not Verdict.UNEXPECTED,
        row.system,
        _KIND_ORDER[row.kind],
        row.tool or "",
    )


def compute_drift(
    previous: Snapshot | None,
    current: Snapshot,
    changes: ChangeContext,
    now: datetime,
) -> list[DriftRow]:
    """Compare two snapshots and return one row per difference, unexpected rows first.

    Returns no rows when there is no previous snapshot (first run). A system that left
    the inventory gets only its system_removed row, not also access or tool rows. A
    system that a commit decommissioned but that is still listed gets expected access
    and tool rows that name that commit.
    ``now`` must be timezone-aware and is the time that maintenance windows must cover.

    Discovered records are compared by identity (source and id), so a renamed guest
    gets one renamed row instead of a removal and an addition. Nothing from a
    source that is down is reported as removed: ``Snapshot.carry_down_sources``
    keeps what the previous snapshot knew from it. Call that method on ``current``
    before storing it, so the next comparison starts from the same state.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be a timezone-aware datetime, got {now.isoformat()}")
    if previous is None:
        logger.info("No previous snapshot; drift is computed from the next run on")
        return []

    current = current.carry_down_sources(previous)
    renamed = _rename_pairs(previous, current)
    rows = _membership_rows(previous, current, changes, now, renamed)
    for old, new in sorted(renamed):
        rows.append(_rename_row(old, new, previous, current, changes, now))
        if old not in current.systems and new not in previous.systems:
            rows.extend(_field_rows(new, previous.systems[old], current.systems[new], changes, now))
    rows.extend(_live_rows(previous, current, changes, now))
    for system in sorted(previous.systems.keys() & current.systems.keys()):
        rows.extend(
            _field_rows(system, previous.systems[system], current.systems[system], changes, now)
        )
        access_row = _access_row(
            system, previous.access.get(system), current.access.get(system), changes, now
        )
        if access_row is not None:
            rows.append(access_row)
        rows.extend(
            _tool_rows(
                system,
                previous.tools.get(system, {}),
                current.tools.get(system, {}),
                changes,
                now,
            )
        )

    rows.sort(key=_sort_key)
    unexpected = sum(1 for row in rows if row.verdict is Verdict.UNEXPECTED)
    logger.info("Drift since the last check: %d rows, %d unexpected", len(rows), unexpected)
    return rows


# --------------------------------------------------------------------------- discovery


def _restore_fields(
    current: dict[str, Any], previous: dict[str, Any], down: set[str], up: set[str]
) -> None:
    """Put back the fields and attributes whose previous value came from a source now down.

    A value that a source that is up set in this pass is kept.
    """
    previous_origins = previous.get("sources") or {}
    previous_attributes = previous.get("attributes") or {}
    origins = current.setdefault("sources", {})
    attributes = current.setdefault("attributes", {})
    for key, origin in previous_origins.items():
        if origin not in down or origins.get(key) in up:
            continue
        if key in previous_attributes:
            attributes[key] = previous_attributes[key]
        elif key in previous and key not in ("attributes", "sources", "name"):
            current[key] = previous[key]
        else:
            continue
        origins[key] = origin


def _identity(record: dict[str, Any]) -> str:
    return f"{record.get('source')}/{record.get('id')}"


def _records_by_identity(snapshot: Snapshot) -> dict[str, tuple[str, dict[str, Any]]]:
    """Return (system name, record) per record identity."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, records in snapshot.discovered.items():
        for record in records:
            found.setdefault(_identity(record), (name, record))
    return found


def _queried_sources(snapshot: Snapshot) -> set[str]:
    """Return the keys of the sources that were configured and enabled at that check."""
    return {key for key, state in snapshot.sources.items() if state in (SOURCE_UP, SOURCE_DOWN)}


def _record_sources(snapshot: Snapshot, system: str) -> set[str]:
    return {str(record.get("source")) for record in snapshot.discovered.get(system, [])}


def _is_documented(system: dict[str, Any]) -> bool:
    """Return whether the system came from an inventory row (it has a source location)."""
    return bool(system.get("source"))


def _from_discovery(system: dict[str, Any], field_name: str) -> bool:
    origin = (system.get("sources") or {}).get(field_name)
    return origin is not None and origin not in _NON_SOURCE_ORIGINS


def _source_label(key: str) -> str:
    """Return "Proxmox cluster homelab" for "proxmox:homelab"; other keys as they are."""
    kind, _, name = key.partition(":")
    label = _SOURCE_KIND_LABELS.get(kind)
    return f"{label} {name}" if label and name else key


def _source_labels(keys: Iterable[str]) -> str:
    return " and ".join(_source_label(key) for key in sorted(keys))


def _rename_pairs(previous: Snapshot, current: Snapshot) -> set[tuple[str, str]]:
    """Return (old name, new name) for every record that belongs to another system now."""
    before = _records_by_identity(previous)
    after = _records_by_identity(current)
    return {
        (before[identity][0], after[identity][0])
        for identity in before.keys() & after.keys()
        if before[identity][0] != after[identity][0]
    }


def _inventory_row_explanation(changes: ChangeContext, *systems: str) -> _Explanation | None:
    for system in systems:
        row_change = changes.inventory_change_for(system)
        if row_change is not None:
            return _Explanation(
                f"Commit {row_change.commit.short_sha} changed the inventory row of {system}.",
                commit_sha=row_change.commit.short_sha,
            )
    return None


def _rename_row(
    old: str,
    new: str,
    previous: Snapshot,
    current: Snapshot,
    changes: ChangeContext,
    now: datetime,
) -> DriftRow:
    explanation = None
    addition = changes.new_system_for(new)
    if addition is not None:
        explanation = _Explanation(
            f"Commit {addition.commit.short_sha} added {new} to the inventory "
            f"({_label(addition)}).",
            commit_sha=addition.commit.short_sha,
        )
    explanation = (
        explanation
        or _inventory_row_explanation(changes, new, old)
        or _window_explanation(changes, old, now)
        or _window_explanation(changes, new, now)
    )
    sources = _record_sources(current, new) & _record_sources(previous, old)
    return _row(
        new,
        DriftKind.RENAMED,
        old,
        new,
        explanation,
        f"{old} is now named {new} in {_source_labels(sources)}, and no commit since the last "
        f"check renames it in the inventory and no maintenance window covers {format_utc(now)}.",
    )


def _live_rows(
    previous: Snapshot, current: Snapshot, changes: ChangeContext, now: datetime
) -> list[DriftRow]:
    """Return renamed, moved, status and found/no longer found rows of discovered records."""
    before = _records_by_identity(previous)
    after = _records_by_identity(current)
    rows: list[DriftRow] = []
    for identity in sorted(before.keys() & after.keys()):
        old_holder, old_record = before[identity]
        holder, record = after[identity]
        rows.extend(_record_rows(holder, old_holder, old_record, record, changes, now))

    for identity in sorted(before.keys() - after.keys()):
        holder, record = before[identity]
        source = str(record.get("source"))
        # A holder that left the inventory has its membership row already.
        if holder not in current.systems or current.sources.get(source) != SOURCE_UP:
            continue
        explanation = _decommission_explanation(changes, holder) or _window_explanation(
            changes, holder, now
        )
        rows.append(
            _row(
                holder,
                DriftKind.SYSTEM_REMOVED,
                "present",
                "absent",
                explanation,
                f"{holder} is no longer found in {_source_label(source)}, although the inventory "
                "still lists it, and no commit since the last check decommissions it and no "
                f"maintenance window covers {format_utc(now)}.",
            )
        )

    for identity in sorted(after.keys() - before.keys()):
        holder, record = after[identity]
        source = str(record.get("source"))
        if holder not in previous.systems or source not in _queried_sources(previous):
            continue
        explanation = None
        if _is_documented(current.systems.get(holder, {})):
            explanation = _Explanation(f"{holder} is in the inventory and is now found.")
        rows.append(
            _row(
                holder,
                DriftKind.SYSTEM_ADDED,
                "absent",
                "present",
                explanation,
                f"{holder} is now also found in {_source_label(source)}, but is not in the "
                "inventory.",
            )
        )
    return rows


def _record_rows(
    holder: str,
    old_holder: str,
    before: dict[str, Any],
    after: dict[str, Any],
    changes: ChangeContext,
    now: datetime,
) -> list[DriftRow]:
    """Compare two versions of one record: its name (same holder only), node and status."""
    rows: list[DriftRow] = []
    label = _source_label(str(after.get("source")))
    if holder == old_holder and before.get("name") != after.get("name"):
        explanation = _inventory_row_explanation(changes, holder) or _window_explanation(
            changes, holder, now
        )
        rows.append(
            _row(
                holder,
                DriftKind.RENAMED,
                before.get("name"),
                after.get("name"),
                explanation,
                f"{holder} is named {after.get('name')} in {label} now, not "
                f"{before.get('name')}, and no commit since the last check changed its inventory "
                f"row and no maintenance window covers {format_utc(now)}.",
            )
        )

    old_node, new_node = before.get("node"), after.get("node")
    if old_node and new_node and old_node != new_node:
        explanation = _window_explanation(changes, holder, now) or _inventory_row_explanation(
            changes, holder
        )
        rows.append(
            _row(
                holder,
                DriftKind.MOVED,
                old_node,
                new_node,
                explanation,
                f"{holder} moved from node {old_node} to {new_node} in {label}, and no "
                f"maintenance window covers {format_utc(now)} and no commit since the last "
                "check changed its inventory row.",
            )
        )

    old_status, new_status = before.get("status"), after.get("status")
    if old_status and new_status and old_status != new_status:
        rows.append(_status_row(holder, old_status, new_status, label, changes, now))
    return rows


def _status_row(
    holder: str,
    before: str,
    after: str,
    label: str,
    changes: ChangeContext,
    now: datetime,
) -> DriftRow:
    if after in _HEALTHY_STATUSES:
        return DriftRow(
            holder,
            DriftKind.STATUS_CHANGED,
            before,
            after,
            Verdict.EXPECTED,
            f"{holder} is {after} again in {label}.",
        )
    explanation = (
        _decommission_explanation(changes, holder)
        or _window_explanation(changes, holder, now)
        or _inventory_row_explanation(changes, holder)
    )
    return _row(
        holder,
        DriftKind.STATUS_CHANGED,
        before,
        after,
        explanation,
        f"{holder} was {before} at the last check and is {after} now in {label}, and no "
        f"maintenance window covers {format_utc(now)}.",
    )


def _discovered_field_row(
    system: str,
    name: str,
    old_value: Any,
    new_value: Any,
    changes: ChangeContext,
    now: datetime,
) -> DriftRow:
    """A change of a field whose value a discovery source reported, such as a guest's address."""
    explanation = _inventory_row_explanation(changes, system) or _window_explanation(
        changes, system, now
    )
    return _row(
        system,
        _FIELD_KINDS[name],
        None if old_value is None else str(old_value),
        None if new_value is None else str(new_value),
        explanation,
        f"The {name} of {system} that discovery reports changed from {_value_words(old_value)} "
        f"to {_value_words(new_value)}, and no commit since the last check changed its "
        f"inventory row and no maintenance window covers {format_utc(now)}.",
    )
