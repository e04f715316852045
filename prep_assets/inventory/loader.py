"""Read the four documents of the infra repo into one ``DocsSnapshot``.

Only the system inventory is required. Without a tools map every type gets the
built-in crisis tools, and without an access-patterns file there are no per-type
defaults. Without a credentials map no credential can be named, so an inventory
row that names one is reported as a problem.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

from prep_assets.inventory.access_patterns import (
    AccessPattern,
    parse_access_patterns,
    pattern_for,
)
from prep_assets.inventory.credentials import CredentialPointer, parse_credentials_map
from prep_assets.inventory.errors import InventoryFormatError
from prep_assets.inventory.system_inventory import parse_system_inventory
from prep_assets.inventory.tools_map import DEFAULT_SECTION, ToolsMap, parse_tools_map
from prep_assets.models import DocumentProblem, SourceLocation, System

logger = logging.getLogger(__name__)

# Paths relative to the infra repo root, as they appear in problem locations.
INVENTORY_PATH = "docs/infrastructure/system-inventory.md"
TOOLS_MAP_PATH = "docs/reference/tools-map.md"
ACCESS_PATTERNS_PATH = "docs/reference/access-patterns.md"
CREDENTIALS_MAP_PATH = "docs/reference/credentials-map.md"


@dataclass
class DocsSnapshot:
    """Everything read from the infra docs in one pass."""

    systems: list[System]
    tools: ToolsMap
    access_patterns: dict[str, AccessPattern] = field(default_factory=dict)
    credentials: dict[str, CredentialPointer] = field(default_factory=dict)
    # Problems of all four documents, in the order the documents were read.
    problems: list[DocumentProblem] = field(default_factory=list)
    # Relative paths of the documents that existed and were read.
    files_read: list[str] = field(default_factory=list)

    def credential_for(self, system: System) -> CredentialPointer | None:
        """Return the credential pointer that the system's Credentials cell names, if any."""
        if system.credentials is None:
            return None
        return self.credentials.get(system.credentials)

    def access_pattern_for(self, system: System) -> AccessPattern | None:
        """Return the access pattern of the system's type, merged with the default pattern."""
        return pattern_for(self.access_patterns, system.type)


def load_docs(repo_root: Path) -> DocsSnapshot:
    """Read and parse the infra docs under ``repo_root``.

    Raises:
        InventoryFormatError: the inventory file is missing, unreadable, not UTF-8,
            or contains no inventory table.
    """
    problems: list[DocumentProblem] = []
    files_read: list[str] = []

    inventory_text = _read_inventory(repo_root)
    files_read.append(INVENTORY_PATH)

    access_patterns: dict[str, AccessPattern] = {}
    patterns_text = _read_document(repo_root, ACCESS_PATTERNS_PATH, problems)
    if patterns_text is not None:
        files_read.append(ACCESS_PATTERNS_PATH)
        access_patterns, pattern_problems = parse_access_patterns(
            patterns_text, ACCESS_PATTERNS_PATH
        )
        problems.extend(pattern_problems)

    credentials: dict[str, CredentialPointer] = {}
    credentials_text = _read_document(repo_root, CREDENTIALS_MAP_PATH, problems)
    if credentials_text is not None:
        files_read.append(CREDENTIALS_MAP_PATH)
        credentials, credential_problems = parse_credentials_map(
            credentials_text, CREDENTIALS_MAP_PATH
        )
        problems.extend(credential_problems)

    inventory = parse_system_inventory(
        inventory_text,
        INVENTORY_PATH,
        patterns=access_patterns,
        known_credentials=set(credentials),
    )
    problems.extend(inventory.problems)

    tools = ToolsMap()
    tools_text = _read_document(repo_root, TOOLS_MAP_PATH, problems)
    if tools_text is not None:
        files_read.append(TOOLS_MAP_PATH)
        tools = parse_tools_map(tools_text, TOOLS_MAP_PATH)
        problems.extend(tools.problems)

    _log_unused_types(inventory.systems, access_patterns, tools)
    logger.info(
        "Loaded %d systems from %s with %d document problems",
        len(inventory.systems),
        repo_root,
        len(problems),
    )
    return DocsSnapshot(
        systems=inventory.systems,
        tools=tools,
        access_patterns=access_patterns,
        credentials=credentials,
        problems=problems,
        files_read=files_read,
    )


def _read_inventory(repo_root: Path) -> str:
    path = repo_root / INVENTORY_PATH
    if not path.is_file():
        raise InventoryFormatError(
            INVENTORY_PATH,
            f"file not found under {repo_root}: the system inventory is required and must "
            "contain a table with a Name column",
        )
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InventoryFormatError(
            INVENTORY_PATH, f"cannot read the file as UTF-8 text: {error}"
        ) from error


def _read_document(
    repo_root: Path, relative_path: str, problems: list[DocumentProblem]
) -> str | None:
    """Return a document's text, or None when it is missing or unreadable.

    An unreadable or non-UTF-8 file is also reported in ``problems``; a missing one
    is only logged, because every document but the inventory is optional.
    """
    path = repo_root / relative_path
    if not path.is_file():
        logger.info("%s not found under %s; using defaults", relative_path, repo_root)
        return None
    try:
        # utf-8-sig drops the byte order mark that some editors write.
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        logger.warning("Cannot read %s under %s: %s", relative_path, repo_root, error)
        problems.append(
            DocumentProblem(
                SourceLocation(relative_path, 1, 1),
                f"the file could not be read as UTF-8 text ({error}); it was left out",
            )
        )
        return None


def _log_unused_types(
    systems: list[System], access_patterns: dict[str, AccessPattern], tools: ToolsMap
) -> None:
    """Warn about patterns and tool lists for types that no system has, which hints at a typo."""
    used_types = {system.type for system in systems} | {DEFAULT_SECTION}
    unused_patterns = sorted(set(access_patterns) - used_types)
    if unused_patterns:
        logger.warning(
            "%s lists types that no system in %s has: %s",
            ACCESS_PATTERNS_PATH,
            INVENTORY_PATH,
            ", ".join(unused_patterns),
        )
    unused_tool_types = sorted(set(tools.sections) - used_types)
    if unused_tool_types:
        logger.warning(
            "%s lists types that no system in %s has: %s",
            TOOLS_MAP_PATH,
            INVENTORY_PATH,
            ", ".join(unused_tool_types),
        )
