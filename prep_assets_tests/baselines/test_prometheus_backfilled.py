"""collect_prometheus_baselines against a real Prometheus holding generated history.

Every expected number is computed in expected_values.py from the generated samples
with numpy, not with PromQL.

Tolerance: relative 1e-9 (and absolute 1e-9 near zero). Prometheus and numpy both
compute in float64 but sum and average in a different order.
"""

import http.server
import threading
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import requests

from prep_assets.baselines.alerts import find_threshold_breaches
from prep_assets.baselines.catalog import (
    CPU_PSI_WAITING,
    CPU_UTILIZATION,
    DISK_UTILIZATION,
    FILESYSTEM_USED,
    MEMORY_SWAP_IN,
    MEMORY_UTILIZATION,
    NETWORK_THROUGHPUT,
    NETWORK_UTILIZATION,
    PVE_EXPORTER,
    PVE_METRICS,
    USE_METRICS,
    MetricSpec,
)
from prep_assets.baselines.models import BaselineSource, MetricBaseline, SystemBaseline
from prep_assets.baselines.prometheus import (
    QueryStats,
    collect_prometheus_baselines,
    instance_matcher,
)
from prep_assets.models import AccessMethod, System
from prep_assets_tests.baselines.expected_values import (
    expected_threshold,
    expected_values,
    pointwise_max,
    pve_values,
    rate_point_count,
)
from prep_assets_tests.prometheus_server import (
    BUSY_INSTANCE,
    DOWN_INSTANCE,
    GAP_INSTANCE,
    HISTORY_DAYS,
    PVE_CT_ID,
    PVE_EXPORTER_INSTANCE,
    PVE_VM_ID,
    QUIET_INSTANCE,
    STEP_SECONDS,
    BackfilledPrometheus,
)

pytestmark = pytest.mark.integration

RELATIVE_TOLERANCE = 1e-9
ABSOLUTE_TOLERANCE = 1e-9
WINDOW = timedelta(days=HISTORY_DAYS)
STEP = timedelta(seconds=STEP_SECONDS)
EXPECTED_POINTS = HISTORY_DAYS * 86_400 // STEP_SECONDS + 1
MISSING_INSTANCE = "127.0.0.99:9100"
# ct-dns has an address, so it gets the default label, but no node_exporter runs there.
CT_DNS_INSTANCE = "127.0.0.15:9100"
NODE_LABELS = sorted(
    [QUIET_INSTANCE, BUSY_INSTANCE, GAP_INSTANCE, MISSING_INSTANCE, DOWN_INSTANCE, CT_DNS_INSTANCE]
)


def make_system(
    name: str, address: str | None = None, system_type: str = "vm", **attributes: str
) -> System:
    return System(
        name=name,
        type=system_type,
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
    make_system("down", instance=DOWN_INSTANCE),
    make_system("no-address"),
    # A VM without node_exporter and without an address, found by its PVE ID column.
    make_system("vm-media", system_type="qemu", **{"pve-id": PVE_VM_ID}),
    # A container found by its bare VMID; its address has no node_exporter.
    make_system("ct-dns", address="127.0.0.15", system_type="lxc", vmid="101"),
    make_system("vm-gone", system_type="qemu", **{"pve-id": "qemu/999"}),
]


def approx(expected: float) -> object:
    return pytest.approx(expected, rel=RELATIVE_TOLERANCE, abs=ABSOLUTE_TOLERANCE)


def query_times(server: BackfilledPrometheus) -> list[int]:
    end = server.history.end
    return list(range(end - HISTORY_DAYS * 86_400, end + 1, STEP_SECONDS))


def assert_matches(
    metric: MetricBaseline, values: dict[int, float], spec: MetricSpec, end: int
) -> None:
    """Compare a collected row with statistics of the expected values at each time."""
    series = list(values.values())
    assert metric.no_data_reason is None
    assert metric.samples == len(series)
    assert metric.avg == approx(float(np.mean(series)))
    assert metric.p95 == approx(float(np.percentile(series, 95)))
    assert metric.max == approx(float(np.max(series)))
    assert metric.stddev == approx(float(np.std(series)))
    assert metric.threshold == approx(expected_threshold(series, spec))
    assert metric.current == approx(values[end])


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


