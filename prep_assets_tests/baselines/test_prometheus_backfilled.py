"""collect_prometheus_baselines against a real Prometheus holding generated history.

The expected numbers are computed here from the generated samples with numpy, the
way Prometheus 2.x evaluates the queries (Debian 12 ships 2.42). Range and lookback
windows [t - 5m, t] include both ends there. Samples fall on every 60 s query point,
so rate() is exactly (c(t) - c(t - 5m)) / 300 with no extrapolation, and the
memory gauges are read at t itself.

NOTE: the Prometheus 3 querying docs define range selectors as left-open, so there
rate() averages the last 4 steps instead of 5. These expected values would need
that change before the tests can pass on Prometheus 3.

Tolerance: 1e-9 percentage points. Prometheus and numpy both compute in float64
but sum in a different order.
"""

import bisect
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from prep_assets.baselines.models import BaselineSource, SystemBaseline
from prep_assets.baselines.prometheus import (
    CPU_UTILIZATION,
    DEFAULT_METRICS,
    MEMORY_UTILIZATION,
    MetricSpec,
    QueryStats,
    collect_prometheus_baselines,
    instance_matcher,
)
from prep_assets.models import AccessMethod, System
from prep_assets_tests.prometheus_server import (
    BUSY_INSTANCE,
    CPUS,
    GAP_INSTANCE,
    HISTORY_DAYS,
    QUIET_INSTANCE,
    STEP_SECONDS,
    BackfilledPrometheus,
    InstanceSeries,
)

pytestmark = pytest.mark.integration

TOLERANCE = 1e-9
RATE_RANGE_SECONDS = 300
LOOKBACK_SECONDS = 300
WINDOW = timedelta(days=HISTORY_DAYS)
STEP = timedelta(seconds=STEP_SECONDS)
EXPECTED_POINTS = HISTORY_DAYS * 86_400 // STEP_SECONDS + 1
MISSING_INSTANCE = "127.0.0.99:9100"


def make_system(name: str, address: str | None = None, instance: str | None = None) -> System:
    attributes = {"instance": instance} if instance else {}
    return System(
        name=name,
        type="vm",
        tier="lab",
        access=AccessMethod.SSH,
        address=address,
        attributes=attributes,
    )


SYSTEMS = [
    # No instance attribute: the default label <address>:9100 is QUIET_INSTANCE.
    make_system("quiet", address="127.0.0.11"),
    make_system("busy", instance=BUSY_INSTANCE),
    make_system("gap", instance=GAP_INSTANCE),
    make_system("missing", instance=MISSING_INSTANCE),
    make_system("no-address"),
]


def query_times(server: BackfilledPrometheus) -> list[int]:
    end = server.history.end
    return list(range(end - HISTORY_DAYS * 86_400, end + 1, STEP_SECONDS))


def samples_in_range(series: InstanceSeries, start: int, end: int) -> tuple[int, int]:
    """Return the index range [first, last) of samples with start <= timestamp <= end."""
    first = bisect.bisect_left(series.timestamps, start)
    last = bisect.bisect_right(series.timestamps, end)
    return first, last


def expected_cpu_values(series: InstanceSeries, times: list[int]) -> list[float]:
    """CPU utilization at each query time whose 5 m range has every sample."""
    values = []
    for t in times:
        first, last = samples_in_range(series, t - RATE_RANGE_SECONDS, t)
        if last - first != RATE_RANGE_SECONDS // STEP_SECONDS + 1:
            continue
        idle_rates = [
            (series.cpu_seconds[(cpu, "idle")][last - 1] - series.cpu_seconds[(cpu, "idle")][first])
            / RATE_RANGE_SECONDS
            for cpu in CPUS
        ]
        values.append(100 * (1 - sum(idle_rates) / len(idle_rates)))
    return values


def expected_cpu_point_count(series: InstanceSeries, times: list[int]) -> int:
    """Count query times whose 5 m range has the two samples rate() needs."""
    count = 0
    for t in times:
        first, last = samples_in_range(series, t - RATE_RANGE_SECONDS, t)
        if last - first >= 2:
            count += 1
    return count


def expected_memory_values(series: InstanceSeries, times: list[int]) -> list[float]:
    """Memory utilization at each query time, from the newest sample in the lookback."""
    values = []
    for t in times:
        first, last = samples_in_range(series, t - LOOKBACK_SECONDS, t)
        if last == first:
            continue
        available = series.mem_available_bytes[last - 1]
        values.append(100 * (1 - available / series.mem_total_bytes))
    return values


def expected_threshold(values: list[float], spec: MetricSpec) -> float:
    rule = spec.threshold_rule
    p95 = float(np.percentile(values, 95))
    return min(rule.cap, max(rule.floor, p95 + rule.k * float(np.std(values))))


