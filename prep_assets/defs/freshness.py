"""Freshness of the PREP loop: per-system checks, the stale-system alert sensor, and the
native freshness policies of the unpartitioned assets.

Each per-system asset has the check ``fresh_for_tier``: it fails when any
system's latest materialization of that asset is older than the window of the
system's tier (``docs/reference/tiers.md``), and lists those systems with tier
and age. The check runs in every pass, and the ``stale_systems`` sensor
re-evaluates it every minute between passes, reports changed results to the
same checks, and sends one alert per newly stale and per recovered system.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetsDefinition,
    AssetSpec,
    DagsterInstance,
    DefaultSensorStatus,
    FreshnessPolicy,
    MetadataValue,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    map_asset_specs,
    multi_asset_check,
    sensor,
)

from prep_assets.defs.passes import (
    FRESHNESS_CHECK_NAME,
    PER_SYSTEM_KEYS,
    last_checked_times,
)
from prep_assets.defs.resources import InfraRepoResource, StateResource
from prep_assets.defs.trigger_resources import AlertWebhookResource
from prep_assets.tiers import TierTable, load_tiers, system_tiers
from prep_assets.triggers.alerts import (
    AlertDeliveryError,
    AlertKind,
    AlertState,
    plan_alerts,
    record_sent,
    send_alert,
)
from prep_assets.triggers.freshness import (
    StaleSystem,
    find_stale_systems,
    stale_for_step,
    stale_table,
    summarize,
)

# Dagster rejects time-window freshness policies shorter than one minute.
MIN_POLICY_WINDOW = timedelta(minutes=1)
SENSOR_INTERVAL_SECONDS = 60


def current_time() -> datetime:
    """Return the time that ages are measured at; tests replace it to avoid waiting."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class FreshnessReport:
    """Stale systems of the current inventory at one moment."""

    stale: list[StaleSystem]
    systems: int
    table: TierTable
    inventory_names: set[str]


def evaluate_freshness(
    instance: DagsterInstance, infra_repo: InfraRepoResource, state: StateResource, now: datetime
) -> FreshnessReport | None:
    """Judge every system of the latest inventory value; None before the first inventory."""
    inventory = state.store(instance).read("inventory")
    if inventory is None:
        return None
    table = load_tiers(infra_repo.root)
    tiers = system_tiers(inventory["systems"], table)
    times = last_checked_times(instance, tiers)
    stale = find_stale_systems(tiers, times, table, now)
    return FreshnessReport(stale, len(tiers), table, set(tiers))


def check_metadata(report: FreshnessReport, step: str) -> tuple[bool, str, dict[str, Any]]:
    """Return (passed, description, metadata) of the freshness check of one per-system step."""
    rows = stale_for_step(report.stale, step)
    stale_json = []
    for system, detail in rows:
        entry = detail.to_dict()
        stale_json.append(
            {
                "system": system.system,
                "tier": system.tier,
                "age_seconds": entry["age_seconds"],
                "window_seconds": entry["window_seconds"],
                "last_checked": entry["last_checked"],
            }
        )
    metadata = {
        "systems": report.systems,
        "stale_count": len(rows),
        "stale_systems": MetadataValue.md(str(stale_table(rows))),
        "stale": MetadataValue.json(stale_json),
        "tiers_source": report.table.source,
    }
    return not rows, summarize(rows), metadata


@multi_asset_check(
    name="systems_fresh_for_tier",
    specs=[
        AssetCheckSpec(
            FRESHNESS_CHECK_NAME,
            asset=key,
            description=(
                "Fails when a system's latest result of this step is older than its tier's "
                "window in docs/reference/tiers.md, or was never computed; lists those "
                "systems with tier and age."
            ),
        )
        for key in PER_SYSTEM_KEYS
    ],
    description="Compare each system's latest per-system results with its tier's freshness window.",
)
def systems_fresh_for_tier(
    context: AssetCheckExecutionContext, infra_repo: InfraRepoResource, state: StateResource
):
    report = evaluate_freshness(context.instance, infra_repo, state, current_time())
    for key in PER_SYSTEM_KEYS:
        if report is None:
            yield AssetCheckResult(
                asset_key=key,
                check_name=FRESHNESS_CHECK_NAME,
                passed=False,
                description="no inventory value yet: materialize the inventory first",
            )
            continue
        passed, description, metadata = check_metadata(report, key.to_user_string())
        yield AssetCheckResult(
            asset_key=key,
            check_name=FRESHNESS_CHECK_NAME,
            passed=passed,
            severity=AssetCheckSeverity.ERROR,
            description=description,
            metadata=metadata,
        )


