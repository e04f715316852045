"""collect_prometheus_baselines against Prometheus scraping a real node exporter."""

from datetime import UTC, datetime, timedelta

import pytest

from prep_assets.baselines.models import BaselineSource
from prep_assets.baselines.prometheus import QueryStats, collect_prometheus_baselines
from prep_assets.models import AccessMethod, System
from prep_assets_tests.prometheus_server import LivePrometheus

pytestmark = pytest.mark.integration

# rate() divides counter deltas by scrape timestamps, and scrape jitter can push an
# idle CPU's rate a little past 1 and its utilization a little below 0.
JITTER_PERCENT = 2.0


def test_live_node_exporter_numbers_in_range(live_prometheus: LivePrometheus) -> None:
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
    baseline = results["localhost"]

    assert query_stats.queries == 2
    assert baseline.source is BaselineSource.PROMETHEUS
    for metric in baseline.metrics:
        assert metric.no_data_reason is None, metric.metric
        assert metric.samples >= 1, metric.metric
        assert metric.avg is not None and metric.max is not None and metric.p95 is not None
        assert -JITTER_PERCENT <= metric.avg <= 100 + JITTER_PERCENT, metric.metric
        assert metric.max <= 100 + JITTER_PERCENT, metric.metric

    memory = baseline.metric("memory_utilization")
    assert memory is not None and memory.avg is not None
    # A running machine always uses some memory, and never all of it here.
    assert 0 < memory.avg < 100
