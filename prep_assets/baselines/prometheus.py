"""Collect CPU and memory baselines for many systems from Prometheus history.

Each metric is one PromQL range query for all systems at once: the instances are
joined into one ``instance=~"a|b|c"`` matcher, split into several queries only when
the matcher would make the request URL too long. The query count therefore grows
with the number of metrics, not with the number of systems.

A system without a series, and every system when Prometheus cannot be reached,
gets a MetricBaseline with ``no_data_reason`` set. This module raises no exception
for a failed query, only ValueError for invalid arguments.
"""

import logging
import math
import re
import string
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote_plus, urlsplit, urlunsplit

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from prep_assets.baselines import stats
from prep_assets.baselines.models import BaselineSource, MetricBaseline, SystemBaseline
from prep_assets.baselines.stats import ThresholdRule
from prep_assets.models import System

logger = logging.getLogger(__name__)

# Prometheus rejects a range query with more points than this per series
# ("exceeded maximum resolution of 11,000 points per timeseries").
MAX_POINTS_PER_SERIES = 11_000

# Maximum length of one URL-encoded PromQL query. With the path, start, end, step and
# timeout the request line stays under 8 KiB, the buffer size of nginx's default
# "large_client_header_buffers 4 8k", which rejects a longer line with 414.
DEFAULT_MAX_QUERY_CHARS = 6_000

DEFAULT_MIN_COVERAGE = 0.9
NODE_EXPORTER_PORT = 9100


@dataclass(frozen=True)
class MetricSpec:
    """One row of the USE table: a resource, a signal, its PromQL and its threshold rule.

    ``query_template`` is a string.Template whose ``$instances`` placeholder stands
    for the instance matcher inside the selector's braces. The query must return one
    series per ``instance`` label.
    """

    name: str
    resource: str
    # "utilization", "saturation" or "errors", as in the USE method.
    signal: str
    unit: str
    query_template: str
    threshold_rule: ThresholdRule

    def query(self, instance_matcher: str) -> str:
        return string.Template(self.query_template).substitute(instances=instance_matcher)


# The threshold rules are starting points chosen by judgment, not fitted to any fleet.
CPU_UTILIZATION = MetricSpec(
    name="cpu_utilization",
    resource="cpu",
    signal="utilization",
    unit="percent",
    query_template=(
        '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle",$instances}[5m])))'
    ),
    threshold_rule=ThresholdRule(floor=50.0, k=2.0, cap=95.0),
)

MEMORY_UTILIZATION = MetricSpec(
    name="memory_utilization",
    resource="memory",
    signal="utilization",
    unit="percent",
    query_template=(
        "100 * (1 - node_memory_MemAvailable_bytes{$instances}"
        " / node_memory_MemTotal_bytes{$instances})"
    ),
    threshold_rule=ThresholdRule(floor=70.0, k=2.0, cap=95.0),
)

DEFAULT_METRICS: tuple[MetricSpec, ...] = (CPU_UTILIZATION, MEMORY_UTILIZATION)


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


@dataclass
class QueryStats:
    """Counters of the range queries sent by one or more collections."""

    queries: int = 0
    failed: int = 0
    seconds: float = 0.0
    # The PromQL text of every query sent, in order.
    query_texts: list[str] = field(default_factory=list)


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


def promql_string(value: str) -> str:
    """Quote a value as a PromQL double-quoted string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def instance_regex(labels: Iterable[str]) -> str:
    """Return an RE2 alternation that matches exactly the given label values.

    Python's re.escape only escapes punctuation and whitespace, which RE2 also
    reads as literal characters. Prometheus anchors label regexes at both ends.
    """
    return "|".join(re.escape(label) for label in labels)


def instance_matcher(labels: Iterable[str]) -> str:
    return f"instance=~{promql_string(instance_regex(labels))}"


def encoded_query_length(spec: MetricSpec, labels: Sequence[str]) -> int:
    """Return the length of the metric's query for these labels once URL-encoded."""
    return len(quote_plus(spec.query(instance_matcher(labels))))


def chunk_instance_labels(
    labels: Sequence[str], spec: MetricSpec, max_query_chars: int
) -> list[list[str]]:
    """Split labels into groups whose URL-encoded query fits in ``max_query_chars``.

    A label whose query alone is longer than the limit still gets a group of its own.
    """
    chunks: list[list[str]] = []
    current: list[str] = []
    for label in labels:
        candidate = [*current, label]
        if current and encoded_query_length(spec, candidate) > max_query_chars:
            chunks.append(current)
            candidate = [label]
        current = candidate
    if current:
        chunks.append(current)
    return chunks


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


def _finite_values(values: Iterable[Sequence[Any]]) -> list[float]:
    """Convert Prometheus ``[timestamp, "value"]`` pairs to floats, dropping NaN and Inf."""
    result = []
    for _timestamp, text in values:
        value = float(text)
        if math.isfinite(value):
            result.append(value)
    return result


