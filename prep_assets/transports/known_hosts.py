"""Read an OpenSSH known_hosts file once per version and look up host keys in it.

paramiko's ``HostKeys.load`` checks every new line against all lines read
before it, so loading a file of n lines costs O(n^2) key comparisons, and
``SSHClient.load_system_host_keys`` repeats that for every connection. With
200 systems in one known_hosts file that was most of the client CPU of a check
pass. This module parses a file once per (inode, size, mtime), keeps plain
host names in a dictionary, and is shared by all connections of the process.

Matching follows the "SSH_KNOWN_HOSTS FILE FORMAT" section of sshd(8) in
OpenSSH 9.2. Host names are compared case-insensitively, and a name of the
form ``|1|salt|hash`` is a hashed name. ``*`` and ``?`` are wildcards, and a
name starting with ``!`` excludes the line for the hosts it matches. A key
marked ``@revoked`` is rejected for every host. Lines marked
``@cert-authority`` are skipped because host certificates are not supported,
so such a host is reported as having an unknown key.
"""

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import threading
from dataclasses import dataclass, field

import paramiko

logger = logging.getLogger(__name__)

HASHED_NAME_PREFIX = "|1|"
REVOKED_MARKER = "@revoked"
CERT_AUTHORITY_MARKER = "@cert-authority"


def _compile_pattern(pattern: str) -> re.Pattern[str]:
    # OpenSSH patterns have only the wildcards "*" and "?", so "[" is literal, as in "[host]:2222".
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts))


@dataclass(frozen=True)
class _PatternLine:
    """A line whose host names contain wildcards or negations."""

    patterns: tuple[re.Pattern[str], ...]
    negated: tuple[re.Pattern[str], ...]
    key: paramiko.PKey

    @classmethod
    def from_names(cls, names: list[str], key: paramiko.PKey) -> "_PatternLine":
        patterns = [_compile_pattern(name) for name in names if not name.startswith("!")]
        negated = [_compile_pattern(name[1:]) for name in names if name.startswith("!")]
        return cls(tuple(patterns), tuple(negated), key)

    def matches(self, name: str) -> bool:
        if any(pattern.fullmatch(name) for pattern in self.negated):
            return False
        return any(pattern.fullmatch(name) for pattern in self.patterns)


@dataclass
class KnownHosts:
    """The host keys of one known_hosts file, indexed for lookups by host name."""

    path: str
    by_name: dict[str, list[paramiko.PKey]] = field(default_factory=dict)
    # (salt, hash, key) of each hashed name.
    hashed: list[tuple[bytes, bytes, paramiko.PKey]] = field(default_factory=list)
    patterned: list[_PatternLine] = field(default_factory=list)
    # Public key blobs of the keys marked @revoked.
    revoked: set[bytes] = field(default_factory=set)
    # Line numbers of lines that could not be read, for the debug log.
    skipped_lines: list[int] = field(default_factory=list)

    def keys_for(self, name: str) -> list[paramiko.PKey]:
        """Return the keys that are not revoked and whose line matches ``name``.

        ``name`` is a host as known_hosts writes it: ``host`` for port 22,
        ``[host]:port`` otherwise.
        """
        name = name.lower()
        keys = list(self.by_name.get(name, ()))
        encoded_name = name.encode()
        for salt, digest, key in self.hashed:
            candidate = hmac.new(salt, encoded_name, hashlib.sha1).digest()
            if hmac.compare_digest(candidate, digest):
                keys.append(key)
        keys.extend(line.key for line in self.patterned if line.matches(name))
        return [key for key in keys if not self.is_revoked(key)]

    def is_revoked(self, key: paramiko.PKey) -> bool:
        """Return whether ``key`` is marked @revoked in the file."""
        return key.asbytes() in self.revoked

    def add_line(self, line: str, lineno: int) -> None:
        """Parse one line of the file and index it, or record it as skipped if it is no host key."""
        fields = line.split()
        marker = None
        if fields and fields[0].startswith("@"):
            marker, fields = fields[0], fields[1:]
        if len(fields) < 3 or marker not in (None, REVOKED_MARKER, CERT_AUTHORITY_MARKER):
            self.skipped_lines.append(lineno)
            return
        if marker == CERT_AUTHORITY_MARKER:
            return

        names, key_type, key_text = fields[0], fields[1], fields[2]
        key = _parse_key(key_type, key_text)
        if key is None:
            self.skipped_lines.append(lineno)
            return
        if marker == REVOKED_MARKER:
            self.revoked.add(key.asbytes())
            return

        plain_names = []
        for name in names.split(","):
            if name.startswith(HASHED_NAME_PREFIX):
                hashed = _parse_hashed_name(name)
                if hashed is None:
                    self.skipped_lines.append(lineno)
                else:
                    self.hashed.append((*hashed, key))
            elif name:
                plain_names.append(name.lower())
        # sshd(8) allows no wildcard or negation on a line with a hashed name.
        if any(name.startswith("!") or "*" in name or "?" in name for name in plain_names):
            self.patterned.append(_PatternLine.from_names(plain_names, key))
        else:
            for name in plain_names:
                self.by_name.setdefault(name, []).append(key)


def _parse_key(key_type: str, key_text: str) -> paramiko.PKey | None:
    try:
        blob = base64.b64decode(key_text, validate=True)
        return paramiko.PKey.from_type_string(key_type, blob)
    except (binascii.Error, paramiko.SSHException, ValueError):
        # paramiko.UnknownKeyType is an SSHException.
        return None


def _parse_hashed_name(name: str) -> tuple[bytes, bytes] | None:
    # The name is "|1|<base64 salt>|<base64 HMAC-SHA1 of the host name>".
    parts = name[len(HASHED_NAME_PREFIX) :].split("|")
    if len(parts) != 2:
        return None
    try:
        return base64.b64decode(parts[0], validate=True), base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        return None


def parse_known_hosts(path: str) -> KnownHosts:
    """Read and index the known_hosts file at ``path``.

    Raises OSError (FileNotFoundError when the file does not exist) if the file
    cannot be read. Lines that are not host keys are skipped, as OpenSSH does.
    """
    known_hosts = KnownHosts(path)
    with open(path, encoding="utf-8", errors="replace") as file:
        for lineno, raw_line in enumerate(file, 1):
            line = raw_line.strip()
            if line and not line.startswith("#"):
                known_hosts.add_line(line, lineno)
    if known_hosts.skipped_lines:
        logger.debug(
            "known_hosts file %s: skipped %d lines that are not host keys (first: line %d)",
            path,
            len(known_hosts.skipped_lines),
            known_hosts.skipped_lines[0],
        )
    return known_hosts


_cache_lock = threading.Lock()
_cache: dict[str, tuple[tuple[int, int, int, int], KnownHosts]] = {}


def load_known_hosts(path: str) -> KnownHosts:
    """Return the parsed known_hosts file at ``path``, reading it again only after it changed.

    The file is identified by device, inode, size and modification time, so
    an edit or a replacement between two connections is seen by the second.
    Raises OSError as ``parse_known_hosts`` does.
    """
    status = os.stat(path)
    version = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
    with _cache_lock:
        cached = _cache.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
    known_hosts = parse_known_hosts(path)
    with _cache_lock:
        _cache[path] = (version, known_hosts)
    return known_hosts
