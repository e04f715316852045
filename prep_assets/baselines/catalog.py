"""The USE table: one MetricSpec per resource, signal and exporter, with its PromQL.

The node_exporter metrics cover CPU, memory, disks, file systems and network
interfaces of a system that runs node_exporter. The metric names were checked
against the /metrics output of Debian 12's prometheus-node-exporter 1.5.0. The
prometheus-pve-exporter metrics give CPU and memory of Proxmox guests that run no
node_exporter. Their names and the ``id="qemu/NNN"`` label come from that
exporter's test output (tests/golden/cluster.txt in prometheus-pve/prometheus-pve-exporter).

Every threshold rule here is a starting point chosen by judgment, not fitted to any
fleet. docs/baselines.md explains each one.
"""

import string
from dataclasses import dataclass

from prep_assets.baselines.stats import ThresholdRule

NODE_EXPORTER = "node_exporter"
PVE_EXPORTER = "prometheus-pve-exporter"

RESOURCES = ("cpu", "memory", "disk", "filesystem", "network")
SIGNALS = ("utilization", "saturation", "errors")

# Interfaces left out of the network rows: loopback, and the veth, tap and firewall
# bridge ports that Proxmox creates per guest. Guest traffic is counted on the
# guest and again on the host's physical interface and bridge.
NETWORK_DEVICE_EXCLUDE = "lo|veth.+|tap.+|fwbr.+|fwpr.+|fwln.+"
# File systems in memory or stacked on another file system, whose usage does not
# show a disk filling up.
FILESYSTEM_TYPE_EXCLUDE = "tmpfs|ramfs|squashfs|overlay|nsfs"


@dataclass(frozen=True)
class MetricSpec:
    """One row of the USE table: a resource, a signal, its PromQL and its threshold rule.

    ``query_template`` is a string.Template. ``$matcher`` stands for the label
    matcher that selects the systems, inside a selector's braces, and ``$range`` for
    the range of rate(). The query returns one series per ``key_label`` value, or
    per key and ``device_label`` value for a per-device metric.
    """

    name: str
    resource: str
    # "utilization", "saturation" or "errors", as in the USE method.
    signal: str
    unit: str
    query_template: str
    threshold_rule: ThresholdRule
    # The label that names the system: "instance" for node_exporter, "id" for the
    # Proxmox exporter, whose series all carry the exporter's own instance label.
    key_label: str = "instance"
    # The label that names the disk, mount point or interface, or None for a metric
    # with one series per system.
    device_label: str | None = None
    exporter: str = NODE_EXPORTER
    # The likely cause when one system has no series of this metric but has others.
    missing_hint: str = ""

    def query(self, matcher: str, rate_range: str = "5m") -> str:
        return string.Template(self.query_template).substitute(matcher=matcher, range=rate_range)


CPU_UTILIZATION = MetricSpec(
    name="cpu_utilization",
    resource="cpu",
    signal="utilization",
    unit="percent",
    query_template=(
        '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle",$matcher}[$range])))'
    ),
    threshold_rule=ThresholdRule(floor=50.0, k=2.0, cap=95.0),
)

# The 1-minute load average divided by the number of CPUs. Above 1 there are more
# runnable (and, on Linux, uninterruptible) tasks than CPUs.
CPU_LOAD_PER_CPU = MetricSpec(
    name="cpu_load_per_cpu",
    resource="cpu",
    signal="saturation",
    unit="load per CPU",
    query_template=(
        "max by (instance) (node_load1{$matcher})"
        ' / on (instance) count by (instance) (node_cpu_seconds_total{mode="idle",$matcher})'
    ),
    threshold_rule=ThresholdRule(floor=1.0, k=2.0, cap=4.0),
    missing_hint="node_exporter's loadavg collector is off",
)

# Share of wall-clock time in which at least one runnable task waited for a CPU.
CPU_PSI_WAITING = MetricSpec(
    name="cpu_psi_waiting",
    resource="cpu",
    signal="saturation",
    unit="percent",
    query_template="100 * rate(node_pressure_cpu_waiting_seconds_total{$matcher}[$range])",
    threshold_rule=ThresholdRule(floor=10.0, k=2.0, cap=50.0),
    missing_hint=(
        "no pressure stall information: the kernel is older than 4.20, was built "
        "without CONFIG_PSI or booted with psi=0, or node_exporter's pressure collector is off"
    ),
)

