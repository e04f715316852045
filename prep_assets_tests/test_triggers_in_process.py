"""Schedules and sensors driven in this process against a real instance, git repo and checks.

Each test evaluates a schedule or sensor with a built context, then executes the
run requests it returned with ``materialize``, in order, as the daemon's run
queue would. Systems use the local transport, so no SSH host is needed.
"""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetSelection,
    SensorResult,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
    materialize,
)

from prep_assets.defs import freshness
from prep_assets.defs.alert_sensor import prometheus_alerts_sensor
from prep_assets.defs.assets import ALL_ASSETS
from prep_assets.defs.freshness import stale_systems_sensor, systems_fresh_for_tier
from prep_assets.defs.git_sensor import infra_repo_commits_sensor
from prep_assets.defs.passes import (
    DISCOVERY_KEYS,
    FRESHNESS_CHECK_KEYS,
    PER_SYSTEM_KEYS,
    REPORT_KEYS,
    TIER_TAG,
    last_checked_times,
    partition_keys,
    pass_run_requests,
)
from prep_assets.defs.resources import PrometheusResource
from prep_assets.defs.schedules import build_tier_schedule
from prep_assets.defs.trigger_resources import AlertWebhookResource, GitWatchResource
from prep_assets.tiers import Tier, parse_duration
from prep_assets.triggers.prometheus_alerts import query_firing_alerts
from prep_assets_tests.loop_helpers import INVENTORY, inventory_text, run_pass
from prep_assets_tests.prometheus_server import require_binaries, start_prometheus
from prep_assets_tests.trigger_helpers import (
    WebhookReceiver,
    execute_run_request,
    local_infra_repo,
    local_row,
    run_requests_of,
    tiers_text,
    trigger_resources,
)

WINDOW_SECONDS = 30
TIERS = tiers_text(
    [
        ("critical", "* * * * *", f"{WINDOW_SECONDS}s"),
        ("standard", "20 3 * * *", "26h"),
        ("low", "40 3 * * 0", "8d"),
    ]
)


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def setup(tmp_path, make_instance, webhook, unreachable_prometheus_url):
    """Two critical systems and one standard system, all checked once.

    Prometheus is a closed loopback port, so baselines report no data at once
    instead of taking a six-second sample on every pass.
    """
    repo = local_infra_repo(
        tmp_path / "infra",
        [("crit-a", "critical"), ("crit-b", "critical"), ("std-c", "standard")],
        TIERS,
    )
    instance = make_instance("sqlite", tmp_path / "dagster_home")
    resources = trigger_resources(
        repo,
        tmp_path / "known_hosts",
        webhook_url=webhook.url,
        prometheus_url=unreachable_prometheus_url,
    )
    run_pass(instance, resources)
    return repo, instance, resources


def sensor_tick(sensor_def, instance, resources, cursor):
    with build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        result = sensor_def(context)
    assert isinstance(result, (SensorResult, SkipReason)), result
    new_cursor = result.cursor if isinstance(result, SensorResult) else cursor
    return result, new_cursor


def schedule_tick(schedule_def, instance, resources):
    """Evaluate a schedule now; return its SkipReason or its list of run requests."""
    with build_schedule_context(
        instance=instance, scheduled_execution_time=datetime.now(UTC), resources=resources
    ) as context:
        result = schedule_def(context)
    return result if isinstance(result, SkipReason) else list(result)


def run_pass_over(instance, resources, systems, tags=None):
    for request in pass_run_requests(
        partition_keys(instance), systems, tags=tags or {"prep/trigger": "test"}
    ):
        execute_run_request(request, instance, resources)


def stale_names(evaluation):
    return [entry["system"] for entry in evaluation.metadata["stale"].value]


def checked_times(instance, system):
    """Times of the system's latest per-system results, oldest first."""
    times = last_checked_times(instance, [system])[system]
    assert all(times.values()), f"{system} has a step that never ran: {times}"
    return sorted(times.values())


def set_clock(monkeypatch, moment):
    """Measure freshness at ``moment`` instead of now, so no test waits for results to age."""
    monkeypatch.setattr(freshness, "current_time", lambda: moment)


def age_critical_systems(monkeypatch):
    """Set the clock an hour ahead: both critical systems are stale, the standard one is not."""
    set_clock(monkeypatch, datetime.now(UTC) + timedelta(hours=1))