def _values_by_instance(series_list: list[dict[str, Any]], query: str) -> dict[str, list[float]]:
    """Map each ``instance`` label of a query result to its finite values.

    When several series share an instance (two jobs scraping one exporter), the
    one with the most values is kept and a warning is logged.
    """
    by_instance: dict[str, list[float]] = {}
    for series in series_list:
        instance = series.get("metric", {}).get("instance")
        if instance is None:
            logger.warning("dropped a series without an instance label from query %s", query)
            continue
        values = _finite_values(series.get("values", []))
        if instance in by_instance:
            logger.warning(
                "query %s returned several series for instance %s, keeping the longest",
                query,
                instance,
            )
            if len(values) <= len(by_instance[instance]):
                continue
        by_instance[instance] = values
    return by_instance


@dataclass(frozen=True)
class _Window:
    start: datetime
    end: datetime
    window: timedelta
    step: timedelta
    expected_samples: int


def _validate_arguments(
    window: timedelta, step: timedelta, end: datetime, timeout: float, min_coverage: float
) -> _Window:
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

    expected = stats.expected_sample_count(window, step)
    if expected > MAX_POINTS_PER_SERIES:
        raise ValueError(
            f"a {window} window at a {step} step has {expected} points, more than the "
            f"{MAX_POINTS_PER_SERIES} Prometheus allows; use a step of at least "
            f"{window / (MAX_POINTS_PER_SERIES - 1)}"
        )
    return _Window(end - window, end, window, step, expected)


def _no_data(spec: MetricSpec, query: str, span: _Window, reason: str) -> MetricBaseline:
    return MetricBaseline(
        metric=spec.name,
        unit=spec.unit,
        avg=None,
        p95=None,
        max=None,
        stddev=None,
        samples=0,
        coverage=0.0,
        threshold=None,
        threshold_inputs={},
        query=query,
        window_seconds=span.window.total_seconds(),
        source=BaselineSource.PROMETHEUS,
        no_data_reason=reason,
        low_coverage=True,
        step_seconds=span.step.total_seconds(),
        expected_samples=span.expected_samples,
        window_end=span.end.astimezone(UTC).isoformat(),
    )


def _metric_baseline(
    spec: MetricSpec, query: str, span: _Window, values: list[float], min_coverage: float
) -> MetricBaseline:
    summary = stats.summarize(values)
    threshold, inputs = stats.compute_threshold(summary.p95, summary.stddev, spec.threshold_rule)
    covered = stats.coverage(summary.samples, span.expected_samples)
    return MetricBaseline(
        metric=spec.name,
        unit=spec.unit,
        avg=summary.avg,
        p95=summary.p95,
        max=summary.max,
        stddev=summary.stddev,
        samples=summary.samples,
        coverage=covered,
        threshold=threshold,
        threshold_inputs=inputs,
        query=query,
        window_seconds=span.window.total_seconds(),
        source=BaselineSource.PROMETHEUS,
        low_coverage=covered < min_coverage,
        step_seconds=span.step.total_seconds(),
        expected_samples=span.expected_samples,
        window_end=span.end.astimezone(UTC).isoformat(),
    )


def _system_baseline(system: str, metrics: list[MetricBaseline]) -> SystemBaseline:
    reasons = []
    for metric in metrics:
        if metric.no_data_reason and metric.no_data_reason not in reasons:
            reasons.append(metric.no_data_reason)
    has_data = any(not metric.no_data for metric in metrics)
    source = BaselineSource.PROMETHEUS if has_data else BaselineSource.NONE
    return SystemBaseline(system=system, source=source, metrics=metrics, message="; ".join(reasons))


