"""Real OpenSSH test hosts on loopback addresses, for transport and end-to-end tests.

Every host runs its own ``/usr/sbin/sshd -D -e -f CONFIG`` on its own 127.0.0.x
address and a free port, with its own ed25519 host key. One process per host
also avoids sshd's limit of 16 listen addresses per process. All hosts of a pool
share one client key and one known_hosts file. sshd logs to a file at
``LogLevel VERBOSE``, which records one "Connection from" line per accepted TCP
connection, so tests can count connections.

How sessions avoid shell startup files: sshd runs every command, a ForceCommand
included, as ``<login shell> -c <command>``. Debian's bash (checked with bash
5.2.15 and OpenSSH 9.2 on Debian 12) sources ``~/.bashrc`` when sshd starts it
this way, although the shell is not interactive. root's login shell is bash, so
a ForceCommand wrapper for root would still run root's ``~/.bashrc`` first. The
hosts therefore log in as the dedicated user ``TEST_USER``, whose login shell
is ``/bin/sh`` (dash on Debian). dash started with ``-c`` reads no startup file.
``SetEnv PATH=<host bin dir>`` in sshd_config replaces sshd's default PATH, so
commands of a session find only the symlinks in the host's bin dir. Without a ForceCommand,
the SFTP subsystem keeps working. The user is created on first use with
``useradd`` and is left in place afterwards. It is a system user without a
password (``*``) and with home ``/``. A non-root user also keeps test commands
from changing the machine.

sshd reads ``authorized_keys`` as the logged-in user, so authorized_keys files
and bin dirs live in a world-readable directory outside pytest's private temp
directory. Keys, configs, known_hosts and logs stay in pytest's temp directory.
"""

import dataclasses
import enum
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from prep_assets.transports.ssh import SshTarget

logger = logging.getLogger(__name__)

SSHD_PATH = Path("/usr/sbin/sshd")
SSH_KEYGEN_PATH = Path("/usr/bin/ssh-keygen")
USERADD_PATH = Path("/usr/sbin/useradd")
PRIVILEGE_SEPARATION_DIR = Path("/run/sshd")
SETUP_HINT = "run `make test`, which installs openssh-server and sysstat"

TEST_USER = "prep-assets-test"
TEST_USER_SHELL = "/bin/sh"

# Directories searched for the programs that are linked into a host's bin dir.
SYSTEM_BIN_DIRS = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
REQUIRED_TOOLS = ("sh", "cat", "uptime", "vmstat", "ps", "sleep", "head")
# Linked when the machine has them, so checks can run their usual commands.
OPTIONAL_TOOLS = (
    "awk",
    "cut",
    "date",
    "df",
    "dmesg",
    "dpkg-query",
    "echo",
    "env",
    "false",
    "free",
    "grep",
    "hostname",
    "id",
    "ip",
    "ls",
    "lsblk",
    "mkdir",
    "nproc",
    "printf",
    "rm",
    "sed",
    "sort",
    "ss",
    "tail",
    "top",
    "touch",
    "tr",
    "true",
    "uname",
    "wc",
)
SYSSTAT_TOOLS = ("iostat", "mpstat", "pidstat", "sar")

STARTUP_TIMEOUT_SECONDS = 10.0
STOP_GRACE_SECONDS = 5.0
BIND_ATTEMPTS = 3


class HostKind(enum.StrEnum):
    """The kinds of test host, each leading to one outcome of the access or tool check."""

    WITH_SYSSTAT = "with_sysstat"
    WITHOUT_SYSSTAT = "without_sysstat"
    # An address and port where nothing listens.
    CLOSED_PORT = "closed_port"
    # sshd whose authorized_keys does not contain the client key.
    REJECTS_KEY = "rejects_key"
    # sshd whose host key differs from the one in known_hosts.
    WRONG_HOST_KEY = "wrong_host_key"
    # A TCP listener that accepts connections and never sends a byte.
    SILENT = "silent"


# The kinds that run a real sshd.
SSHD_KINDS = frozenset(
    {HostKind.WITH_SYSSTAT, HostKind.WITHOUT_SYSSTAT, HostKind.REJECTS_KEY, HostKind.WRONG_HOST_KEY}
)


