"""Query building, argument checks and serialization, without a Prometheus server."""

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from prep_assets.baselines.catalog import (
    DISK_UTILIZATION,
    NETWORK_DROPS,
    USE_METRICS,
)
from prep_assets.baselines.models import BaselineSource, MetricBaseline, SystemBaseline
from prep_assets.baselines.prometheus import (
    CPU_UTILIZATION,
    DEFAULT_MAX_QUERY_CHARS,
    MEMORY_UTILIZATION,
    chunk_instance_labels,
    collect_prometheus_baselines,
    default_instance_label,
    encoded_query_length,
    instance_matcher,
    instance_regex,
    promql_duration,
    promql_string,
)
from prep_assets.baselines.targets import PveGuest, default_pve_guest
from prep_assets.models import AccessMethod, System

END = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def make_system(name: str, address: str | None = None, **attributes: str) -> System:
    return System(
        name=name,
        type="vm",
        tier="lab",
        access=AccessMethod.SSH,
        address=address,
        attributes=attributes,
    )


def test_default_label_prefers_instance_attribute() -> None:
    system = make_system("db", "127.0.0.20", instance="db.lab:9100")
    assert default_instance_label(system) == "db.lab:9100"


def test_default_label_from_address() -> None:
    assert default_instance_label(make_system("db", "127.0.0.20")) == "127.0.0.20:9100"


def test_default_label_brackets_ipv6() -> None:
    assert default_instance_label(make_system("db", "::1")) == "[::1]:9100"


def test_default_label_none_without_address() -> None:
    assert default_instance_label(make_system("switch")) is None


def test_instance_regex_matches_only_exact_labels() -> None:
    pattern = instance_regex(["web-1.lab:9100", "127.0.0.11:9100"])
    # Prometheus anchors label regexes at both ends, as fullmatch does.
    assert re.fullmatch(pattern, "web-1.lab:9100")
    assert re.fullmatch(pattern, "127.0.0.11:9100")
    assert not re.fullmatch(pattern, "web-1Xlab:9100")
    assert not re.fullmatch(pattern, "127.0.0.119100")


def test_promql_string_escapes_backslash_and_quote() -> None:
    assert promql_string('a\\b"c') == '"a\\\\b\\"c"'


def test_instance_matcher_text() -> None:
    assert instance_matcher(["a.b:1"]) == 'instance=~"a\\\\.b:1"'


def test_cpu_query_text() -> None:
    query = CPU_UTILIZATION.query(instance_matcher(["h:9100"]))
    assert query == (
        '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle",'
        'instance=~"h:9100"}[5m])))'
    )


def test_memory_query_text() -> None:
    query = MEMORY_UTILIZATION.query(instance_matcher(["h:9100"]))
    assert query == (
        '100 * (1 - node_memory_MemAvailable_bytes{instance=~"h:9100"}'
        ' / node_memory_MemTotal_bytes{instance=~"h:9100"})'
    )


def test_chunks_respect_query_limit() -> None:
    labels = [f"127.0.0.{index}:9100" for index in range(1, 250)]

    chunks = chunk_instance_labels(labels, MEMORY_UTILIZATION, 2_000)

    assert len(chunks) > 1
    for chunk in chunks:
        assert encoded_query_length(MEMORY_UTILIZATION, chunk) <= 2_000
    assert [label for chunk in chunks for label in chunk] == labels


def test_default_limit_fits_many_labels() -> None:
    labels = [f"127.0.0.{index}:9100" for index in range(1, 51)]

    chunks = chunk_instance_labels(labels, MEMORY_UTILIZATION, DEFAULT_MAX_QUERY_CHARS)

    assert len(chunks) == 1


def test_chunks_keep_oversized_label_alone() -> None:
    long_label = "x" * 300

    chunks = chunk_instance_labels(["a:1", long_label, "b:1"], CPU_UTILIZATION, 200)

    assert chunks == [["a:1"], [long_label], ["b:1"]]


