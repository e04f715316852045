"""Open the right transport for a system from its inventory entry and credential pointers.

Secrets are read from their pointers here, when the connection is opened, and
go straight to the transport; they are never stored in a result.

How each access method is opened:

- ``local``: a child process of prep-assets.
- ``ssh``: paramiko, with HostName, User, Port, IdentityFile and ProxyJump from
  the ssh_config file filling what the inventory row and its access pattern
  leave empty. The Jump column (or ProxyJump) lists hops, first hop first. Each
  hop is a system name of the inventory, a Host alias of the ssh_config file or
  ``[user@]host[:port]``.
- ``pct`` and ``qm``: SSH (or ``local``) to the Proxmox node that the ``node``
  attribute or the Jump column names, which must be a system of the inventory.
- ``qm-api``: the Proxmox VE API at that node's address, with the API token
  that the system's Credentials names.
- ``kubectl``: the kubernetes client with the kubeconfig that the system's
  Credentials names, into the pod named by the ``pod`` attribute, or onto the
  node named by ``node`` through a debug pod when debug pods are enabled.
"""

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import ApiClient
from kubernetes.config import new_client_from_config, new_client_from_config_dict
from kubernetes.config.config_exception import ConfigException

from prep_assets.checks.runner import SetupError
from prep_assets.inventory.credentials import (
    CredentialKind,
    CredentialPointer,
    resolve_secret,
)
from prep_assets.inventory.errors import CredentialError
from prep_assets.inventory.markdown import parse_yes_no
from prep_assets.models import AccessMethod, System
from prep_assets.transports.base import Transport
from prep_assets.transports.kubernetes import (
    DEFAULT_DEBUG_IMAGE,
    DEFAULT_NAMESPACE,
    KubernetesExecTransport,
    KubernetesNodeTransport,
)
from prep_assets.transports.local import LocalTransport
from prep_assets.transports.proxmox import (
    DEFAULT_API_PORT,
    PctTransport,
    ProxmoxApiEndpoint,
    QmApiTransport,
    QmGuestTransport,
    parse_api_token,
    parse_vmid,
    proxmox_node_of,
)
from prep_assets.transports.ssh import DEFAULT_SSH_PORT, SshTarget, SshTransport
from prep_assets.transports.ssh_config import (
    DEFAULT_SSH_CONFIG,
    SshConfig,
    SshConfigError,
    parse_hop,
    split_jump_list,
)

logger = logging.getLogger(__name__)

# A key's passphrase is the ssh-key-passphrase row named after the key with this suffix.
PASSPHRASE_SUFFIX = "-passphrase"
DEFAULT_SSH_USER = "root"
# More hops than this is almost certainly a loop through ssh_config aliases.
MAX_JUMP_HOPS = 8
DEFAULT_DEBUG_POD_STARTUP_SECONDS = 60.0

SshKey = tuple[str | None, str | None]


