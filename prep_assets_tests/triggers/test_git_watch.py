"""New commits, rewritten history, touched systems and fetching from a remote, on real git repos."""

import git
import pytest

from prep_assets.triggers.git_watch import (
    GitWatchError,
    fetch_and_fast_forward,
    head_commit,
    new_commits,
    only_status_documents,
    touched_systems,
)
from prep_assets_tests.loop_helpers import AUTHOR, INVENTORY, TOOLS_MAP, InfraRepo, inventory_text
from prep_assets_tests.trigger_helpers import local_row


def make_repo(root, rows):
    repo = InfraRepo(root)
    repo.write(INVENTORY, inventory_text(rows))
    repo.write("docs/reference/tools-map.md", TOOLS_MAP)
    repo.commit("Document the systems")
    return repo


def test_new_commits_in_order(tmp_path):
    repo = make_repo(tmp_path / "infra", [local_row("a", "critical")])
    base = head_commit(repo.root)
    repo.write("README.md", "one\n")
    first = repo.commit("First")
    repo.write("README.md", "two\n")
    second = repo.commit("Second")

    change = new_commits(repo.root, base)

    assert change.commits == (first, second)
    assert change.base == base
    assert change.head == second
    assert not change.rewritten
    assert new_commits(repo.root, second).commits == ()


def test_rewritten_history(tmp_path):
    repo = make_repo(tmp_path / "infra", [local_row("a", "critical")])
    repo.write("README.md", "one\n")
    dropped = repo.commit("Dropped later")
    repo.repo.git.reset("--hard", "HEAD~1")
    repo.write("README.md", "other\n")
    repo.commit("Replacement")

    assert new_commits(repo.root, dropped).rewritten
    assert new_commits(repo.root, "0" * 40).rewritten


def test_touched_systems_from_inventory_diff(tmp_path):
    rows = [local_row("a", "critical"), local_row("b", "standard"), local_row("c", "low")]
    repo = make_repo(tmp_path / "infra", rows)
    base = head_commit(repo.root)
    changed = [
        local_row("new", "low"),
        local_row("a", "critical"),
        local_row("b", "critical"),
    ]
    repo.write(INVENTORY, inventory_text(changed))
    head = repo.commit("Add new, promote b, retire c")

    assert touched_systems(repo.root, base, head) == {"new", "b"}


def test_reference_document_touches_every_system(tmp_path):
    repo = make_repo(tmp_path / "infra", [local_row("a", "critical")])
    base = head_commit(repo.root)
    repo.write("docs/reference/tools-map.md", TOOLS_MAP + "| perf | linux-perf | perf |\n")
    head = repo.commit("Expect perf everywhere")

    assert touched_systems(repo.root, base, head) is None
    assert touched_systems(repo.root, None, head) is None


def test_tiers_and_readme_touch_nothing(tmp_path):
    repo = make_repo(tmp_path / "infra", [local_row("a", "critical")])
    base = head_commit(repo.root)
    repo.write(
        "docs/reference/tiers.md",
        "| Tier | Schedule | Stale after |\n|---|---|---|\n| critical | * * * * * | 1h |\n",
    )
    repo.write("README.md", "infra\n")
    head = repo.commit("Tune tiers")

    assert touched_systems(repo.root, base, head) == set()
    assert not only_status_documents(repo.root, base, head)


def test_status_only_commit(tmp_path):
    repo = make_repo(tmp_path / "infra", [local_row("a", "critical")])
    base = head_commit(repo.root)
    repo.write("docs/infrastructure/prep-status.md", "# status\n")
    head = repo.commit("Record status")

    assert only_status_documents(repo.root, base, head)


def test_fetch_fast_forwards_from_remote(tmp_path):
    upstream = make_repo(tmp_path / "upstream", [local_row("a", "critical")])
    clone = git.Repo.clone_from(str(upstream.root), str(tmp_path / "clone"))
    upstream.write(INVENTORY, inventory_text([local_row("a", "critical"), local_row("b", "low")]))
    pushed = upstream.commit("Add b")

    warning = fetch_and_fast_forward(tmp_path / "clone", "origin")

    assert warning is None
    assert clone.head.commit.hexsha == pushed
    assert "| b |" in (tmp_path / "clone" / INVENTORY).read_text()


def test_fetch_reports_diverged_branch(tmp_path):
    upstream = make_repo(tmp_path / "upstream", [local_row("a", "critical")])
    clone = git.Repo.clone_from(str(upstream.root), str(tmp_path / "clone"))
    upstream.write("README.md", "upstream\n")
    upstream.commit("Upstream change")
    (tmp_path / "clone" / "NOTES.md").write_text("local\n")
    clone.git.add(A=True)
    local = clone.index.commit("Local change", author=AUTHOR, committer=AUTHOR).hexsha

    warning = fetch_and_fast_forward(tmp_path / "clone", "origin")

    assert warning is not None and "cannot fast-forward main" in warning
    assert clone.head.commit.hexsha == local


def test_fetch_without_upstream(tmp_path):
    repo = make_repo(tmp_path / "infra", [local_row("a", "critical")])
    repo.repo.create_remote("origin", str(tmp_path / "infra"))

    warning = fetch_and_fast_forward(repo.root, "origin")

    assert warning is not None and "has no upstream" in warning


@pytest.mark.parametrize("remote", ["--upload-pack=touch /tmp/prep-pwned", "-o", "origin name", ""])
def test_fetch_rejects_remote_that_is_not_a_name(tmp_path, remote):
    repo = InfraRepo(tmp_path / "infra")
    repo.write(INVENTORY, inventory_text([local_row("alpha", "standard")]))
    repo.commit("Document alpha")

    with pytest.raises(GitWatchError, match="invalid git remote"):
        fetch_and_fast_forward(repo.root, remote)
