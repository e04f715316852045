"""The PREP loop as software-defined assets.

Asset bodies only wire resources to the domain code in ``prep_assets.pipeline``
and attach metadata for the UI. Per-system assets share the ``systems`` dynamic
partitions and run every selected system in one run (single-run backfills).
"""

from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetOut,
    BackfillPolicy,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)

from prep_assets import pipeline
from prep_assets.defs.history import last_checked_by_system, latest_metadata_value
from prep_assets.defs.partitions import SYSTEMS_PARTITIONS
from prep_assets.defs.provisioning import (
    ProvisioningResource,
    ProvisionRunConfig,
    provisioning_settings,
)
from prep_assets.defs.resources import (
    AccessResource,
    InfraRepoResource,
    PrometheusResource,
    StateResource,
)
from prep_assets.provisioning.step import provision_partitions
from prep_assets.report.document import PER_SYSTEM_STEPS
from prep_assets.report.metadata import FilePath, MarkdownText
from prep_assets.tiers import add_tier_problems, load_tiers, order_by_tier, system_tiers

GROUP = "prep_loop"
PER_SYSTEM_GROUP = "prep_per_system"


def _now() -> datetime:
    return datetime.now(UTC)


def _access_settings(access: AccessResource) -> pipeline.AccessSettings:
    return pipeline.AccessSettings(
        known_hosts=access.known_hosts,
        timeout=access.timeout_seconds,
        max_workers=access.max_workers,
        max_per_node=access.max_per_node or None,
        ssh_config=_ssh_config_path(access.ssh_config),
        allow_agent=access.use_ssh_agent,
        kubernetes_debug_pods=access.kubernetes_debug_pods,
        debug_pod_image=access.debug_pod_image,
    )


def _ssh_config_path(setting: str) -> str | None:
    """Map the resource setting to the factory's: None reads ~/.ssh/config only if it exists."""
    if setting == "~/.ssh/config":
        return None
    return setting


def _metadata(values: dict[str, Any]) -> dict[str, Any]:
    """Turn the domain's metadata values into Dagster metadata (Markdown tables, paths)."""
    converted: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, MarkdownText):
            converted[key] = MetadataValue.md(str(value))
        elif isinstance(value, FilePath):
            converted[key] = MetadataValue.path(str(value))
        else:
            converted[key] = value
    return converted


@asset(group_name=GROUP, code_version="1")
def change_context(context: AssetExecutionContext, infra_repo: InfraRepoResource) -> Output[dict]:
    """Commits to the infra repo since the previous check, classified as decommission, new system, maintenance window or config change."""
    since = latest_metadata_value(context.instance, context.asset_key, "head")
    changes = pipeline.review_git(infra_repo.root, since, _now(), infra_repo.first_run_days)
    for warning in changes["warnings"]:
        context.log.warning(warning)
    return Output(changes, metadata=_metadata(pipeline.change_metadata(changes)))


@asset(group_name=GROUP, deps=[change_context], code_version="1")
def inventory(context: AssetExecutionContext, infra_repo: InfraRepoResource) -> Output[dict]:
    """Every documented system, managed and unmanaged, with its expected tools; bad rows are listed as problems."""
    value = pipeline.read_inventory(infra_repo.root)
    # Tiers: problems of the tiers document and unknown tiers join the inventory's problems,
    # and new keys are added grouped by tier, so that a tier's systems form one key range.
    tier_table = load_tiers(infra_repo.root)
    add_tier_problems(value, tier_table)
    names = [system["name"] for system in value["systems"]]
    new = [
        name
        for name in names
        if not context.instance.has_dynamic_partition(SYSTEMS_PARTITIONS.name, name)
    ]
    new = order_by_tier(new, system_tiers(value["systems"], tier_table), tier_table)
    if new:
        context.instance.add_dynamic_partitions(SYSTEMS_PARTITIONS.name, new)
        context.log.info(
            "added %d %s to the systems partitions: %s",
            len(new),
            "system" if len(new) == 1 else "systems",
            ", ".join(new),
        )
    for problem in value["problems"]:
        context.log.warning(
            "%s:%s:%s: %s", problem["file"], problem["line"], problem["column"], problem["reason"]
        )
    return Output(value, metadata=_metadata(pipeline.inventory_metadata(value, new)))


@multi_asset(
    outs={
        "access_status": AssetOut(
            group_name=PER_SYSTEM_GROUP,
            description="Whether each system responds over its access method, with latency and the failure kind.",
            code_version="1",
        ),
        "tool_status": AssetOut(
            group_name=PER_SYSTEM_GROUP,
            description="Each expected crisis tool on each system: installed (with path and version), missing or outdated.",
            code_version="1",
        ),
    },
    partitions_def=SYSTEMS_PARTITIONS,
    backfill_policy=BackfillPolicy.single_run(),
    ins={"inventory": AssetIn()},
)
def system_checks(
    context: AssetExecutionContext,
    inventory: dict,
    access: AccessResource,
    prometheus: PrometheusResource,
):
    """Check access and tools of the selected systems concurrently, one connection per system."""
    systems = context.partition_keys
    access_values, tool_values = pipeline.check_partitions(
        inventory, systems, _access_settings(access), take_samples=not prometheus.url
    )
    yield Output(
        access_values,
        output_name="access_status",
        metadata=_metadata(pipeline.access_metadata(access_values)),
    )
    yield Output(
        tool_values,
        output_name="tool_status",
        metadata=_metadata(pipeline.tool_metadata(tool_values)),
    )