def test_stale_system_fails_check_and_alerts_once(setup, webhook, monkeypatch):
    repo, instance, resources = setup
    window = timedelta(seconds=WINDOW_SECONDS)
    set_clock(monkeypatch, checked_times(instance, "crit-a")[-1] + timedelta(seconds=1))

    result, cursor = sensor_tick(stale_systems_sensor, instance, resources, None)
    assert webhook.posts == []
    assert all(event.passed for event in result.asset_events)

    # crit-b is checked again more than a second after crit-a, and the clock is set
    # half a second inside crit-b's window, so crit-a is outside it. Check times are
    # kept in whole seconds, so a wait of just over one second can show a gap of 1 s.
    time.sleep(2.1)
    run_pass_over(instance, resources, ["crit-b"])
    gap = checked_times(instance, "crit-b")[0] - checked_times(instance, "crit-a")[-1]
    assert gap > timedelta(seconds=1)
    set_clock(monkeypatch, checked_times(instance, "crit-b")[0] + window - timedelta(seconds=0.5))

    checks = materialize(
        [*ALL_ASSETS, systems_fresh_for_tier],
        instance=instance,
        resources=resources,
        selection=AssetSelection.checks(*FRESHNESS_CHECK_KEYS),
    )
    evaluations = checks.get_asset_check_evaluations()
    assert {evaluation.asset_key for evaluation in evaluations} == set(PER_SYSTEM_KEYS)
    for evaluation in evaluations:
        assert evaluation.passed is False, evaluation.asset_key
        assert stale_names(evaluation) == ["crit-a"], evaluation.asset_key
        entry = evaluation.metadata["stale"].value[0]
        assert entry["tier"] == "critical"
        assert entry["age_seconds"] > WINDOW_SECONDS
        assert entry["window_seconds"] == WINDOW_SECONDS
        assert "crit-a (critical," in evaluation.description
        assert "crit-b" not in evaluation.description

    result, cursor = sensor_tick(stale_systems_sensor, instance, resources, cursor)
    assert len(webhook.posts) == 1
    alert = webhook.posts[0].body
    assert alert["kind"] == "stale"
    assert alert["system"] == "crit-a"
    assert alert["tier"] == "critical"
    steps = {step["step"] for step in alert["stale_steps"]}
    assert steps == {key.path[-1] for key in PER_SYSTEM_KEYS}
    assert webhook.posts[0].content_type == "application/json"
    reported = [event for event in result.asset_events if isinstance(event, AssetCheckEvaluation)]
    assert len(reported) == len(PER_SYSTEM_KEYS)
    assert all(stale_names(event) == ["crit-a"] for event in reported)

    result, cursor = sensor_tick(stale_systems_sensor, instance, resources, cursor)
    assert len(webhook.posts) == 1, "a system that stays stale is reported once"
    assert result.asset_events == []

    run_pass_over(instance, resources, ["crit-a", "crit-b"])
    set_clock(monkeypatch, checked_times(instance, "crit-a")[-1] + timedelta(seconds=1))
    result, cursor = sensor_tick(stale_systems_sensor, instance, resources, cursor)
    assert len(webhook.posts) == 2
    recovery = webhook.posts[1].body
    assert recovery["kind"] == "recovered"
    assert recovery["system"] == "crit-a"
    assert all(event.passed for event in result.asset_events)

    sensor_tick(stale_systems_sensor, instance, resources, cursor)
    assert len(webhook.posts) == 2


def test_alert_retried_when_webhook_fails(setup, webhook, capfd, monkeypatch):
    repo, instance, resources = setup
    webhook.status = 500
    age_critical_systems(monkeypatch)

    result, cursor = sensor_tick(stale_systems_sensor, instance, resources, None)

    log = capfd.readouterr().err
    assert {post.body["system"] for post in webhook.posts} == {"crit-a", "crit-b"}
    assert (
        "alert for crit-a not delivered, retrying next tick: the webhook returned HTTP 500" in log
    )
    assert "prep-token-5f2e" not in log, "the webhook URL can hold a token and is never logged"
    assert json.loads(cursor)["alerts"]["alerted"] == {}

    webhook.status = 200
    sensor_tick(stale_systems_sensor, instance, resources, cursor)
    assert len(webhook.posts) == 4, "failed alerts are sent again on the next tick"


