"""Real Prometheus servers on loopback for the baseline tests.

``backfilled_prometheus`` serves 7 days of generated node_exporter and
prometheus-pve-exporter series, written as OpenMetrics and turned into TSDB blocks
with ``promtool tsdb create-blocks-from openmetrics`` (see synthetic_history.py), so
tests can compare query results with numbers they compute from the same samples. ``live_prometheus`` scrapes a real ``prometheus-node-exporter``
every second. Both need Debian's ``prometheus``, ``promtool`` and
``prometheus-node-exporter`` on PATH and skip the test when one is missing.
"""

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from prep_assets_tests.synthetic_history import (
    DownProfile,
    InstanceProfile,
    Profile,
    PveExporterProfile,
    PveGuestProfile,
    SyntheticHistory,
    Wave,
    backfill,
    default_disks,
    default_filesystems,
    default_interfaces,
    generate_history,
    write_openmetrics,
)

logger = logging.getLogger(__name__)

STEP_SECONDS = 60
HISTORY_DAYS = 7
# Extra history before the 7-day window, so that rate(...[5m]) has a full range at
# the first evaluation point of the window.
LEAD_IN_SECONDS = 10 * 60
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
        pytest.fail(
            f"not installed: {', '.join(missing)}: run `make test`, which installs prometheus "
            "and prometheus-node-exporter",
            pytrace=False,
        )


class ManagedProcess:
    """A server process in its own process group, stopped by TERM then KILL."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            self.argv,
            env=env,
            cwd=cwd,
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


# The quiet instance's thresholds land on the floor, the busy one's CPU threshold on
# the cap, and the busy one's memory threshold between the two. The quiet instance
# exports no pressure stall information, and only the busy one swaps.
QUIET_INSTANCE = "127.0.0.11:9100"
# The dots and the hyphen check that the instance regex is escaped and still matches.
BUSY_INSTANCE = "web-1.lab:9100"
GAP_INSTANCE = "127.0.0.13:9100"
# A scrape target whose exporter never responded: only up = 0 is stored.
DOWN_INSTANCE = "127.0.0.14:9100"
PVE_EXPORTER_INSTANCE = "127.0.0.50:9221"
PVE_VM_ID = "qemu/100"
PVE_CT_ID = "lxc/101"
GAP_SECONDS = 86_400
NODE_INSTANCES = (QUIET_INSTANCE, BUSY_INSTANCE, GAP_INSTANCE)


def default_profiles(start: int, end: int) -> list[Profile]:
    gap_start = start + (end - start) // 2
    gap_start -= gap_start % STEP_SECONDS
    return [
        InstanceProfile(
            QUIET_INSTANCE,
            0.15,
            0.08,
            0.05,
            8 * 2**30,
            0.70,
            0.05,
            0.03,
            psi=False,
            disks=default_disks(busy=0.05, queue=0.1),
            filesystems=default_filesystems(root_available=0.6),
            interfaces=default_interfaces(receive=2e5, drops=0.0, errors=0.0),
        ),
        InstanceProfile(
            BUSY_INSTANCE,
            0.60,
            0.20,
            0.15,
            16 * 2**30,
            0.30,
            0.05,
            0.04,
            major_faults_per_second=Wave(40.0, 20.0, 10.0),
            swap_pages_per_second=Wave(5.0, 3.0, 2.0),
            # sda is 99 % busy over the last 10 minutes, above any threshold the rule allows.
            disks=default_disks(busy=0.55, queue=2.0, final_busy=0.99),
            filesystems=default_filesystems(root_available=0.12),
            interfaces=default_interfaces(receive=4e7, drops=0.5, errors=0.05),
        ),
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
            disks=default_disks(busy=0.2, queue=0.5),
            filesystems=default_filesystems(root_available=0.4),
            interfaces=default_interfaces(receive=1e6, drops=0.1, errors=0.0),
        ),
        DownProfile(DOWN_INSTANCE),
        PveExporterProfile(
            PVE_EXPORTER_INSTANCE,
            guests=(
                PveGuestProfile(
                    PVE_VM_ID,
                    Wave(0.25, 0.1, 0.05, high=1.0),
                    4 * 2**30,
                    Wave(0.6, 0.1, 0.05, high=1.0),
                ),
                PveGuestProfile(
                    PVE_CT_ID,
                    Wave(0.05, 0.02, 0.02, high=1.0),
                    2**30,
                    Wave(0.3, 0.05, 0.02, high=1.0),
                ),
                PveGuestProfile(
                    "node/pve1",
                    Wave(0.4, 0.1, 0.05, high=1.0),
                    64 * 2**30,
                    Wave(0.5, 0.1, 0.05, high=1.0),
                ),
            ),
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
    """Prometheus serving 7 days at a 60 s step.

    It contains three node_exporter instances (one with a 1-day gap), a target that was
    always down, and a prometheus-pve-exporter with two guests and a node.
    """
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
        loaded = _query_scalar_count(url, "count(up)", end)
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
            "--collector.loadavg",
            "--collector.pressure",
            "--collector.vmstat",
            "--collector.diskstats",
            "--collector.filesystem",
            "--collector.netdev",
            "--collector.netclass",
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
