"""Merging documented systems with discovered records."""

from prep_assets.inventory.access_patterns import AccessPattern
from prep_assets.inventory.discovery.records import (
    DiscoveredRecord,
    RecordKind,
    SourceResult,
    SourceState,
)
from prep_assets.inventory.merge import DiscoveryState, SourceContext, merge_inventory
from prep_assets.models import AccessMethod, SourceLocation, System

PVE = "proxmox:homelab"
K8S = "kubernetes:k3s"
CONTEXTS = {
    PVE: SourceContext(
        PVE,
        "proxmox",
        "homelab",
        SourceState.UP,
        credentials="pve-token",
        attributes={"proxmox-cluster": "homelab"},
        node_attributes={"api-port": "8006"},
    ),
    K8S: SourceContext(K8S, "kubernetes", "k3s", SourceState.UP),
}


def documented(name, address=None, access=AccessMethod.SSH, **attributes) -> System:
    return System(
        name=name,
        type="debian",
        tier="critical",
        access=access,
        address=address,
        attributes=dict(attributes),
        source=SourceLocation("docs/infrastructure/system-inventory.md", 5),
    )


def guest(vmid, name, node="pve1", kind=RecordKind.QEMU, status="running", addresses=()):
    prefix = "qemu" if kind is RecordKind.QEMU else "lxc"
    return DiscoveredRecord(
        PVE, kind, f"{prefix}/{vmid}", name, status, node, vmid, tuple(addresses)
    )


def node(name, addresses=(), source=PVE, kind=RecordKind.PROXMOX_NODE, status="online"):
    return DiscoveredRecord(source, kind, f"node/{name}", name, status, addresses=tuple(addresses))


def up(key, *records) -> SourceResult:
    kind = key.split(":")[0]
    return SourceResult(key, kind, key.split(":")[1], "test", records=list(records))


def merge(docs, results, contexts=CONTEXTS, patterns=None):
    merged = merge_inventory(docs, results, contexts, patterns or {})
    return {system.name: system for system in merged.systems}, merged.discovery


def test_match_order_vmid_node_then_name_then_address():
    docs = [
        documented("web1", vmid="101", node="pve1"),
        documented("db1.home.arpa"),
        documented("cache", address="127.0.30.3"),
    ]
    records = [
        guest(101, "web-renamed"),
        guest(102, "DB1"),
        guest(103, "redis", addresses=["127.0.30.3"]),
    ]

    systems, discovery = merge(docs, [up(PVE, *records)])

    assert set(systems) == {"web1", "db1.home.arpa", "cache"}
    assert discovery["web1"].matched_by == {f"{PVE}/qemu/101": "vmid+node"}
    assert discovery["db1.home.arpa"].matched_by == {f"{PVE}/qemu/102": "name"}
    assert discovery["cache"].matched_by == {f"{PVE}/qemu/103": "address"}
    assert {entry.state for entry in discovery.values()} == {DiscoveryState.MATCHED}
    name_mismatch = discovery["web1"].mismatches[0]
    assert (name_mismatch["field"], name_mismatch["discovered"]) == ("name", "web-renamed")


def test_documented_values_win_and_sources_are_recorded():
    docs = [documented("web1", address="127.0.30.1", vmid="101", node="pve2")]
    record = guest(101, "web1", node="pve1", addresses=["127.0.30.9"])

    systems, discovery = merge(docs, [up(PVE, record)])

    web = systems["web1"]
    assert web.address == "127.0.30.1"
    assert web.attributes["node"] == "pve1"
    assert web.attributes["status"] == "running"
    assert web.sources["address"] == "docs"
    assert web.sources["node"] == PVE
    assert web.sources["tier"] == "docs"
    fields = {mismatch["field"]: mismatch for mismatch in discovery["web1"].mismatches}
    assert fields["address"]["discovered"] == "127.0.30.9"
    assert fields["node"]["documented"] == "pve2"
    assert System.from_dict(web.to_dict()) == web