def test_alerts_logged_without_webhook(setup, capfd, monkeypatch):
    repo, instance, resources = setup
    resources["alert_webhook"] = AlertWebhookResource(url="", url_env="PREP_TEST_UNSET_WEBHOOK")
    age_critical_systems(monkeypatch)

    result, cursor = sensor_tick(stale_systems_sensor, instance, resources, None)

    log = capfd.readouterr().err
    assert "alert: STALE: crit-a (tier critical)" in log
    assert "alert: STALE: crit-b (tier critical)" in log
    assert "2 alerts logged (no webhook set)" in result.skip_reason.skip_message
    assert sorted(json.loads(cursor)["alerts"]["alerted"]) == ["crit-a", "crit-b"]


def test_commit_adding_system_gets_it_checked(setup):
    repo, instance, resources = setup
    result, cursor = sensor_tick(infra_repo_commits_sensor, instance, resources, None)
    assert run_requests_of(result) == []

    text = (repo.root / INVENTORY).read_text()
    repo.write(INVENTORY, text.rstrip("\n") + "\n" + local_row("new-box", "low") + "\n")
    head = repo.commit("Add new-box\n\nNew-system: new-box\n")

    result, cursor = sensor_tick(infra_repo_commits_sensor, instance, resources, cursor)
    requests = run_requests_of(result)
    assert len(requests) == 1
    assert list(requests[0].asset_selection) == [*DISCOVERY_KEYS, AssetKey("drift_report")]
    assert json.loads(cursor)["pending"]["systems"] == ["new-box"]
    assert json.loads(cursor)["commit"] == head
    execute_run_request(requests[0], instance, resources)
    assert "new-box" in partition_keys(instance)

    result, cursor = sensor_tick(infra_repo_commits_sensor, instance, resources, cursor)
    requests = run_requests_of(result)
    assert len(requests) == 1
    assert requests[0].tags["dagster/asset_partition_range_start"] == "new-box"
    assert requests[0].tags["dagster/asset_partition_range_end"] == "new-box"
    assert list(requests[0].asset_selection) == [*PER_SYSTEM_KEYS, *REPORT_KEYS]
    execute_run_request(requests[0], instance, resources)

    for step in ("access_status", "tool_status"):
        assert "new-box" in instance.get_materialized_partitions(AssetKey(step)), step
    entry = repo.systems()["new-box"]
    assert entry["access"]["state"] == "reachable"
    assert entry["last_checked"]["tool_status"] is not None

    result, cursor = sensor_tick(infra_repo_commits_sensor, instance, resources, cursor)
    assert run_requests_of(result) == []
    assert json.loads(cursor)["pending"] is None


def test_commit_sensor_gives_up_waiting_for_inventory(setup, capfd):
    repo, instance, resources = setup
    result, cursor = sensor_tick(infra_repo_commits_sensor, instance, resources, None)
    text = (repo.root / INVENTORY).read_text()
    repo.write(INVENTORY, text.rstrip("\n") + "\n" + local_row("new-box", "low") + "\n")
    repo.commit("Add new-box")
    result, cursor = sensor_tick(infra_repo_commits_sensor, instance, resources, cursor)
    assert len(run_requests_of(result)) == 1, "the inventory run is requested but never runs"

    result, cursor = sensor_tick(infra_repo_commits_sensor, instance, resources, cursor)
    assert json.loads(cursor)["pending"]["systems"] == ["new-box"], "still waiting"
    state = json.loads(cursor)
    state["pending"]["since"] = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    result, cursor = sensor_tick(infra_repo_commits_sensor, instance, resources, json.dumps(state))

    assert run_requests_of(result) == []
    assert json.loads(cursor)["pending"] is None
    assert "no new inventory within 1h of commit" in capfd.readouterr().err


