"""Real Prometheus servers on loopback for the baseline tests.

``backfilled_prometheus`` serves 7 days of generated node_exporter series, written as
OpenMetrics and turned into TSDB blocks with ``promtool tsdb create-blocks-from
openmetrics``, so tests can compare query results with numbers they compute from
the same samples. ``live_prometheus`` scrapes a real ``prometheus-node-exporter``
every second. Both need Debian's ``prometheus``, ``promtool`` and
``prometheus-node-exporter`` on PATH and skip the test when one is missing.
"""

import logging
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

logger = logging.getLogger(__name__)

STEP_SECONDS = 60
HISTORY_DAYS = 7
# Extra history before the 7-day window, so that rate(...[5m]) has a full range at
# the first evaluation point of the window.
LEAD_IN_SECONDS = 10 * 60
CPUS = ("0", "1")
CPU_MODES = ("idle", "user", "system")
STARTUP_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 5.0


def free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binaries(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (apt-get install prometheus)")


class ManagedProcess:
    """A server process in its own process group, stopped by TERM then KILL."""

    def __init__(self, argv: Sequence[str], log_path: Path) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logger.info("started %s as pid %d", self.argv[0], self.process.pid)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Send SIGTERM to the process group, then SIGKILL after the grace period."""
        if self.process.poll() is None:
            pgid = self.process.pid  # start_new_session made the process a group leader
            os.killpg(pgid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning("pid %d ignored SIGTERM, sending SIGKILL", pgid)
                os.killpg(pgid, signal.SIGKILL)
                self.process.wait(timeout=STOP_GRACE_SECONDS)
        self._log.close()
        logger.info("stopped %s (pid %d)", self.argv[0], self.process.pid)


def wait_until_ready(server: ManagedProcess, url: str, timeout: float) -> None:
    """Poll ``url`` until it returns 200. Raise RuntimeError with the server's log if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.argv[0]} exited with status {server.process.returncode} "
                f"before {url} was ready:\n{server.log_tail()}"
            )
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} was not ready after {timeout} s:\n{server.log_tail()}")


def start_prometheus(data_dir: Path, config: str, work_dir: Path) -> tuple[ManagedProcess, str]:
    """Start Prometheus on a free loopback port and return the process and its base URL."""
    config_path = work_dir / "prometheus.yml"
    config_path.write_text(config)
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        "prometheus",
        f"--config.file={config_path}",
        f"--storage.tsdb.path={data_dir}",
        # Retention counts back from the newest block, so 30 days keeps all 7 days.
        "--storage.tsdb.retention.time=30d",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    server = ManagedProcess(argv, work_dir / "prometheus.log")
    try:
        wait_until_ready(server, f"{url}/-/ready", STARTUP_TIMEOUT_SECONDS)
    except BaseException:
        server.stop()
        raise
    return server, url


@dataclass
class InstanceSeries:
    """Generated samples of one node_exporter instance, at the timestamps present."""

    timestamps: list[int]
    # Cumulative node_cpu_seconds_total per (cpu, mode), one value per timestamp.
    cpu_seconds: dict[tuple[str, str], list[float]]
    mem_total_bytes: int
    mem_available_bytes: list[int]


@dataclass
class SyntheticHistory:
    """node_exporter series of several instances at a fixed step, with optional gaps."""

    start: int
    end: int
    step: int
    instances: dict[str, InstanceSeries] = field(default_factory=dict)


@dataclass(frozen=True)
class InstanceProfile:
    """Load shape of one generated instance: fractions of CPU busy and memory available."""

    instance: str
    cpu_busy_mean: float
    cpu_busy_amplitude: float
    cpu_busy_noise: float
    mem_total_bytes: int
    mem_available_mean: float
    mem_available_amplitude: float
    mem_available_noise: float
    # Half-open interval [start, end) of Unix times with no samples.
    gap: tuple[int, int] | None = None