def test_chunks_of_no_labels() -> None:
    assert chunk_instance_labels([], CPU_UTILIZATION, 200) == []


class RecordingClient:
    """A client that returns no series and records each query."""

    url = "http://127.0.0.1:1"

    def __init__(self) -> None:
        self.queries: list[str] = []
        self.instant_queries: list[str] = []

    def custom_query_range(self, query, start_time, end_time, step, params=None, timeout=None):  # type: ignore[no-untyped-def]
        self.queries.append(query)
        return []

    def custom_query(self, query, params=None, timeout=None):  # type: ignore[no-untyped-def]
        self.instant_queries.append(query)
        return []


def test_collect_rejects_naive_end() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        collect_prometheus_baselines(
            RecordingClient(),
            [make_system("db", "127.0.0.20")],
            window=timedelta(hours=1),
            step=timedelta(seconds=60),
            end=datetime(2026, 1, 5, 12, 0),
            timeout=5,
        )


def test_collect_rejects_too_many_points() -> None:
    with pytest.raises(ValueError, match="use a step of at least"):
        collect_prometheus_baselines(
            RecordingClient(),
            [make_system("db", "127.0.0.20")],
            window=timedelta(days=30),
            step=timedelta(seconds=60),
            end=END,
            timeout=5,
        )


def test_collect_without_labels_sends_no_query() -> None:
    client = RecordingClient()
    results = collect_prometheus_baselines(
        client,
        [make_system("switch")],
        window=timedelta(hours=1),
        step=timedelta(seconds=60),
        end=END,
        timeout=5,
    )
    assert client.queries == []
    assert client.instant_queries == []
    assert results["switch"].source is BaselineSource.NONE
    for metric in results["switch"].metrics:
        assert metric.no_data_reason is not None
        assert "no instance label" in metric.no_data_reason


def test_collect_uses_custom_label_function() -> None:
    client = RecordingClient()
    collect_prometheus_baselines(
        client,
        [make_system("db", "127.0.0.20")],
        window=timedelta(hours=1),
        step=timedelta(seconds=60),
        end=END,
        timeout=5,
        instance_label_for=lambda system: f"{system.name}.lab:9100",
    )
    assert len(client.queries) == len(USE_METRICS)
    # No metric returned series, so the only instant query is the one of up.
    assert client.instant_queries == ['max by (instance) (up{instance=~"db\\\\.lab:9100"})']
    for query in client.queries:
        assert 'instance=~"db\\\\.lab:9100"' in query


def sample_metric() -> MetricBaseline:
    return MetricBaseline(
        metric="cpu_utilization",
        unit="percent",
        avg=12.5,
        p95=30.0,
        max=41.0,
        stddev=6.0,
        samples=60,
        coverage=60 / 61,
        threshold=50.0,
        threshold_inputs={"formula": "min(cap, max(floor, p95 + k * stddev))", "p95": 30.0},
        query="100 * (1 - ...)",
        window_seconds=3600.0,
        source=BaselineSource.PROMETHEUS,
        step_seconds=60.0,
        expected_samples=61,
        window_end=END.isoformat(),
    )


def test_system_baseline_round_trip() -> None:
    missing = MetricBaseline(
        metric="memory_utilization",
        unit="percent",
        avg=None,
        p95=None,
        max=None,
        stddev=None,
        samples=0,
        coverage=0.0,
        threshold=None,
        threshold_inputs={},
        query="100 * (1 - ...)",
        window_seconds=3600.0,
        source=BaselineSource.PROMETHEUS,
        no_data_reason="no series for instance db:9100",
        low_coverage=True,
    )
    baseline = SystemBaseline("db", BaselineSource.PROMETHEUS, [sample_metric(), missing], "x")

    text = json.dumps(baseline.to_dict())
    restored = SystemBaseline.from_dict(json.loads(text))

    assert restored == baseline
    assert restored.metrics[1].no_data
    assert json.loads(text)["source"] == "prometheus"


