"""Collect USE baselines for many systems from Prometheus history.

Each metric is one PromQL range query for all systems at once: the instances are
joined into one ``instance=~"a|b|c"`` matcher, split into several queries only when
the matcher would make the request URL too long. Each metric also gets one instant
query at the window end for the current values, and one ``up`` query finds which
instances Prometheus scrapes at all. The query count therefore grows with the
number of metrics, not with the number of systems.

Proxmox guests named by a ``pve-id`` or ``vmid`` attribute also get CPU and memory
queries against prometheus-pve-exporter, used when the guest has no node_exporter
series of its own.

A system without a series, and every system when Prometheus cannot be reached,
gets a MetricBaseline with ``no_data_reason`` set. This module raises no exception
for a failed query, only ValueError for invalid arguments.
"""

import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote_plus, urlsplit, urlunsplit

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from prep_assets.baselines import stats
from prep_assets.baselines.catalog import (
    CPU_UTILIZATION,
    DEFAULT_METRICS,
    MEMORY_UTILIZATION,
    PVE_EXPORTER,
    PVE_METRICS,
    MetricSpec,
)
from prep_assets.baselines.models import BaselineSource, MetricBaseline, SystemBaseline
from prep_assets.baselines.rows import Points, Window, finite_points, metric_rows, no_data_row
from prep_assets.baselines.targets import (
    NODE_EXPORTER_PORT,
    PveGuest,
    default_instance_label,
    default_pve_guest,
)
from prep_assets.models import System

# Re-exported so that callers keep one import for the collection and its inputs.
__all__ = [
    "CPU_UTILIZATION",
    "DEFAULT_METRICS",
    "MEMORY_UTILIZATION",
    "NODE_EXPORTER_PORT",
    "PVE_METRICS",
    "MetricSpec",
    "PveGuest",
    "QueryStats",
    "collect_prometheus_baselines",
    "default_instance_label",
    "default_pve_guest",
]

logger = logging.getLogger(__name__)

# Prometheus rejects a range query with more points than this per series
# ("exceeded maximum resolution of 11,000 points per timeseries").
MAX_POINTS_PER_SERIES = 11_000

# Maximum length of one URL-encoded PromQL query. With the path, start, end, step and
# timeout the request line stays under 8 KiB, the buffer size of nginx's default
# "large_client_header_buffers 4 8k", which rejects a longer line with 414.
DEFAULT_MAX_QUERY_CHARS = 6_000

DEFAULT_MIN_COVERAGE = 0.9
DEFAULT_WINDOW = timedelta(days=7)
# The range of rate(). It needs at least two samples, so keep it at 4 or more
# scrape intervals: 5 minutes suits scrape intervals up to 75 s.
DEFAULT_RATE_RANGE = timedelta(minutes=5)

# After this many read timeouts in a row Prometheus counts as unreachable, so a
# stalled server costs two timeouts per collection and not one per query.
MAX_CONSECUTIVE_TIMEOUTS = 2


class RangeQueryClient(Protocol):
    """The part of PrometheusConnect this module uses, so tests can pass a wrapper."""

    url: str

    def custom_query_range(
        self,
        query: str,
        start_time: datetime,
        end_time: datetime,
        step: str,
        params: dict[Any, Any] = ...,
        # PrometheusConnect annotates it as int, but requests takes seconds as a float.
        timeout: Any = ...,
    ) -> Any: ...

    def custom_query(self, query: str, params: dict[Any, Any] = ..., timeout: Any = ...) -> Any: ...


@dataclass
class QueryStats:
    """Counters of the queries sent by one or more collections."""

    # Range and instant queries together.
    queries: int = 0
    range_queries: int = 0
    instant_queries: int = 0
    failed: int = 0
    seconds: float = 0.0
    # The PromQL text of every query sent, in order.
    query_texts: list[str] = field(default_factory=list)


