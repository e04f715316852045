"""Write one USE checklist page per system type into the infra repo.

Each page lists, per resource, the commands an operator runs by hand during an
incident and what to read in their output. The baselines of that type's systems
stand beside them, so the live numbers can be compared with normal behaviour. The
commands follow Brendan Gregg's "USE Method: Linux Performance Checklist"
(https://www.brendangregg.com/USEmethod/use-linux.html) and his list of
first-minute commands (uptime, dmesg, vmstat, mpstat, iostat, free, sar). The
/proc/pressure files are Linux's pressure stall information (Linux 4.20 and later).
"""

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prep_assets.baselines.models import MetricBaseline, SystemBaseline
from prep_assets.models import AccessMethod, System
from prep_assets.state import write_atomically

logger = logging.getLogger(__name__)

CHECKLIST_DIRECTORY = "docs/infrastructure"
FILE_PREFIX = "use-checklist-"
USE_METHOD_SOURCE = "https://www.brendangregg.com/USEmethod/use-linux.html"


@dataclass(frozen=True)
class ChecklistItem:
    """One command of the checklist and the baseline metrics it corresponds to."""

    resource: str
    signal: str
    command: str
    # The columns or lines of the command's output to read.
    read: str
    metrics: tuple[str, ...] = ()


RESOURCE_TITLES = {
    "cpu": "CPU",
    "memory": "Memory",
    "disk": "Disks",
    "filesystem": "File systems",
    "network": "Network interfaces",
}

FIRST_COMMANDS = (
    ("uptime", "load averages over 1, 5 and 15 minutes: rising or falling"),
    ("dmesg -T | tail -n 50", "recent kernel errors: OOM kills, I/O errors, link flaps"),
)

CHECKLIST: tuple[ChecklistItem, ...] = (
    ChecklistItem(
        "cpu",
        "utilization",
        "mpstat -P ALL 1",
        "per CPU, 100 - %idle - %iowait; one CPU near 100 % while the others idle "
        "points at a single busy thread",
        ("cpu_utilization",),
    ),
    ChecklistItem("cpu", "utilization", "vmstat 1", "us + sy + st, system-wide"),
    ChecklistItem(
        "cpu",
        "saturation",
        "vmstat 1",
        "r (runnable tasks) above the CPU count from `nproc`",
        ("cpu_load_per_cpu",),
    ),
    ChecklistItem(
        "cpu",
        "saturation",
        "cat /proc/pressure/cpu",
        "some avg10 and avg60: percent of time at least one task waited for a CPU",
        ("cpu_psi_waiting",),
    ),
    ChecklistItem(
        "cpu",
        "errors",
        "dmesg -T | grep -i -E 'mce|machine check'",
        "machine check exceptions reported by the processor",
    ),
    ChecklistItem(
        "memory",
        "utilization",
        "free -m",
        "available in the Mem: row, and used in the Swap: row",
        ("memory_utilization",),
    ),
    ChecklistItem(
        "memory",
        "saturation",
        "vmstat 1",
        "si and so (swap-in and swap-out) above 0",
        ("memory_swap_in", "memory_swap_out"),
    ),
    ChecklistItem(
        "memory",
        "saturation",
        "sar -B 1",
        "majflt/s (major page faults) and pgscank/s + pgscand/s (page scanning)",
        ("memory_major_faults",),
    ),
    ChecklistItem(
        "memory",
        "saturation",
        "cat /proc/pressure/memory",
        "some avg10 and avg60: percent of time a task stalled on memory",
        ("memory_psi_waiting",),
    ),
    ChecklistItem(
        "memory",
        "saturation",
        "dmesg -T | grep -i -E 'out of memory|oom-kill'",
        "processes killed by the OOM killer",
    ),
    ChecklistItem(
        "disk",
        "utilization",
        "iostat -xz 1",
        "%util per device: the share of time with a request in flight",
        ("disk_utilization",),
    ),
    ChecklistItem(
        "disk",
        "saturation",
        "iostat -xz 1",
        "aqu-sz (avgqu-sz in older sysstat) above 1 per device",
        ("disk_queue_length",),
    ),
    ChecklistItem(
        "disk",
        "saturation",
        "cat /proc/pressure/io",
        "some avg10 and avg60: percent of time a task waited for I/O",
    ),
    ChecklistItem(
        "disk",
        "errors",
        "dmesg -T | grep -i 'i/o error'",
        "block device errors; then `smartctl -H /dev/<device>` for the drive's own verdict",
    ),
    ChecklistItem(
        "filesystem",
        "utilization",
        "df -h",
        "Use% per mount point; writes fail for non-root users at 100 %",
        ("filesystem_used",),
    ),
    ChecklistItem(
        "filesystem", "utilization", "df -i", "IUse%: inodes can run out before space does"
    ),
    ChecklistItem(
        "network",
        "utilization",
        "sar -n DEV 1",
        "rxkB/s and txkB/s per interface against the link speed from "
        "`ethtool <interface>`, or %ifutil",
        ("network_throughput", "network_utilization"),
    ),
    ChecklistItem(
        "network",
        "saturation",
        "sar -n EDEV 1",
        "rxdrop/s and txdrop/s per interface; `ip -s link` shows the dropped and overrun totals",
        ("network_drops",),
    ),
    ChecklistItem(
        "network",
        "errors",
        "sar -n EDEV 1",
        "rxerr/s and txerr/s per interface; `ip -s link` shows the error totals",
        ("network_errors",),
    ),
)


