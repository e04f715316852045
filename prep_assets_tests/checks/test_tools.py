"""The tool check script and its parser, run through a real local shell."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from prep_assets.checks.tools import (
    compare_versions,
    parse_platform,
    parse_tool_check,
    tool_check_command,
)
from prep_assets.models import ToolSpec, ToolState
from prep_assets.transports.local import LocalTransport

SPECS = [
    ToolSpec("sh", {"apt": "dash"}),
    ToolSpec("no-such-tool-prep", {"apt": "no-such-package-prep"}),
]


def run_check(specs: list[ToolSpec]) -> str:
    transport = LocalTransport("local")
    try:
        result = transport.run(tool_check_command(specs), 10)
    finally:
        transport.close()
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_local_check_finds_installed_and_missing():
    results = {result.command: result for result in parse_tool_check(run_check(SPECS), SPECS)}

    assert results["sh"].state is ToolState.INSTALLED
    assert results["sh"].path == shutil.which("sh")
    assert results["no-such-tool-prep"].state is ToolState.MISSING
    assert results["no-such-tool-prep"].path is None


@pytest.mark.skipif(not Path("/usr/bin/dpkg-query").exists(), reason="needs a Debian system")
def test_local_check_reports_package_version():
    output = run_check(SPECS)

    assert parse_platform(output)["package_manager"] == "apt"
    dash = next(result for result in parse_tool_check(output, SPECS) if result.command == "sh")
    assert dash.package == "dash"
    assert dash.version and dash.version[0].isdigit()


def make_program(path: Path, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


def test_path_search_matches_command_v(tmp_path):
    not_executable = make_program(tmp_path / "first" / "tool-a", 0o644)
    executable = make_program(tmp_path / "second" / "tool-a")
    (tmp_path / "second" / "tool-b").mkdir()
    globbed = make_program(tmp_path / "dir*with?glob" / "tool-c")
    in_working_dir = make_program(tmp_path / "work" / "tool-d")
    search_path = ":".join(
        ["", str(not_executable.parent), str(executable.parent), str(globbed.parent)]
    )
    argv = tool_check_command(
        [ToolSpec(name) for name in ("tool-a", "tool-b", "tool-c", "tool-d", "echo", "/bin/sh")]
    )

    completed = subprocess.run(
        argv,
        env={"PATH": search_path},
        cwd=in_working_dir.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    records = [
        line.split("\t")
        for line in completed.stdout.splitlines()
        if line.startswith(("tool", "missing"))
    ]

    assert records == [
        ["tool", "tool-a", str(executable)],
        ["missing", "tool-b"],
        ["tool", "tool-c", str(globbed)],
        ["tool", "tool-d", "./tool-d"],
        ["tool", "echo", "echo"],
        ["tool", "/bin/sh", "/bin/sh"],
    ]
    assert completed.stderr == ""


def test_kernel_release_reported():
    output = run_check(SPECS)

    assert f"kernel\t{os.uname().release}" in output.splitlines()


def test_metacharacters_in_tool_name_are_literal(tmp_path):
    marker = tmp_path / "pwned"
    specs = [
        ToolSpec(f"iostat; touch {marker}"),
        ToolSpec(f"$(touch {marker})"),
        ToolSpec(f"`touch {marker}`"),
    ]

    results = parse_tool_check(run_check(specs), specs)

    assert [result.state for result in results] == [ToolState.MISSING] * 3
    assert not marker.exists()


def test_outdated_when_below_min_version():
    output = "pm\tapt\ntool\tiostat\t/usr/bin/iostat\npkg\tsysstat\t12.6.1-1\tii \n"
    specs = [ToolSpec("iostat", {"apt": "sysstat"}, min_version="12.7")]

    (result,) = parse_tool_check(output, specs)

    assert result.state is ToolState.OUTDATED
    assert result.version == "12.6.1-1"


def test_removed_package_has_no_version():
    output = "pm\tapt\ntool\tiostat\t/usr/local/bin/iostat\npkg\tsysstat\t12.6.1-1\trc \n"
    (result,) = parse_tool_check(output, [ToolSpec("iostat", {"apt": "sysstat"})])

    assert result.state is ToolState.INSTALLED
    assert result.version is None


def test_cut_output_gives_unknown():
    (result,) = parse_tool_check("", [ToolSpec("iostat")])

    assert result.state is ToolState.UNKNOWN


def test_builtin_has_no_path():
    (result,) = parse_tool_check("tool\techo\techo\n", [ToolSpec("echo")])

    assert result.state is ToolState.INSTALLED
    assert result.path is None


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("12.6.1-1", "12.6.1-1", 0),
        ("12.6.1-1", "12.7", -1),
        ("2:4.0.2-3", "4.0.1", 1),
        ("1.0~rc1", "1.0", -1),
        ("1.0", "1.0.1", -1),
        ("1.0a", "1.0", 1),
        ("10.0", "9.9", 1),
    ],
)
def test_compare_versions(left, right, expected):
    assert compare_versions(left, right) == expected


def test_path_restricted_environment(tmp_path):
    # With a PATH of one folder, only the tools linked there are found.
    (tmp_path / "bin").mkdir()
    os.symlink(shutil.which("true"), tmp_path / "bin" / "mytool")
    specs = [ToolSpec("mytool"), ToolSpec("ls")]
    argv = ["env", f"PATH={tmp_path / 'bin'}", *tool_check_command(specs)]
    result = LocalTransport("local").run(argv, 10)

    states = {r.command: r.state for r in parse_tool_check(result.stdout, specs)}

    assert states == {"mytool": ToolState.INSTALLED, "ls": ToolState.MISSING}
