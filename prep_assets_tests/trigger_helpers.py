"""Helpers for the tests of schedules and sensors: a loopback webhook receiver, an infra
repo of local systems, and in-process execution of the run requests a sensor returns."""

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dagster import (
    AssetSelection,
    DagsterInstance,
    ExecuteInProcessResult,
    RunRequest,
    SensorResult,
    SkipReason,
    materialize,
)

from prep_assets.defs.assets import ALL_ASSETS
from prep_assets.defs.freshness import systems_fresh_for_tier
from prep_assets.defs.resources import PrometheusResource
from prep_assets.defs.trigger_resources import (
    AlertWebhookResource,
    GitWatchResource,
    PrometheusAlertsResource,
)
from prep_assets_tests.loop_helpers import TOOLS_MAP, InfraRepo, inventory_text, loop_resources

TIERS_PATH = "docs/reference/tiers.md"


def local_row(name: str, tier: str) -> str:
    """An inventory row of a system checked on this machine through the local transport."""
    return f"| {name} | linux | {tier} | 127.0.0.1 | | local | | |"


def tiers_text(rows: Sequence[tuple[str, str, str]], default: str = "standard") -> str:
    """A tiers document with (name, cron schedule, stale after) rows."""
    lines = ["# Tiers", "", "| Tier | Schedule | Stale after | Default |", "|---|---|---|---|"]
    for name, schedule, stale_after in rows:
        lines.append(
            f"| {name} | {schedule} | {stale_after} | {'yes' if name == default else ''} |"
        )
    return "\n".join(lines) + "\n"


def local_infra_repo(
    root: Path, systems: Sequence[tuple[str, str]], tiers: str | None
) -> InfraRepo:
    """A committed infra repo of local (name, tier) systems, with a tools map and optional tiers."""
    repo = InfraRepo(root)
    repo.write(
        "docs/infrastructure/system-inventory.md", inventory_text([local_row(*s) for s in systems])
    )
    repo.write("docs/reference/tools-map.md", TOOLS_MAP)
    if tiers is not None:
        repo.write(TIERS_PATH, tiers)
    repo.commit("Document the test systems")
    return repo


def trigger_resources(
    repo: InfraRepo,
    known_hosts: Path,
    *,
    webhook_url: str = "",
    prometheus_url: str = "",
    fetch_remote: str = "",
    alert_interval_minutes: float = 30.0,
) -> dict[str, Any]:
    """The resources of a test pass plus those the sensors take."""
    resources = loop_resources(repo, known_hosts)
    resources["alert_webhook"] = AlertWebhookResource(
        url=webhook_url,
        url_env="PREP_TEST_UNSET_WEBHOOK",
        payload_format="json",
        timeout_seconds=5.0,
    )
    resources["git_watch"] = GitWatchResource(fetch_remote=fetch_remote)
    resources["prometheus_alerts"] = PrometheusAlertsResource(
        min_interval_minutes=alert_interval_minutes, timeout_seconds=5.0
    )
    if prometheus_url:
        resources["prometheus"] = PrometheusResource(url=prometheus_url)
    return resources


def execute_run_request(
    request: RunRequest, instance: DagsterInstance, resources: dict[str, Any]
) -> ExecuteInProcessResult:
    """Run one request in this process, as the daemon would launch it: same steps, checks and tags."""
    assert request.asset_selection, f"the run request selects no assets: {request}"
    selection = AssetSelection.assets(*request.asset_selection).without_checks()
    if request.asset_check_keys:
        selection = selection | AssetSelection.checks(*request.asset_check_keys)
    result = materialize(
        [*ALL_ASSETS, systems_fresh_for_tier],
        instance=instance,
        resources=resources,
        selection=selection,
        tags=dict(request.tags),
        raise_on_error=False,
    )
    assert result.success, f"the run of {request.run_key or request.tags} failed"
    return result


def run_requests_of(
    result: SensorResult | SkipReason | Iterable[RunRequest] | None,
) -> list[RunRequest]:
    if result is None or isinstance(result, SkipReason):
        return []
    if isinstance(result, SensorResult):
        return list(result.run_requests or [])
    return list(result)


@dataclass
class ReceivedPost:
    path: str
    content_type: str
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every POST and responds with ``status``."""

    status: int = 200
    posts: list[ReceivedPost] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                receiver.posts.append(
                    ReceivedPost(self.path, self.headers.get("Content-Type", ""), body)
                )
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hooks/prep-token-5f2e"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
