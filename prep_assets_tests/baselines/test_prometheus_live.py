"""collect_prometheus_baselines against Prometheus scraping a real node exporter."""

from datetime import UTC, datetime, timedelta

import pytest

from prep_assets.baselines.catalog import USE_METRICS
from prep_assets.baselines.models import BaselineSource, MetricBaseline, SystemBaseline
from prep_assets.baselines.prometheus import QueryStats, collect_prometheus_baselines
from prep_assets.models import AccessMethod, System
from prep_assets_tests.prometheus_server import LivePrometheus

pytestmark = pytest.mark.integration

# rate() divides counter deltas by scrape timestamps, and scrape jitter can push an
# idle CPU's rate a little past 1 and its utilization a little below 0.
JITTER_PERCENT = 2.0
# Every Linux machine with /proc has these, whatever its disks and interfaces.
ALWAYS_PRESENT = (
    "cpu_utilization",
    "cpu_load_per_cpu",
    "memory_utilization",
    "memory_major_faults",
    "memory_swap_in",
    "memory_swap_out",
    "filesystem_used",
)


@pytest.fixture(scope="module")
def live_baseline(live_prometheus: LivePrometheus) -> tuple[SystemBaseline, QueryStats]:
    system = System(
        name="localhost",
        type="vm",
        tier="lab",
        access=AccessMethod.LOCAL,
        address="127.0.0.1",
        attributes={"instance": live_prometheus.instance},
    )
    query_stats = QueryStats()
    results = collect_prometheus_baselines(
        live_prometheus.url,
        [system],
        window=timedelta(seconds=20),
        step=timedelta(seconds=1),
        end=datetime.now(UTC),
        timeout=10,
        query_stats=query_stats,
    )
    return results["localhost"], query_stats


def assert_in_range(metric: MetricBaseline) -> None:
    assert metric.avg is not None and metric.max is not None and metric.p95 is not None
    assert metric.samples >= 1, metric.metric
    assert metric.current is not None, metric.metric
    if metric.unit == "percent":
        assert -JITTER_PERCENT <= metric.avg <= 100 + JITTER_PERCENT, metric.metric
        assert metric.max <= 100 + JITTER_PERCENT, metric.metric
    else:
        # Load, queue lengths and per-second rates of counters are never negative.
        assert metric.avg >= 0, metric.metric
        assert metric.max >= metric.avg, metric.metric


def test_live_metrics_in_range(live_baseline: tuple[SystemBaseline, QueryStats]) -> None:
    baseline = live_baseline[0]

    assert baseline.source is BaselineSource.PROMETHEUS
    for name in ALWAYS_PRESENT:
        metric = baseline.metric(name)
        assert metric is not None, name
        assert metric.no_data_reason is None, f"{name}: {metric.no_data_reason}"
    for metric in baseline.metrics:
        if metric.no_data_reason is None:
            assert_in_range(metric)
        else:
            # PSI, disks or a link speed can be missing on this machine, but never silently.
            assert metric.no_data_reason.startswith("no series for instance"), metric.metric
            assert metric.avg is None


def test_live_memory_is_partly_used(live_baseline: tuple[SystemBaseline, QueryStats]) -> None:
    memory = live_baseline[0].metric("memory_utilization")
    assert memory is not None and memory.avg is not None

    # A running machine always uses some memory, and never all of it here.
    assert 0 < memory.avg < 100


def test_live_root_filesystem_listed(live_baseline: tuple[SystemBaseline, QueryStats]) -> None:
    root = live_baseline[0].metric("filesystem_used", "/")
    assert root is not None and root.avg is not None

    assert 0 < root.avg <= 100


def test_live_query_count(live_baseline: tuple[SystemBaseline, QueryStats]) -> None:
    baseline, query_stats = live_baseline
    with_series = {metric.metric for metric in baseline.metrics if metric.no_data_reason is None}

    assert query_stats.range_queries == len(USE_METRICS)
    # One up query, and one instant query for each metric that returned series.
    assert query_stats.instant_queries == 1 + len(with_series)
    assert query_stats.failed == 0
