"""Benchmark the access and tool check pass against many loopback OpenSSH hosts.

Run by hand as root (it starts sshd processes and uses the test user of the
test suite): ``.venv/bin/python -m bench.check_bench --hosts 200 --workers 20``.
It starts the hosts, checks the default crisis-tools list on each over one
connection per host, prints wall time and client CPU time, and stops the hosts.
"""

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from prep_assets.checks.runner import CheckSettings, check_systems
from prep_assets.inventory.tools_map import DEFAULT_CRISIS_TOOLS
from prep_assets.models import AccessMethod, AccessState, System
from prep_assets.transports.ssh import SshTarget, SshTransport
from prep_assets_tests.sshhosts import HostKind, SshHostPool


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200, help="Number of sshd test hosts.")
    parser.add_argument("--workers", type=int, default=20, help="Systems checked at the same time.")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="Seconds per connection and command."
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
            systems = [
                System(
                    host.name,
                    "linux",
                    "standard",
                    AccessMethod.SSH,
                    address=host.address,
                    port=host.port,
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
                    connect_timeout=args.timeout,
                    command_timeout=args.timeout,
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
                CheckSettings(timeout=args.timeout, max_workers=args.workers),
            )
            wall = time.monotonic() - wall_before
            cpu = _cpu_seconds() - cpu_before

            reachable = sum(
                1 for check in results.values() if check.access.state is AccessState.REACHABLE
            )
            connections = sum(host.connection_count() for host in hosts)
            print(
                f"checked {len(specs)} tools on {len(systems)} hosts with {args.workers} workers: "
                f"{wall:.2f} s wall, {cpu:.2f} s client CPU, {reachable} reachable, "
                f"{connections} connections"
            )
            return 0 if reachable == len(systems) else 1
        finally:
            pool.close()


if __name__ == "__main__":
    sys.exit(main())
