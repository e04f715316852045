"""Drift from live Proxmox discovery between two passes, judged against the infra repo's commits.

Each pass runs the inventory and drift steps of the pipeline against a fakepve
cluster on 127.0.0.1 and a real git repo. No system is contacted.
"""

from datetime import UTC, datetime

import pytest

from prep_assets import pipeline
from prep_assets_tests.discovery.conftest import discovery_text, proxmox_row
from prep_assets_tests.loop_helpers import InfraRepo, credentials_text

INVENTORY = "docs/infrastructure/system-inventory.md"
DISCOVERY = "docs/reference/discovery.md"
WINDOW = "2000-01-01T00:00Z/2100-01-01T00:00Z"


def inventory_text(rows: list[str]) -> str:
    header = (
        "# System inventory\n\n| Name | Type | Tier | Address | Access | VMID | Node | Credentials |"
        "\n|---|---|---|---|---|---|---|---|\n"
    )
    return header + "".join(row + "\n" for row in rows)


DOCUMENTED = [
    "| pve1 | proxmox-host | critical | 127.0.0.1 | none | | | |",
    "| pve2 | proxmox-host | critical | 127.0.0.1 | none | | | |",
    "| web1 | qemu | critical | | qm-api | 101 | pve1 | pve-token |",
    "| app1 | qemu | standard | | qm-api | 103 | pve1 | pve-token |",
]


class Passes:
    """Runs the git review, inventory and drift steps, carrying the state between passes."""

    def __init__(self, repo: InfraRepo) -> None:
        self.repo = repo
        self.head: str | None = None
        self.report: dict | None = None
        self.inventory: dict = {}

    def run(self) -> list[dict]:
        now = datetime.now(UTC)
        changes = pipeline.review_git(self.repo.root, self.head, now, 30)
        self.inventory = pipeline.read_inventory(self.repo.root)
        self.report = pipeline.drift(self.report, self.inventory, changes, {}, {}, now)
        self.head = changes["head_sha"]
        return self.report["rows"]


@pytest.fixture
def homelab(start_pve, tmp_path, monkeypatch):
    cluster = start_pve("homelab")
    pve = cluster.pve
    pve.add_node("pve2")
    pve.add_vm(101, "web1", node="pve1", status="running")
    pve.add_ct(102, "db1", node="pve2", status="running")
    pve.add_vm(103, "app1", node="pve1", status="running")
    pve.add_vm(104, "batch", node="pve2", status="stopped")
    monkeypatch.setenv("PREP_TEST_PVE_TOKEN", cluster.secret)

    repo = InfraRepo(tmp_path / "infra")
    repo.write(INVENTORY, inventory_text(DOCUMENTED))
    repo.write(
        "docs/reference/credentials-map.md",
        credentials_text(["| pve-token | api-token | env:PREP_TEST_PVE_TOKEN |"]),
    )
    repo.write(DISCOVERY, discovery_text(proxmox=[proxmox_row("homelab", cluster)]))
    repo.commit("Document the homelab and its Proxmox cluster")
    passes = Passes(repo)
    assert passes.run() == []
    return cluster, repo, passes


def change_guests(cluster) -> None:
    """Add a VM, destroy a container, migrate a VM and rename one."""
    pve = cluster.pve
    pve.add_vm(105, "new-vm", node="pve1", status="running")
    pve.cts.remove(pve.ct(102))
    pve.vm(101).node = "pve2"
    renamed = pve.vm(103)
    renamed.name = "app-1"
    renamed.config["name"] = "app-1"


def rows_by_system(rows: list[dict]) -> dict[str, dict]:
    return {row["system"]: row for row in rows}


def test_first_pass_merges_docs_and_cluster(homelab):
    cluster, repo, passes = homelab

    discovery = passes.inventory["discovery"]
    states = {name: entry["state"] for name, entry in discovery["systems"].items()}
    assert states == {
        "pve1": "matched",
        "pve2": "matched",
        "web1": "matched",
        "app1": "matched",
        "db1": "undocumented",
        "batch": "undocumented",
    }
    assert discovery["systems"]["web1"]["matched_by"] == {"proxmox:homelab/qemu/101": "vmid+node"}
    assert discovery["systems"]["pve1"]["matched_by"] == {"proxmox:homelab/node/pve1": "name"}
    systems = {system["name"]: system for system in passes.inventory["systems"]}
    assert systems["db1"]["access"] == "pct"
    assert systems["db1"]["jump"] == "pve2"
    assert systems["batch"]["access"] == "none"
    assert systems["web1"]["sources"]["node"] == "proxmox:homelab"
    assert systems["web1"]["sources"]["tier"] == "docs"
    assert discovery["sources"][0]["api_calls"] == 2


def test_four_changes_make_four_unexplained_rows(homelab):
    cluster, repo, passes = homelab
    change_guests(cluster)

    rows = passes.run()

    assert [(row["system"], row["kind"], row["before"], row["after"]) for row in rows] == [
        ("app1", "renamed", "app1", "app-1"),
        ("db1", "system_removed", "present", "absent"),
        ("new-vm", "system_added", "absent", "present"),
        ("web1", "moved", "pve1", "pve2"),
    ]
    assert {row["verdict"] for row in rows} == {"UNEXPECTED"}
    assert all(row["commit_sha"] is None for row in rows)
    by_system = rows_by_system(rows)
    assert "Proxmox cluster homelab" in by_system["db1"]["reason"]
    assert "undocumented system" in by_system["new-vm"]["reason"]