@asset(
    group_name=PER_SYSTEM_GROUP,
    partitions_def=SYSTEMS_PARTITIONS,
    backfill_policy=BackfillPolicy.single_run(),
    code_version="2",
)
def provisioned_tools(
    context: AssetExecutionContext,
    config: ProvisionRunConfig,
    inventory: dict,
    tool_status: dict,
    access_status: dict,
    infra_repo: InfraRepoResource,
    access: AccessResource,
    provisioning: ProvisioningResource,
) -> Output[dict]:
    """The installation plan for each system's missing tools, and its outcome when provisioning is enabled (off by default)."""
    settings = provisioning_settings(provisioning, config, context.run.tags)
    opener = pipeline.transport_factory(inventory, _access_settings(access))
    values = provision_partitions(
        inventory,
        context.partition_keys,
        tool_status,
        access_status,
        root=infra_repo.root,
        settings=settings,
        open_transport=opener,
        run_id=context.run.run_id,
    )
    for name, value in sorted(values.items()):
        if value["state"] == "failed":
            context.log.warning("provisioning %s failed: %s", name, value["error"])
    metadata = pipeline.provisioning_metadata(values, enabled=settings.enabled)
    return Output(values, metadata=_metadata(metadata))


@asset(
    group_name=PER_SYSTEM_GROUP,
    partitions_def=SYSTEMS_PARTITIONS,
    backfill_policy=BackfillPolicy.single_run(),
    code_version="1",
)
def baselines(
    context: AssetExecutionContext,
    inventory: dict,
    access_status: dict,
    prometheus: PrometheusResource,
) -> Output[dict]:
    """CPU and memory utilisation per system (avg, p95, max) from Prometheus, or a labelled short sample."""
    values = pipeline.baseline_partitions(
        inventory,
        context.partition_keys,
        access_status,
        _now(),
        prometheus_url=prometheus.url,
        window_hours=prometheus.window_hours,
        step_seconds=prometheus.step_seconds,
        timeout=prometheus.timeout_seconds,
    )
    return Output(values, metadata=_metadata(pipeline.baseline_metadata(values)))


@asset(group_name=GROUP, code_version="1")
def drift_report(
    context: AssetExecutionContext,
    inventory: dict,
    change_context: dict,
    access_status: dict,
    tool_status: dict,
    state: StateResource,
) -> Output[dict]:
    """Differences from the previous check, each EXPECTED (with the commit or window that explains it) or UNEXPECTED."""
    previous = state.store(context.instance).read(context.asset_key.to_user_string())
    report = pipeline.drift(previous, inventory, change_context, access_status, tool_status, _now())
    return Output(report, metadata=_metadata(pipeline.drift_metadata(report)))


@asset(group_name=GROUP, code_version="1")
def rule_actions(
    inventory: dict, drift_report: dict, access_status: dict, tool_status: dict
) -> Output[list[dict[str, Any]]]:
    """What the RULES step decides: provision, collect baselines, alert or investigate, with the trigger."""
    actions = pipeline.rules(inventory, drift_report, access_status, tool_status)
    return Output(actions, metadata=_metadata(pipeline.actions_metadata(actions)))


@asset(group_name=GROUP, code_version="1")
def prep_status_doc(
    context: AssetExecutionContext,
    infra_repo: InfraRepoResource,
    inventory: dict,
    change_context: dict,
    drift_report: dict,
    rule_actions: list,
    access_status: dict,
    tool_status: dict,
    provisioned_tools: dict,
    baselines: dict,
) -> Output[dict]:
    """prep-status.md for people and prep-status.json for programs, written atomically into docs/infrastructure/."""
    systems = pipeline.known_systems(inventory, access_status)
    last_checked = last_checked_by_system(context.instance, PER_SYSTEM_STEPS, systems)
    written = pipeline.write_status(
        infra_repo.root,
        _now(),
        inventory=inventory,
        changes=change_context,
        drift=drift_report,
        actions=rule_actions,
        access=access_status,
        tools=tool_status,
        provisioning=provisioned_tools,
        baselines=baselines,
        last_checked=last_checked,
    )
    return Output(written, metadata=_metadata(pipeline.status_metadata(written)))


ALL_ASSETS = [
    change_context,
    inventory,
    system_checks,
    provisioned_tools,
    baselines,
    drift_report,
    rule_actions,
    prep_status_doc,
]
PER_SYSTEM_ASSET_KEYS = [AssetKey(step) for step in PER_SYSTEM_STEPS]
