"""Parse ``docs/reference/credentials-map.md`` and resolve its pointers to secrets.

The map contains pointers only, never secret values. Each row of a table with
Name, Kind and Location columns names one credential::

    | Name          | Kind        | Location                     |
    | ------------- | ----------- | ---------------------------- |
    | homelab-root  | ssh-key     | ~/.ssh/id_ed25519_homelab    |
    | pve-api       | api-token   | env:PVE_API_TOKEN            |
    | k3s           | kubeconfig  | file:/etc/prep/k3s.yaml      |

Kind is one of ssh-key, ssh-key-passphrase, password, api-token and kubeconfig.
Location is ``env:VARIABLE``, ``file:/absolute/path``, ``file:~/path``, or a bare
``/absolute/path`` or ``~/path``. A Location cell in any other form may be a
pasted secret, so the row is rejected and the problem message does not show the
cell. Problems in this file quote no Kind or Location cell and no invalid Name,
because any of them may be a misplaced secret. The line and column point at the
cell instead. The inventory names a credential by its Name.

``resolve_secret`` reads the environment variable or file when it is called, so
secrets are never part of the parsed documents.
"""

import enum
import logging
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from prep_assets.inventory.errors import CredentialError
from prep_assets.inventory.markdown import (
    Row,
    field_cell,
    field_value,
    find_tables,
    map_columns,
    read_field,
)
from prep_assets.models import DocumentProblem, SourceLocation

logger = logging.getLogger(__name__)

# A larger file is certainly not a key, token or kubeconfig, so it is not read.
MAX_SECRET_FILE_BYTES = 1024 * 1024

_POINTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VALUE_NOT_SHOWN = "the value is not shown because it may be a secret"

_CREDENTIAL_COLUMNS: dict[str, str] = {
    "name": "name",
    "pointer": "name",
    "credential": "name",
    "kind": "kind",
    "type": "kind",
    "location": "location",
    "source": "location",
    "path": "location",
}


class CredentialKind(enum.StrEnum):
    """Type of secret that a credential pointer refers to."""

    SSH_KEY = "ssh-key"
    SSH_KEY_PASSPHRASE = "ssh-key-passphrase"
    PASSWORD = "password"
    API_TOKEN = "api-token"
    KUBECONFIG = "kubeconfig"


# Kinds whose file content is one line: a trailing line break is not part of the secret.
_SINGLE_LINE_KINDS = frozenset(
    {CredentialKind.SSH_KEY_PASSPHRASE, CredentialKind.PASSWORD, CredentialKind.API_TOKEN}
)


@dataclass(frozen=True)
class CredentialPointer:
    """Reference to an environment variable or file that contains a secret, never the value."""

    name: str
    kind: CredentialKind
    # "env" or "file".
    scheme: str
    # The variable name, or the file path as written (``~`` is expanded when read).
    target: str
    source: SourceLocation | None = None

    @property
    def location(self) -> str:
        """The pointer in ``env:VARIABLE`` or ``file:PATH`` form."""
        return f"{self.scheme}:{self.target}"


