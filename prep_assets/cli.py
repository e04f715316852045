"""Command line entry point: run the whole PREP loop once against an infra repo.

``prep-assets run`` does what "Materialize all" does in the UI, in two runs
recorded in the Dagster instance named by DAGSTER_HOME: first the git review
and the inventory, which registers new systems as partitions, then every
per-system asset for all systems in one run together with the steps after it.
"""

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult, materialize

from prep_assets.defs.partitions import SYSTEMS_PARTITIONS_NAME
from prep_assets.defs.resources import default_infra_repo

logger = logging.getLogger("prep_assets")

DISCOVERY_ASSETS = ["change_context", "inventory"]
# Step starts and outputs go to the instance's event log; the console shows INFO and above.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def run_loop(
    instance: DagsterInstance,
    systems: list[str] | None = None,
    resources: Mapping[str, Any] | None = None,
) -> bool:
    """Materialize every asset once; return whether both runs succeeded.

    ``systems`` limits the per-system pass to those systems (by default, every
    system of the current inventory). ``resources`` replaces resources of the
    code location by key, as run config does in the UI.
    """
    from prep_assets.definitions import defs

    # materialize() takes no CacheableAssetsDefinition, and this code location has none.
    assets: list[Any] = list(defs.assets or [])
    resources = {**(defs.resources or {}), **(resources or {})}

    def run(selection: list[str], tags: dict[str, str] | None = None) -> ExecuteInProcessResult:
        return materialize(
            assets,
            instance=instance,
            resources=resources,
            selection=selection,
            tags=tags,
            run_config=QUIET_RUN_CONFIG,
            raise_on_error=False,
        )

    first = run(DISCOVERY_ASSETS)
    if not first.success:
        logger.error("the git review or the inventory failed; see the run %s", first.run_id)
        return False

    inventory = first.output_for_node("inventory")
    names = set(systems or [system["name"] for system in inventory["systems"]])
    known = instance.get_dynamic_partitions(SYSTEMS_PARTITIONS_NAME)
    # A run covers a contiguous range of partition keys; keys outside the inventory in that
    # range get a "not in the inventory" value without contacting anything.
    ordered = [key for key in known if key in names]
    if not ordered:
        logger.warning("the inventory lists no systems; only the status document is written")
        return run(["drift_report", "rule_actions", "prep_status_doc"]).success

    selection = [key for key in _all_keys(assets) if key not in DISCOVERY_ASSETS]
    tags = {
        "dagster/asset_partition_range_start": ordered[0],
        "dagster/asset_partition_range_end": ordered[-1],
    }
    second = run(selection, tags)
    if not second.success:
        logger.error("the per-system pass failed; see the run %s", second.run_id)
    return second.success


def _all_keys(assets: list) -> list[str]:
    keys: list[str] = []
    for definition in assets:
        keys.extend(key.to_user_string() for key in definition.keys)
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prep-assets", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="Materialize every asset once against the infra repo.")
    run.add_argument(
        "--repo", help="Path of the infra git repo (default: PREP_INFRA_REPO or the demo repo)."
    )
    run.add_argument("--system", action="append", help="Check only this system (repeatable).")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.repo:
        os.environ["PREP_INFRA_REPO"] = str(Path(args.repo).resolve())
    if not os.environ.get("DAGSTER_HOME"):
        print(
            "DAGSTER_HOME is not set: set it to the folder that holds dagster.yaml.",
            file=sys.stderr,
        )
        return 2
    with DagsterInstance.get() as instance:
        ok = run_loop(instance, args.system)
    repo = Path(default_infra_repo()).resolve()
    if ok:
        print(f"Wrote {repo / 'docs/infrastructure/prep-status.md'}")
        print(f"Wrote {repo / 'docs/infrastructure/prep-status.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
