"""Turn the series of one metric and one system into MetricBaseline rows.

A metric with one series per system gives one row. A per-device metric (disks,
mount points, interfaces) gives one row per device plus a first row, with no
device, whose statistics are of the maximum over all devices at each evaluation
point: the worst device at every moment, which is what an alert on "any disk
busier than X" compares against.
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prep_assets.baselines import stats
from prep_assets.baselines.catalog import MetricSpec
from prep_assets.baselines.models import BaselineSource, MetricBaseline


@dataclass(frozen=True)
class Window:
    """The range query's time span and resolution."""

    start: datetime
    end: datetime
    window: timedelta
    step: timedelta
    expected_samples: int


@dataclass
class Points:
    """The finite samples of one series: evaluation times (Unix seconds) and values."""

    timestamps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def finite_points(pairs: Iterable[Sequence[Any]]) -> Points:
    """Convert Prometheus ``[timestamp, "value"]`` pairs to Points, dropping NaN and Inf.

    Raises ValueError or TypeError when a value is not a number.
    """
    points = Points()
    for timestamp, text in pairs:
        value = float(text)
        if math.isfinite(value):
            points.timestamps.append(float(timestamp))
            points.values.append(value)
    return points


def no_data_row(spec: MetricSpec, query: str, span: Window, reason: str) -> MetricBaseline:
    return MetricBaseline(
        metric=spec.name,
        unit=spec.unit,
        avg=None,
        p95=None,
        max=None,
        stddev=None,
        samples=0,
        coverage=0.0,
        threshold=None,
        threshold_inputs={},
        query=query,
        window_seconds=span.window.total_seconds(),
        source=BaselineSource.PROMETHEUS,
        no_data_reason=reason,
        low_coverage=True,
        step_seconds=span.step.total_seconds(),
        expected_samples=span.expected_samples,
        window_end=span.end.astimezone(UTC).isoformat(),
        resource=spec.resource,
        signal=spec.signal,
        exporter=spec.exporter,
    )


def statistics_row(
    spec: MetricSpec,
    query: str,
    span: Window,
    values: Sequence[float],
    min_coverage: float,
    *,
    device: str | None = None,
    worst_device: str | None = None,
    current: float | None = None,
) -> MetricBaseline:
    """Summarize non-empty ``values`` and derive the threshold from the metric's rule."""
    summary = stats.summarize(values)
    threshold, inputs = stats.compute_threshold(summary.p95, summary.stddev, spec.threshold_rule)
    covered = stats.coverage(summary.samples, span.expected_samples)
    return MetricBaseline(
        metric=spec.name,
        unit=spec.unit,
        avg=summary.avg,
        p95=summary.p95,
        max=summary.max,
        stddev=summary.stddev,
        samples=summary.samples,
        coverage=covered,
        threshold=threshold,
        threshold_inputs=inputs,
        query=query,
        window_seconds=span.window.total_seconds(),
        source=BaselineSource.PROMETHEUS,
        low_coverage=covered < min_coverage,
        step_seconds=span.step.total_seconds(),
        expected_samples=span.expected_samples,
        window_end=span.end.astimezone(UTC).isoformat(),
        resource=spec.resource,
        signal=spec.signal,
        device=device,
        worst_device=worst_device,
        exporter=spec.exporter,
        current=current,
    )


def pointwise_max(series: Iterable[Points]) -> list[float]:
    """Return the maximum over all series at each evaluation time that any series has."""
    best: dict[float, float] = {}
    for points in series:
        for timestamp, value in zip(points.timestamps, points.values, strict=True):
            previous = best.get(timestamp)
            if previous is None or value > previous:
                best[timestamp] = value
    return list(best.values())


def metric_rows(
    spec: MetricSpec,
    query: str,
    span: Window,
    series: Mapping[str | None, Points],
    current: Mapping[str | None, float],
    min_coverage: float,
    key: str,
) -> list[MetricBaseline]:
    """Return the rows of one system from its series, keyed by device (None without devices).

    A series with only NaN or infinite values counts as no series. When no series is
    left, the result is one no-data row.
    """
    usable = {device: points for device, points in series.items() if points.values}
    if not usable:
        reason = f"the series for {spec.key_label} {key} has only NaN or infinite values"
        return [no_data_row(spec, query, span, reason)]

    if spec.device_label is None:
        values = next(iter(usable.values())).values
        return [statistics_row(spec, query, span, values, min_coverage, current=current.get(None))]

    devices = sorted(device for device in usable if device is not None)
    device_rows = [
        statistics_row(
            spec,
            query,
            span,
            usable[device].values,
            min_coverage,
            device=device,
            current=current.get(device),
        )
        for device in devices
    ]
    worst = max(device_rows, key=lambda row: row.p95 if row.p95 is not None else -math.inf)
    device_currents = [current[device] for device in devices if device in current]
    combined = statistics_row(
        spec,
        query,
        span,
        pointwise_max(usable[device] for device in devices),
        min_coverage,
        worst_device=worst.device,
        current=max(device_currents) if device_currents else None,
    )
    return [combined, *device_rows]
