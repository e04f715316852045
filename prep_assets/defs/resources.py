"""Configurable resources: where the infra repo is, how to reach systems, where Prometheus is."""

import os
from pathlib import Path

from dagster import ConfigurableResource, DagsterInstance
from pydantic import Field

from prep_assets.state import StateStore

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_REPO = PACKAGE_ROOT / ".demo" / "homelab"


def default_infra_repo() -> str:
    """Return the infra repo named by PREP_INFRA_REPO, or the example repo that ``make demo`` builds."""
    return os.environ.get("PREP_INFRA_REPO") or str(EXAMPLE_REPO)


class InfraRepoResource(ConfigurableResource):
    """The git repository that contains the infrastructure docs and receives prep-status.md/.json."""

    path: str = Field(default_factory=default_infra_repo, description="Path of the infra git repo.")
    first_run_days: int = Field(
        default=30, description="Days of history the first git review reads."
    )

    @property
    def root(self) -> Path:
        return Path(self.path).expanduser().resolve()


class AccessResource(ConfigurableResource):
    """Settings for reaching systems: timeouts, concurrency, SSH configuration and host-key policy."""

    known_hosts: str = Field(
        default_factory=lambda: os.environ.get("PREP_KNOWN_HOSTS", "~/.ssh/known_hosts"),
        description="known_hosts file checked for every SSH host key; unknown keys are rejected.",
    )
    timeout_seconds: float = Field(
        default=10.0, description="Seconds allowed to connect to a system and for each command."
    )
    max_workers: int = Field(default=16, description="Systems checked at the same time.")
    max_per_node: int = Field(
        default=4,
        description="Guests of one Proxmox node or Kubernetes node checked at the same time; 0 for no limit.",
    )
    ssh_config: str = Field(
        default_factory=lambda: os.environ.get("PREP_SSH_CONFIG", "~/.ssh/config"),
        description="ssh_config file for HostName, User, Port, IdentityFile and ProxyJump; empty for none.",
    )
    use_ssh_agent: bool = Field(
        default=True, description="Offer the keys of a running ssh-agent (SSH_AUTH_SOCK)."
    )
    kubernetes_debug_pods: bool = Field(
        default=False,
        description="Allow node-level checks of Kubernetes nodes through a privileged debug pod (creates a pod).",
    )
    debug_pod_image: str = Field(
        default="debian:bookworm-slim",
        description="Image of the node debug pod; it must contain nsenter.",
    )


class PrometheusResource(ConfigurableResource):
    """The Prometheus server that stores node_exporter history. An empty URL means there is none."""

    url: str = Field(
        default_factory=lambda: os.environ.get("PREP_PROMETHEUS_URL", ""),
        description="Base URL such as http://127.0.0.1:9090; empty to take short samples instead.",
    )
    window_hours: float = Field(default=168.0, description="Baseline window in hours.")
    # 300 s keeps a 7-day, 200-system collection near half a minute (docs/benchmarks.md).
    step_seconds: float = Field(default=300.0, description="Query resolution in seconds.")
    timeout_seconds: float = Field(default=30.0, description="Seconds allowed per query.")


class StateResource(ConfigurableResource):
    """The folder where asset values are kept as JSON between runs."""

    base_dir: str = Field(
        default_factory=lambda: os.environ.get("PREP_STATE_DIR", ""),
        description="Folder for asset values; empty means prep_state/ in the instance's storage folder.",
    )

    def store(self, instance: DagsterInstance) -> StateStore:
        if self.base_dir:
            return StateStore(Path(self.base_dir).expanduser())
        return StateStore(Path(instance.storage_directory()) / "prep_state")
