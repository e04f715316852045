"""The ``systems`` dynamic partitions shared by every per-system asset.

The inventory step adds a key for each new system and never deletes one: a
decommissioned system keeps its history in the Dagster instance.
"""

from dagster import DynamicPartitionsDefinition

SYSTEMS_PARTITIONS_NAME = "systems"
SYSTEMS_PARTITIONS = DynamicPartitionsDefinition(name=SYSTEMS_PARTITIONS_NAME)