@dataclass(frozen=True)
class KeyPair:
    """An ed25519 key pair made with ssh-keygen: a client key or an sshd host key."""

    private_key_path: Path
    public_key: str
    passphrase: str | None = field(default=None, repr=False)

    @property
    def private_key_text(self) -> str:
        return self.private_key_path.read_text()


@dataclass(frozen=True)
class SshHost:
    """One test host as plain data, ready to be written into an inventory table."""

    name: str
    kind: HostKind
    address: str
    port: int
    user: str
    key_path: Path
    known_hosts_path: Path
    key_passphrase: str | None = field(default=None, repr=False)
    # The sshd log, or None for hosts without sshd (closed_port, silent).
    log_path: Path | None = None
    # The directory that is the whole PATH of the host's sessions.
    bin_dir: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return name, kind, address, port, user and paths as strings and numbers."""
        return {
            "name": self.name,
            "kind": self.kind.value,
            "address": self.address,
            "port": self.port,
            "user": self.user,
            "key_path": str(self.key_path),
            "known_hosts_path": str(self.known_hosts_path),
        }

    def ssh_target(self, connect_timeout: float = 5.0, command_timeout: float = 10.0) -> SshTarget:
        return SshTarget(
            host=self.address,
            port=self.port,
            user=self.user,
            key_path=str(self.key_path),
            key_passphrase=self.key_passphrase,
            known_hosts_path=str(self.known_hosts_path),
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
        )

    def log_text(self) -> str:
        if self.log_path is None:
            raise ValueError(f"test host {self.name} ({self.kind.value}) runs no sshd")
        return self.log_path.read_text(errors="replace")

    def connection_count(self) -> int:
        """Count the TCP connections that sshd accepted, from its log."""
        return sum(
            1 for line in self.log_text().splitlines() if line.startswith("Connection from ")
        )

    def login_count(self) -> int:
        """Count the successful public key logins, from the sshd log."""
        return sum(
            1 for line in self.log_text().splitlines() if line.startswith("Accepted publickey for ")
        )


def require_program(path: Path, package: str) -> None:
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{path} is missing, so the SSH test hosts cannot start; install "
            f"{package} ({SETUP_HINT})",
            pytrace=False,
        )


def ensure_test_user() -> None:
    """Create TEST_USER with login shell /bin/sh unless it exists, and fail if its shell differs."""
    if os.geteuid() != 0:
        pytest.fail(
            "the SSH test hosts need root to create the test user and to start sshd; "
            f"run the tests as root ({SETUP_HINT})",
            pytrace=False,
        )
    if not _test_user_exists():
        require_program(USERADD_PATH, "passwd")
        command = [
            str(USERADD_PATH),
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/",
            "--shell",
            TEST_USER_SHELL,
            # "*" disables password login without locking the account: sshd with
            # UsePAM no rejects even key logins of accounts locked with "!".
            "--password",
            "*",
            "--comment",
            "prep-assets SSH test hosts",
            TEST_USER,
        ]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        # Another test session may have created the user in the meantime.
        if completed.returncode != 0 and not _test_user_exists():
            pytest.fail(
                f"could not create test user {TEST_USER}: {completed.stderr.strip()}",
                pytrace=False,
            )
        logger.info("created test user %s for the SSH test hosts", TEST_USER)

    shell = pwd.getpwnam(TEST_USER).pw_shell
    if shell != TEST_USER_SHELL:
        pytest.fail(
            f"test user {TEST_USER} exists with login shell {shell}, expected "
            f"{TEST_USER_SHELL}; fix it with: usermod --shell {TEST_USER_SHELL} {TEST_USER}",
            pytrace=False,
        )


def _test_user_exists() -> bool:
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        return False
    return True


def sshd_version() -> tuple[int, int]:
    completed = subprocess.run([str(SSHD_PATH), "-V"], capture_output=True, text=True, check=False)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", completed.stderr + completed.stdout)
    if match is None:
        pytest.fail(
            f"could not read the OpenSSH version from {SSHD_PATH} -V: {completed.stderr.strip()!r}",
            pytrace=False,
        )
    return int(match.group(1)), int(match.group(2))


def generate_key(path: Path, comment: str, passphrase: str | None = None) -> KeyPair:
    """Write a new ed25519 key pair to ``path`` and ``path.pub``."""
    completed = subprocess.run(
        [
            str(SSH_KEYGEN_PATH),
            "-q",
            "-t",
            "ed25519",
            "-C",
            comment,
            "-N",
            passphrase or "",
            "-f",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        pytest.fail(f"ssh-keygen failed for {path}: {completed.stderr.strip()}", pytrace=False)
    public_key = path.with_name(path.name + ".pub").read_text().strip()
    return KeyPair(private_key_path=path, public_key=public_key, passphrase=passphrase)


def free_port(address: str) -> int:
    """Return a TCP port that is free on ``address`` now (another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def link_tools(bin_dir: Path, with_sysstat: bool) -> None:
    """Fill ``bin_dir`` with symlinks to the basic tools and, if asked, the sysstat tools."""
    bin_dir.mkdir(parents=True)
    required = REQUIRED_TOOLS + (SYSSTAT_TOOLS if with_sysstat else ())
    for tool in required + OPTIONAL_TOOLS:
        found = shutil.which(tool, path=SYSTEM_BIN_DIRS)
        if found is None:
            if tool in required:
                package = "sysstat" if tool in SYSSTAT_TOOLS else "the package that ships it"
                pytest.fail(
                    f"{tool} is not installed; install {package} ({SETUP_HINT})", pytrace=False
                )
            continue
        (bin_dir / tool).symlink_to(found)


class SilentListener:
    """A TCP listener that accepts connections and keeps them open without sending anything."""

    def __init__(self, address: str, port: int) -> None:
        self._server = socket.create_server((address, port), backlog=128)
        self._server.settimeout(0.2)
        self._connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"silent-listener-{address}:{port}", daemon=True
        )
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _peer = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._connections.append(connection)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()
        for connection in self._connections:
            connection.close()


