"""Run commands on a system over SSH with paramiko, checking host keys against known_hosts.

Host keys are enforced: only the known_hosts file of the target is loaded, an
unknown host key raises HostKeyUnknownError and a changed one raises
HostKeyMismatchError. No key is ever added to any file. Authentication uses a
private key file and, when enabled, the SSH agent. Passwords are never sent.
"""

import errno
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import paramiko

from prep_assets.models import CommandResult
from prep_assets.transports.base import (
    AuthenticationError,
    HostKeyMismatchError,
    HostKeyUnknownError,
    TransportError,
    TransportTimeoutError,
    UnreachableError,
    shell_command,
)
from prep_assets.transports.known_hosts import KnownHosts, load_known_hosts
from prep_assets.transports.tcp import ResolutionTimeoutError, connect_tcp, format_seconds

if TYPE_CHECKING:
    from prep_assets.transports.jump import JumpChain

logger = logging.getLogger(__name__)

DEFAULT_SSH_PORT = 22

# Bytes read from a channel per call, and the longest wait between checks
# that the connection is still alive while a command runs.
READ_CHUNK_BYTES = 65536
POLL_INTERVAL_SECONDS = 1.0

# Paramiko's own banner, key exchange and authentication timeouts are set this
# much later than our deadline, so the deadline watchdog always fires first and
# a timeout is reported as TransportTimeoutError rather than a generic SSHException.
PARAMIKO_TIMEOUT_MARGIN_SECONDS = 1.0

UNREACHABLE_ERRNOS = frozenset(
    {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}
)


@dataclass(frozen=True, kw_only=True)
class SshTarget:
    """Address, credentials and timeouts of one SSH system.

    ``key_passphrase`` is left out of ``repr`` so it never reaches a log or a
    traceback through this object. Timeouts are in seconds.
    """

    host: str
    port: int = DEFAULT_SSH_PORT
    user: str
    key_path: str | None = None
    key_passphrase: str | None = field(default=None, repr=False)
    known_hosts_path: str
    # Maximum time for name resolution, TCP connect, SSH handshake and
    # authentication together. With jump hosts it also covers every hop.
    connect_timeout: float = 10.0
    # Maximum run time of one command when run() is called without a timeout.
    command_timeout: float = 60.0
    allow_agent: bool = False
    # Jump hosts to pass on the way, first hop first, as in OpenSSH's ProxyJump.
    # Each hop has its own key, known_hosts file and connect timeout, and the
    # hop's connect timeout can only shorten its own step of the chain.
    jumps: tuple["SshTarget", ...] = ()
    # Name for messages, such as the inventory name or ssh_config alias of a jump host.
    name: str | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("SSH host must not be empty")
        if not self.user:
            raise ValueError(f"SSH user for {self.host} must not be empty")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"SSH port {self.port} of {self.host} is not in 1..65535")
        if self.connect_timeout <= 0 or self.command_timeout <= 0:
            raise ValueError(
                f"SSH timeouts of {self.host} must be positive, got connect_timeout="
                f"{self.connect_timeout} and command_timeout={self.command_timeout}"
            )

    @property
    def known_hosts_name(self) -> str:
        """The name under which known_hosts stores this host: ``[host]:port`` unless port 22."""
        if self.port == DEFAULT_SSH_PORT:
            return self.host
        return f"[{self.host}]:{self.port}"

    @property
    def address(self) -> str:
        """``user@host:port`` for messages."""
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def display_name(self) -> str:
        """``name (user@host:port)`` when the target has a name, else ``user@host:port``."""
        if self.name and self.name != self.host:
            return f"{self.name} ({self.address})"
        return self.address


class UnknownHostKeyRejected(paramiko.SSHException):
    """Exception of RejectUnknownHostKeyPolicy, with the host key that the server presented."""

    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(f"host key of {hostname} is not in known_hosts")
        self.hostname = hostname
        self.key = key


class RevokedHostKeyRejected(UnknownHostKeyRejected):
    """Exception of RejectUnknownHostKeyPolicy for a key marked @revoked in known_hosts."""


class RejectUnknownHostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Reject every host key that known_hosts does not contain, without saving it."""

    def __init__(self, known_hosts: KnownHosts | None = None) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if self.known_hosts is not None and self.known_hosts.is_revoked(key):
            raise RevokedHostKeyRejected(hostname, key)
        raise UnknownHostKeyRejected(hostname, key)


class _Watchdog:
    """Call ``action`` once after ``seconds`` unless ``finish`` is called first.

    ``finish`` returns whether the action ran, and after it returns the action
    can no longer run, so the caller never mistakes a late expiry for success.
    """

    def __init__(self, seconds: float, action: Callable[[], None]) -> None:
        self._action = action
        self._lock = threading.Lock()
        self._finished = False
        self._expired = False
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._expired = True
            self._action()

    def finish(self) -> bool:
        with self._lock:
            self._finished = True
        self._timer.cancel()
        return self._expired


def _describe_key(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


class SshTransport:
    """One SSH connection to one system, opened on the first run() and reused afterwards.

    An instance is meant for one thread at a time. If the connection drops
    between commands, the next run() opens a new one.
    """

    def __init__(self, system: str, target: SshTarget) -> None:
        self.system = system
        self.target = target
        self._client: paramiko.SSHClient | None = None
        self._key: paramiko.PKey | None = None
        # The open connections to the jump hosts, when the target has any.
        self._chain: JumpChain | None = None

    def __enter__(self) -> "SshTransport":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        """Whether an authenticated connection is open."""
        if self._client is None:
            return False
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def run(self, argv: Sequence[str], timeout: float | None = None) -> CommandResult:
        """Run ``argv`` through the remote login shell and return its exit code and output.

        ``timeout`` (seconds, default ``target.command_timeout``) covers the
        command only. Opening the connection on the first call has its own
        limit, ``target.connect_timeout``. The exit code is -1 when the server
        reported none, for example because the command was killed by a signal.
        """
        command = shell_command(argv)
        limit = self.target.command_timeout if timeout is None else timeout
        client = self._connected_client()
        transport = client.get_transport()
        if transport is None:
            raise TransportError(self.system, f"connection to {self.target.address} is closed")

        started = time.monotonic()
        deadline = started + limit
        channel = self._open_channel(transport, limit)
        try:
            self._start_command(channel, command, argv[0], deadline, limit)
            stdout, stderr = self._collect_output(channel, argv[0], deadline, limit)
            exit_code = self._wait_exit_status(channel, argv[0], deadline, limit)
        finally:
            channel.close()

        duration = time.monotonic() - started
        logger.debug(
            "%s: %s exited with %d after %.3f s", self.system, argv[0], exit_code, duration
        )
        return CommandResult(
            exit_code=exit_code,
            stdout=stdout.decode("utf-8", errors="replace"),
            stderr=stderr.decode("utf-8", errors="replace"),
            duration_seconds=duration,
        )

    def close(self) -> None:
        """Close the connection and those to the jump hosts. The next run() opens new ones."""
        if self._client is not None:
            logger.debug("%s: closing SSH connection to %s", self.system, self.target.address)
            self._client.close()
            self._client = None
        if self._chain is not None:
            self._chain.close()
            self._chain = None

    def open_over(
        self, sock: socket.socket | paramiko.Channel, started: float, deadline: float
    ) -> None:
        """Run the SSH handshake over an open socket or tunnel channel and keep the connection.

        A jump chain uses this to connect to each hop through the tunnel of
        the hop before it. The handshake must end by ``deadline``, and a
        timeout message counts from ``started`` (both time.monotonic() values).
        ``sock`` is closed when this raises.
        """
        self.close()
        self._client = self._handshake(sock, started, deadline)

    def open_tunnel(self, host: str, port: int, timeout: float) -> paramiko.Channel:
        """Ask the connected server to open a TCP connection to ``host:port`` (direct-tcpip).

        Raises paramiko.ChannelException when the server rejects the request or
        cannot connect, and paramiko.SSHException when it does not reply in time.
        """
        client = self._connected_client()
        transport = client.get_transport()
        if transport is None:
            raise TransportError(self.system, f"connection to {self.target.address} is closed")
        return transport.open_channel(
            "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout
        )

    # Connecting

    def _connected_client(self) -> paramiko.SSHClient:
        if self._client is not None:
            if self.connected:
                return self._client
            logger.info(
                "%s: SSH connection to %s was lost, opening a new one",
                self.system,
                self.target.address,
            )
            self.close()
        self._client = self._connect()
        return self._client

    def _connect(self) -> paramiko.SSHClient:
        # One deadline covers the jump hosts, name resolution, TCP connect and
        # handshake, so a hung system costs at most its connect timeout.
        started = time.monotonic()
        deadline = started + self.target.connect_timeout
        # The TCP connect comes first, so a system that is down reports as
        # unreachable even when its key is missing on this machine.
        sock: socket.socket | paramiko.Channel
        if self.target.jumps:
            # Imported here because jump.py builds its hops from this module's classes.
            from prep_assets.transports.jump import JumpChain

            self._chain = JumpChain(self.system, self.target)
            sock = self._chain.open(deadline)
        else:
            sock = self._open_socket(started, deadline)
        try:
            return self._handshake(sock, started, deadline)
        except BaseException:
            if self._chain is not None:
                self._chain.close()
                self._chain = None
            raise

    def _handshake(
        self, sock: socket.socket | paramiko.Channel, started: float, deadline: float
    ) -> paramiko.SSHClient:
        """Check the host key and authenticate over ``sock``; close ``sock`` on failure."""
        target = self.target
        try:
            key = self._load_key()
        except BaseException:
            sock.close()
            raise
        client = paramiko.SSHClient()
        known_hosts = self._load_known_hosts(client)
        known_hosts_missing = known_hosts is None
        client.set_missing_host_key_policy(RejectUnknownHostKeyPolicy(known_hosts))

        remaining = max(deadline - time.monotonic(), 0.0)
        paramiko_timeout = remaining + PARAMIKO_TIMEOUT_MARGIN_SECONDS
        watchdog = _Watchdog(remaining, lambda: _shutdown_socket(sock))
        try:
            client.connect(
                hostname=target.host,
                port=target.port,
                username=target.user,
                pkey=key,
                sock=sock,
                timeout=paramiko_timeout,
                banner_timeout=paramiko_timeout,
                auth_timeout=paramiko_timeout,
                channel_timeout=paramiko_timeout,
                allow_agent=target.allow_agent,
                look_for_keys=False,
            )
        except Exception as exc:
            expired = watchdog.finish()
            stage = _handshake_stage(client)
            client.close()
            sock.close()
            raise self._connect_error(
                exc, expired, stage, known_hosts_missing, key, deadline - started
            ) from None
        if watchdog.finish():
            client.close()
            raise self._timeout_error("authentication", deadline - started)

        logger.debug(
            "%s: connected to %s in %.3f s",
            self.system,
            target.address,
            time.monotonic() - started,
        )
        return client

    def _load_key(self) -> paramiko.PKey | None:
        target = self.target
        if target.key_path is None:
            if not target.allow_agent:
                raise TransportError(
                    self.system,
                    f"no SSH key for {target.address}: key_path is not set and the SSH agent "
                    "is disabled; set key_path or allow_agent",
                )
            return None
        if self._key is not None:
            return self._key

        self._key = self._read_key_file(os.path.expanduser(target.key_path))
        return self._key

    def _read_key_file(self, path: str) -> paramiko.PKey:
        """Load the private key at ``path``, decrypting it with the passphrase when it is encrypted.

        Errors are raised "from None" and name only the exception type, so
        neither key material nor the passphrase can reach a message or traceback.
        """
        # The first attempt without a passphrase distinguishes an unencrypted key
        # (any configured passphrase is then ignored) from an encrypted one.
        # PKey.from_path raises TypeError for an encrypted key without a passphrase.
        try:
            return paramiko.PKey.from_path(path, None)
        except TypeError:
            pass
        except OSError as exc:
            raise TransportError(
                self.system,
                f"could not read private key file {path}: {exc.strerror or type(exc).__name__}; "
                "check key_path and the file permissions",
            ) from None
        except (paramiko.SSHException, paramiko.UnknownKeyType, ValueError) as exc:
            raise TransportError(
                self.system,
                f"could not load private key file {path} ({type(exc).__name__}); "
                "the file is not a private key of a type that paramiko supports",
            ) from None

        passphrase = self.target.key_passphrase
        if passphrase is None:
            raise TransportError(
                self.system,
                f"private key file {path} is encrypted and no passphrase is configured; "
                "set the key passphrase for this system",
            )
        try:
            # NOTE: paramiko 5.1 passes this value on to the cryptography
            # package, which requires bytes, although from_path documents str.
            return paramiko.PKey.from_path(path, passphrase.encode())
        except (
            paramiko.SSHException,
            paramiko.UnknownKeyType,
            ValueError,
            TypeError,
            OSError,
        ) as exc:
            raise TransportError(
                self.system,
                f"could not decrypt private key file {path} ({type(exc).__name__}); "
                "check that the configured passphrase is right",
            ) from None

    def _load_known_hosts(self, client: paramiko.SSHClient) -> KnownHosts | None:
        """Give ``client`` the target's keys from known_hosts; return None if the file is missing.

        Only the keys of this host are handed to paramiko, from a file parsed
        once per version for all connections (see known_hosts.py). paramiko
        never writes these keys back because no file name is set on the client.
        """
        path = os.path.expanduser(self.target.known_hosts_path)
        try:
            known_hosts = load_known_hosts(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TransportError(
                self.system,
                f"could not read known_hosts file {path}: {exc.strerror or exc}",
            ) from None
        name = self.target.known_hosts_name
        host_keys = client.get_host_keys()
        for key in known_hosts.keys_for(name):
            host_keys.add(name, key.get_name(), key)
        return known_hosts

    def open_socket(self, started: float, deadline: float) -> socket.socket:
        """Open the TCP connection to the target, without jump hosts, and return the socket.

        Name resolution and the connect must end by ``deadline``, and a
        timeout message counts from ``started`` (both time.monotonic() values).
        """
        return self._open_socket(started, deadline)

    def _open_socket(self, started: float, deadline: float) -> socket.socket:
        target = self.target
        try:
            return connect_tcp(target.host, target.port, deadline)
        except ResolutionTimeoutError:
            raise TransportTimeoutError(
                self.system,
                f"resolving host name {target.host!r} timed out after "
                f"{format_seconds(deadline - started)} s; check the DNS servers of this "
                "machine (/etc/resolv.conf), or put the IP address in the inventory",
            ) from None
        except socket.gaierror as exc:
            raise UnreachableError(
                self.system,
                f"could not resolve host name {target.host!r}: {exc.strerror}; "
                "check the address in the inventory",
            ) from None
        except OSError as exc:
            raise self._socket_error(exc, deadline - started) from None

    def _socket_error(self, exc: OSError, limit: float) -> TransportError:
        target = self.target
        if isinstance(exc, TimeoutError):
            return TransportTimeoutError(
                self.system,
                f"TCP connection to {target.host}:{target.port} timed out after "
                f"{format_seconds(limit)} s; check that the host is up and that no "
                f"firewall drops packets to port {target.port}",
            )
        if isinstance(exc, ConnectionRefusedError):
            return UnreachableError(
                self.system,
                f"connection to {target.host}:{target.port} was refused; check that sshd "
                "runs on the system and that the inventory has the right address and port",
            )
        if exc.errno in UNREACHABLE_ERRNOS:
            return UnreachableError(
                self.system,
                f"no route to {target.host}:{target.port} ({exc.strerror}); "
                "check the address and the network path to the system",
            )
        return UnreachableError(
            self.system,
            f"could not connect to {target.host}:{target.port}: {exc.strerror or exc}",
        )

    def _connect_error(
        self,
        exc: Exception,
        expired: bool,
        stage: str,
        known_hosts_missing: bool,
        key: paramiko.PKey | None,
        limit: float,
    ) -> TransportError:
        target = self.target
        known_hosts = os.path.expanduser(target.known_hosts_path)
        if expired:
            return self._timeout_error(stage, limit)

        if isinstance(exc, RevokedHostKeyRejected):
            return HostKeyMismatchError(
                self.system,
                f"host key {_describe_key(exc.key)} of {exc.hostname} is marked @revoked in "
                f"known_hosts file {known_hosts}, so the connection was rejected. Find out "
                "why the system presents a revoked key before trusting it again.",
            )

        if isinstance(exc, UnknownHostKeyRejected):
            missing_note = " (the file does not exist)" if known_hosts_missing else ""
            return HostKeyUnknownError(
                self.system,
                f"host key {_describe_key(exc.key)} of {exc.hostname} is not in known_hosts "
                f"file {known_hosts}{missing_note}. Verify the fingerprint on the system's "
                "console (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then add the host key "
                f"with: ssh-keyscan -p {target.port} {target.host} >> {known_hosts}",
            )

        if isinstance(exc, paramiko.BadHostKeyException):
            return HostKeyMismatchError(
                self.system,
                f"host key of {target.known_hosts_name} changed: the server presents "
                f"{_describe_key(exc.key)} but known_hosts file {known_hosts} contains "
                f"{_describe_key(exc.expected_key)}. If the system was reinstalled, verify "
                f"the new fingerprint and replace the entry (ssh-keygen -R "
                f"'{target.known_hosts_name}' -f {known_hosts}, then ssh-keyscan). "
                "Otherwise treat it as a possible man-in-the-middle attack.",
            )

        if isinstance(exc, paramiko.AuthenticationException):
            offered = []
            if key is not None:
                offered.append(f"key {_describe_key(key)} from {target.key_path}")
            if target.allow_agent:
                offered.append("the keys of the SSH agent")
            return AuthenticationError(
                self.system,
                f"{target.address} rejected {' and '.join(offered)}; add the public key to "
                f"authorized_keys of user {target.user} on the system, or fix the user or "
                "key in the inventory",
            )

        return TransportError(
            self.system,
            f"SSH handshake with {target.host}:{target.port} failed during {stage}: "
            f"{type(exc).__name__}: {exc}",
        )

    def _timeout_error(self, stage: str, limit: float) -> TransportTimeoutError:
        target = self.target
        through = " through its jump hosts" if target.jumps else ""
        return TransportTimeoutError(
            self.system,
            f"SSH connection to {target.host}:{target.port}{through} timed out after "
            f"{format_seconds(limit)} s during {stage}. The port accepts TCP connections "
            "but the server stopped answering, so check that sshd and not another service "
            "listens on this port and that the system is not overloaded.",
        )

    # Running a command

    def _open_channel(self, transport: paramiko.Transport, limit: float) -> paramiko.Channel:
        started = time.monotonic()
        try:
            return transport.open_session(timeout=limit)
        except paramiko.SSHException as exc:
            if transport.is_active() and time.monotonic() - started >= limit:
                raise TransportTimeoutError(
                    self.system,
                    f"{self.target.address} did not open a session channel within "
                    f"{limit:g} s; the server may be overloaded",
                ) from None
            self.close()
            raise TransportError(
                self.system,
                f"could not open a session channel on {self.target.address}: {exc}",
            ) from exc

    def _start_command(
        self, channel: paramiko.Channel, command: str, program: str, deadline: float, limit: float
    ) -> None:
        # Paramiko waits for the reply to an exec request without a timeout, so
        # a watchdog closes the channel when the deadline passes.
        watchdog = _Watchdog(deadline - time.monotonic(), channel.close)
        try:
            channel.exec_command(command)
        except paramiko.SSHException as exc:
            if watchdog.finish():
                raise self._command_timeout_error(program, limit) from None
            raise TransportError(
                self.system, f"{self.target.address} rejected the command {program!r}: {exc}"
            ) from exc
        if watchdog.finish():
            raise self._command_timeout_error(program, limit)

    def _collect_output(
        self, channel: paramiko.Channel, program: str, deadline: float, limit: float
    ) -> tuple[bytes, bytes]:
        """Read stdout and stderr until end of file, draining both so neither fills the window."""
        stdout = bytearray()
        stderr = bytearray()
        while True:
            # Check for EOF before draining: data always arrives before EOF, so
            # everything sent is in the buffers once the drain after it is done.
            finished = channel.eof_received or channel.closed
            while channel.recv_ready():
                stdout += channel.recv(READ_CHUNK_BYTES)
            while channel.recv_stderr_ready():
                stderr += channel.recv_stderr(READ_CHUNK_BYTES)
            if finished:
                return bytes(stdout), bytes(stderr)

            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._command_timeout_error(program, limit)
            # The channel's file descriptor becomes readable when either
            # buffer has data or the channel closes.
            select.select([channel], [], [], min(remaining, POLL_INTERVAL_SECONDS))

    def _wait_exit_status(
        self, channel: paramiko.Channel, program: str, deadline: float, limit: float
    ) -> int:
        remaining = max(deadline - time.monotonic(), 0.0)
        if not channel.status_event.wait(remaining):
            raise self._command_timeout_error(program, limit)
        return channel.recv_exit_status()

    def _command_timeout_error(self, program: str, limit: float) -> TransportTimeoutError:
        # NOTE: closing the channel does not kill the remote command. sshd only
        # closes its pipes, so the command runs on until it exits or writes output.
        return TransportTimeoutError(
            self.system,
            f"command {program!r} did not finish within {limit:g} s on {self.target.address}; "
            "the channel was closed. Raise the command timeout if the command is expected "
            "to take longer.",
        )


def _shutdown_socket(sock: socket.socket | paramiko.Channel) -> None:
    # shutdown() wakes paramiko's reader thread with an EOF. close() could let
    # the descriptor number be reused while that thread still polls it.
    # A tunnel channel of a jump host has no descriptor of its own, and its
    # shutdown() only sets a flag that the reader never checks, so the channel
    # is closed instead, which ends the reader's wait with an EOF.
    try:
        if isinstance(sock, paramiko.Channel):
            sock.close()
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, EOFError, paramiko.SSHException):
        pass


def _handshake_stage(client: paramiko.SSHClient) -> str:
    transport = client.get_transport()
    if transport is None or not transport.remote_version:
        return "the wait for the SSH banner"
    if transport.host_key is None:
        return "key exchange"
    return "authentication"
