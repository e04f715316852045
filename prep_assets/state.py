"""A JSON file store for asset values: one file per asset and partition.

The Dagster IO manager writes through this store, and steps that compare with
their own previous value (drift) read it directly. Files are written to a
temporary name and renamed, so a crash never leaves half a file behind.
"""

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote


class StateStore:
    """JSON values of assets under ``base_dir/<asset>/<partition>.json``."""

    def __init__(self, base_dir: Path | str) -> None:
        self.base_dir = Path(base_dir)

    def path_for(self, asset: str, partition: str | None = None) -> Path:
        # Partition keys are system names from a document: quote them so that
        # "/", ".." or a shell character cannot leave the folder.
        name = "__all__" if partition is None else quote(partition, safe="")
        if name.startswith("."):
            name = "%2E" + name[1:]
        return self.base_dir / quote(asset, safe="") / f"{name}.json"

    def write(self, asset: str, value: Any, partition: str | None = None) -> Path:
        path = self.path_for(asset, partition)
        write_atomically(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
        return path

    def read(self, asset: str, partition: str | None = None) -> Any | None:
        """Return the stored value, or None when nothing was stored yet."""
        path = self.path_for(asset, partition)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def read_many(self, asset: str, partitions: Iterable[str]) -> dict[str, Any]:
        """Return the stored value of each partition that has one."""
        values = {}
        for partition in partitions:
            value = self.read(asset, partition)
            if value is not None:
                values[partition] = value
        return values


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
