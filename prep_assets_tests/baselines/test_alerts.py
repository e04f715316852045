"""Listing the systems whose current value is above their threshold."""

from datetime import UTC, datetime, timedelta

from prep_assets import pipeline
from prep_assets.baselines.alerts import (
    ThresholdBreach,
    find_breaches_in_values,
    find_threshold_breaches,
)
from prep_assets.baselines.catalog import CPU_UTILIZATION, DISK_UTILIZATION
from prep_assets.baselines.models import BaselineSource, SystemBaseline
from prep_assets.baselines.rows import Window, no_data_row, statistics_row

END = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
SPAN = Window(END - timedelta(hours=1), END, timedelta(hours=1), timedelta(minutes=30), 3)


def baseline(name: str, cpu_current: float | None, disk_current: float | None) -> SystemBaseline:
    # CPU threshold: the floor of 50; disk threshold: the floor of 60.
    metrics = [
        statistics_row(CPU_UTILIZATION, "q", SPAN, [10.0, 20.0, 30.0], 0.9, current=cpu_current),
        statistics_row(
            DISK_UTILIZATION, "q", SPAN, [5.0, 6.0], 0.9, worst_device="sda", current=disk_current
        ),
        statistics_row(
            DISK_UTILIZATION, "q", SPAN, [5.0, 6.0], 0.9, device="sda", current=disk_current
        ),
    ]
    return SystemBaseline(name, BaselineSource.PROMETHEUS, metrics, "")


def test_breaches_sorted_by_system() -> None:
    breaches = find_threshold_breaches(
        [baseline("web", 80.0, 10.0), baseline("db", 20.0, 75.0), baseline("idle", 1.0, 1.0)]
    )

    assert breaches == [
        ThresholdBreach("db", "disk_utilization", None, 75.0, 60.0, "percent"),
        ThresholdBreach("db", "disk_utilization", "sda", 75.0, 60.0, "percent"),
        ThresholdBreach("web", "cpu_utilization", None, 80.0, 50.0, "percent"),
    ]


def test_value_equal_to_threshold_not_listed() -> None:
    assert find_threshold_breaches([baseline("web", 50.0, 60.0)]) == []


def test_unknown_current_not_listed() -> None:
    assert find_threshold_breaches([baseline("web", None, None)]) == []


def test_no_data_row_not_listed() -> None:
    row = no_data_row(CPU_UTILIZATION, "q", SPAN, "no series for instance web:9100")
    row.current = 99.0

    assert find_threshold_breaches([SystemBaseline("web", BaselineSource.NONE, [row])]) == []


def test_breaches_in_stored_values() -> None:
    values = {
        "web": baseline("web", 80.0, 10.0).to_dict(),
        "modem": {"source": "none", "metrics": [], "message": "not contacted"},
    }

    breaches = find_breaches_in_values(values)

    assert [(breach.system, breach.metric) for breach in breaches] == [("web", "cpu_utilization")]


def test_metadata_lists_systems_above_threshold() -> None:
    values = {
        "web": baseline("web", 80.0, 10.0).to_dict(),
        "db": baseline("db", 20.0, 75.0).to_dict(),
        "idle": baseline("idle", 1.0, 1.0).to_dict(),
    }

    metadata = pipeline.baseline_metadata(values)

    assert metadata["systems_above_threshold"] == 2
    assert "| web | cpu_utilization | - | 80 | 50 | percent |" in metadata["above_threshold"]
    assert "| db | disk_utilization | sda | 75 | 60 | percent |" in metadata["above_threshold"]
    assert "idle" not in metadata["above_threshold"]
    assert "| db | disk | disk_utilization | sda | prometheus |" in metadata["baselines"]
