"""Statistics and threshold rule, checked against values computed by hand."""

import math
from datetime import timedelta

import pytest

from prep_assets.baselines import stats
from prep_assets.baselines.stats import ThresholdRule


def test_mean_of_integers() -> None:
    assert stats.mean([1, 2, 3, 4]) == 2.5


def test_mean_keeps_small_values_next_to_large() -> None:
    # A naive running sum loses the 1.0 values next to 1e16.
    assert stats.mean([1e16, 1.0, -1e16, 1.0]) == 0.5


def test_percentile_interpolates_between_ranks() -> None:
    # rank h = (5 - 1) * 0.95 = 3.8, so 4 + 0.8 * (5 - 4).
    assert stats.percentile([5, 1, 4, 2, 3], 95) == pytest.approx(4.8)


def test_percentile_median_of_two() -> None:
    assert stats.percentile([10, 20], 50) == 15


def test_percentile_of_single_value() -> None:
    assert stats.percentile([7.5], 95) == 7.5


def test_percentile_bounds_are_min_and_max() -> None:
    values = [3, 9, 1, 4]
    assert stats.percentile(values, 0) == 1
    assert stats.percentile(values, 100) == 9


def test_percentile_rejects_out_of_range_q() -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        stats.percentile([1, 2], 101)


def test_stddev_is_population() -> None:
    # Mean 5, squared deviations sum to 32, 32 / 8 = 4.
    assert stats.stddev([2, 4, 4, 4, 5, 5, 7, 9]) == 2.0


def test_stddev_of_constant_series() -> None:
    assert stats.stddev([3.0, 3.0, 3.0]) == 0.0


def test_maximum() -> None:
    assert stats.maximum([1.5, -2.0, 9.25]) == 9.25


@pytest.mark.parametrize("function", [stats.mean, stats.maximum, stats.stddev, stats.summarize])
def test_empty_series_raises(function) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="no values"):
        function([])


@pytest.mark.parametrize(
    ("window", "step", "expected"),
    [
        (timedelta(days=7), timedelta(seconds=60), 10_081),
        (timedelta(hours=1), timedelta(seconds=60), 61),
        (timedelta(seconds=90), timedelta(seconds=60), 2),
        (timedelta(0), timedelta(seconds=60), 1),
    ],
)
def test_expected_sample_count(window: timedelta, step: timedelta, expected: int) -> None:
    assert stats.expected_sample_count(window, step) == expected


def test_expected_sample_count_rejects_zero_step() -> None:
    with pytest.raises(ValueError, match="step must be positive"):
        stats.expected_sample_count(timedelta(hours=1), timedelta(0))


def test_coverage_fraction() -> None:
    assert stats.coverage(45, 60) == 0.75


def test_coverage_capped_at_one() -> None:
    assert stats.coverage(61, 60) == 1.0


def test_coverage_rejects_zero_expected() -> None:
    with pytest.raises(ValueError, match="expected sample count"):
        stats.coverage(0, 0)


def test_summarize_fields() -> None:
    summary = stats.summarize([1, 2, 3, 4, 5])
    assert summary.samples == 5
    assert summary.avg == 3
    assert summary.p95 == pytest.approx(4.8)
    assert summary.max == 5
    assert summary.stddev == pytest.approx(math.sqrt(2))


RULE = ThresholdRule(floor=50.0, k=2.0, cap=95.0)


def test_threshold_uses_floor_for_quiet_series() -> None:
    threshold, _ = stats.compute_threshold(20.0, 5.0, RULE)
    assert threshold == 50.0


def test_threshold_between_floor_and_cap() -> None:
    threshold, _ = stats.compute_threshold(60.0, 5.0, RULE)
    assert threshold == 70.0


def test_threshold_uses_cap_for_busy_series() -> None:
    threshold, _ = stats.compute_threshold(90.0, 10.0, RULE)
    assert threshold == 95.0


def test_threshold_inputs_recompute_threshold() -> None:
    threshold, inputs = stats.compute_threshold(61.5, 4.25, RULE)
    recomputed = min(
        inputs["cap"], max(inputs["floor"], inputs["p95"] + inputs["k"] * inputs["stddev"])
    )
    assert inputs["formula"] == "min(cap, max(floor, p95 + k * stddev))"
    assert recomputed == threshold
    assert threshold == 70.0


def test_threshold_rule_rejects_floor_above_cap() -> None:
    with pytest.raises(ValueError, match="above the cap"):
        ThresholdRule(floor=96.0, k=2.0, cap=95.0)


def test_threshold_rule_rejects_negative_k() -> None:
    with pytest.raises(ValueError, match="k must not be negative"):
        ThresholdRule(floor=0.0, k=-1.0, cap=95.0)


def test_threshold_rule_rejects_nan() -> None:
    with pytest.raises(ValueError, match="finite"):
        ThresholdRule(floor=math.nan, k=1.0, cap=95.0)


def test_uncapped_threshold_exceeds_any_cap() -> None:
    rule = ThresholdRule(floor=1e6, k=3.0, cap=None)
    threshold, inputs = stats.compute_threshold(5e8, 1e8, rule)

    assert threshold == 8e8
    assert inputs["formula"] == "max(floor, p95 + k * stddev)"
    assert inputs["cap"] is None


def test_uncapped_threshold_uses_floor() -> None:
    threshold, _ = stats.compute_threshold(10.0, 1.0, ThresholdRule(floor=1e6, k=3.0, cap=None))
    assert threshold == 1e6


def test_threshold_rule_rejects_infinite_cap() -> None:
    with pytest.raises(ValueError, match="cap must be a finite number"):
        ThresholdRule(floor=0.0, k=1.0, cap=math.inf)