def test_four_changes_explained_by_commits(homelab):
    cluster, repo, passes = homelab
    change_guests(cluster)
    added = repo.commit("Create new-vm for the test runners\n\nNew-System: new-vm\n")
    removed = repo.commit("Destroy db1\n\nDecommission: db1\n")
    maintenance = repo.commit(f"Drain pve1 for a firmware update\n\nMaintenance: web1 {WINDOW}\n")
    text = (repo.root / INVENTORY).read_text()
    repo.write(INVENTORY, text.replace("| app1 | qemu | standard |", "| app1 | qemu | high |"))
    renamed = repo.commit("Raise the tier of app1, which Proxmox now calls app-1")

    rows = passes.run()

    by_system = rows_by_system(rows)
    kinds = [(row["system"], row["kind"]) for row in rows]
    assert sorted(kinds) == [
        ("app1", "renamed"),
        ("app1", "tier_changed"),
        ("db1", "system_removed"),
        ("new-vm", "system_added"),
        ("web1", "moved"),
    ]
    expected = {
        "new-vm": added,
        "db1": removed,
        "web1": maintenance,
    }
    for system, sha in expected.items():
        row = by_system[system]
        assert row["verdict"] == "EXPECTED", row
        assert sha.startswith(row["commit_sha"]), row
    app_rows = [row for row in rows if row["system"] == "app1"]
    for row in app_rows:
        assert row["verdict"] == "EXPECTED", row
        assert renamed.startswith(row["commit_sha"]), row
    assert by_system["web1"]["window"] == "2000-01-01T00:00:00Z/2100-01-01T00:00:00Z"


def test_renamed_in_docs_too_is_one_row(homelab):
    cluster, repo, passes = homelab
    guest = cluster.pve.vm(103)
    guest.name = "app-1"
    guest.config["name"] = "app-1"
    text = (repo.root / INVENTORY).read_text()
    repo.write(INVENTORY, text.replace("| app1 |", "| app-1 |"))
    commit = repo.commit("Rename app1 to app-1")

    rows = passes.run()

    assert [(row["system"], row["kind"], row["before"], row["after"]) for row in rows] == [
        ("app-1", "renamed", "app1", "app-1")
    ]
    assert rows[0]["verdict"] == "EXPECTED"
    assert commit.startswith(rows[0]["commit_sha"])


def test_status_change_and_recovery(homelab):
    cluster, repo, passes = homelab
    cluster.pve.vm(103).status = "stopped"

    stopped = passes.run()
    cluster.pve.vm(103).status = "running"
    started = passes.run()

    assert [(r["system"], r["kind"], r["after"], r["verdict"]) for r in stopped] == [
        ("app1", "status_changed", "stopped", "UNEXPECTED")
    ]
    assert [(r["system"], r["kind"], r["after"], r["verdict"]) for r in started] == [
        ("app1", "status_changed", "running", "EXPECTED")
    ]


def test_down_cluster_reports_nothing_removed(homelab, monkeypatch):
    cluster, repo, passes = homelab
    monkeypatch.setenv("PREP_TEST_PVE_TOKEN", "revoked-token")

    during = passes.run()
    discovery = passes.inventory["discovery"]
    names_during = {system["name"] for system in passes.inventory["systems"]}
    carried = set(passes.report["snapshot"]["systems"])
    monkeypatch.setenv("PREP_TEST_PVE_TOKEN", cluster.secret)
    after = passes.run()

    assert during == []
    (source,) = discovery["sources"]
    assert (source["state"], source["error_kind"]) == ("down", "auth_failed")
    assert discovery["unverified"] == ["app1", "web1"]
    # The documented systems stay in the inventory; the undocumented guests are known
    # only to the cluster, so the stored snapshot keeps them until it answers again.
    assert names_during == {"pve1", "pve2", "web1", "app1"}
    assert carried == {"pve1", "pve2", "web1", "app1", "db1", "batch"}
    assert passes.report["sources_down"] == []
    assert after == []


def test_change_while_down_shows_after_recovery(homelab, monkeypatch):
    cluster, repo, passes = homelab
    monkeypatch.setenv("PREP_TEST_PVE_TOKEN", "revoked-token")
    assert passes.run() == []
    cluster.pve.cts.remove(cluster.pve.ct(102))
    monkeypatch.setenv("PREP_TEST_PVE_TOKEN", cluster.secret)

    rows = passes.run()

    assert [(row["system"], row["kind"]) for row in rows] == [("db1", "system_removed")]


@pytest.mark.parametrize("configuration", ["disabled", "removed"])
def test_turned_off_cluster_reports_nothing(homelab, configuration):
    cluster, repo, passes = homelab
    text = "# Discovery\n"
    if configuration == "disabled":
        text += (
            "\n## Proxmox\n\n| Cluster | Endpoint | Credentials | Enabled |\n|---|---|---|---|\n"
            f"| homelab | {cluster.endpoint} | pve-token | no |\n"
        )
    repo.write(DISCOVERY, text)
    repo.commit("Stop discovering the homelab cluster")

    rows = passes.run()

    assert rows == []
    names = {system["name"] for system in passes.inventory["systems"]}
    assert names == {"pve1", "pve2", "web1", "app1"}
