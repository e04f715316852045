"""Parse ``docs/reference/tiers.md``: how often each tier's systems are checked.

A tier has a cron schedule for its PREP passes and a freshness window per step:
a system whose latest result of a step is older than the window is stale. The
table lives in the infra repo, next to the tools map::

    | Tier     | Schedule     | Stale after | Default | baselines |
    | -------- | ------------ | ----------- | ------- | --------- |
    | critical | 0 * * * *    | 2h          |         | 26h       |
    | standard | 20 3 * * *   | 26h         | yes     |           |
    | low      | 40 3 * * 0   | 8d          |         |           |

Stale after applies to every step. A column named after a step (``access_status``,
``tool_status``, ``provisioned_tools``, ``baselines`` or one of the loop-wide steps)
overrides it for that step. The row marked Default is the tier of systems whose
Tier cell names no tier of the table; without a Default column it is ``standard``
when the table has it, otherwise the first row. Without the file the built-in
``DEFAULT_TIERS`` apply. The order of the rows is the order in which new systems
are added to the ``systems`` partitions, so that each tier's keys stay together.
"""

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from prep_assets.inventory.markdown import (
    Row,
    field_cell,
    field_value,
    find_tables,
    map_columns,
    normalize_header,
    parse_yes_no,
    read_field,
)
from prep_assets.models import DocumentProblem, SourceLocation
from prep_assets.report.document import PER_SYSTEM_STEPS

logger = logging.getLogger(__name__)

TIERS_PATH = "docs/reference/tiers.md"
FALLBACK_DEFAULT_TIER = "standard"

# The assets of the PREP loop in lineage order; LOOP_STEPS are the unpartitioned ones.
STEPS = (
    "change_context",
    "inventory",
    *PER_SYSTEM_STEPS,
    "drift_report",
    "rule_actions",
    "prep_status_doc",
)
LOOP_STEPS = tuple(step for step in STEPS if step not in PER_SYSTEM_STEPS)

_TIER_COLUMNS: dict[str, str] = {
    "tier": "name",
    "name": "name",
    "schedule": "schedule",
    "cron": "schedule",
    "cron schedule": "schedule",
    "stale after": "stale_after",
    "freshness": "stale_after",
    "freshness window": "stale_after",
    "max age": "stale_after",
    "default": "default",
    **{normalize_header(step): step for step in STEPS},
}

# Valid tier names; the inventory lower-cases its Tier column, so names are lower-case too.
_TIER_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_DURATION_UNITS: dict[str, timedelta] = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), timedelta(seconds=1)),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), timedelta(minutes=1)),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), timedelta(hours=1)),
    **dict.fromkeys(("d", "day", "days"), timedelta(days=1)),
    **dict.fromkeys(("w", "week", "weeks"), timedelta(weeks=1)),
}

CRON_MACROS = frozenset({"@hourly", "@daily", "@midnight", "@weekly", "@monthly"})
# (lowest, highest, names) of the five cron fields; day of week 7 is Sunday as well.
_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    (
        "month",
        1,
        12,
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    ),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)


@dataclass(frozen=True)
class Tier:
    """One tier: its cron schedule and how old a step's result may get before it is stale."""

    name: str
    schedule: str
    stale_after: timedelta
    step_windows: Mapping[str, timedelta] = field(default_factory=dict)

    def window_for(self, step: str) -> timedelta:
        return self.step_windows.get(step, self.stale_after)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "schedule": self.schedule,
            "stale_after_seconds": self.stale_after.total_seconds(),
            "step_windows_seconds": {
                step: window.total_seconds() for step, window in self.step_windows.items()
            },
        }


