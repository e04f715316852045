"""Expected query results, computed from the generated samples without PromQL.

These follow how Prometheus 2.x evaluates the queries (Debian 12 ships 2.42).
Range and lookback windows [t - 5m, t] include both ends there. Samples fall on
every 60 s query point, so rate() is exactly (c(t) - c(t - 5m)) / 300 with no
extrapolation, and gauges are read at t itself.

Only evaluation points whose 5-minute range contains every sample get an expected
rate. Near a gap Prometheus extrapolates from fewer samples, so the tests compare
only sample counts there.

NOTE: the Prometheus 3 querying docs define range selectors as left-open, so there
rate() averages the last 4 steps instead of 5. These expected values would need
that change before the tests can pass on Prometheus 3.
"""

import bisect
from collections.abc import Callable

import numpy as np

from prep_assets.baselines.catalog import MetricSpec
from prep_assets_tests.synthetic_history import CPUS, InstanceSeries

RATE_RANGE_SECONDS = 300
LOOKBACK_SECONDS = 300
STEP_SECONDS = 60
FULL_RANGE_SAMPLES = RATE_RANGE_SECONDS // STEP_SECONDS + 1
EXCLUDED_FILESYSTEM_TYPES = ("tmpfs",)
EXCLUDED_INTERFACES = ("lo",)

# Expected values by device (None for a per-system metric), then by evaluation time.
DeviceValues = dict[str | None, dict[int, float]]


def samples_in_range(series: InstanceSeries, start: int, end: int) -> tuple[int, int]:
    """Return the index range [first, last) of samples with start <= timestamp <= end."""
    first = bisect.bisect_left(series.timestamps, start)
    last = bisect.bisect_right(series.timestamps, end)
    return first, last


def gauge(series: InstanceSeries, t: int, name: str, **labels: str) -> float | None:
    """Return the newest sample within the lookback window ending at t."""
    first, last = samples_in_range(series, t - LOOKBACK_SECONDS, t)
    if last == first:
        return None
    return series.values(name, **labels)[last - 1]


def full_rate(series: InstanceSeries, t: int, name: str, **labels: str) -> float | None:
    """Return rate(name[5m]) at t when the range contains every sample, else None."""
    first, last = samples_in_range(series, t - RATE_RANGE_SECONDS, t)
    if last - first != FULL_RANGE_SAMPLES:
        return None
    values = series.values(name, **labels)
    return (values[last - 1] - values[first]) / RATE_RANGE_SECONDS


def rate_point_count(series: InstanceSeries, times: list[int]) -> int:
    """Count query times whose 5 m range has the two samples rate() needs."""
    count = 0
    for t in times:
        first, last = samples_in_range(series, t - RATE_RANGE_SECONDS, t)
        if last - first >= 2:
            count += 1
    return count


def _per_time(times: list[int], value_at: Callable[[int], float | None]) -> dict[int, float]:
    values = {}
    for t in times:
        value = value_at(t)
        if value is not None:
            values[t] = value
    return values


def _cpu_utilization(series: InstanceSeries, t: int) -> float | None:
    rates = [full_rate(series, t, "node_cpu_seconds_total", cpu=cpu, mode="idle") for cpu in CPUS]
    if any(rate is None for rate in rates):
        return None
    idle = [rate for rate in rates if rate is not None]
    return 100 * (1 - sum(idle) / len(idle))


def _load_per_cpu(series: InstanceSeries, t: int) -> float | None:
    load = gauge(series, t, "node_load1")
    cpus = sum(
        1
        for cpu in CPUS
        if gauge(series, t, "node_cpu_seconds_total", cpu=cpu, mode="idle") is not None
    )
    if load is None or cpus == 0:
        return None
    return load / cpus


def _memory_utilization(series: InstanceSeries, t: int) -> float | None:
    available = gauge(series, t, "node_memory_MemAvailable_bytes")
    total = gauge(series, t, "node_memory_MemTotal_bytes")
    if available is None or total is None:
        return None
    return 100 * (1 - available / total)


def _scaled_rate(name: str, factor: float) -> Callable[[InstanceSeries, int], float | None]:
    def value_at(series: InstanceSeries, t: int) -> float | None:
        rate = full_rate(series, t, name) if series.has(name) else None
        return None if rate is None else factor * rate

    return value_at


_PER_SYSTEM: dict[str, Callable[[InstanceSeries, int], float | None]] = {
    "cpu_utilization": _cpu_utilization,
    "cpu_load_per_cpu": _load_per_cpu,
    "cpu_psi_waiting": _scaled_rate("node_pressure_cpu_waiting_seconds_total", 100),
    "memory_utilization": _memory_utilization,
    "memory_major_faults": _scaled_rate("node_vmstat_pgmajfault", 1),
    "memory_swap_in": _scaled_rate("node_vmstat_pswpin", 1),
    "memory_swap_out": _scaled_rate("node_vmstat_pswpout", 1),
    "memory_psi_waiting": _scaled_rate("node_pressure_memory_waiting_seconds_total", 100),
}