def generate_history(
    profiles: Sequence[InstanceProfile], start: int, end: int, step: int, seed: int = 7
) -> SyntheticHistory:
    """Generate deterministic counters and gauges for each profile from start to end.

    The busy fraction follows a daily sine wave plus uniform noise. Each step adds
    ``step * (1 - busy)`` idle seconds per CPU and splits the busy seconds 70/30
    between user and system.
    """
    rng = random.Random(seed)
    history = SyntheticHistory(start=start, end=end, step=step)
    day = 86_400

    for profile in profiles:
        counters = {(cpu, mode): 100_000.0 for cpu in CPUS for mode in CPU_MODES}
        series = InstanceSeries(
            timestamps=[],
            cpu_seconds={key: [] for key in counters},
            mem_total_bytes=profile.mem_total_bytes,
            mem_available_bytes=[],
        )
        for timestamp in range(start, end + 1, step):
            phase = math.sin(2 * math.pi * (timestamp % day) / day)
            for cpu in CPUS:
                busy = profile.cpu_busy_mean + profile.cpu_busy_amplitude * phase
                busy += rng.uniform(-profile.cpu_busy_noise, profile.cpu_busy_noise)
                busy = min(0.99, max(0.01, busy))
                counters[(cpu, "idle")] += step * (1 - busy)
                counters[(cpu, "user")] += step * busy * 0.7
                counters[(cpu, "system")] += step * busy * 0.3

            available = profile.mem_available_mean + profile.mem_available_amplitude * phase
            available += rng.uniform(-profile.mem_available_noise, profile.mem_available_noise)
            available = min(0.99, max(0.01, available))

            # The counters keep running through a gap, as on a host whose exporter
            # was unreachable, but no sample is stored.
            if profile.gap and profile.gap[0] <= timestamp < profile.gap[1]:
                continue
            series.timestamps.append(timestamp)
            for key, value in counters.items():
                series.cpu_seconds[key].append(value)
            series.mem_available_bytes.append(int(profile.mem_total_bytes * available))

        history.instances[profile.instance] = series
    return history


def write_openmetrics(history: SyntheticHistory, path: Path) -> None:
    """Write the history as OpenMetrics text, one metric family after another."""
    with path.open("w") as out:
        out.write("# TYPE node_cpu_seconds counter\n")
        for instance, series in history.instances.items():
            for (cpu, mode), values in series.cpu_seconds.items():
                labels = f'cpu="{cpu}",instance="{instance}",job="node",mode="{mode}"'
                for timestamp, value in zip(series.timestamps, values, strict=True):
                    out.write(f"node_cpu_seconds_total{{{labels}}} {value!r} {timestamp}\n")

        out.write("# TYPE node_memory_MemAvailable_bytes gauge\n")
        for instance, series in history.instances.items():
            labels = f'instance="{instance}",job="node"'
            for timestamp, available in zip(
                series.timestamps, series.mem_available_bytes, strict=True
            ):
                out.write(f"node_memory_MemAvailable_bytes{{{labels}}} {available} {timestamp}\n")

        out.write("# TYPE node_memory_MemTotal_bytes gauge\n")
        for instance, series in history.instances.items():
            labels = f'instance="{instance}",job="node"'
            for timestamp in series.timestamps:
                out.write(
                    f"node_memory_MemTotal_bytes{{{labels}}} {series.mem_total_bytes} {timestamp}\n"
                )
        out.write("# EOF\n")


