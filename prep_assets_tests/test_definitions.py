"""The code location's definitions: schedules per tier, checks, sensors and freshness policies."""

import logging
from datetime import timedelta

from dagster import AssetKey, DefaultScheduleStatus, DefaultSensorStatus

from prep_assets.definitions import build_definitions
from prep_assets.tiers import DEFAULT_TIERS, Tier, TierTable, parse_duration

LOOP_ASSETS = ["change_context", "inventory", "drift_report", "rule_actions", "prep_status_doc"]
PER_SYSTEM_ASSETS = ["access_status", "tool_status", "provisioned_tools", "baselines"]


def specs_by_name(defs):
    return {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}


def test_default_tiers_give_three_running_schedules():
    defs = build_definitions(DEFAULT_TIERS)
    repository = defs.get_repository_def()

    schedules = {schedule.name: schedule for schedule in repository.schedule_defs}
    assert {name: schedule.cron_schedule for name, schedule in schedules.items()} == {
        "tier_critical": "0 * * * *",
        "tier_standard": "20 3 * * *",
        "tier_low": "40 3 * * 0",
    }
    for schedule in schedules.values():
        assert schedule.default_status is DefaultScheduleStatus.RUNNING
        assert schedule.job_name == "prep_pass"
    sensors = {sensor.name: sensor for sensor in repository.sensor_defs}
    assert set(sensors) == {
        "stale_systems",
        "infra_repo_commits",
        "prometheus_alerts",
        "rules_sensor",
    }
    for sensor in sensors.values():
        assert sensor.default_status is DefaultSensorStatus.RUNNING


def test_freshness_check_on_every_per_system_asset():
    defs = build_definitions(DEFAULT_TIERS)

    check_keys = defs.resolve_asset_graph().asset_check_keys
    assert {(key.asset_key.to_user_string(), key.name) for key in check_keys} == {
        (name, "fresh_for_tier") for name in PER_SYSTEM_ASSETS
    }


def test_loop_assets_carry_default_tier_window():
    specs = specs_by_name(build_definitions(DEFAULT_TIERS))

    for name in LOOP_ASSETS:
        policy = specs[name].freshness_policy
        assert policy.fail_window.to_timedelta() == timedelta(hours=26), name
    for name in PER_SYSTEM_ASSETS:
        assert specs[name].freshness_policy is None, name


def test_short_default_window_raised_to_dagster_minimum():
    table = TierTable(
        (Tier("fast", "* * * * *", parse_duration("10s"), {"inventory": parse_duration("5m")}),),
        "fast",
        "test",
    )

    specs = specs_by_name(build_definitions(table))

    assert specs["change_context"].freshness_policy.fail_window.to_timedelta() == timedelta(
        minutes=1
    )
    assert specs["inventory"].freshness_policy.fail_window.to_timedelta() == timedelta(minutes=5)


def test_tier_that_dagster_rejects_gets_no_schedule(caplog):
    table = TierTable(
        (
            Tier("standard", "20 3 * * *", timedelta(hours=26)),
            # Valid fields, but February never has a 31st.
            Tier("never", "0 0 31 2 *", timedelta(days=400)),
            Tier("tier-1", "0 * * * *", timedelta(hours=2)),
            Tier("tier_1", "0 * * * *", timedelta(hours=2)),
        ),
        "standard",
        "test",
    )
    caplog.set_level(logging.ERROR)

    repository = build_definitions(table).get_repository_def()

    assert sorted(schedule.name for schedule in repository.schedule_defs) == [
        "tier_standard",
        "tier_tier_1",
    ]
    assert "tier 'never' has no schedule" in caplog.text
    assert "tier 'tier_1' has no schedule: its schedule name tier_tier_1 is taken" in caplog.text


def test_runs_execute_in_one_process():
    job = build_definitions(DEFAULT_TIERS).resolve_job_def("prep_pass")

    assert job.executor_def.name == "in_process"
    assert job.tags["prep/queue"] == "prep-loop"
    assert AssetKey("prep_status_doc") in job.asset_layer.executable_asset_keys