class Secret:
    """A secret value that ``repr``, ``str`` and therefore logs show as ``Secret(****)``.

    Pickling or copying raises TypeError, so a secret cannot end up in stored
    results. Call ``reveal()`` at the place that passes the value to a library.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(****)"

    def __str__(self) -> str:
        return "Secret(****)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled or copied, so that it is never stored")


def validate_pointer_name(value: str) -> str:
    """Return a credential name, or raise ValueError without quoting the value."""
    if not _POINTER_NAME.match(value):
        raise ValueError(
            "invalid credential name: expected up to 64 letters, digits, '.', '_' or '-' "
            f"naming a row of the credentials map; {VALUE_NOT_SHOWN}"
        )
    return value


def parse_location(value: str) -> tuple[str, str]:
    """Parse a Location cell into scheme and target; raise ValueError without quoting the value."""
    text = value.strip()
    if "-----BEGIN" in text or "PRIVATE KEY" in text:
        raise ValueError(
            "Location contains a PEM key, not a pointer: move the key to a file and write "
            f"its path; {VALUE_NOT_SHOWN}"
        )

    if text.startswith("env:"):
        variable = text[len("env:") :].strip()
        if not _ENV_VARIABLE.match(variable):
            raise ValueError(
                "invalid environment variable name in Location: expected env:NAME with "
                f"letters, digits and '_', not starting with a digit; {VALUE_NOT_SHOWN}"
            )
        return "env", variable

    file_path = text[len("file:") :].strip() if text.startswith("file:") else text
    if file_path.startswith("/") or file_path.startswith("~/"):
        return "file", file_path
    raise ValueError(
        "invalid Location: expected env:VARIABLE, file:/absolute/path, /absolute/path "
        f"or ~/path; {VALUE_NOT_SHOWN}"
    )


def parse_kind(value: str) -> CredentialKind:
    """Parse a Kind cell such as ``ssh-key``; raise ValueError without quoting the value."""
    normalized = "-".join(value.replace("_", " ").replace("-", " ").lower().split())
    try:
        return CredentialKind(normalized)
    except ValueError:
        accepted = ", ".join(kind.value for kind in CredentialKind)
        raise ValueError(f"unknown Kind: expected one of {accepted}; {VALUE_NOT_SHOWN}") from None


def parse_credentials_map(
    text: str, path: str
) -> tuple[dict[str, CredentialPointer], list[DocumentProblem]]:
    """Parse the credentials map and return the pointers by name and the problems.

    Rows with a missing or invalid cell are left out and reported. A line that
    contains a PEM header (``-----BEGIN``) anywhere in the file, code blocks
    included, is reported too, because the docs repo must not contain keys.
    """
    pointers: dict[str, CredentialPointer] = {}
    problems: list[DocumentProblem] = []
    found_table = False

    for table in find_tables(text):
        fields, _ = map_columns(table.header, _CREDENTIAL_COLUMNS)
        if not {"name", "location"} <= fields.keys():
            continue
        found_table = True
        for row in table.rows:
            pointer = _read_pointer_row(row, fields, path, problems)
            if pointer is None:
                continue
            first = pointers.get(pointer.name)
            if first is not None and first.source is not None:
                name_cell = field_cell(row, fields, "name")
                assert name_cell is not None
                problems.append(
                    DocumentProblem(
                        name_cell.location(path),
                        f"duplicate credential name {pointer.name!r}: already defined on "
                        f"line {first.source.line}",
                        name=pointer.name,
                    )
                )
                continue
            pointers[pointer.name] = pointer

    # A PEM header in a rejected row is already reported by that row.
    lines_with_problems = {problem.location.line for problem in problems}
    for pem_problem in _find_pem_blocks(text, path):
        if pem_problem.location.line not in lines_with_problems:
            problems.append(pem_problem)
    problems.sort(key=lambda problem: (problem.location.line, problem.location.column))

    if not found_table:
        problems.append(
            DocumentProblem(
                SourceLocation(path, 1, 1),
                "no credentials table found: expected a table with Name, Kind and Location columns",
            )
        )
    logger.debug("Read %d credential pointers from %s", len(pointers), path)
    return pointers, problems


def _find_pem_blocks(text: str, path: str) -> list[DocumentProblem]:
    problems = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        column = line.find("-----BEGIN")
        if column != -1:
            problems.append(
                DocumentProblem(
                    SourceLocation(path, line_number, column + 1),
                    "the file contains a PEM block (-----BEGIN): remove the key from the "
                    "docs repo, rotate it, and point to it with a Location instead",
                )
            )
    return problems


def _read_pointer_row(
    row: Row, fields: dict[str, int], path: str, problems: list[DocumentProblem]
) -> CredentialPointer | None:
    row_problems: list[DocumentProblem] = []
    name = read_field(row, fields, "name", validate_pointer_name, path, row_problems)
    kind = read_field(row, fields, "kind", parse_kind, path, row_problems, name)
    location = read_field(row, fields, "location", parse_location, path, row_problems, name)

    for field_name, label in (("name", "Name"), ("kind", "Kind"), ("location", "Location")):
        if field_value(row, fields, field_name) is not None:
            continue
        cell = field_cell(row, fields, field_name)
        where = cell.location(path) if cell is not None else SourceLocation(path, row.line, 1)
        row_problems.append(
            DocumentProblem(where, f"missing {label}: every credential needs a {label}", name=name)
        )

    problems.extend(row_problems)
    if row_problems or name is None or kind is None or location is None:
        return None
    scheme, target = location
    return CredentialPointer(
        name=name,
        kind=kind,
        scheme=scheme,
        target=target,
        source=SourceLocation(path, row.line, 1),
    )


def resolve_secret(pointer: CredentialPointer, environ: Mapping[str, str] = os.environ) -> Secret:
    """Read the secret a pointer names, from the environment or a file, at call time.

    ``~`` in a file path expands to ``environ["HOME"]`` when it is set, otherwise to
    the current user's home directory. For passwords, passphrases and API tokens a
    trailing line break in the file is dropped.

    Raises:
        CredentialError: the variable is unset or empty, or the file is missing,
            unreadable, not a regular file, larger than 1 MiB, not UTF-8 or empty.
            The message names the pointer and the variable or path, never the value.
    """
    if pointer.scheme == "env":
        value = environ.get(pointer.target)
        if value is None:
            _fail(pointer, f"environment variable {pointer.target} is not set")
        if not value:
            _fail(pointer, f"environment variable {pointer.target} is empty")
        return Secret(value)

    if pointer.scheme != "file":
        _fail(pointer, f"unknown pointer scheme {pointer.scheme!r}: expected env or file")
    path = _expand_home(pointer.target, environ)
    data = _read_secret_file(pointer, path)
    try:
        value = data.decode("utf-8")
    except UnicodeDecodeError:
        _fail(pointer, f"file {path} is not UTF-8 text")
    if pointer.kind in _SINGLE_LINE_KINDS:
        value = value.rstrip("\r\n")
    if not value:
        _fail(pointer, f"file {path} is empty")
    return Secret(value)


def _fail(pointer: CredentialPointer, message: str) -> NoReturn:
    raise CredentialError(pointer.name, message)


def _expand_home(target: str, environ: Mapping[str, str]) -> Path:
    if target.startswith("~/"):
        home = environ.get("HOME") or str(Path.home())
        return Path(home) / target[2:]
    return Path(target)


def _read_secret_file(pointer: CredentialPointer, path: Path) -> bytes:
    try:
        status = path.stat()
    except FileNotFoundError:
        _fail(pointer, f"file {path} does not exist")
    except OSError as error:
        _fail(pointer, f"cannot read file {path}: {error.strerror}")
    if not stat.S_ISREG(status.st_mode):
        _fail(pointer, f"{path} is not a regular file")
    if status.st_size > MAX_SECRET_FILE_BYTES:
        _fail(pointer, f"file {path} is larger than 1 MiB, so it is not a credential file")
    if status.st_mode & 0o077:
        logger.warning(
            "Credential file %s of %r is accessible to group or others (mode %o); chmod 600 it",
            path,
            pointer.name,
            stat.S_IMODE(status.st_mode),
        )

    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as error:
        _fail(pointer, f"cannot read file {path}: {error.strerror}")
    if len(data) > MAX_SECRET_FILE_BYTES:
        _fail(pointer, f"file {path} is larger than 1 MiB, so it is not a credential file")
    return data