def test_commit_sensor_after_rewritten_history(setup, capfd):
    repo, instance, resources = setup
    result, cursor = sensor_tick(infra_repo_commits_sensor, instance, resources, None)
    repo.write("README.md", "# Infra\n")
    repo.commit("Add a readme")
    result, cursor = sensor_tick(infra_repo_commits_sensor, instance, resources, cursor)
    assert len(run_requests_of(result)) == 1
    assert json.loads(cursor)["pending"] is None, "a readme touches no system"

    repo.repo.git.reset("--hard", "HEAD~1")
    repo.write("README.md", "# Infra, rewritten\n")
    repo.commit("Add a different readme")
    capfd.readouterr()
    result, cursor = sensor_tick(infra_repo_commits_sensor, instance, resources, cursor)

    assert "history was rewritten" in capfd.readouterr().err
    requests = run_requests_of(result)
    assert len(requests) == 1
    assert json.loads(cursor)["pending"]["systems"] is None, "every system is checked again"
    execute_run_request(requests[0], instance, resources)
    result, cursor = sensor_tick(infra_repo_commits_sensor, instance, resources, cursor)
    ranges = {
        (
            request.tags["dagster/asset_partition_range_start"],
            request.tags["dagster/asset_partition_range_end"],
        )
        for request in run_requests_of(result)
    }
    assert ranges == {("crit-a", "std-c")}


def test_commit_sensor_skips_status_commits_and_failed_fetch(setup, capfd):
    repo, instance, resources = setup
    resources = {**resources, "git_watch": GitWatchResource(fetch_remote="nowhere")}
    result, cursor = sensor_tick(infra_repo_commits_sensor, instance, resources, None)
    repo.commit("Record the PREP status")

    result, cursor = sensor_tick(infra_repo_commits_sensor, instance, resources, cursor)

    assert run_requests_of(result) == []
    assert json.loads(cursor)["commit"] == repo.repo.head.commit.hexsha
    log = capfd.readouterr().err
    assert "git fetch nowhere failed" in log
    assert "change only the status documents" in log


def test_tier_schedule_covers_split_key_ranges(setup):
    repo, instance, resources = setup
    assert partition_keys(instance) == ["crit-a", "crit-b", "std-c"], "keys are grouped by tier"
    # crit-d is registered after std-c, so the critical keys form two ranges.
    rows = [
        local_row("crit-a", "critical"),
        local_row("crit-b", "critical"),
        local_row("std-c", "standard"),
        local_row("crit-d", "critical"),
        local_row("odd-e", "gold"),
    ]
    repo.write(INVENTORY, inventory_text(rows))
    repo.commit("Add crit-d and odd-e")
    run_pass_over(instance, resources, [], tags={"prep/trigger": "test"})
    assert partition_keys(instance) == ["crit-a", "crit-b", "std-c", "crit-d", "odd-e"]
    before = repo.systems()

    critical = build_tier_schedule(Tier("critical", "* * * * *", parse_duration("10s")), False)
    requests = schedule_tick(critical, instance, resources)

    ranges = [
        (
            request.tags["dagster/asset_partition_range_start"],
            request.tags["dagster/asset_partition_range_end"],
        )
        for request in requests
    ]
    assert ranges == [("crit-a", "crit-b"), ("crit-d", "crit-d")]
    assert list(requests[0].asset_selection) == [*DISCOVERY_KEYS, *PER_SYSTEM_KEYS]
    assert list(requests[1].asset_selection) == [*PER_SYSTEM_KEYS, *REPORT_KEYS]
    assert all(request.tags[TIER_TAG] == "critical" for request in requests)
    assert all(request.tags["prep/queue"] == "prep-loop" for request in requests)
    for request in requests:
        execute_run_request(request, instance, resources)

    after = repo.systems()
    for name in ("crit-a", "crit-b"):
        assert (
            after[name]["last_checked"]["tool_status"] > before[name]["last_checked"]["tool_status"]
        ), name
    assert after["crit-d"]["last_checked"]["tool_status"] is not None
    assert after["std-c"]["last_checked"] == before["std-c"]["last_checked"]
    assert after["odd-e"]["last_checked"]["tool_status"] is None

    problems = [problem["reason"] for problem in repo.status()["problems"]]
    assert any("unknown tier 'gold'" in reason and "'standard'" in reason for reason in problems)
    standard = build_tier_schedule(Tier("standard", "20 3 * * *", parse_duration("26h")), True)
    requests = schedule_tick(standard, instance, resources)
    assert [request.tags["dagster/asset_partition_range_start"] for request in requests] == [
        "std-c",
        "odd-e",
    ]


