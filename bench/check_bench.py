"""Benchmark the access and tool check pass against many loopback OpenSSH hosts.

Run by hand as root (it starts sshd processes and uses the test user of the
test suite): ``.venv/bin/python -m bench.check_bench --hosts 200 --workers 20``.
It starts the hosts, checks the default crisis-tools list on each over one
connection per host, prints wall time and client CPU time, and stops the hosts.

With ``--pyinfra PATH`` (``make bench`` installs pyinfra in .cache/pyinfra-venv
and passes it), each round also runs ``pyinfra INVENTORY exec`` with the same
check script against the same hosts and the same parallelism, so both tools
are measured on one machine in one run. pyinfra's figure is the wall time of
its whole command, including its start-up, which a one-host run shows.
"""

import argparse
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from prep_assets.checks.runner import CheckSettings, check_systems
from prep_assets.checks.tools import tool_check_command
from prep_assets.inventory.tools_map import DEFAULT_CRISIS_TOOLS
from prep_assets.models import AccessMethod, AccessState, System
from prep_assets.transports.ssh import SshTarget, SshTransport
from prep_assets_tests.sshhosts import HostKind, SshHost, SshHostPool

PYINFRA_ENV = "PREP_BENCH_PYINFRA"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def check_with_prep_assets(hosts: Sequence[SshHost], workers: int, timeout: float) -> int:
    """Check every host with prep-assets, print the figures and return the number reachable."""
    systems = [
        System(
            host.name, "linux", "standard", AccessMethod.SSH, address=host.address, port=host.port
        )
        for host in hosts
    ]
    targets = {
        host.name: SshTarget(
            host=host.address,
            port=host.port,
            user=host.user,
            key_path=str(host.key_path),
            known_hosts_path=str(host.known_hosts_path),
            connect_timeout=timeout,
            command_timeout=timeout,
        )
        for host in hosts
    }
    specs = list(DEFAULT_CRISIS_TOOLS)

    cpu_before = _cpu_seconds()
    wall_before = time.monotonic()
    results = check_systems(
        systems,
        lambda system: specs,
        lambda system: SshTransport(system.name, targets[system.name]),
        CheckSettings(timeout=timeout, max_workers=workers),
    )
    wall = time.monotonic() - wall_before
    cpu = _cpu_seconds() - cpu_before

    reachable = sum(1 for check in results.values() if check.access.state is AccessState.REACHABLE)
    print(
        f"prep-assets: checked {len(specs)} tools on {len(systems)} hosts with {workers} "
        f"workers: {wall:.2f} s wall, {cpu:.2f} s client CPU, {reachable} reachable"
    )
    return reachable


def write_pyinfra_inventory(hosts: Sequence[SshHost], path: Path) -> None:
    """Write a pyinfra inventory of ``hosts`` that checks host keys against their known_hosts."""
    rows = [
        (
            host.address,
            {
                "ssh_port": host.port,
                "ssh_user": host.user,
                "ssh_key": str(host.key_path),
                "ssh_known_hosts_file": str(host.known_hosts_path),
                "ssh_strict_host_key_checking": "yes",
            },
        )
        for host in hosts
    ]
    path.write_text(f"hosts = ({rows!r}, {{}})\n")


def check_with_pyinfra(pyinfra: str, inventory: Path, host_count: int, workers: int) -> bool:
    """Run the check script on every host of ``inventory`` with pyinfra and print the figures."""
    command = shlex.join(tool_check_command(list(DEFAULT_CRISIS_TOOLS)))
    argv = [pyinfra, str(inventory), "exec", "--parallel", str(workers), "-y", "--", command]
    started = time.monotonic()
    completed = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    wall = time.monotonic() - started
    output = completed.stdout + completed.stderr
    # The script prints one kernel record per host, after pyinfra's "[host] " prefix.
    answered = output.count("kernel\t")
    print(
        f"pyinfra: ran the same script on {host_count} hosts with --parallel {workers}: "
        f"{wall:.2f} s wall (whole command), exit code {completed.returncode}, "
        f"{answered} hosts answered"
    )
    return completed.returncode == 0 and answered == host_count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200, help="Number of sshd test hosts.")
    parser.add_argument("--workers", type=int, default=20, help="Systems checked at the same time.")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="Seconds per connection and command."
    )
    parser.add_argument("--rounds", type=int, default=3, help="Timed rounds of each tool.")
    parser.add_argument(
        "--pyinfra",
        default=os.environ.get(PYINFRA_ENV),
        help=f"pyinfra program to compare with (default: ${PYINFRA_ENV}; none: no comparison).",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: the benchmark starts sshd test hosts", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="prep-assets-bench-") as private:
        pool = SshHostPool(Path(private))
        try:
            started = time.monotonic()
            hosts = pool.start_hosts(HostKind.WITH_SYSSTAT, args.hosts, prefix="bench")
            print(f"started {len(hosts)} sshd hosts in {time.monotonic() - started:.1f} s")
            inventory = Path(private) / "pyinfra_inventory.py"
            one_host_inventory = Path(private) / "pyinfra_one_host.py"
            if args.pyinfra:
                write_pyinfra_inventory(hosts, inventory)
                write_pyinfra_inventory(hosts[:1], one_host_inventory)
                check_with_pyinfra(args.pyinfra, one_host_inventory, 1, args.workers)

            ok = True
            for _ in range(args.rounds):
                ok = check_with_prep_assets(hosts, args.workers, args.timeout) == len(hosts) and ok
                if args.pyinfra:
                    ok = (
                        check_with_pyinfra(args.pyinfra, inventory, len(hosts), args.workers) and ok
                    )
            connections = sum(host.connection_count() for host in hosts)
            print(f"connections seen by the hosts over all runs: {connections}")
            return 0 if ok else 1
        finally:
            pool.close()


if __name__ == "__main__":
    sys.exit(main())
