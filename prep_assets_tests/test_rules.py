"""The RULES step for systems whose access broke, with and without a maintenance window."""

from datetime import UTC, datetime

from prep_assets.changes.git_review import CommitInfo, MaintenanceWindow
from prep_assets.models import AccessMethod, AccessResult, AccessState, System, SystemCheck
from prep_assets.rules import Action, decide_actions

COMMIT = CommitInfo(
    sha="d" * 40,
    short_sha="ddddddd",
    author="Test Operator",
    committed_at="2026-12-01T09:00:00Z",
    subject="Upgrade the NAS firmware",
)


def unreachable(name: str) -> SystemCheck:
    access = AccessResult(name, AccessState.UNREACHABLE, "ssh", message="connection refused")
    return SystemCheck(name, access, [])


def test_broken_access_inside_window_recorded():
    systems = [
        System(name, "linux", "standard", AccessMethod.SSH, address="127.0.0.2")
        for name in ("nas", "web")
    ]
    checks = {name: unreachable(name) for name in ("nas", "web")}
    window = MaintenanceWindow(
        "nas",
        datetime(2026, 12, 4, 22, 0, tzinfo=UTC),
        datetime(2026, 12, 5, 2, 0, tzinfo=UTC),
        COMMIT,
    )

    actions = {action.system: action for action in decide_actions(systems, checks, [], [window])}

    assert actions["nas"].action is Action.RECORD
    assert actions["nas"].trigger == "access_broken"
    assert actions["nas"].commit == "ddddddd"
    assert actions["nas"].reason == (
        "access unreachable: connection refused; expected during the maintenance window "
        "2026-12-04T22:00:00Z/2026-12-05T02:00:00Z"
    )
    assert actions["web"].action is Action.INVESTIGATE
    assert actions["web"].reason == "access unreachable: connection refused"
    assert actions["web"].commit is None
