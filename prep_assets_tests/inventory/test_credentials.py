"""Tests of the credentials map, Secret and resolve_secret."""

import copy
import logging
import pickle
from pathlib import Path

import pytest

from prep_assets.inventory.credentials import (
    MAX_SECRET_FILE_BYTES,
    CredentialKind,
    CredentialPointer,
    Secret,
    parse_credentials_map,
    parse_location,
    resolve_secret,
)
from prep_assets.inventory.errors import CredentialError
from prep_assets.models import SourceLocation

PATH = "docs/reference/credentials-map.md"

MAP_TEXT = """\
# Credentials map

| Name | Kind | Location | Used by |
| --- | --- | --- | --- |
| homelab-root | ssh-key | ~/.ssh/id_ed25519_homelab | pve1 |
| pve-api | API token | env:PVE_API_TOKEN | |
| k3s | kubeconfig | file:/etc/prep/k3s.yaml | |
| key-pass | ssh_key_passphrase | `file:~/.config/prep/pass` | |
| db | Password | /run/secrets/db | |
"""


def test_parse_credentials_map() -> None:
    pointers, problems = parse_credentials_map(MAP_TEXT, PATH)
    assert problems == []
    assert pointers == {
        "homelab-root": CredentialPointer(
            "homelab-root",
            CredentialKind.SSH_KEY,
            "file",
            "~/.ssh/id_ed25519_homelab",
            SourceLocation(PATH, 5, 1),
        ),
        "pve-api": CredentialPointer(
            "pve-api", CredentialKind.API_TOKEN, "env", "PVE_API_TOKEN", SourceLocation(PATH, 6, 1)
        ),
        "k3s": CredentialPointer(
            "k3s",
            CredentialKind.KUBECONFIG,
            "file",
            "/etc/prep/k3s.yaml",
            SourceLocation(PATH, 7, 1),
        ),
        "key-pass": CredentialPointer(
            "key-pass",
            CredentialKind.SSH_KEY_PASSPHRASE,
            "file",
            "~/.config/prep/pass",
            SourceLocation(PATH, 8, 1),
        ),
        "db": CredentialPointer(
            "db", CredentialKind.PASSWORD, "file", "/run/secrets/db", SourceLocation(PATH, 9, 1)
        ),
    }
    assert pointers["pve-api"].location == "env:PVE_API_TOKEN"
    assert pointers["db"].location == "file:/run/secrets/db"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("env:PVE_API_TOKEN", ("env", "PVE_API_TOKEN")),
        ("env: _TOKEN2", ("env", "_TOKEN2")),
        ("file:/etc/prep/key", ("file", "/etc/prep/key")),
        ("file:~/key", ("file", "~/key")),
        ("/etc/prep/key", ("file", "/etc/prep/key")),
        ("~/.ssh/id_ed25519", ("file", "~/.ssh/id_ed25519")),
    ],
)
def test_parse_location(value: str, expected: tuple[str, str]) -> None:
    assert parse_location(value) == expected


HEADER = "| Name | Kind | Location |\n| --- | --- | --- |\n"

# (case id, row on line 3, caret under the offending cell, secret text that must not
#  appear in any problem, expected reason)
BAD_ROW_CASES = [
    (
        "password as location",
        "| db | password | hunter2 |",
        "                  ^",
        "hunter2",
        "invalid Location: expected env:VARIABLE, file:/absolute/path, /absolute/path or "
        "~/path; the value is not shown because it may be a secret",
    ),
    (
        "private key as location",
        "| key | ssh-key | -----BEGIN OPENSSH PRIVATE KEY-----b3BlbnNzaC1rZXk |",
        "                  ^",
        "b3BlbnNzaC1rZXk",
        "Location contains a PEM key, not a pointer: move the key to a file and write its "
        "path; the value is not shown because it may be a secret",
    ),
    (
        "token that looks like a relative path",
        "| api | api-token | tok/Zm9vYmFy |",
        "                    ^",
        "Zm9vYmFy",
        "invalid Location: expected env:VARIABLE, file:/absolute/path, /absolute/path or "
        "~/path; the value is not shown because it may be a secret",
    ),
    (
        "env with a value",
        "| api | api-token | env:TOKEN=s3cr3t |",
        "                    ^",
        "s3cr3t",
        "invalid environment variable name in Location: expected env:NAME with letters, "
        "digits and '_', not starting with a digit; the value is not shown because it may "
        "be a secret",
    ),
    (
        "file scheme with relative path",
        "| api | api-token | file:s3cr3t |",
        "                    ^",
        "s3cr3t",
        "invalid Location: expected env:VARIABLE, file:/absolute/path, /absolute/path or "
        "~/path; the value is not shown because it may be a secret",
    ),
    (
        "unknown kind",
        "| api | hunter2 | env:TOKEN |",
        "        ^",
        "hunter2",
        "unknown Kind: expected one of ssh-key, ssh-key-passphrase, password, api-token, "
        "kubeconfig; the value is not shown because it may be a secret",
    ),
    (
        "invalid name",
        "| hunter2 secret | password | env:TOKEN |",
        "  ^",
        "hunter2",
        "invalid credential name: expected up to 64 letters, digits, '.', '_' or '-' naming a "
        "row of the credentials map; the value is not shown because it may be a secret",
    ),
    (
        "missing location",
        "| api | api-token | |",
        "                   ^",
        "api-token-value-never-written",
        "missing Location: every credential needs a Location",
    ),
    (
        "missing kind",
        "| api | - | env:TOKEN |",
        "        ^",
        "api-token-value-never-written",
        "missing Kind: every credential needs a Kind",
    ),
]


