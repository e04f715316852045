"""The short sample taken by the check runner never fails the check it rides on."""

from prep_assets.checks.runner import CheckSettings, SampleRequest, check_system
from prep_assets.models import AccessMethod, AccessState, System, ToolSpec, ToolState
from prep_assets.transports.local import LocalTransport

LOCAL = System("local-1", "linux", "standard", AccessMethod.LOCAL)


def broken_parse(text):
    raise ValueError("no '=== prep-assets ...' markers found")


def test_unparsable_sample_is_an_error_value():
    sample = SampleRequest(["echo", "not a sample"], broken_parse)

    check = check_system(
        LOCAL, [ToolSpec("sh")], lambda system: LocalTransport(system.name), CheckSettings(), sample
    )

    assert check.access.state is AccessState.REACHABLE
    assert check.tools[0].state is ToolState.INSTALLED
    assert "markers" in check.sample["error"]


def test_failed_sample_command_is_an_error_value():
    sample = SampleRequest(["false"], broken_parse)

    check = check_system(
        LOCAL, [ToolSpec("sh")], lambda system: LocalTransport(system.name), CheckSettings(), sample
    )

    assert check.access.state is AccessState.REACHABLE
    assert check.sample == {"error": "sample command exited with 1"}


def test_sample_duration_extends_timeout():
    sample = SampleRequest(
        ["sleep", "1.5"], lambda text: {"source": "sample", "metrics": []}, duration_seconds=2
    )

    check = check_system(
        LOCAL,
        [ToolSpec("sh")],
        lambda system: LocalTransport(system.name),
        CheckSettings(timeout=1),
        sample,
    )

    assert check.sample == {"source": "sample", "metrics": []}


class BrokenTransport:
    system = "broken"

    def run(self, argv, timeout):
        raise EOFError("the server closed the channel")

    def close(self):
        pass


def test_unexpected_error_stays_with_its_system():
    from prep_assets.checks.runner import check_systems

    systems = [System("broken", "linux", "standard", AccessMethod.SSH, address="127.0.0.1"), LOCAL]

    def opener(system):
        return BrokenTransport() if system.name == "broken" else LocalTransport(system.name)

    checks = check_systems(systems, lambda system: [ToolSpec("sh")], opener, CheckSettings())

    assert checks["broken"].access.state is AccessState.ERROR
    assert "EOFError" in checks["broken"].access.message
    assert checks["local-1"].access.state is AccessState.REACHABLE