@dataclass(frozen=True)
class TierTable:
    """The tiers in document order, the default tier and the problems found while reading them."""

    tiers: tuple[Tier, ...]
    default_name: str
    source: str
    problems: tuple[DocumentProblem, ...] = ()

    def __post_init__(self) -> None:
        if not self.tiers:
            raise ValueError("a tier table needs at least one tier")
        if self.get(self.default_name) is None:
            raise ValueError(f"the default tier {self.default_name!r} is not in the table")

    @property
    def names(self) -> list[str]:
        return [tier.name for tier in self.tiers]

    @property
    def default(self) -> Tier:
        tier = self.get(self.default_name)
        assert tier is not None
        return tier

    def get(self, name: str) -> Tier | None:
        return next((tier for tier in self.tiers if tier.name == name), None)

    def resolve(self, name: str | None) -> Tier:
        """Return the named tier, or the default tier when the name is not in the table."""
        tier = self.get((name or "").lower())
        return tier if tier is not None else self.default

    def rank(self, name: str | None) -> int:
        """Position of the (resolved) tier in the table, used to order partition keys."""
        return self.names.index(self.resolve(name).name)


DEFAULT_TIERS = TierTable(
    tiers=(
        Tier("critical", "0 * * * *", timedelta(hours=2)),
        Tier("standard", "20 3 * * *", timedelta(hours=26)),
        Tier("low", "40 3 * * 0", timedelta(days=8)),
    ),
    default_name="standard",
    source="built-in defaults",
)


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``45m``, ``2h``, ``8d``, ``1w`` or a sum such as ``1d 12h``; raise ValueError."""
    cleaned = text.strip().lower()
    parts = _DURATION_PART.findall(cleaned)
    if not parts or _DURATION_PART.sub("", cleaned).replace(",", "").strip():
        raise ValueError(
            f"invalid duration {text!r}: expected a number and a unit such as 2h, 26h or 8d"
        )
    total = timedelta()
    for number, unit in parts:
        if unit not in _DURATION_UNITS:
            raise ValueError(
                f"invalid duration {text!r}: unknown unit {unit!r}; use s, m, h, d or w"
            )
        total += float(number) * _DURATION_UNITS[unit]
    if total <= timedelta():
        raise ValueError(f"invalid duration {text!r}: it must be longer than zero")
    return total


def format_duration(value: timedelta) -> str:
    """Render a duration in its largest whole units, such as ``1d 2h`` or ``45s``."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts)


def validate_cron(text: str) -> str:
    """Return a cron schedule with single spaces, or raise ValueError.

    Accepted: five fields (minute, hour, day of month, month, day of week) of
    ``*``, numbers, ranges, lists and ``/`` steps, month and weekday names, and the
    macros ``@hourly``, ``@daily``, ``@midnight``, ``@weekly`` and ``@monthly``.
    """
    schedule = " ".join(text.split())
    if schedule.lower() in CRON_MACROS:
        return schedule.lower()
    fields = schedule.split(" ")
    if len(fields) != len(_CRON_FIELDS):
        raise ValueError(
            f"invalid cron schedule {text!r}: expected 5 fields (minute hour day-of-month "
            "month day-of-week), such as 0 * * * *"
        )
    for value, (field_name, lowest, highest, names) in zip(fields, _CRON_FIELDS, strict=True):
        for item in value.lower().split(","):
            _validate_cron_item(item, field_name, lowest, highest, names, text)
    return schedule


def _validate_cron_item(
    item: str, field_name: str, lowest: int, highest: int, names: tuple[str, ...], text: str
) -> None:
    base, _, step = item.partition("/")
    if step and not (step.isdigit() and int(step) > 0):
        raise ValueError(f"invalid cron schedule {text!r}: bad step {step!r} in the {field_name}")
    if base == "*":
        return
    bounds = base.split("-")
    if len(bounds) > 2 or not all(bounds):
        raise ValueError(f"invalid cron schedule {text!r}: bad {field_name} {item!r}")
    values = []
    for bound in bounds:
        if bound.isdigit():
            values.append(int(bound))
        elif bound in names:
            values.append(names.index(bound) + (1 if field_name == "month" else 0))
        else:
            raise ValueError(f"invalid cron schedule {text!r}: bad {field_name} {bound!r}")
    if any(not lowest <= number <= highest for number in values):
        raise ValueError(
            f"invalid cron schedule {text!r}: the {field_name} must be within {lowest}-{highest}"
        )
    if len(values) == 2 and values[0] > values[1]:
        raise ValueError(f"invalid cron schedule {text!r}: the range {base!r} runs backwards")


