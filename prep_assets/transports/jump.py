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
"""

import logging
from collections.abc import Sequence

import paramiko

from prep_assets.transports.base import (
    JumpHostUnreachableError,
    TransportError,
    TransportTimeoutError,
    UnreachableError,
)
from prep_assets.transports.ssh import SshTarget, SshTransport

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

    def open(self) -> paramiko.Channel:
        """Connect through every hop and return a channel to the target's SSH port.

        Raises TransportError subclasses whose message names the hop that failed.
        Connections already opened are closed before the error is raised.
        """
        try:
            return self._open()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the hop connections, last hop first."""
        while self._hops:
            self._hops.pop().close()

    def _open(self) -> paramiko.Channel:
        hops: Sequence[SshTarget] = self.target.jumps
        first = SshTransport(self.system, hops[0])
        try:
            sock = first.open_socket()
        except (UnreachableError, TransportTimeoutError) as error:
            raise JumpHostUnreachableError(
                self.system, f"jump host {hops[0].display_name} unreachable: {error.message}"
            ) from None

        channel: paramiko.Channel | None = None
        for index, hop in enumerate(hops):
            transport = first if index == 0 else SshTransport(self.system, hop)
            try:
                transport.open_over(sock if channel is None else channel)
            except TransportError as error:
                raise _hop_error(error, hop) from None
            self._hops.append(transport)
            following = hops[index + 1] if index + 1 < len(hops) else None
            channel = self._open_tunnel(transport, hop, following)
            logger.debug(
                "%s: jump host %s opened a tunnel to %s",
                self.system,
                hop.display_name,
                (following or self.target).address,
            )
        assert channel is not None
        return channel

    def _open_tunnel(
        self, transport: SshTransport, hop: SshTarget, following: SshTarget | None
    ) -> paramiko.Channel:
        """Open the tunnel from ``hop`` to the next hop, or to the target when ``following`` is None."""
        destination = following or self.target
        try:
            return transport.open_tunnel(destination.host, destination.port, hop.connect_timeout)
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
                f"{destination.port} within {hop.connect_timeout:g} s ({exc})"
            )
            if following is not None:
                raise JumpHostUnreachableError(
                    self.system,
                    f"jump host {following.display_name} unreachable: {message}",
                ) from None
            raise TransportTimeoutError(self.system, message) from None


def _hop_error(error: TransportError, hop: SshTarget) -> TransportError:
    """Return ``error`` with a message that names the jump host, keeping its access state."""
    # Every TransportError subclass takes (system, message), like the base class.
    return type(error)(error.system, f"jump host {hop.display_name}: {error.message}")
