"""The Dagster code location of prep-assets: ``dagster dev`` in the repo root loads it.

Besides the assets it contains one schedule per tier (from ``docs/reference/tiers.md``
of the infra repo named by PREP_INFRA_REPO, read when the location loads), the
freshness checks of the per-system assets, and three sensors: stale-system
alerts, new commits in the infra repo, and firing Prometheus alerts.
"""

import logging
from pathlib import Path

from dagster import Definitions, define_asset_job, in_process_executor

from prep_assets.defs.alert_sensor import prometheus_alerts_sensor
from prep_assets.defs.assets import ALL_ASSETS
from prep_assets.defs.freshness import (
    stale_systems_sensor,
    systems_fresh_for_tier,
    with_loop_freshness_policies,
)
from prep_assets.defs.git_sensor import infra_repo_commits_sensor
from prep_assets.defs.io_manager import PrepStateIOManager
from prep_assets.defs.passes import prep_pass_job
from prep_assets.defs.provisioning import ProvisioningResource
from prep_assets.defs.resources import (
    AccessResource,
    InfraRepoResource,
    PrometheusResource,
    StateResource,
    default_infra_repo,
)
from prep_assets.defs.rules_sensor import rules_sensor
from prep_assets.defs.schedules import build_tier_schedules
from prep_assets.defs.trigger_resources import (
    AlertWebhookResource,
    GitWatchResource,
    PrometheusAlertsResource,
)
from prep_assets.tiers import TierTable, load_tiers

logger = logging.getLogger(__name__)

# Reads the docs and registers the systems partitions; the per-system pass needs its keys.
discover_job = define_asset_job("discover", selection=["change_context", "inventory"])


def load_tier_table() -> TierTable:
    """Read the tiers of the infra repo named by PREP_INFRA_REPO, logging their problems."""
    root = Path(default_infra_repo()).expanduser()
    table = load_tiers(root)
    for problem in table.problems:
        logger.warning("%s", problem)
    logger.info(
        "tiers from %s: %s (default %s)", table.source, ", ".join(table.names), table.default_name
    )
    return table


def build_definitions(tier_table: TierTable | None = None) -> Definitions:
    """Return the code location's definitions, with schedules and freshness windows of ``tier_table``."""
    table = tier_table or load_tier_table()
    state = StateResource()
    return Definitions(
        assets=with_loop_freshness_policies(ALL_ASSETS, table),
        asset_checks=[systems_fresh_for_tier],
        jobs=[discover_job, prep_pass_job],
        # One process per run: the per-system steps already check their systems
        # concurrently, and a subprocess per step would add seconds of start-up each.
        executor=in_process_executor,
        schedules=build_tier_schedules(table),
        sensors=[
            stale_systems_sensor,
            infra_repo_commits_sensor,
            prometheus_alerts_sensor,
            rules_sensor,
        ],
        resources={
            "infra_repo": InfraRepoResource(),
            "access": AccessResource(),
            "prometheus": PrometheusResource(),
            "provisioning": ProvisioningResource(),
            "state": state,
            "io_manager": PrepStateIOManager(state=state),
            "alert_webhook": AlertWebhookResource(),
            "git_watch": GitWatchResource(),
            "prometheus_alerts": PrometheusAlertsResource(),
        },
    )


defs = build_definitions()
