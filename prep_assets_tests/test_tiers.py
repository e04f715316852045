"""The tiers document: parsing, defaults, unknown tiers and partition key ordering."""

from datetime import timedelta

import pytest

from prep_assets.tiers import (
    DEFAULT_TIERS,
    TIERS_PATH,
    add_tier_problems,
    contiguous_ranges,
    format_duration,
    load_tiers,
    order_by_tier,
    parse_duration,
    parse_tiers,
    system_tiers,
    unknown_tier_problems,
    validate_cron,
)

TABLE = """\
# Tiers

Legend: how often each tier is checked.

| Tier     | Schedule    | Stale after | Default | Baselines |
| -------- | ----------- | ----------- | ------- | --------- |
| critical | 0 * * * *   | 2h          |         | 26h       |
| standard | 20 3 * * *  | 26h         | yes     |           |
| low      | 40 3 * * 0  | 8d          |         |           |
"""


def test_defaults_match_documentation():
    critical = DEFAULT_TIERS.get("critical")
    standard = DEFAULT_TIERS.get("standard")
    low = DEFAULT_TIERS.get("low")

    assert critical.schedule == "0 * * * *"
    assert critical.stale_after == timedelta(hours=2)
    assert standard.stale_after == timedelta(hours=26)
    assert low.stale_after == timedelta(days=8)
    assert DEFAULT_TIERS.default_name == "standard"


def test_parse_table_with_step_override():
    table = parse_tiers(TABLE)

    assert table.problems == ()
    assert table.names == ["critical", "standard", "low"]
    assert table.default_name == "standard"
    critical = table.get("critical")
    assert critical.window_for("tool_status") == timedelta(hours=2)
    assert critical.window_for("baselines") == timedelta(hours=26)
    assert table.source == TIERS_PATH


def test_default_without_default_column():
    table = parse_tiers(
        "| Tier | Cron | Max age |\n|---|---|---|\n| gold | @hourly | 90m |\n| silver | @daily | 1d 2h |\n"
    )

    assert table.default_name == "gold"
    assert table.get("silver").stale_after == timedelta(hours=26)
    assert table.get("gold").schedule == "@hourly"


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("| gold | 61 * * * * | 2h | |", "the minute must be within 0-59"),
        ("| gold | * * * * | 2h | |", "expected 5 fields"),
        ("| gold | 0 * * * * | soon | |", "invalid duration 'soon'"),
        ("| gold | 0 * * * * | 0h | |", "must be longer than zero"),
        ("| gold | 0 * * * * | | |", "missing Stale after"),
        ("| Gold Tier | 0 * * * * | 2h | |", "invalid tier name"),
        ("| gold | 0 * * * * | 2h | maybe |", "expected yes or no"),
        ("| gold |  | 2h | |", "missing schedule"),
    ],
)
def test_invalid_row_reported(row, expected):
    text = (
        "| Tier | Schedule | Stale after | Default |\n|---|---|---|---|\n"
        + row
        + "\n| silver | 0 3 * * * | 26h | |\n"
    )

    table = parse_tiers(text)

    assert len(table.problems) == 1, table.problems
    problem = table.problems[0]
    assert expected in problem.reason
    assert problem.location.path == TIERS_PATH
    assert problem.location.line == 3
    assert table.names == ["silver"], "the invalid row is left out"


def test_no_valid_row_keeps_built_in_tiers():
    table = parse_tiers("| Tier | Schedule | Stale after |\n|---|---|---|\n| gold | never | 2h |\n")

    assert table.names == DEFAULT_TIERS.names
    assert [problem.location.line for problem in table.problems] == [3, 1]
    assert "no valid tier rows" in table.problems[1].reason


def test_duplicate_tier_and_second_default_reported():
    text = (
        "| Tier | Schedule | Stale after | Default |\n|---|---|---|---|\n"
        "| gold | 0 * * * * | 2h | yes |\n"
        "| silver | 0 3 * * * | 26h | yes |\n"
        "| gold | 0 4 * * * | 26h | |\n"
    )

    table = parse_tiers(text)

    reasons = [problem.reason for problem in table.problems]
    assert any("duplicate tier 'gold'" in reason for reason in reasons)
    assert any("more than one default tier" in reason for reason in reasons)
    assert table.names == ["gold", "silver"]
    assert table.default_name == "gold"
    assert table.get("gold").schedule == "0 * * * *", "the first row of a tier wins"


