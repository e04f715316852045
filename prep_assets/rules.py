"""The RULES step: turn drift, access and tool results into actions.

| situation                        | action                                  |
|----------------------------------|-----------------------------------------|
| new system appeared              | provision tools, collect baselines      |
| system disappeared, unexpected   | alert                                   |
| system disappeared, decommission | none (recorded with its commit)         |
| type, tier or address changed    | collect baselines again                 |
| tools missing or outdated        | provision (not on read-only systems)    |
| access broken                    | investigate                             |
| access broken, maintenance window| none (recorded with the window's commit)|
"""

import dataclasses
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prep_assets.changes.git_review import MaintenanceWindow
from prep_assets.models import AccessState, System, SystemCheck, ToolState


class Action(enum.StrEnum):
    PROVISION = "provision"
    BASELINE = "baseline"
    ALERT = "alert"
    INVESTIGATE = "investigate"
    RECORD = "record"


@dataclass(frozen=True)
class RuleAction:
    """One decision of the RULES step, with the fact that triggered it."""

    system: str
    action: Action
    reason: str
    trigger: str
    commit: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["action"] = self.action.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RuleAction":
        values = dict(data)
        values["action"] = Action(values["action"])
        return cls(**values)


# Access states that mean the system answered; anything else needs a person.
_ACCESS_OK = {AccessState.REACHABLE, AccessState.NOT_CONTACTED}
_STATE_CHANGES = {"type_changed", "tier_changed", "address_changed"}


def decide_actions(
    systems: Sequence[System],
    checks: Mapping[str, SystemCheck],
    drift_rows: Iterable[Any],
    windows: Sequence[MaintenanceWindow] = (),
) -> list[RuleAction]:
    """Apply the rules table to one pass and return the actions, most urgent first.

    ``windows`` are the maintenance windows in force during the pass. A system
    whose access broke inside one gets a record instead of an investigation.
    """
    windows_by_system = {window.system: window for window in windows}
    by_name = {system.name: system for system in systems}
    actions: list[RuleAction] = []

    for row in drift_rows:
        if row.kind == "system_added":
            actions.append(
                RuleAction(
                    row.system,
                    Action.PROVISION,
                    "new system: provision its tools",
                    "system_added",
                    row.commit_sha,
                )
            )
            actions.append(
                RuleAction(
                    row.system,
                    Action.BASELINE,
                    "new system: collect its baselines",
                    "system_added",
                    row.commit_sha,
                )
            )
        elif row.kind == "system_removed":
            if row.verdict == "UNEXPECTED":
                actions.append(
                    RuleAction(
                        row.system,
                        Action.ALERT,
                        f"system disappeared unexpectedly: {row.reason}",
                        "system_removed",
                    )
                )
            else:
                actions.append(
                    RuleAction(
                        row.system,
                        Action.RECORD,
                        f"system removed as planned: {row.reason}",
                        "system_removed",
                        row.commit_sha,
                    )
                )
        elif row.kind in _STATE_CHANGES:
            actions.append(
                RuleAction(
                    row.system,
                    Action.BASELINE,
                    f"{row.kind.replace('_', ' ')} from {row.before!r} to {row.after!r}: collect baselines again",
                    row.kind,
                    row.commit_sha,
                )
            )

    for name, check in sorted(checks.items()):
        system = by_name.get(name)
        if system is None:
            continue
        if check.access.state not in _ACCESS_OK:
            problem = f"access {check.access.state.value}: {check.access.message}".rstrip(": ")
            window = windows_by_system.get(name)
            if window is None:
                actions.append(RuleAction(name, Action.INVESTIGATE, problem, "access_broken"))
            else:
                actions.append(
                    RuleAction(
                        name,
                        Action.RECORD,
                        f"{problem}; expected during the maintenance window {window.interval}",
                        "access_broken",
                        window.commit.short_sha,
                    )
                )
        lacking = [
            t.command for t in check.tools if t.state in (ToolState.MISSING, ToolState.OUTDATED)
        ]
        if lacking and not system.read_only:
            actions.append(
                RuleAction(
                    name,
                    Action.PROVISION,
                    "tools missing or outdated: " + ", ".join(lacking),
                    "tools_missing",
                )
            )

    order = {
        Action.ALERT: 0,
        Action.INVESTIGATE: 1,
        Action.PROVISION: 2,
        Action.BASELINE: 3,
        Action.RECORD: 4,
    }
    return sorted(actions, key=lambda action: (order[action.action], action.system))
