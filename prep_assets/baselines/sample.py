"""Short vmstat sample of CPU and memory for a system that no Prometheus covers.

SAMPLE_COMMAND runs ``vmstat 1 6`` and ``cat /proc/meminfo`` in one fixed shell
script, so the sample costs one command on a connection that is already open. The
output contains both sections between marker lines:

    === prep-assets vmstat ===
    procs -----------memory---------- ---swap-- -----io---- -system-- ------cpu-----
     r  b   swpd   free   buff  cache   si   so    bi    bo   in   cs us sy id wa st
     1  0      0 23718128   8120 639508    0    0  1267  1764  291  699 11  4 85  0  0
    ...
    === prep-assets vmstat exit 0 ===
    === prep-assets meminfo ===
    MemTotal:       24683784 kB
    ...
    === prep-assets meminfo exit 0 ===

Five seconds of vmstat show the moment, not normal behaviour, so the result has
source "sample", a message that says so, and no alert threshold.
"""

import logging
import re
from dataclasses import dataclass

from prep_assets.baselines import stats
from prep_assets.baselines.models import BaselineSource, MetricBaseline, SystemBaseline
from prep_assets.transports.base import shell_script

logger = logging.getLogger(__name__)

VMSTAT_INTERVAL_SECONDS = 1
# vmstat's first report averages everything since boot, so 6 reports give 5 samples.
VMSTAT_REPORTS = 6
SAMPLED_REPORTS = VMSTAT_REPORTS - 1

MARKER_PREFIX = "=== prep-assets "
# LC_ALL=C keeps vmstat's header and numbers free of translations. 2>&1 puts an
# error such as "vmstat: not found" into the section that the parser reads.
SAMPLE_SCRIPT = f"""\
export LC_ALL=C
echo '{MARKER_PREFIX}vmstat ==='
vmstat {VMSTAT_INTERVAL_SECONDS} {VMSTAT_REPORTS} 2>&1
echo "{MARKER_PREFIX}vmstat exit $? ==="
echo '{MARKER_PREFIX}meminfo ==='
cat /proc/meminfo 2>&1
echo "{MARKER_PREFIX}meminfo exit $? ==="
"""
SAMPLE_COMMAND: list[str] = shell_script(SAMPLE_SCRIPT)

SAMPLE_MESSAGE = (
    f"short sample: {SAMPLED_REPORTS} vmstat reports of {VMSTAT_INTERVAL_SECONDS} s each, "
    "not a baseline; no alert threshold is derived from it"
)
CPU_FORMULA = f"vmstat {VMSTAT_INTERVAL_SECONDS} {VMSTAT_REPORTS}: 100 - id"
# free + buff + cache counts all page cache as available, so this reads lower than
# the Prometheus metric (MemAvailable) when much of the cache is shmem or tmpfs.
MEMORY_FORMULA = (
    f"vmstat {VMSTAT_INTERVAL_SECONDS} {VMSTAT_REPORTS} and /proc/meminfo: "
    "100 * (1 - (free + buff + cache) / MemTotal)"
)

_START_MARKER = re.compile(r"^=== prep-assets (?P<section>\w+) ===$")
_END_MARKER = re.compile(r"^=== prep-assets (?P<section>\w+) exit (?P<status>\d+) ===$")
_REQUIRED_COLUMNS = ("free", "buff", "cache", "id")


class SampleParseError(ValueError):
    """The text is not output of vmstat, /proc/meminfo or SAMPLE_COMMAND."""


@dataclass(frozen=True)
class SampleSection:
    """The output of one command of SAMPLE_SCRIPT and its exit status."""

    text: str
    exit_status: int


def split_sample_sections(text: str) -> dict[str, SampleSection]:
    """Split SAMPLE_COMMAND's output into its marked sections, by section name.

    A section whose end marker is missing (the script was cut off) is left out.
    """
    sections: dict[str, SampleSection] = {}
    current: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        start = _START_MARKER.match(line)
        end = _END_MARKER.match(line)
        if start:
            current, lines = start["section"], []
        elif end and current is not None and end["section"] == current:
            sections[current] = SampleSection("\n".join(lines), int(end["status"]))
            current = None
        elif current is not None:
            lines.append(line)
    return sections


def parse_vmstat_reports(text: str) -> list[dict[str, int]]:
    """Parse vmstat's default output into one dict per report, keyed by column name.

    Memory columns are in KiB, vmstat's default unit. A repeated header is skipped.
    """
    header: list[str] | None = None
    reports: list[dict[str, int]] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or line.startswith("procs"):
            continue
        if all(column in fields for column in _REQUIRED_COLUMNS):
            header = fields
            continue
        if header is None:
            continue
        if len(fields) != len(header) or not all(field.isdigit() for field in fields):
            raise SampleParseError(f"invalid vmstat report line: {line!r}")
        reports.append(dict(zip(header, (int(field) for field in fields), strict=True)))

    if header is None:
        raise SampleParseError("no vmstat header with free, buff, cache and id columns found")
    return reports