class CannedClient:
    """A client that returns the same series for every range query and ``instant`` for every instant one."""

    url = "http://127.0.0.1:1"

    def __init__(
        self, series: list[dict[str, Any]], instant: list[dict[str, Any]] | None = None
    ) -> None:
        self.series = series
        self.instant = instant or []

    def custom_query_range(self, query, start_time, end_time, step, params=None, timeout=None):  # type: ignore[no-untyped-def]
        return self.series

    def custom_query(self, query, params=None, timeout=None):  # type: ignore[no-untyped-def]
        return self.instant


def collect_one(client: CannedClient) -> SystemBaseline:
    results = collect_prometheus_baselines(
        client,
        [make_system("db", instance="db:9100")],
        window=timedelta(minutes=4),
        step=timedelta(seconds=60),
        end=END,
        timeout=5,
        metrics=[CPU_UTILIZATION],
    )
    return results["db"]


def test_nan_values_are_dropped_from_statistics() -> None:
    values = [[0, "10"], [60, "NaN"], [120, "20"], [180, "+Inf"], [240, "30"]]
    baseline = collect_one(CannedClient([{"metric": {"instance": "db:9100"}, "values": values}]))
    metric = baseline.metrics[0]

    assert metric.samples == 3
    assert metric.avg == 20.0
    assert metric.coverage == 0.6
    assert metric.low_coverage


def test_only_nan_values_is_no_data() -> None:
    values = [[0, "NaN"], [60, "NaN"]]
    baseline = collect_one(CannedClient([{"metric": {"instance": "db:9100"}, "values": values}]))

    assert baseline.metrics[0].no_data_reason == (
        "the series for instance db:9100 has only NaN or infinite values"
    )


def test_duplicate_series_keeps_longest() -> None:
    short = {"metric": {"instance": "db:9100", "job": "a"}, "values": [[0, "90"]]}
    long = {"metric": {"instance": "db:9100", "job": "b"}, "values": [[0, "10"], [60, "20"]]}

    baseline = collect_one(CannedClient([short, long]))

    assert baseline.metrics[0].samples == 2
    assert baseline.metrics[0].avg == 15.0


def test_promql_duration_units() -> None:
    assert promql_duration(timedelta(minutes=5)) == "5m"
    assert promql_duration(timedelta(hours=2)) == "2h"
    assert promql_duration(timedelta(seconds=90)) == "90s"


def test_promql_duration_rejects_fractions() -> None:
    with pytest.raises(ValueError, match="whole number of seconds"):
        promql_duration(timedelta(seconds=1.5))


def test_network_query_keeps_directions_apart() -> None:
    query = NETWORK_DROPS.query(instance_matcher(["h:9100"]))

    assert query.startswith("sum by (instance, device) (rate(node_network_receive_drop_total{")
    assert "label_replace(rate(node_network_transmit_drop_total{" in query
    assert 'device!~"lo|veth.+|tap.+|fwbr.+|fwpr.+|fwln.+"' in query


def test_pve_guest_from_pve_id() -> None:
    system = make_system("vm-media", **{"pve-id": "qemu/100"})
    assert default_pve_guest(system) == PveGuest(("qemu/100",))


def test_pve_guest_from_vmid_tries_both_types() -> None:
    system = make_system("ct-dns", vmid="101")
    assert default_pve_guest(system) == PveGuest(("qemu/101", "lxc/101"))


def test_pve_guest_absent() -> None:
    assert default_pve_guest(make_system("db", "127.0.0.20")) is None


@pytest.mark.parametrize(
    ("attribute", "value"), [("pve-id", "vm/100"), ("pve-id", "qemu/abc"), ("vmid", "qemu/100")]
)
def test_pve_guest_rejects_invalid_value(attribute: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"invalid {attribute}"):
        default_pve_guest(make_system("vm", **{attribute: value}))


