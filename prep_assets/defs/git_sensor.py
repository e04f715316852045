"""The ``infra_repo_commits`` sensor: a PREP pass for what new commits in the infra repo touched.

On new commits the sensor requests one run of change_context, inventory and
drift_report, and remembers the systems whose inventory rows the commits added
or changed. Once that run has stored a newer inventory (so new systems have
their partitions), a later tick requests the per-system assets of those systems
and the steps after them. The cursor is JSON with the last processed commit
(``commit``) and the systems still waiting for their checks (``pending``).
"""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from prep_assets.defs.history import latest_metadata_value
from prep_assets.defs.passes import (
    DISCOVERY_KEYS,
    QUEUE_NAME,
    QUEUE_TAG,
    TRIGGER_TAG,
    partition_keys,
    pass_run_requests,
    prep_pass_job,
)
from prep_assets.defs.resources import InfraRepoResource, StateResource
from prep_assets.defs.trigger_resources import GitWatchResource
from prep_assets.tiers import format_duration
from prep_assets.triggers.git_watch import (
    GitWatchError,
    fetch_and_fast_forward,
    head_commit,
    new_commits,
    only_status_documents,
    touched_systems,
)

COMMIT_TAG = "prep/commit"
TRIGGER = "git"
SENSOR_INTERVAL_SECONDS = 60
# How long the touched systems wait for the inventory run of their commit.
MAX_PENDING = timedelta(hours=1)


def _latest_inventory_storage_id(instance: DagsterInstance) -> int | None:
    records = instance.fetch_materializations(AssetKey("inventory"), limit=1).records
    return records[0].storage_id if records else None


def _discovery_failed(instance: DagsterInstance, commit: str) -> str | None:
    """Return the id of a failed discovery run for ``commit`` when none of its runs succeeded."""
    runs = instance.get_runs(RunsFilter(tags={TRIGGER_TAG: TRIGGER, COMMIT_TAG: commit[:12]}))
    if not runs or any(run.status == DagsterRunStatus.SUCCESS for run in runs):
        return None
    failed = [
        run for run in runs if run.status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
    ]
    return failed[0].run_id if len(failed) == len(runs) else None


def _merge_systems(first: list[str] | None, second: set[str] | None) -> list[str] | None:
    """Union of two system sets, where None means every system."""
    if first is None or second is None:
        return None
    return sorted(set(first) | second)


def _pending_requests(
    context: SensorEvaluationContext, state: StateResource, pending: dict[str, Any]
) -> tuple[list[RunRequest], dict[str, Any] | None]:
    """Return the per-system runs for ``pending`` once a newer inventory exists, else wait."""
    instance = context.instance
    latest = _latest_inventory_storage_id(instance)
    recorded = pending.get("inventory_storage_id")
    if latest is None or (recorded is not None and latest <= recorded):
        failed_run = _discovery_failed(instance, pending["commit"])
        if failed_run is not None:
            context.log.error(
                "the inventory run for commit %s failed (run %s); its systems are left to the "
                "tier schedules",
                pending["commit"][:12],
                failed_run,
            )
            return [], None
        waited = datetime.now(UTC) - datetime.fromisoformat(pending["since"])
        if waited > MAX_PENDING:
            context.log.error(
                "no new inventory within %s of commit %s (is the run queue stopped?); its "
                "systems are left to the tier schedules",
                format_duration(MAX_PENDING),
                pending["commit"][:12],
            )
            return [], None
        return [], pending

    inventory = state.store(instance).read("inventory") or {"systems": []}
    names = [system["name"] for system in inventory["systems"]]
    requested = names if pending.get("systems") is None else pending["systems"]
    present = [name for name in requested if name in set(names)]
    keys = partition_keys(instance)
    requests = pass_run_requests(
        keys,
        present,
        tags={TRIGGER_TAG: TRIGGER, COMMIT_TAG: pending["commit"][:12]},
        run_key_prefix=f"git-{pending['commit']}-systems",
        discovery=False,
    )
    context.log.info(
        "commit %s: checking %d touched systems in %d runs: %s",
        pending["commit"][:12],
        len(present),
        len(requests),
        ", ".join(present) or "none",
    )
    return requests, None


@sensor(
    name="infra_repo_commits",
    job=prep_pass_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "On new commits in the infra repo (optionally after `git fetch` from "
        "PREP_GIT_FETCH_REMOTE): review git, re-read the inventory and report drift, then check "
        "the systems whose inventory rows the commits added or changed."
    ),
)
def infra_repo_commits_sensor(
    context: SensorEvaluationContext,
    infra_repo: InfraRepoResource,
    state: StateResource,
    git_watch: GitWatchResource,
):
    root = infra_repo.root
    cursor = json.loads(context.cursor) if context.cursor else {}
    pending: dict[str, Any] | None = cursor.get("pending")
    requests: list[RunRequest] = []

    if git_watch.fetch_remote:
        try:
            warning = fetch_and_fast_forward(root, git_watch.fetch_remote)
        except GitWatchError as error:
            context.log.error("%s; looking at the local commits only", error)
        else:
            if warning:
                context.log.warning(warning)

    try:
        head = head_commit(root)
    except GitWatchError as error:
        context.log.error("%s", error)
        return SkipReason(f"cannot read the infra repo: {error}")

    if pending:
        requests, pending = _pending_requests(context, state, pending)

    last = cursor.get("commit") or latest_metadata_value(
        context.instance, AssetKey("change_context"), "head"
    )
    touched: set[str] | None = set()
    discover = False
    if last is None:
        context.log.info("no commit was reviewed yet: a full pass starts at %s", head[:12])
        touched, discover = None, True
    elif last != head:
        change = new_commits(root, last)
        if change.rewritten:
            context.log.warning(
                "the last processed commit %s is no longer in the history of HEAD %s "
                "(history was rewritten); every system will be checked",
                last[:12],
                head[:12],
            )
            touched, discover = None, True
        elif change.commits and only_status_documents(root, last, head):
            context.log.info(
                "%d new commits change only the status documents; nothing to check",
                len(change.commits),
            )
        elif change.commits:
            touched = touched_systems(root, change.base, head)
            discover = True
            context.log.info(
                "%d new commits up to %s touch %s",
                len(change.commits),
                head[:12],
                "every system" if touched is None else (", ".join(sorted(touched)) or "no system"),
            )

    if discover:
        requests.append(
            RunRequest(
                run_key=f"git-{(last or 'none')[:12]}-{head}",
                asset_selection=[*DISCOVERY_KEYS, AssetKey("drift_report")],
                asset_check_keys=[],
                tags={QUEUE_TAG: QUEUE_NAME, TRIGGER_TAG: TRIGGER, COMMIT_TAG: head[:12]},
            )
        )
        if touched is None or touched:
            systems = (
                touched if pending is None else _merge_systems(pending.get("systems"), touched)
            )
            pending = {
                "commit": head,
                "systems": None if systems is None else sorted(systems),
                "inventory_storage_id": _latest_inventory_storage_id(context.instance),
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
            }

    new_cursor = json.dumps({"commit": head, "pending": pending}, sort_keys=True)
    if not requests:
        waiting = f"; waiting for the inventory of {pending['commit'][:12]}" if pending else ""
        return SensorResult(
            skip_reason=f"no new commits at {head[:12]}{waiting}", cursor=new_cursor
        )
    return SensorResult(run_requests=requests, cursor=new_cursor)
