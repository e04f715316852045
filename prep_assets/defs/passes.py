"""The ``prep_pass`` job and the run requests that schedules and sensors send to it.

A Dagster run covers one contiguous range of partition keys, and the systems of
one tier (or the systems that a commit touched) need not be neighbours in the
``systems`` partitions. A pass over such a set is therefore one run per
contiguous range: the first run also reviews git and reads the inventory, and the
last one also writes the drift report, the rules and the status documents. The
runs carry the ``prep/queue`` tag, which the instance's run queue limits to one
run at a time, so they run in the order they were requested.
"""

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    RunRequest,
    define_asset_job,
)

from prep_assets.defs.history import last_materialized
from prep_assets.defs.partitions import SYSTEMS_PARTITIONS
from prep_assets.report.document import PER_SYSTEM_STEPS
from prep_assets.tiers import contiguous_ranges

QUEUE_TAG = "prep/queue"
QUEUE_NAME = "prep-loop"
TIER_TAG = "prep/tier"
TRIGGER_TAG = "prep/trigger"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

FRESHNESS_CHECK_NAME = "fresh_for_tier"

DISCOVERY_KEYS = [AssetKey("change_context"), AssetKey("inventory")]
PER_SYSTEM_KEYS = [AssetKey(step) for step in PER_SYSTEM_STEPS]
REPORT_KEYS = [AssetKey("drift_report"), AssetKey("rule_actions"), AssetKey("prep_status_doc")]
FRESHNESS_CHECK_KEYS = [AssetCheckKey(key, FRESHNESS_CHECK_NAME) for key in PER_SYSTEM_KEYS]

prep_pass_job = define_asset_job(
    "prep_pass",
    selection=AssetSelection.all(),
    description=(
        "One PREP pass: git review and inventory, the per-system checks over a range of "
        "systems, then drift, rules and the status documents. Schedules and sensors "
        "choose the steps and systems of each run."
    ),
    tags={QUEUE_TAG: QUEUE_NAME},
)


def pass_run_requests(
    ordered_keys: Sequence[str],
    systems: Iterable[str],
    *,
    tags: Mapping[str, str],
    run_key_prefix: str | None = None,
    discovery: bool = True,
    report: bool = True,
) -> list[RunRequest]:
    """Return the runs of one pass over ``systems``, in the order they must run.

    ``ordered_keys`` are the ``systems`` partition keys in partition order; systems
    without a key are left out. With no system left, one run of the unpartitioned
    steps is returned when ``discovery`` or ``report`` requests them.
    """
    ranges = contiguous_ranges(ordered_keys, systems)
    base_tags = {QUEUE_TAG: QUEUE_NAME, **tags}
    if not ranges:
        selection = [*(DISCOVERY_KEYS if discovery else []), *(REPORT_KEYS if report else [])]
        if not selection:
            return []
        return [
            RunRequest(
                run_key=f"{run_key_prefix}:loop" if run_key_prefix else None,
                asset_selection=selection,
                asset_check_keys=[],
                tags=base_tags,
            )
        ]

    requests = []
    for index, (start, end) in enumerate(ranges):
        selection = list(PER_SYSTEM_KEYS)
        if discovery and index == 0:
            selection = [*DISCOVERY_KEYS, *selection]
        if report and index == len(ranges) - 1:
            selection = [*selection, *REPORT_KEYS]
        requests.append(
            RunRequest(
                run_key=f"{run_key_prefix}:{start}..{end}" if run_key_prefix else None,
                asset_selection=selection,
                asset_check_keys=FRESHNESS_CHECK_KEYS,
                tags={**base_tags, RANGE_START_TAG: start, RANGE_END_TAG: end},
            )
        )
    return requests


def partition_keys(instance: DagsterInstance) -> list[str]:
    """Return the ``systems`` partition keys in partition order."""
    return list(SYSTEMS_PARTITIONS.get_partition_keys(dynamic_partitions_store=instance))


def last_checked_times(
    instance: DagsterInstance, systems: Iterable[str]
) -> dict[str, dict[str, datetime | None]]:
    """Return {system: {per-system step: time of its latest materialization, or None}}."""
    names = list(systems)
    by_step = {
        step: last_materialized(instance, AssetKey(step), names) for step in PER_SYSTEM_STEPS
    }
    return {
        name: {step: _parse_time(by_step[step].get(name)) for step in PER_SYSTEM_STEPS}
        for name in names
    }


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
