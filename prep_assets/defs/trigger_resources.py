"""Configurable resources of the sensors: the alert webhook, git fetching and alert polling."""

import os

from dagster import ConfigurableResource
from pydantic import Field

from prep_assets.triggers.alerts import PayloadFormat


def _float_from_env(variable: str, default: float) -> float:
    text = os.environ.get(variable, "")
    if not text:
        return default
    try:
        return float(text)
    except ValueError as error:
        raise ValueError(f"invalid {variable}={text!r}: expected a number") from error


class AlertWebhookResource(ConfigurableResource):
    """The webhook that stale-system alerts are POSTed to; without a URL they are only logged.

    The URL can hold a token (Slack's do), so by default it is read from an
    environment variable when an alert is sent, and the UI shows only the
    variable's name.
    """

    url: str = Field(
        default="",
        description="Webhook URL; empty to read it from the variable named by url_env.",
    )
    url_env: str = Field(
        default="PREP_ALERT_WEBHOOK_URL",
        description="Name of the environment variable that contains the webhook URL.",
    )
    payload_format: str = Field(
        default_factory=lambda: os.environ.get("PREP_ALERT_WEBHOOK_FORMAT", "json"),
        description='Body of the POST: "json" (prep-assets fields) or "slack" ({"text": ...}).',
    )
    timeout_seconds: float = Field(default=10.0, description="Seconds allowed per POST.")

    def resolved_url(self) -> str:
        return self.url or os.environ.get(self.url_env, "")

    def resolved_format(self) -> PayloadFormat:
        try:
            return PayloadFormat(self.payload_format.strip().lower())
        except ValueError as error:
            raise ValueError(
                f"invalid webhook payload format {self.payload_format!r}: use json or slack"
            ) from error


class GitWatchResource(ConfigurableResource):
    """Settings of the commit sensor: how it refreshes the infra repo before it looks for commits."""

    fetch_remote: str = Field(
        default_factory=lambda: os.environ.get("PREP_GIT_FETCH_REMOTE", ""),
        description=(
            "Remote to `git fetch` (such as origin) before each check, fast-forwarding the "
            "checked-out branch to its upstream; empty to read the local repo only."
        ),
    )


class PrometheusAlertsResource(ConfigurableResource):
    """Settings of the alert sensor's Prometheus polling; the URL is the prometheus resource's."""

    min_interval_minutes: float = Field(
        default_factory=lambda: _float_from_env("PREP_ALERT_PASS_INTERVAL_MINUTES", 30.0),
        description="Minutes between two alert-triggered passes of the same system.",
    )
    timeout_seconds: float = Field(default=10.0, description="Seconds allowed per query.")