@pytest.mark.parametrize(
    ("row", "caret", "secret", "reason"),
    [case[1:] for case in BAD_ROW_CASES],
    ids=[case[0] for case in BAD_ROW_CASES],
)
def test_bad_row_reported_without_value(row: str, caret: str, secret: str, reason: str) -> None:
    text = HEADER + row + "\n| ok | password | env:OK |\n"
    pointers, problems = parse_credentials_map(text, PATH)

    assert list(pointers) == ["ok"]
    (problem,) = problems
    assert str(problem.location) == f"{PATH}:3:{caret.index('^') + 1}"
    assert problem.reason == reason
    assert secret not in str(problem)
    assert secret not in repr(problem)
    assert secret not in repr(problem.to_dict())


def test_duplicate_name_reports_later_row() -> None:
    text = HEADER + "| api | api-token | env:A |\n| api | api-token | env:B |\n"
    pointers, problems = parse_credentials_map(text, PATH)
    assert pointers["api"].target == "A"
    (problem,) = problems
    assert str(problem) == f"{PATH}:4:3: duplicate credential name 'api': already defined on line 3"


def test_pem_block_anywhere_reported() -> None:
    text = (
        HEADER
        + "| ok | password | env:OK |\n\n"
        + "```\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n```\n"
    )
    pointers, problems = parse_credentials_map(text, PATH)
    assert list(pointers) == ["ok"]
    (problem,) = problems
    assert problem.location == SourceLocation(PATH, 6, 1)
    assert "b3BlbnNzaC1rZXktdjE" not in str(problem)
    assert problem.reason.startswith("the file contains a PEM block (-----BEGIN)")


def test_no_table_is_one_problem() -> None:
    pointers, problems = parse_credentials_map("# Credentials\n\nAsk Alice.\n", PATH)
    assert pointers == {}
    (problem,) = problems
    assert (
        problem.reason
        == "no credentials table found: expected a table with Name, Kind and Location columns"
    )


def test_fixture_map_rejects_pasted_password() -> None:
    fixture = Path(__file__).parent / "fixtures/infra-repo/docs/reference/credentials-map.md"
    text = fixture.read_text()
    pointers, problems = parse_credentials_map(text, PATH)
    assert sorted(pointers) == ["homelab-root", "k3s", "pve-api"]
    (problem,) = problems
    assert problem.name == "grafana-admin"
    assert "correct-horse" not in str(problem)


def test_secret_repr_and_str_masked() -> None:
    secret = Secret("hunter2")
    assert repr(secret) == "Secret(****)"
    assert str(secret) == "Secret(****)"
    assert f"{secret}" == "Secret(****)"
    assert "hunter2" not in repr([secret, {"password": secret}])
    assert secret.reveal() == "hunter2"