def test_document_without_table():
    table = parse_tiers("# Tiers\n\nNothing here yet.\n")

    assert table.names == DEFAULT_TIERS.names
    assert "no tiers table" in table.problems[0].reason


def test_load_without_file(tmp_path):
    assert load_tiers(tmp_path) is DEFAULT_TIERS


def test_load_from_repo(tmp_path):
    path = tmp_path / TIERS_PATH
    path.parent.mkdir(parents=True)
    path.write_text(TABLE)

    assert load_tiers(tmp_path).get("critical").window_for("baselines") == timedelta(hours=26)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", 90), ("45 m", 2700), ("2h", 7200), ("1d 12h", 129600), ("1w", 604800), ("1.5h", 5400)],
)
def test_parse_duration(text, expected):
    assert parse_duration(text).total_seconds() == expected


def test_format_duration():
    assert format_duration(timedelta(hours=26)) == "1d 2h"
    assert format_duration(timedelta(seconds=45)) == "45s"
    assert format_duration(timedelta()) == "0s"


@pytest.mark.parametrize(
    "schedule", ["* * * * *", "*/5 * * * mon-fri", "0 3 * jan,jul sun", "@weekly", "0 0 1-15/2 * 7"]
)
def test_valid_cron(schedule):
    assert validate_cron(schedule)


@pytest.mark.parametrize(
    "schedule",
    [
        "* * *",
        "0 24 * * *",
        "0 0 0 * *",
        "0 0 * 13 *",
        "0 0 * * 8",
        "5-1 * * * *",
        "*/0 * * * *",
        "@often",
    ],
)
def test_invalid_cron(schedule):
    with pytest.raises(ValueError, match="invalid cron schedule"):
        validate_cron(schedule)


def system(name, tier, line):
    return {
        "name": name,
        "tier": tier,
        "source": f"docs/infrastructure/system-inventory.md:{line}:3",
    }


def test_unknown_tier_is_problem_and_default():
    systems = [system("pve1", "critical", 7), system("nas", "gold", 8), system("tv", "standard", 9)]

    problems = unknown_tier_problems(systems, DEFAULT_TIERS)

    assert len(problems) == 1
    assert problems[0].name == "nas"
    assert str(problems[0].location) == "docs/infrastructure/system-inventory.md:8:3"
    assert "unknown tier 'gold'" in problems[0].reason
    assert "scheduled as 'standard'" in problems[0].reason
    assert system_tiers(systems, DEFAULT_TIERS) == {
        "pve1": "critical",
        "nas": "standard",
        "tv": "standard",
    }


def test_add_tier_problems_to_inventory():
    inventory = {"systems": [system("nas", "gold", 8)], "problems": [{"file": "x", "line": 1}]}
    table = parse_tiers(
        "| Tier | Schedule | Stale after |\n|---|---|---|\n| standard | 0 3 * * * | soon |\n"
    )

    added = add_tier_problems(inventory, table)

    assert len(added) == 3
    assert [problem["file"] for problem in inventory["problems"]] == [
        "x",
        TIERS_PATH,
        TIERS_PATH,
        "docs/infrastructure/system-inventory.md",
    ]
    assert "(built-in defaults)" in inventory["problems"][-1]["reason"]


def test_order_by_tier():
    tiers = {"b-std": "standard", "a-low": "low", "z-crit": "critical", "c-std": "standard"}

    ordered = order_by_tier(list(tiers), tiers, DEFAULT_TIERS)

    assert ordered == ["z-crit", "b-std", "c-std", "a-low"]


@pytest.mark.parametrize(
    ("selected", "expected"),
    [
        ({"a", "b"}, [("a", "b")]),
        ({"a", "c", "d"}, [("a", "a"), ("c", "d")]),
        ({"e"}, [("e", "e")]),
        ({"x"}, []),
        (set(), []),
    ],
)
def test_contiguous_ranges(selected, expected):
    assert contiguous_ranges(["a", "b", "c", "d", "e"], selected) == expected


def test_empty_tier_cell_means_default_tier():
    table = parse_tiers(
        "| Tier | Schedule | Stale after |\n|---|---|---|\n| gold | @hourly | 2h |\n"
    )

    # The inventory parser stores an empty Tier cell as "standard".
    systems = [system("pve1", "standard", 7)]

    assert unknown_tier_problems(systems, table) == []
    assert system_tiers(systems, table) == {"pve1": "gold"}
