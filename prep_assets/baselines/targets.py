"""Mapping of inventory systems to their Prometheus series.

node_exporter series are found by their ``instance`` label: the system's
``instance`` attribute (an Instance column in the inventory), or by default
``<address>:9100``. prometheus-pve-exporter series of a Proxmox guest are found by
their ``id`` label, ``qemu/NNN`` or ``lxc/NNN``: the system's ``pve-id`` attribute
(a "PVE ID" column) or its ``vmid`` attribute (a "VMID" column) with either prefix.
"""

import re
from dataclasses import dataclass

from prep_assets.models import System

NODE_EXPORTER_PORT = 9100

# Inventory columns are stored under their lower-case, hyphen-joined header, so a
# "PVE ID" or "pve_id" column becomes "pve-id". "pve_id" is accepted for systems
# built in code.
PVE_ID_ATTRIBUTES = ("pve-id", "pve_id")
VMID_ATTRIBUTE = "vmid"
PVE_GUEST_TYPES = ("qemu", "lxc")

_PVE_ID = re.compile(r"^(qemu|lxc)/(\d+)$")
_VMID = re.compile(r"^\d+$")


def default_instance_label(system: System) -> str | None:
    """Return the ``instance`` label node_exporter's series carry for this system.

    The system's ``instance`` attribute wins. Otherwise it is ``<address>:9100``, with
    an IPv6 address in brackets as Prometheus writes it. None when the system has
    neither.
    """
    instance = system.attributes.get("instance")
    if instance:
        return instance
    if not system.address:
        return None
    host = f"[{system.address}]" if ":" in system.address else system.address
    return f"{host}:{NODE_EXPORTER_PORT}"


@dataclass(frozen=True)
class PveGuest:
    """The ``id`` label values of a Proxmox guest's prometheus-pve-exporter series."""

    # One id from a pve-id attribute, or "qemu/N" and "lxc/N" from a bare vmid.
    ids: tuple[str, ...]

    def __str__(self) -> str:
        return " or ".join(self.ids)


def default_pve_guest(system: System) -> PveGuest | None:
    """Return the Proxmox guest ids of the system, or None when it names none.

    Raises ValueError naming the attribute when its value is neither ``qemu/NNN``,
    ``lxc/NNN`` nor a bare number.
    """
    for attribute in PVE_ID_ATTRIBUTES:
        value = system.attributes.get(attribute, "").strip()
        if not value:
            continue
        if not _PVE_ID.match(value):
            raise ValueError(
                f"invalid {attribute} {value!r} of system {system.name}: "
                "expected qemu/NNN or lxc/NNN, for example qemu/100"
            )
        return PveGuest((value,))

    vmid = system.attributes.get(VMID_ATTRIBUTE, "").strip()
    if not vmid:
        return None
    if not _VMID.match(vmid):
        raise ValueError(
            f"invalid {VMID_ATTRIBUTE} {vmid!r} of system {system.name}: expected a number such as 100"
        )
    return PveGuest(tuple(f"{guest_type}/{vmid}" for guest_type in PVE_GUEST_TYPES))