MEMORY_UTILIZATION = MetricSpec(
    name="memory_utilization",
    resource="memory",
    signal="utilization",
    unit="percent",
    query_template=(
        "100 * (1 - node_memory_MemAvailable_bytes{$matcher}"
        " / node_memory_MemTotal_bytes{$matcher})"
    ),
    threshold_rule=ThresholdRule(floor=70.0, k=2.0, cap=95.0),
)

_VMSTAT_HINT = "node_exporter's vmstat collector is off"

MEMORY_MAJOR_FAULTS = MetricSpec(
    name="memory_major_faults",
    resource="memory",
    signal="saturation",
    unit="faults/s",
    query_template="rate(node_vmstat_pgmajfault{$matcher}[$range])",
    threshold_rule=ThresholdRule(floor=10.0, k=3.0, cap=1000.0),
    missing_hint=_VMSTAT_HINT,
)

MEMORY_SWAP_IN = MetricSpec(
    name="memory_swap_in",
    resource="memory",
    signal="saturation",
    unit="pages/s",
    query_template="rate(node_vmstat_pswpin{$matcher}[$range])",
    threshold_rule=ThresholdRule(floor=1.0, k=3.0, cap=1000.0),
    missing_hint=_VMSTAT_HINT,
)

MEMORY_SWAP_OUT = MetricSpec(
    name="memory_swap_out",
    resource="memory",
    signal="saturation",
    unit="pages/s",
    query_template="rate(node_vmstat_pswpout{$matcher}[$range])",
    threshold_rule=ThresholdRule(floor=1.0, k=3.0, cap=1000.0),
    missing_hint=_VMSTAT_HINT,
)

# Share of wall-clock time in which at least one task stalled on memory: reclaim,
# swap-in or refaulting page cache.
MEMORY_PSI_WAITING = MetricSpec(
    name="memory_psi_waiting",
    resource="memory",
    signal="saturation",
    unit="percent",
    query_template="100 * rate(node_pressure_memory_waiting_seconds_total{$matcher}[$range])",
    threshold_rule=ThresholdRule(floor=5.0, k=2.0, cap=30.0),
    missing_hint=CPU_PSI_WAITING.missing_hint,
)

_DISKSTATS_HINT = "node_exporter's diskstats collector is off or sees no disk"

# Share of time the device had at least one request in flight: iostat's %util.
DISK_UTILIZATION = MetricSpec(
    name="disk_utilization",
    resource="disk",
    signal="utilization",
    unit="percent",
    query_template="100 * rate(node_disk_io_time_seconds_total{$matcher}[$range])",
    threshold_rule=ThresholdRule(floor=60.0, k=2.0, cap=90.0),
    device_label="device",
    missing_hint=_DISKSTATS_HINT,
)

# Average number of requests queued or in flight: iostat's aqu-sz (avgqu-sz).
DISK_QUEUE_LENGTH = MetricSpec(
    name="disk_queue_length",
    resource="disk",
    signal="saturation",
    unit="requests",
    query_template="rate(node_disk_io_time_weighted_seconds_total{$matcher}[$range])",
    threshold_rule=ThresholdRule(floor=1.0, k=2.0, cap=16.0),
    device_label="device",
    missing_hint=_DISKSTATS_HINT,
)

# 1 - avail / size reaches 100 % when unprivileged writes start failing, as df's
# Use% does. In between it reads slightly higher than df, by at most
# reserved / (size - reserved), where reserved is the space kept for root.
_FILESYSTEM_SELECTOR = f'fstype!~"{FILESYSTEM_TYPE_EXCLUDE}",$matcher'
FILESYSTEM_USED = MetricSpec(
    name="filesystem_used",
    resource="filesystem",
    signal="utilization",
    unit="percent",
    query_template=(
        f"100 * (1 - node_filesystem_avail_bytes{{{_FILESYSTEM_SELECTOR}}}"
        f" / node_filesystem_size_bytes{{{_FILESYSTEM_SELECTOR}}})"
    ),
    threshold_rule=ThresholdRule(floor=80.0, k=2.0, cap=95.0),
    device_label="mountpoint",
    missing_hint="node_exporter's filesystem collector is off or sees only excluded types",
)

_NETWORK_HINT = "node_exporter's netdev collector is off or sees only excluded interfaces"