def type_slug(system_type: str) -> str:
    """Return the system type as a file name part: ``Proxmox host`` becomes ``proxmox-host``."""
    slug = re.sub(r"[^a-z0-9]+", "-", system_type.lower()).strip("-")
    return slug or "unknown"


def checklist_path(root: Path, system_type: str) -> Path:
    return root / CHECKLIST_DIRECTORY / f"{FILE_PREFIX}{type_slug(system_type)}.md"


def _format_value(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _as_baseline(name: str, value: SystemBaseline | Mapping[str, Any]) -> SystemBaseline:
    if isinstance(value, SystemBaseline):
        return value
    return SystemBaseline.from_dict({"system": name, "metrics": [], **value})


def _note(metric: MetricBaseline) -> str:
    if metric.no_data_reason:
        return f"no data: {metric.no_data_reason}"
    notes = []
    if metric.above_threshold:
        notes.append("above threshold now")
    if metric.low_coverage:
        notes.append(f"low coverage: {100 * metric.coverage:.0f} % of the window")
    return "; ".join(notes)


def _device(metric: MetricBaseline) -> str:
    if metric.worst_device:
        return f"all (worst: {metric.worst_device})"
    return metric.device or "-"


def _baseline_rows(
    resource: str, metric_names: Sequence[str], baselines: Sequence[SystemBaseline]
) -> list[str]:
    rows = []
    for baseline in baselines:
        for metric in baseline.metrics:
            if metric.metric not in metric_names:
                continue
            cells = [
                baseline.system,
                metric.metric,
                _device(metric),
                _format_value(metric.avg),
                _format_value(metric.p95),
                _format_value(metric.max),
                _format_value(metric.threshold),
                _format_value(metric.current),
                metric.unit,
                _note(metric),
            ]
            rows.append("| " + " | ".join(_cell(cell) or "-" for cell in cells) + " |")
    if not rows:
        return [
            f"No baselines of the {RESOURCE_TITLES[resource].lower()} of these systems yet.",
            "",
        ]
    header = "| System | Metric | Device | Avg | P95 | Max | Threshold | Current | Unit | Note |"
    return [header, "|" + "---|" * 10, *rows, ""]


def _window_text(baselines: Iterable[SystemBaseline]) -> str:
    windows = {
        (metric.window_seconds, metric.window_end, metric.source.value)
        for baseline in baselines
        for metric in baseline.metrics
        if metric.window_end or metric.source.value == "sample"
    }
    if not windows:
        return "No baselines were collected for these systems."
    parts = []
    for seconds, end, source in sorted(windows, key=lambda w: (w[2], w[1] or "", w[0])):
        if source == "sample":
            parts.append(f"a short sample of {seconds:g} s (not a baseline)")
        else:
            parts.append(f"Prometheus history of {seconds / 86_400:g} days up to {end}")
    return "Baselines from " + "; ".join(parts) + "."


def render_checklist(
    system_type: str, systems: Sequence[System], baselines: Sequence[SystemBaseline]
) -> str:
    """Return the Markdown page of one system type."""
    names = ", ".join(system.name for system in systems)
    lines = [
        f"# USE checklist: {system_type}",
        "",
        "Generated by prep-assets. Do not edit: the next run rewrites this page.",
        "",
        f"Systems of this type: {names}.",
        "",
        "For each resource, check utilization, saturation and errors, in any order, "
        "and compare what you see with the baselines beside each command. Commands "
        f"from Brendan Gregg's USE method checklist for Linux: {USE_METHOD_SOURCE}",
        "",
        _window_text(baselines)
        + " Threshold is min(cap, max(floor, p95 + k * stddev)) with per-metric k, "
        "floor and cap (no cap for throughput); prep-status.json records the inputs.",
        "",
    ]
    if any(system.read_only for system in systems):
        lines += [
            "Some of these systems are read-only or vendor-managed, so prep-assets installs "
            "nothing there and some commands may be missing.",
            "",
        ]
    lines += ["## First", "", "| Command | What to read |", "|---|---|"]
    lines += [f"| `{_cell(command)}` | {_cell(read)} |" for command, read in FIRST_COMMANDS]
    lines.append("")

    for resource, title in RESOURCE_TITLES.items():
        items = [item for item in CHECKLIST if item.resource == resource]
        lines += [f"## {title}", "", "| Signal | Command | What to read |", "|---|---|---|"]
        lines += [
            f"| {item.signal} | `{_cell(item.command)}` | {_cell(item.read)} |" for item in items
        ]
        lines.append("")
        metric_names = [name for item in items for name in item.metrics]
        lines += _baseline_rows(resource, metric_names, baselines)
    return "\n".join(lines).rstrip() + "\n"


def _checked_by_hand(system: System) -> bool:
    """Return whether an operator can open a shell there: contacted, and not only by a TCP connect."""
    return system.contacted and system.access is not AccessMethod.TCP


def write_checklist_pages(
    root: Path,
    systems: Sequence[System],
    baselines: Mapping[str, SystemBaseline | Mapping[str, Any]],
) -> list[Path]:
    """Write one ``use-checklist-<type>.md`` per system type under ``docs/infrastructure/``.

    Systems that prep-assets does not contact, or reaches only by a TCP connect,
    get no page, because no command runs there. ``baselines`` maps system
    names to SystemBaseline objects or their ``to_dict()`` form. Each page is written
    atomically. Returns the paths written, sorted.

    NOTE: a page of a type that no longer has systems is left in place, not deleted.
    """
    by_slug: dict[str, list[System]] = {}
    for system in systems:
        if _checked_by_hand(system):
            by_slug.setdefault(type_slug(system.type), []).append(system)

    written = []
    for slug, members in sorted(by_slug.items()):
        members.sort(key=lambda system: system.name)
        type_baselines = [
            _as_baseline(system.name, baselines[system.name])
            for system in members
            if system.name in baselines
        ]
        path = checklist_path(root, members[0].type)
        write_atomically(path, render_checklist(members[0].type, members, type_baselines))
        logger.info(
            "wrote the USE checklist of type %s (systems: %d) to %s", slug, len(members), path
        )
        written.append(path)
    return sorted(written)
