"""DNS checks against a real dnsmasq on 127.0.0.1 that answers from a hosts file the test writes.

dnsmasq runs with --no-resolv and no upstream server, so no query leaves it. The
addresses are from 192.0.2.0/24 (documentation range); they are only looked up,
never contacted.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.resolver
import pytest

from prep_assets.inventory.discovery.config import DnsSource
from prep_assets.inventory.discovery.dns import FindingKind, check_dns, fqdn
from prep_assets.inventory.discovery.records import ErrorKind, SourceState
from prep_assets.models import AccessMethod, System

DOMAIN = "lab.test"
HOSTS = """\
192.0.2.10 web1.lab.test web1
192.0.2.11 db1.lab.test
192.0.2.12 old-app.lab.test
192.0.2.30 printer-x.lab.test
"""
STOP_GRACE_SECONDS = 5.0


def free_port() -> int:
    """A port that is free for both UDP and TCP on 127.0.0.1 at the time of the call."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")


def stop_process(process: subprocess.Popen) -> None:
    """Terminate the process group, then kill it after a grace period."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_GRACE_SECONDS)


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[DnsSource]:
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS, encoding="utf-8")
    port = free_port()
    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not Path(binary).exists():
        pytest.fail("dnsmasq is not installed: run `make test`, which installs dnsmasq-base")
    command = [
        binary,
        "--no-daemon",
        "--conf-file=/dev/null",
        "--pid-file=",
        "--user=root",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        f"--port={port}",
        "--no-resolv",
        "--no-hosts",
        f"--addn-hosts={hosts}",
        # Answer NXDOMAIN for unknown names and addresses of these zones instead of REFUSED.
        f"--local=/{DOMAIN}/",
        "--local=/2.0.192.in-addr.arpa/",
        "--log-facility=-",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until_answering(port, process)
        yield DnsSource(host="127.0.0.1", port=port, domain=DOMAIN, timeout=2.0)
    finally:
        stop_process(process)


def wait_until_answering(port: int, process: subprocess.Popen) -> None:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.lifetime = 0.5
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"dnsmasq exited with {process.returncode}: {output}")
        try:
            resolver.resolve("web1.lab.test", "A", search=False)
            return
        except dns.exception.DNSException:
            time.sleep(0.1)
    raise RuntimeError("dnsmasq did not answer within 10 s")


def system(name: str, address: str | None) -> System:
    return System(
        name=name, type="linux", tier="standard", access=AccessMethod.SSH, address=address
    )


INVENTORY = [
    system("web1", "192.0.2.10"),
    system("db1.lab.test", "192.0.2.11"),
    # 192.0.2.12 was old-app's address: its PTR still names old-app.
    system("new-app", "192.0.2.12"),
    system("old-app", "192.0.2.99"),
    system("missing", "192.0.2.50"),
    system("printer", "192.0.2.30"),
    # Loopback addresses are not looked up in reverse.
    system("workstation", "127.0.0.1"),
]


def test_findings_per_system(dnsmasq):
    result, findings = check_dns(dnsmasq, INVENTORY)

    assert result.state is SourceState.UP, result.message
    found = sorted((finding.system, finding.kind) for finding in findings)
    assert found == [
        ("missing", FindingKind.NAME_NOT_FOUND),
        ("missing", FindingKind.NO_REVERSE_RECORD),
        ("new-app", FindingKind.NAME_NOT_FOUND),
        ("new-app", FindingKind.REVERSE_OTHER_SYSTEM),
        ("old-app", FindingKind.FORWARD_MISMATCH),
        ("old-app", FindingKind.NO_REVERSE_RECORD),
        ("printer", FindingKind.NAME_NOT_FOUND),
        ("printer", FindingKind.REVERSE_MISMATCH),
        ("workstation", FindingKind.NAME_NOT_FOUND),
    ]


def test_wrong_reverse_record_names_other_system(dnsmasq):
    _, findings = check_dns(dnsmasq, INVENTORY)

    reused = next(f for f in findings if f.kind is FindingKind.REVERSE_OTHER_SYSTEM)
    assert reused.query == "192.0.2.12"
    assert reused.found == ("old-app.lab.test",)
    assert "old-app" in reused.message
    assert "new-app" in reused.message
    mismatch = next(f for f in findings if f.kind is FindingKind.FORWARD_MISMATCH)
    assert mismatch.found == ("192.0.2.12",)
    missing = next(
        f for f in findings if f.system == "missing" and f.kind is FindingKind.NAME_NOT_FOUND
    )
    assert missing.query == "missing.lab.test"


def test_queries_are_counted(dnsmasq):
    result, _ = check_dns(dnsmasq, [system("web1", "192.0.2.10")])

    # A, AAAA and PTR.
    assert result.api_calls == 3


def test_resolver_down_is_a_source_error(closed_port):
    source = DnsSource(host="127.0.0.1", port=closed_port, domain=DOMAIN, timeout=1.0)

    result, findings = check_dns(source, INVENTORY)

    assert result.state is SourceState.DOWN
    assert result.error_kind in (ErrorKind.UNREACHABLE, ErrorKind.TIMED_OUT)
    assert findings == []
    # The first failed query ends the checks.
    assert result.api_calls == 1


def test_fqdn_appends_domain_to_bare_names():
    assert fqdn("Web1", "lab.test") == "web1.lab.test"
    assert fqdn("db1.lab.test.", "lab.test") == "db1.lab.test"
    assert fqdn("web1", None) == "web1"