def parse_meminfo(text: str) -> dict[str, int]:
    """Parse /proc/meminfo into integers by field name. Fields marked kB are in KiB."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, separator, rest = line.partition(":")
        parts = rest.split()
        if not separator or not parts or not parts[0].isdigit():
            continue
        values[name.strip()] = int(parts[0])
    if "MemTotal" not in values:
        raise SampleParseError("no MemTotal line found in /proc/meminfo output")
    return values


# Both sampled metrics are utilizations: of the CPUs and of memory.
_RESOURCES = {"cpu_utilization": "cpu", "memory_utilization": "memory"}


def _sample_metric(
    metric: str, query: str, values: list[float], no_data_reason: str | None
) -> MetricBaseline:
    window_seconds = float(SAMPLED_REPORTS * VMSTAT_INTERVAL_SECONDS)
    resource = _RESOURCES.get(metric)
    if no_data_reason is not None or not values:
        return MetricBaseline(
            metric=metric,
            unit="percent",
            avg=None,
            p95=None,
            max=None,
            stddev=None,
            samples=0,
            coverage=0.0,
            threshold=None,
            threshold_inputs={},
            query=query,
            window_seconds=window_seconds,
            source=BaselineSource.SAMPLE,
            no_data_reason=no_data_reason or "vmstat printed no report after the first",
            low_coverage=True,
            step_seconds=float(VMSTAT_INTERVAL_SECONDS),
            expected_samples=SAMPLED_REPORTS,
            resource=resource,
            signal="utilization",
        )

    summary = stats.summarize(values)
    covered = stats.coverage(summary.samples, SAMPLED_REPORTS)
    return MetricBaseline(
        metric=metric,
        unit="percent",
        avg=summary.avg,
        p95=summary.p95,
        max=summary.max,
        stddev=summary.stddev,
        samples=summary.samples,
        coverage=covered,
        threshold=None,
        threshold_inputs={},
        query=query,
        window_seconds=window_seconds,
        source=BaselineSource.SAMPLE,
        low_coverage=covered < 1.0,
        step_seconds=float(VMSTAT_INTERVAL_SECONDS),
        expected_samples=SAMPLED_REPORTS,
        resource=resource,
        signal="utilization",
    )


def _sample_baseline(system: str, metrics: list[MetricBaseline]) -> SystemBaseline:
    reasons = [metric.no_data_reason for metric in metrics if metric.no_data_reason]
    if all(metric.no_data for metric in metrics):
        return SystemBaseline(system, BaselineSource.NONE, metrics, "; ".join(reasons))
    message = "; ".join([SAMPLE_MESSAGE, *reasons])
    return SystemBaseline(system, BaselineSource.SAMPLE, metrics, message)


def parse_vmstat(text: str, *, system: str, mem_total_kib: int | None = None) -> SystemBaseline:
    """Turn ``vmstat 1 6`` output into a short-sample SystemBaseline.

    The first report (averages since boot) is dropped. CPU utilization is
    ``100 - id`` per report. Memory utilization needs ``mem_total_kib`` from
    /proc/meminfo, because vmstat does not print the total, and is no_data without it.
    Raises SampleParseError when the text has no vmstat header.
    """
    reports = parse_vmstat_reports(text)[1:]

    cpu_values = [100.0 - report["id"] for report in reports]
    cpu = _sample_metric("cpu_utilization", CPU_FORMULA, cpu_values, None)

    if mem_total_kib is None or mem_total_kib <= 0:
        memory = _sample_metric(
            "memory_utilization",
            MEMORY_FORMULA,
            [],
            "memory total unknown: vmstat does not print MemTotal",
        )
    else:
        memory_values = [
            100.0 * (1 - (report["free"] + report["buff"] + report["cache"]) / mem_total_kib)
            for report in reports
        ]
        memory = _sample_metric("memory_utilization", MEMORY_FORMULA, memory_values, None)

    return _sample_baseline(system, [cpu, memory])


def _failure_reason(name: str, section: SampleSection | None) -> str | None:
    if section is None:
        return f"the {name} section is missing: the sample command ended before printing it"
    if section.exit_status != 0:
        first_line = next((line for line in section.text.splitlines() if line.strip()), "")
        return f"{name} failed with exit status {section.exit_status}: {first_line.strip()}"
    return None


def parse_sample(text: str, *, system: str) -> SystemBaseline:
    """Parse SAMPLE_COMMAND's output into a short-sample SystemBaseline.

    A failed vmstat (for example not installed) makes both metrics no_data with the
    exit status and its first output line. A failed /proc/meminfo read makes only
    memory no_data. Raises SampleParseError when the text has no markers at all or a
    section that succeeded cannot be parsed.
    """
    sections = split_sample_sections(text)
    if not sections:
        raise SampleParseError(
            f"no '{MARKER_PREFIX}...' markers found: the text is not SAMPLE_COMMAND output"
        )

    vmstat_failure = _failure_reason("vmstat", sections.get("vmstat"))
    if vmstat_failure is not None:
        logger.warning("no sample for system %s: %s", system, vmstat_failure)
        metrics = [
            _sample_metric("cpu_utilization", CPU_FORMULA, [], vmstat_failure),
            _sample_metric("memory_utilization", MEMORY_FORMULA, [], vmstat_failure),
        ]
        return _sample_baseline(system, metrics)

    meminfo_failure = _failure_reason("/proc/meminfo", sections.get("meminfo"))
    mem_total_kib = None
    if meminfo_failure is None:
        mem_total_kib = parse_meminfo(sections["meminfo"].text)["MemTotal"]
    else:
        logger.warning("no memory total for system %s: %s", system, meminfo_failure)

    baseline = parse_vmstat(sections["vmstat"].text, system=system, mem_total_kib=mem_total_kib)
    if meminfo_failure is not None:
        memory = baseline.metric("memory_utilization")
        if memory is not None:
            memory.no_data_reason = meminfo_failure
        baseline = _sample_baseline(system, baseline.metrics)
    return baseline