def backfill(openmetrics_path: Path, data_dir: Path, log_path: Path) -> None:
    """Turn an OpenMetrics file into TSDB blocks in ``data_dir`` with promtool."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        completed = subprocess.run(
            [
                "promtool",
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                "--quiet",
                str(openmetrics_path),
                str(data_dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=False,
        )
    if completed.returncode != 0:
        raise RuntimeError(
            f"promtool failed with exit status {completed.returncode} on {openmetrics_path}:\n"
            f"{log_path.read_text(errors='replace')[-3000:]}"
        )


# The quiet instance's thresholds land on the floor, the busy one's CPU threshold on
# the cap, and the busy one's memory threshold between the two.
QUIET_INSTANCE = "127.0.0.11:9100"
# The dots and the hyphen check that the instance regex is escaped and still matches.
BUSY_INSTANCE = "web-1.lab:9100"
GAP_INSTANCE = "127.0.0.13:9100"
GAP_SECONDS = 86_400


def default_profiles(start: int, end: int) -> list[InstanceProfile]:
    gap_start = start + (end - start) // 2
    gap_start -= gap_start % STEP_SECONDS
    return [
        InstanceProfile(QUIET_INSTANCE, 0.15, 0.08, 0.05, 8 * 2**30, 0.70, 0.05, 0.03),
        InstanceProfile(BUSY_INSTANCE, 0.60, 0.20, 0.15, 16 * 2**30, 0.30, 0.05, 0.04),
        InstanceProfile(
            GAP_INSTANCE,
            0.30,
            0.10,
            0.05,
            4 * 2**30,
            0.50,
            0.10,
            0.05,
            gap=(gap_start, gap_start + GAP_SECONDS),
        ),
    ]


@dataclass
class BackfilledPrometheus:
    """A running Prometheus whose TSDB contains exactly the samples of ``history``."""

    url: str
    history: SyntheticHistory

    @property
    def window_end(self) -> datetime:
        return datetime.fromtimestamp(self.history.end, tz=UTC)


def _query_scalar_count(url: str, query: str, at: int) -> int:
    params: dict[str, str | int] = {"query": query, "time": at}
    response = requests.get(f"{url}/api/v1/query", params=params, timeout=10)
    response.raise_for_status()
    result = response.json()["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


@pytest.fixture(scope="session")
def backfilled_prometheus(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BackfilledPrometheus]:
    """Prometheus serving 7 days at a 60 s step for three instances, one with a 1-day gap."""
    require_binaries("prometheus", "promtool")
    work_dir = tmp_path_factory.mktemp("backfilled-prometheus")

    # Prometheus may drop blocks beyond retention, so the history ends a few
    # minutes before now rather than at a fixed date.
    end = int(time.time()) // STEP_SECONDS * STEP_SECONDS - 5 * STEP_SECONDS
    start = end - HISTORY_DAYS * 86_400 - LEAD_IN_SECONDS
    history = generate_history(default_profiles(start, end), start, end, STEP_SECONDS)

    openmetrics_path = work_dir / "history.om.txt"
    write_openmetrics(history, openmetrics_path)
    data_dir = work_dir / "data"
    backfill(openmetrics_path, data_dir, work_dir / "promtool.log")
    openmetrics_path.unlink()

    server, url = start_prometheus(data_dir, "global:\n  scrape_interval: 1m\n", work_dir)
    try:
        loaded = _query_scalar_count(url, "count(node_memory_MemTotal_bytes)", end)
        if loaded != len(history.instances):
            raise RuntimeError(
                f"Prometheus at {url} sees {loaded} of {len(history.instances)} backfilled "
                f"instances at {end}:\n{server.log_tail()}"
            )
        yield BackfilledPrometheus(url=url, history=history)
    finally:
        server.stop()


@dataclass
class LivePrometheus:
    """A Prometheus that scrapes one real node exporter every second."""

    url: str
    # The instance label of the node exporter's series, 127.0.0.1:<port>.
    instance: str


@pytest.fixture(scope="session")
def live_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePrometheus]:
    """Real prometheus-node-exporter scraped by a real Prometheus, both on 127.0.0.1."""
    require_binaries("prometheus", "prometheus-node-exporter")
    work_dir = tmp_path_factory.mktemp("live-prometheus")

    exporter_port = free_loopback_port()
    instance = f"127.0.0.1:{exporter_port}"
    exporter = ManagedProcess(
        [
            "prometheus-node-exporter",
            f"--web.listen-address={instance}",
            # Only the collectors the baselines read, to keep each scrape short.
            "--collector.disable-defaults",
            "--collector.cpu",
            "--collector.meminfo",
        ],
        work_dir / "node-exporter.log",
    )
    try:
        wait_until_ready(exporter, f"http://{instance}/metrics", STARTUP_TIMEOUT_SECONDS)
        config = (
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "scrape_configs:\n"
            "  - job_name: node\n"
            "    static_configs:\n"
            f"      - targets: ['{instance}']\n"
        )
        data_dir = work_dir / "data"
        data_dir.mkdir()
        server, url = start_prometheus(data_dir, config, work_dir)
        try:
            _wait_for_scrapes(url, server, minimum=5)
            yield LivePrometheus(url=url, instance=instance)
        finally:
            server.stop()
    finally:
        exporter.stop()


def _wait_for_scrapes(url: str, server: ManagedProcess, minimum: int) -> None:
    """Wait until Prometheus has stored ``minimum`` successful scrapes of the node job."""
    query = 'sum_over_time(up{job="node"}[1m])'
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if _query_scalar_count(url, query, int(time.time())) >= minimum:
            return
        time.sleep(0.5)
    raise RuntimeError(
        f"Prometheus at {url} stored fewer than {minimum} scrapes of the node exporter "
        f"in {STARTUP_TIMEOUT_SECONDS} s:\n{server.log_tail()}"
    )


@pytest.fixture
def unreachable_prometheus_url() -> str:
    """URL of a loopback port that nothing listens on (bound, then closed at once)."""
    return f"http://127.0.0.1:{free_loopback_port()}"


@pytest.fixture
def stalled_http_url() -> Iterator[str]:
    """URL of a loopback socket that accepts connections into its backlog and never responds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
