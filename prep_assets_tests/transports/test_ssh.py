"""SshTransport against real OpenSSH test hosts started by the ssh_hosts fixture."""

import dataclasses
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from prep_assets.models import AccessState
from prep_assets.transports.base import (
    AuthenticationError,
    HostKeyMismatchError,
    HostKeyUnknownError,
    TransportError,
    TransportTimeoutError,
    UnreachableError,
)
from prep_assets.transports.ssh import SshTarget, SshTransport
from prep_assets_tests.sshhosts import HostKind, KeyPair, SshHost, SshHostPool

pytestmark = pytest.mark.integration

PASSPHRASE = "correct horse battery staple 7f3a"

StartHost = Callable[..., SshHost]
OpenTransport = Callable[[str, SshTarget], SshTransport]


@pytest.fixture
def transport_factory() -> Iterator[OpenTransport]:
    """Return a constructor of SshTransport whose transports are closed after the test."""
    opened: list[SshTransport] = []

    def open_transport(system: str, target: SshTarget) -> SshTransport:
        transport = SshTransport(system, target)
        opened.append(transport)
        return transport

    yield open_transport
    for transport in opened:
        transport.close()


@pytest.fixture(scope="module")
def passphrase_key(ssh_hosts: SshHostPool) -> KeyPair:
    return ssh_hosts.create_client_key("passphrase_ed25519", passphrase=PASSPHRASE)


def _run_and_catch(transport: SshTransport, argv: list[str]) -> TransportError:
    with pytest.raises(TransportError) as caught:
        transport.run(argv)
    return caught.value


def _exception_texts(exc: BaseException) -> list[str]:
    """Return str and repr of the exception and of every exception chained to it."""
    texts: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        texts.extend([str(current), repr(current)])
        current = current.__cause__ or current.__context__
    return texts


def _private_key_lines(key: KeyPair) -> list[str]:
    """Return the base64 body lines of a private key file."""
    return [
        line for line in key.private_key_text.splitlines() if line and "PRIVATE KEY" not in line
    ]


def test_run_returns_output_and_exit_code(
    ssh_hosts: SshHostPool, transport_factory: OpenTransport
) -> None:
    host = ssh_hosts["with_sysstat"]
    transport = transport_factory(host.name, host.ssh_target())

    result = transport.run(["sh", "-c", "echo out; echo err >&2; exit 3"])

    assert result.exit_code == 3
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.duration_seconds > 0


def test_sessions_see_only_host_bin_dir(
    ssh_hosts: SshHostPool, transport_factory: OpenTransport
) -> None:
    for name, expected_exit_code in (("with_sysstat", 0), ("without_sysstat", 127)):
        host = ssh_hosts[name]
        transport = transport_factory(host.name, host.ssh_target())

        path = transport.run(["sh", "-c", 'printf %s "$PATH"'])
        lookup = transport.run(["sh", "-c", "command -v iostat"])
        iostat = transport.run(["iostat"])

        assert path.stdout == str(host.bin_dir), name
        assert (lookup.exit_code == 0) is (expected_exit_code == 0), name
        assert iostat.exit_code == expected_exit_code, (name, iostat.stderr)


def test_closed_port_raises_unreachable(
    ssh_hosts: SshHostPool, transport_factory: OpenTransport
) -> None:
    host = ssh_hosts["closed_port"]
    transport = transport_factory(host.name, host.ssh_target())

    error = _run_and_catch(transport, ["true"])

    assert isinstance(error, UnreachableError)
    assert error.state is AccessState.UNREACHABLE
    assert f"{host.address}:{host.port}" in str(error)
    assert str(error).startswith(f"{host.name}: ")


def test_rejected_key_raises_authentication_error(
    ssh_hosts: SshHostPool, transport_factory: OpenTransport
) -> None:
    host = ssh_hosts["rejects_key"]
    transport = transport_factory(host.name, host.ssh_target())

    error = _run_and_catch(transport, ["true"])

    assert isinstance(error, AuthenticationError)
    assert error.state is AccessState.AUTH_FAILED
    assert "authorized_keys" in str(error)


