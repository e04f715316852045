"""Reach an SSH target through a chain of jump hosts, as OpenSSH's ProxyJump does.

The client connects to the first hop over TCP and authenticates there. Each
hop then opens a ``direct-tcpip`` channel to the next hop, or to the target
after the last one, and the next SSH handshake runs inside that channel.
Every hop's host key is checked against its known_hosts file exactly like the
target's, so an unknown or changed key on a jump host is reported with the
same access state as on the target, in a message that names the jump host.

A jump host that cannot be reached is reported as ``jump_host_unreachable``
("jump host X unreachable"), so an outage of one jump host is not mistaken
for an outage of every system behind it.

The target's connect_timeout covers the whole chain: every hop's connection,
every tunnel and the target's own handshake. Each of these steps also ends
after the connect_timeout of the hop that it belongs to, when that comes
first. A chain of many hops therefore never costs more than the target's
connect timeout.
"""

import logging
import time
from collections.abc import Sequence

import paramiko

from prep_assets.transports.base import (
    JumpHostUnreachableError,
    TransportError,
    TransportTimeoutError,
    UnreachableError,
)
from prep_assets.transports.ssh import SshTarget, SshTransport
from prep_assets.transports.tcp import format_seconds

logger = logging.getLogger(__name__)

# paramiko.ChannelException codes from RFC 4254, section 5.1.
OPEN_ADMINISTRATIVELY_PROHIBITED = 1


class JumpChain:
    """The open connections to the jump hosts of one target, first hop first."""

    def __init__(self, system: str, target: SshTarget) -> None:
        if not target.jumps:
            raise ValueError(f"{target.address} has no jump hosts")
        self.system = system
        self.target = target
        self._hops: list[SshTransport] = []

    def open(self, deadline: float) -> paramiko.Channel:
        """Connect through every hop and return a channel to the target's SSH port.

        Every step ends by ``deadline``, a time.monotonic() value that is the
        end of the target's connect timeout. Raises TransportError subclasses
        whose message names the hop that failed. Connections already opened
        are closed before the error is raised.
        """
        try:
            return self._open(deadline)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the hop connections, last hop first."""
        while self._hops:
            self._hops.pop().close()

    def _open(self, deadline: float) -> paramiko.Channel:
        hops: Sequence[SshTarget] = self.target.jumps
        first = SshTransport(self.system, hops[0])
        # The first hop's TCP connect and handshake are one step, as for a
        # target without jump hosts.
        started, step_deadline = self._start_step(hops[0], deadline)
        try:
            sock = first.open_socket(started, step_deadline)
        except (UnreachableError, TransportTimeoutError) as error:
            message = self._explain_limit(error, started, step_deadline, hops[0])
            raise JumpHostUnreachableError(
                self.system, f"jump host {hops[0].display_name} unreachable: {message}"
            ) from None

        channel: paramiko.Channel | None = None
        for index, hop in enumerate(hops):
            transport = first
            if index > 0:
                transport = SshTransport(self.system, hop)
                started, step_deadline = self._start_step(hop, deadline)
            try:
                transport.open_over(sock if channel is None else channel, started, step_deadline)
            except TransportError as error:
                message = self._explain_limit(error, started, step_deadline, hop)
                raise _hop_error(error, hop, message) from None
            self._hops.append(transport)
            following = hops[index + 1] if index + 1 < len(hops) else None
            channel = self._open_tunnel(transport, hop, following, deadline)
            logger.debug(
                "%s: jump host %s opened a tunnel to %s",
                self.system,
                hop.display_name,
                (following or self.target).address,
            )
        assert channel is not None
        return channel

    def _start_step(self, hop: SshTarget, deadline: float) -> tuple[float, float]:
        """Return the start and end of the next step of ``hop``, as time.monotonic() values.

        A step is the connection to the hop or the tunnel that it opens. It
        ends after the hop's connect_timeout or at ``deadline``, whichever
        comes first. Raises TransportTimeoutError when ``deadline`` has passed.
        """
        started = time.monotonic()
        if started >= deadline:
            raise TransportTimeoutError(
                self.system,
                f"the connect timeout of {self.target.connect_timeout:g} s of "
                f"{self.target.display_name} ran out at jump host {hop.display_name}; "
                "raise the connect timeout or check which jump host responds slowly",
            )
        return started, min(started + hop.connect_timeout, deadline)

    def _explain_limit(
        self, error: TransportError, started: float, step_deadline: float, hop: SshTarget
    ) -> str:
        """Return the message of ``error``, telling why a timeout was below the hop's own.

        ``started`` and ``step_deadline`` are those of the failed step of ``hop``.
        """
        if isinstance(error, TransportTimeoutError) and _cut_short(started, step_deadline, hop):
            return self._with_shared_limit_note(error.message)
        return error.message

    def _with_shared_limit_note(self, message: str) -> str:
        return (
            f"{message.rstrip('.')}; the connect timeout of {self.target.connect_timeout:g} s "
            f"of {self.target.display_name} covers its jump hosts too"
        )

    def _open_tunnel(
        self,
        transport: SshTransport,
        hop: SshTarget,
        following: SshTarget | None,
        deadline: float,
    ) -> paramiko.Channel:
        """Open the tunnel from ``hop`` to the next hop, or to the target when ``following`` is None."""
        destination = following or self.target
        started, step_deadline = self._start_step(hop, deadline)
        timeout = step_deadline - started
        try:
            return transport.open_tunnel(destination.host, destination.port, timeout)
        except paramiko.ChannelException as exc:
            if exc.code == OPEN_ADMINISTRATIVELY_PROHIBITED:
                raise TransportError(
                    self.system,
                    f"jump host {hop.display_name} refused to forward a connection to "
                    f"{destination.host}:{destination.port} ({exc.text}); allow it with "
                    "AllowTcpForwarding yes (or local) in the jump host's sshd_config",
                ) from None
            reason = f"{exc.text} (channel open failure code {exc.code})"
            if following is not None:
                raise JumpHostUnreachableError(
                    self.system,
                    f"jump host {following.display_name} unreachable from jump host "
                    f"{hop.display_name}: {reason}",
                ) from None
            raise UnreachableError(
                self.system,
                f"{destination.host}:{destination.port} unreachable from jump host "
                f"{hop.display_name}: {reason}; check that sshd runs on the system and that "
                "the jump host can reach it",
            ) from None
        except paramiko.SSHException as exc:
            # paramiko raises a plain SSHException when the open request is not
            # answered within the timeout, or when the hop connection drops.
            message = (
                f"jump host {hop.display_name} did not connect to {destination.host}:"
                f"{destination.port} within {format_seconds(timeout)} s ({exc})"
            )
            if _cut_short(started, step_deadline, hop):
                message = self._with_shared_limit_note(message)
            if following is not None:
                raise JumpHostUnreachableError(
                    self.system,
                    f"jump host {following.display_name} unreachable: {message}",
                ) from None
            raise TransportTimeoutError(self.system, message) from None


def _cut_short(started: float, step_deadline: float, hop: SshTarget) -> bool:
    """Return whether the target's deadline ended a step of ``hop`` before the hop's own timeout."""
    # Compares the same sum that _start_step passed to min(). Subtracting
    # started again would be off by rounding, for example for 7.3 s.
    return step_deadline < started + hop.connect_timeout


def _hop_error(error: TransportError, hop: SshTarget, message: str) -> TransportError:
    """Return an error of the type of ``error`` whose ``message`` names the jump host.

    Keeping the type keeps the access state.
    """
    # Every TransportError subclass takes (system, message), like the base class.
    return type(error)(error.system, f"jump host {hop.display_name}: {message}")
