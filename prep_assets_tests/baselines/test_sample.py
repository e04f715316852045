"""Short vmstat sample parser, on outputs recorded on Debian 12 (procps-ng 4.0.2).

sample-debian12-procps4.txt and sample-no-vmstat.txt are SAMPLE_COMMAND's output,
the second run with PATH holding only cat. vmstat-debian12-procps4.txt is
``LC_ALL=C vmstat 1 6``. The expected numbers below are read off those files.
"""

import math
import shutil
import subprocess
from pathlib import Path

import pytest

from prep_assets.baselines.models import BaselineSource
from prep_assets.baselines.sample import (
    SAMPLE_COMMAND,
    SampleParseError,
    parse_meminfo,
    parse_sample,
    parse_vmstat,
    parse_vmstat_reports,
    split_sample_sections,
)

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE_TEXT = (FIXTURES / "sample-debian12-procps4.txt").read_text()
NO_VMSTAT_TEXT = (FIXTURES / "sample-no-vmstat.txt").read_text()
VMSTAT_TEXT = (FIXTURES / "vmstat-debian12-procps4.txt").read_text()

MEM_TOTAL_KIB = 24_683_784


def test_sample_command_is_fixed_shell_argv() -> None:
    assert SAMPLE_COMMAND[:2] == ["/bin/sh", "-c"]
    assert "vmstat 1 6" in SAMPLE_COMMAND[2]
    assert "cat /proc/meminfo" in SAMPLE_COMMAND[2]


def test_sections_split_with_exit_status() -> None:
    sections = split_sample_sections(SAMPLE_TEXT)

    assert set(sections) == {"vmstat", "meminfo"}
    assert sections["vmstat"].exit_status == 0
    assert sections["meminfo"].exit_status == 0
    assert sections["vmstat"].text.startswith("procs")


def test_vmstat_reports_parsed_by_column() -> None:
    reports = parse_vmstat_reports(split_sample_sections(SAMPLE_TEXT)["vmstat"].text)

    assert len(reports) == 6
    assert reports[0]["id"] == 85
    assert [report["id"] for report in reports[1:]] == [98, 99, 98, 98, 99]
    assert reports[1]["free"] == 23_741_636
    assert reports[1]["buff"] == 5_532
    assert reports[1]["cache"] == 594_272


def test_meminfo_total() -> None:
    meminfo = parse_meminfo(split_sample_sections(SAMPLE_TEXT)["meminfo"].text)

    assert meminfo["MemTotal"] == MEM_TOTAL_KIB
    assert meminfo["MemAvailable"] == 23_969_552


def test_sample_cpu_skips_since_boot_report() -> None:
    baseline = parse_sample(SAMPLE_TEXT, system="pve1")
    cpu = baseline.metric("cpu_utilization")
    assert cpu is not None

    # 100 - id over the reports after the first: 2, 1, 2, 2, 1.
    assert cpu.samples == 5
    assert cpu.avg == pytest.approx(1.6)
    assert cpu.p95 == pytest.approx(2.0)
    assert cpu.max == 2.0
    assert cpu.stddev == pytest.approx(math.sqrt(0.24))
    assert cpu.coverage == 1.0
    assert not cpu.low_coverage


def test_sample_memory_from_free_buff_cache() -> None:
    baseline = parse_sample(SAMPLE_TEXT, system="pve1")
    memory = baseline.metric("memory_utilization")
    assert memory is not None

    expected = 100 * (1 - (23_741_636 + 5_532 + 594_272) / MEM_TOTAL_KIB)
    assert memory.samples == 5
    assert memory.avg == pytest.approx(expected)
    assert memory.max == pytest.approx(expected)
    assert memory.stddev == pytest.approx(0.0, abs=1e-9)


