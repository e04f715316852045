"""`dagster dev` started in the repo root, with no arguments but host and port, serves the loop.

One pass is materialized into the instance first; then the GraphQL API of
`dagster dev` must list every asset with its dependencies and the `systems`
partitions of the inventory's systems.
"""

import os
import shutil
import sys
from pathlib import Path

import pytest
import requests
from dagster import DagsterInstance

from prep_assets_tests.loop_helpers import INVENTORY, InfraRepo, inventory_text, run_pass
from prep_assets_tests.prometheus_server import (
    ManagedProcess,
    free_loopback_port,
    wait_until_ready,
)
from prep_assets_tests.test_ui_and_daemon import EXPECTED_DEPENDENCIES
from prep_assets_tests.trigger_helpers import local_row, trigger_resources

REPO_ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_SECONDS = 120
ASSET_NODES = """
{
  assetNodes {
    assetKey { path }
    dependencyKeys { path }
    partitionKeys
  }
}
"""


@pytest.fixture
def dagster_dev(tmp_path):
    repo = InfraRepo(tmp_path / "infra")
    repo.write(
        INVENTORY, inventory_text([local_row("alpha", "critical"), local_row("beta", "standard")])
    )
    repo.commit("Document two local systems")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    with DagsterInstance.from_config(str(home)) as instance:
        run_pass(instance, trigger_resources(repo, known_hosts))

    port = free_loopback_port()
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PREP_INFRA_REPO": str(repo.root),
        "PREP_KNOWN_HOSTS": str(known_hosts),
    }
    command = [
        str(Path(sys.executable).with_name("dagster")),
        "dev",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    server = ManagedProcess(command, tmp_path / "dagster-dev.log", env=environment, cwd=REPO_ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(server, f"{url}/server_info", STARTUP_TIMEOUT_SECONDS)
        yield url
    finally:
        server.stop()


def test_dagster_dev_serves_lineage_and_partitions(dagster_dev):
    response = requests.post(f"{dagster_dev}/graphql", json={"query": ASSET_NODES}, timeout=60)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    nodes = {"/".join(node["assetKey"]["path"]): node for node in body["data"]["assetNodes"]}

    assert set(nodes) == set(EXPECTED_DEPENDENCIES)
    for name, expected in EXPECTED_DEPENDENCIES.items():
        dependencies = {"/".join(key["path"]) for key in nodes[name]["dependencyKeys"]}
        assert dependencies == expected, name
    for name in ("access_status", "tool_status", "provisioned_tools", "baselines"):
        assert sorted(nodes[name]["partitionKeys"]) == ["alpha", "beta"], name