def test_wrong_host_key_raises_mismatch(
    ssh_hosts: SshHostPool, transport_factory: OpenTransport
) -> None:
    host = ssh_hosts["wrong_host_key"]
    transport = transport_factory(host.name, host.ssh_target())

    error = _run_and_catch(transport, ["true"])

    assert isinstance(error, HostKeyMismatchError)
    assert error.state is AccessState.HOST_KEY_MISMATCH
    assert f"[{host.address}]:{host.port}" in str(error)
    # The wrong_host_key sshd never authenticated anyone.
    assert host.login_count() == 0


def test_unknown_host_key_raises_and_adds_nothing(
    ssh_hosts: SshHostPool, transport_factory: OpenTransport, tmp_path: Path
) -> None:
    host = ssh_hosts["with_sysstat"]
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")
    target = dataclasses.replace(host.ssh_target(), known_hosts_path=str(empty_known_hosts))
    transport = transport_factory(host.name, target)

    error = _run_and_catch(transport, ["true"])

    assert isinstance(error, HostKeyUnknownError)
    assert error.state is AccessState.HOST_KEY_UNKNOWN
    assert "ssh-keyscan" in str(error)
    assert empty_known_hosts.read_text() == ""


def test_missing_known_hosts_raises_unknown(
    ssh_hosts: SshHostPool, transport_factory: OpenTransport, tmp_path: Path
) -> None:
    host = ssh_hosts["with_sysstat"]
    missing = tmp_path / "no_known_hosts"
    target = dataclasses.replace(host.ssh_target(), known_hosts_path=str(missing))
    transport = transport_factory(host.name, target)

    error = _run_and_catch(transport, ["true"])

    assert isinstance(error, HostKeyUnknownError)
    assert "does not exist" in str(error)
    assert not missing.exists()


def test_silent_host_times_out_within_bound(
    ssh_hosts: SshHostPool, transport_factory: OpenTransport
) -> None:
    host = ssh_hosts["silent"]
    connect_timeout = 1.5
    transport = transport_factory(host.name, host.ssh_target(connect_timeout=connect_timeout))

    started = time.monotonic()
    error = _run_and_catch(transport, ["true"])
    elapsed = time.monotonic() - started

    assert isinstance(error, TransportTimeoutError)
    assert error.state is AccessState.TIMED_OUT
    assert "banner" in str(error)
    # A correctness bound with a generous margin, not a benchmark.
    assert elapsed < connect_timeout + 2


def test_command_timeout_keeps_connection(
    ssh_hosts: SshHostPool, transport_factory: OpenTransport
) -> None:
    host = ssh_hosts["with_sysstat"]
    transport = transport_factory(host.name, host.ssh_target())
    transport.run(["true"])

    # The remote sleep outlives the closed channel and ends by itself after 5 s.
    started = time.monotonic()
    with pytest.raises(TransportTimeoutError) as caught:
        transport.run(["sleep", "5"], timeout=1)
    elapsed = time.monotonic() - started
    after = transport.run(["echo", "still connected"])

    assert caught.value.state is AccessState.TIMED_OUT
    assert "'sleep'" in str(caught.value)
    assert elapsed < 1 + 2
    assert after.stdout == "still connected\n"


def test_metacharacters_are_passed_literally(
    ssh_hosts: SshHostPool, transport_factory: OpenTransport
) -> None:
    host = ssh_hosts["with_sysstat"]
    transport = transport_factory(host.name, host.ssh_target())
    # /tmp because the test user can write there: the control file proves
    # that a successful injection would be seen.
    marker = Path(f"/tmp/prep-assets-injection-{uuid.uuid4().hex}")
    control = Path(f"/tmp/prep-assets-injection-control-{uuid.uuid4().hex}")
    argument = f"iostat; touch {marker}"
    try:
        echoed = transport.run(["echo", argument])
        as_program = transport.run([argument])
        looked_up = transport.run(["sh", "-c", 'command -v "$1"', "sh", argument])
        control_result = transport.run(["sh", "-c", f"touch {control}"])

        assert echoed.stdout == argument + "\n"
        assert as_program.exit_code == 127
        assert looked_up.exit_code != 0
        assert control_result.exit_code == 0
        assert control.exists()
        assert not marker.exists()
    finally:
        marker.unlink(missing_ok=True)
        control.unlink(missing_ok=True)