def promql_string(value: str) -> str:
    """Quote a value as a PromQL double-quoted string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def promql_duration(duration: timedelta) -> str:
    """Format a whole number of seconds as a PromQL duration: 300 s is ``5m``."""
    seconds = duration.total_seconds()
    if seconds <= 0 or seconds != int(seconds):
        raise ValueError(
            f"a PromQL duration must be a positive whole number of seconds, got {duration}"
        )
    whole = int(seconds)
    if whole % 3600 == 0:
        return f"{whole // 3600}h"
    if whole % 60 == 0:
        return f"{whole // 60}m"
    return f"{whole}s"


def instance_regex(labels: Iterable[str]) -> str:
    """Return an RE2 alternation that matches exactly the given label values.

    Python's re.escape only escapes punctuation and whitespace, which RE2 also
    reads as literal characters. Prometheus anchors label regexes at both ends.
    """
    return "|".join(re.escape(label) for label in labels)


def label_matcher(label: str, values: Iterable[str]) -> str:
    """Return a matcher such as ``id=~"qemu/100|lxc/101"`` for exactly these values."""
    return f"{label}=~{promql_string(instance_regex(values))}"


def instance_matcher(labels: Iterable[str]) -> str:
    return label_matcher("instance", labels)


def encoded_query_length(spec: MetricSpec, labels: Sequence[str]) -> int:
    """Return the length of the metric's query for these labels once URL-encoded."""
    return len(quote_plus(spec.query(label_matcher(spec.key_label, labels))))


def chunk_by_query_length(
    keys: Sequence[str], build_query: Callable[[list[str]], str], max_query_chars: int
) -> list[list[str]]:
    """Split keys into groups whose URL-encoded query fits in ``max_query_chars``.

    A key whose query alone is longer than the limit still gets a group of its own.
    """
    chunks: list[list[str]] = []
    current: list[str] = []
    for key in keys:
        candidate = [*current, key]
        if current and len(quote_plus(build_query(candidate))) > max_query_chars:
            chunks.append(current)
            candidate = [key]
        current = candidate
    if current:
        chunks.append(current)
    return chunks


def chunk_instance_labels(
    labels: Sequence[str], spec: MetricSpec, max_query_chars: int
) -> list[list[str]]:
    """Split the spec's key label values into groups whose query fits in ``max_query_chars``."""
    return chunk_by_query_length(
        labels, lambda chunk: spec.query(label_matcher(spec.key_label, chunk)), max_query_chars
    )


def _redact_url(url: str) -> str:
    """Drop user name and password from a URL before it goes into a log or message."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _error_chain(error: BaseException) -> list[BaseException]:
    """Return the error and its causes, following urllib3's ``reason`` and ``__cause__``."""
    chain = [error]
    while len(chain) < 10:
        current = chain[-1]
        inner = getattr(current, "reason", None)
        if not isinstance(inner, BaseException):
            inner = current.__cause__ or current.__context__
        if inner is None or inner in chain:
            break
        chain.append(inner)
    return chain


def _describe_request_error(error: requests.RequestException, url: str, timeout: float) -> str:
    chain = _error_chain(error)
    # Not urllib3's TimeoutError: urllib3 2 derives NewConnectionError, which a
    # refused connection raises, from it.
    if any(isinstance(link, (requests.Timeout, TimeoutError)) for link in chain):
        return f"Prometheus at {url} timed out after {timeout:g} s"
    detail = next(
        (link.strerror for link in chain if isinstance(link, OSError) and link.strerror),
        type(chain[-1]).__name__,
    )
    return f"Prometheus at {url} is unreachable ({detail})"


def _validate_arguments(
    window: timedelta,
    step: timedelta,
    end: datetime,
    timeout: float,
    min_coverage: float,
    rate_range: timedelta,
) -> Window:
    if end.tzinfo is None:
        raise ValueError(f"end must be timezone-aware, got naive {end.isoformat()}")
    if window <= timedelta(0):
        raise ValueError(f"window must be positive, got {window}")
    if step <= timedelta(0):
        raise ValueError(f"step must be positive, got {step}")
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    if not 0 <= min_coverage <= 1:
        raise ValueError(f"min_coverage must be between 0 and 1, got {min_coverage}")
    promql_duration(rate_range)

    expected = stats.expected_sample_count(window, step)
    if expected > MAX_POINTS_PER_SERIES:
        raise ValueError(
            f"a {window} window at a {step} step has {expected} points, more than the "
            f"{MAX_POINTS_PER_SERIES} Prometheus allows; use a step of at least "
            f"{window / (MAX_POINTS_PER_SERIES - 1)}"
        )
    return Window(end - window, end, window, step, expected)


