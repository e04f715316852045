"""The whole PREP loop against real OpenSSH test hosts, a real git repo and a Dagster instance."""

import json
import logging
import time
from pathlib import Path

import pytest
from dagster import AssetKey

from prep_assets.defs.partitions import SYSTEMS_PARTITIONS
from prep_assets_tests.dagster_instances import STORAGES
from prep_assets_tests.loop_helpers import (
    INVENTORY,
    STATUS_MARKDOWN,
    TOOLS_MAP,
    InfraRepo,
    credentials_text,
    inventory_text,
    loop_resources,
    run_pass,
)
from prep_assets_tests.sshhosts import HostKind

PASSPHRASE = "correct horse battery staple 4417"
TIMEOUT = 3.0


def ssh_row(name, host, credentials="test-key"):
    return f"| {name} | linux | standard | {host.address} | {host.port} | ssh | {host.user} | {credentials} |"


# Tests marked with this run twice: on the SQLite instance of dagster.yaml and on the
# PostgreSQL instance of dagster-postgres.yaml. The others use SQLite only.
on_both_storages = pytest.mark.parametrize("loop", STORAGES, indirect=True)


@pytest.fixture
def loop(request, tmp_path, ssh_hosts, start_ssh_host, monkeypatch, make_instance):
    """An infra repo describing one system per kind of test host, with three bad rows."""
    secret_key = ssh_hosts.create_client_key(f"secret_{tmp_path.name}", passphrase=PASSPHRASE)
    monkeypatch.setenv("PREP_TEST_PASSPHRASE", PASSPHRASE)
    suffix = tmp_path.name
    hosts = {
        "full": start_ssh_host(HostKind.WITH_SYSSTAT, name=f"e2e-full-{suffix}"),
        "bare": start_ssh_host(HostKind.WITHOUT_SYSSTAT, name=f"e2e-bare-{suffix}"),
        "secret": start_ssh_host(
            HostKind.WITH_SYSSTAT, name=f"e2e-secret-{suffix}", client_key=secret_key
        ),
        "retiring": start_ssh_host(HostKind.WITH_SYSSTAT, name=f"e2e-retiring-{suffix}"),
        "maintained": start_ssh_host(HostKind.WITH_SYSSTAT, name=f"e2e-maintained-{suffix}"),
        "flaky": start_ssh_host(HostKind.WITH_SYSSTAT, name=f"e2e-flaky-{suffix}"),
    }
    repo = InfraRepo(tmp_path / "infra")
    rows = [
        "| local-1 | linux | critical | 127.0.0.1 | | local | | |",
        ssh_row("ssh-full", hosts["full"]),
        ssh_row("ssh-bare", hosts["bare"]),
        ssh_row("ssh-secret", hosts["secret"], credentials="secret-key"),
        ssh_row("ssh-closed", ssh_hosts["closed_port"]),
        ssh_row("ssh-rejected", ssh_hosts["rejects_key"]),
        ssh_row("ssh-wrong-key", ssh_hosts["wrong_host_key"]),
        ssh_row("ssh-silent", ssh_hosts["silent"]),
        ssh_row("retiring", hosts["retiring"]),
        ssh_row("maintained", hosts["maintained"]),
        ssh_row("flaky", hosts["flaky"]),
        # Three bad rows: a duplicate name, an unknown access method, no name.
        ssh_row("ssh-full", hosts["bare"]),
        "| telnet-box | linux | low | 127.0.0.1 | 23 | telnet | root | |",
        "|  | linux | low | 127.0.0.1 | 22 | ssh | root | |",
    ]
    unmanaged = ["| modem | appliance | low | | | none | | |"]
    repo.write(INVENTORY, inventory_text(rows, unmanaged))
    repo.write("docs/reference/tools-map.md", TOOLS_MAP)
    repo.write(
        "docs/reference/credentials-map.md",
        credentials_text(
            [
                f"| test-key | ssh-key | file:{ssh_hosts.client_key.private_key_path} |",
                f"| secret-key | ssh-key | file:{secret_key.private_key_path} |",
                "| secret-key-passphrase | ssh-key-passphrase | env:PREP_TEST_PASSPHRASE |",
            ]
        ),
    )
    repo.commit("Document the test systems")
    instance = make_instance(getattr(request, "param", "sqlite"), tmp_path / "dagster_home")
    resources = loop_resources(repo, ssh_hosts.known_hosts_path, TIMEOUT)
    yield repo, hosts, instance, resources, ssh_hosts, secret_key