NODE_CASES = [
    (system, instance, spec)
    for system, instance in (("quiet", QUIET_INSTANCE), ("busy", BUSY_INSTANCE))
    for spec in USE_METRICS
    # The quiet instance exports no pressure stall information.
    if not (system == "quiet" and spec.name.endswith("_psi_waiting"))
]


@pytest.mark.parametrize(
    ("system", "instance", "spec"),
    NODE_CASES,
    ids=[f"{system}-{spec.name}" for system, _instance, spec in NODE_CASES],
)
def test_metric_matches_generated_samples(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
    backfilled_prometheus: BackfilledPrometheus,
    system: str,
    instance: str,
    spec: MetricSpec,
) -> None:
    history = backfilled_prometheus.history
    by_device = expected_values(
        spec, history.instances[instance], query_times(backfilled_prometheus)
    )
    baseline = collected[0][system]
    assert by_device, f"the generated history has no {spec.name} for {instance}"

    if spec.device_label is None:
        metric = baseline.metric(spec.name)
        assert metric is not None
        assert len(by_device[None]) == EXPECTED_POINTS
        assert metric.coverage == 1.0
        assert not metric.low_coverage
        assert_matches(metric, by_device[None], spec, history.end)
        return

    devices = sorted(device for device in by_device if device is not None)
    rows = [row for row in baseline.metrics if row.metric == spec.name]
    assert [row.device for row in rows] == [None, *devices]
    for device in devices:
        row = baseline.metric(spec.name, device)
        assert row is not None
        assert_matches(row, by_device[device], spec, history.end)

    combined = baseline.metric(spec.name)
    assert combined is not None
    assert_matches(combined, pointwise_max(by_device), spec, history.end)
    p95_by_device = {
        device: float(np.percentile(list(by_device[device].values()), 95)) for device in devices
    }
    assert combined.worst_device == max(p95_by_device, key=lambda device: p95_by_device[device])


@pytest.mark.parametrize("spec", [CPU_UTILIZATION, MEMORY_UTILIZATION, FILESYSTEM_USED])
def test_gap_instance_gauges_and_coverage(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
    backfilled_prometheus: BackfilledPrometheus,
    spec: MetricSpec,
) -> None:
    series = backfilled_prometheus.history.instances[GAP_INSTANCE]
    times = query_times(backfilled_prometheus)
    metric = collected[0]["gap"].metric(spec.name, "/" if spec is FILESYSTEM_USED else None)
    assert metric is not None

    if spec is CPU_UTILIZATION:
        # Near the gap Prometheus extrapolates rate() from fewer samples, so only
        # the number of points is compared.
        expected_points = rate_point_count(series, times)
        assert metric.samples == expected_points
        assert metric.coverage == pytest.approx(expected_points / EXPECTED_POINTS)
    else:
        values = expected_values(spec, series, times)["/" if spec is FILESYSTEM_USED else None]
        assert_matches(metric, values, spec, backfilled_prometheus.history.end)
    assert metric.coverage < 0.9
    assert metric.low_coverage
    assert metric.avg is not None


def test_loopback_and_tmpfs_left_out(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
) -> None:
    baseline = collected[0]["busy"]
    throughput_devices = {
        row.device for row in baseline.metrics if row.metric == "network_throughput"
    }
    utilization_devices = {
        row.device for row in baseline.metrics if row.metric == "network_utilization"
    }
    mountpoints = {row.device for row in baseline.metrics if row.metric == "filesystem_used"}

    assert throughput_devices == {None, "eth0", "wg0"}
    # wg0 reports no link speed, so only eth0 has a utilization.
    assert utilization_devices == {None, "eth0"}
    assert mountpoints == {None, "/", "/var"}


