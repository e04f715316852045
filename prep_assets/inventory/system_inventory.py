"""Parse ``docs/infrastructure/system-inventory.md`` into systems.

Every pipe table with a name column is an inventory table; other tables, such as
a legend, are ignored. Column headers are matched without regard to case,
spacing, backticks, ``_`` or ``-``, and several spellings are accepted (see
``INVENTORY_COLUMNS``). Any other column is stored in ``System.attributes`` under
its lower-case, hyphen-joined header, for example ``Read only`` -> ``read-only``.

Tables below a heading that contains "unmanaged" (at any level above the table)
hold unmanaged systems, which are never contacted: their access is ``none``
unless the row or the type's access pattern names ``tcp``. A Managed column
(yes/no) overrides the heading for its row. Unmanaged rows without a type get
the type ``unmanaged``.

Values from the row win over the access pattern of the system's type, which wins
over the ``default`` pattern. A managed system without any access method uses
``ssh``. A row with an invalid value is left out and reported as a
``DocumentProblem`` that points at the cell; the other rows are still used.
"""

import logging
import re
from collections.abc import Collection
from dataclasses import dataclass, field

from prep_assets.inventory.access_patterns import (
    ACCESS_COLUMNS,
    DEFAULT_PATTERN_TYPE,
    AccessPattern,
    parse_access_method,
    parse_port,
    parse_type,
    pattern_for,
    split_address,
    validate_jump,
    validate_user,
)
from prep_assets.inventory.credentials import VALUE_NOT_SHOWN, validate_pointer_name
from prep_assets.inventory.errors import InventoryFormatError
from prep_assets.inventory.markdown import (
    Cell,
    Row,
    Table,
    attribute_key,
    field_cell,
    field_value,
    find_tables,
    is_missing,
    map_columns,
    normalize_header,
    parse_yes_no,
    read_field,
)
from prep_assets.models import AccessMethod, DocumentProblem, SourceLocation, System

logger = logging.getLogger(__name__)

DEFAULT_TIER = "standard"
UNMANAGED_TYPE = "unmanaged"

# Normalised header (see markdown.normalize_header) to System field.
INVENTORY_COLUMNS: dict[str, str] = {
    **ACCESS_COLUMNS,
    "name": "name",
    "hostname": "name",
    "host name": "name",
    "host": "name",
    "system": "name",
    "tier": "tier",
    "criticality": "tier",
    "priority": "tier",
    "address": "address",
    "ip": "address",
    "ip address": "address",
    "fqdn": "address",
    "host address": "address",
    "username": "user",
    "user name": "user",
    "credentials": "credentials",
    "credential": "credentials",
    "credentials pointer": "credentials",
    "credential pointer": "credentials",
    "secret": "credentials",
    "managed": "managed",
}

# Unrecognised columns with these words may contain secret values, so they are not read.
_SECRET_HEADER = re.compile(r"\b(password|passwd|passphrase|token|api key|private key|secret)\b")
_FORBIDDEN_NAME_CHARACTERS = re.compile(r"[/\\\x00-\x1f\x7f]")


@dataclass
class InventoryParse:
    """Systems read from the inventory, and the rows or columns that were left out."""

    systems: list[System] = field(default_factory=list)
    problems: list[DocumentProblem] = field(default_factory=list)


@dataclass(frozen=True)
class _TableLayout:
    fields: dict[str, int]
    # Header cell text per column, as written, for messages.
    headers: tuple[str, ...]
    # (column index, attribute key) of the columns stored in System.attributes.
    attributes: tuple[tuple[int, str], ...]
    unmanaged: bool


def parse_system_inventory(
    text: str,
    path: str,
    patterns: dict[str, AccessPattern] | None = None,
    known_credentials: Collection[str] | None = None,
) -> InventoryParse:
    """Parse the inventory document and return its systems and problems.

    ``path`` is the file path reported in problems. ``patterns`` are the access
    patterns by type. When ``known_credentials`` is given, a Credentials cell must
    name one of them.

    Raises:
        InventoryFormatError: the text contains no table with a name column.
    """
    tables = [table for table in find_tables(text) if "name" in _layout_fields(table)]
    if not tables:
        raise InventoryFormatError(
            path,
            "no inventory table found: expected a Markdown pipe table with a name column "
            "(Name, Hostname, Host or System), for example a '| Name | Type | Address | "
            "Access |' line followed by a '| --- | --- | --- | --- |' line",
        )

    result = InventoryParse()
    first_line_by_name: dict[str, int] = {}
    for table in tables:
        layout = _read_layout(table, path, result.problems)
        for row in table.rows:
            system, problems = _read_system_row(
                row, layout, path, patterns or {}, known_credentials
            )
            duplicate = _check_duplicate(row, layout, path, first_line_by_name)
            if duplicate is not None:
                problems.append(duplicate)
            result.problems.extend(problems)
            if system is not None and not problems:
                result.systems.append(system)

    result.problems.sort(key=lambda problem: (problem.location.line, problem.location.column))
    logger.debug(
        "Read %d systems and %d problems from %s", len(result.systems), len(result.problems), path
    )
    return result