def tool_states(entry):
    return {tool["command"]: tool["state"] for tool in entry["tools"]}


@on_both_storages
def test_loop_reports_each_system_exactly(loop, caplog):
    repo, hosts, instance, resources, ssh_hosts, secret_key = loop
    caplog.set_level(logging.DEBUG)

    started = time.monotonic()
    run_pass(instance, resources)
    elapsed = time.monotonic() - started

    systems = repo.systems()
    access = {name: entry["access"]["state"] for name, entry in systems.items()}
    assert access == {
        "local-1": "reachable",
        "ssh-full": "reachable",
        "ssh-bare": "reachable",
        "ssh-secret": "reachable",
        "ssh-closed": "unreachable",
        "ssh-rejected": "auth_failed",
        "ssh-wrong-key": "host_key_mismatch",
        "ssh-silent": "timed_out",
        "retiring": "reachable",
        "maintained": "reachable",
        "flaky": "reachable",
        "modem": "not_contacted",
    }

    assert tool_states(systems["ssh-full"]) == {
        "iostat": "installed",
        "mpstat": "installed",
        "vmstat": "installed",
        "bpftrace": "missing",
    }
    iostat = next(tool for tool in systems["ssh-full"]["tools"] if tool["command"] == "iostat")
    assert iostat["path"] == str(hosts["full"].bin_dir / "iostat")
    assert tool_states(systems["ssh-bare"]) == {
        "iostat": "missing",
        "mpstat": "missing",
        "vmstat": "installed",
        "bpftrace": "missing",
    }
    assert tool_states(systems["ssh-secret"])["iostat"] == "installed"
    for name in ("ssh-closed", "ssh-rejected", "ssh-wrong-key", "ssh-silent"):
        assert set(tool_states(systems[name]).values()) == {"unknown"}, name
    assert systems["modem"]["tools"] == []

    # A host that accepts TCP and never responds costs its timeout, plus scheduling slack.
    silent = systems["ssh-silent"]["access"]
    assert TIMEOUT * 1000 <= silent["duration_ms"] <= (TIMEOUT + 1.5) * 1000, silent
    for name in ("ssh-closed", "ssh-rejected", "ssh-wrong-key"):
        assert systems[name]["access"]["duration_ms"] <= (TIMEOUT + 1.5) * 1000, name
    # The systems run concurrently, so one slow system does not add to the others.
    assert elapsed < 60, f"the pass took {elapsed:.1f} s"

    for name, entry in systems.items():
        assert entry["last_checked"]["tool_status"] is not None, name
        assert entry["last_checked"]["access_status"] is not None, name

    markdown = (repo.root / STATUS_MARKDOWN).read_text()
    assert "| ssh-wrong-key | linux | standard | ssh | HOST KEY MISMATCH |" in markdown


def test_loop_reports_bad_rows_and_checks_the_rest(loop):
    repo, hosts, instance, resources, ssh_hosts, secret_key = loop

    run_pass(instance, resources)

    problems = repo.status()["problems"]
    assert [(problem["file"], problem["line"]) for problem in problems] == [
        (INVENTORY, 18),
        (INVENTORY, 19),
        (INVENTORY, 20),
    ]
    assert "ssh-full" in problems[0]["reason"]
    assert "line 8" in problems[0]["reason"]
    assert "telnet" in problems[1]["reason"]
    assert "name" in problems[2]["reason"]
    assert repo.systems()["ssh-full"]["access"]["state"] == "reachable"
    assert "telnet-box" not in repo.systems()


@on_both_storages
def test_loop_registers_partitions(loop):
    repo, hosts, instance, resources, ssh_hosts, secret_key = loop

    run_pass(instance, resources)

    partitions = set(instance.get_dynamic_partitions(SYSTEMS_PARTITIONS.name))
    assert partitions == set(repo.systems())
    materialized = instance.get_materialized_partitions(AssetKey("tool_status"))
    assert materialized == partitions


