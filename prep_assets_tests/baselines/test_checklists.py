"""USE checklist pages per system type, written into a temporary infra repo."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prep_assets.baselines.catalog import CPU_UTILIZATION, DISK_UTILIZATION, MEMORY_SWAP_IN
from prep_assets.baselines.checklists import (
    CHECKLIST,
    checklist_path,
    type_slug,
    write_checklist_pages,
)
from prep_assets.baselines.models import BaselineSource, SystemBaseline
from prep_assets.baselines.rows import Window, no_data_row, statistics_row
from prep_assets.models import AccessMethod, System

END = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
# Three expected samples, so the 3-value CPU rows have full coverage and the
# 2-value disk rows are flagged.
SPAN = Window(END - timedelta(days=7), END, timedelta(days=7), timedelta(days=3.5), 3)


def make_system(name: str, system_type: str, access: AccessMethod = AccessMethod.SSH) -> System:
    return System(name, system_type, "lab", access, address="127.0.0.30")


def web_baseline(name: str, cpu_values: list[float], current: float) -> SystemBaseline:
    metrics = [
        statistics_row(CPU_UTILIZATION, "q", SPAN, cpu_values, 0.9, current=current),
        statistics_row(DISK_UTILIZATION, "q", SPAN, [30.0, 40.0], 0.9, worst_device="sda"),
        statistics_row(DISK_UTILIZATION, "q", SPAN, [30.0, 40.0], 0.9, device="sda"),
        no_data_row(MEMORY_SWAP_IN, "q", SPAN, "no series for instance web:9100"),
    ]
    return SystemBaseline(name, BaselineSource.PROMETHEUS, metrics, "")


SYSTEMS = [
    make_system("web-2", "Debian VM"),
    make_system("web-1", "Debian VM"),
    make_system("pve1", "proxmox-host"),
    make_system("haos", "haos"),
    make_system("printer", "printer", AccessMethod.TCP),
    make_system("modem", "appliance", AccessMethod.NONE),
]


def test_type_slug() -> None:
    assert type_slug("Debian VM") == "debian-vm"
    assert type_slug("k8s_node") == "k8s-node"
    assert type_slug("  ") == "unknown"


def test_one_page_per_type(tmp_path: Path) -> None:
    written = write_checklist_pages(tmp_path, SYSTEMS, {})

    assert written == sorted(
        [
            checklist_path(tmp_path, "Debian VM"),
            checklist_path(tmp_path, "haos"),
            checklist_path(tmp_path, "proxmox-host"),
        ]
    )
    assert written[0] == tmp_path / "docs/infrastructure/use-checklist-debian-vm.md"
    assert not list((tmp_path / "docs/infrastructure").glob(".*.tmp"))


def test_page_lists_use_commands(tmp_path: Path) -> None:
    write_checklist_pages(tmp_path, SYSTEMS, {})
    page = checklist_path(tmp_path, "Debian VM").read_text()

    assert "Systems of this type: web-1, web-2." in page
    for command in (
        "vmstat 1",
        "mpstat -P ALL 1",
        "iostat -xz 1",
        "sar -n DEV 1",
        "free -m",
        "df -h",
    ):
        assert f"`{command}`" in page
    for title in ("## CPU", "## Memory", "## Disks", "## File systems", "## Network interfaces"):
        assert title in page
    assert "No baselines of the cpu of these systems yet." in page


def test_every_resource_has_each_signal_or_documented_gap() -> None:
    signals = {(item.resource, item.signal) for item in CHECKLIST}

    for resource in ("cpu", "memory", "disk", "network"):
        assert (resource, "utilization") in signals
        assert (resource, "saturation") in signals
    # Capacity has no saturation or error command of its own: a full file system
    # shows as 100 % used.
    assert ("filesystem", "utilization") in signals


def test_page_shows_baselines_of_its_type(tmp_path: Path) -> None:
    baselines = {
        "web-1": web_baseline("web-1", [10.0, 20.0, 30.0], current=25.0),
        # Stored form, as the pipeline keeps it between runs.
        "web-2": web_baseline("web-2", [60.0, 70.0, 99.0], current=99.0).to_dict(),
        "pve1": web_baseline("pve1", [5.0], current=5.0),
    }

    write_checklist_pages(tmp_path, SYSTEMS, baselines)
    page = checklist_path(tmp_path, "Debian VM").read_text()

    assert (
        "| web-1 | cpu_utilization | - | 20.0 | 29.0 | 30.0 | 50.0 | 25.0 | percent | - |" in page
    )
    assert "| web-2 | cpu_utilization | - |" in page
    assert "above threshold now" in page
    assert "| web-1 | disk_utilization | all (worst: sda) |" in page
    assert "low coverage: 67 % of the window" in page
    assert "| web-1 | disk_utilization | sda |" in page
    assert "no data: no series for instance web:9100" in page
    assert "Prometheus history of 7 days up to 2026-12-04T12:00:00+00:00" in page
    assert "pve1" not in page


def test_read_only_type_notes_missing_commands(tmp_path: Path) -> None:
    write_checklist_pages(tmp_path, SYSTEMS, {})

    assert "read-only or vendor-managed" in checklist_path(tmp_path, "haos").read_text()
    assert "read-only" not in checklist_path(tmp_path, "Debian VM").read_text()


def test_rewrite_replaces_page(tmp_path: Path) -> None:
    path = checklist_path(tmp_path, "proxmox-host")
    path.parent.mkdir(parents=True)
    path.write_text("hand-edited\n")

    write_checklist_pages(tmp_path, SYSTEMS, {})

    assert path.read_text().startswith("# USE checklist: proxmox-host\n")


@pytest.mark.parametrize("access", [AccessMethod.TCP, AccessMethod.NONE])
def test_no_page_without_shell(tmp_path: Path, access: AccessMethod) -> None:
    written = write_checklist_pages(tmp_path, [make_system("box", "printer", access)], {})

    assert written == []