def test_two_runs_use_one_connection(
    start_ssh_host: StartHost, transport_factory: OpenTransport
) -> None:
    host = start_ssh_host(HostKind.WITH_SYSSTAT)
    transport = transport_factory(host.name, host.ssh_target())

    first = transport.run(["echo", "one"])
    second = transport.run(["echo", "two"])

    assert first.stdout == "one\n"
    assert second.stdout == "two\n"
    assert host.connection_count() == 1
    assert host.login_count() == 1


def test_close_then_run_opens_new_connection(
    start_ssh_host: StartHost, transport_factory: OpenTransport
) -> None:
    host = start_ssh_host(HostKind.WITH_SYSSTAT)
    transport = transport_factory(host.name, host.ssh_target())

    transport.run(["true"])
    transport.close()
    closed = transport.connected
    transport.run(["true"])

    assert not closed
    assert transport.connected
    assert host.connection_count() == 2


def test_no_connection_before_first_run(
    start_ssh_host: StartHost, transport_factory: OpenTransport
) -> None:
    host = start_ssh_host(HostKind.WITH_SYSSTAT)

    transport = transport_factory(host.name, host.ssh_target())

    assert not transport.connected
    assert host.connection_count() == 0


def test_large_output_on_both_streams(
    ssh_hosts: SshHostPool, transport_factory: OpenTransport
) -> None:
    host = ssh_hosts["with_sysstat"]
    transport = transport_factory(host.name, host.ssh_target(command_timeout=30))
    size = 4_000_000
    # stderr first: a reader that waited for stdout alone would stall once
    # stderr filled the channel window (2 MiB in paramiko).
    script = f"head -c {size} /dev/zero >&2; head -c {size} /dev/zero"

    result = transport.run(["sh", "-c", script])

    assert result.exit_code == 0
    assert len(result.stdout) == size
    assert len(result.stderr) == size


def test_passphrase_key_connects(
    start_ssh_host: StartHost, transport_factory: OpenTransport, passphrase_key: KeyPair
) -> None:
    host = start_ssh_host(HostKind.WITH_SYSSTAT, client_key=passphrase_key)
    transport = transport_factory(host.name, host.ssh_target())

    result = transport.run(["echo", "ok"])

    assert host.key_passphrase == PASSPHRASE
    assert result.stdout == "ok\n"


def test_wrong_passphrase_raises_error(
    start_ssh_host: StartHost, transport_factory: OpenTransport, passphrase_key: KeyPair
) -> None:
    host = start_ssh_host(HostKind.WITH_SYSSTAT, client_key=passphrase_key)
    wrong = dataclasses.replace(host.ssh_target(), key_passphrase="not the passphrase")
    missing = dataclasses.replace(host.ssh_target(), key_passphrase=None)

    wrong_error = _run_and_catch(transport_factory(host.name, wrong), ["true"])
    missing_error = _run_and_catch(transport_factory(host.name, missing), ["true"])

    assert wrong_error.state is AccessState.ERROR
    assert "could not decrypt" in str(wrong_error)
    assert missing_error.state is AccessState.ERROR
    assert "encrypted" in str(missing_error)
    # The TCP connect comes first, but no login is attempted with an unreadable key.
    assert host.login_count() == 0


def test_unreachable_host_wins_over_missing_key(
    ssh_hosts: SshHostPool, transport_factory: OpenTransport, tmp_path: Path
) -> None:
    closed = ssh_hosts["closed_port"]
    target = dataclasses.replace(closed.ssh_target(), key_path=str(tmp_path / "no-such-key"))

    error = _run_and_catch(transport_factory(closed.name, target), ["true"])

    assert error.state is AccessState.UNREACHABLE