class SshdProcess:
    """One sshd started in its own process group, with its log in a file.

    ``prefix`` runs sshd through another program, such as ``ip netns exec NAME``,
    which replaces itself with sshd, so the process group is still sshd's.
    """

    def __init__(self, config_path: Path, log_path: Path, prefix: Sequence[str] = ()) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.process = subprocess.Popen(
            [*prefix, str(SSHD_PATH), "-D", "-e", "-f", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )

    def wait_listening(self, address: str, port: int) -> bool:
        """Wait until sshd logs that it listens, and return False if sshd exited first.

        The log line is awaited instead of probing the port, because a probe would
        be logged as a connection and break tests that count connections.
        """
        expected = f"Server listening on {address} port {port}."
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if expected in self.log_path.read_text(errors="replace"):
                return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.02)
        self.stop()
        pytest.fail(
            f"sshd with {self.config_path} did not listen on {address}:{port} within "
            f"{STARTUP_TIMEOUT_SECONDS:g} s; log:\n{self.log_path.read_text(errors='replace')}",
            pytrace=False,
        )

    def stop(self) -> None:
        """Send SIGTERM to the process group, then SIGKILL after a grace period."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def _signal_group(process_group: int, signal_number: int) -> None:
    try:
        os.killpg(process_group, signal_number)
    except ProcessLookupError:
        pass


class SshHostPool:
    """Test hosts of one test session, sharing a client key and a known_hosts file.

    ``hosts`` contains the standard hosts, one per HostKind and named after it.
    ``start_host`` starts more hosts. Those are stopped by ``stop_host`` or at
    the end of the session, and never appear in ``hosts``.
    """

    def __init__(self, private_dir: Path) -> None:
        for program, package in (
            (SSHD_PATH, "openssh-server"),
            (SSH_KEYGEN_PATH, "openssh-client"),
        ):
            require_program(program, package)
        ensure_test_user()
        PRIVILEGE_SEPARATION_DIR.mkdir(mode=0o755, exist_ok=True)

        self.private_dir = private_dir
        self.known_hosts_path = private_dir / "known_hosts"
        self.known_hosts_path.touch()
        self.client_key = generate_key(private_dir / "client_ed25519", "prep-assets test client")
        self._unauthorized_key = generate_key(
            private_dir / "unauthorized_ed25519", "prep-assets test key that no host accepts"
        )
        # PerSourcePenalties (OpenSSH 9.8 and later) would refuse connections
        # from 127.0.0.1 after the failed logins that the tests provoke.
        self._disable_penalties = sshd_version() >= (9, 8)
        self.public_dir = Path(tempfile.mkdtemp(prefix="prep-assets-ssh-hosts-"))
        self.public_dir.chmod(0o755)
        self.hosts: dict[str, SshHost] = {}
        self._next_address_index = 0
        self._sshd: dict[str, SshdProcess] = {}
        self._listeners: dict[str, SilentListener] = {}
        self._names: set[str] = set()

    def __getitem__(self, name: str) -> SshHost:
        return self.hosts[name]

    def start_standard_hosts(self) -> None:
        for kind in HostKind:
            self.hosts[kind.value] = self.start_host(kind, name=kind.value)

    def create_client_key(self, name: str, passphrase: str | None = None) -> KeyPair:
        return generate_key(self.private_dir / name, f"prep-assets test key {name}", passphrase)

    def start_host(
        self,
        kind: HostKind,
        name: str | None = None,
        client_key: KeyPair | None = None,
        *,
        namespace: str | None = None,
        address: str | None = None,
        allow_tcp_forwarding: bool = False,
        programs: Mapping[str, str] | None = None,
    ) -> SshHost:
        """Start one host of ``kind`` on a new loopback address and return its data.

        ``client_key`` (default: the pool's client key) is the key the host
        accepts, except for REJECTS_KEY hosts, which accept no key of the pool.
        With ``namespace``, sshd runs in that network namespace on port 22 of
        all its addresses, and ``address`` is where clients reach it.
        ``allow_tcp_forwarding`` makes the host usable as a jump host.
        ``programs`` are scripts (name to text) written into the host's bin dir.
        """
        if namespace is not None and (address is None or kind not in SSHD_KINDS):
            raise ValueError("a host in a network namespace needs an address and an sshd kind")
        address = address or self._next_address()
        name = name or f"{kind.value}-{address}"
        if name in self._names:
            raise ValueError(f"a test host named {name} already exists")
        self._names.add(name)
        key = client_key or self.client_key
        host = SshHost(
            name=name,
            kind=kind,
            address=address,
            port=0,
            user=TEST_USER,
            key_path=key.private_key_path,
            known_hosts_path=self.known_hosts_path,
            key_passphrase=key.passphrase,
        )

        if kind is HostKind.CLOSED_PORT:
            return dataclasses.replace(host, port=free_port(address))
        if kind is HostKind.SILENT:
            port = free_port(address)
            self._listeners[name] = SilentListener(address, port)
            return dataclasses.replace(host, port=port)
        return self._start_sshd_host(
            host,
            key,
            namespace=namespace,
            allow_tcp_forwarding=allow_tcp_forwarding,
            programs=programs or {},
        )

    def start_hosts(self, kind: HostKind, count: int, prefix: str | None = None) -> list[SshHost]:
        prefix = prefix or kind.value
        return [self.start_host(kind, name=f"{prefix}-{index}") for index in range(count)]

    def stop_host(self, name: str) -> None:
        sshd = self._sshd.pop(name, None)
        if sshd is not None:
            sshd.stop()
        listener = self._listeners.pop(name, None)
        if listener is not None:
            listener.close()

    def close(self) -> None:
        for name in list(self._sshd) + list(self._listeners):
            self.stop_host(name)
        shutil.rmtree(self.public_dir, ignore_errors=True)

    def _next_address(self) -> str:
        # 127.0.0.1 is left to other services of the tests.
        index = self._next_address_index
        self._next_address_index += 1
        return f"127.0.{index // 253}.{index % 253 + 2}"

    def _start_sshd_host(
        self,
        host: SshHost,
        client_key: KeyPair,
        *,
        namespace: str | None = None,
        allow_tcp_forwarding: bool = False,
        programs: Mapping[str, str],
    ) -> SshHost:
        host_dir = self.private_dir / host.name
        public_host_dir = self.public_dir / host.name
        host_dir.mkdir()
        public_host_dir.mkdir(mode=0o755)

        host_key = generate_key(host_dir / "ssh_host_ed25519_key", f"host key of {host.name}")
        known_key = host_key
        if host.kind is HostKind.WRONG_HOST_KEY:
            known_key = generate_key(
                host_dir / "other_host_ed25519_key", f"key that {host.name} does not present"
            )
        authorized_key = client_key
        if host.kind is HostKind.REJECTS_KEY:
            authorized_key = self._unauthorized_key

        authorized_keys_path = public_host_dir / "authorized_keys"
        authorized_keys_path.write_text(authorized_key.public_key + "\n")
        authorized_keys_path.chmod(0o644)
        bin_dir = public_host_dir / "bin"
        link_tools(bin_dir, with_sysstat=host.kind is not HostKind.WITHOUT_SYSSTAT)
        for program, text in programs.items():
            script = bin_dir / program
            script.write_text(text)
            script.chmod(0o755)

        log_path = host_dir / "sshd.log"
        # In its own namespace the host has every port to itself, and listens on
        # all of its addresses, which only the veth links of the test reach.
        listen_address = "::" if namespace is not None else host.address
        prefix = ("ip", "netns", "exec", namespace) if namespace is not None else ()
        for _attempt in range(BIND_ATTEMPTS):
            port = 22 if namespace is not None else free_port(host.address)
            config_path = host_dir / "sshd_config"
            config_path.write_text(
                self._sshd_config(
                    listen_address,
                    port,
                    host_key,
                    authorized_keys_path,
                    bin_dir,
                    allow_tcp_forwarding=allow_tcp_forwarding,
                )
            )
            sshd = SshdProcess(config_path, log_path, prefix)
            if sshd.wait_listening(listen_address, port):
                break
            # sshd exited before listening, most likely because another process
            # took the port between free_port() and sshd's bind.
            sshd.stop()
        else:
            pytest.fail(
                f"sshd for test host {host.name} did not start; log:\n"
                f"{log_path.read_text(errors='replace')}",
                pytrace=False,
            )

        self._sshd[host.name] = sshd
        host_key_type, host_key_base64 = known_key.public_key.split()[:2]
        known_name = host.address if port == 22 else f"[{host.address}]:{port}"
        with self.known_hosts_path.open("a") as known_hosts:
            known_hosts.write(f"{known_name} {host_key_type} {host_key_base64}\n")

        return dataclasses.replace(host, port=port, log_path=log_path, bin_dir=bin_dir)

    def _sshd_config(
        self,
        address: str,
        port: int,
        host_key: KeyPair,
        authorized_keys_path: Path,
        bin_dir: Path,
        allow_tcp_forwarding: bool = False,
    ) -> str:
        listen = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        lines = [
            f"ListenAddress {listen}",
            f"HostKey {host_key.private_key_path}",
            "PidFile none",
            "UsePAM no",
            # The key files live in temp directories that StrictModes would reject.
            "StrictModes no",
            # VERBOSE logs a "Connection from" line for every accepted connection.
            "LogLevel VERBOSE",
            f"AuthorizedKeysFile {authorized_keys_path}",
            f"AllowUsers {TEST_USER}",
            "PermitRootLogin no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitUserRC no",
            "PermitUserEnvironment no",
            f"SetEnv PATH={bin_dir}",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            f"AllowTcpForwarding {'local' if allow_tcp_forwarding else 'no'}",
            "AllowAgentForwarding no",
            "PermitTunnel no",
            "Subsystem sftp internal-sftp",
        ]
        if self._disable_penalties:
            lines.append("PerSourcePenalties no")
        return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def ssh_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshHostPool]:
    """Start one test host of every HostKind for the session and stop them all at its end."""
    pool = SshHostPool(tmp_path_factory.mktemp("ssh-hosts"))
    try:
        pool.start_standard_hosts()
        yield pool
    finally:
        pool.close()


@pytest.fixture
def start_ssh_host(ssh_hosts: SshHostPool) -> Iterator[Callable[..., SshHost]]:
    """Return a wrapper of ``ssh_hosts.start_host`` whose hosts stop when the test ends."""
    started: list[str] = []

    def start(
        kind: HostKind, name: str | None = None, client_key: KeyPair | None = None, **options: Any
    ) -> SshHost:
        host = ssh_hosts.start_host(kind, name=name, client_key=client_key, **options)
        started.append(host.name)
        return host

    yield start
    for name in started:
        ssh_hosts.stop_host(name)
