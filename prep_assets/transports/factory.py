"""Open the right transport for a system from its inventory entry and credential pointers.

Secrets are read from their pointers here, when the connection is opened, and
go straight to the transport; they are never stored in a result.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prep_assets.checks.runner import SetupError
from prep_assets.inventory.credentials import (
    CredentialKind,
    CredentialPointer,
    resolve_secret,
)
from prep_assets.inventory.errors import CredentialError
from prep_assets.models import AccessMethod, System
from prep_assets.transports.base import Transport
from prep_assets.transports.local import LocalTransport
from prep_assets.transports.ssh import SshTarget, SshTransport

# A key's passphrase is the ssh-key-passphrase row named after the key with this suffix.
PASSPHRASE_SUFFIX = "-passphrase"
DEFAULT_SSH_USER = "root"


def pointer_to_dict(pointer: CredentialPointer) -> dict[str, str]:
    """The JSON form of a pointer stored with the inventory (no secret, only where it is)."""
    return {
        "name": pointer.name,
        "kind": pointer.kind.value,
        "scheme": pointer.scheme,
        "target": pointer.target,
    }


def pointer_from_dict(data: Mapping[str, Any]) -> CredentialPointer:
    return CredentialPointer(
        name=data["name"],
        kind=CredentialKind(data["kind"]),
        scheme=data["scheme"],
        target=data["target"],
    )


class TransportFactory:
    """Callable that opens a transport for a system; raises SetupError for a configuration problem."""

    def __init__(
        self,
        credentials: Mapping[str, Mapping[str, Any]],
        *,
        known_hosts: str,
        timeout: float,
    ) -> None:
        self.pointers = {name: pointer_from_dict(data) for name, data in credentials.items()}
        self.known_hosts = str(Path(known_hosts).expanduser())
        self.timeout = timeout

    def __call__(self, system: System) -> Transport:
        if system.access is AccessMethod.LOCAL:
            return LocalTransport(system.name)
        if system.access is AccessMethod.SSH:
            return SshTransport(system.name, self._ssh_target(system))
        raise SetupError(
            f"access method {system.access.value!r} of {system.name} is not supported yet; "
            "use local, ssh, tcp or none"
        )

    def _ssh_target(self, system: System) -> SshTarget:
        if not system.address:
            raise SetupError(f"{system.name} uses ssh but has no address in the inventory")
        key_path, passphrase = self._ssh_key(system)
        return SshTarget(
            host=system.address,
            port=system.port or 22,
            user=system.user or DEFAULT_SSH_USER,
            key_path=key_path,
            key_passphrase=passphrase,
            known_hosts_path=self.known_hosts,
            connect_timeout=self.timeout,
            command_timeout=self.timeout,
        )

    def _ssh_key(self, system: System) -> tuple[str | None, str | None]:
        if not system.credentials:
            return None, None
        pointer = self.pointers.get(system.credentials)
        if pointer is None:
            raise SetupError(
                f"{system.name} names credential {system.credentials!r}, which is not in "
                "docs/reference/credentials-map.md"
            )
        if pointer.kind is not CredentialKind.SSH_KEY or pointer.scheme != "file":
            raise SetupError(
                f"credential {pointer.name!r} of {system.name} must be an ssh-key kept in a file"
            )
        passphrase = None
        passphrase_pointer = self.pointers.get(pointer.name + PASSPHRASE_SUFFIX)
        if passphrase_pointer is not None:
            try:
                passphrase = resolve_secret(passphrase_pointer).reveal()
            except CredentialError as error:
                raise SetupError(str(error)) from error
        return str(Path(pointer.target).expanduser()), passphrase
