"""Build the demo infra repo: the bundled example docs with a short, realistic git history.

``python -m prep_assets.demo TARGET`` copies ``examples/homelab`` to TARGET and
commits it in four steps: the first documentation, a new system, a
decommission and a maintenance window that covers the next hours. An existing
TARGET is replaced, so every demo starts from the same history.
"""

import argparse
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import git

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "homelab"
INVENTORY = "docs/infrastructure/system-inventory.md"
AUTHOR = git.Actor("Demo Operator", "operator@example.invalid")

# Inventory rows added or removed by the history; the example file has both.
NEW_SYSTEM = "k3s-1"
RETIRED_SYSTEM = "pve-old"


def _row_of(text: str, name: str) -> str:
    for line in text.splitlines(keepends=True):
        if line.startswith(f"| {name} "):
            return line
    raise ValueError(f"{EXAMPLE / INVENTORY} has no row for {name}")


def build_demo_repo(target: Path, now: datetime | None = None) -> git.Repo:
    """Create the demo repo at ``target`` and return it."""
    now = now or datetime.now(UTC)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(EXAMPLE, target)
    repo = git.Repo.init(target, initial_branch="main")
    inventory = target / INVENTORY
    full_text = inventory.read_text(encoding="utf-8")
    new_row = _row_of(full_text, NEW_SYSTEM)

    def commit(message: str, when: datetime) -> None:
        repo.git.add(A=True)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S+0000")
        repo.index.commit(
            message, author=AUTHOR, committer=AUTHOR, author_date=stamp, commit_date=stamp
        )

    # 1. The docs as first written, before the new system existed.
    inventory.write_text(full_text.replace(new_row, ""), encoding="utf-8")
    commit("Document the homelab systems and tools", now - timedelta(days=10))

    # 2. A new K3s VM.
    inventory.write_text(full_text, encoding="utf-8")
    commit(f"Add {NEW_SYSTEM} test VM\n\nNew-System: {NEW_SYSTEM}\n", now - timedelta(days=5))

    # 3. The old Proxmox host is retired.
    inventory.write_text(
        full_text.replace(_row_of(full_text, RETIRED_SYSTEM), ""), encoding="utf-8"
    )
    commit(
        f"Retire {RETIRED_SYSTEM}\n\nIts guests moved to the new host.\n\nDecommission: {RETIRED_SYSTEM}\n",
        now - timedelta(days=2),
    )

    # 4. Maintenance on the new VM, covering the next hours.
    start = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%MZ")
    end = (now + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%MZ")
    log = target / "docs/infrastructure/maintenance-log.md"
    log.write_text(
        log.read_text(encoding="utf-8") + f"| {start} | {end} | {NEW_SYSTEM} | kernel upgrade |\n",
        encoding="utf-8",
    )
    commit(
        f"Plan kernel upgrade of {NEW_SYSTEM}\n\nMaintenance: {NEW_SYSTEM} {start}/{end}\n",
        now - timedelta(minutes=30),
    )
    return repo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="Folder to create the demo repo in (replaced).")
    args = parser.parse_args(argv)
    repo = build_demo_repo(args.target.resolve())
    print(f"Demo infra repo at {args.target} with {len(list(repo.iter_commits()))} commits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