def test_undocumented_guests_get_derived_access():
    records = [
        node("pve1", addresses=["127.0.30.100"]),
        guest(101, "vm-a"),
        guest(102, "ct-b", kind=RecordKind.LXC),
        guest(103, "vm-off", status="stopped"),
    ]

    systems, discovery = merge([], [up(PVE, *records)])

    vm = systems["vm-a"]
    assert (vm.type, vm.access, vm.credentials, vm.managed) == (
        "qemu",
        AccessMethod.QM_API,
        "pve-token",
        True,
    )
    assert vm.attributes["node"] == "pve1"
    assert vm.sources["access"] == "derived"
    assert vm.sources["name"] == PVE
    ct = systems["ct-b"]
    assert (ct.access, ct.jump) == (AccessMethod.PCT, "pve1")
    off = systems["vm-off"]
    assert (off.access, off.contacted) == (AccessMethod.NONE, False)
    pve1 = systems["pve1"]
    assert (pve1.type, pve1.access, pve1.managed) == ("proxmox-node", AccessMethod.NONE, False)
    assert pve1.attributes["api-port"] == "8006"
    assert pve1.attributes["pve-node"] == "pve1"
    assert {entry.state for entry in discovery.values()} == {DiscoveryState.UNDOCUMENTED}


def test_type_pattern_sets_access_but_default_does_not():
    patterns = {
        "qemu": AccessPattern("qemu", method=AccessMethod.SSH, user="ops", port=2222),
        "default": AccessPattern("default", method=AccessMethod.SSH, user="root"),
    }
    records = [
        guest(101, "with-address", addresses=["127.0.30.1"]),
        guest(102, "no-address"),
        guest(103, "container", kind=RecordKind.LXC),
    ]

    systems, _ = merge([], [up(PVE, *records)], patterns=patterns)

    ssh = systems["with-address"]
    assert (ssh.access, ssh.user, ssh.port, ssh.address) == (
        AccessMethod.SSH,
        "ops",
        2222,
        "127.0.30.1",
    )
    assert ssh.sources["access"] == "docs"
    assert systems["no-address"].access is AccessMethod.NONE
    # No lxc pattern: the default pattern's ssh is not used for an unknown container.
    assert systems["container"].access is AccessMethod.PCT


def test_guest_and_kubernetes_node_meet_in_one_system():
    results = [
        up(PVE, guest(110, "k3s-1", addresses=["127.0.30.31"])),
        up(
            K8S,
            node(
                "k3s-1",
                addresses=["127.0.30.31"],
                source=K8S,
                kind=RecordKind.KUBERNETES_NODE,
                status="Ready",
            ),
        ),
    ]

    systems, discovery = merge([], results)

    assert set(systems) == {"k3s-1"}
    assert [record.source for record in discovery["k3s-1"].records] == [PVE, K8S]
    assert systems["k3s-1"].attributes["kubernetes-status"] == "Ready"
    assert systems["k3s-1"].attributes["vmid"] == "110"


def test_same_name_twice_in_one_cluster():
    systems, _ = merge([], [up(PVE, guest(101, "test"), guest(102, "test"))])

    assert set(systems) == {"test", "test-102"}


def test_not_found_unverified_and_documented_states():
    docs = [
        documented("gone-vm", vmid="120", node="pve1"),
        documented("nas", address="127.0.30.50"),
        documented("ct", access=AccessMethod.PCT, cluster="lab"),
    ]
    contexts = {
        **CONTEXTS,
        "proxmox:lab": SourceContext("proxmox:lab", "proxmox", "lab", SourceState.DOWN),
    }
    results = [
        up(PVE),
        SourceResult("proxmox:lab", "proxmox", "lab", "test", state=SourceState.DOWN),
    ]

    _, discovery = merge(docs, results, contexts)

    assert discovery["gone-vm"].state is DiscoveryState.UNVERIFIED
    assert discovery["ct"].state is DiscoveryState.UNVERIFIED
    assert discovery["nas"].state is DiscoveryState.DOCUMENTED

    contexts["proxmox:lab"] = SourceContext("proxmox:lab", "proxmox", "lab", SourceState.UP)
    _, discovery = merge(docs, [up(PVE), up("proxmox:lab")], contexts)

    assert discovery["gone-vm"].state is DiscoveryState.NOT_FOUND
    assert discovery["ct"].state is DiscoveryState.NOT_FOUND
    assert discovery["nas"].state is DiscoveryState.DOCUMENTED


def test_records_of_down_source_are_ignored():
    down = SourceResult(PVE, "proxmox", "homelab", "test", state=SourceState.DOWN)
    down.records = [guest(101, "web1")]

    systems, _ = merge([], [down])

    assert systems == {}
