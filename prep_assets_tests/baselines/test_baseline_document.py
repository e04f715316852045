"""The USE baseline block in prep-status.json and prep-status.md.

build_status_document keeps only some keys of each metric row, so these tests put
the full SystemBaseline.to_dict() output into the document before validating it:
the schema must accept every field a collection writes.
"""

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from prep_assets.baselines.catalog import (
    CPU_PSI_WAITING,
    CPU_UTILIZATION,
    DISK_UTILIZATION,
    NETWORK_THROUGHPUT,
    PVE_CPU_UTILIZATION,
    MetricSpec,
)
from prep_assets.baselines.models import BaselineSource, MetricBaseline, SystemBaseline
from prep_assets.baselines.prometheus import collect_prometheus_baselines
from prep_assets.baselines.rows import Window, no_data_row, statistics_row
from prep_assets.baselines.sample import parse_sample
from prep_assets.models import AccessMethod, System
from prep_assets.report.document import (
    InvalidStatusDocumentError,
    StatusInputs,
    build_status_document,
    validate_status_document,
    write_status_documents,
)
from prep_assets_tests.prometheus_server import BUSY_INSTANCE, BackfilledPrometheus

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
SPAN = Window(
    start=NOW - timedelta(days=7),
    end=NOW,
    window=timedelta(days=7),
    step=timedelta(seconds=60),
    expected_samples=10_081,
)
SAMPLE_FIXTURE = Path(__file__).parent / "fixtures" / "sample-debian12-procps4.txt"


def row(spec: MetricSpec, values: list[float], **extra: Any) -> MetricBaseline:
    return statistics_row(spec, spec.query('instance=~"db:9100"'), SPAN, values, 0.9, **extra)


def full_use_baseline() -> SystemBaseline:
    """A baseline with every kind of row: per system, combined, per device, no data, uncapped."""
    metrics = [
        row(CPU_UTILIZATION, [10.0, 20.0, 30.0], current=25.0),
        no_data_row(CPU_PSI_WAITING, "100 * rate(...)", SPAN, "no series for instance db:9100"),
        row(DISK_UTILIZATION, [40.0, 95.0], worst_device="sda", current=97.0),
        row(DISK_UTILIZATION, [40.0, 95.0], device="sda", current=97.0),
        row(DISK_UTILIZATION, [1.0, 2.0], device="sdb", current=1.5),
        row(NETWORK_THROUGHPUT, [2e7, 4e7], device="eth0", current=3e7),
    ]
    return SystemBaseline("db", BaselineSource.PROMETHEUS, metrics, "")


def pve_baseline() -> SystemBaseline:
    metrics = [row(PVE_CPU_UTILIZATION, [5.0, 7.0], current=6.0)]
    message = "cpu_utilization from prometheus-pve-exporter (Proxmox guest qemu/100)"
    return SystemBaseline("vm-media", BaselineSource.PROMETHEUS, metrics, message)


def status_inputs(baselines: dict[str, dict[str, Any]]) -> StatusInputs:
    systems = [
        System(name, "vm", "lab", AccessMethod.SSH, address=f"127.0.0.{index + 20}")
        for index, name in enumerate(baselines)
    ]
    return StatusInputs(
        generated_at=NOW,
        head="a" * 40,
        branch="main",
        systems=systems,
        checks={},
        baselines=baselines,
        provisioning={},
        last_checked={},
        changes={"since": None, "head": "a" * 40, "commits": [], "events": [], "warnings": []},
        drift=[],
        actions=[],
        problems=[],
    )


def document_with_full_baselines(baselines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Build the document, then restore every metric field that build_status_document drops."""
    document = build_status_document(status_inputs(baselines))
    for entry in document["systems"]:
        entry["baseline"] = copy.deepcopy(baselines[entry["name"]])
    return document


def test_full_use_block_validates(tmp_path: Path) -> None:
    sample = parse_sample(SAMPLE_FIXTURE.read_text(), system="laptop")
    baselines = {
        "db": full_use_baseline().to_dict(),
        "vm-media": pve_baseline().to_dict(),
        "laptop": sample.to_dict(),
        "switch": {"source": "none", "metrics": [], "message": "not contacted"},
    }
    document = document_with_full_baselines(baselines)

    validate_status_document(document)
    json_path, markdown_path = write_status_documents(document, tmp_path)

    written = json.loads(json_path.read_text())
    db_metrics = written["systems"][0]["baseline"]["metrics"]
    assert db_metrics[2]["worst_device"] == "sda"
    assert db_metrics[1]["no_data_reason"] == "no series for instance db:9100"
    assert db_metrics[1]["avg"] is None
    assert db_metrics[5]["threshold_inputs"]["cap"] is None
    assert markdown_path.exists()


def test_markdown_shows_use_rows(tmp_path: Path) -> None:
    document = document_with_full_baselines({"db": full_use_baseline().to_dict()})

    _json_path, markdown_path = write_status_documents(document, tmp_path)
    markdown = markdown_path.read_text()

    assert "### db" in markdown
    assert (
        "| Resource | Signal | Metric | Device | Avg | P95 | Max | Current | Threshold |"
        in markdown
    )
    assert "| cpu | utilization | cpu_utilization | - | 20.0 |" in markdown
    assert "| disk | utilization | disk_utilization | all (worst: sda) |" in markdown
    assert "| disk | utilization | disk_utilization | sdb |" in markdown
    assert "no data: no series for instance db:9100" in markdown
    # The disk is 97 % busy now, above the 90 % cap of its rule.
    assert "ABOVE THRESHOLD now" in markdown
    assert "| network | utilization | network_throughput | eth0 | 30,000,000 |" in markdown


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("resource", "gpu"),
        ("signal", "latency"),
        ("coverage", 1.5),
        ("samples", -1),
        ("current", "high"),
        ("unexpected_field", 1),
    ],
)
def test_schema_rejects_invalid_metric_field(field: str, value: Any) -> None:
    baseline = full_use_baseline().to_dict()
    baseline["metrics"][0][field] = value
    document = document_with_full_baselines({"db": baseline})

    with pytest.raises(InvalidStatusDocumentError, match="baseline"):
        validate_status_document(document)


def test_schema_rejects_unknown_threshold_formula() -> None:
    baseline = full_use_baseline().to_dict()
    baseline["metrics"][0]["threshold_inputs"]["formula"] = "p95 * 2"
    document = document_with_full_baselines({"db": baseline})

    with pytest.raises(InvalidStatusDocumentError, match="formula"):
        validate_status_document(document)


@pytest.mark.integration
def test_collected_baselines_validate(
    backfilled_prometheus: BackfilledPrometheus, tmp_path: Path
) -> None:
    systems = [
        System("busy", "vm", "lab", AccessMethod.SSH, attributes={"instance": BUSY_INSTANCE}),
        System("missing", "vm", "lab", AccessMethod.SSH, address="127.0.0.99"),
    ]
    results = collect_prometheus_baselines(
        backfilled_prometheus.url,
        systems,
        window=timedelta(days=7),
        step=timedelta(seconds=60),
        end=backfilled_prometheus.window_end,
        timeout=30,
    )
    baselines = {name: baseline.to_dict() for name, baseline in results.items()}
    document = document_with_full_baselines(baselines)

    validate_status_document(document)
    _json_path, markdown_path = write_status_documents(document, tmp_path)

    markdown = markdown_path.read_text()
    assert "| filesystem | utilization | filesystem_used | / |" in markdown
    assert "instance 127.0.0.99:9100 not found" in markdown
