"""Find systems whose per-system results are older than their tier allows.

A system's result of a step is stale when its latest materialization is older
than the tier's window for that step, or when the step never ran for it.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prep_assets.report.document import PER_SYSTEM_STEPS
from prep_assets.report.metadata import MarkdownText, markdown_table
from prep_assets.tiers import TierTable, format_duration


@dataclass(frozen=True)
class StaleStep:
    """One step whose latest result for a system is too old, or missing."""

    step: str
    last_checked: datetime | None
    age: timedelta | None
    window: timedelta

    def describe(self) -> str:
        if self.age is None:
            return f"{self.step} never checked (window {format_duration(self.window)})"
        return (
            f"{self.step} last checked {format_duration(self.age)} ago "
            f"(window {format_duration(self.window)})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "last_checked": _iso(self.last_checked),
            "age_seconds": None if self.age is None else round(self.age.total_seconds()),
            "window_seconds": round(self.window.total_seconds()),
        }


@dataclass(frozen=True)
class StaleSystem:
    """A system with at least one stale step, and the tier whose windows applied."""

    system: str
    tier: str
    steps: tuple[StaleStep, ...]

    @property
    def max_age(self) -> timedelta | None:
        """Age of the oldest stale step; None when a step never ran."""
        ages = [step.age for step in self.steps]
        if any(age is None for age in ages):
            return None
        return max(age for age in ages if age is not None)

    def step(self, name: str) -> StaleStep | None:
        return next((step for step in self.steps if step.step == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "tier": self.tier,
            "steps": [step.to_dict() for step in self.steps],
        }


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def find_stale_systems(
    tiers_by_system: Mapping[str, str],
    last_checked: Mapping[str, Mapping[str, datetime | None]],
    table: TierTable,
    now: datetime,
    steps: Sequence[str] = PER_SYSTEM_STEPS,
) -> list[StaleSystem]:
    """Return the stale systems, sorted by name.

    ``tiers_by_system`` names every system to judge with its (resolved) tier, and
    ``last_checked`` maps {system: {step: time of the latest materialization}}.
    """
    stale: list[StaleSystem] = []
    for system in sorted(tiers_by_system):
        tier = table.resolve(tiers_by_system[system])
        times = last_checked.get(system, {})
        stale_steps = []
        for step in steps:
            window = tier.window_for(step)
            moment = times.get(step)
            if moment is None:
                stale_steps.append(StaleStep(step, None, None, window))
                continue
            age = now - moment
            if age > window:
                stale_steps.append(StaleStep(step, moment, age, window))
        if stale_steps:
            stale.append(StaleSystem(system, tier.name, tuple(stale_steps)))
    return stale


def stale_for_step(stale: Sequence[StaleSystem], step: str) -> list[tuple[StaleSystem, StaleStep]]:
    """Return the systems whose result of ``step`` is stale, with that step's details."""
    found = []
    for system in stale:
        detail = system.step(step)
        if detail is not None:
            found.append((system, detail))
    return found


def stale_table(rows: Sequence[tuple[StaleSystem, StaleStep]]) -> MarkdownText:
    """Render stale systems of one step as a Markdown table."""
    return markdown_table(
        ["System", "Tier", "Last checked", "Age", "Window"],
        [
            [
                system.system,
                system.tier,
                _iso(detail.last_checked) or "never",
                "-" if detail.age is None else format_duration(detail.age),
                format_duration(detail.window),
            ]
            for system, detail in rows
        ],
    )


def summarize(rows: Sequence[tuple[StaleSystem, StaleStep]]) -> str:
    """Return one line that names every stale system with its tier and age."""
    if not rows:
        return "every system is within its tier's window"
    parts = []
    for system, detail in rows:
        age = "never checked" if detail.age is None else f"{format_duration(detail.age)} old"
        parts.append(f"{system.system} ({system.tier}, {age})")
    return f"{len(rows)} stale: " + ", ".join(parts)
