"""The whole PREP loop with live discovery: fakepve clusters, unreadable ones, and a real git repo."""

import json

import pytest
from dagster import AssetKey, DagsterInstance

from prep_assets.defs.partitions import SYSTEMS_PARTITIONS
from prep_assets_tests.discovery.conftest import TOKEN_ID, discovery_text, proxmox_row
from prep_assets_tests.loop_helpers import (
    INVENTORY,
    STATUS_MARKDOWN,
    InfraRepo,
    credentials_text,
    inventory_text,
    loop_resources,
    run_pass,
)

TIMEOUT = 3.0


@pytest.fixture
def loop(start_pve, closed_port, silent_port, tmp_path, monkeypatch):
    """One cluster with an undocumented running VM, and three that discovery cannot read.

    "gone" refuses connections, "silent" never answers, and "rejected" is the working
    cluster queried with a wrong token.
    """
    cluster = start_pve("homelab")
    ghost = cluster.pve.add_vm(201, "ghost", node="pve1", status="running")
    ghost.agent = {
        "interfaces": [
            {
                "name": "eth0",
                "ip-addresses": [{"ip-address": "127.0.20.1", "ip-address-type": "ipv4"}],
            }
        ]
    }
    # The whole token in one secret, as the qm-api transport reads it too.
    monkeypatch.setenv("PREP_TEST_PVE_TOKEN", f"{TOKEN_ID}={cluster.secret}")
    monkeypatch.setenv("PREP_TEST_BAD_TOKEN", f"{TOKEN_ID}=revoked-secret")

    repo = InfraRepo(tmp_path / "infra")
    rows = [
        "| workstation | linux | critical | 127.0.0.1 | | local | | |",
        # The node's API is the fake cluster's, on loopback; nothing else contacts it.
        "| pve1 | proxmox-host | critical | 127.0.0.1 | | none | | |",
    ]
    repo.write(INVENTORY, inventory_text(rows))
    repo.write(
        "docs/reference/credentials-map.md",
        credentials_text(
            [
                "| pve-token | api-token | env:PREP_TEST_PVE_TOKEN |",
                "| bad-token | api-token | env:PREP_TEST_BAD_TOKEN |",
            ]
        ),
    )
    repo.write(
        "docs/reference/discovery.md",
        discovery_text(
            proxmox=[
                proxmox_row("homelab", cluster, lookups=5, token_id=""),
                proxmox_row("gone", endpoint=f"127.0.0.1:{closed_port}", token_id=""),
                proxmox_row(
                    "silent", endpoint=f"127.0.0.1:{silent_port}", token_id="", timeout=1.0
                ),
                proxmox_row("rejected", cluster, credentials="bad-token", token_id=""),
            ]
        ),
    )
    repo.commit("Document the workstation and the Proxmox clusters")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    (tmp_path / "dagster_home").mkdir()
    instance = DagsterInstance.local_temp(str(tmp_path / "dagster_home"))
    yield repo, instance, loop_resources(repo, known_hosts, TIMEOUT)
    instance.dispose()


def test_undocumented_vm_is_partitioned_and_checked(loop):
    repo, instance, resources = loop

    run_pass(instance, resources)

    partitions = set(instance.get_dynamic_partitions(SYSTEMS_PARTITIONS.name))
    assert "ghost" in partitions
    assert "ghost" in instance.get_materialized_partitions(AssetKey("access_status"))
    status = repo.status()
    assert status["discovery"]["undocumented"] == ["ghost"]
    ghost = repo.systems()["ghost"]
    assert ghost["type"] == "qemu"
    assert ghost["address"] == "127.0.20.1"
    assert ghost["access_method"] == "qm-api"
    # The access check ran over qm-api and reported a state, whatever the transport gave.
    assert ghost["access"] is not None
    assert ghost["access"]["method"] == "qm-api"
    assert ghost["access"]["state"] != "not_contacted"
    assert ghost["last_checked"]["access_status"] is not None


def test_down_cluster_is_a_discovery_error(loop, closed_port):
    repo, instance, resources = loop

    run_pass(instance, resources)

    sources = {source["key"]: source for source in repo.status()["discovery"]["sources"]}
    assert sources["proxmox:homelab"]["state"] == "up"
    gone = sources["proxmox:gone"]
    assert (gone["state"], gone["error_kind"]) == ("down", "unreachable")
    assert gone["endpoint"] == f"127.0.0.1:{closed_port}"
    silent = sources["proxmox:silent"]
    assert (silent["state"], silent["error_kind"]) == ("down", "timed_out")
    rejected = sources["proxmox:rejected"]
    assert (rejected["state"], rejected["error_kind"]) == ("down", "auth_failed")
    assert "revoked-secret" not in json.dumps(repo.status())
    # Documented systems and the other cluster's guests are still checked.
    systems = repo.systems()
    assert systems["workstation"]["access"]["state"] == "reachable"
    assert "ghost" in systems
    markdown = (repo.root / STATUS_MARKDOWN).read_text()
    assert "## Discovery errors" in markdown
    assert f"| proxmox:gone | 127.0.0.1:{closed_port} | unreachable |" in markdown
    assert "| proxmox:silent |" in markdown
    assert "| proxmox:rejected |" in markdown
    assert "- Found but not in the inventory: ghost" in markdown


def test_second_pass_reports_no_drift(loop):
    repo, instance, resources = loop
    run_pass(instance, resources)

    run_pass(instance, resources)

    removed = [row for row in repo.status()["drift"] if row["kind"] == "system_removed"]
    assert removed == []
