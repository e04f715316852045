"""The rules sensor: request the runs that the latest rule_actions call for.

Each tick reads the newest materialization of ``rule_actions``. When it is
newer than the cursor, the sensor requests one run per system as
``prep_assets.rule_runs`` decides, logs alerts and investigation items, and
stores what it did with every action under ``rule_runs`` in the state folder.
Runs that the sensor requests never include ``rule_actions``, so they cannot
trigger the sensor again.
"""

from dagster import (
    AssetKey,
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from prep_assets.defs.partitions import SYSTEMS_PARTITIONS
from prep_assets.defs.provisioning import ProvisioningResource
from prep_assets.defs.resources import StateResource
from prep_assets.rule_runs import STEP_ORDER, RuleOutcome, plan_rule_runs
from prep_assets.rules import RuleAction

RULE_ACTIONS = AssetKey("rule_actions")
# State-folder key of the sensor's record of what it did with each action.
RULE_RUNS_STATE_KEY = "rule_runs"


@sensor(
    name="rules_sensor",
    description="Requests tool checks, provisioning and baselines for the actions of rule_actions.",
    target=AssetSelection.assets(*STEP_ORDER),
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
)
def rules_sensor(
    context: SensorEvaluationContext,
    state: StateResource,
    provisioning: ProvisioningResource,
) -> SensorResult | SkipReason:
    """Request one run per system for the newest rule_actions that the cursor has not seen."""
    records = context.instance.fetch_materializations(RULE_ACTIONS, limit=1).records
    if not records:
        return SkipReason("rule_actions has not been materialized yet")
    event = records[0]
    if context.cursor and int(context.cursor) >= event.storage_id:
        return SkipReason(f"no rule_actions newer than event {context.cursor}")

    store = state.store(context.instance)
    stored = store.read(RULE_ACTIONS.to_user_string()) or []
    actions = [RuleAction.from_dict(data) for data in stored]
    runs, outcomes = plan_rule_runs(actions, provisioning.enabled)

    partitions = set(
        SYSTEMS_PARTITIONS.get_partition_keys(dynamic_partitions_store=context.instance)
    )
    requests = []
    for run in runs:
        if run.system not in partitions:
            context.log.warning(
                "no run for %s: it is not a systems partition yet; materialize inventory first",
                run.system,
            )
            continue
        requests.append(
            RunRequest(
                run_key=f"rules-{event.storage_id}-{run.system}",
                asset_selection=[AssetKey(step) for step in run.steps],
                partition_key=run.system,
                tags=run.tags(event.run_id),
            )
        )
    _log_outcomes(context, outcomes)
    store.write(
        RULE_RUNS_STATE_KEY,
        {
            "rule_actions_run": event.run_id,
            "outcomes": [outcome.to_dict() for outcome in outcomes],
        },
    )
    return SensorResult(run_requests=requests, cursor=str(event.storage_id))


def _log_outcomes(context: SensorEvaluationContext, outcomes: list[RuleOutcome]) -> None:
    for outcome in outcomes:
        if outcome.outcome == "alert":
            context.log.error("ALERT %s: %s", outcome.system, outcome.reason)
        elif outcome.action == "investigate":
            context.log.warning("investigate %s: %s", outcome.system, outcome.reason)
        else:
            context.log.info(
                "%s %s (%s): %s", outcome.action, outcome.system, outcome.trigger, outcome.outcome
            )
