"""Check access and tools of many systems concurrently, one connection per system.

Each system gets one transport, opened by the first command and reused for the
tool check and the optional short sample. A failure on one system becomes that
system's result and never stops the others.
"""

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prep_assets.checks.tools import (
    not_applicable,
    parse_platform,
    parse_tool_check,
    tool_check_command,
)
from prep_assets.models import (
    AccessMethod,
    AccessResult,
    AccessState,
    System,
    SystemCheck,
    ToolResult,
    ToolSpec,
    ToolState,
)
from prep_assets.transports.base import Transport, TransportError
from prep_assets.transports.tcp import probe_tcp

logger = logging.getLogger(__name__)

TransportOpener = Callable[[System], Transport]
SampleParser = Callable[[str], dict[str, Any]]


@dataclass(frozen=True)
class CheckSettings:
    """Limits of one check pass."""

    # Seconds allowed for connecting and for each command on one system.
    timeout: float = 10.0
    # Systems checked at the same time.
    max_workers: int = 16


@dataclass(frozen=True)
class SampleRequest:
    """A short sample to take over the same connection: the command and its parser."""

    command: Sequence[str]
    parse: SampleParser


class SetupError(Exception):
    """The check could not start on a system because of its configuration (for example a missing credential)."""


def check_system(
    system: System,
    specs: Sequence[ToolSpec],
    open_transport: TransportOpener,
    settings: CheckSettings,
    sample: SampleRequest | None = None,
) -> SystemCheck:
    """Check access and tools of one system; every failure becomes part of the result."""
    method = system.access.value
    if not system.contacted:
        access = AccessResult(
            system.name, AccessState.NOT_CONTACTED, method, message="not contacted"
        )
        return SystemCheck(system.name, access, not_applicable(specs))

    # Read-only systems and appliances never get a command: at most a TCP connect.
    if system.access is AccessMethod.TCP or system.read_only:
        return _probe_only(system, specs, settings)

    started = time.monotonic()
    transport: Transport | None = None
    access: AccessResult | None = None
    try:
        transport = open_transport(system)
        result = transport.run(tool_check_command(specs), settings.timeout)
        latency_ms = (time.monotonic() - started) * 1000
        access = AccessResult(system.name, AccessState.REACHABLE, method, round(latency_ms, 1))
        if result.exit_code != 0:
            access = AccessResult(
                system.name,
                AccessState.ERROR,
                method,
                round(latency_ms, 1),
                f"the check script exited with {result.exit_code}: {result.stderr.strip()[:200]}",
            )
        tools = parse_tool_check(result.stdout, specs)
        sample_data = _take_sample(transport, system, sample, settings) if sample else None
        return SystemCheck(system.name, access, tools, sample_data, parse_platform(result.stdout))
    except TransportError as error:
        logger.info("access check of %s failed: %s", system.name, error.message)
        access = AccessResult(system.name, error.state, method, message=error.message)
        return SystemCheck(system.name, access, _unknown(specs))
    except SetupError as error:
        logger.warning("cannot check %s: %s", system.name, error)
        access = AccessResult(system.name, AccessState.ERROR, method, message=str(error))
        return SystemCheck(system.name, access, _unknown(specs))
    finally:
        if transport is not None:
            transport.close()
        if access is not None:
            access.duration_ms = round((time.monotonic() - started) * 1000, 1)


def check_systems(
    systems: Sequence[System],
    tools_for: Callable[[System], Sequence[ToolSpec]],
    open_transport: TransportOpener,
    settings: CheckSettings,
    sample_for: Callable[[System], SampleRequest | None] = lambda system: None,
) -> dict[str, SystemCheck]:
    """Check every system concurrently with at most ``settings.max_workers`` at a time."""
    if not systems:
        return {}
    workers = max(1, min(settings.max_workers, len(systems)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prep-check") as pool:
        futures = {
            system.name: pool.submit(
                check_system,
                system,
                tools_for(system),
                open_transport,
                settings,
                sample_for(system),
            )
            for system in systems
        }
        return {name: future.result() for name, future in futures.items()}


def _probe_only(system: System, specs: Sequence[ToolSpec], settings: CheckSettings) -> SystemCheck:
    method = AccessMethod.TCP.value
    if not system.address or not system.port:
        access = AccessResult(
            system.name,
            AccessState.NOT_CONTACTED,
            method,
            message="no address and port documented, so reachability was not probed",
        )
        return SystemCheck(system.name, access, not_applicable(specs))
    started = time.monotonic()
    try:
        latency_ms = probe_tcp(system.name, system.address, system.port, settings.timeout)
    except TransportError as error:
        access = AccessResult(system.name, error.state, method, message=error.message)
    else:
        access = AccessResult(system.name, AccessState.REACHABLE, method, round(latency_ms, 1))
    access.duration_ms = round((time.monotonic() - started) * 1000, 1)
    return SystemCheck(system.name, access, not_applicable(specs))


def _take_sample(
    transport: Transport, system: System, sample: SampleRequest, settings: CheckSettings
) -> dict[str, Any] | None:
    try:
        result = transport.run(sample.command, settings.timeout)
    except TransportError as error:
        logger.info("short sample on %s failed: %s", system.name, error.message)
        return {"error": error.message}
    if result.exit_code != 0:
        return {"error": f"sample command exited with {result.exit_code}"}
    return sample.parse(result.stdout)


def _unknown(specs: Sequence[ToolSpec]) -> list[ToolResult]:
    return [ToolResult(spec.command, ToolState.UNKNOWN) for spec in specs]