def pointer_to_dict(pointer: CredentialPointer) -> dict[str, str]:
    """Return the JSON form of a pointer stored with the inventory (no secret, only where it is)."""
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
    """Callable that opens a transport for a system; raises SetupError for a configuration problem.

    ``systems`` are all systems of the inventory, so Jump columns and Proxmox
    nodes can name them. ``ssh_config`` is the path of an OpenSSH client
    configuration: None reads ``~/.ssh/config`` when it exists, "" reads none,
    and any other path must exist. ``allow_agent`` lets SSH connections use
    the keys of a running ssh-agent. ``kubernetes_debug_pods`` allows node-level
    checks of Kubernetes nodes, which create a privileged pod on the node.
    """

    def __init__(
        self,
        credentials: Mapping[str, Mapping[str, Any]],
        *,
        known_hosts: str,
        timeout: float,
        systems: Iterable[System] = (),
        ssh_config: str | None = None,
        allow_agent: bool = False,
        kubernetes_debug_pods: bool = False,
        debug_pod_image: str = DEFAULT_DEBUG_IMAGE,
        debug_pod_startup_timeout: float = DEFAULT_DEBUG_POD_STARTUP_SECONDS,
    ) -> None:
        self.pointers = {name: pointer_from_dict(data) for name, data in credentials.items()}
        self.known_hosts = str(Path(known_hosts).expanduser())
        self.timeout = timeout
        self.systems = {system.name: system for system in systems}
        self.allow_agent = allow_agent
        self.kubernetes_debug_pods = kubernetes_debug_pods
        self.debug_pod_image = debug_pod_image
        self.debug_pod_startup_timeout = debug_pod_startup_timeout
        self._ssh_config_error: str | None = None
        try:
            if ssh_config is None:
                self.ssh_config = SshConfig.load(DEFAULT_SSH_CONFIG)
            else:
                self.ssh_config = SshConfig.load(ssh_config, required=bool(ssh_config))
        except SshConfigError as error:
            # Reported by every system that needs SSH, so the other systems are still checked.
            logger.error("cannot use the ssh_config file: %s", error)
            self._ssh_config_error = str(error)
            self.ssh_config = SshConfig(None, None)

    def __call__(self, system: System) -> Transport:
        method = system.access
        if method is AccessMethod.LOCAL:
            return LocalTransport(system.name)
        if method is AccessMethod.SSH:
            return SshTransport(system.name, self.ssh_target(system))
        if method is AccessMethod.PCT:
            node, label = self._node_transport(system)
            return PctTransport(system.name, node, label, self._vmid(system))
        if method is AccessMethod.QM:
            node, label = self._node_transport(system)
            return QmGuestTransport(system.name, node, label, self._vmid(system))
        if method is AccessMethod.QM_API:
            return self._qm_api_transport(system)
        if method is AccessMethod.KUBECTL:
            return self._kubernetes_transport(system)
        raise SetupError(
            f"access method {method.value!r} of {system.name} runs no command, so no transport "
            "is opened for it"
        )

    # SSH

    def ssh_target(self, system: System) -> SshTarget:
        """Return the SSH target of a system, with its jump hosts resolved."""
        if self._ssh_config_error is not None:
            raise SetupError(self._ssh_config_error)
        if not system.address:
            raise SetupError(
                f"{system.name} is reached over SSH but has no address in the inventory"
            )
        return self._target(
            name=system.name,
            alias=system.address,
            user=system.user,
            port=system.port,
            key=self._ssh_key(system.credentials, system.name),
            jump=system.jump,
            fallback_key=(None, None),
            trail=(system.name,),
        )

    def _target(
        self,
        *,
        name: str,
        alias: str,
        user: str | None,
        port: int | None,
        key: SshKey,
        jump: str | None,
        fallback_key: SshKey,
        trail: tuple[str, ...],
    ) -> SshTarget:
        """Build a target from inventory values, filling the gaps from the ssh_config file.

        ``fallback_key`` is used when neither the inventory nor ssh_config
        names a key, so jump hosts use the key of the system behind them.
        """
        try:
            config = self.ssh_config.lookup(alias)
        except SshConfigError as error:
            raise SetupError(str(error)) from None
        if key[0] is None:
            identity = next((path for path in config.identity_files if Path(path).exists()), None)
            key = (identity, None) if identity is not None else fallback_key
        jump_entries = split_jump_list(jump) if jump else list(config.proxy_jump)
        return SshTarget(
            host=config.hostname,
            port=port or config.port or DEFAULT_SSH_PORT,
            user=user or config.user or DEFAULT_SSH_USER,
            key_path=key[0],
            key_passphrase=key[1],
            known_hosts_path=self.known_hosts,
            connect_timeout=self.timeout,
            command_timeout=self.timeout,
            allow_agent=self.allow_agent,
            jumps=self._hops(jump_entries, key, trail),
            name=name,
        )

    def _hops(
        self, entries: Sequence[str], fallback_key: SshKey, trail: tuple[str, ...]
    ) -> tuple[SshTarget, ...]:
        """Resolve a jump list; the first hop's own jump hosts come before it, as in OpenSSH."""
        hops: list[SshTarget] = []
        for index, entry in enumerate(entries):
            if entry in trail:
                raise SetupError(
                    f"jump hosts form a loop: {' -> '.join((*trail, entry))}; fix the Jump "
                    "column or the ProxyJump lines of the ssh_config file"
                )
            if len(trail) > MAX_JUMP_HOPS:
                raise SetupError(
                    f"more than {MAX_JUMP_HOPS} jump hosts for {trail[0]}: {' -> '.join(trail)}"
                )
            hop = self._hop(entry, fallback_key, (*trail, entry))
            if index == 0:
                hops.extend(hop.jumps)
            # OpenSSH ignores the ProxyJump of every hop but the first one, and so does this.
            hops.append(replace(hop, jumps=()))
        return tuple(hops)

    def _hop(self, entry: str, fallback_key: SshKey, trail: tuple[str, ...]) -> SshTarget:
        system = self.systems.get(entry)
        if system is not None:
            if not system.address:
                raise SetupError(
                    f"jump host {entry} is a system of the inventory without an address"
                )
            return self._target(
                name=system.name,
                alias=system.address,
                user=system.user,
                port=system.port,
                key=self._ssh_key(system.credentials, system.name),
                jump=system.jump,
                fallback_key=fallback_key,
                trail=trail,
            )
        try:
            spec = parse_hop(entry)
        except ValueError as error:
            raise SetupError(str(error)) from None
        return self._target(
            name=spec.host,
            alias=spec.host,
            user=spec.user,
            port=spec.port,
            key=(None, None),
            jump=None,
            fallback_key=fallback_key,
            trail=trail,
        )

    def _ssh_key(self, credentials: str | None, owner: str) -> SshKey:
        if not credentials:
            return None, None
        pointer = self._pointer(credentials, owner)
        if pointer.kind is not CredentialKind.SSH_KEY or pointer.scheme != "file":
            raise SetupError(
                f"credential {pointer.name!r} of {owner} must be an ssh-key kept in a file"
            )
        passphrase = None
        passphrase_pointer = self.pointers.get(pointer.name + PASSPHRASE_SUFFIX)
        if passphrase_pointer is not None:
            passphrase = self._secret(passphrase_pointer)
        return str(Path(pointer.target).expanduser()), passphrase

    # Proxmox

    def _proxmox_node(self, system: System) -> System:
        node_name = proxmox_node_of(system)
        if not node_name:
            raise SetupError(
                f"{system.name} uses {system.access.value} but names no Proxmox node; add a "
                "Node column with the node's name in the inventory, or name it in the Jump column"
            )
        node = self.systems.get(node_name)
        if node is None:
            raise SetupError(
                f"Proxmox node {node_name!r} of {system.name} is not a system of the inventory; "
                "add a row for the node with its address and ssh access"
            )
        return node

    def _node_transport(self, system: System) -> tuple[Transport, str]:
        node = self._proxmox_node(system)
        if node.access is AccessMethod.LOCAL:
            return LocalTransport(system.name), node.name
        if node.access is AccessMethod.SSH:
            return SshTransport(system.name, self.ssh_target(node)), node.name
        raise SetupError(
            f"Proxmox node {node.name} of {system.name} has access {node.access.value}; pct and "
            "qm run over ssh or local access to the node"
        )

    def _vmid(self, system: System) -> int:
        try:
            return parse_vmid(system.attributes.get("vmid", ""))
        except ValueError as error:
            raise SetupError(f"{system.name}: {error}") from None

    def _qm_api_transport(self, system: System) -> QmApiTransport:
        node = self._proxmox_node(system)
        if not node.address:
            raise SetupError(
                f"Proxmox node {node.name} of {system.name} has no address for the API"
            )
        try:
            port = int(node.attributes.get("api-port", DEFAULT_API_PORT))
            verify_tls = parse_yes_no(node.attributes.get("api-tls-verify", "yes"))
        except ValueError:
            raise SetupError(
                f"Proxmox node {node.name}: api-port must be a port number and api-tls-verify "
                "yes or no"
            ) from None
        verify: bool | str = verify_tls
        if verify_tls and node.attributes.get("api-ca"):
            verify = str(Path(node.attributes["api-ca"]).expanduser())
        if not verify_tls:
            logger.warning(
                "%s: TLS verification of the Proxmox API of node %s is disabled by api-tls-verify",
                system.name,
                node.name,
            )

        if not system.credentials:
            raise SetupError(
                f"{system.name} uses qm-api but names no credential; name an api-token row of "
                "the credentials map in its Credentials column"
            )
        pointer = self._pointer(system.credentials, system.name)
        if pointer.kind is not CredentialKind.API_TOKEN:
            raise SetupError(f"credential {pointer.name!r} of {system.name} must be an api-token")
        try:
            token = parse_api_token(self._secret(pointer))
        except ValueError as error:
            raise SetupError(f"credential {pointer.name!r}: {error}") from None

        endpoint = ProxmoxApiEndpoint(host=node.address, port=port, verify=verify, token=token)
        return QmApiTransport(
            system.name,
            endpoint,
            node.attributes.get("pve-node", node.name),
            self._vmid(system),
            request_timeout=self.timeout,
        )

    # Kubernetes

    def _kubernetes_transport(self, system: System) -> Transport:
        if not system.credentials:
            raise SetupError(
                f"{system.name} uses kubectl but names no credential; name a kubeconfig row of "
                "the credentials map in its Credentials column"
            )
        pointer = self._pointer(system.credentials, system.name)
        if pointer.kind is not CredentialKind.KUBECONFIG:
            raise SetupError(f"credential {pointer.name!r} of {system.name} must be a kubeconfig")
        context = system.attributes.get("context")
        namespace = system.attributes.get("namespace", DEFAULT_NAMESPACE)

        def open_client() -> ApiClient:
            return self._kubernetes_client(pointer, context)

        pod = system.attributes.get("pod")
        if pod:
            return KubernetesExecTransport(
                system.name,
                open_client,
                namespace,
                pod,
                system.attributes.get("container"),
                request_timeout=self.timeout,
            )
        node = system.attributes.get("node")
        if not node:
            raise SetupError(
                f"{system.name} uses kubectl but has neither a pod nor a node attribute"
            )
        if not self.kubernetes_debug_pods:
            raise SetupError(
                f"{system.name} is a Kubernetes node; checking it creates a privileged debug pod "
                "on the node, which is off. Enable kubernetes debug pods in the access settings, "
                "or name a pod in the inventory instead"
            )
        return KubernetesNodeTransport(
            system.name,
            open_client,
            namespace,
            node,
            self.debug_pod_image,
            request_timeout=self.timeout,
            startup_timeout=self.debug_pod_startup_timeout,
        )

    def _kubernetes_client(self, pointer: CredentialPointer, context: str | None) -> ApiClient:
        try:
            if pointer.scheme == "file":
                return new_client_from_config(
                    config_file=str(Path(pointer.target).expanduser()),
                    context=context,
                    persist_config=False,
                )
            config = yaml.safe_load(self._secret(pointer))
            return new_client_from_config_dict(config, context=context, persist_config=False)
        except ConfigException as error:
            # The client's messages describe the structure, such as a missing context.
            raise SetupError(
                f"kubeconfig {pointer.name!r} cannot be used"
                f"{f' with context {context!r}' if context else ''}: {str(error)[:200]}"
            ) from None
        except (yaml.YAMLError, OSError, TypeError, ValueError, AttributeError) as error:
            # These messages may quote the file, which may hold a token, so only the type is shown.
            raise SetupError(
                f"kubeconfig {pointer.name!r} cannot be read: {type(error).__name__}; check "
                "that it is a valid kubeconfig file"
            ) from None

    # Credentials

    def _pointer(self, name: str, owner: str) -> CredentialPointer:
        pointer = self.pointers.get(name)
        if pointer is None:
            raise SetupError(
                f"{owner} names credential {name!r}, which is not in "
                "docs/reference/credentials-map.md"
            )
        return pointer

    def _secret(self, pointer: CredentialPointer) -> str:
        try:
            return resolve_secret(pointer).reveal()
        except CredentialError as error:
            raise SetupError(str(error)) from error
