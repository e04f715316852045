"""The ``prometheus_alerts`` sensor: a fresh PREP pass for systems with a firing alert.

Every minute the sensor reads ``ALERTS{alertstate="firing"}`` from the Prometheus
of the ``prometheus`` resource, maps each alert to an inventory system by its
``system``, ``host`` or ``instance`` label, and requests a pass over the systems
that had no alert-triggered pass within the rate limit. The cursor is JSON with
the time of each system's last alert-triggered pass.
"""

import json
import time

from dagster import (
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from prep_assets.defs.passes import (
    TRIGGER_TAG,
    partition_keys,
    pass_run_requests,
    prep_pass_job,
)
from prep_assets.defs.resources import PrometheusResource, StateResource
from prep_assets.defs.trigger_resources import PrometheusAlertsResource
from prep_assets.triggers.prometheus_alerts import (
    PrometheusAlertsError,
    due_for_pass,
    query_firing_alerts,
    systems_for_alerts,
)

ALERT_TAG = "prep/alerts"
TRIGGER = "alert"
SENSOR_INTERVAL_SECONDS = 60
# Dagster keeps tag values short; longer lists of alert names are cut.
MAX_TAG_LENGTH = 200


@sensor(
    name="prometheus_alerts",
    job=prep_pass_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Every minute: read the firing alerts from Prometheus (PREP_PROMETHEUS_URL), map "
        "their system, host or instance label to an inventory system, and run a PREP pass for "
        "those systems, at most once per system per PREP_ALERT_PASS_INTERVAL_MINUTES."
    ),
)
def prometheus_alerts_sensor(
    context: SensorEvaluationContext,
    prometheus: PrometheusResource,
    prometheus_alerts: PrometheusAlertsResource,
    state: StateResource,
):
    if not prometheus.url:
        return SkipReason("no Prometheus URL configured: set PREP_PROMETHEUS_URL")
    inventory = state.store(context.instance).read("inventory")
    if inventory is None:
        return SkipReason("no inventory value yet: alerts cannot be mapped to systems")

    try:
        alerts = query_firing_alerts(prometheus.url, prometheus_alerts.timeout_seconds)
    except PrometheusAlertsError as error:
        context.log.error("%s; trying again next tick", error)
        return SkipReason(f"cannot read the firing alerts: {error}")

    matches = systems_for_alerts(alerts, inventory["systems"])
    now = time.time()
    interval = prometheus_alerts.min_interval_minutes * 60
    cursor = json.loads(context.cursor) if context.cursor else {}
    last_requested: dict[str, float] = {
        name: moment
        for name, moment in (cursor.get("last_requested") or {}).items()
        if now - moment < interval
    }
    due = due_for_pass(matches, last_requested, now, interval)
    limited = sorted(set(matches) - set(due))
    if limited:
        context.log.info(
            "firing alerts for %s, but their last alert-triggered pass is less than %.0f "
            "minutes ago",
            ", ".join(limited),
            prometheus_alerts.min_interval_minutes,
        )
    if not due:
        new_cursor = json.dumps({"last_requested": last_requested}, sort_keys=True)
        return SensorResult(
            skip_reason=(
                f"{len(alerts)} firing alerts; {len(matches)} map to inventory systems, "
                "none due for a pass"
            ),
            cursor=new_cursor,
        )

    alert_names = sorted({name for system in due for name in matches[system]})
    tags = {TRIGGER_TAG: TRIGGER, ALERT_TAG: ", ".join(alert_names)[:MAX_TAG_LENGTH]}
    requests = pass_run_requests(
        partition_keys(context.instance),
        due,
        tags=tags,
        run_key_prefix=f"alert-{int(now)}",
    )
    for system in due:
        context.log.info(
            "firing alerts %s map to %s: requesting a PREP pass",
            ", ".join(matches[system]),
            system,
        )
        last_requested[system] = now
    new_cursor = json.dumps({"last_requested": last_requested}, sort_keys=True)
    return SensorResult(run_requests=requests, cursor=new_cursor)
