"""Read last_checked times from the Dagster instance's materialization records."""

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterInstance


def last_materialized(
    instance: DagsterInstance, asset_key: AssetKey, partitions: Iterable[str]
) -> dict[str, str]:
    """Return, per partition, the ISO time (UTC) of its latest materialization."""
    wanted = set(partitions)
    if not wanted:
        return {}
    storage_ids = instance.get_latest_storage_id_by_partition(
        asset_key, DagsterEventType.ASSET_MATERIALIZATION, wanted
    )
    if not storage_ids:
        return {}
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, storage_ids=list(storage_ids.values())),
        limit=len(storage_ids),
    ).records
    times: dict[str, str] = {}
    for record in records:
        if record.partition_key is None:
            continue
        moment = datetime.fromtimestamp(record.timestamp, tz=UTC)
        times[record.partition_key] = moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    return times


def last_checked_by_system(
    instance: DagsterInstance, steps: Sequence[str], systems: Iterable[str]
) -> dict[str, dict[str, str | None]]:
    """Return {system: {step: ISO time or None}} for the per-system assets named in ``steps``."""
    names = list(systems)
    by_step = {step: last_materialized(instance, AssetKey(step), names) for step in steps}
    return {name: {step: by_step[step].get(name) for step in steps} for name in names}


def latest_metadata_value(instance: DagsterInstance, asset_key: AssetKey, key: str) -> str | None:
    """Return a text metadata value of the asset's latest materialization, if any."""
    event = instance.get_latest_materialization_event(asset_key)
    if event is None or event.asset_materialization is None:
        return None
    entry = event.asset_materialization.metadata.get(key)
    value = getattr(entry, "value", None)
    return value if isinstance(value, str) else None