@dataclass
class _MetricResult:
    """One metric's query results for all systems, by key label value."""

    spec: MetricSpec
    # The query text sent for each key.
    queries: dict[str, str] = field(default_factory=dict)
    # Rows built from the key's series, a failure row when its query failed, or None
    # when the query returned no series for it.
    rows: dict[str, list[MetricBaseline] | None] = field(default_factory=dict)
    # Keys that had at least one series.
    keys_with_series: set[str] = field(default_factory=set)


class _Collection:
    """State of one collect_prometheus_baselines call: queries sent and their results."""

    def __init__(
        self,
        client: RangeQueryClient,
        span: Window,
        timeout: float,
        min_coverage: float,
        rate_range: str,
        max_query_chars: int,
        query_current: bool,
        query_stats: QueryStats,
    ) -> None:
        self.client = client
        self.url = _redact_url(str(getattr(client, "url", "Prometheus")))
        self.span = span
        self.timeout = timeout
        self.min_coverage = min_coverage
        self.rate_range = rate_range
        self.max_query_chars = max_query_chars
        self.query_current = query_current
        self.query_stats = query_stats
        self.consecutive_timeouts = 0
        # Set after a connection error or repeated timeouts, so no further query is sent.
        self.unreachable_reason: str | None = None

    def _send(self, query: str, instant: bool) -> Any:
        # Prometheus's own query timeout, so the server stops a query the client gave up on.
        params = {"timeout": f"{self.timeout:g}"}
        if instant:
            params["time"] = f"{self.span.end.timestamp():.3f}"
            return self.client.custom_query(query, params=params, timeout=self.timeout)
        return self.client.custom_query_range(
            query,
            start_time=self.span.start,
            end_time=self.span.end,
            step=f"{self.span.step.total_seconds():g}",
            params=params,
            timeout=self.timeout,
        )

    def run_query(
        self, query: str, *, instant: bool = False
    ) -> tuple[list[dict[str, Any]] | None, str | None]:
        """Send one query and return its series, or None and the reason it failed."""
        if self.unreachable_reason is not None:
            return None, self.unreachable_reason

        kind = "instant" if instant else "range"
        self.query_stats.queries += 1
        if instant:
            self.query_stats.instant_queries += 1
        else:
            self.query_stats.range_queries += 1
        self.query_stats.query_texts.append(query)
        started = time.monotonic()
        try:
            result = self._send(query, instant)
        except requests.ConnectionError as error:
            # Includes a connect timeout: no server accepted the connection.
            self.query_stats.failed += 1
            self.unreachable_reason = _describe_request_error(error, self.url, self.timeout)
            logger.error("%s query failed, skipping the rest: %s", kind, self.unreachable_reason)
            return None, self.unreachable_reason
        except requests.Timeout as error:
            self.query_stats.failed += 1
            self.consecutive_timeouts += 1
            reason = _describe_request_error(error, self.url, self.timeout)
            if self.consecutive_timeouts >= MAX_CONSECUTIVE_TIMEOUTS:
                self.unreachable_reason = reason
                logger.error(
                    "%s query %s failed, %d timeouts in a row, skipping the rest: %s",
                    kind,
                    query,
                    self.consecutive_timeouts,
                    reason,
                )
            else:
                logger.error("%s query %s failed: %s", kind, query, reason)
            return None, reason
        except (
            PrometheusApiClientException,
            requests.RequestException,
            KeyError,
            ValueError,
        ) as error:
            # An HTTP error status or a malformed response fails only this query.
            self.query_stats.failed += 1
            self.consecutive_timeouts = 0
            reason = f"{kind} query to Prometheus at {self.url} failed: {error}"
            logger.error("%s query %s failed: %s", kind, query, error)
            return None, reason
        finally:
            self.query_stats.seconds += time.monotonic() - started
        self.consecutive_timeouts = 0
        if not isinstance(result, list):
            self.query_stats.failed += 1
            reason = f"{kind} query to Prometheus at {self.url} returned {type(result).__name__}, not a list of series"
            logger.error("%s query %s failed: %s", kind, query, reason)
            return None, reason
        return result, None

    def _series_by_key(
        self, spec: MetricSpec, query: str, series_list: list[dict[str, Any]], instant: bool
    ) -> dict[str, dict[str | None, Any]]:
        """Group a query result by key label and device label.

        Range results map to Points and instant results to a float. A series
        without the key label, with a missing device label or with a value that is
        not a number is dropped with a warning. An instant value of NaN or
        infinity is dropped too, so ``current`` stays None rather than invalid JSON. When several series share a key and
        device (two jobs scraping one exporter), the one with the most values is kept.
        """
        grouped: dict[str, dict[str | None, Any]] = {}
        for series in series_list:
            labels = series.get("metric", {})
            key = labels.get(spec.key_label)
            device = labels.get(spec.device_label) if spec.device_label else None
            if key is None or (spec.device_label and device is None):
                missing = spec.key_label if key is None else spec.device_label
                logger.warning("dropped a series without a %s label from query %s", missing, query)
                continue
            try:
                if instant:
                    parsed: Any = float(series["value"][1])
                else:
                    parsed = finite_points(series.get("values", []))
            except (KeyError, IndexError, TypeError, ValueError) as error:
                logger.warning(
                    "dropped a malformed series for %s %s from query %s: %s",
                    spec.key_label,
                    key,
                    query,
                    error,
                )
                continue

            if instant and not math.isfinite(parsed):
                continue
            by_device = grouped.setdefault(key, {})
            if device in by_device and not instant:
                logger.warning(
                    "query %s returned several series for %s %s%s, keeping the longest",
                    query,
                    spec.key_label,
                    key,
                    f" device {device}" if device else "",
                )
                if len(parsed.values) <= len(by_device[device].values):
                    continue
            by_device[device] = parsed
        return grouped

    def collect_metric(self, spec: MetricSpec, keys: Sequence[str]) -> _MetricResult:
        """Query one metric for all keys and build each key's rows."""
        result = _MetricResult(spec)

        def build(chunk: list[str]) -> str:
            return spec.query(label_matcher(spec.key_label, chunk), self.rate_range)

        for chunk in chunk_by_query_length(keys, build, self.max_query_chars):
            query = build(chunk)
            series_list, failure = self.run_query(query)
            for key in chunk:
                result.queries[key] = query
            if series_list is None:
                reason = failure or "the query failed"
                for key in chunk:
                    result.rows[key] = [no_data_row(spec, query, self.span, reason)]
                continue

            series_by_key = self._series_by_key(spec, query, series_list, instant=False)
            # Only the points are needed from here on, so the JSON result can go.
            del series_list
            current_by_key: dict[str, dict[str | None, Any]] = {}
            if self.query_current and series_by_key:
                current_list, _failure = self.run_query(query, instant=True)
                if current_list is not None:
                    current_by_key = self._series_by_key(spec, query, current_list, instant=True)

            for key in chunk:
                series: dict[str | None, Points] | None = series_by_key.get(key)
                if series is None:
                    result.rows[key] = None
                    continue
                result.keys_with_series.add(key)
                result.rows[key] = metric_rows(
                    spec,
                    query,
                    self.span,
                    series,
                    current_by_key.get(key, {}),
                    self.min_coverage,
                    key,
                )
        return result

    def scraped_instances(self, labels: Sequence[str]) -> dict[str, float] | None:
        """Return ``up`` at the window end by instance, or None when the query failed.

        An instance missing from the result is not a scrape target of this Prometheus.
        """

        def build(chunk: list[str]) -> str:
            return f"max by (instance) (up{{{instance_matcher(chunk)}}})"

        up: dict[str, float] = {}
        for chunk in chunk_by_query_length(labels, build, self.max_query_chars):
            series_list, _failure = self.run_query(build(chunk), instant=True)
            if series_list is None:
                return None
            for series in series_list:
                instance = series.get("metric", {}).get("instance")
                try:
                    value = float(series["value"][1])
                except (KeyError, IndexError, TypeError, ValueError):
                    continue
                if instance is not None:
                    up[instance] = value
        return up