@pytest.fixture(scope="module")
def collected(
    backfilled_prometheus: BackfilledPrometheus,
) -> tuple[dict[str, SystemBaseline], QueryStats]:
    query_stats = QueryStats()
    results = collect_prometheus_baselines(
        backfilled_prometheus.url,
        SYSTEMS,
        window=WINDOW,
        step=STEP,
        end=backfilled_prometheus.window_end,
        timeout=30,
        query_stats=query_stats,
    )
    return results, query_stats


@pytest.mark.parametrize(
    ("system", "instance"), [("quiet", QUIET_INSTANCE), ("busy", BUSY_INSTANCE)]
)
def test_cpu_matches_generated_samples(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
    backfilled_prometheus: BackfilledPrometheus,
    system: str,
    instance: str,
) -> None:
    series = backfilled_prometheus.history.instances[instance]
    values = expected_cpu_values(series, query_times(backfilled_prometheus))
    metric = collected[0][system].metric("cpu_utilization")

    assert metric is not None
    assert len(values) == EXPECTED_POINTS
    assert metric.samples == EXPECTED_POINTS
    assert metric.coverage == 1.0
    assert not metric.low_coverage
    assert metric.avg == pytest.approx(np.mean(values), abs=TOLERANCE)
    assert metric.p95 == pytest.approx(np.percentile(values, 95), abs=TOLERANCE)
    assert metric.max == pytest.approx(np.max(values), abs=TOLERANCE)
    assert metric.stddev == pytest.approx(np.std(values), abs=TOLERANCE)
    assert metric.threshold == pytest.approx(
        expected_threshold(values, CPU_UTILIZATION), abs=TOLERANCE
    )


@pytest.mark.parametrize(
    ("system", "instance"),
    [("quiet", QUIET_INSTANCE), ("busy", BUSY_INSTANCE), ("gap", GAP_INSTANCE)],
)
def test_memory_matches_generated_samples(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
    backfilled_prometheus: BackfilledPrometheus,
    system: str,
    instance: str,
) -> None:
    series = backfilled_prometheus.history.instances[instance]
    values = expected_memory_values(series, query_times(backfilled_prometheus))
    metric = collected[0][system].metric("memory_utilization")

    assert metric is not None
    assert metric.samples == len(values)
    assert metric.avg == pytest.approx(np.mean(values), abs=TOLERANCE)
    assert metric.p95 == pytest.approx(np.percentile(values, 95), abs=TOLERANCE)
    assert metric.max == pytest.approx(np.max(values), abs=TOLERANCE)
    assert metric.stddev == pytest.approx(np.std(values), abs=TOLERANCE)
    assert metric.threshold == pytest.approx(
        expected_threshold(values, MEMORY_UTILIZATION), abs=TOLERANCE
    )


def test_thresholds_cover_floor_middle_and_cap(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
) -> None:
    results = collected[0]
    quiet_cpu = results["quiet"].metric("cpu_utilization")
    busy_cpu = results["busy"].metric("cpu_utilization")
    busy_memory = results["busy"].metric("memory_utilization")
    assert quiet_cpu is not None and busy_cpu is not None and busy_memory is not None

    assert quiet_cpu.threshold == CPU_UTILIZATION.threshold_rule.floor
    assert busy_cpu.threshold == CPU_UTILIZATION.threshold_rule.cap
    assert busy_memory.threshold is not None
    assert MEMORY_UTILIZATION.threshold_rule.floor < busy_memory.threshold
    assert busy_memory.threshold < MEMORY_UTILIZATION.threshold_rule.cap


def test_threshold_inputs_recompute_threshold(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
) -> None:
    metric = collected[0]["busy"].metric("memory_utilization")
    assert metric is not None
    inputs = metric.threshold_inputs

    recomputed = min(
        inputs["cap"], max(inputs["floor"], inputs["p95"] + inputs["k"] * inputs["stddev"])
    )

    assert inputs["p95"] == metric.p95
    assert inputs["stddev"] == metric.stddev
    assert recomputed == metric.threshold


def test_provenance_fields(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
    backfilled_prometheus: BackfilledPrometheus,
) -> None:
    baseline = collected[0]["busy"]
    metric = baseline.metric("cpu_utilization")
    assert metric is not None

    assert baseline.source is BaselineSource.PROMETHEUS
    assert baseline.message == ""
    assert metric.source is BaselineSource.PROMETHEUS
    assert metric.unit == "percent"
    assert metric.window_seconds == WINDOW.total_seconds()
    assert metric.step_seconds == STEP_SECONDS
    assert metric.expected_samples == EXPECTED_POINTS
    assert metric.window_end == backfilled_prometheus.window_end.isoformat()
    assert 'rate(node_cpu_seconds_total{mode="idle",instance=~' in metric.query


def test_gap_lowers_coverage(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
    backfilled_prometheus: BackfilledPrometheus,
) -> None:
    series = backfilled_prometheus.history.instances[GAP_INSTANCE]
    expected_points = expected_cpu_point_count(series, query_times(backfilled_prometheus))
    metric = collected[0]["gap"].metric("cpu_utilization")
    assert metric is not None

    assert metric.samples == expected_points
    assert metric.coverage == pytest.approx(expected_points / EXPECTED_POINTS)
    assert metric.coverage < 0.9
    assert metric.low_coverage
    assert metric.avg is not None


