"""Proxmox discovery against fakepve clusters on 127.0.0.1, with real TLS verification."""

import time

import pytest

from prep_assets.inventory.credentials import CredentialKind, CredentialPointer
from prep_assets.inventory.discovery.config import ProxmoxSource
from prep_assets.inventory.discovery.proxmox import discover_proxmox, usable_addresses
from prep_assets.inventory.discovery.records import (
    ErrorKind,
    RecordKind,
    SourceState,
    parse_reported_address,
)
from prep_assets_tests.discovery.conftest import HOST, TOKEN_ID

POINTER = CredentialPointer("pve-token", CredentialKind.API_TOKEN, "env", "PREP_TEST_PVE_TOKEN")


def source_for(cluster, **overrides) -> ProxmoxSource:
    values = dict(
        name="homelab",
        host=HOST,
        port=cluster.port,
        credential=POINTER,
        token_id=TOKEN_ID,
        verify=cluster.cafile,
        timeout=3.0,
    )
    values.update(overrides)
    return ProxmoxSource(**values)


def environ_for(cluster) -> dict[str, str]:
    return {"PREP_TEST_PVE_TOKEN": cluster.secret}


def by_id(result):
    return {record.id: record for record in result.records}


@pytest.fixture
def homelab(start_pve):
    cluster = start_pve("homelab")
    pve = cluster.pve
    pve.add_node("pve2")
    web = pve.add_vm(
        101, "web1", node="pve1", status="running", config={"tags": "web;prod"}, pool="core"
    )
    web.agent = {
        "interfaces": [
            {
                "name": "lo",
                "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4"}],
            },
            {
                "name": "eth0",
                "ip-addresses": [
                    {"ip-address": "fe80::1", "ip-address-type": "ipv6"},
                    {"ip-address": "fd00::101", "ip-address-type": "ipv6"},
                    {"ip-address": "127.0.10.101", "ip-address-type": "ipv4"},
                ],
            },
        ]
    }
    pve.add_vm(103, "batch", node="pve2", status="stopped")
    pve.add_vm(9000, "debian-template", node="pve1", template=True)
    pve.add_ct(
        102,
        "db1",
        node="pve2",
        status="running",
        config={"net0": "name=eth0,bridge=vmbr0,ip=127.0.10.102/8"},
    )
    return cluster


def test_listing_reads_nodes_and_guests(homelab):
    result = discover_proxmox(source_for(homelab), environ_for(homelab))

    assert result.state is SourceState.UP, result.message
    records = by_id(result)
    assert set(records) == {"node/pve1", "node/pve2", "qemu/101", "qemu/103", "lxc/102"}
    web = records["qemu/101"]
    assert (web.kind, web.name, web.node, web.vmid, web.status) == (
        RecordKind.QEMU,
        "web1",
        "pve1",
        101,
        "running",
    )
    assert web.attributes == {"tags": "prod,web", "pool": "core"}
    assert records["lxc/102"].kind is RecordKind.LXC
    assert records["qemu/103"].status == "stopped"
    assert records["node/pve2"].kind is RecordKind.PROXMOX_NODE
    assert records["node/pve2"].status == "online"
    # fakepve's /cluster/status gives node addresses from 192.0.2.0/24; they are only read.
    assert records["node/pve1"].addresses == ("192.0.2.11",)
    assert web.addresses == ()


def test_listing_takes_two_calls(homelab):
    before = homelab.request_count()

    result = discover_proxmox(source_for(homelab), environ_for(homelab))

    assert result.api_calls == 2
    assert homelab.request_count() - before == 2
    paths = [path for _, path, _ in homelab.pve.requests[before:]]
    assert paths == ["/api2/json/cluster/resources", "/api2/json/cluster/status"]


def test_address_lookups_use_agent_and_lxc(homelab):
    result = discover_proxmox(source_for(homelab, address_lookups=10), environ_for(homelab))

    records = by_id(result)
    assert records["qemu/101"].addresses == ("127.0.10.101", "fd00::101")
    assert records["lxc/102"].addresses == ("127.0.10.102",)
    # The stopped VM is not looked up.
    assert records["qemu/103"].addresses == ()
    assert result.address_lookups == 2
    assert result.address_failures == 0
    assert result.api_calls == 4


def test_address_lookups_stop_at_limit(homelab):
    result = discover_proxmox(source_for(homelab, address_lookups=1), environ_for(homelab))

    records = by_id(result)
    assert records["qemu/101"].addresses == ("127.0.10.101", "fd00::101")
    assert records["lxc/102"].addresses == ()
    assert result.address_lookups == 1
    assert result.api_calls == 3


def test_missing_agent_leaves_address_empty(homelab):
    homelab.pve.fail(
        "GET",
        "/nodes/pve1/qemu/101/agent/network-get-interfaces",
        500,
        "QEMU guest agent is not running",
    )

    result = discover_proxmox(source_for(homelab, address_lookups=10), environ_for(homelab))

    assert result.state is SourceState.UP
    records = by_id(result)
    assert records["qemu/101"].addresses == ()
    assert records["lxc/102"].addresses == ("127.0.10.102",)
    assert result.address_failures == 1


