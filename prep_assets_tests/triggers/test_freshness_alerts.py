"""Stale-system detection, alert planning and the webhook POST against a loopback receiver."""

from datetime import UTC, datetime, timedelta

import pytest

from prep_assets.tiers import DEFAULT_TIERS, parse_tiers
from prep_assets.triggers.alerts import (
    AlertDeliveryError,
    AlertKind,
    AlertState,
    PayloadFormat,
    plan_alerts,
    record_sent,
    send_alert,
)
from prep_assets.triggers.freshness import find_stale_systems, stale_for_step, summarize
from prep_assets_tests.prometheus_server import free_loopback_port
from prep_assets_tests.trigger_helpers import WebhookReceiver

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
STEPS = ("access_status", "tool_status", "provisioned_tools", "baselines")


def times(age: timedelta | None) -> dict[str, datetime | None]:
    return {step: None if age is None else NOW - age for step in STEPS}


@pytest.fixture
def receiver():
    server = WebhookReceiver()
    yield server
    server.close()


def test_stale_by_tier_window():
    tiers = {"pve1": "critical", "nas": "standard", "tv": "low", "new": "critical"}
    last_checked = {
        "pve1": times(timedelta(hours=3)),
        "nas": times(timedelta(hours=3)),
        "tv": times(timedelta(days=9)),
        "new": times(None),
    }

    stale = find_stale_systems(tiers, last_checked, DEFAULT_TIERS, NOW)

    assert [system.system for system in stale] == ["new", "pve1", "tv"]
    pve1 = stale[1]
    assert pve1.tier == "critical"
    assert pve1.max_age == timedelta(hours=3)
    assert {step.step for step in pve1.steps} == set(STEPS)
    assert stale[0].max_age is None, "a system never checked has no age"


def test_step_window_override_and_unknown_tier():
    table = parse_tiers(
        "| Tier | Schedule | Stale after | Baselines | Default |\n|---|---|---|---|---|\n"
        "| critical | 0 * * * * | 2h | 26h | |\n| standard | 0 3 * * * | 26h | | yes |\n"
    )
    last_checked = {"pve1": times(timedelta(hours=3)), "odd": times(timedelta(hours=3))}

    stale = find_stale_systems({"pve1": "critical", "odd": "gold"}, last_checked, table, NOW)

    assert [system.system for system in stale] == ["pve1"], "gold resolves to standard (26h)"
    assert stale[0].step("baselines") is None
    rows = stale_for_step(stale, "tool_status")
    assert summarize(rows) == "1 stale: pve1 (critical, 3h old)"
    assert (
        summarize(stale_for_step(stale, "baselines")) == "every system is within its tier's window"
    )


def test_alert_once_then_recovery():
    state = AlertState()
    stale = find_stale_systems(
        {"pve1": "critical"}, {"pve1": times(timedelta(hours=3))}, DEFAULT_TIERS, NOW
    )

    first = plan_alerts(state, stale, {"pve1"}, NOW)
    for alert in first:
        record_sent(state, alert)
    again = plan_alerts(state, stale, {"pve1"}, NOW)
    recovered = plan_alerts(state, [], {"pve1"}, NOW)

    assert [(alert.kind, alert.system) for alert in first] == [(AlertKind.STALE, "pve1")]
    assert again == []
    assert [(alert.kind, alert.system) for alert in recovered] == [(AlertKind.RECOVERED, "pve1")]
    assert "fresh again" in recovered[0].text()
    assert AlertState.from_dict(state.to_dict()) == state


def test_recovery_when_system_leaves_inventory():
    state = AlertState({"old": {"tier": "low", "since": "2026-05-01T00:00:00Z"}})

    alerts = plan_alerts(state, [], set(), NOW)

    assert alerts[0].kind is AlertKind.RECOVERED
    assert alerts[0].tier == "low"
    assert "no longer in the inventory" in alerts[0].text()


def test_json_and_slack_payloads(receiver):
    stale = find_stale_systems(
        {"pve1": "critical"}, {"pve1": times(timedelta(hours=3))}, DEFAULT_TIERS, NOW
    )
    alert = plan_alerts(AlertState(), stale, {"pve1"}, NOW)[0]

    send_alert(receiver.url, alert, PayloadFormat.JSON, timeout=5)
    send_alert(receiver.url, alert, PayloadFormat.SLACK, timeout=5)

    generic, slack = (post.body for post in receiver.posts)
    assert generic["event"] == "prep.system_stale"
    assert generic["system"] == "pve1"
    assert generic["tier"] == "critical"
    assert generic["at"] == "2026-05-04T12:00:00Z"
    assert generic["stale_steps"][0]["age_seconds"] == 3 * 3600
    assert generic["stale_steps"][0]["window_seconds"] == 2 * 3600
    assert slack == {"text": generic["text"]}
    assert slack["text"].startswith(
        "STALE: pve1 (tier critical): access_status last checked 3h ago"
    )


def test_webhook_errors_hide_url(receiver):
    alert = plan_alerts(AlertState({"pve1": {"tier": "critical"}}), [], {"pve1"}, NOW)[0]
    receiver.status = 503

    with pytest.raises(AlertDeliveryError, match="HTTP 503") as rejected:
        send_alert(receiver.url, alert, PayloadFormat.JSON, timeout=5)
    assert "prep-token" not in str(rejected.value)

    closed = f"http://127.0.0.1:{free_loopback_port()}/hooks/secret-token"
    with pytest.raises(AlertDeliveryError, match="ConnectionError") as refused:
        send_alert(closed, alert, PayloadFormat.JSON, timeout=5)
    assert "secret-token" not in str(refused.value)
    assert refused.value.__cause__ is None