def test_missing_psi_is_no_data_with_hint(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
) -> None:
    baseline = collected[0]["quiet"]
    metric = baseline.metric(CPU_PSI_WAITING.name)
    assert metric is not None

    assert (
        metric.no_data_reason
        == f"no series for instance {QUIET_INSTANCE}: {CPU_PSI_WAITING.missing_hint}"
    )
    assert metric.avg is None
    assert metric.samples == 0
    assert metric.threshold is None
    assert metric.current is None
    assert baseline.source is BaselineSource.PROMETHEUS
    assert "(cpu_psi_waiting, memory_psi_waiting)" in baseline.message


def test_idle_swap_threshold_is_floor(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
) -> None:
    metric = collected[0]["quiet"].metric(MEMORY_SWAP_IN.name)
    assert metric is not None

    assert metric.avg == 0
    assert metric.max == 0
    assert metric.stddev == 0
    assert metric.threshold == MEMORY_SWAP_IN.threshold_rule.floor
    assert metric.current == 0
    assert not metric.above_threshold


def test_thresholds_cover_floor_middle_and_cap(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
) -> None:
    results = collected[0]
    quiet_cpu = results["quiet"].metric("cpu_utilization")
    busy_cpu = results["busy"].metric("cpu_utilization")
    busy_memory = results["busy"].metric("memory_utilization")
    assert quiet_cpu is not None
    assert busy_cpu is not None
    assert busy_memory is not None

    assert quiet_cpu.threshold == CPU_UTILIZATION.threshold_rule.floor
    assert busy_cpu.threshold == CPU_UTILIZATION.threshold_rule.cap
    assert busy_memory.threshold is not None
    assert MEMORY_UTILIZATION.threshold_rule.floor < busy_memory.threshold
    assert busy_memory.threshold < MEMORY_UTILIZATION.threshold_rule.cap


def test_uncapped_threshold_inputs(collected: tuple[dict[str, SystemBaseline], QueryStats]) -> None:
    metric = collected[0]["busy"].metric(NETWORK_THROUGHPUT.name, "eth0")
    assert metric is not None
    assert metric.p95 is not None
    assert metric.stddev is not None
    inputs = metric.threshold_inputs

    assert inputs["formula"] == "max(floor, p95 + k * stddev)"
    assert inputs["cap"] is None
    assert metric.threshold == max(inputs["floor"], inputs["p95"] + inputs["k"] * inputs["stddev"])


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
    disk = baseline.metric("disk_queue_length", "sda")
    assert metric is not None and disk is not None

    assert baseline.source is BaselineSource.PROMETHEUS
    assert baseline.message == ""
    assert metric.source is BaselineSource.PROMETHEUS
    assert metric.unit == "percent"
    assert metric.resource == "cpu"
    assert metric.signal == "utilization"
    assert metric.exporter == "node_exporter"
    assert metric.window_seconds == WINDOW.total_seconds()
    assert metric.step_seconds == STEP_SECONDS
    assert metric.expected_samples == EXPECTED_POINTS
    assert metric.window_end == backfilled_prometheus.window_end.isoformat()
    assert 'rate(node_cpu_seconds_total{mode="idle",instance=~' in metric.query
    assert disk.resource == "disk"
    assert disk.signal == "saturation"
    assert disk.unit == "requests"
    assert disk.device == "sda"


def test_current_above_threshold_listed(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
) -> None:
    results = collected[0]
    disk = results["busy"].metric(DISK_UTILIZATION.name, "sda")
    assert disk is not None
    assert disk.current is not None
    assert disk.threshold is not None

    breaches = find_threshold_breaches(results.values())
    listed = {(breach.system, breach.metric, breach.device) for breach in breaches}

    # The generated sda is 99 % busy for the last 10 minutes of the window.
    assert disk.current == approx(99.0)
    assert disk.above_threshold
    assert ("busy", DISK_UTILIZATION.name, "sda") in listed
    assert ("busy", DISK_UTILIZATION.name, None) in listed
    assert all(breach.current > breach.threshold for breach in breaches)
    assert not any(system == "quiet" for system, _metric, _device in listed)


