"""Live discovery: query the configured Proxmox, Kubernetes and DNS sources and merge the results.

``discover_inventory`` is the entry point of the inventory step. Without a
``docs/reference/discovery.md`` it returns the documented systems unchanged. The
sources are queried concurrently, so one slow or unreachable cluster delays the
others by at most its own timeout, and its failure is reported without stopping
them.
"""

import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prep_assets.inventory.discovery.config import (
    DiscoveryConfig,
    KubernetesSource,
    ProxmoxSource,
    load_discovery_config,
)
from prep_assets.inventory.discovery.dns import check_dns
from prep_assets.inventory.discovery.kubernetes import discover_kubernetes
from prep_assets.inventory.discovery.proxmox import discover_proxmox
from prep_assets.inventory.discovery.records import ErrorKind, SourceResult, SourceState
from prep_assets.inventory.loader import DocsSnapshot
from prep_assets.inventory.merge import (
    DiscoveryState,
    MergeResult,
    SourceContext,
    merge_inventory,
)
from prep_assets.models import DocumentProblem, System

logger = logging.getLogger(__name__)

# Sources queried at the same time.
MAX_PARALLEL_SOURCES = 8


@dataclass
class DiscoveryOutcome:
    """The merged systems, the problems of discovery.md, and the report for the inventory value."""

    systems: list[System]
    problems: list[DocumentProblem] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def discover_inventory(
    repo_root: Path, docs: DocsSnapshot, environ: Mapping[str, str] = os.environ
) -> DiscoveryOutcome:
    """Query every enabled source of the infra repo's discovery configuration and merge.

    ``environ`` is where ``env:`` credential pointers are read.
    """
    config = load_discovery_config(repo_root, docs.credentials)
    results = _query_sources(config, environ)
    merged = merge_inventory(
        docs.systems, results, _contexts(config, results), docs.access_patterns
    )

    dns_findings: list[dict[str, Any]] = []
    if config.dns is not None:
        if config.dns.enabled:
            dns_result, findings = check_dns(config.dns, merged.systems)
            dns_findings = [finding.to_dict() for finding in findings]
        else:
            dns_result = SourceResult(
                config.dns.key, "dns", "dns", config.dns.endpoint, state=SourceState.DISABLED
            )
        results.append(dns_result)

    report = _report(config, results, merged, dns_findings)
    return DiscoveryOutcome(systems=merged.systems, problems=config.problems, report=report)


def _query_sources(config: DiscoveryConfig, environ: Mapping[str, str]) -> list[SourceResult]:
    sources: list[ProxmoxSource | KubernetesSource] = [*config.proxmox, *config.kubernetes]
    enabled = [source for source in sources if source.enabled]
    results: dict[str, SourceResult] = {}
    if enabled:
        workers = min(MAX_PARALLEL_SOURCES, len(enabled))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prep-discover") as pool:
            futures = {source.key: pool.submit(_query_one, source, environ) for source in enabled}
            results = {key: future.result() for key, future in futures.items()}

    ordered: list[SourceResult] = []
    for source in sources:
        if source.enabled:
            ordered.append(results[source.key])
        else:
            kind = "proxmox" if isinstance(source, ProxmoxSource) else "kubernetes"
            ordered.append(
                SourceResult(
                    source.key, kind, source.name, source.endpoint, state=SourceState.DISABLED
                )
            )
    return ordered


def _query_one(
    source: ProxmoxSource | KubernetesSource, environ: Mapping[str, str]
) -> SourceResult:
    kind = "proxmox" if isinstance(source, ProxmoxSource) else "kubernetes"
    try:
        if isinstance(source, ProxmoxSource):
            return discover_proxmox(source, environ)
        return discover_kubernetes(source, environ)
    except Exception as error:
        # A malformed response marks only its own source down, so the other sources still count.
        logger.error("discovery from %s %s failed unexpectedly", kind, source.name, exc_info=True)
        result = SourceResult(source.key, kind, source.name, source.endpoint)
        result.fail(ErrorKind.ERROR, f"unexpected {type(error).__name__}; see the step log")
        return result


def _contexts(config: DiscoveryConfig, results: list[SourceResult]) -> dict[str, SourceContext]:
    """Describe each source for the merge: its state, and what its guests need for qm-api."""
    states = {result.key: result.state for result in results}
    contexts: dict[str, SourceContext] = {}
    for proxmox in config.proxmox:
        attributes = {"proxmox-cluster": proxmox.name, "proxmox-endpoint": proxmox.endpoint}
        if proxmox.token_id:
            attributes["proxmox-token-id"] = proxmox.token_id
        # The attribute names that the qm-api transport reads from a node's system.
        node_attributes = {
            "api-port": str(proxmox.port),
            "api-tls-verify": "no" if proxmox.verify is False else "yes",
        }
        if isinstance(proxmox.verify, str):
            node_attributes["api-ca"] = proxmox.verify
        contexts[proxmox.key] = SourceContext(
            key=proxmox.key,
            kind="proxmox",
            name=proxmox.name,
            state=states.get(proxmox.key, SourceState.DISABLED),
            credentials=proxmox.credential.name,
            attributes=attributes,
            node_attributes=node_attributes,
        )
    for kubernetes in config.kubernetes:
        contexts[kubernetes.key] = SourceContext(
            key=kubernetes.key,
            kind="kubernetes",
            name=kubernetes.name,
            state=states.get(kubernetes.key, SourceState.DISABLED),
        )
    return contexts


def _report(
    config: DiscoveryConfig,
    results: list[SourceResult],
    merged: MergeResult,
    dns_findings: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "configured": config.configured,
        "config_path": config.path,
        "sources": [result.summary() for result in results],
        "systems": {name: entry.to_dict() for name, entry in sorted(merged.discovery.items())},
        "undocumented": merged.names_in_state(DiscoveryState.UNDOCUMENTED),
        "not_found": merged.names_in_state(DiscoveryState.NOT_FOUND),
        "unverified": merged.names_in_state(DiscoveryState.UNVERIFIED),
        "dns_findings": dns_findings,
    }


def status_block(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Return the ``discovery`` block of prep-status.json: sources, findings and mismatches.

    Per-system records stay in the inventory value; the block lists names only. Returns
    None for an inventory value stored before discovery existed.
    """
    if not report:
        return None
    mismatches = [
        {"system": name, **mismatch}
        for name, entry in sorted((report.get("systems") or {}).items())
        for mismatch in entry.get("mismatches", [])
    ]
    return {
        "configured": bool(report.get("configured")),
        "config_path": report.get("config_path"),
        "sources": [dict(source) for source in report.get("sources", [])],
        "undocumented": list(report.get("undocumented", [])),
        "not_found": list(report.get("not_found", [])),
        "unverified": list(report.get("unverified", [])),
        "mismatches": mismatches,
        "dns_findings": [dict(finding) for finding in report.get("dns_findings", [])],
    }
