"""The switches that turn provisioning on: a resource setting and a per-run config.

Provisioning is off unless the ``provisioning`` resource enables it (for every
run) or the run config of ``provisioned_tools`` enables it for one run, for
example from the launchpad of the UI::

    ops:
      provisioned_tools:
        config:
          enable: true
          systems: [pve1]
          enabled_by: alice
"""

import getpass
import os
from collections.abc import Mapping

from dagster import Config, ConfigurableResource
from pydantic import Field

from prep_assets.provisioning.apply import ProvisioningSettings

# Run tags that the rules sensor sets on the runs it requests.
TRIGGER_TAG_PREFIX = "prep/"
TRIGGER_TAGS = ("prep/actions", "prep/triggers", "prep/reasons", "prep/rule_actions_run")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "yes", "true", "on"}


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class ProvisioningResource(ConfigurableResource):
    """Whether provisioned_tools installs packages or only plans, where, and with what limits."""

    enabled: bool = Field(
        default_factory=lambda: _env_flag("PREP_PROVISIONING_ENABLED"),
        description="Install missing tools instead of only planning (default: PREP_PROVISIONING_ENABLED, else off).",
    )
    systems: list[str] = Field(
        default_factory=list,
        description="Only these systems may be provisioned; together with tiers, empty means all.",
    )
    tiers: list[str] = Field(
        default_factory=list,
        description="Only systems of these tiers may be provisioned; together with systems, empty means all.",
    )
    enabled_by: str = Field(
        default_factory=lambda: os.environ.get("PREP_PROVISIONING_ENABLED_BY", ""),
        description="Who enabled provisioning, written to the audit log (default: the OS user running the code).",
    )
    command_timeout_seconds: float = Field(
        default=900.0, description="Seconds allowed for each refresh or install command."
    )
    max_workers: int = Field(default=4, description="Systems provisioned at the same time.")
    output_limit_chars: int = Field(
        default=4000, description="Characters of each command's output kept, from its end."
    )


class ProvisionRunConfig(Config):
    """Run config of provisioned_tools: enable or disable provisioning for this run only."""

    enable: bool | None = Field(
        default=None,
        description="true or false overrides the provisioning resource for this run; null keeps it.",
    )
    systems: list[str] | None = Field(
        default=None, description="Replaces the resource's system limit for this run."
    )
    tiers: list[str] | None = Field(
        default=None, description="Replaces the resource's tier limit for this run."
    )
    enabled_by: str = Field(
        default="", description="Who enabled provisioning for this run, for the audit log."
    )


def provisioning_settings(
    resource: ProvisioningResource,
    run_config: ProvisionRunConfig,
    tags: Mapping[str, str],
) -> ProvisioningSettings:
    """Combine the resource and the run config into the settings of one run."""
    via_run = run_config.enable is not None
    enabled = run_config.enable if via_run else resource.enabled
    if via_run:
        enabled_by = run_config.enabled_by or _operator()
    else:
        enabled_by = resource.enabled_by or _operator()
    enabled_via = "run config" if via_run else "resource"
    systems = run_config.systems if run_config.systems is not None else resource.systems
    tiers = run_config.tiers if run_config.tiers is not None else resource.tiers
    return ProvisioningSettings(
        enabled=bool(enabled),
        systems=frozenset(systems),
        tiers=frozenset(tiers),
        command_timeout=resource.command_timeout_seconds,
        max_workers=resource.max_workers,
        output_limit=resource.output_limit_chars,
        enabled_by=enabled_by if enabled else "",
        enabled_via=enabled_via if enabled else "",
        trigger=rule_trigger(tags),
    )


def rule_trigger(tags: Mapping[str, str]) -> dict[str, str]:
    """Return the rules sensor's tags of a run without their prefix; empty for other runs."""
    return {
        key.removeprefix(TRIGGER_TAG_PREFIX): value
        for key, value in tags.items()
        if key in TRIGGER_TAGS
    }