def _layout_fields(table: Table) -> dict[str, int]:
    return map_columns(table.header, INVENTORY_COLUMNS)[0]


def _read_layout(table: Table, path: str, problems: list[DocumentProblem]) -> _TableLayout:
    """Match the table's columns and report the columns that are not read because of secrets."""
    fields, others = map_columns(table.header, INVENTORY_COLUMNS)
    attributes: list[tuple[int, str]] = []
    for index in others:
        header_cell = table.header[index]
        if _SECRET_HEADER.search(normalize_header(header_cell.text)):
            problems.append(
                DocumentProblem(
                    header_cell.location(path),
                    f"column {header_cell.text!r} is ignored because it may contain secrets. "
                    "Keep secrets out of the docs repo and name a credentials-map entry in "
                    "the Credentials column instead.",
                )
            )
            continue
        attributes.append((index, attribute_key(header_cell.text)))
    unmanaged = any("unmanaged" in heading.text.lower() for heading in table.headings)
    return _TableLayout(
        fields=fields,
        headers=tuple(cell.text for cell in table.header),
        attributes=tuple(attributes),
        unmanaged=unmanaged,
    )


def _check_duplicate(
    row: Row, layout: _TableLayout, path: str, first_line_by_name: dict[str, int]
) -> DocumentProblem | None:
    """Record the row's name and return a problem if an earlier row has the same name.

    Every named row counts, including rows left out for other reasons, so two rows
    with one name are always reported.
    """
    name = field_value(row, layout.fields, "name")
    if name is None:
        return None
    key = name.casefold()
    first_line = first_line_by_name.setdefault(key, row.line)
    if first_line == row.line:
        return None
    name_cell = field_cell(row, layout.fields, "name")
    assert name_cell is not None
    return DocumentProblem(
        name_cell.location(path),
        f"duplicate name {name!r}: line {first_line} already uses this name "
        "(names are compared ignoring case)",
        name=name,
    )


