"""Fixtures that build real git repositories of infra docs in a temporary folder."""

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import git
import pytest

INVENTORY_PATH = "docs/infrastructure/system-inventory.md"

INVENTORY_HEADER = (
    "# System inventory\n\n| Name | Type | Tier | Address |\n|------|------|------|---------|\n"
)


def inventory_text(rows: list[tuple[str, str, str, str]]) -> str:
    """Render an inventory table with one row per (name, type, tier, address)."""
    lines = [f"| {name} | {kind} | {tier} | {address} |" for name, kind, tier, address in rows]
    return INVENTORY_HEADER + "\n".join(lines) + "\n"


def table_system_names(text: str) -> set[str]:
    """Return the first cell of every table row except the header and the separator.

    A stand-in for the real inventory parser, enough for these tests.
    """
    names: set[str] = set()
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("|"):
            continue
        first_cell = stripped.strip("|").split("|")[0].strip()
        if not first_cell or first_cell.lower() == "name" or set(first_cell) <= set("-: "):
            continue
        names.add(first_cell)
    return names


class InfraRepo:
    """A git repository of infra docs whose commits get fixed dates."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.repo = git.Repo.init(path, initial_branch="main")
        with self.repo.config_writer() as config:
            config.set_value("user", "name", "Test Operator")
            config.set_value("user", "email", "operator@example.test")

    def write(self, relative_path: str, text: str) -> None:
        target = self.path / relative_path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    def delete(self, relative_path: str) -> None:
        (self.path / relative_path).unlink()

    def commit(self, message: str, when: datetime) -> str:
        """Commit every change in the work tree and return the full sha."""
        self.repo.git.add("--all")
        date = when.isoformat()
        with self.repo.git.custom_environment(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date):
            self.repo.git.commit("--allow-empty", "--no-verify", "-m", message)
        return self.repo.head.commit.hexsha

    def short(self, sha: str) -> str:
        return self.repo.git.rev_parse("--short", sha)


@pytest.fixture(autouse=True)
def isolated_git_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep the user's and the system's git configuration out of the tests."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    yield


@pytest.fixture
def infra_repo(tmp_path: Path) -> InfraRepo:
    return InfraRepo(tmp_path / "infra")