def test_secret_not_in_log_record(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("using %s", Secret("hunter2"))
    assert "hunter2" not in caplog.text
    assert "Secret(****)" in caplog.text


@pytest.mark.parametrize("operation", [pickle.dumps, copy.copy, copy.deepcopy])
def test_secret_cannot_be_pickled_or_copied(operation: object) -> None:
    with pytest.raises(TypeError, match="a Secret cannot be pickled or copied"):
        operation(Secret("hunter2"))  # type: ignore[operator]


def pointer(kind: CredentialKind, scheme: str, target: str) -> CredentialPointer:
    return CredentialPointer("test-credential", kind, scheme, target)


def test_resolve_env() -> None:
    secret = resolve_secret(
        pointer(CredentialKind.API_TOKEN, "env", "PVE_TOKEN"), {"PVE_TOKEN": "t0ken"}
    )
    assert secret.reveal() == "t0ken"


def test_resolve_env_reads_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    token = pointer(CredentialKind.API_TOKEN, "env", "PREP_ASSETS_TEST_TOKEN")
    monkeypatch.setenv("PREP_ASSETS_TEST_TOKEN", "first")
    assert resolve_secret(token).reveal() == "first"
    monkeypatch.setenv("PREP_ASSETS_TEST_TOKEN", "second")
    assert resolve_secret(token).reveal() == "second"


def test_resolve_env_missing() -> None:
    with pytest.raises(CredentialError) as raised:
        resolve_secret(pointer(CredentialKind.API_TOKEN, "env", "PVE_TOKEN"), {})
    assert (
        str(raised.value)
        == "credential 'test-credential': environment variable PVE_TOKEN is not set"
    )
    assert raised.value.pointer_name == "test-credential"


def test_resolve_env_empty() -> None:
    with pytest.raises(CredentialError, match="environment variable PVE_TOKEN is empty"):
        resolve_secret(pointer(CredentialKind.API_TOKEN, "env", "PVE_TOKEN"), {"PVE_TOKEN": ""})


def test_resolve_file_keeps_key_text(tmp_path: Path) -> None:
    key_text = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
    key_file = tmp_path / "id"
    key_file.write_text(key_text)
    key_file.chmod(0o600)
    secret = resolve_secret(pointer(CredentialKind.SSH_KEY, "file", str(key_file)), {})
    assert secret.reveal() == key_text


@pytest.mark.parametrize(
    "kind", [CredentialKind.PASSWORD, CredentialKind.API_TOKEN, CredentialKind.SSH_KEY_PASSPHRASE]
)
def test_resolve_file_strips_line_break(tmp_path: Path, kind: CredentialKind) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("hunter2\r\n")
    secret_file.chmod(0o600)
    assert resolve_secret(pointer(kind, "file", str(secret_file)), {}).reveal() == "hunter2"


def test_resolve_file_expands_home_from_environ(tmp_path: Path) -> None:
    (tmp_path / ".config").mkdir()
    secret_file = tmp_path / ".config/token"
    secret_file.write_text("t0ken\n")
    secret_file.chmod(0o600)
    token = pointer(CredentialKind.API_TOKEN, "file", "~/.config/token")
    assert resolve_secret(token, {"HOME": str(tmp_path)}).reveal() == "t0ken"


def test_resolve_file_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(CredentialError) as raised:
        resolve_secret(pointer(CredentialKind.PASSWORD, "file", str(missing)), {})
    assert str(raised.value) == f"credential 'test-credential': file {missing} does not exist"


def test_resolve_file_is_directory(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match="is not a regular file"):
        resolve_secret(pointer(CredentialKind.PASSWORD, "file", str(tmp_path)), {})


def test_resolve_file_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(CredentialError, match="is empty"):
        resolve_secret(pointer(CredentialKind.PASSWORD, "file", str(empty)), {})


def test_resolve_file_not_utf8_hides_content(tmp_path: Path) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xffhunter2")
    binary.chmod(0o600)
    with pytest.raises(CredentialError) as raised:
        resolve_secret(pointer(CredentialKind.PASSWORD, "file", str(binary)), {})
    assert "is not UTF-8 text" in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_resolve_file_too_large(tmp_path: Path) -> None:
    large = tmp_path / "large"
    large.write_bytes(b"a" * (MAX_SECRET_FILE_BYTES + 1))
    large.chmod(0o600)
    with pytest.raises(CredentialError, match="larger than 1 MiB"):
        resolve_secret(pointer(CredentialKind.KUBECONFIG, "file", str(large)), {})


def test_resolve_file_unreadable_path(tmp_path: Path) -> None:
    parent_file = tmp_path / "file"
    parent_file.write_text("x")
    below_file = parent_file / "secret"
    with pytest.raises(CredentialError) as raised:
        resolve_secret(pointer(CredentialKind.PASSWORD, "file", str(below_file)), {})
    assert (
        str(raised.value)
        == f"credential 'test-credential': cannot read file {below_file}: Not a directory"
    )


def test_resolve_file_warns_on_open_mode(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    open_file = tmp_path / "open"
    open_file.write_text("hunter2")
    open_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="prep_assets.inventory.credentials"):
        secret = resolve_secret(pointer(CredentialKind.PASSWORD, "file", str(open_file)), {})
    assert secret.reveal() == "hunter2"
    assert "mode 644" in caplog.text
    assert "hunter2" not in caplog.text
