"""Time Proxmox discovery of 2,000 guests on 20 nodes against a fakepve cluster on 127.0.0.1.

Run with ``python -m bench.discovery_bench`` from the repository root (fakepve
must be installed, as the test extra does). The listing is timed ``--repeat``
times; then one discovery with ``--lookups`` address lookups shows the cost of
the per-guest requests. API calls are counted by prep-assets and by the fake's
own request log, which must agree.
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from fakepve import FakePve
from fakepve.certs import make_cert

from prep_assets.inventory.credentials import CredentialKind, CredentialPointer
from prep_assets.inventory.discovery.config import ProxmoxSource
from prep_assets.inventory.discovery.proxmox import discover_proxmox
from prep_assets.inventory.discovery.records import SourceResult, SourceState
from prep_assets.inventory.merge import SourceContext, merge_inventory

HOST = "127.0.0.1"
TOKEN_ID = "bench@pve!discovery"
SECRET = "bench-token-secret"
ENVIRON = {"PREP_BENCH_PVE_TOKEN": SECRET}
POINTER = CredentialPointer("pve-token", CredentialKind.API_TOKEN, "env", "PREP_BENCH_PVE_TOKEN")
START_TIMEOUT = 60.0


def build_cluster(nodes: int, guests: int) -> FakePve:
    """Spread ``guests`` over ``nodes``: every third guest a container, every tenth stopped."""
    pve = FakePve(host=HOST, port=0)
    pve.time_scale = 0
    pve.max_requests = 1_000_000
    pve.apitokens[TOKEN_ID] = SECRET
    node_names = [f"pve{index:02d}" for index in range(1, nodes + 1)]
    for name in node_names:
        pve.add_node(name)
    pve.nodes.pop("pve1", None)
    for index in range(guests):
        vmid = 1000 + index
        node = node_names[index % nodes]
        status = "stopped" if index % 10 == 9 else "running"
        if index % 3 == 2:
            pve.add_ct(vmid, f"ct-{vmid}", node=node, status=status)
        else:
            vm = pve.add_vm(vmid, f"vm-{vmid}", node=node, status=status, config={"tags": "bench"})
            vm.agent = {
                "interfaces": [
                    {
                        "name": "eth0",
                        "ip-addresses": [{"ip-address": f"127.1.{index // 250}.{index % 250 + 1}"}],
                    }
                ]
            }
    return pve


def discover_once(source: ProxmoxSource, pve: FakePve) -> tuple[SourceResult, int, float]:
    before = len(pve.requests)
    started = time.perf_counter()
    result = discover_proxmox(source, ENVIRON)
    elapsed = time.perf_counter() - started
    if result.state is not SourceState.UP:
        raise SystemExit(f"discovery failed: {result.error_kind}: {result.message}")
    return result, len(pve.requests) - before, elapsed


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; return 0, or raise SystemExit on a failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20, help="Proxmox nodes (default 20).")
    parser.add_argument("--guests", type=int, default=2000, help="Guests in all (default 2000).")
    parser.add_argument("--repeat", type=int, default=5, help="Timed listings (default 5).")
    parser.add_argument(
        "--lookups", type=int, default=200, help="Address lookups in the last run (default 200)."
    )
    args = parser.parse_args(argv)

    pve = build_cluster(args.nodes, args.guests)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fakepve", daemon=True)
    thread.start()
    with tempfile.TemporaryDirectory() as directory:
        certfile, keyfile, _ = make_cert(directory, hosts=(HOST,))
        asyncio.run_coroutine_threadsafe(pve.start(certfile, keyfile), loop).result(START_TIMEOUT)
        try:
            source = ProxmoxSource(
                "bench", HOST, pve.port, POINTER, TOKEN_ID, verify=str(Path(certfile)), timeout=60.0
            )
            timings = []
            for _ in range(args.repeat):
                result, served, elapsed = discover_once(source, pve)
                timings.append(elapsed)
            guests = sum(1 for record in result.records if record.vmid is not None)
            nodes = len(result.records) - guests
            context = SourceContext(source.key, "proxmox", "bench", SourceState.UP, "pve-token")
            started = time.perf_counter()
            merged = merge_inventory([], [result], {source.key: context}, {})
            merge_seconds = time.perf_counter() - started

            with_lookups = ProxmoxSource(
                "bench",
                HOST,
                pve.port,
                POINTER,
                TOKEN_ID,
                verify=str(Path(certfile)),
                address_lookups=args.lookups,
                timeout=60.0,
            )
            lookup_result, lookup_served, lookup_elapsed = discover_once(with_lookups, pve)
        finally:
            asyncio.run_coroutine_threadsafe(pve.stop(), loop).result(START_TIMEOUT)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(START_TIMEOUT)

    print(f"Listing: {guests} guests and {nodes} nodes")
    print(f"  API calls counted by prep-assets: {result.api_calls}; served by fakepve: {served}")
    print(
        f"  time over {args.repeat} runs: median {statistics.median(timings):.3f} s, "
        f"min {min(timings):.3f} s, max {max(timings):.3f} s"
    )
    print(f"  merge into {len(merged.systems)} undocumented systems: {merge_seconds:.3f} s")
    print(f"With {args.lookups} address lookups:")
    print(
        f"  API calls counted by prep-assets: {lookup_result.api_calls}; served by fakepve: "
        f"{lookup_served}; lookups {lookup_result.address_lookups}, failed "
        f"{lookup_result.address_failures}"
    )
    print(f"  time: {lookup_elapsed:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
