"""The transport interface: run one command on one system and return its result.

A transport is opened once per system per step and reused for every command of
that step. Commands are argument lists. Each transport quotes them for the shell
it talks to, so a value read from a document never reaches a shell unquoted.
"""

import shlex
from collections.abc import Sequence
from typing import Protocol

from prep_assets.models import AccessState, CommandResult


class TransportError(Exception):
    """A command could not be run on a system; ``state`` is the kind of access failure."""

    state = AccessState.ERROR

    def __init__(self, system: str, message: str) -> None:
        super().__init__(f"{system}: {message}")
        self.system = system
        self.message = message


class UnreachableError(TransportError):
    """The system refused the connection or has no route."""

    state = AccessState.UNREACHABLE


class AuthenticationError(TransportError):
    """The system rejected every credential offered."""

    state = AccessState.AUTH_FAILED


class HostKeyUnknownError(TransportError):
    """The system's host key is not in known_hosts, so the connection was rejected."""

    state = AccessState.HOST_KEY_UNKNOWN


class HostKeyMismatchError(TransportError):
    """The system's host key differs from the one in known_hosts."""

    state = AccessState.HOST_KEY_MISMATCH


class TransportTimeoutError(TransportError):
    """Connecting or running the command took longer than the configured timeout."""

    state = AccessState.TIMED_OUT


class JumpHostUnreachableError(TransportError):
    """A jump host, or the Proxmox node that a guest is reached through, did not accept the connection."""

    state = AccessState.JUMP_HOST_UNREACHABLE


class AgentMissingError(TransportError):
    """The VM has no QEMU guest agent configured, or the agent is not running in the guest."""

    state = AccessState.AGENT_MISSING


class PermissionDeniedError(TransportError):
    """The API token or Kubernetes identity lacks the privilege that the command needs."""

    state = AccessState.PERMISSION_DENIED


class NotFoundError(TransportError):
    """The container, VM or pod that the inventory names does not exist."""

    state = AccessState.NOT_FOUND


class Transport(Protocol):
    """An open connection to one system."""

    system: str

    def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """Run ``argv`` and return its exit code and output; raise TransportError when it cannot run."""
        ...

    def close(self) -> None: ...


def shell_command(argv: Sequence[str]) -> str:
    """Quote an argument list into one POSIX shell command line."""
    if not argv:
        raise ValueError("an empty argument list is not a command")
    return " ".join(shlex.quote(arg) for arg in argv)


def shell_script(script: str, *args: str) -> list[str]:
    """Return the argument list that runs a fixed script of ours with ``/bin/sh -c``.

    The script text must come from this package, never from a document. Values
    from documents go in ``args`` and reach the script as ``$1``, ``$2``, ...
    """
    return ["/bin/sh", "-c", script, "prep-assets", *args]
