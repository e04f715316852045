"""Check access and tools of many systems concurrently, one connection per system.

Each system gets one transport, opened by the first command and reused for the
tool check and the optional short sample. A failure on one system becomes that
system's result and never stops the others.
"""

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
from prep_assets.transports.proxmox import proxmox_node_of
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
    # Systems checked at the same time through one Proxmox node (its guests and
    # the node itself), each with its own SSH or API connection to the node;
    # None for no limit besides max_workers.
    # NOTE: 4 is an estimate of what a small node takes alongside its guests
    # (every pct or qm call starts a Perl process there), not a measured limit.
    max_per_node: int | None = 4


@dataclass(frozen=True)
class SampleRequest:
    """A short sample to take over the same connection: the command and its parser."""

    command: Sequence[str]
    parse: SampleParser
    # How long the command runs by design; it is added to the command timeout.
    duration_seconds: float = 0.0


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
        not_contacted = AccessResult(
            system.name, AccessState.NOT_CONTACTED, method, message="not contacted"
        )
        return SystemCheck(system.name, not_contacted, not_applicable(specs))

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
    except Exception as error:
        # A bug or a malformed response from one system must not fail the other systems' checks.
        logger.error("check of %s failed unexpectedly", system.name, exc_info=True)
        message = f"unexpected {type(error).__name__} during the check; see the step log"
        access = AccessResult(system.name, AccessState.ERROR, method, message=message)
        return SystemCheck(system.name, access, _unknown(specs))
    finally:
        if transport is not None:
            try:
                transport.close()
            except Exception:
                logger.warning("closing the connection to %s failed", system.name, exc_info=True)
        if access is not None:
            access.duration_ms = round((time.monotonic() - started) * 1000, 1)


def check_systems(
    systems: Sequence[System],
    tools_for: Callable[[System], Sequence[ToolSpec]],
    open_transport: TransportOpener,
    settings: CheckSettings,
    sample_for: Callable[[System], SampleRequest | None] = lambda system: None,
) -> dict[str, SystemCheck]:
    """Check every system concurrently with at most ``settings.max_workers`` at a time.

    Systems that are reached through the same Proxmox node, and that node
    itself, are also limited to ``settings.max_per_node`` at a time. A system
    waiting for its node does not hold a worker, so other systems go ahead.
    """
    if not systems:
        return {}
    workers = max(1, min(settings.max_workers, len(systems)))
    node_keys = _node_keys(systems)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prep-check") as pool:
        limiter = _KeyedLimiter(pool, settings.max_per_node)
        futures = {
            system.name: limiter.submit(
                node_keys[system.name],
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


def _node_keys(systems: Sequence[System]) -> dict[str, str | None]:
    """Return the Proxmox node that each system loads, or None for systems on no node."""
    nodes = {node for node in map(proxmox_node_of, systems) if node is not None}
    return {
        system.name: proxmox_node_of(system) or (system.name if system.name in nodes else None)
        for system in systems
    }


class _KeyedLimiter:
    """Submit calls to a pool with at most ``limit`` running per key; key None is not limited.

    Calls over the limit wait in a queue per key, not in a worker thread, and
    start when a call of the same key finishes.
    """

    def __init__(self, pool: ThreadPoolExecutor, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"max_per_node must be at least 1 or None, got {limit}")
        self._pool = pool
        self._limit = limit
        self._lock = threading.Lock()
        self._running: Counter[Hashable] = Counter()
        self._waiting: dict[Hashable, deque[tuple[Future[Any], Callable[[], Any]]]] = {}

    def submit(self, key: Hashable | None, function: Callable[..., Any], *args: Any) -> Future[Any]:
        outer: Future[Any] = Future()

        def call() -> Any:
            return function(*args)

        if key is None or self._limit is None:
            self._start(None, outer, call)
            return outer
        with self._lock:
            if self._running[key] >= self._limit:
                self._waiting.setdefault(key, deque()).append((outer, call))
                return outer
            self._running[key] += 1
        self._start(key, outer, call)
        return outer

    def _start(self, key: Hashable | None, outer: Future[Any], call: Callable[[], Any]) -> None:
        inner = self._pool.submit(call)
        inner.add_done_callback(lambda done: self._finish(key, outer, done))

    def _finish(self, key: Hashable | None, outer: Future[Any], inner: Future[Any]) -> None:
        error = inner.exception()
        if error is not None:
            outer.set_exception(error)
        else:
            outer.set_result(inner.result())
        if key is None or self._limit is None:
            return
        following = None
        with self._lock:
            queue = self._waiting.get(key)
            if queue:
                following = queue.popleft()
            else:
                self._running[key] -= 1
        if following is not None:
            self._start(key, *following)


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
        result = transport.run(sample.command, settings.timeout + sample.duration_seconds)
    except TransportError as error:
        logger.info("short sample on %s failed: %s", system.name, error.message)
        return {"error": error.message}
    if result.exit_code != 0:
        return {"error": f"sample command exited with {result.exit_code}"}
    try:
        return sample.parse(result.stdout)
    except ValueError as error:
        # A sample that cannot be read is missing data, not a failed access check.
        logger.warning("short sample on %s could not be parsed: %s", system.name, error)
        return {"error": f"sample output could not be parsed: {error}"}


def _unknown(specs: Sequence[ToolSpec]) -> list[ToolResult]:
    return [ToolResult(spec.command, ToolState.UNKNOWN) for spec in specs]