def _parse_tier_name(text: str) -> str:
    name = text.strip().lower()
    if not _TIER_NAME.match(name):
        raise ValueError(
            f"invalid tier name {text!r}: use lower-case letters, digits, '.', '_' and '-'"
        )
    return name


def parse_tiers(text: str, path: str = TIERS_PATH) -> TierTable:
    """Parse the tiers document; invalid rows are left out and reported in ``TierTable.problems``.

    When no valid row remains, the problems are kept and ``DEFAULT_TIERS`` apply.
    """
    problems: list[DocumentProblem] = []
    tiers: list[Tier] = []
    defaults: list[tuple[str, SourceLocation]] = []
    found_table = False
    for table in find_tables(text):
        fields, _ = map_columns(table.header, _TIER_COLUMNS)
        if "name" not in fields or "schedule" not in fields:
            continue
        found_table = True
        for row in table.rows:
            parsed = _parse_row(row, fields, path, problems, tiers)
            if parsed is None:
                continue
            tier, is_default = parsed
            tiers.append(tier)
            if is_default:
                defaults.append((tier.name, SourceLocation(path, row.line)))

    if not found_table:
        problems.append(
            DocumentProblem(
                SourceLocation(path, 1),
                "no tiers table: expected a table with Tier and Schedule columns; "
                f"the built-in tiers ({', '.join(DEFAULT_TIERS.names)}) apply",
            )
        )
    if not tiers:
        if found_table:
            problems.append(
                DocumentProblem(
                    SourceLocation(path, 1),
                    "no valid tier rows; the built-in tiers "
                    f"({', '.join(DEFAULT_TIERS.names)}) apply",
                )
            )
        return TierTable(
            DEFAULT_TIERS.tiers, DEFAULT_TIERS.default_name, DEFAULT_TIERS.source, tuple(problems)
        )

    names = [tier.name for tier in tiers]
    if len(defaults) > 1:
        for name, location in defaults[1:]:
            problems.append(
                DocumentProblem(
                    location,
                    f"more than one default tier: {defaults[0][0]!r} is the default, "
                    f"so {name!r} is not",
                    name=name,
                )
            )
    if defaults:
        default_name = defaults[0][0]
    elif FALLBACK_DEFAULT_TIER in names:
        default_name = FALLBACK_DEFAULT_TIER
    else:
        default_name = names[0]
    return TierTable(tuple(tiers), default_name, path, tuple(problems))


def _parse_row(
    row: Row,
    fields: dict[str, int],
    path: str,
    problems: list[DocumentProblem],
    earlier: Sequence[Tier],
) -> tuple[Tier, bool] | None:
    before = len(problems)
    name = read_field(row, fields, "name", _parse_tier_name, path, problems)
    if name is None and field_value(row, fields, "name") is None:
        cell = field_cell(row, fields, "name")
        assert cell is not None
        problems.append(DocumentProblem(cell.location(path), "missing tier name"))
    schedule = read_field(row, fields, "schedule", validate_cron, path, problems, name)
    if schedule is None and field_value(row, fields, "schedule") is None:
        cell = field_cell(row, fields, "schedule")
        assert cell is not None
        problems.append(
            DocumentProblem(
                cell.location(path),
                "missing schedule: a tier needs a cron schedule such as 0 * * * *",
                name=name,
            )
        )
    stale_after = read_field(row, fields, "stale_after", parse_duration, path, problems, name)
    if stale_after is None and field_value(row, fields, "stale_after") is None:
        location = (field_cell(row, fields, "stale_after") or row.cells[0]).location(path)
        problems.append(
            DocumentProblem(
                location,
                "missing Stale after: a tier needs a freshness window such as 2h or 8d",
                name=name,
            )
        )
    is_default = bool(read_field(row, fields, "default", parse_yes_no, path, problems, name))
    step_windows = {}
    for step in STEPS:
        window = read_field(row, fields, step, parse_duration, path, problems, name)
        if window is not None:
            step_windows[step] = window

    duplicate = next((tier for tier in earlier if tier.name == name), None)
    if duplicate is not None:
        cell = field_cell(row, fields, "name")
        assert cell is not None
        problems.append(DocumentProblem(cell.location(path), f"duplicate tier {name!r}", name=name))
    if len(problems) > before or name is None or schedule is None or stale_after is None:
        return None
    return Tier(name, schedule, stale_after, step_windows), is_default


