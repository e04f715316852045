"""Compare two snapshots of the fleet and judge each difference (the MONITOR step).

A difference is expected when a commit or a maintenance window found by the GIT
REVIEW step explains it, and its row names that commit. Any other difference is
unexpected. Snapshots are plain dicts,
so they can be stored as JSON between runs.
"""

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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Snapshot":
        return cls(
            systems={name: dict(values) for name, values in data.get("systems", {}).items()},
            access=dict(data.get("access", {})),
            tools={name: dict(tools) for name, tools in data.get("tools", {}).items()},
        )


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
    previous: Snapshot, current: Snapshot, changes: ChangeContext
) -> list[DriftRow]:
    rows: list[DriftRow] = []
    for system in sorted(previous.systems.keys() - current.systems.keys()):
        decommission = changes.decommission_for(system)
        explanation = None
        if decommission is not None:
            explanation = _Explanation(
                f"Commit {decommission.commit.short_sha} decommissioned {system} "
                f"({_label(decommission)}).",
                commit_sha=decommission.commit.short_sha,
            )
        rows.append(
            _row(
                system,
                DriftKind.SYSTEM_REMOVED,
                "present",
                "absent",
                explanation,
                f"{system} is no longer in the inventory, and no commit since the last "
                "check decommissions it.",
            )
        )

    for system in sorted(current.systems.keys() - previous.systems.keys()):
        addition = changes.new_system_for(system)
        explanation = None
        if addition is not None:
            explanation = _Explanation(
                f"Commit {addition.commit.short_sha} added {system} as a new system "
                f"({_label(addition)}).",
                commit_sha=addition.commit.short_sha,
            )
        rows.append(
            _row(
                system,
                DriftKind.SYSTEM_ADDED,
                "absent",
                "present",
                explanation,
                f"{system} is new in the inventory, but no commit since the last check "
                "adds it (undocumented addition).",
            )
        )
    return rows


def _field_rows(
    system: str, before: dict[str, Any], after: dict[str, Any], changes: ChangeContext
) -> list[DriftRow]:
    rows: list[DriftRow] = []
    for name in _COMPARED_FIELDS:
        old_value = before.get(name)
        new_value = after.get(name)
        if old_value == new_value:
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
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be a timezone-aware datetime, got {now.isoformat()}")
    if previous is None:
        logger.info("No previous snapshot; drift is computed from the next run on")
        return []

    rows = _membership_rows(previous, current, changes)
    for system in sorted(previous.systems.keys() & current.systems.keys()):
        rows.extend(_field_rows(system, previous.systems[system], current.systems[system], changes))
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