def test_missing_instance_is_not_found(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
) -> None:
    baseline = collected[0]["missing"]

    assert baseline.source is BaselineSource.NONE
    assert baseline.message.startswith(f"instance {MISSING_INSTANCE} not found")
    for metric in baseline.metrics:
        assert metric.no_data_reason is not None
        assert metric.no_data_reason.startswith(f"instance {MISSING_INSTANCE} not found")
        assert metric.avg is None
        assert metric.max is None
        assert metric.threshold is None
        assert metric.current is None
        assert metric.samples == 0
    assert len(baseline.metrics) == len(USE_METRICS)


def test_down_exporter_reason(collected: tuple[dict[str, SystemBaseline], QueryStats]) -> None:
    baseline = collected[0]["down"]

    assert baseline.source is BaselineSource.NONE
    for metric in baseline.metrics:
        assert metric.no_data_reason is not None
        assert "up is 0" in metric.no_data_reason


def test_system_without_address_is_no_data(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
) -> None:
    baseline = collected[0]["no-address"]

    assert baseline.source is BaselineSource.NONE
    for metric in baseline.metrics:
        assert metric.no_data_reason is not None
        assert "no instance label" in metric.no_data_reason


@pytest.mark.parametrize(("system", "guest_id"), [("vm-media", PVE_VM_ID), ("ct-dns", PVE_CT_ID)])
def test_proxmox_guest_from_pve_exporter(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
    backfilled_prometheus: BackfilledPrometheus,
    system: str,
    guest_id: str,
) -> None:
    history = backfilled_prometheus.history
    series = history.instances[PVE_EXPORTER_INSTANCE]
    baseline = collected[0][system]

    assert baseline.source is BaselineSource.PROMETHEUS
    assert PVE_EXPORTER in baseline.message
    for spec in PVE_METRICS:
        metric = baseline.metric(spec.name)
        assert metric is not None
        values = pve_values(series, query_times(backfilled_prometheus), spec.name, guest_id)
        assert len(values) == EXPECTED_POINTS
        assert metric.exporter == PVE_EXPORTER
        assert metric.query.startswith("100 * pve_")
        assert_matches(metric, values, spec, history.end)

    # The other USE metrics stay no data: node_exporter is the only source of them.
    disk = baseline.metric(DISK_UTILIZATION.name)
    assert disk is not None and disk.no_data_reason is not None


def test_proxmox_guest_without_series(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
) -> None:
    baseline = collected[0]["vm-gone"]
    cpu = baseline.metric("cpu_utilization")
    assert cpu is not None and cpu.no_data_reason is not None

    assert baseline.source is BaselineSource.NONE
    assert "no instance label" in cpu.no_data_reason
    assert "no series for Proxmox guest qemu/999" in cpu.no_data_reason


def test_queries_batched_per_metric(
    collected: tuple[dict[str, SystemBaseline], QueryStats],
) -> None:
    query_stats = collected[1]
    metric_count = len(USE_METRICS) + len(PVE_METRICS)

    assert query_stats.range_queries == metric_count
    # One instant query per metric for the current values, and one of up.
    assert query_stats.instant_queries == metric_count + 1
    assert query_stats.queries == 2 * metric_count + 1
    assert query_stats.failed == 0
    matcher = instance_matcher(NODE_LABELS)
    node_queries = [text for text in query_stats.query_texts if "pve_" not in text]
    for query in node_queries:
        assert matcher in query
    pve_queries = [text for text in query_stats.query_texts if "pve_" in text]
    for query in pve_queries:
        assert 'id=~"lxc/101|qemu/100|qemu/101|qemu/999"' in query


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
        metrics=[CPU_UTILIZATION, NETWORK_UTILIZATION],
        # Shorter than any query, so each instance label and guest id gets a query of its own.
        max_query_chars=1,
        query_current=False,
        query_stats=query_stats,
    )

    assert query_stats.range_queries == 2 * len(NODE_LABELS) + 4 * len(PVE_METRICS)
    for name, baseline in chunked.items():
        for metric in baseline.metrics:
            other = collected[0][name].metric(metric.metric, metric.device)
            assert other is not None
            assert other.avg == metric.avg
            assert other.samples == metric.samples
            assert other.no_data_reason == metric.no_data_reason
            assert metric.current is None


