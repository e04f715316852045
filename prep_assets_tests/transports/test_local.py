import time
from pathlib import Path

import pytest

from prep_assets.models import AccessState
from prep_assets.transports.base import TransportTimeoutError
from prep_assets.transports.local import LocalTransport


def _process_is_running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    # A zombie has exited and only waits for its parent to reap it.
    return "\nState:\tZ" not in status


def test_run_returns_output_and_exit_code() -> None:
    transport = LocalTransport("local")

    result = transport.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)

    assert result.exit_code == 3
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.duration_seconds >= 0
    assert not result.ok


def test_missing_program_returns_127() -> None:
    transport = LocalTransport("local")

    result = transport.run(["prep-assets-no-such-program"], timeout=10)

    assert result.exit_code == 127
    assert "prep-assets-no-such-program" in result.stderr


def test_metacharacters_are_passed_literally(tmp_path: Path) -> None:
    marker = tmp_path / "x"
    argument = f"iostat; touch {marker}"
    transport = LocalTransport("local")

    echoed = transport.run(["echo", argument], timeout=10)
    as_program = transport.run([argument], timeout=10)

    assert echoed.stdout == argument + "\n"
    assert as_program.exit_code == 127
    assert not marker.exists()


def test_timeout_kills_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    transport = LocalTransport("local")
    # The background sleep is a grandchild in the same process group.
    script = f"sleep 30 & echo $! > {pid_file}; wait"

    started = time.monotonic()
    with pytest.raises(TransportTimeoutError) as caught:
        transport.run(["sh", "-c", script], timeout=0.5)
    elapsed = time.monotonic() - started

    assert caught.value.state is AccessState.TIMED_OUT
    assert "0.5 s" in str(caught.value)
    assert elapsed < 0.5 + 2
    child_pid = int(pid_file.read_text())
    deadline = time.monotonic() + 2
    while _process_is_running(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _process_is_running(child_pid)


def test_empty_argv_raises_value_error() -> None:
    transport = LocalTransport("local")

    with pytest.raises(ValueError):
        transport.run([], timeout=10)


def test_environment_is_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREP_ASSETS_TEST_VALUE", "inherited")
    transport = LocalTransport("local")

    result = transport.run(["sh", "-c", "echo $PREP_ASSETS_TEST_VALUE"], timeout=10)

    assert result.stdout == "inherited\n"
