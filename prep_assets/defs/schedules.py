"""One schedule per tier: a PREP pass over that tier's systems on the tier's cron schedule.

The schedules are built when the code location loads, from the tiers document
of the infra repo, so a changed cron schedule takes effect after a reload. The
tick reads the latest inventory value and the ``systems`` partitions, and requests
one run per contiguous range of the tier's keys (see ``passes``). Systems
added since the last inventory get their partition from that first run and are
checked from the next tick on, or at once by the commit sensor.
"""

import logging
import re

from dagster import (
    DagsterInvalidDefinitionError,
    DefaultScheduleStatus,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from prep_assets.defs.passes import (
    TIER_TAG,
    TRIGGER_TAG,
    partition_keys,
    pass_run_requests,
    prep_pass_job,
)
from prep_assets.defs.resources import InfraRepoResource, StateResource
from prep_assets.tiers import Tier, TierTable, format_duration, load_tiers, system_tiers

logger = logging.getLogger(__name__)


def schedule_name(tier: Tier) -> str:
    """Return the schedule's name: ``tier_<name>``, with characters Dagster rejects as ``_``."""
    return "tier_" + re.sub(r"[^A-Za-z0-9_]", "_", tier.name)


def build_tier_schedule(tier: Tier, is_default: bool) -> ScheduleDefinition:
    """Return the schedule of one tier; the default tier's also runs when it has no systems."""
    description = (
        f"PREP pass over the {tier.name} systems ({tier.schedule}); their results are stale "
        f"after {format_duration(tier.stale_after)}."
    )
    if is_default:
        description += (
            " As the default tier it also refreshes the git review, inventory and status "
            "documents when no system has this tier."
        )

    @schedule(
        name=schedule_name(tier),
        cron_schedule=tier.schedule,
        job=prep_pass_job,
        default_status=DefaultScheduleStatus.RUNNING,
        execution_timezone="UTC",
        description=description,
        tags={TIER_TAG: tier.name},
    )
    def tier_schedule(
        context: ScheduleEvaluationContext, infra_repo: InfraRepoResource, state: StateResource
    ):
        inventory = state.store(context.instance).read("inventory")
        tick = context.scheduled_execution_time.strftime("%Y%m%dT%H%M%SZ")
        tags = {TIER_TAG: tier.name, TRIGGER_TAG: "schedule"}
        if inventory is None:
            context.log.info("no inventory value yet: this run reads the inventory first")
            return pass_run_requests([], [], tags=tags, run_key_prefix=f"{tier.name}-{tick}")

        table = load_tiers(infra_repo.root)
        systems = [
            name
            for name, tier_name in system_tiers(inventory["systems"], table).items()
            if tier_name == tier.name
        ]
        if not systems and not is_default:
            return SkipReason(f"no system of the inventory has the tier {tier.name!r}")
        keys = partition_keys(context.instance)
        missing = sorted(set(systems) - set(keys))
        if missing:
            context.log.info(
                "systems without a partition yet, checked after this pass reads the inventory: %s",
                ", ".join(missing),
            )
        requests = pass_run_requests(keys, systems, tags=tags, run_key_prefix=f"{tier.name}-{tick}")
        context.log.info(
            "%d systems of tier %s in %d runs",
            len(set(systems) - set(missing)),
            tier.name,
            len(requests),
        )
        return requests

    return tier_schedule


def build_tier_schedules(table: TierTable) -> list[ScheduleDefinition]:
    """Return one schedule per tier, leaving out (and logging) those Dagster rejects."""
    schedules: list[ScheduleDefinition] = []
    for tier in table.tiers:
        name = schedule_name(tier)
        if any(existing.name == name for existing in schedules):
            logger.error(
                "tier %r has no schedule: its schedule name %s is taken by another tier; "
                "rename one of them in the tiers document",
                tier.name,
                name,
            )
            continue
        try:
            schedules.append(build_tier_schedule(tier, tier.name == table.default_name))
        except DagsterInvalidDefinitionError as error:
            logger.error("tier %r has no schedule: %s", tier.name, error)
    return schedules
