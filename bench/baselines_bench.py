"""Time the USE baseline collection of many instances from a backfilled Prometheus.

Run with ``python -m bench.baselines_bench`` from the repository root. It needs
Debian's ``prometheus`` and ``promtool``. It generates ``--instances``
node_exporter instances with ``--days`` of history at ``--scrape-interval``, from
the profiles of prep_assets_tests.synthetic_history.iter_fleet_profiles. promtool
turns them into TSDB blocks, ``--chunk`` instances at a time. Then Prometheus
starts on 127.0.0.1 and collect_prometheus_baselines runs for all instances twice
per ``--step``. The first run after startup reads cold blocks, and the next ones
find them in the page cache.

It prints the query counts and times. ``--record FILE`` also writes them as a
section of that Markdown file (docs/benchmarks.md), replacing the section of an
earlier run.

The instance labels are 127.77.x.y addresses that only name series: nothing
connects to them.
"""

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from prep_assets.baselines.catalog import USE_METRICS
from prep_assets.baselines.prometheus import (
    DEFAULT_MAX_QUERY_CHARS,
    QueryStats,
    collect_prometheus_baselines,
)
from prep_assets.models import AccessMethod, System
from prep_assets_tests.prometheus_server import start_prometheus
from prep_assets_tests.synthetic_history import (
    backfill,
    generate_history,
    iter_fleet_profiles,
    write_openmetrics,
)

SECTION_START = "<!-- baselines-bench:start -->"
SECTION_END = "<!-- baselines-bench:end -->"
# Extra history before the window, so that rate(...[5m]) has a full range at the
# window's first evaluation point.
LEAD_IN_SECONDS = 600