def test_sample_is_labelled_not_a_baseline() -> None:
    baseline = parse_sample(SAMPLE_TEXT, system="pve1")

    assert baseline.system == "pve1"
    assert baseline.source is BaselineSource.SAMPLE
    assert "short sample" in baseline.message
    assert "not a baseline" in baseline.message
    for metric in baseline.metrics:
        assert metric.source is BaselineSource.SAMPLE
        assert metric.threshold is None
        assert metric.window_seconds == 5.0
        assert metric.query.startswith("vmstat 1 6")


def test_missing_vmstat_is_no_data() -> None:
    baseline = parse_sample(NO_VMSTAT_TEXT, system="haos")

    assert baseline.source is BaselineSource.NONE
    for metric in baseline.metrics:
        assert metric.no_data_reason is not None
        assert "vmstat failed with exit status 127" in metric.no_data_reason
        assert "vmstat: not found" in metric.no_data_reason
        assert metric.avg is None


def test_cut_off_output_loses_only_memory() -> None:
    # The recorded output cut after the vmstat section, as if the connection dropped.
    cut = SAMPLE_TEXT.split("=== prep-assets meminfo ===")[0]

    baseline = parse_sample(cut, system="pve1")
    cpu = baseline.metric("cpu_utilization")
    memory = baseline.metric("memory_utilization")
    assert cpu is not None and memory is not None

    assert baseline.source is BaselineSource.SAMPLE
    assert cpu.avg == pytest.approx(1.6)
    assert memory.no_data_reason is not None
    assert "section is missing" in memory.no_data_reason
    assert memory.no_data_reason in baseline.message


def test_vmstat_alone_lacks_memory_total() -> None:
    baseline = parse_vmstat(VMSTAT_TEXT, system="pve1")
    cpu = baseline.metric("cpu_utilization")
    memory = baseline.metric("memory_utilization")
    assert cpu is not None and memory is not None

    # 100 - id over the reports after the first: 1, 1, 2, 2, 2.
    assert cpu.avg == pytest.approx(1.6)
    assert memory.no_data_reason is not None
    assert "memory total unknown" in memory.no_data_reason


def test_vmstat_with_memory_total() -> None:
    baseline = parse_vmstat(VMSTAT_TEXT, system="pve1", mem_total_kib=MEM_TOTAL_KIB)
    memory = baseline.metric("memory_utilization")
    assert memory is not None

    expected = 100 * (1 - (23_763_952 + 5_436 + 582_940) / MEM_TOTAL_KIB)
    assert memory.avg == pytest.approx(expected)


def test_vmstat_with_only_since_boot_report() -> None:
    text = "\n".join(VMSTAT_TEXT.splitlines()[:3])

    baseline = parse_vmstat(text, system="pve1", mem_total_kib=MEM_TOTAL_KIB)

    assert baseline.source is BaselineSource.NONE
    for metric in baseline.metrics:
        assert metric.no_data_reason == "vmstat printed no report after the first"


def test_text_without_markers_raises() -> None:
    with pytest.raises(SampleParseError, match="markers"):
        parse_sample(VMSTAT_TEXT, system="pve1")


def test_text_without_vmstat_header_raises() -> None:
    with pytest.raises(SampleParseError, match="no vmstat header"):
        parse_vmstat("total 0\n", system="pve1")


def test_truncated_report_line_raises() -> None:
    text = VMSTAT_TEXT.rstrip("\n")[:-6]

    with pytest.raises(SampleParseError, match="invalid vmstat report line"):
        parse_vmstat(text, system="pve1")


@pytest.mark.integration
def test_sample_command_runs_here() -> None:
    if shutil.which("vmstat") is None:
        pytest.skip("vmstat is not installed (apt-get install procps)")

    completed = subprocess.run(
        SAMPLE_COMMAND, capture_output=True, text=True, timeout=30, check=True
    )
    baseline = parse_sample(completed.stdout, system="localhost")

    assert baseline.source is BaselineSource.SAMPLE
    for metric in baseline.metrics:
        assert metric.no_data_reason is None, metric.metric
        assert metric.samples == 5, metric.metric
        assert metric.avg is not None
        assert 0 <= metric.avg <= 100, metric.metric
