"""Tests of the pipe-table reader in prep_assets.inventory.markdown."""

import pytest

from prep_assets.inventory.markdown import (
    attribute_key,
    find_tables,
    is_missing,
    map_columns,
    normalize_header,
    parse_yes_no,
)


def table_texts(text: str) -> list[list[list[str]]]:
    """Return each table as a list of rows of cell texts, header first."""
    return [
        [[cell.text for cell in table.header]]
        + [[cell.text for cell in row.cells] for row in table.rows]
        for table in find_tables(text)
    ]


# (case id, Markdown text, expected tables as rows of cell texts with the header first)
TABLE_CASES = [
    (
        "leading and trailing pipes",
        "| a | b |\n| --- | --- |\n| 1 | 2 |\n",
        [[["a", "b"], ["1", "2"]]],
    ),
    (
        "no outer pipes",
        "a | b\n--- | ---\n1 | 2\n",
        [[["a", "b"], ["1", "2"]]],
    ),
    (
        "only a leading pipe",
        "| a | b\n| --- | ---\n| 1 | 2\n",
        [[["a", "b"], ["1", "2"]]],
    ),
    (
        "alignment row with colons",
        "| a | b | c |\n|:---|:---:|---:|\n| 1 | 2 | 3 |\n",
        [[["a", "b", "c"], ["1", "2", "3"]]],
    ),
    (
        "delimiter without spaces",
        "|a|b|\n|-|-|\n|1|2|\n",
        [[["a", "b"], ["1", "2"]]],
    ),
    (
        "single column",
        "| Name |\n| --- |\n| pve1 |\n",
        [[["Name"], ["pve1"]]],
    ),
    (
        "escaped pipe",
        "| a | b |\n| - | - |\n| x \\| y | 2 |\n",
        [[["a", "b"], ["x | y", "2"]]],
    ),
    (
        "pipe inside backticks",
        "| a | b |\n| - | - |\n| `x|y` | 2 |\n",
        [[["a", "b"], ["x|y", "2"]]],
    ),
    (
        "escaped pipe inside backticks",
        "| a | b |\n| - | - |\n| `x\\|y` | 2 |\n",
        [[["a", "b"], ["x|y", "2"]]],
    ),
    (
        "double backticks around a backtick",
        "| a | b |\n| - | - |\n| `` a`|b `` | 2 |\n",
        [[["a", "b"], ["a`|b", "2"]]],
    ),
    (
        "unclosed backtick is literal",
        "| a | b |\n| - | - |\n| `x | 2 |\n",
        [[["a", "b"], ["`x", "2"]]],
    ),
    (
        "backslash before a letter is kept",
        "| a |\n| - |\n| C:\\temp |\n",
        [[["a"], ["C:\\temp"]]],
    ),
    (
        "backtick header",
        "| `Name` | `SSH_user` |\n| - | - |\n| a | b |\n",
        [[["Name", "SSH_user"], ["a", "b"]]],
    ),
    (
        "short row padded with empty cells",
        "| a | b | c |\n| - | - | - |\n| 1 |\n",
        [[["a", "b", "c"], ["1", "", ""]]],
    ),
    (
        "extra cells dropped",
        "| a | b |\n| - | - |\n| 1 | 2 | 3 | 4 |\n",
        [[["a", "b"], ["1", "2"]]],
    ),
    (
        "empty cells stay empty",
        "| a | b | c |\n| - | - | - |\n|  | - |   |\n",
        [[["a", "b", "c"], ["", "-", ""]]],
    ),
    (
        "header only",
        "| a | b |\n| - | - |\n",
        [[["a", "b"]]],
    ),
    (
        "blank line ends the table",
        "| a |\n| - |\n| 1 |\n\n| 2 |\n",
        [[["a"], ["1"]]],
    ),
    (
        "line without a pipe ends the table",
        "| a |\n| - |\n| 1 |\nsome text\n| 2 |\n",
        [[["a"], ["1"]]],
    ),
    (
        "heading ends the table",
        "| a |\n| - |\n| 1 |\n## next\n| 2 |\n",
        [[["a"], ["1"]]],
    ),
    (
        "two tables",
        "| a |\n| - |\n| 1 |\n\n| b | c |\n| - | - |\n| 2 | 3 |\n",
        [[["a"], ["1"]], [["b", "c"], ["2", "3"]]],
    ),
    (
        "delimiter cell count differs",
        "| a | b |\n| - |\n| 1 | 2 |\n",
        [],
    ),
    (
        "setext underline is not a delimiter",
        "a | b\n---\n",
        [],
    ),
    (
        "header without a pipe",
        "Name\n| --- |\n| x |\n",
        [],
    ),
    (
        "delimiter with text is not a delimiter",
        "| a | b |\n| x | - |\n",
        [],
    ),
    (
        "table in backtick fence ignored",
        "```\n| a | b |\n| - | - |\n| 1 | 2 |\n```\n",
        [],
    ),
    (
        "table in tilde fence ignored",
        "~~~markdown\n| a |\n| - |\n| 1 |\n~~~\n",
        [],
    ),
    (
        "shorter fence does not close a longer one",
        "````\n```\n| a |\n| - |\n| 1 |\n````\n| b |\n| - |\n| 2 |\n",
        [[["b"], ["2"]]],
    ),
    (
        "unclosed fence runs to the end",
        "```\n| a |\n| - |\n| 1 |\n",
        [],
    ),
    (
        "table in HTML comment ignored",
        "<!--\n| a |\n| - |\n| 1 |\n-->\n| b |\n| - |\n| 2 |\n",
        [[["b"], ["2"]]],
    ),
    (
        "one-line HTML comment",
        "<!-- note -->\n| b |\n| - |\n| 2 |\n",
        [[["b"], ["2"]]],
    ),
    (
        "heading with a pipe is not a header row",
        "## a | b\n| - | - |\n",
        [],
    ),
    (
        "windows line endings",
        "| a | b |\r\n| - | - |\r\n| 1 | 2 |\r\n",
        [[["a", "b"], ["1", "2"]]],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [case[1:] for case in TABLE_CASES],
    ids=[case[0] for case in TABLE_CASES],
)
def test_find_tables_cells(text: str, expected: list[list[list[str]]]) -> None:
    assert table_texts(text) == expected


# Each case is a table row, a caret line marking where a cell starts, and the cell's
# expected text. The row is the third line of a table with the same number of columns.
POSITION_CASES = [
    ("| web | debian |", "  ^", "web"),
    ("| web | debian |", "        ^", "debian"),
    ("web|debian", "^", "web"),
    ("web|debian", "    ^", "debian"),
    ("|  | debian |", " ^", ""),
    ("| `a|b` | x |", "  ^", "a|b"),
    ("| `a|b` | x |", "          ^", "x"),
    ("| a \\| b | x |", "           ^", "x"),
    ("   | indented | x |", "     ^", "indented"),
]


@pytest.mark.parametrize(("row", "caret", "expected_text"), POSITION_CASES)
def test_cell_line_and_column(row: str, caret: str, expected_text: str) -> None:
    text = "| h1 | h2 |\n| -- | -- |\n" + row + "\n"
    (table,) = find_tables(text)
    (parsed_row,) = table.rows
    cells = {cell.column: cell for cell in parsed_row.cells}
    expected_column = caret.index("^") + 1

    assert expected_column in cells, f"no cell starts at column {expected_column}"
    assert cells[expected_column].text == expected_text
    assert cells[expected_column].line == 3
    assert parsed_row.line == 3


def test_header_cells_have_positions() -> None:
    text = "intro\n\n| Name | Type |\n| --- | --- |\n"
    (table,) = find_tables(text)
    assert table.line == 3
    assert [(cell.line, cell.column) for cell in table.header] == [(3, 3), (3, 10)]


def test_padded_cell_points_past_line_end() -> None:
    text = "| a | b |\n| - | - |\n| 1 |\n"
    (table,) = find_tables(text)
    padded = table.rows[0].cells[1]
    assert padded.text == ""
    assert (padded.line, padded.column) == (3, 6)


def test_cell_location_uses_path() -> None:
    text = "| a |\n| - |\n| x |\n"
    (table,) = find_tables(text)
    assert str(table.rows[0].cells[0].location("docs/x.md")) == "docs/x.md:3:3"


def test_raw_keeps_backticks_and_escapes() -> None:
    text = "| a |\n| - |\n| `x` \\| y |\n"
    (table,) = find_tables(text)
    cell = table.rows[0].cells[0]
    assert cell.text == "x | y"
    assert cell.raw == "`x` \\| y"


# (case id, Markdown text, expected heading texts of the first table, outermost first)
HEADING_CASES = [
    ("no heading", "| a |\n| - |\n", []),
    ("nearest heading", "# Top\n\n## Servers\n\n| a |\n| - |\n", ["Top", "Servers"]),
    (
        "sibling heading replaces previous",
        "# Top\n## One\n## Two\n| a |\n| - |\n",
        ["Top", "Two"],
    ),
    (
        "deeper heading nests",
        "## Unmanaged devices\n### Network\n| a |\n| - |\n",
        ["Unmanaged devices", "Network"],
    ),
    (
        "higher level heading pops",
        "# A\n### Deep\n## B\n| a |\n| - |\n",
        ["A", "B"],
    ),
    ("closing hashes removed", "## Servers ##\n| a |\n| - |\n", ["Servers"]),
    ("backticks removed", "## `proxmox-host`\n| a |\n| - |\n", ["proxmox-host"]),
    ("hash without space is not a heading", "#hashtag\n| a |\n| - |\n", []),
    ("heading in fence ignored", "```\n# Fake\n```\n| a |\n| - |\n", []),
    ("indented up to three spaces", "   ## Servers\n| a |\n| - |\n", ["Servers"]),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [case[1:] for case in HEADING_CASES],
    ids=[case[0] for case in HEADING_CASES],
)
def test_table_headings(text: str, expected: list[str]) -> None:
    (table,) = find_tables(text)
    assert [heading.text for heading in table.headings] == expected
    assert table.heading == (expected[-1] if expected else None)


def test_heading_records_level_and_line() -> None:
    (table,) = find_tables("# Top\n\n### Deep\n| a |\n| - |\n")
    assert [(heading.level, heading.line) for heading in table.headings] == [(1, 1), (3, 3)]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Name", "name"),
        ("`SSH_Port`", "ssh port"),
        ("ssh-port", "ssh port"),
        ("  IP   address ", "ip address"),
        ("**Jump host**", "jump host"),
        ("ProxyJump", "proxyjump"),
        ("", ""),
    ],
)
def test_normalize_header(header: str, expected: str) -> None:
    assert normalize_header(header) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Read only", "read-only"),
        ("read_only", "read-only"),
        ("`VM ID`", "vm-id"),
        ("Notes", "notes"),
    ],
)
def test_attribute_key(header: str, expected: str) -> None:
    assert attribute_key(header) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", True),
        ("  ", True),
        ("-", True),
        ("\u2014", True),
        ("\u2013", True),
        ("x", False),
        ("--", False),
    ],
)
def test_is_missing(value: str, expected: bool) -> None:
    assert is_missing(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("yes", True),
        ("Y", True),
        ("TRUE", True),
        ("1", True),
        ("no", False),
        ("n", False),
        ("False", False),
    ],
)
def test_parse_yes_no(value: str, expected: bool) -> None:
    assert parse_yes_no(value) is expected


def test_parse_yes_no_rejects_other_words() -> None:
    with pytest.raises(ValueError, match="invalid value 'maybe': expected yes or no"):
        parse_yes_no("maybe")


def test_map_columns_first_synonym_wins() -> None:
    (table,) = find_tables("| Host | Name | Notes | |\n| - | - | - | - |\n")
    fields, others = map_columns(table.header, {"host": "name", "name": "name"})
    assert fields == {"name": 0}
    assert others == [1, 2]