def test_whole_token_in_secret(homelab):
    source = source_for(homelab, token_id=None)

    result = discover_proxmox(source, {"PREP_TEST_PVE_TOKEN": f"{TOKEN_ID}={homelab.secret}"})

    assert result.state is SourceState.UP, result.message
    assert len(result.records) == 5


def test_secret_without_token_id(homelab):
    result = discover_proxmox(source_for(homelab, token_id=None), environ_for(homelab))

    assert result.state is SourceState.DOWN
    assert result.error_kind is ErrorKind.CONFIG_ERROR
    assert "Token ID" in result.message
    assert homelab.secret not in result.message


def test_rejected_token(homelab):
    result = discover_proxmox(source_for(homelab), {"PREP_TEST_PVE_TOKEN": "wrong-secret"})

    assert result.state is SourceState.DOWN
    assert result.error_kind is ErrorKind.AUTH_FAILED
    assert "401" in result.message
    assert result.records == []
    assert "wrong-secret" not in result.message


def test_missing_secret(homelab):
    result = discover_proxmox(source_for(homelab), {})

    assert result.error_kind is ErrorKind.CREDENTIAL_ERROR
    assert "PREP_TEST_PVE_TOKEN" in result.message


def test_untrusted_certificate(homelab):
    result = discover_proxmox(source_for(homelab, verify=True), environ_for(homelab))

    assert result.error_kind is ErrorKind.TLS_ERROR
    assert "CA certificate" in result.message


def test_unreachable_cluster(closed_port):
    source = ProxmoxSource("gone", HOST, closed_port, POINTER, TOKEN_ID, verify=False, timeout=2.0)

    result = discover_proxmox(source, {"PREP_TEST_PVE_TOKEN": "x"})

    assert result.state is SourceState.DOWN
    assert result.error_kind is ErrorKind.UNREACHABLE
    assert f"{HOST}:{closed_port}" == result.endpoint


def test_silent_cluster_times_out(silent_port):
    source = ProxmoxSource(
        "silent", HOST, silent_port, POINTER, TOKEN_ID, verify=False, timeout=1.0
    )

    started = time.monotonic()
    result = discover_proxmox(source, {"PREP_TEST_PVE_TOKEN": "x"})
    elapsed = time.monotonic() - started

    assert result.error_kind is ErrorKind.TIMED_OUT
    assert "1 s" in result.message
    # One request, one timeout: the listing stops at the first failure.
    assert elapsed < 3.0
    assert result.api_calls == 1


def test_hanging_api_times_out(homelab):
    homelab.pve.flaky_network(hang_rate=1.0, hang_secs=3)

    result = discover_proxmox(source_for(homelab, timeout=1.0), environ_for(homelab))

    assert result.error_kind is ErrorKind.TIMED_OUT


def test_usable_addresses_skip_lo_and_link_local():
    interfaces = [
        {"name": "lo", "ip-addresses": [{"ip-address": "127.0.0.1"}]},
        {"name": "eth0", "ip-addresses": [{"ip-address": "fe80::2"}, {"ip-address": "fd00::2"}]},
        {
            "name": "eth1",
            "ip-addresses": [{"ip-address": "not-an-ip"}, {"ip-address": "127.0.9.2"}],
        },
    ]

    assert usable_addresses(interfaces) == ("127.0.9.2", "fd00::2")
    assert usable_addresses(None) == ()


def test_addresses_with_zone_dropped(homelab, tmp_path):
    marker = tmp_path / "pwned"
    vm = homelab.pve.add_vm(104, "zoned", node="pve1", status="running")
    vm.agent = {
        "interfaces": [
            {
                "name": "eth0",
                "ip-addresses": [
                    {"ip-address": f"fd00::104%$(touch {marker})", "ip-address-type": "ipv6"},
                    {"ip-address": "fd00::105%eth0", "ip-address-type": "ipv6"},
                    {"ip-address": "127.0.10.104", "ip-address-type": "ipv4"},
                ],
            },
        ]
    }

    result = discover_proxmox(source_for(homelab, address_lookups=10), environ_for(homelab))

    assert by_id(result)["qemu/104"].addresses == ("127.0.10.104",)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.10.5", "127.0.10.5"),
        (" fd00::5 ", "fd00::5"),
        ("fd00::5%eth0", None),
        ("fe80::1%eth0", None),
        ("fd00::5%$(reboot)", None),
        ("127.0.10.5; reboot", None),
        ("", None),
        (None, None),
        (12, None),
    ],
)
def test_reported_address_parsing(value, expected):
    address = parse_reported_address(value)

    assert (str(address) if address is not None else None) == expected
