"""The code location as an operator sees it: dagster-webserver and dagster-daemon on 127.0.0.1.

One module fixture checks the systems once in this process, then starts both
servers on a temporary DAGSTER_HOME with the repo's dagster.yaml. The tests read
lineage, partitions, checks, schedules and sensors through /graphql, render pages
in headless Chromium, and wait for the daemon to run the every-minute critical
schedule on its own. The screenshot is saved as test-artifacts/asset-graph.png;
with PREP_UPDATE_SCREENSHOTS=1 it also replaces docs/asset-graph.png.
"""

import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from dagster import AssetSelection, DagsterInstance, materialize

from prep_assets.cli import run_loop
from prep_assets.defs.assets import ALL_ASSETS
from prep_assets_tests.loop_helpers import INVENTORY, InfraRepo, inventory_text
from prep_assets_tests.prometheus_server import (
    ManagedProcess,
    free_loopback_port,
    wait_until_ready,
)
from prep_assets_tests.trigger_helpers import (
    local_infra_repo,
    local_row,
    tiers_text,
    trigger_resources,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "test-artifacts"
STARTUP_TIMEOUT_SECONDS = 90
# The critical schedule ticks at the next full minute; its two runs then take a few
# seconds each to start and finish.
DAEMON_DEADLINE_SECONDS = 150
CHROMIUM_TIMEOUT_SECONDS = 90
STOP_GRACE_SECONDS = 5
WINDOW_SIZE = (1600, 1000)

LOOP_ASSETS = {"change_context", "inventory", "drift_report", "rule_actions", "prep_status_doc"}
PER_SYSTEM_ASSETS = {"access_status", "tool_status", "provisioned_tools", "baselines"}
EXPECTED_DEPENDENCIES = {
    "change_context": set(),
    "inventory": {"change_context"},
    "access_status": {"inventory"},
    "tool_status": {"inventory"},
    "provisioned_tools": {"inventory", "tool_status", "access_status"},
    "baselines": {"inventory", "access_status"},
    "drift_report": {"inventory", "change_context", "access_status", "tool_status"},
    "rule_actions": {"inventory", "drift_report", "access_status", "tool_status"},
    "prep_status_doc": {
        "inventory",
        "change_context",
        "drift_report",
        "rule_actions",
        "access_status",
        "tool_status",
        "provisioned_tools",
        "baselines",
    },
}


@dataclass
class Services:
    url: str
    repo: InfraRepo
    home: Path
    before: dict[str, Any]
    webserver: ManagedProcess
    daemon: ManagedProcess

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


def require_chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: apt-get install chromium")
    return path


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Both servers on a fresh instance whose systems were checked once; the critical tier ticks every minute."""
    work = tmp_path_factory.mktemp("ui")
    repo = local_infra_repo(
        work / "infra",
        [("crit-a", "critical"), ("std-b", "standard"), ("odd-d", "gold")],
        tiers_text(
            [
                ("critical", "* * * * *", "2h"),
                ("standard", "20 3 * * *", "26h"),
                ("low", "40 3 * * 0", "8d"),
            ]
        ),
    )
    home = work / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    known_hosts = work / "known_hosts"
    known_hosts.write_text("")
    # A closed loopback port: baselines report no data at once instead of sampling.
    prometheus_url = f"http://127.0.0.1:{free_loopback_port()}"
    environment = {
        "DAGSTER_HOME": str(home),
        "PREP_INFRA_REPO": str(repo.root),
        "PREP_KNOWN_HOSTS": str(known_hosts),
        "PREP_PROMETHEUS_URL": prometheus_url,
        "PREP_STATE_DIR": "",
    }

    resources = trigger_resources(repo, known_hosts, prometheus_url=prometheus_url)
    with DagsterInstance.from_config(str(home)) as instance:
        assert run_loop(instance, resources=resources), "the first pass failed"
        # Keys are added grouped by tier (crit-a, odd-d, std-b); crit-c comes later, so the
        # critical keys form two ranges.
        rows = [
            local_row("crit-a", "critical"),
            local_row("std-b", "standard"),
            local_row("odd-d", "gold"),
        ]
        repo.write(INVENTORY, inventory_text([*rows, local_row("crit-c", "critical")]))
        discovery = materialize(
            ALL_ASSETS,
            instance=instance,
            resources=resources,
            selection=AssetSelection.assets("change_context", "inventory"),
        )
        assert discovery.success
    before = repo.systems()

    port = free_loopback_port()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        daemon = ManagedProcess(
            [
                str(Path(sys.executable).with_name("dagster-daemon")),
                "run",
                "-m",
                "prep_assets.definitions",
            ],
            work / "daemon.log",
        )
        webserver = ManagedProcess(
            [
                str(Path(sys.executable).with_name("dagster-webserver")),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-m",
                "prep_assets.definitions",
            ],
            work / "webserver.log",
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(webserver, f"{url}/server_info", STARTUP_TIMEOUT_SECONDS)
        yield Services(url, repo, home, before, webserver, daemon)
    finally:
        webserver.stop()
        daemon.stop()
        ARTIFACTS.mkdir(exist_ok=True)
        for process in (webserver, daemon):
            shutil.copyfile(process.log_path, ARTIFACTS / process.log_path.name)


ASSET_NODES = """
{
  assetNodes {
    assetKey { path }
    groupName
    description
    dependencyKeys { path }
    isPartitioned
    partitionDefinition { type name }
    partitionKeys
    internalFreshnessPolicy { __typename ... on TimeWindowFreshnessPolicy { failWindowSeconds } }
    assetChecksOrError { __typename ... on AssetChecks { checks { name description } } }
  }
}
"""


def asset_nodes(services: Services) -> dict[str, dict[str, Any]]:
    nodes = services.graphql(ASSET_NODES)["assetNodes"]
    return {"/".join(node["assetKey"]["path"]): node for node in nodes}


def test_graphql_lineage(services):
    nodes = asset_nodes(services)

    assert set(nodes) == LOOP_ASSETS | PER_SYSTEM_ASSETS
    for name, expected in EXPECTED_DEPENDENCIES.items():
        dependencies = {"/".join(key["path"]) for key in nodes[name]["dependencyKeys"]}
        assert dependencies == expected, name
    for name in LOOP_ASSETS:
        assert nodes[name]["groupName"] == "prep_loop", name
    for name in PER_SYSTEM_ASSETS:
        assert nodes[name]["groupName"] == "prep_per_system", name
    for name, node in nodes.items():
        assert node["description"] and len(node["description"]) > 30, name


def test_graphql_partitions(services):
    nodes = asset_nodes(services)

    for name in PER_SYSTEM_ASSETS:
        assert nodes[name]["isPartitioned"], name
        assert nodes[name]["partitionDefinition"] == {"type": "DYNAMIC", "name": "systems"}, name
        assert nodes[name]["partitionKeys"] == ["crit-a", "odd-d", "std-b", "crit-c"], name
    for name in LOOP_ASSETS:
        assert not nodes[name]["isPartitioned"], name


def test_graphql_checks_and_freshness_policies(services):
    nodes = asset_nodes(services)

    for name in PER_SYSTEM_ASSETS:
        checks = nodes[name]["assetChecksOrError"]["checks"]
        assert [check["name"] for check in checks] == ["fresh_for_tier"], name
        assert "tiers.md" in checks[0]["description"]
        assert nodes[name]["internalFreshnessPolicy"] is None, name
    for name in LOOP_ASSETS:
        policy = nodes[name]["internalFreshnessPolicy"]
        assert policy == {
            "__typename": "TimeWindowFreshnessPolicy",
            "failWindowSeconds": 26 * 3600,
        }, name


REPOSITORY = {
    "repositoryName": "__repository__",
    "repositoryLocationName": "prep_assets.definitions",
}


def test_graphql_schedules_and_sensors(services):
    data = services.graphql(
        """
        query ($repository: RepositorySelector!) {
          schedulesOrError(repositorySelector: $repository) {
            ... on Schedules { results { name cronSchedule scheduleState { status } } }
          }
          sensorsOrError(repositorySelector: $repository) {
            ... on Sensors { results { name minIntervalSeconds sensorState { status } } }
          }
        }
        """,
        {"repository": REPOSITORY},
    )

    schedules = {
        entry["name"]: (entry["cronSchedule"], entry["scheduleState"]["status"])
        for entry in data["schedulesOrError"]["results"]
    }
    assert schedules == {
        "tier_critical": ("* * * * *", "RUNNING"),
        "tier_standard": ("20 3 * * *", "RUNNING"),
        "tier_low": ("40 3 * * 0", "RUNNING"),
    }
    sensors = {
        entry["name"]: (entry["minIntervalSeconds"], entry["sensorState"]["status"])
        for entry in data["sensorsOrError"]["results"]
    }
    assert sensors == {
        "stale_systems": (60, "RUNNING"),
        "infra_repo_commits": (60, "RUNNING"),
        "prometheus_alerts": (60, "RUNNING"),
        "rules_sensor": (60, "RUNNING"),
    }


def chromium(arguments: list[str], url: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium once with a new profile; stopped with the test if it hangs."""
    profile = tempfile.mkdtemp(prefix="prep-chromium-")
    command = [
        require_chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-pings",
        "--disable-domain-reliability",
        # Every name but the loopback address fails to resolve, and there is no proxy.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--no-proxy-server",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}",
        # Virtual time runs the page's scripts until it settles, up to 20 s of page time.
        "--virtual-time-budget=20000",
        *arguments,
        url,
    ]
    try:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=CHROMIUM_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            stop_process_group(process)
            raise
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def stop_process_group(process: subprocess.Popen[str]) -> None:
    """Send SIGTERM to the group that ``process`` leads, then SIGKILL after a grace period.

    Chromium's renderer and GPU processes are in the group, so signalling only
    the browser process could leave them running.
    """
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.communicate(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_metadata_table_and_checks_render(services):
    inventory_page = chromium(["--dump-dom"], services.url + "/assets/inventory")
    assert inventory_page.returncode == 0, inventory_page.stderr[-2000:]
    assert "<table" in inventory_page.stdout, "the problem table of the inventory is not rendered"
    assert "unknown tier 'gold'" in inventory_page.stdout.replace("&#x27;", "'").replace(
        "&#39;", "'"
    )

    checks_page = chromium(["--dump-dom"], services.url + "/assets/tool_status?view=checks")
    assert checks_page.returncode == 0, checks_page.stderr[-2000:]
    assert "fresh_for_tier" in checks_page.stdout


RUNS = """
query {
  runsOrError(filter: {tags: [{key: "prep/tier", value: "critical"}]}) {
    ... on Runs { results { runId status tags { key value } assetSelection { path } } }
  }
}
"""


def test_daemon_runs_critical_schedule(services):
    deadline = time.monotonic() + DAEMON_DEADLINE_SECONDS
    after: dict[str, Any] = services.before
    finished: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = services.graphql(RUNS)["runsOrError"]["results"]
        failed = [run for run in runs if run["status"] in ("FAILURE", "CANCELED")]
        assert not failed, f"scheduled runs failed: {failed}; see test-artifacts/daemon.log"
        finished = [run for run in runs if run["status"] == "SUCCESS"]
        if len(finished) >= 2:
            after = services.repo.systems()
            break
        time.sleep(2)
    assert len(finished) >= 2, (
        f"no two successful critical runs within {DAEMON_DEADLINE_SECONDS} s: {finished}; "
        f"daemon log:\n{services.daemon.log_tail(40)}"
    )

    tags = [{tag["key"]: tag["value"] for tag in run["tags"]} for run in finished]
    ranges = sorted(
        (tag["dagster/asset_partition_range_start"], tag["dagster/asset_partition_range_end"])
        for tag in tags
    )
    assert ranges[:2] == [("crit-a", "crit-a"), ("crit-c", "crit-c")]
    before = services.before
    assert (
        after["crit-a"]["last_checked"]["tool_status"]
        > before["crit-a"]["last_checked"]["tool_status"]
    )
    assert "crit-c" not in before, "crit-c was registered after the last status document"
    assert after["crit-c"]["last_checked"]["tool_status"] is not None
    assert after["std-b"]["last_checked"] == before["std-b"]["last_checked"]

    executions = services.graphql(
        """
        {
          assetCheckExecutions(assetKey: {path: ["tool_status"]}, checkName: "fresh_for_tier", limit: 5) {
            status
            runId
          }
        }
        """
    )["assetCheckExecutions"]
    run_ids = {run["runId"] for run in finished}
    in_runs = [execution for execution in executions if execution["runId"] in run_ids]
    assert in_runs, f"the scheduled runs did not execute the freshness check: {executions}"
    # Newest first: the run over crit-a fails the check, because crit-c is not checked
    # yet; the run over crit-c that follows it passes.
    assert [execution["status"] for execution in in_runs[:2]] == ["SUCCEEDED", "FAILED"]


ALERT_TICKS = """
query ($sensor: SensorSelector!) {
  sensorOrError(sensorSelector: $sensor) {
    ... on Sensor {
      sensorState { ticks(limit: 10) { skipReason logEvents { events { message level } } } }
    }
  }
}
"""


def test_alert_history_in_sensor_ticks(services):
    """The first stale_systems tick ran before crit-c was ever checked, so it alerted for crit-c."""
    sensor = {**REPOSITORY, "sensorName": "stale_systems"}

    ticks = services.graphql(ALERT_TICKS, {"sensor": sensor})["sensorOrError"]["sensorState"][
        "ticks"
    ]

    messages = [event["message"] for tick in ticks for event in tick["logEvents"]["events"]]
    alerts = [message for message in messages if message.startswith("alert: STALE: crit-c")]
    assert len(alerts) == 1, messages
    assert "crit-a" not in " ".join(message for message in messages if "STALE" in message)
    assert any("alerts logged (no webhook set)" in (tick["skipReason"] or "") for tick in ticks)


GRAPH_PAGE = "/assets/prep_status_doc?view=lineage&lineageScope=upstream&lineageDepth=9"


def test_asset_graph_screenshot(services):
    """Runs after the daemon test, so the picture shows every system checked."""
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "asset-graph.png"
    screenshot.unlink(missing_ok=True)

    result = chromium([f"--screenshot={screenshot}"], services.url + GRAPH_PAGE)

    assert result.returncode == 0, result.stderr[-2000:]
    assert png_size(screenshot) == WINDOW_SIZE
    # A blank or error page compresses to a few kB; the rendered graph is far larger.
    assert screenshot.stat().st_size > 40_000, screenshot.stat().st_size
    if os.environ.get("PREP_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(screenshot, REPO_ROOT / "docs" / "asset-graph.png")

    dom = chromium(["--dump-dom"], services.url + GRAPH_PAGE)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for name in LOOP_ASSETS | PER_SYSTEM_ASSETS | {"prep_loop", "prep_per_system"}:
        assert name in dom.stdout, f"{name} is not on the rendered lineage page"