def test_missing_instance_is_no_data(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
) -> None:
    baseline = collected[0]["missing"]

    assert baseline.source is BaselineSource.NONE
    assert f"no series for instance {MISSING_INSTANCE}" in baseline.message
    for metric in baseline.metrics:
        assert metric.no_data_reason == f"no series for instance {MISSING_INSTANCE}"
        assert metric.avg is None
        assert metric.max is None
        assert metric.threshold is None
        assert metric.samples == 0


def test_system_without_address_is_no_data(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
) -> None:
    baseline = collected[0]["no-address"]

    assert baseline.source is BaselineSource.NONE
    for metric in baseline.metrics:
        assert metric.no_data_reason is not None
        assert "no instance label" in metric.no_data_reason


def test_one_query_per_metric(collected: tuple[dict[str, SystemBaseline], QueryStats]) -> None:
    query_stats = collected[1]

    assert query_stats.queries == len(DEFAULT_METRICS)
    assert query_stats.failed == 0
    labels = sorted([QUIET_INSTANCE, BUSY_INSTANCE, GAP_INSTANCE, MISSING_INSTANCE])
    matcher = instance_matcher(labels)
    for query in query_stats.query_texts:
        assert matcher in query


def test_chunked_queries_give_same_numbers(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
    backfilled_prometheus: BackfilledPrometheus,
) -> None:
    query_stats = QueryStats()
    chunked = collect_prometheus_baselines(
        backfilled_prometheus.url,
        SYSTEMS,
        window=WINDOW,
        step=STEP,
        end=backfilled_prometheus.window_end,
        timeout=30,
        # Shorter than any query, so each of the 4 labels gets a query of its own.
        max_query_chars=1,
        query_stats=query_stats,
    )

    assert query_stats.queries == 4 * len(DEFAULT_METRICS)
    for name, baseline in collected[0].items():
        for metric in baseline.metrics:
            other = chunked[name].metric(metric.metric)
            assert other is not None
            assert other.avg == metric.avg
            assert other.samples == metric.samples
            assert other.no_data_reason == metric.no_data_reason


def test_rejected_query_fails_only_its_metric(
    backfilled_prometheus: BackfilledPrometheus,
) -> None:
    broken = MetricSpec(
        name="broken",
        resource="cpu",
        signal="saturation",
        unit="percent",
        query_template="rate(node_cpu_seconds_total{$instances}",
        threshold_rule=CPU_UTILIZATION.threshold_rule,
    )
    query_stats = QueryStats()
    results = collect_prometheus_baselines(
        backfilled_prometheus.url,
        [make_system("busy", instance=BUSY_INSTANCE)],
        window=WINDOW,
        step=STEP,
        end=backfilled_prometheus.window_end,
        timeout=30,
        metrics=[broken, CPU_UTILIZATION],
        query_stats=query_stats,
    )
    broken_metric = results["busy"].metric("broken")
    cpu_metric = results["busy"].metric("cpu_utilization")
    assert broken_metric is not None and cpu_metric is not None

    assert query_stats.queries == 2
    assert query_stats.failed == 1
    assert broken_metric.no_data_reason is not None
    assert "range query to Prometheus" in broken_metric.no_data_reason
    assert "HTTP Status Code 400" in broken_metric.no_data_reason
    assert cpu_metric.no_data_reason is None
    assert results["busy"].source is BaselineSource.PROMETHEUS


def test_unreachable_prometheus_is_no_data(unreachable_prometheus_url: str) -> None:
    query_stats = QueryStats()
    results = collect_prometheus_baselines(
        unreachable_prometheus_url,
        SYSTEMS,
        window=WINDOW,
        step=STEP,
        end=datetime.now(UTC),
        timeout=5,
        query_stats=query_stats,
    )

    # The first connection error stops the collection, so only one query is sent.
    assert query_stats.queries == 1
    assert set(results) == {system.name for system in SYSTEMS}
    for baseline in results.values():
        assert baseline.source is BaselineSource.NONE
        for metric in baseline.metrics:
            assert metric.no_data_reason is not None
            assert metric.avg is None
    reason = results["busy"].metrics[0].no_data_reason
    assert (
        reason == f"Prometheus at {unreachable_prometheus_url} is unreachable (Connection refused)"
    )


def test_stalled_prometheus_times_out(stalled_http_url: str) -> None:
    started = time.monotonic()
    results = collect_prometheus_baselines(
        stalled_http_url,
        [make_system("busy", instance=BUSY_INSTANCE)],
        window=WINDOW,
        step=STEP,
        end=datetime.now(UTC),
        timeout=0.5,
    )
    elapsed = time.monotonic() - started

    # One 0.5 s read timeout, not retried; 3 s leaves room for a slow machine.
    assert elapsed < 3
    for metric in results["busy"].metrics:
        assert metric.no_data_reason == f"Prometheus at {stalled_http_url} timed out after 0.5 s"
