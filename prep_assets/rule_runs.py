"""Turn the RULES step's actions into the runs that the rules sensor requests.

| action and trigger               | outcome                                             |
|----------------------------------|-----------------------------------------------------|
| provision, system_added          | run: check tools, provision (a plan when disabled)  |
| provision, tools_missing         | run: check tools, provision; skipped when disabled  |
| baseline                         | run: check access, collect baselines                |
| alert                            | logged as an error; listed in the status document   |
| investigate                      | an investigation item in the status document        |
| record                           | nothing to run                                      |

One run is requested per system, covering every step its actions need, and
each run ends with the status document so that it shows the new results. The
run's tags name the actions, triggers and reasons, so the run records why it ran.
"""

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prep_assets.rules import Action, RuleAction

CHECK_STEPS = ("access_status", "tool_status")
PROVISION_STEP = "provisioned_tools"
BASELINE_STEP = "baselines"
STATUS_STEP = "prep_status_doc"
STEP_ORDER = (*CHECK_STEPS, PROVISION_STEP, BASELINE_STEP, STATUS_STEP)

# Maximum length of a tag value, because Dagster shows tags in one line of the run list.
MAX_TAG_LENGTH = 500


@dataclass(frozen=True)
class RuleRun:
    """A run to request for one system: the asset steps and the actions it carries out."""

    system: str
    steps: tuple[str, ...]
    actions: tuple[RuleAction, ...]

    def tags(self, rule_actions_run: str | None = None) -> dict[str, str]:
        """Return the run tags that record why the run was requested."""
        tags = {
            "prep/actions": ",".join(dict.fromkeys(a.action.value for a in self.actions)),
            "prep/triggers": ",".join(dict.fromkeys(a.trigger for a in self.actions)),
            "prep/reasons": "; ".join(dict.fromkeys(a.reason for a in self.actions))[
                :MAX_TAG_LENGTH
            ],
        }
        if rule_actions_run:
            tags["prep/rule_actions_run"] = rule_actions_run
        return tags


@dataclass(frozen=True)
class RuleOutcome:
    """The sensor's handling of one action, for the log and the status document."""

    system: str
    action: str
    trigger: str
    reason: str
    outcome: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plan_rule_runs(
    actions: Sequence[RuleAction], provisioning_enabled: bool
) -> tuple[list[RuleRun], list[RuleOutcome]]:
    """Return the runs to request, one per system, and the outcome of every action."""
    steps_by_system: dict[str, set[str]] = {}
    actions_by_system: dict[str, list[RuleAction]] = {}
    outcomes: list[RuleOutcome] = []

    for action in actions:
        steps, outcome = _steps_for(action, provisioning_enabled)
        outcomes.append(
            RuleOutcome(action.system, action.action.value, action.trigger, action.reason, outcome)
        )
        if steps:
            steps_by_system.setdefault(action.system, set()).update(steps)
            actions_by_system.setdefault(action.system, []).append(action)

    runs = []
    for system in sorted(steps_by_system):
        steps = steps_by_system[system] | set(CHECK_STEPS) | {STATUS_STEP}
        ordered = tuple(step for step in STEP_ORDER if step in steps)
        runs.append(RuleRun(system, ordered, tuple(actions_by_system[system])))
    return runs, outcomes


def _steps_for(action: RuleAction, provisioning_enabled: bool) -> tuple[set[str], str]:
    if action.action is Action.PROVISION:
        if provisioning_enabled:
            return {PROVISION_STEP}, "run requested: check tools and install the missing ones"
        if action.trigger == "system_added":
            return {
                PROVISION_STEP
            }, "run requested: check tools and plan (provisioning is disabled)"
        return set(), "skipped: provisioning is disabled"
    if action.action is Action.BASELINE:
        return {BASELINE_STEP}, "run requested: collect baselines"
    if action.action is Action.ALERT:
        return set(), "alert"
    if action.action is Action.INVESTIGATE:
        return set(), "investigation item in the status document"
    return set(), "recorded"