@on_both_storages
def test_drift_after_decommission_and_outage(loop):
    repo, hosts, instance, resources, ssh_hosts, secret_key = loop
    run_pass(instance, resources)
    first_head = repo.repo.head.commit.hexsha
    assert repo.status()["drift"] == []

    text = (repo.root / INVENTORY).read_text()
    retiring_row = next(line for line in text.splitlines() if line.startswith("| retiring "))
    repo.write(INVENTORY, text.replace(retiring_row + "\n", ""))
    decommission = repo.commit("Retire the retiring host\n\nDecommission: retiring\n")
    window = "2000-01-01T00:00Z/2100-01-01T00:00Z"
    repo.write("docs/infrastructure/maintenance-log.md", "# Maintenance\n\nmaintained: disk swap\n")
    maintenance = repo.commit(f"Swap the disk of maintained\n\nMaintenance: maintained {window}\n")
    ssh_hosts.stop_host(hosts["maintained"].name)
    ssh_hosts.stop_host(hosts["flaky"].name)

    run_pass(instance, resources)

    # The second git review reads only the commits since the first pass.
    changes = repo.status()["changes"]
    assert changes["since"] == first_head
    assert changes["commits"] == 2
    assert {(event["kind"], event["system"]) for event in changes["events"]} >= {
        ("decommission", "retiring"),
        ("maintenance", "maintained"),
    }

    rows = {(row["system"], row["kind"]): row for row in repo.status()["drift"]}
    removed = rows[("retiring", "system_removed")]
    assert removed["verdict"] == "EXPECTED"
    assert removed["commit_sha"] == decommission[: len(removed["commit_sha"])]
    maintained = rows[("maintained", "access_changed")]
    assert maintained["verdict"] == "EXPECTED"
    assert maintained["commit_sha"] == maintenance[: len(maintained["commit_sha"])]
    flaky = rows[("flaky", "access_changed")]
    assert flaky["verdict"] == "UNEXPECTED"
    assert flaky["after"] == "unreachable"
    assert set(rows) == {
        ("retiring", "system_removed"),
        ("maintained", "access_changed"),
        ("flaky", "access_changed"),
    }

    systems = repo.systems()
    assert systems["retiring"]["in_inventory"] is False
    actions = {(action["system"], action["action"]) for action in repo.status()["actions"]}
    assert ("flaky", "investigate") in actions
    assert ("retiring", "record") in actions
    # The maintained host is down inside its window: recorded, not sent for investigation.
    assert ("maintained", "investigate") not in actions
    (maintained_action,) = [a for a in repo.status()["actions"] if a["system"] == "maintained"]
    assert maintained_action["action"] == "record"
    assert maintained_action["commit"] == maintenance[: len(maintained_action["commit"])]
    assert (
        "maintenance window 2000-01-01T00:00:00Z/2100-01-01T00:00:00Z"
        in (maintained_action["reason"])
    )
    (current_window,) = repo.status()["changes"]["windows"]
    assert current_window["system"] == "maintained"
    assert current_window["in_force"] is True
    markdown = (repo.root / STATUS_MARKDOWN).read_text()
    assert "## Maintenance windows" in markdown
    assert "unknown (not checked)" in markdown


def test_secrets_never_leave_the_process(loop, caplog, capfd):
    repo, hosts, instance, resources, ssh_hosts, secret_key = loop
    caplog.set_level(logging.DEBUG)

    run_pass(instance, resources)

    secrets = {
        "client key": ssh_hosts.client_key.private_key_text.strip().splitlines()[1],
        "secret key": secret_key.private_key_text.strip().splitlines()[1],
        "passphrase": PASSPHRASE,
    }
    places = {
        "prep-status.json": (repo.root / "docs/infrastructure/prep-status.json").read_text(),
        "prep-status.md": (repo.root / STATUS_MARKDOWN).read_text(),
        "logs": caplog.text + "".join(capfd.readouterr()),
    }
    metadata = []
    for asset in (
        "change_context",
        "inventory",
        "access_status",
        "tool_status",
        "baselines",
        "prep_status_doc",
    ):
        records = instance.fetch_materializations(AssetKey(asset), limit=100).records
        assert records, f"no materialization of {asset}"
        for record in records:
            metadata.append(
                {
                    key: str(value.value)
                    for key, value in record.asset_materialization.metadata.items()
                }
            )
    places["asset metadata"] = json.dumps(metadata)
    entries = [entry for run in instance.get_runs() for entry in instance.all_logs(run.run_id)]
    assert entries, "the runs left no event log"
    places["event log"] = "\n".join(
        f"{entry.user_message} {entry.dagster_event}" for entry in entries
    )
    stored = list(Path(instance.storage_directory()).rglob("*.json"))
    assert stored, "no stored asset values"
    places["stored values"] = "".join(path.read_text() for path in stored)

    for place, text in places.items():
        for secret_name, secret in secrets.items():
            assert secret not in text, f"the {secret_name} appears in {place}"
    assert repo.systems()["ssh-secret"]["access"]["state"] == "reachable"
