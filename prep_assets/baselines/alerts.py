"""List the metrics whose current value is above their baseline's alert threshold."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prep_assets.baselines.models import SystemBaseline


@dataclass(frozen=True)
class ThresholdBreach:
    """One metric of one system whose value at the window end exceeds its threshold."""

    system: str
    metric: str
    # The disk, mount point or interface, or None for a whole-system or combined row.
    device: str | None
    current: float
    threshold: float
    unit: str


def find_threshold_breaches(baselines: Iterable[SystemBaseline]) -> list[ThresholdBreach]:
    """Return every row whose current value is above its threshold, sorted by system and metric.

    A per-device metric can appear twice for one system: once for the device and
    once for its combined row, because the two have thresholds of their own.
    """
    breaches = [
        ThresholdBreach(
            system=baseline.system,
            metric=metric.metric,
            device=metric.device,
            current=metric.current,
            threshold=metric.threshold,
            unit=metric.unit,
        )
        for baseline in baselines
        for metric in baseline.metrics
        if metric.above_threshold and metric.current is not None and metric.threshold is not None
    ]
    return sorted(breaches, key=lambda b: (b.system, b.metric, b.device or ""))


def find_breaches_in_values(values: Mapping[str, Mapping[str, Any]]) -> list[ThresholdBreach]:
    """Return the breaches of baselines stored as dicts by system name, as the pipeline keeps them.

    A stored value without a ``system`` key, such as a placeholder for a system that
    was not contacted, takes the name it is stored under.
    """
    baselines = [
        SystemBaseline.from_dict({"system": name, "metrics": [], **value})
        for name, value in values.items()
    ]
    return find_threshold_breaches(baselines)
