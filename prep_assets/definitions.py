"""The Dagster code location of prep-assets: ``dagster dev`` in the repo root loads it."""

from dagster import Definitions, define_asset_job

from prep_assets.defs.assets import ALL_ASSETS
from prep_assets.defs.io_manager import PrepStateIOManager
from prep_assets.defs.resources import (
    AccessResource,
    InfraRepoResource,
    PrometheusResource,
    StateResource,
)

state = StateResource()

# Reads the docs and registers the systems partitions; the per-system pass needs its keys.
discover_job = define_asset_job("discover", selection=["change_context", "inventory"])

defs = Definitions(
    assets=ALL_ASSETS,
    jobs=[discover_job],
    resources={
        "infra_repo": InfraRepoResource(),
        "access": AccessResource(),
        "prometheus": PrometheusResource(),
        "state": state,
        "io_manager": PrepStateIOManager(state=state),
    },
)
