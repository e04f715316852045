"""Read an OpenSSH client configuration (``~/.ssh/config``) with paramiko.SSHConfig.

Only the settings that decide where and as whom to connect are used:
HostName, User, Port, IdentityFile and ProxyJump. Host key checking is never
relaxed: StrictHostKeyChecking, UserKnownHostsFile and the like are ignored,
and every hop is checked against the known_hosts file that prep-assets is
configured with.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import paramiko

from prep_assets.inventory.access_patterns import split_address, validate_user

logger = logging.getLogger(__name__)

DEFAULT_SSH_CONFIG = "~/.ssh/config"


class SshConfigError(Exception):
    """The ssh_config file is unreadable or one of its values is invalid."""


@dataclass(frozen=True)
class HostConfig:
    """Settings that the ssh_config file gives for one Host alias; None where it gives none."""

    alias: str
    hostname: str
    user: str | None = None
    port: int | None = None
    # IdentityFile values in file order, with ~ expanded.
    identity_files: tuple[str, ...] = ()
    # ProxyJump hops in order, first hop first; empty for none.
    proxy_jump: tuple[str, ...] = ()


@dataclass(frozen=True)
class HopSpec:
    """One ``[user@]host[:port]`` entry of a ProxyJump list or of the inventory's Jump column."""

    host: str
    user: str | None = None
    port: int | None = None


class SshConfig:
    """The parsed ssh_config file, or an empty configuration when there is none."""

    def __init__(self, config: paramiko.SSHConfig | None, path: str | None) -> None:
        self._config = config
        self.path = path

    @classmethod
    def load(cls, path: str | None, required: bool = False) -> "SshConfig":
        """Parse ``path``; a missing file is an empty configuration unless ``required``.

        Raises SshConfigError for an unreadable or invalid file, and for a
        missing one when ``required`` is set.
        """
        if not path:
            return cls(None, None)
        expanded = Path(path).expanduser()
        if not expanded.exists():
            if required:
                raise SshConfigError(f"ssh_config file {expanded} does not exist")
            logger.debug("no ssh_config file at %s, using none", expanded)
            return cls(None, str(expanded))
        try:
            config = paramiko.SSHConfig.from_path(str(expanded))
        except OSError as error:
            raise SshConfigError(
                f"cannot read ssh_config file {expanded}: {error.strerror or error}"
            ) from None
        except (paramiko.ConfigParseError, ValueError) as error:
            raise SshConfigError(f"ssh_config file {expanded} is invalid: {error}") from None
        return cls(config, str(expanded))

    def lookup(self, alias: str) -> HostConfig:
        """Return the settings for ``alias``; HostName defaults to the alias itself."""
        if self._config is None:
            return HostConfig(alias=alias, hostname=alias)
        values = self._config.lookup(alias)
        port_text = values.get("port")
        port: int | None = None
        if port_text is not None:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise SshConfigError(
                    f"ssh_config file {self.path}: invalid Port {port_text!r} for Host {alias}"
                )
            port = int(port_text)
        proxy_jump_text = values.get("proxyjump", "")
        proxy_jump: tuple[str, ...] = ()
        if proxy_jump_text and proxy_jump_text.lower() != "none":
            proxy_jump = tuple(entry.strip() for entry in proxy_jump_text.split(","))
        return HostConfig(
            alias=alias,
            hostname=values.get("hostname", alias),
            user=values.get("user"),
            port=port,
            identity_files=tuple(
                str(Path(path).expanduser()) for path in values.get("identityfile", [])
            ),
            proxy_jump=proxy_jump,
        )


def parse_hop(value: str) -> HopSpec:
    """Parse ``[user@]host[:port]``, ``[user@][ipv6]:port`` or ``ssh://[user@]host[:port]``.

    Raises ValueError naming the value when it is not of that form.
    """
    text = value.strip()
    if text.startswith("ssh://"):
        text = text[len("ssh://") :].rstrip("/")
    user, at_sign, address = text.rpartition("@")
    try:
        if at_sign:
            validate_user(user)
        host, port = split_address(address)
    except ValueError:
        raise ValueError(
            f"invalid jump host {value!r}: expected [user@]host[:port], a Host alias of the "
            "ssh_config file or a system name of the inventory"
        ) from None
    return HopSpec(host=host, user=user if at_sign else None, port=port)


def split_jump_list(value: str) -> list[str]:
    """Split a comma-separated jump list into its entries, first hop first."""
    return [entry.strip() for entry in value.split(",") if entry.strip()]
