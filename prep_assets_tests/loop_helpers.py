"""Helpers for tests that run the whole PREP loop: an infra repo on disk and one pass over it."""

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import git
from dagster import AssetKey, DagsterInstance

from prep_assets.cli import run_loop
from prep_assets.defs.io_manager import PrepStateIOManager
from prep_assets.defs.provisioning import ProvisioningResource
from prep_assets.defs.resources import (
    AccessResource,
    InfraRepoResource,
    PrometheusResource,
    StateResource,
)
from prep_assets.provisioning.audit import AUDIT_LOG_PATH
from prep_assets.report.document import validate_status_document

INVENTORY = "docs/infrastructure/system-inventory.md"
STATUS_JSON = "docs/infrastructure/prep-status.json"
STATUS_MARKDOWN = "docs/infrastructure/prep-status.md"
AUTHOR = git.Actor("Test Operator", "operator@example.invalid")

TOOLS_MAP = """\
# Tools map

## default

| Tool | apt | apk |
|------|-----|-----|
| iostat | sysstat | sysstat |
| mpstat | sysstat | sysstat |
| vmstat | procps | procps |
| bpftrace | bpftrace | bpftrace |
"""


def inventory_text(rows: Sequence[str], unmanaged: Sequence[str] = ()) -> str:
    header = "| Name | Type | Tier | Address | Port | Access | User | Credentials |\n|---|---|---|---|---|---|---|---|\n"
    text = "# System inventory\n\n## Managed\n\n" + header + "".join(row + "\n" for row in rows)
    if unmanaged:
        text += "\n## Unmanaged\n\n" + header + "".join(row + "\n" for row in unmanaged)
    return text


def credentials_text(rows: Sequence[str]) -> str:
    return "# Credentials map\n\n| Name | Kind | Location |\n|---|---|---|\n" + "".join(
        row + "\n" for row in rows
    )


class InfraRepo:
    """A real git repository with the docs layout, changed by commits during a test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repo = git.Repo.init(root, initial_branch="main")

    def write(self, relative: str, text: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")

    def commit(self, message: str) -> str:
        self.repo.git.add(A=True)
        commit = self.repo.index.commit(message, author=AUTHOR, committer=AUTHOR)
        return commit.hexsha

    def status(self) -> dict[str, Any]:
        document = json.loads((self.root / STATUS_JSON).read_text())
        validate_status_document(document)
        return document

    def systems(self) -> dict[str, dict[str, Any]]:
        return {entry["name"]: entry for entry in self.status()["systems"]}


def loop_resources(
    repo: InfraRepo,
    known_hosts: Path,
    timeout: float = 3.0,
    provisioning: ProvisioningResource | None = None,
) -> dict[str, Any]:
    """Resources of one test pass; provisioning stays disabled unless ``provisioning`` enables it."""
    state = StateResource(base_dir="")
    return {
        "infra_repo": InfraRepoResource(path=str(repo.root)),
        "access": AccessResource(
            known_hosts=str(known_hosts),
            timeout_seconds=timeout,
            max_workers=8,
            ssh_config="",
            use_ssh_agent=False,
        ),
        "prometheus": PrometheusResource(url=""),
        "state": state,
        "io_manager": PrepStateIOManager(state=state),
        "provisioning": provisioning or ProvisioningResource(enabled=False),
    }


def run_pass(instance: DagsterInstance, resources: dict[str, Any]) -> None:
    assert run_loop(instance, resources=resources), "the PREP loop run failed; see the log above"


def latest_metadata(instance: DagsterInstance, asset: str) -> dict[str, Any]:
    """Return the metadata values of the newest materialization of ``asset``."""
    record = instance.fetch_materializations(AssetKey(asset), limit=1).records[0]
    return {key: value.value for key, value in record.asset_materialization.metadata.items()}


def latest_run_id(instance: DagsterInstance, asset: str) -> str:
    return instance.fetch_materializations(AssetKey(asset), limit=1).records[0].run_id


def read_audit_log(repo_root: Path) -> list[dict[str, Any]]:
    """Return the provisioning audit log entries of the infra repo, oldest first."""
    path = repo_root / AUDIT_LOG_PATH
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]
