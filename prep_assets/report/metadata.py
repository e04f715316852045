"""Metadata values that the Dagster layer shows as Markdown or as a path in the UI."""

from collections.abc import Sequence
from typing import Any


class MarkdownText(str):
    """Text that the UI renders as Markdown."""


class FilePath(str):
    """A path that the UI shows as a path."""


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], limit: int = 50
) -> MarkdownText:
    """Render rows as a Markdown table, at most ``limit`` rows with a line saying how many were cut."""
    if not rows:
        return MarkdownText("_none_")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows[:limit]:
        cells = [
            "-"
            if value is None or value == ""
            else str(value).replace("|", "\\|").replace("\n", " ")
            for value in row
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if len(rows) > limit:
        lines.append(f"\n{len(rows) - limit} more rows are not shown.")
    return MarkdownText("\n".join(lines))