def _disks(series: InstanceSeries) -> list[str]:
    return series.label_values("node_disk_io_time_seconds_total", "device")


def _mountpoints(series: InstanceSeries) -> list[str]:
    mountpoints = []
    for name, pairs in series.series:
        labels = dict(pairs)
        if (
            name == "node_filesystem_size_bytes"
            and labels["fstype"] not in EXCLUDED_FILESYSTEM_TYPES
        ):
            mountpoints.append(labels["mountpoint"])
    return sorted(mountpoints)


def _filesystem_labels(series: InstanceSeries, mountpoint: str) -> dict[str, str]:
    for name, pairs in series.series:
        labels = dict(pairs)
        if name == "node_filesystem_size_bytes" and labels["mountpoint"] == mountpoint:
            return labels
    raise KeyError(mountpoint)


def _interfaces(series: InstanceSeries) -> list[str]:
    devices = series.label_values("node_network_receive_bytes_total", "device")
    return [device for device in devices if device not in EXCLUDED_INTERFACES]


def _direction_rates(
    series: InstanceSeries, t: int, counter: str, device: str
) -> list[float] | None:
    rates = [
        full_rate(series, t, f"node_network_{direction}_{counter}_total", device=device)
        for direction in ("receive", "transmit")
    ]
    if any(rate is None for rate in rates):
        return None
    return [rate for rate in rates if rate is not None]


def _per_device(metric: str, series: InstanceSeries, t: int, device: str) -> float | None:
    if metric == "disk_utilization":
        rate = full_rate(series, t, "node_disk_io_time_seconds_total", device=device)
        return None if rate is None else 100 * rate
    if metric == "disk_queue_length":
        return full_rate(series, t, "node_disk_io_time_weighted_seconds_total", device=device)
    if metric == "filesystem_used":
        labels = _filesystem_labels(series, device)
        available = gauge(series, t, "node_filesystem_avail_bytes", **labels)
        size = gauge(series, t, "node_filesystem_size_bytes", **labels)
        if available is None or size is None:
            return None
        return 100 * (1 - available / size)
    if metric in ("network_throughput", "network_utilization"):
        rates = _direction_rates(series, t, "bytes", device)
        if rates is None:
            return None
        if metric == "network_throughput":
            return max(rates)
        if not series.has("node_network_speed_bytes", device=device):
            return None
        speed = gauge(series, t, "node_network_speed_bytes", device=device)
        return 100 * max(rates) / speed if speed else None
    if metric in ("network_drops", "network_errors"):
        counter = "drop" if metric == "network_drops" else "errs"
        if not series.has(f"node_network_receive_{counter}_total", device=device):
            return None
        rates = _direction_rates(series, t, counter, device)
        return None if rates is None else rates[0] + rates[1]
    raise KeyError(metric)


def _devices(metric: str, series: InstanceSeries) -> list[str]:
    if metric.startswith("disk_"):
        return _disks(series)
    if metric == "filesystem_used":
        return _mountpoints(series)
    return _interfaces(series)


def expected_values(spec: MetricSpec, series: InstanceSeries, times: list[int]) -> DeviceValues:
    """Return the expected values of a node_exporter metric at each query time, by device."""
    if spec.device_label is None:
        value_at = _PER_SYSTEM[spec.name]
        values = _per_time(times, lambda t: value_at(series, t))
        return {None: values} if values else {}

    result: DeviceValues = {}
    for device in _devices(spec.name, series):
        values = _per_time(
            times, lambda t, device=device: _per_device(spec.name, series, t, device)
        )
        if values:
            result[device] = values
    return result


def pointwise_max(by_device: DeviceValues) -> dict[int, float]:
    """Return the maximum over devices at each time any device has a value."""
    best: dict[int, float] = {}
    for values in by_device.values():
        for t, value in values.items():
            best[t] = max(value, best.get(t, value))
    return best


def pve_values(
    series: InstanceSeries, times: list[int], metric: str, guest_id: str
) -> dict[int, float]:
    """Return the expected prometheus-pve-exporter CPU or memory utilization of one guest."""

    def value_at(t: int) -> float | None:
        if metric == "cpu_utilization":
            ratio = gauge(series, t, "pve_cpu_usage_ratio", id=guest_id)
            return None if ratio is None else 100 * ratio
        used = gauge(series, t, "pve_memory_usage_bytes", id=guest_id)
        size = gauge(series, t, "pve_memory_size_bytes", id=guest_id)
        return None if used is None or not size else 100 * used / size

    return _per_time(times, value_at)


def expected_threshold(values: list[float], spec: MetricSpec) -> float:
    """Apply the spec's rule to numpy's p95 and population standard deviation."""
    rule = spec.threshold_rule
    threshold = max(rule.floor, float(np.percentile(values, 95)) + rule.k * float(np.std(values)))
    return threshold if rule.cap is None else min(rule.cap, threshold)