def test_invalid_pve_id_noted_not_fatal() -> None:
    client = RecordingClient()
    results = collect_prometheus_baselines(
        client,
        [
            make_system("bad", "127.0.0.21", **{"pve-id": "vm/100"}),
            make_system("good", "127.0.0.22"),
        ],
        window=timedelta(hours=1),
        step=timedelta(seconds=60),
        end=END,
        timeout=5,
    )

    assert "invalid pve-id 'vm/100' of system bad" in results["bad"].message
    assert "invalid pve-id" not in results["good"].message
    # No guest id is valid, so no prometheus-pve-exporter query is sent.
    assert not any("pve_" in query for query in client.queries)


def disk_series(device: str, values: list[list[Any]]) -> dict[str, Any]:
    return {"metric": {"instance": "db:9100", "device": device}, "values": values}


def disk_current(device: str, value: str) -> dict[str, Any]:
    return {"metric": {"instance": "db:9100", "device": device}, "value": [240, value]}


def test_per_device_rows_and_worst_device() -> None:
    client = CannedClient(
        [
            disk_series("sda", [[0, "10"], [60, "80"], [120, "10"]]),
            disk_series("sdb", [[0, "50"], [60, "50"], [120, "50"], [180, "50"]]),
        ],
        instant=[disk_current("sda", "95"), disk_current("sdb", "40")],
    )
    results = collect_prometheus_baselines(
        client,
        [make_system("db", instance="db:9100")],
        window=timedelta(minutes=3),
        step=timedelta(seconds=60),
        end=END,
        timeout=5,
        metrics=[DISK_UTILIZATION],
    )
    baseline = results["db"]
    combined = baseline.metric("disk_utilization")
    sda = baseline.metric("disk_utilization", "sda")
    sdb = baseline.metric("disk_utilization", "sdb")
    assert combined is not None
    assert sda is not None
    assert sdb is not None

    assert [row.device for row in baseline.metrics] == [None, "sda", "sdb"]
    # The maximum over both disks at 0, 60, 120 and 180 s.
    assert combined.samples == 4
    assert combined.avg == (50 + 80 + 50 + 50) / 4
    assert combined.max == 80
    # sdb's p95 is 50, sda's is 73.
    assert combined.worst_device == "sda"
    assert combined.current == 95
    assert sda.current == 95
    assert sdb.current == 40
    assert sda.samples == 3
    assert sda.coverage == 0.75


def test_series_without_device_label_dropped() -> None:
    client = CannedClient(
        [
            {"metric": {"instance": "db:9100"}, "values": [[0, "10"]]},
            disk_series("sda", [[0, "20"]]),
        ]
    )
    results = collect_prometheus_baselines(
        client,
        [make_system("db", instance="db:9100")],
        window=timedelta(minutes=1),
        step=timedelta(seconds=60),
        end=END,
        timeout=5,
        metrics=[DISK_UTILIZATION],
    )

    assert [row.device for row in results["db"].metrics] == [None, "sda"]


def test_malformed_value_drops_only_its_series() -> None:
    client = CannedClient(
        [
            {"metric": {"instance": "db:9100"}, "values": [[0, "not a number"]]},
            {"metric": {"instance": "web:9100"}, "values": [[0, "10"], [60, "30"]]},
        ]
    )
    results = collect_prometheus_baselines(
        client,
        [make_system("db", instance="db:9100"), make_system("web", instance="web:9100")],
        window=timedelta(minutes=1),
        step=timedelta(seconds=60),
        end=END,
        timeout=5,
        metrics=[CPU_UTILIZATION],
    )

    assert results["db"].source is BaselineSource.NONE
    assert results["web"].metrics[0].avg == 20.0


def test_nan_current_value_left_unknown() -> None:
    client = CannedClient(
        [{"metric": {"instance": "db:9100"}, "values": [[0, "10"], [60, "20"]]}],
        instant=[{"metric": {"instance": "db:9100"}, "value": [60, "NaN"]}],
    )

    baseline = collect_one(client)

    assert baseline.metrics[0].avg == 15.0
    assert baseline.metrics[0].current is None
