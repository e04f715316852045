"""The provisioning audit log: one JSON line per package change made to a system.

The log is ``docs/infrastructure/provisioning-audit.jsonl`` in the infra repo.
Lines are only ever appended. Each line is a JSON object with the keys of
``AuditEntry.to_dict``, for example::

    {"time": "2026-05-01T10:00:00Z", "run_id": "4f1c...", "system": "pve1",
     "package": "sysstat", "version": "12.6.1-1", "previous_version": null,
     "package_manager": "apt", "tools": ["iostat"], "enabled_by": "alice",
     "enabled_via": "resource"}

Two runs may append at the same time. Each appender takes an exclusive
``fcntl.flock`` on the file while it writes, opens it with ``O_APPEND`` and
writes each line with one ``write`` call, so lines are never lost or interleaved
between processes that follow this protocol.
"""

import dataclasses
import fcntl
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

AUDIT_LOG_PATH = "docs/infrastructure/provisioning-audit.jsonl"


@dataclass(frozen=True)
class AuditEntry:
    """One package that one run installed or upgraded on one system."""

    # ISO 8601 UTC time at which the change was verified.
    time: str
    run_id: str
    system: str
    package: str
    # The installed version after the change, as the package database reports it.
    version: str
    # The version before the change; None when the package was not installed.
    previous_version: str | None
    package_manager: str
    # The crisis tools that the package was installed for.
    tools: tuple[str, ...]
    # The person who turned provisioning on, and the switch used: "resource" or "run config".
    enabled_by: str
    enabled_via: str

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["tools"] = list(self.tools)
        return data


def append_audit_entries(path: Path, entries: Iterable[AuditEntry]) -> int:
    """Append one JSON line per entry to ``path`` under an exclusive lock; return the count.

    The folder is created when missing. Every line is written with a single
    ``os.write``. A short write, which Linux does not produce for regular files
    on local file systems, is completed with further writes while the lock is
    still held.
    """
    lines = [
        (json.dumps(entry.to_dict(), sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        for entry in entries
    ]
    if not lines:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            for line in lines:
                _write_all(descriptor, line)
            os.fsync(descriptor)
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)
    logger.info("appended %d provisioning audit entries to %s", len(lines), path)
    return len(lines)


def _write_all(descriptor: int, data: bytes) -> None:
    written = os.write(descriptor, data)
    while written < len(data):
        written += os.write(descriptor, data[written:])


def read_audit_entries(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Return the entries of the audit log in file order and the number of unreadable lines.

    A missing file has no entries. A line that is not a JSON object is counted
    and logged, but does not stop the reading.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return [], 0
    entries: list[dict[str, Any]] = []
    invalid = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            entries.append(value)
        else:
            invalid += 1
            logger.warning("%s:%d: not a JSON object, line skipped", path, number)
    return entries, invalid
