"""Mapping firing Prometheus alerts to inventory systems, and the per-system rate limit."""

import pytest

from prep_assets.triggers.prometheus_alerts import (
    PrometheusAlertsError,
    due_for_pass,
    query_firing_alerts,
    systems_for_alerts,
)

SYSTEMS = [
    {"name": "pve1", "address": "10.0.0.2"},
    {"name": "nas", "address": "nas.home.arpa"},
    {"name": "v6", "address": "fd00::5"},
    {"name": "modem", "address": None},
]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"alertname": "A", "instance": "10.0.0.2:9100"}, "pve1"),
        ({"alertname": "A", "instance": "pve1.home.arpa:9100"}, "pve1"),
        ({"alertname": "A", "instance": "PVE1"}, "pve1"),
        ({"alertname": "A", "host": "nas.home.arpa"}, "nas"),
        ({"alertname": "A", "instance": "[fd00::5]:9100"}, "v6"),
        ({"alertname": "A", "system": "modem", "instance": "10.0.0.2:9100"}, "modem"),
        ({"alertname": "A", "instance": "10.0.0.9:9100"}, None),
        ({"alertname": "A", "job": "node"}, None),
    ],
)
def test_alert_labels_map_to_system(labels, expected):
    matches = systems_for_alerts([labels], SYSTEMS)

    assert matches == ({expected: ["A"]} if expected else {})


def test_alert_names_grouped_per_system():
    alerts = [
        {"alertname": "DiskFull", "instance": "pve1:9100"},
        {"alertname": "HighLoad", "instance": "10.0.0.2:9100"},
        {"alertname": "DiskFull", "host": "pve1"},
    ]

    assert systems_for_alerts(alerts, SYSTEMS) == {"pve1": ["DiskFull", "HighLoad"]}


def test_rate_limit_per_system():
    matches = {"pve1": ["A"], "nas": ["B"]}

    due = due_for_pass(
        matches, {"pve1": 1000.0, "nas": 100.0}, now=1500.0, min_interval_seconds=600
    )

    assert due == ["nas"]
    assert due_for_pass(matches, {}, now=0.0, min_interval_seconds=600) == ["nas", "pve1"]


def test_unreachable_prometheus_hides_credentials(unreachable_prometheus_url):
    url = unreachable_prometheus_url.replace("http://", "http://reader:hunter2@")

    with pytest.raises(PrometheusAlertsError, match="is unreachable") as error:
        query_firing_alerts(url, timeout=2)

    assert "hunter2" not in str(error.value)
    assert "127.0.0.1" in str(error.value)
