"""Stale-system alerts: which to send, their webhook payloads, and the POST that sends them.

An alert goes out once when a system becomes stale and once when it is fresh
again (or leaves the inventory). The caller keeps ``AlertState`` between
evaluations, so a system that stays stale is not reported again.
"""

import enum
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests

from prep_assets.tiers import format_duration
from prep_assets.triggers.freshness import StaleSystem

logger = logging.getLogger(__name__)

USER_AGENT = "prep-assets freshness alerts"


class AlertKind(enum.StrEnum):
    STALE = "stale"
    RECOVERED = "recovered"


class PayloadFormat(enum.StrEnum):
    """Body of the webhook POST: prep-assets' own JSON, or ``{"text": ...}`` as Slack expects."""

    JSON = "json"
    SLACK = "slack"


@dataclass(frozen=True)
class Alert:
    """One alert about one system."""

    kind: AlertKind
    system: str
    tier: str
    at: datetime
    stale: StaleSystem | None = None
    reason: str = ""

    def text(self) -> str:
        if self.kind is AlertKind.STALE:
            assert self.stale is not None
            steps = "; ".join(step.describe() for step in self.stale.steps)
            return f"STALE: {self.system} (tier {self.tier}): {steps}"
        return f"RECOVERED: {self.system} (tier {self.tier}): {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": f"prep.system_{self.kind.value}",
            "kind": self.kind.value,
            "system": self.system,
            "tier": self.tier,
            "at": self.at.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "stale_steps": [step.to_dict() for step in self.stale.steps] if self.stale else [],
            "text": self.text(),
        }

    def payload(self, payload_format: PayloadFormat) -> dict[str, Any]:
        if payload_format is PayloadFormat.SLACK:
            return {"text": self.text()}
        return self.to_dict()


@dataclass
class AlertState:
    """The systems that an alert reported as stale and that have not recovered since.

    ``alerted`` maps each system to the tier and time of its stale alert.
    """

    alerted: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"alerted": self.alerted}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "AlertState":
        if not data:
            return cls()
        alerted = data.get("alerted") or {}
        return cls({str(name): dict(entry) for name, entry in alerted.items()})


def plan_alerts(
    state: AlertState,
    stale: Sequence[StaleSystem],
    inventory_names: set[str],
    now: datetime,
) -> list[Alert]:
    """Return the alerts to send now: newly stale systems first, then recovered ones."""
    alerts = []
    stale_names = {system.system for system in stale}
    for system in stale:
        if system.system not in state.alerted:
            alerts.append(Alert(AlertKind.STALE, system.system, system.tier, now, stale=system))
    for name in sorted(state.alerted):
        if name in stale_names:
            continue
        tier = state.alerted[name].get("tier", "unknown")
        reason = (
            "fresh again: every step is within the tier's window"
            if name in inventory_names
            else "no longer in the inventory"
        )
        alerts.append(Alert(AlertKind.RECOVERED, name, tier, now, reason=reason))
    return alerts


def record_sent(state: AlertState, alert: Alert) -> None:
    """Update ``state`` after ``alert`` was delivered (or logged, when no webhook is set)."""
    if alert.kind is AlertKind.STALE:
        state.alerted[alert.system] = {
            "tier": alert.tier,
            "since": alert.at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
    else:
        state.alerted.pop(alert.system, None)


class AlertDeliveryError(Exception):
    """The webhook did not accept an alert. The message never contains the URL."""


def send_alert(url: str, alert: Alert, payload_format: PayloadFormat, timeout: float) -> None:
    """POST one alert as JSON; raise AlertDeliveryError unless the webhook returns 2xx.

    Webhook URLs such as Slack's carry a token, so no error message includes the URL.
    """
    body = json.dumps(alert.payload(payload_format)).encode("utf-8")
    try:
        response = requests.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
            timeout=timeout,
            allow_redirects=False,
        )
    except requests.Timeout:
        raise AlertDeliveryError(f"the webhook timed out after {timeout} s") from None
    except requests.RequestException as error:
        raise AlertDeliveryError(f"the webhook request failed ({type(error).__name__})") from None
    if not 200 <= response.status_code < 300:
        raise AlertDeliveryError(f"the webhook returned HTTP {response.status_code}")


def describe_age(stale: StaleSystem) -> str:
    age = stale.max_age
    return "never checked" if age is None else format_duration(age)
