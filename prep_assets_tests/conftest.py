"""Shared pytest fixtures of the prep-assets tests."""

# The SSH test host fixtures (ssh_hosts, start_ssh_host) are defined in sshhosts.py.
pytest_plugins = ["prep_assets_tests.sshhosts"]

# Prometheus and node exporter fixtures, defined in prometheus_server.py.
from prep_assets_tests.prometheus_server import (  # noqa: E402, F401
    backfilled_prometheus,
    live_prometheus,
    stalled_http_url,
    unreachable_prometheus_url,
)
