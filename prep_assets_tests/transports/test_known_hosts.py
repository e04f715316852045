"""known_hosts parsing and lookups, with keys and hashed names made by OpenSSH's ssh-keygen."""

import base64
import os
import subprocess
from pathlib import Path

import paramiko
import pytest

from prep_assets.transports.known_hosts import load_known_hosts, parse_known_hosts


def make_public_key(directory: Path, name: str) -> str:
    """Generate an ed25519 key pair with ssh-keygen and return ``type base64`` of its public key."""
    path = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)],
        check=True,
    )
    key_type, key_base64 = (directory / f"{name}.pub").read_text().split()[:2]
    return f"{key_type} {key_base64}"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("host-keys")
    return {name: make_public_key(directory, name) for name in ("web", "db", "other")}


def key_text(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def write_known_hosts(path: Path, *lines: str) -> str:
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


def test_plain_names_case_insensitive(tmp_path, keys):
    path = write_known_hosts(
        tmp_path / "known_hosts",
        "# comment line",
        f"Web.Test,[127.0.0.5]:2222 {keys['web']}",
        f"db.test {keys['db']}",
    )

    known_hosts = parse_known_hosts(path)

    assert [key_text(key) for key in known_hosts.keys_for("web.test")] == [keys["web"]]
    assert [key_text(key) for key in known_hosts.keys_for("[127.0.0.5]:2222")] == [keys["web"]]
    assert [key_text(key) for key in known_hosts.keys_for("DB.test")] == [keys["db"]]
    assert known_hosts.keys_for("127.0.0.5") == []
    assert known_hosts.skipped_lines == []


def test_names_hashed_by_ssh_keygen(tmp_path, keys):
    path = write_known_hosts(
        tmp_path / "known_hosts",
        f"[127.0.0.7]:2222 {keys['web']}",
        f"db.test {keys['db']}",
    )
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", path], check=True, capture_output=True)
    hashed_text = Path(path).read_text()
    assert "127.0.0.7" not in hashed_text
    assert "db.test" not in hashed_text

    known_hosts = parse_known_hosts(path)

    assert [key_text(key) for key in known_hosts.keys_for("[127.0.0.7]:2222")] == [keys["web"]]
    assert [key_text(key) for key in known_hosts.keys_for("db.test")] == [keys["db"]]
    assert known_hosts.keys_for("127.0.0.7") == []
    assert known_hosts.keys_for("web.test") == []


def test_wildcards_keep_brackets_literal(tmp_path, keys):
    path = write_known_hosts(
        tmp_path / "known_hosts",
        f"[127.0.0.?]:2222 {keys['web']}",
        f"*.test {keys['db']}",
    )

    known_hosts = parse_known_hosts(path)

    assert [key_text(key) for key in known_hosts.keys_for("[127.0.0.5]:2222")] == [keys["web"]]
    # As a glob character class, "[127.0.0.?]" would match the single character "1".
    assert known_hosts.keys_for("1:2222") == []
    assert known_hosts.keys_for("[127.0.0.15]:2222") == []
    assert known_hosts.keys_for("127.0.0.5") == []
    assert [key_text(key) for key in known_hosts.keys_for("db.test")] == [keys["db"]]
    assert known_hosts.keys_for("test") == []


def test_negation_excludes_host(tmp_path, keys):
    path = write_known_hosts(
        tmp_path / "known_hosts",
        f"*.test,!db.test,gateway.lan {keys['web']}",
    )

    known_hosts = parse_known_hosts(path)

    assert [key_text(key) for key in known_hosts.keys_for("web.test")] == [keys["web"]]
    assert [key_text(key) for key in known_hosts.keys_for("gateway.lan")] == [keys["web"]]
    assert known_hosts.keys_for("db.test") == []


def test_revoked_key_never_matches(tmp_path, keys):
    path = write_known_hosts(
        tmp_path / "known_hosts",
        f"web.test {keys['web']}",
        f"web.test {keys['other']}",
        f"@revoked * {keys['web']}",
    )

    known_hosts = parse_known_hosts(path)

    assert [key_text(key) for key in known_hosts.keys_for("web.test")] == [keys["other"]]
    key_type, key_base64 = keys["web"].split()
    revoked_key = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_base64))
    assert known_hosts.is_revoked(revoked_key)


def test_unreadable_lines_are_skipped(tmp_path, keys):
    path = write_known_hosts(
        tmp_path / "known_hosts",
        "web.test ssh-ed25519",
        f"@cert-authority *.test {keys['other']}",
        "db.test ssh-ed25519 not-base64!",
        f"@unknown-marker db.test {keys['other']}",
        f"db.test {keys['db']}",
    )

    known_hosts = parse_known_hosts(path)

    assert [key_text(key) for key in known_hosts.keys_for("db.test")] == [keys["db"]]
    assert known_hosts.keys_for("web.test") == []
    assert known_hosts.skipped_lines == [1, 3, 4]


def test_cache_reads_changed_file_again(tmp_path, keys):
    path = write_known_hosts(tmp_path / "known_hosts", f"web.test {keys['web']}")

    first = load_known_hosts(path)
    second = load_known_hosts(path)
    write_known_hosts(Path(path), f"web.test {keys['other']}")
    # The same size and a coarse clock could hide the edit, so move the mtime on.
    status = os.stat(path)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000))
    third = load_known_hosts(path)

    assert second is first
    assert third is not first
    assert [key_text(key) for key in third.keys_for("web.test")] == [keys["other"]]


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_known_hosts(str(tmp_path / "absent"))