def _missing_reason(
    spec: MetricSpec, label: str, has_any_series: bool, up: dict[str, float] | None
) -> str:
    """Explain why an instance has no series of ``spec``, from what else is known of it."""
    if has_any_series:
        hint = f": {spec.missing_hint}" if spec.missing_hint else ""
        return f"no series for instance {label}{hint}"
    if up is None:
        return f"no series for instance {label}"
    if label not in up:
        return (
            f"instance {label} not found: Prometheus scrapes no target with that instance "
            "label (no node_exporter there, or the inventory's Instance column is missing or wrong)"
        )
    if up[label] == 0:
        return (
            f"no series for instance {label}: Prometheus scrapes it but up is 0 "
            "(node_exporter down or unreachable)"
        )
    return (
        f"no node_exporter series for instance {label}: the target at that instance "
        "label is up but exports no node_exporter metrics"
    )


def _system_message(metrics: Sequence[MetricBaseline], notes: Sequence[str]) -> str:
    """Join the notes and each distinct no-data reason, naming its metrics unless all share it."""
    names_by_reason: dict[str, list[str]] = {}
    for metric in metrics:
        if metric.no_data_reason:
            names = names_by_reason.setdefault(metric.no_data_reason, [])
            if metric.metric not in names:
                names.append(metric.metric)
    metric_count = len({metric.metric for metric in metrics})

    parts = list(notes)
    for reason, names in names_by_reason.items():
        parts.append(reason if len(names) == metric_count else f"{reason} ({', '.join(names)})")
    return "; ".join(parts)