def test_rejected_query_fails_only_its_metric(
    backfilled_prometheus: BackfilledPrometheus,
) -> None:
    broken = MetricSpec(
        name="broken",
        resource="cpu",
        signal="saturation",
        unit="percent",
        query_template="rate(node_cpu_seconds_total{$matcher}",
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

    assert query_stats.range_queries == 2
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
    reason = f"Prometheus at {unreachable_prometheus_url} is unreachable (Connection refused)"
    with_instance_label = {"quiet", "busy", "gap", "missing", "down", "ct-dns"}
    for name, baseline in results.items():
        assert baseline.source is BaselineSource.NONE
        for metric in baseline.metrics:
            assert metric.no_data_reason is not None
            assert metric.avg is None
            if name in with_instance_label:
                assert reason in metric.no_data_reason
    cpu = results["busy"].metric("cpu_utilization")
    assert cpu is not None
    assert cpu.no_data_reason == reason


def test_stalled_prometheus_times_out(stalled_http_url: str) -> None:
    query_stats = QueryStats()
    started = time.monotonic()
    results = collect_prometheus_baselines(
        stalled_http_url,
        [make_system("busy", instance=BUSY_INSTANCE)],
        window=WINDOW,
        step=STEP,
        end=datetime.now(UTC),
        timeout=0.5,
        query_stats=query_stats,
    )
    elapsed = time.monotonic() - started

    # Two 0.5 s read timeouts in a row, then no more queries; 4 s leaves room for a slow machine.
    assert elapsed < 4
    assert query_stats.queries == 2
    for metric in results["busy"].metrics:
        assert metric.no_data_reason == f"Prometheus at {stalled_http_url} timed out after 0.5 s"


class StallingProxy:
    """An HTTP proxy on loopback in front of a real Prometheus that never responds to some queries.

    Queries whose text contains ``stall_marker`` get no response until the proxy
    is closed, so the client's read timeout fires for them alone.
    """

    def __init__(self, upstream: str, stall_marker: str) -> None:
        self.upstream = upstream
        self.stall_marker = stall_marker
        self.release = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                if any(proxy.stall_marker in text for text in query.get("query", [])):
                    proxy.release.wait(timeout=30)
                    return
                response = requests.get(f"{proxy.upstream}{self.path}", timeout=30)
                self.send_response(response.status_code)
                self.send_header(
                    "Content-Type", response.headers.get("Content-Type", "application/json")
                )
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def disk_stalling_proxy(backfilled_prometheus: BackfilledPrometheus) -> Iterator[StallingProxy]:
    proxy = StallingProxy(backfilled_prometheus.url, "node_disk_io_time_seconds_total")
    try:
        yield proxy
    finally:
        proxy.close()


def test_timed_out_query_fails_only_its_metric(
    disk_stalling_proxy: StallingProxy,
    backfilled_prometheus: BackfilledPrometheus,
) -> None:
    query_stats = QueryStats()
    results = collect_prometheus_baselines(
        disk_stalling_proxy.url,
        [make_system("busy", instance=BUSY_INSTANCE), make_system("quiet", address="127.0.0.11")],
        window=WINDOW,
        step=STEP,
        end=backfilled_prometheus.window_end,
        timeout=2,
        metrics=[CPU_UTILIZATION, DISK_UTILIZATION, MEMORY_UTILIZATION],
        query_stats=query_stats,
    )

    assert query_stats.failed == 1
    for name in ("busy", "quiet"):
        disk = results[name].metric(DISK_UTILIZATION.name)
        cpu = results[name].metric(CPU_UTILIZATION.name)
        memory = results[name].metric(MEMORY_UTILIZATION.name)
        assert disk is not None
        assert cpu is not None
        assert memory is not None
        assert disk.no_data_reason == f"Prometheus at {disk_stalling_proxy.url} timed out after 2 s"
        assert cpu.no_data_reason is None
        assert memory.no_data_reason is None
        assert memory.current is not None