def _both_directions(aggregation: str, counter: str) -> str:
    """Return ``aggregation`` by interface of the receive and transmit rates of ``counter``.

    The direction label added to the transmit rates keeps the two sets apart, because
    rate() drops the metric name and ``or`` would otherwise drop the transmit side.
    """
    selector = f'{{device!~"{NETWORK_DEVICE_EXCLUDE}",$matcher}}'
    receive = f"rate(node_network_receive_{counter}_total{selector}[$range])"
    transmit = f"rate(node_network_transmit_{counter}_total{selector}[$range])"
    return (
        f"{aggregation} by (instance, device) ({receive}"
        f' or label_replace({transmit}, "direction", "transmit", "", ""))'
    )


# The busier direction, because Ethernet links are full duplex.
NETWORK_THROUGHPUT = MetricSpec(
    name="network_throughput",
    resource="network",
    signal="utilization",
    unit="bytes/s",
    query_template=_both_directions("max", "bytes"),
    # No cap: the link speed is not known for every interface.
    threshold_rule=ThresholdRule(floor=1_000_000.0, k=3.0, cap=None),
    device_label="device",
    missing_hint=_NETWORK_HINT,
)

# node_exporter reports node_network_speed_bytes as -125000 (-1 Mbit/s) where the
# driver reports no speed, as virtio does, so only positive speeds are used.
NETWORK_UTILIZATION = MetricSpec(
    name="network_utilization",
    resource="network",
    signal="utilization",
    unit="percent",
    query_template=(
        f"100 * {_both_directions('max', 'bytes')}"
        " / on (instance, device) max by (instance, device) (node_network_speed_bytes{$matcher} > 0)"
    ),
    threshold_rule=ThresholdRule(floor=60.0, k=2.0, cap=90.0),
    device_label="device",
    missing_hint=(
        "link speed unknown: no interface has a positive node_network_speed_bytes "
        "(virtual NICs report none), or node_exporter's netclass collector is off"
    ),
)

NETWORK_DROPS = MetricSpec(
    name="network_drops",
    resource="network",
    signal="saturation",
    unit="packets/s",
    query_template=_both_directions("sum", "drop"),
    threshold_rule=ThresholdRule(floor=1.0, k=3.0, cap=100.0),
    device_label="device",
    missing_hint=_NETWORK_HINT,
)

NETWORK_ERRORS = MetricSpec(
    name="network_errors",
    resource="network",
    signal="errors",
    unit="errors/s",
    query_template=_both_directions("sum", "errs"),
    threshold_rule=ThresholdRule(floor=0.1, k=3.0, cap=10.0),
    device_label="device",
    missing_hint=_NETWORK_HINT,
)

# node_exporter metrics, in the order of the USE table: resource, then signal.
USE_METRICS: tuple[MetricSpec, ...] = (
    CPU_UTILIZATION,
    CPU_LOAD_PER_CPU,
    CPU_PSI_WAITING,
    MEMORY_UTILIZATION,
    MEMORY_MAJOR_FAULTS,
    MEMORY_SWAP_IN,
    MEMORY_SWAP_OUT,
    MEMORY_PSI_WAITING,
    DISK_UTILIZATION,
    DISK_QUEUE_LENGTH,
    FILESYSTEM_USED,
    NETWORK_THROUGHPUT,
    NETWORK_UTILIZATION,
    NETWORK_DROPS,
    NETWORK_ERRORS,
)
DEFAULT_METRICS = USE_METRICS

# pve_cpu_usage_ratio is the Proxmox API's CPU utilization of the guest as a fraction.
# NOTE: taken to be relative to the guest's assigned CPUs (pve_cpu_usage_limit), as
# the exporter's help text does not state it.
PVE_CPU_UTILIZATION = MetricSpec(
    name="cpu_utilization",
    resource="cpu",
    signal="utilization",
    unit="percent",
    query_template="100 * pve_cpu_usage_ratio{$matcher}",
    threshold_rule=CPU_UTILIZATION.threshold_rule,
    key_label="id",
    exporter=PVE_EXPORTER,
)

# The host's view of the guest's memory, which can differ from what the guest's own
# MemAvailable would give.
PVE_MEMORY_UTILIZATION = MetricSpec(
    name="memory_utilization",
    resource="memory",
    signal="utilization",
    unit="percent",
    query_template="100 * pve_memory_usage_bytes{$matcher} / pve_memory_size_bytes{$matcher}",
    threshold_rule=MEMORY_UTILIZATION.threshold_rule,
    key_label="id",
    exporter=PVE_EXPORTER,
)

# Used for a Proxmox guest in place of the node_exporter metric of the same name
# when the guest has no node_exporter series.
PVE_METRICS: tuple[MetricSpec, ...] = (PVE_CPU_UTILIZATION, PVE_MEMORY_UTILIZATION)