def test_secrets_absent_from_every_error(
    ssh_hosts: SshHostPool,
    start_ssh_host: StartHost,
    transport_factory: OpenTransport,
    passphrase_key: KeyPair,
    tmp_path: Path,
) -> None:
    accepting_host = start_ssh_host(HostKind.WITH_SYSSTAT, client_key=passphrase_key)
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")

    def target_for(host: SshHost, **changes: object) -> SshTarget:
        target = dataclasses.replace(
            host.ssh_target(connect_timeout=1.0),
            key_path=str(passphrase_key.private_key_path),
            key_passphrase=PASSPHRASE,
        )
        return dataclasses.replace(target, **changes)  # type: ignore[arg-type]

    cases = {
        "closed_port": target_for(ssh_hosts["closed_port"]),
        "rejects_key": target_for(ssh_hosts["rejects_key"]),
        "wrong_host_key": target_for(ssh_hosts["wrong_host_key"]),
        "silent": target_for(ssh_hosts["silent"]),
        "unknown_host_key": target_for(accepting_host, known_hosts_path=str(empty_known_hosts)),
        "wrong_passphrase": target_for(accepting_host, key_passphrase=PASSPHRASE[::-1]),
    }
    key_lines = _private_key_lines(passphrase_key) + _private_key_lines(ssh_hosts.client_key)
    assert key_lines

    for case, target in cases.items():
        assert PASSPHRASE not in repr(target), case
        error = _run_and_catch(transport_factory(case, target), ["true"])
        for text in _exception_texts(error):
            assert PASSPHRASE not in text, case
            assert PASSPHRASE[::-1] not in text, case
            for line in key_lines:
                assert line not in text, case


def test_hosts_are_plain_data(ssh_hosts: SshHostPool) -> None:
    expected_kinds = {kind.value for kind in HostKind}

    rows = [host.to_dict() for host in ssh_hosts.hosts.values()]

    assert {row["kind"] for row in rows} == expected_kinds
    assert len({(row["address"], row["port"]) for row in rows}) == len(rows)
    for row in rows:
        assert set(row) == {
            "name",
            "kind",
            "address",
            "port",
            "user",
            "key_path",
            "known_hosts_path",
        }
        assert row["address"].startswith("127.")
        assert isinstance(row["port"], int)
        assert Path(row["key_path"]).is_file()
        assert Path(row["known_hosts_path"]).is_file()


def test_passphrase_ignored_for_unencrypted_key(
    ssh_hosts: SshHostPool, transport_factory: OpenTransport
) -> None:
    host = ssh_hosts["with_sysstat"]
    target = dataclasses.replace(host.ssh_target(), key_passphrase=PASSPHRASE)
    transport = transport_factory(host.name, target)

    result = transport.run(["echo", "ok"])

    assert result.stdout == "ok\n"


def test_missing_key_file_raises_error(
    ssh_hosts: SshHostPool, transport_factory: OpenTransport, tmp_path: Path
) -> None:
    host = ssh_hosts["with_sysstat"]
    missing = tmp_path / "no_such_key"
    target = dataclasses.replace(host.ssh_target(), key_path=str(missing))
    transport = transport_factory(host.name, target)

    error = _run_and_catch(transport, ["true"])

    assert error.state is AccessState.ERROR
    assert str(missing) in str(error)
    assert "No such file or directory" in str(error)


def _known_hosts_line(ssh_hosts: SshHostPool, host: SshHost) -> str:
    name = f"[{host.address}]:{host.port}"
    lines = ssh_hosts.known_hosts_path.read_text().splitlines()
    return next(line for line in lines if line.split()[0] == name)


def test_hashed_known_hosts_accepted(
    ssh_hosts: SshHostPool, transport_factory: OpenTransport, tmp_path: Path
) -> None:
    host = ssh_hosts["with_sysstat"]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(_known_hosts_line(ssh_hosts, host) + "\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known_hosts)], check=True)
    assert host.address not in known_hosts.read_text()
    target = dataclasses.replace(host.ssh_target(), known_hosts_path=str(known_hosts))

    result = transport_factory(host.name, target).run(["echo", "hashed"])

    assert result.exit_code == 0
    assert result.stdout == "hashed\n"


def test_revoked_host_key_rejected(
    ssh_hosts: SshHostPool, transport_factory: OpenTransport, tmp_path: Path
) -> None:
    host = ssh_hosts["with_sysstat"]
    line = _known_hosts_line(ssh_hosts, host)
    key_fields = " ".join(line.split()[1:3])
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"{line}\n@revoked * {key_fields}\n")
    target = dataclasses.replace(host.ssh_target(), known_hosts_path=str(known_hosts))
    logins_before = host.login_count()

    error = _run_and_catch(transport_factory(host.name, target), ["true"])

    assert isinstance(error, HostKeyMismatchError)
    assert error.state is AccessState.HOST_KEY_MISMATCH
    assert "@revoked" in str(error)
    assert host.login_count() == logins_before