class _Collection:
    """State of one collect_prometheus_baselines call: queries run and their results."""

    def __init__(
        self,
        client: RangeQueryClient,
        span: _Window,
        timeout: float,
        min_coverage: float,
        query_stats: QueryStats,
    ) -> None:
        self.client = client
        self.url = _redact_url(str(getattr(client, "url", "Prometheus")))
        self.span = span
        self.timeout = timeout
        self.min_coverage = min_coverage
        self.query_stats = query_stats
        # Set after a connection error or timeout, so no further query is sent.
        self.unreachable_reason: str | None = None

    def run_query(self, query: str) -> tuple[list[dict[str, Any]] | None, str | None]:
        """Send one range query and return its series, or None and the reason it failed."""
        if self.unreachable_reason is not None:
            return None, self.unreachable_reason

        self.query_stats.queries += 1
        self.query_stats.query_texts.append(query)
        started = time.monotonic()
        try:
            result = self.client.custom_query_range(
                query,
                start_time=self.span.start,
                end_time=self.span.end,
                step=f"{self.span.step.total_seconds():g}",
                # Prometheus's own query timeout, so the server stops a query the client gave up on.
                params={"timeout": f"{self.timeout:g}"},
                timeout=self.timeout,
            )
        except (requests.ConnectionError, requests.Timeout) as error:
            self.query_stats.failed += 1
            self.unreachable_reason = _describe_request_error(error, self.url, self.timeout)
            logger.error("range query failed, skipping the rest: %s", self.unreachable_reason)
            return None, self.unreachable_reason
        except (
            PrometheusApiClientException,
            requests.RequestException,
            KeyError,
            ValueError,
        ) as error:
            # An HTTP error status or a malformed response fails only this query.
            self.query_stats.failed += 1
            reason = f"range query to Prometheus at {self.url} failed: {error}"
            logger.error("range query %s failed: %s", query, error)
            return None, reason
        finally:
            self.query_stats.seconds += time.monotonic() - started
        return result, None

    def collect_metric(
        self, spec: MetricSpec, labels: Sequence[str], max_query_chars: int
    ) -> dict[str, tuple[str, list[float] | None, str | None]]:
        """Return, per instance label, the query text and its values or a failure reason."""
        outcome: dict[str, tuple[str, list[float] | None, str | None]] = {}
        for chunk in chunk_instance_labels(labels, spec, max_query_chars):
            query = spec.query(instance_matcher(chunk))
            series_list, failure = self.run_query(query)
            by_instance = _values_by_instance(series_list, query) if series_list is not None else {}
            for label in chunk:
                outcome[label] = (query, by_instance.get(label), failure)
        return outcome


def collect_prometheus_baselines(
    client_or_url: RangeQueryClient | str,
    systems: list[System],
    *,
    window: timedelta,
    step: timedelta,
    end: datetime,
    timeout: float,
    instance_label_for: Callable[[System], str | None] = default_instance_label,
    metrics: Sequence[MetricSpec] = DEFAULT_METRICS,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
    query_stats: QueryStats | None = None,
) -> dict[str, SystemBaseline]:
    """Query Prometheus for each metric and return a baseline per system name.

    Each metric costs one range query for all systems, or a few when the instance
    matcher is split to keep each query under ``max_query_chars``.

    ``end`` must be timezone-aware. ``timeout`` is in seconds and applies to each
    query, both to the HTTP request and as Prometheus's own query timeout. A metric
    whose coverage is below ``min_coverage`` is flagged ``low_coverage``. Pass a
    QueryStats to count the queries sent.

    A URL gets a PrometheusConnect that retries a refused connection or a 429, 502,
    503 or 504 response once, and never retries a read timeout. The first
    connection error or timeout gives every system that reason as no_data, and no
    later query is sent.
    """
    span = _validate_arguments(window, step, end, timeout, min_coverage)
    counters = query_stats if query_stats is not None else QueryStats()

    labels_by_system: dict[str, str | None] = {}
    for system in systems:
        labels_by_system[system.name] = instance_label_for(system)
    unique_labels = sorted({label for label in labels_by_system.values() if label})

    owns_client = isinstance(client_or_url, str)
    if isinstance(client_or_url, str):
        client: RangeQueryClient = PrometheusConnect(
            url=client_or_url,
            # read=False raises a read timeout at once, so a stalled server costs one
            # ``timeout`` per collection and not two.
            retry=Retry(
                total=1, read=False, backoff_factor=0.5, status_forcelist=(429, 502, 503, 504)
            ),
        )
    else:
        client = client_or_url

    collection = _Collection(client, span, timeout, min_coverage, counters)
    try:
        outcomes = {
            spec.name: collection.collect_metric(spec, unique_labels, max_query_chars)
            for spec in metrics
        }
    finally:
        if owns_client and isinstance(client, PrometheusConnect):
            client.close()

    results: dict[str, SystemBaseline] = {}
    for system in systems:
        label = labels_by_system[system.name]
        metric_baselines = []
        for spec in metrics:
            if label is None:
                reason = (
                    f"no instance label for system {system.name}: "
                    "it has no address and no 'instance' attribute"
                )
                metric_baselines.append(_no_data(spec, spec.query_template, span, reason))
                continue

            query, values, failure = outcomes[spec.name][label]
            if failure is not None:
                metric_baselines.append(_no_data(spec, query, span, failure))
            elif values is None:
                reason = f"no series for instance {label}"
                metric_baselines.append(_no_data(spec, query, span, reason))
            elif not values:
                reason = f"the series for instance {label} has only NaN or infinite values"
                metric_baselines.append(_no_data(spec, query, span, reason))
            else:
                metric_baselines.append(
                    _metric_baseline(spec, query, span, values, collection.min_coverage)
                )
        results[system.name] = _system_baseline(system.name, metric_baselines)

    logger.info(
        "collected Prometheus baselines of %d systems with %d queries (%d failed)",
        len(systems),
        counters.queries,
        counters.failed,
    )
    return results