@dataclass
class CollectRun:
    label: str
    wall_seconds: float
    stats: QueryStats
    systems_with_data: int
    # The 1-minute load average when the run started: above the core count, other
    # processes competed for the CPUs and the times are too high.
    load_before: float


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=200, help="instances to generate")
    parser.add_argument("--days", type=int, default=7, help="days of history and window length")
    parser.add_argument(
        "--scrape-interval", type=int, default=60, help="seconds between generated samples"
    )
    parser.add_argument(
        "--step",
        type=int,
        nargs="+",
        default=[60, 300],
        help="range query steps in seconds; each gets two collections",
    )
    parser.add_argument(
        "--chunk", type=int, default=10, help="instances per OpenMetrics file given to promtool"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per query")
    parser.add_argument(
        "--work-dir", type=Path, help="folder for the TSDB (default: a temporary folder, removed)"
    )
    parser.add_argument(
        "--record", type=Path, help="Markdown file whose baselines section gets the results"
    )
    return parser.parse_args(argv)


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else "unknown CPU"


def memory_gib() -> float:
    pages = os.sysconf("SC_PHYS_PAGES")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def prometheus_version() -> str:
    completed = subprocess.run(
        ["prometheus", "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    first_line = (completed.stdout or completed.stderr).splitlines()[0]
    return first_line.replace("prometheus, version ", "")


def backfill_history(
    args: argparse.Namespace, data_dir: Path, work_dir: Path, start: int, end: int
) -> tuple[int, float, list[str]]:
    """Write and import the history chunk by chunk; return samples, seconds and instance labels."""
    profiles = list(iter_fleet_profiles(args.instances))
    samples = 0
    started = time.monotonic()
    for first in range(0, len(profiles), args.chunk):
        chunk = profiles[first : first + args.chunk]
        history = generate_history(chunk, start, end, args.scrape_interval)
        path = work_dir / f"chunk-{first:05d}.om.txt"
        samples += write_openmetrics(history, path)
        del history
        backfill(path, data_dir, work_dir / "promtool.log", timeout=1800)
        path.unlink()
        print(f"  backfilled {first + len(chunk)} of {len(profiles)} instances", flush=True)
    return samples, time.monotonic() - started, [profile.instance for profile in profiles]


def count_scraped(url: str, at: int) -> int:
    response = requests.get(
        f"{url}/api/v1/query", params={"query": "count(up)", "time": at}, timeout=60
    )
    response.raise_for_status()
    result = response.json()["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def collect(
    label: str, url: str, systems: list[System], args: argparse.Namespace, end: int, step: int
) -> CollectRun:
    stats = QueryStats()
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    results = collect_prometheus_baselines(
        url,
        systems,
        window=timedelta(days=args.days),
        step=timedelta(seconds=step),
        end=datetime.fromtimestamp(end, tz=UTC),
        timeout=args.timeout,
        query_stats=stats,
    )
    wall = time.monotonic() - started
    with_data = sum(1 for baseline in results.values() if baseline.source.value == "prometheus")
    return CollectRun(label, wall, stats, with_data, load_before)


def report(
    args: argparse.Namespace,
    samples: int,
    backfill_seconds: float,
    runs: list[CollectRun],
    version: str,
) -> str:
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    split_note = ""
    if runs and runs[0].stats.range_queries > len(USE_METRICS):
        split_note = (
            f"There are more range queries than the {len(USE_METRICS)} metrics because the "
            f"matcher of {args.instances} instance labels is split to keep each URL-encoded "
            f"query under {DEFAULT_MAX_QUERY_CHARS:,} characters. A query that repeats the "
            "matcher (memory, file systems, network utilization) is split into more parts. "
        )
    machine = (
        f"{os.cpu_count()} cores ({cpu_model()}), {memory_gib():.0f} GiB memory, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )
    lines = [
        SECTION_START,
        f"## USE baselines of {args.instances} instances over {args.days} days",
        "",
        f"Script: `python -m bench.baselines_bench --instances {args.instances} "
        f"--days {args.days} --scrape-interval {args.scrape_interval} "
        f"--step {' '.join(str(step) for step in args.step)}`. "
        f"Each instance has {len(USE_METRICS)} USE metrics over 2 CPUs, 2 disks, 3 file "
        "systems (one of them tmpfs) and 3 interfaces. promtool backfills the generated "
        f"history into Prometheus {version} on 127.0.0.1. The baselines of all instances "
        "are then collected twice per query step in one process. Machine: "
        f"{machine}. Measured {datetime.now(UTC):%Y-%m-%d}.",
        "",
        f"Backfill: {samples:,} samples in {backfill_seconds:.0f} s (generation, "
        "OpenMetrics text and promtool; not part of a collection).",
        "",
        "| Run | Range queries | Instant queries | Failed | Time in queries | Wall time "
        "| Systems with data | Load average before |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        lines.append(
            f"| {run.label} | {run.stats.range_queries} | {run.stats.instant_queries} | "
            f"{run.stats.failed} | {run.stats.seconds:.1f} s | {run.wall_seconds:.1f} s | "
            f"{run.systems_with_data} of {args.instances} | {run.load_before:.1f} |"
        )
    lines += [
        "",
        f"Peak memory of the benchmark process: {peak_mib:,.0f} MiB, including the "
        "generated history of one chunk.",
        "",
        "Time in queries is the HTTP round trips including Prometheus's evaluation and "
        "the JSON decoding by prometheus-api-client; the rest of the wall time is "
        "prep-assets' statistics. The instant queries include one query of `up`. "
        f"{split_note}"
        "The load average column shows whether other processes competed for the "
        f"{os.cpu_count()} cores during a run.",
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def record(path: Path, section: str) -> None:
    """Replace the benchmark's section in ``path``, or append it when there is none."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(SECTION_START) + r".*?" + re.escape(SECTION_END) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _match: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # SystemExit runs the finally blocks, which stop Prometheus and remove the work folder.
    sys.exit(128 + signum)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    missing = [name for name in ("prometheus", "promtool") if shutil.which(name) is None]
    if missing:
        print(f"not installed: {', '.join(missing)} (apt-get install prometheus)", file=sys.stderr)
        return 1

    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="baselines-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    data_dir = work_dir / "data"
    # The history ends a few minutes before now, so retention keeps every block.
    end = int(time.time()) // args.scrape_interval * args.scrape_interval - 300
    start = end - args.days * 86_400 - LEAD_IN_SECONDS
    try:
        print(f"backfilling {args.instances} instances into {data_dir}", flush=True)
        samples, backfill_seconds, labels = backfill_history(args, data_dir, work_dir, start, end)
        server, url = start_prometheus(data_dir, "global:\n  scrape_interval: 1m\n", work_dir)
        try:
            scraped = count_scraped(url, end)
            if scraped != args.instances:
                print(
                    f"Prometheus at {url} sees {scraped} of {args.instances} instances:\n"
                    f"{server.log_tail()}",
                    file=sys.stderr,
                )
                return 1
            systems = [
                System(
                    f"node-{index:04d}",
                    "vm",
                    "lab",
                    AccessMethod.SSH,
                    attributes={"instance": label},
                )
                for index, label in enumerate(labels)
            ]
            runs = []
            for step in args.step:
                for attempt in ("first", "second"):
                    label = f"{attempt} collection, step {step} s"
                    print(f"  {label}", flush=True)
                    runs.append(collect(label, url, systems, args, end, step))
        finally:
            server.stop()
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)

    section = report(args, samples, backfill_seconds, runs, prometheus_version())
    print(section)
    print(json.dumps({run.label: run.stats.queries for run in runs}))
    if args.record:
        record(args.record, section)
        print(f"recorded in {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
