"""Find GitHub-style pipe tables in Markdown text, with the position of every cell.

Only what the infra docs need is parsed: ATX headings (``#`` to ``######``), fenced
code blocks (tables inside them are ignored), HTML comment blocks (ignored the same
way) and pipe tables. A table is a header row, a delimiter row such as
``| --- | :-: |`` with the same number of cells, and the body rows below.

Differences from GitHub's renderer, chosen so that a value written in a table is
read the way an operator expects:

- A pipe inside a code span (``a|b`` in backticks) does not split the cell. GitHub
  splits it unless the pipe is escaped as ``\\|``. Both forms work here.
- The table ends at the first blank line, heading, fence, HTML comment or line
  without an unescaped pipe. GitHub would read a pipe-less line directly below a
  table as one more row.

Body rows with fewer cells than the header are padded with empty cells, and extra
cells are dropped, as GitHub does.

The module also has the helpers that every docs parser uses on cell values:
``is_missing``, ``normalize_header``, ``attribute_key`` and ``parse_yes_no``.
"""

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from prep_assets.models import DocumentProblem, SourceLocation

T = TypeVar("T")

_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
_HEADING_CLOSING = re.compile(r"(?:^|[ \t]+)#+[ \t]*$")
_COMMENT_OPEN = re.compile(r"^ {0,3}<!--")
_DELIMITER_CELL = re.compile(r"^:?-+:?$")

# Cell values that mean "not given": empty, a hyphen, an en dash or an em dash.
MISSING_VALUES = frozenset({"", "-", "\u2013", "\u2014"})

_YES = frozenset({"yes", "y", "true", "1"})
_NO = frozenset({"no", "n", "false", "0"})


@dataclass(frozen=True)
class Cell:
    """One table cell.

    ``text`` is the cell's content with surrounding spaces and code-span backticks
    removed and backslash escapes such as ``\\|`` resolved. ``raw`` is the content as written,
    stripped. ``line`` and ``column`` are 1-based and point at the first character
    of the content, or just after the opening pipe when the cell is empty.
    """

    text: str
    raw: str
    line: int
    column: int

    def location(self, path: str) -> SourceLocation:
        return SourceLocation(path, self.line, self.column)


@dataclass(frozen=True)
class Row:
    """A body row, with exactly as many cells as the table's header."""

    cells: tuple[Cell, ...]
    line: int


@dataclass(frozen=True)
class Heading:
    """An ATX heading: its text without the ``#`` marks, level 1 to 6, and 1-based line."""

    text: str
    level: int
    line: int


@dataclass(frozen=True)
class Table:
    """A pipe table with the headings it sits under, outermost first."""

    header: tuple[Cell, ...]
    rows: tuple[Row, ...]
    line: int
    headings: tuple[Heading, ...] = ()

    @property
    def heading(self) -> str | None:
        """Text of the nearest heading above the table, or None when there is none."""
        return self.headings[-1].text if self.headings else None


@dataclass
class _SplitLine:
    cells: list[Cell]
    pipe_count: int


def find_tables(text: str) -> list[Table]:
    """Return every pipe table of ``text`` in document order, skipping code and comments."""
    lines = text.splitlines()
    tables: list[Table] = []
    headings: list[Heading] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        line_number = index + 1

        fence = _FENCE_OPEN.match(line)
        if fence and not (fence.group(1)[0] == "`" and "`" in fence.group(2)):
            index = _skip_fenced_block(lines, index, fence.group(1))
            continue

        if _COMMENT_OPEN.match(line):
            index = _skip_comment_block(lines, index)
            continue

        heading = _parse_heading(line, line_number)
        if heading is not None:
            while headings and headings[-1].level >= heading.level:
                headings.pop()
            headings.append(heading)
            index += 1
            continue

        table = _read_table(lines, index, tuple(headings))
        if table is None:
            index += 1
            continue
        tables.append(table)
        index += 2 + len(table.rows)
    return tables


def _skip_fenced_block(lines: list[str], index: int, opening: str) -> int:
    """Return the index of the line after the fence that closes the block opened at ``index``.

    A block that is never closed runs to the end of the text, as in CommonMark.
    """
    closing = re.compile(
        r"^ {0,3}" + re.escape(opening[0]) + "{" + str(len(opening)) + r",}[ \t]*$"
    )
    for later in range(index + 1, len(lines)):
        if closing.match(lines[later]):
            return later + 1
    return len(lines)


