"""An IO manager that keeps each asset partition as a JSON file.

Loading many partitions (an unpartitioned asset reading every system) returns a
dict of the partitions that have a value, so a system added since the last pass
does not fail the readers.
"""

from typing import Any

from dagster import ConfigurableIOManager, InputContext, OutputContext, ResourceDependency

from prep_assets.defs.resources import StateResource


class PrepStateIOManager(ConfigurableIOManager):
    """Stores asset values as JSON through the state folder."""

    state: ResourceDependency[StateResource]

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        store = self.state.store(context.step_context.instance)
        asset = context.asset_key.to_user_string()
        if not context.has_asset_partitions:
            store.write(asset, obj)
            return
        for key in context.asset_partition_keys:
            if key not in obj:
                raise ValueError(f"{asset} returned no value for partition {key!r}")
            store.write(asset, obj[key], key)

    def load_input(self, context: InputContext) -> Any:
        store = self.state.store(context.instance)
        asset = context.asset_key.to_user_string()
        if not context.has_asset_partitions:
            return store.read(asset)
        return store.read_many(asset, context.asset_partition_keys)