def _system_baseline(
    name: str, metrics: list[MetricBaseline], notes: Sequence[str] = ()
) -> SystemBaseline:
    has_data = any(not metric.no_data for metric in metrics)
    source = BaselineSource.PROMETHEUS if has_data else BaselineSource.NONE
    message = _system_message(metrics, notes)
    return SystemBaseline(system=name, source=source, metrics=metrics, message=message)


def _node_rows(
    system: System,
    label: str | None,
    results: Sequence[_MetricResult],
    span: Window,
    up: dict[str, float] | None,
) -> list[MetricBaseline]:
    if label is None:
        reason = (
            f"no instance label for system {system.name}: "
            "it has no address and no 'instance' attribute"
        )
        return [no_data_row(r.spec, r.spec.query_template, span, reason) for r in results]

    has_any_series = any(label in r.keys_with_series for r in results)
    rows: list[MetricBaseline] = []
    for result in results:
        built = result.rows.get(label)
        if built is None:
            reason = _missing_reason(result.spec, label, has_any_series, up)
            query = result.queries.get(label, result.spec.query_template)
            built = [no_data_row(result.spec, query, span, reason)]
        rows.extend(built)
    return rows


def _pve_rows(
    guest: PveGuest, results: Sequence[_MetricResult], span: Window
) -> dict[str, MetricBaseline]:
    """Return the Proxmox exporter's row of each metric for the guest, by metric name."""
    rows: dict[str, MetricBaseline] = {}
    for result in results:
        built = next((result.rows[i] for i in guest.ids if result.rows.get(i) is not None), None)
        if built is None:
            query = result.queries.get(guest.ids[0], result.spec.query_template)
            reason = f"no series for Proxmox guest {guest}: {PVE_EXPORTER} does not report it"
            built = [no_data_row(result.spec, query, span, reason)]
        rows[result.spec.name] = built[0]
    return rows


def _merge_pve_rows(
    rows: list[MetricBaseline], pve_rows: dict[str, MetricBaseline]
) -> tuple[list[MetricBaseline], list[str]]:
    """Use the Proxmox exporter's row where node_exporter has no data for the same metric."""
    merged: list[MetricBaseline] = []
    used: list[str] = []
    for row in rows:
        pve_row = pve_rows.get(row.metric) if row.device is None else None
        if pve_row is not None and row.no_data and not pve_row.no_data:
            merged.append(pve_row)
            used.append(row.metric)
        elif pve_row is not None and row.no_data and pve_row.no_data_reason:
            row.no_data_reason = f"{row.no_data_reason}; {pve_row.no_data_reason}"
            merged.append(row)
        else:
            merged.append(row)
    return merged, used