def _check_events(
    report: FreshnessReport, reported: dict[str, list[str]]
) -> tuple[list[AssetCheckEvaluation], dict[str, list[str]]]:
    """Return check evaluations for the steps whose stale systems changed since ``reported``."""
    events = []
    current: dict[str, list[str]] = {}
    for key in PER_SYSTEM_KEYS:
        step = key.to_user_string()
        names = [system.system for system, _ in stale_for_step(report.stale, step)]
        current[step] = names
        if reported.get(step) == names:
            continue
        passed, description, metadata = check_metadata(report, step)
        events.append(
            AssetCheckEvaluation(
                asset_key=key,
                check_name=FRESHNESS_CHECK_NAME,
                passed=passed,
                severity=AssetCheckSeverity.ERROR,
                description=description,
                metadata=metadata,
            )
        )
    return events, current


@sensor(
    name="stale_systems",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Every minute: judge each system's freshness against its tier, update the "
        "fresh_for_tier checks when the stale systems change, and send one alert per newly "
        "stale system and one when it is fresh again. Alerts go to the webhook in "
        "PREP_ALERT_WEBHOOK_URL and always to this sensor's tick log."
    ),
)
def stale_systems_sensor(
    context: SensorEvaluationContext,
    infra_repo: InfraRepoResource,
    state: StateResource,
    alert_webhook: AlertWebhookResource,
):
    now = current_time()
    report = evaluate_freshness(context.instance, infra_repo, state, now)
    if report is None:
        return SkipReason("no inventory value yet: nothing to judge")

    cursor = json.loads(context.cursor) if context.cursor else {}
    alert_state = AlertState.from_dict(cursor.get("alerts"))
    events, reported = _check_events(report, cursor.get("checks") or {})

    alerts = plan_alerts(alert_state, report.stale, report.inventory_names, now)
    url = alert_webhook.resolved_url()
    payload_format = alert_webhook.resolved_format()
    failed = 0
    for alert in alerts:
        log = context.log.warning if alert.kind is AlertKind.STALE else context.log.info
        log("alert: %s", alert.text())
        if url:
            try:
                send_alert(url, alert, payload_format, alert_webhook.timeout_seconds)
            except AlertDeliveryError as error:
                failed += 1
                context.log.error(
                    "alert for %s not delivered, retrying next tick: %s", alert.system, error
                )
                continue
        record_sent(alert_state, alert)

    new_cursor = json.dumps({"alerts": alert_state.to_dict(), "checks": reported}, sort_keys=True)
    if url:
        outcome = f"{len(alerts) - failed} alerts sent" + (f", {failed} failed" if failed else "")
    else:
        outcome = f"{len(alerts)} alerts logged (no webhook set)"
    summary = f"{len(report.stale)} of {report.systems} systems stale; {outcome}"
    context.log.info(summary)
    return SensorResult(skip_reason=summary, cursor=new_cursor, asset_events=events)


def loop_freshness_policy(table: TierTable, step: str) -> FreshnessPolicy:
    """Return the freshness policy of an unpartitioned step: the default tier's window.

    Every tier's pass refreshes the unpartitioned steps, and the default tier's
    schedule runs even when no system has that tier, so a working loop refreshes
    them at least as often as the default tier's schedule.
    """
    window = max(table.default.window_for(step), MIN_POLICY_WINDOW)
    return FreshnessPolicy.time_window(fail_window=window)


def with_loop_freshness_policies(
    assets: Sequence[AssetsDefinition], table: TierTable
) -> list[AssetsDefinition]:
    """Attach ``loop_freshness_policy`` to every unpartitioned asset of ``assets``."""

    def apply(spec: AssetSpec) -> AssetSpec:
        if spec.partitions_def is not None:
            return spec
        return spec.replace_attributes(
            freshness_policy=loop_freshness_policy(table, spec.key.to_user_string())
        )

    return list(map_asset_specs(apply, assets))