def _skip_comment_block(lines: list[str], index: int) -> int:
    """Return the index of the line after the one that contains the closing ``-->``."""
    first = lines[index]
    if "-->" in first[first.index("<!--") + 4 :]:
        return index + 1
    for later in range(index + 1, len(lines)):
        if "-->" in lines[later]:
            return later + 1
    return len(lines)


def _parse_heading(line: str, line_number: int) -> Heading | None:
    match = _HEADING.match(line)
    if match is None:
        return None
    content = _HEADING_CLOSING.sub("", match.group(2) or "")
    text = _split_cells(content, line_number, split_on_pipes=False).cells[0].text
    return Heading(text=text, level=len(match.group(1)), line=line_number)


def _is_block_start(line: str) -> bool:
    return bool(
        not line.strip()
        or _HEADING.match(line)
        or _FENCE_OPEN.match(line)
        or _COMMENT_OPEN.match(line)
    )


def _read_table(lines: list[str], index: int, headings: tuple[Heading, ...]) -> Table | None:
    """Read the table whose header row is at ``index``, or return None if there is none."""
    if index + 1 >= len(lines) or _is_block_start(lines[index]):
        return None
    header = _split_cells(lines[index], index + 1)
    if header.pipe_count == 0:
        return None
    delimiter_line = lines[index + 1]
    if "|" not in delimiter_line or "-" not in delimiter_line:
        return None
    delimiter = _split_cells(delimiter_line, index + 2)
    if len(delimiter.cells) != len(header.cells):
        return None
    if not all(_DELIMITER_CELL.match(cell.raw.replace(" ", "")) for cell in delimiter.cells):
        return None

    rows: list[Row] = []
    width = len(header.cells)
    row_index = index + 2
    while row_index < len(lines) and not _is_block_start(lines[row_index]):
        line_number = row_index + 1
        split = _split_cells(lines[row_index], line_number)
        if split.pipe_count == 0:
            break
        cells = split.cells[:width]
        padding_column = len(lines[row_index].rstrip()) + 1
        while len(cells) < width:
            cells.append(Cell(text="", raw="", line=line_number, column=padding_column))
        rows.append(Row(cells=tuple(cells), line=line_number))
        row_index += 1

    return Table(header=tuple(header.cells), rows=tuple(rows), line=index + 1, headings=headings)


def _split_cells(line: str, line_number: int, split_on_pipes: bool = True) -> _SplitLine:
    """Split one table line into cells, honouring ``\\|`` and code spans.

    With ``split_on_pipes`` false the whole line is one cell; headings use this to
    get the same backtick and escape handling as cells.
    """
    cells: list[Cell] = []
    pipe_count = 0
    position = 0
    length = len(line)

    while position < length and line[position] in " \t":
        position += 1
    if split_on_pipes and position < length and line[position] == "|":
        pipe_count += 1
        position += 1

    text_parts: list[str] = []
    cell_start = position
    ended_with_pipe = False
    while position < length:
        char = line[position]
        if char == "\\" and position + 1 < length and line[position + 1] in string.punctuation:
            # A backslash escapes ASCII punctuation, as in CommonMark, so ``\|`` is a pipe.
            text_parts.append(line[position + 1])
            position += 2
        elif char == "`":
            position = _read_code_span(line, position, text_parts)
        elif char == "|" and split_on_pipes:
            pipe_count += 1
            cells.append(_make_cell(line, cell_start, position, text_parts, line_number))
            text_parts = []
            position += 1
            cell_start = position
            ended_with_pipe = not line[position:].strip()
        else:
            text_parts.append(char)
            position += 1

    if not ended_with_pipe or not cells:
        cells.append(_make_cell(line, cell_start, length, text_parts, line_number))
    return _SplitLine(cells=cells, pipe_count=pipe_count)