def collect_prometheus_baselines(
    client_or_url: RangeQueryClient | str,
    systems: list[System],
    *,
    window: timedelta = DEFAULT_WINDOW,
    step: timedelta,
    end: datetime,
    timeout: float,
    instance_label_for: Callable[[System], str | None] = default_instance_label,
    pve_guest_for: Callable[[System], PveGuest | None] = default_pve_guest,
    metrics: Sequence[MetricSpec] = DEFAULT_METRICS,
    pve_metrics: Sequence[MetricSpec] = PVE_METRICS,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
    rate_range: timedelta = DEFAULT_RATE_RANGE,
    query_current: bool = True,
    query_stats: QueryStats | None = None,
) -> dict[str, SystemBaseline]:
    """Query Prometheus for each metric and return a baseline per system name.

    Each metric costs one range query and one instant query for all systems, or a
    few of each when the matcher is split to keep each query under
    ``max_query_chars``. One more instant query of ``up`` separates an instance
    that Prometheus does not scrape from one whose exporter is down.

    ``end`` must be timezone-aware. ``timeout`` is in seconds and applies to each
    query, both to the HTTP request and as Prometheus's own query timeout. A metric
    whose coverage is below ``min_coverage`` keeps its numbers and is flagged
    ``low_coverage``. ``query_current`` False skips the metrics' instant queries,
    which leaves ``current`` None. Pass a QueryStats to count the queries sent.

    A URL gets a PrometheusConnect that retries a refused connection or a 429, 502,
    503 or 504 response once, and never retries a read timeout. A connection error,
    or two read timeouts in a row, give every remaining metric that reason as
    no_data, and no later query is sent. Any other failed query affects only the
    metric and systems it was for.
    """
    span = _validate_arguments(window, step, end, timeout, min_coverage, rate_range)
    counters = query_stats if query_stats is not None else QueryStats()

    labels_by_system: dict[str, str | None] = {}
    guests_by_system: dict[str, PveGuest | None] = {}
    notes_by_system: dict[str, list[str]] = {}
    for system in systems:
        labels_by_system[system.name] = instance_label_for(system)
        notes_by_system[system.name] = []
        try:
            guests_by_system[system.name] = pve_guest_for(system)
        except ValueError as error:
            logger.warning("no Proxmox exporter lookup for system %s: %s", system.name, error)
            guests_by_system[system.name] = None
            notes_by_system[system.name].append(str(error))
    unique_labels = sorted({label for label in labels_by_system.values() if label})
    unique_ids = sorted({i for guest in guests_by_system.values() if guest for i in guest.ids})

    owns_client = isinstance(client_or_url, str)
    if isinstance(client_or_url, str):
        client: RangeQueryClient = PrometheusConnect(
            url=client_or_url,
            # read=False raises a read timeout at once, so a stalled server costs one
            # ``timeout`` per query and not two.
            retry=Retry(
                total=1, read=False, backoff_factor=0.5, status_forcelist=(429, 502, 503, 504)
            ),
        )
    else:
        client = client_or_url

    collection = _Collection(
        client,
        span,
        timeout,
        min_coverage,
        promql_duration(rate_range),
        max_query_chars,
        query_current,
        counters,
    )
    try:
        up = collection.scraped_instances(unique_labels) if unique_labels else {}
        node_results = [collection.collect_metric(spec, unique_labels) for spec in metrics]
        pve_results = (
            [collection.collect_metric(spec, unique_ids) for spec in pve_metrics]
            if unique_ids
            else []
        )
    finally:
        if owns_client and isinstance(client, PrometheusConnect):
            client.close()

    results: dict[str, SystemBaseline] = {}
    for system in systems:
        rows = _node_rows(system, labels_by_system[system.name], node_results, span, up)
        notes = notes_by_system[system.name]
        guest = guests_by_system[system.name]
        if guest is not None and pve_results:
            rows, used = _merge_pve_rows(rows, _pve_rows(guest, pve_results, span))
            if used:
                notes.insert(0, f"{', '.join(used)} from {PVE_EXPORTER} (Proxmox guest {guest})")
        results[system.name] = _system_baseline(system.name, rows, notes)

    logger.info(
        "collected Prometheus baselines of %d systems with %d queries (%d failed) in %.1f s",
        len(systems),
        counters.queries,
        counters.failed,
        counters.seconds,
    )
    return results
