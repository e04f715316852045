"""Shared pytest fixtures of the prep-assets tests.

network_guard.py limits every connection of the test process to loopback and
the tests' own network namespaces.
"""

# The SSH test host fixtures (ssh_hosts, start_ssh_host) are defined in sshhosts.py,
# the network namespace fixture (namespaces) in netns.py, the fake Proxmox VE API
# (fake_pve) in fake_pve.py, the fake Kubernetes API (fake_kubernetes) in
# kubernetes_server.py, Dagster instances on SQLite or PostgreSQL (make_instance,
# postgres_url) in dagster_instances.py.
pytest_plugins = [
    # First: it cleans the environment and guards connections before anything runs.
    "prep_assets_tests.network_guard",
    "prep_assets_tests.sshhosts",
    "prep_assets_tests.netns",
    "prep_assets_tests.fake_pve",
    "prep_assets_tests.kubernetes_server",
    "prep_assets_tests.dagster_instances",
]

# Prometheus and node exporter fixtures, defined in prometheus_server.py.
from prep_assets_tests.prometheus_server import (  # noqa: E402, F401
    backfilled_prometheus,
    live_prometheus,
    stalled_http_url,
    unreachable_prometheus_url,
)