def test_tier_schedule_without_systems(setup):
    repo, instance, resources = setup

    low = build_tier_schedule(Tier("low", "40 3 * * 0", parse_duration("8d")), False)
    assert isinstance(schedule_tick(low, instance, resources), SkipReason)

    low_as_default = build_tier_schedule(Tier("low", "40 3 * * 0", parse_duration("8d")), True)
    requests = schedule_tick(low_as_default, instance, resources)
    assert len(requests) == 1
    assert list(requests[0].asset_selection) == [*DISCOVERY_KEYS, *REPORT_KEYS]
    assert "dagster/asset_partition_range_start" not in requests[0].tags
    execute_run_request(requests[0], instance, resources)


ALERT_RULES = """\
groups:
  - name: prep-test
    interval: 1s
    rules:
      - alert: DiskFull
        expr: vector(1)
        labels:
          instance: crit-a.home.arpa:9100
      - alert: NodeDown
        expr: vector(1)
        labels:
          system: std-c
      - alert: Unrelated
        expr: vector(1)
        labels:
          instance: elsewhere.example:9100
"""


@pytest.fixture
def alerting_prometheus(tmp_path):
    """A real Prometheus on 127.0.0.1 whose rules fire three alerts, two of them for test systems."""
    require_binaries("prometheus")
    work_dir = tmp_path / "prometheus"
    (work_dir / "data").mkdir(parents=True)
    rules = work_dir / "rules.yml"
    rules.write_text(ALERT_RULES)
    config = f"global:\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\n"
    server, url = start_prometheus(work_dir / "data", config, work_dir)
    try:
        deadline = time.monotonic() + 30
        while len(query_firing_alerts(url, timeout=5)) < 3:
            assert time.monotonic() < deadline, f"the alerts never fired:\n{server.log_tail()}"
            time.sleep(0.3)
        yield url
    finally:
        server.stop()


def test_firing_alert_starts_pass_for_its_system(setup, alerting_prometheus):
    repo, instance, resources = setup
    resources = {**resources, "prometheus": PrometheusResource(url=alerting_prometheus)}
    before = repo.systems()

    result, cursor = sensor_tick(prometheus_alerts_sensor, instance, resources, None)

    requests = run_requests_of(result)
    ranges = [
        (
            request.tags["dagster/asset_partition_range_start"],
            request.tags["dagster/asset_partition_range_end"],
        )
        for request in requests
    ]
    assert ranges == [("crit-a", "crit-a"), ("std-c", "std-c")]
    assert requests[0].tags["prep/alerts"] == "DiskFull, NodeDown"
    assert requests[0].tags["prep/trigger"] == "alert"
    assert list(requests[0].asset_selection)[:2] == DISCOVERY_KEYS
    assert list(requests[-1].asset_selection)[-3:] == REPORT_KEYS
    for request in requests:
        execute_run_request(request, instance, resources)
    after = repo.systems()
    for name in ("crit-a", "std-c"):
        assert (
            after[name]["last_checked"]["tool_status"] > before[name]["last_checked"]["tool_status"]
        ), name
    assert after["crit-b"]["last_checked"] == before["crit-b"]["last_checked"]

    result, cursor = sensor_tick(prometheus_alerts_sensor, instance, resources, cursor)
    assert run_requests_of(result) == [], "a second pass within the interval is rate-limited"
    assert "none due" in result.skip_reason.skip_message
    assert sorted(json.loads(cursor)["last_requested"]) == ["crit-a", "std-c"]


def test_alert_sensor_without_usable_prometheus(setup, unreachable_prometheus_url, capfd):
    repo, instance, resources = setup

    unset = {**resources, "prometheus": PrometheusResource(url="")}
    result, cursor = sensor_tick(prometheus_alerts_sensor, instance, unset, None)
    assert isinstance(result, SkipReason)
    assert "PREP_PROMETHEUS_URL" in result.skip_message

    closed = {**resources, "prometheus": PrometheusResource(url=unreachable_prometheus_url)}
    result, cursor = sensor_tick(prometheus_alerts_sensor, instance, closed, None)
    assert isinstance(result, SkipReason)
    assert "cannot read the firing alerts" in result.skip_message
    assert "is unreachable; trying again next tick" in capfd.readouterr().err