def _read_code_span(line: str, position: int, text_parts: list[str]) -> int:
    """Append the code span that starts at ``position`` to ``text_parts`` and return the next position.

    A backtick run without a closing run of the same length is literal text.
    """
    run_end = position
    while run_end < len(line) and line[run_end] == "`":
        run_end += 1
    run_length = run_end - position

    search = run_end
    while True:
        close = line.find("`" * run_length, search)
        if close == -1:
            text_parts.append(line[position:run_end])
            return run_end
        close_end = close + run_length
        if close_end < len(line) and line[close_end] == "`":
            search = close_end
            while search < len(line) and line[search] == "`":
                search += 1
            continue
        break

    content = line[run_end:close].replace("\\|", "|")
    # CommonMark strips one space on each side when both are present.
    if len(content) >= 2 and content[0] == " " and content[-1] == " " and content.strip():
        content = content[1:-1]
    text_parts.append(content)
    return close_end


def _make_cell(line: str, start: int, end: int, text_parts: list[str], line_number: int) -> Cell:
    segment = line[start:end]
    leading = len(segment) - len(segment.lstrip())
    column = start + (leading if segment.strip() else 0) + 1
    return Cell(
        text="".join(text_parts).strip(),
        raw=segment.strip(),
        line=line_number,
        column=column,
    )


def is_missing(value: str) -> bool:
    """Return whether a cell value means "not given": empty, ``-``, ``–`` or ``—``."""
    return value.strip() in MISSING_VALUES


def normalize_header(text: str) -> str:
    """Return a header cell's text in lower case with ``_`` and ``-`` as spaces.

    Backticks and ``*`` emphasis marks are dropped and runs of spaces collapse, so
    ``SSH_Port``, ``ssh-port`` and ``**SSH port**`` all become ``ssh port``.
    """
    cleaned = text.replace("`", "").replace("*", "").replace("_", " ").replace("-", " ")
    return " ".join(cleaned.lower().split())


def attribute_key(header_text: str) -> str:
    """Return the key under which an unrecognised column is stored: ``Read only`` -> ``read-only``."""
    return normalize_header(header_text).replace(" ", "-")


def parse_yes_no(value: str) -> bool:
    """Parse yes/no, true/false, y/n or 1/0 in any case; raise ValueError otherwise."""
    lowered = value.strip().lower()
    if lowered in _YES:
        return True
    if lowered in _NO:
        return False
    raise ValueError(f"invalid value {value!r}: expected yes or no")


def map_columns(
    header: tuple[Cell, ...], synonyms: dict[str, str]
) -> tuple[dict[str, int], list[int]]:
    """Match header cells to field names and return the fields' column indexes and the rest.

    ``synonyms`` maps a normalised header (see ``normalize_header``) to a field
    name. When two columns mean the same field, the first one is used and the
    later one is returned with the unmatched columns. Columns with an empty header
    are left out of both.
    """
    fields: dict[str, int] = {}
    others: list[int] = []
    for index, cell in enumerate(header):
        normalized = normalize_header(cell.text)
        if not normalized:
            continue
        field_name = synonyms.get(normalized)
        if field_name is not None and field_name not in fields:
            fields[field_name] = index
        else:
            others.append(index)
    return fields, others


def field_cell(row: Row, fields: dict[str, int], field_name: str) -> Cell | None:
    """Return the row's cell for a field from ``map_columns``, or None when the table lacks it."""
    index = fields.get(field_name)
    return None if index is None else row.cells[index]


def field_value(row: Row, fields: dict[str, int], field_name: str) -> str | None:
    """Return the row's text for a field, or None when the column is absent or the value missing."""
    cell = field_cell(row, fields, field_name)
    if cell is None or is_missing(cell.text):
        return None
    return cell.text


def read_field(
    row: Row,
    fields: dict[str, int],
    field_name: str,
    parser: Callable[[str], T],
    path: str,
    problems: list[DocumentProblem],
    name: str | None = None,
) -> T | None:
    """Parse a row's field with ``parser`` and return the result, or None when the value is missing.

    When ``parser`` raises ValueError, its message becomes a problem located at the
    cell, appended to ``problems``, and None is returned.
    """
    text = field_value(row, fields, field_name)
    if text is None:
        return None
    try:
        return parser(text)
    except ValueError as error:
        cell = field_cell(row, fields, field_name)
        assert cell is not None
        problems.append(DocumentProblem(cell.location(path), str(error), name=name))
        return None