def _read_system_row(
    row: Row,
    layout: _TableLayout,
    path: str,
    patterns: dict[str, AccessPattern],
    known_credentials: Collection[str] | None,
) -> tuple[System | None, list[DocumentProblem]]:
    """Read one row into a System; return None and the problems when a value is invalid."""
    fields = layout.fields
    problems: list[DocumentProblem] = []
    name_cell = field_cell(row, fields, "name")
    assert name_cell is not None

    def cell_or_name(*field_names: str) -> Cell:
        """Return the first of the fields' cells that the table has, else the name cell."""
        for field_name in field_names:
            cell = field_cell(row, fields, field_name)
            if cell is not None:
                return cell
        return name_cell

    def reject(cell: Cell, reason: str) -> None:
        problems.append(DocumentProblem(cell.location(path), reason, name=name))

    name = read_field(row, fields, "name", _validate_name, path, problems)
    if name is None and not problems:
        header = layout.headers[fields["name"]]
        reject(name_cell, f"missing name: every system needs a name in the {header!r} column")

    managed_cell_value = read_field(row, fields, "managed", _parse_managed, path, problems, name)
    managed = managed_cell_value if managed_cell_value is not None else not layout.unmanaged

    system_type = read_field(row, fields, "type", parse_type, path, problems, name)
    if system_type is None and field_value(row, fields, "type") is None:
        if managed:
            reject(
                cell_or_name("type"),
                "missing type: a managed system needs a type such as debian or proxmox-host, "
                "because its access pattern and tool list are chosen by type",
            )
        else:
            system_type = UNMANAGED_TYPE

    tier = (field_value(row, fields, "tier") or DEFAULT_TIER).lower()

    address_text = field_value(row, fields, "address")
    host_and_port = read_field(row, fields, "address", split_address, path, problems, name)
    address, address_port = host_and_port if host_and_port else (None, None)
    row_port = read_field(row, fields, "port", parse_port, path, problems, name)
    if row_port is not None and address_port is not None and row_port != address_port:
        reject(
            cell_or_name("port"),
            f"conflicting ports: Port is {row_port} but the address {address_text!r} contains "
            f"port {address_port}; write the port in one place",
        )

    row_method = read_field(row, fields, "access", parse_access_method, path, problems, name)
    row_user = read_field(row, fields, "user", validate_user, path, problems, name)
    row_jump = read_field(row, fields, "jump", validate_jump, path, problems, name)
    credentials = read_field(
        row, fields, "credentials", validate_pointer_name, path, problems, name
    )
    if (
        credentials is not None
        and known_credentials is not None
        and credentials not in known_credentials
    ):
        reject(
            cell_or_name("credentials"),
            "unknown credential name: no row of the credentials map has this Name; "
            f"{VALUE_NOT_SHOWN}",
        )

    if name is None or system_type is None or problems:
        return None, problems

    pattern = pattern_for(patterns, system_type)
    port = row_port if row_port is not None else address_port
    if port is None and pattern is not None:
        port = pattern.port
    user = row_user if row_user is not None or pattern is None else pattern.user
    jump = row_jump if row_jump is not None or pattern is None else pattern.jump
    method = _choose_method(row_method, pattern, managed)

    if method in (AccessMethod.SSH, AccessMethod.TCP) and address is None:
        reason = (
            f"missing address: {method.value} access needs a host name or IP address in the "
            "Address column"
        )
        if row_method is None and pattern is not None and pattern.method is not None:
            own_pattern = patterns.get(system_type)
            origin = system_type if own_pattern and own_pattern.method else DEFAULT_PATTERN_TYPE
            reason += f" (the method comes from the access pattern of type {origin!r})"
        reject(cell_or_name("address", "access"), reason)
    if method is AccessMethod.TCP and port is None:
        reject(
            cell_or_name("port", "address"),
            "missing port: tcp access needs a port, in the Port column or as host:port in the "
            "Address column",
        )
    if problems:
        return None, problems

    attributes = {
        key: row.cells[index].text
        for index, key in layout.attributes
        if not is_missing(row.cells[index].text)
    }
    for key, reason in _guest_attribute_problems(method, attributes, row_jump):
        reject(_attribute_cell(row, layout, key) or cell_or_name("access"), reason)
    if problems:
        return None, problems
    system = System(
        name=name,
        type=system_type,
        tier=tier,
        access=method,
        address=address,
        port=port,
        user=user,
        jump=jump,
        credentials=credentials,
        managed=managed,
        attributes=attributes,
        source=SourceLocation(path, row.line, 1),
    )
    return system, problems


def _guest_attribute_problems(
    method: AccessMethod, attributes: dict[str, str], jump: str | None
) -> list[tuple[str, str]]:
    """Check the VMID and Node values of pct, qm and qm-api rows; return (key, reason) pairs.

    Missing values are not problems of the document: the access check of the
    system reports them, so the row still appears in the status.
    """
    if method not in (AccessMethod.PCT, AccessMethod.QM, AccessMethod.QM_API):
        return []
    found: list[tuple[str, str]] = []
    vmid = attributes.get("vmid")
    if vmid is not None and (
        not vmid.isascii() or not vmid.isdigit() or not 100 <= int(vmid) <= 999_999_999
    ):
        found.append(
            ("vmid", f"invalid vmid {vmid!r}: expected a Proxmox guest ID from 100 to 999999999")
        )
    node = attributes.get("node")
    if node is not None and jump is not None and node != jump:
        found.append(
            (
                "node",
                f"conflicting nodes: Node is {node!r} but Jump is {jump!r}; a guest is reached "
                "through its node, so write the node in one place",
            )
        )
    return found


def _attribute_cell(row: Row, layout: _TableLayout, key: str) -> Cell | None:
    for index, attribute in layout.attributes:
        if attribute == key:
            return row.cells[index]
    return None


def _choose_method(
    row_method: AccessMethod | None, pattern: AccessPattern | None, managed: bool
) -> AccessMethod:
    """Pick the access method: the row's, then the pattern's, then ssh.

    Unmanaged systems get ``none`` unless the method is ``tcp``, taken from the row,
    or from the pattern when the row names no method.
    """
    pattern_method = pattern.method if pattern is not None else None
    chosen = row_method if row_method is not None else pattern_method
    if not managed:
        return AccessMethod.TCP if chosen is AccessMethod.TCP else AccessMethod.NONE
    return chosen if chosen is not None else AccessMethod.SSH


def _validate_name(value: str) -> str:
    if _FORBIDDEN_NAME_CHARACTERS.search(value):
        raise ValueError(
            f"invalid name {value!r}: a name must not contain '/', '\\' or control characters"
        )
    return value


def _parse_managed(value: str) -> bool:
    try:
        return parse_yes_no(value)
    except ValueError:
        raise ValueError(f"invalid Managed value {value!r}: expected yes or no") from None
