"""Baseline results of one system: one MetricBaseline per metric, stored as JSON."""

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any


class BaselineSource(enum.StrEnum):
    """Origin of a baseline's numbers: Prometheus history, a short sample, or none."""

    PROMETHEUS = "prometheus"
    # A few seconds of vmstat taken over the system's access method: a spot check,
    # not a baseline of normal behaviour.
    SAMPLE = "sample"
    # No numbers at all: every metric has a no_data_reason.
    NONE = "none"


@dataclass
class MetricBaseline:
    """Statistics, alert threshold and provenance of one metric of one system.

    When ``no_data_reason`` is set, every statistic and the threshold are None and
    ``samples`` is 0. No data is never reported as a value of 0.
    """

    metric: str
    unit: str
    avg: float | None
    p95: float | None
    max: float | None
    stddev: float | None
    samples: int
    # Samples present divided by the evaluation points expected in the window.
    coverage: float
    threshold: float | None
    # Formula, p95, stddev, k, floor and cap: everything needed to recompute the threshold.
    threshold_inputs: dict[str, Any]
    # The PromQL expression, or the command whose output was parsed.
    query: str
    window_seconds: float
    source: BaselineSource
    no_data_reason: str | None = None
    low_coverage: bool = False
    step_seconds: float | None = None
    expected_samples: int | None = None
    # End of the window as an ISO 8601 UTC timestamp.
    window_end: str | None = None
    # "cpu", "memory", "disk", "filesystem" or "network".
    resource: str | None = None
    # "utilization", "saturation" or "errors", as in the USE method.
    signal: str | None = None
    # The disk, mount point or network interface of a per-device row. None on a row
    # about the whole system, including the row that combines all devices.
    device: str | None = None
    # On the row that combines a per-device metric: the device with the highest p95.
    # That row's statistics are of the maximum over all devices at each point.
    worst_device: str | None = None
    # The Prometheus exporter whose series gave the numbers.
    exporter: str | None = None
    # The value at window_end from an instant query, or None when not queried or no series.
    current: float | None = None

    @property
    def no_data(self) -> bool:
        return self.no_data_reason is not None

    @property
    def above_threshold(self) -> bool:
        """Whether the current value is known and higher than the alert threshold."""
        return (
            self.current is not None
            and self.threshold is not None
            and (self.current > self.threshold)
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["source"] = self.source.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MetricBaseline":
        values = dict(data)
        values["source"] = BaselineSource(values["source"])
        return cls(**values)


@dataclass
class SystemBaseline:
    """All metric baselines of one system from one collection."""

    system: str
    source: BaselineSource
    metrics: list[MetricBaseline] = field(default_factory=list)
    # Why the baseline is partial or missing, or what kind of sample it is.
    message: str = ""

    def metric(self, name: str, device: str | None = None) -> MetricBaseline | None:
        """Return the named metric's row for ``device``, or None when it was not collected.

        Without ``device``, a per-device metric returns its row that combines all devices.
        """
        for metric in self.metrics:
            if metric.metric == name and metric.device == device:
                return metric
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "source": self.source.value,
            "metrics": [metric.to_dict() for metric in self.metrics],
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SystemBaseline":
        return cls(
            system=data["system"],
            source=BaselineSource(data["source"]),
            metrics=[MetricBaseline.from_dict(metric) for metric in data.get("metrics", [])],
            message=data.get("message", ""),
        )