def load_tiers(repo_root: Path) -> TierTable:
    """Read ``docs/reference/tiers.md`` under ``repo_root``; without it, return ``DEFAULT_TIERS``."""
    path = repo_root / TIERS_PATH
    if not path.is_file():
        return DEFAULT_TIERS
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        problem = DocumentProblem(
            SourceLocation(TIERS_PATH, 1),
            f"cannot read the file as UTF-8 text: {error}; the built-in tiers apply",
        )
        logger.warning("%s", problem)
        return TierTable(
            DEFAULT_TIERS.tiers, DEFAULT_TIERS.default_name, DEFAULT_TIERS.source, (problem,)
        )
    return parse_tiers(text)


# Systems and tiers


def system_tiers(systems: Iterable[Mapping[str, Any]], table: TierTable) -> dict[str, str]:
    """Return {system name: tier name} for inventory systems (dicts), unknown tiers resolved to the default."""
    return {system["name"]: table.resolve(system.get("tier")).name for system in systems}


def unknown_tier_problems(
    systems: Iterable[Mapping[str, Any]], table: TierTable
) -> list[DocumentProblem]:
    """Return a problem for each system whose Tier names no tier of the table."""
    problems = []
    for system in systems:
        tier = (system.get("tier") or "").lower()
        if table.get(tier) is not None:
            continue
        # The inventory parser writes "standard" for an empty Tier cell, which means
        # "the default tier" when the table has no standard tier.
        if tier == FALLBACK_DEFAULT_TIER:
            continue
        location = _source_location(system.get("source"))
        problems.append(
            DocumentProblem(
                location,
                f"unknown tier {tier!r}: the tiers are {', '.join(table.names)} "
                f"({table.source}); the system is scheduled as {table.default_name!r}",
                name=system["name"],
            )
        )
    return problems


def _source_location(source: str | None) -> SourceLocation:
    # NOTE: the inventory keeps one location per row, so the column is the row's
    # first cell, not the Tier cell.
    if source:
        path, line, column = source.rsplit(":", 2)
        return SourceLocation(path, int(line), int(column))
    return SourceLocation("docs/infrastructure/system-inventory.md", 1)


def add_tier_problems(inventory: dict[str, Any], table: TierTable) -> list[DocumentProblem]:
    """Append the tiers document's problems and unknown-tier problems to an inventory value.

    Returns the problems that were added, so the caller can log them.
    """
    added = [*table.problems, *unknown_tier_problems(inventory["systems"], table)]
    inventory["problems"] = [*inventory["problems"], *(problem.to_dict() for problem in added)]
    return added


def order_by_tier(
    names: Iterable[str], tiers_by_system: Mapping[str, str], table: TierTable
) -> list[str]:
    """Sort system names by their tier's position in the table, then by name."""
    return sorted(names, key=lambda name: (table.rank(tiers_by_system.get(name)), name))


def contiguous_ranges(
    ordered_keys: Sequence[str], selected: Iterable[str]
) -> list[tuple[str, str]]:
    """Split the selected keys into (first, last) runs of neighbours in ``ordered_keys``.

    Keys that are not in ``ordered_keys`` are ignored: they have no partition yet.
    """
    wanted = set(selected)
    ranges: list[tuple[str, str]] = []
    start: str | None = None
    previous: str | None = None
    for key in ordered_keys:
        if key in wanted:
            if start is None:
                start = key
            previous = key
            continue
        if start is not None and previous is not None:
            ranges.append((start, previous))
        start = previous = None
    if start is not None and previous is not None:
        ranges.append((start, previous))
    return ranges
