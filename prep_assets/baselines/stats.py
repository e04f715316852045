"""Summary statistics and alert thresholds for one metric of one system.

Everything here is a pure function of its arguments, so a reader can recompute any
stored baseline from the raw samples and the recorded threshold inputs.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

# Hyndman & Fan's type 7 estimator, which is also numpy.percentile's default "linear".
PERCENTILE_METHOD = "linear interpolation between closest ranks (numpy default, type 7)"
STDDEV_METHOD = "population standard deviation (ddof=0, numpy default)"
THRESHOLD_FORMULA = "min(cap, max(floor, p95 + k * stddev))"
# For metrics without a natural upper limit, such as bytes per second on a link of
# unknown speed.
UNCAPPED_THRESHOLD_FORMULA = "max(floor, p95 + k * stddev)"


def _require_values(values: Sequence[float], statistic: str) -> None:
    if not values:
        raise ValueError(f"cannot compute the {statistic} of no values")


def mean(values: Sequence[float]) -> float:
    """Return the arithmetic mean, summed with math.fsum to avoid rounding drift."""
    _require_values(values, "mean")
    return math.fsum(values) / len(values)


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-th percentile (0 <= q <= 100) by linear interpolation.

    The rank is h = (n - 1) * q / 100 over the sorted values, and the result lies
    between the values at floor(h) and floor(h) + 1, as numpy.percentile computes it
    by default.
    """
    _require_values(values, f"{q}th percentile")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {q}")

    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    lower = math.floor(rank)
    upper = min(lower + 1, len(ordered) - 1)
    fraction = rank - lower
    return ordered[lower] + fraction * (ordered[upper] - ordered[lower])


def maximum(values: Sequence[float]) -> float:
    _require_values(values, "maximum")
    return max(values)


def stddev(values: Sequence[float]) -> float:
    """Return the population standard deviation (divides by n, not n - 1)."""
    average = mean(values)
    variance = math.fsum((value - average) ** 2 for value in values) / len(values)
    return math.sqrt(variance)


def expected_sample_count(window: timedelta, step: timedelta) -> int:
    """Return how many evaluation points a range query over ``window`` has at ``step``.

    Prometheus evaluates at start, start + step, ... up to and including the end, so a
    7-day window at a 60 s step has 10081 points.
    """
    if step <= timedelta(0):
        raise ValueError(f"step must be positive, got {step}")
    if window < timedelta(0):
        raise ValueError(f"window must not be negative, got {window}")
    return window // step + 1


def coverage(samples: int, expected: int) -> float:
    """Return the fraction of expected samples that are present, from 0.0 to 1.0."""
    if expected <= 0:
        raise ValueError(f"expected sample count must be positive, got {expected}")
    if samples < 0:
        raise ValueError(f"sample count must not be negative, got {samples}")
    return min(samples, expected) / expected


@dataclass(frozen=True)
class Summary:
    """Average, 95th percentile, maximum and standard deviation of one series."""

    samples: int
    avg: float
    p95: float
    max: float
    stddev: float


def summarize(values: Sequence[float]) -> Summary:
    """Compute the summary of a series. Raise ValueError when the series is empty."""
    _require_values(values, "summary")
    return Summary(
        samples=len(values),
        avg=mean(values),
        p95=percentile(values, 95),
        max=maximum(values),
        stddev=stddev(values),
    )


@dataclass(frozen=True)
class ThresholdRule:
    """Parameters of ``min(cap, max(floor, p95 + k * stddev))`` for one metric.

    ``floor`` keeps a quiet system from alerting on ordinary bursts, and ``cap`` keeps
    a busy system's threshold below the point where the resource is exhausted. A
    ``cap`` of None drops the ``min``, for metrics without a natural upper limit.
    """

    floor: float
    k: float
    cap: float | None

    def __post_init__(self) -> None:
        for name in ("floor", "k", "cap"):
            value = getattr(self, name)
            if value is None and name == "cap":
                continue
            if not math.isfinite(value):
                raise ValueError(f"threshold {name} must be a finite number, got {value}")
        if self.k < 0:
            raise ValueError(f"threshold k must not be negative, got {self.k}")
        if self.cap is not None and self.floor > self.cap:
            raise ValueError(f"threshold floor {self.floor} is above the cap {self.cap}")


def compute_threshold(
    p95: float, stddev: float, rule: ThresholdRule
) -> tuple[float, dict[str, Any]]:
    """Return the alert threshold and the inputs that reproduce it.

    The inputs contain the formula, p95, stddev, k, floor and cap (None without a
    cap), so a reader of a stored baseline can recompute the threshold without this code.
    """
    threshold = max(rule.floor, p95 + rule.k * stddev)
    if rule.cap is not None:
        threshold = min(rule.cap, threshold)
    inputs: dict[str, Any] = {
        "formula": THRESHOLD_FORMULA if rule.cap is not None else UNCAPPED_THRESHOLD_FORMULA,
        "p95": p95,
        "stddev": stddev,
        "k": rule.k,
        "floor": rule.floor,
        "cap": rule.cap,
    }
    return threshold, inputs
