"""Map firing Prometheus alerts to inventory systems and decide which systems to re-check.

Firing alerts come from the ``ALERTS`` series through the HTTP query API. An
alert belongs to a system when its ``system``, ``host`` or ``instance`` label
(checked in that order) equals the system's name or address, ignoring case, a
``:port`` suffix and, for names, a domain suffix (``pve1.home.arpa`` is ``pve1``).
"""

import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

logger = logging.getLogger(__name__)

FIRING_QUERY = 'ALERTS{alertstate="firing"}'
SYSTEM_LABELS = ("system", "host", "instance")


class PrometheusAlertsError(Exception):
    """Prometheus could not be queried for firing alerts."""


def _without_credentials(url: str) -> str:
    """Return ``url`` without a ``user:password@`` part, for messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def query_firing_alerts(base_url: str, timeout: float) -> list[dict[str, str]]:
    """Return the label sets of the firing alerts.

    Error messages name the URL without credentials and never quote the
    underlying exception, whose text repeats the full URL.
    """
    url = base_url.rstrip("/") + "/api/v1/query"
    display_url = _without_credentials(url)
    try:
        response = requests.get(url, params={"query": FIRING_QUERY}, timeout=timeout)
    except requests.Timeout:
        raise PrometheusAlertsError(f"querying {display_url} timed out after {timeout} s") from None
    except requests.ConnectionError:
        raise PrometheusAlertsError(f"Prometheus at {display_url} is unreachable") from None
    except requests.RequestException as error:
        raise PrometheusAlertsError(
            f"querying {display_url} failed ({type(error).__name__})"
        ) from None
    try:
        body = response.json()
    except ValueError as error:
        raise PrometheusAlertsError(
            f"{display_url} returned HTTP {response.status_code} without a JSON body"
        ) from error
    if response.status_code != 200 or body.get("status") != "success":
        raise PrometheusAlertsError(
            f"{display_url} returned HTTP {response.status_code}: {body.get('error') or body.get('status')}"
        )
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        raise PrometheusAlertsError(
            f"{display_url} returned a {data.get('resultType')!r} result; expected a vector"
        )
    return [dict(sample.get("metric") or {}) for sample in data.get("result") or []]


def _host_part(value: str) -> str:
    """Drop a ``:port`` suffix and IPv6 brackets: ``10.0.0.2:9100`` -> ``10.0.0.2``."""
    text = value.strip().lower()
    if text.startswith("["):
        closing = text.find("]")
        return text[1:closing] if closing > 0 else text
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if port.isdigit():
            return host
    return text


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _candidates(value: str) -> list[str]:
    host = _host_part(value)
    candidates = [host]
    if not _is_ip(host) and "." in host:
        candidates.append(host.split(".", 1)[0])
    return candidates


def systems_for_alerts(
    alerts: Iterable[Mapping[str, str]], systems: Iterable[Mapping[str, Any]]
) -> dict[str, list[str]]:
    """Return {system name: sorted alert names} for the alerts that map to an inventory system."""
    listed = list(systems)
    # Names win over addresses when a name equals another system's address.
    by_key: dict[str, str] = {}
    for system in listed:
        by_key.setdefault(system["name"].lower(), system["name"])
    for system in listed:
        address = system.get("address")
        if address:
            by_key.setdefault(str(address).lower(), system["name"])

    matches: dict[str, set[str]] = {}
    for labels in alerts:
        name = _match(labels, by_key)
        if name is None:
            continue
        matches.setdefault(name, set()).add(labels.get("alertname", "unnamed alert"))
    return {name: sorted(alert_names) for name, alert_names in sorted(matches.items())}


def _match(labels: Mapping[str, str], by_key: Mapping[str, str]) -> str | None:
    for label in SYSTEM_LABELS:
        value = labels.get(label)
        if not value:
            continue
        for candidate in _candidates(value):
            if candidate in by_key:
                return by_key[candidate]
    return None


def due_for_pass(
    matches: Mapping[str, Sequence[str]],
    last_requested: Mapping[str, float],
    now: float,
    min_interval_seconds: float,
) -> list[str]:
    """Return the matched systems whose last alert-triggered pass is at least the interval ago."""
    return [
        name
        for name in sorted(matches)
        if now - last_requested.get(name, float("-inf")) >= min_interval_seconds
    ]
