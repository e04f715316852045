"""Run commands in Proxmox VE guests: containers with ``pct exec``, VMs with ``qm guest exec``.

Three ways, chosen per system by its access method:

- ``pct``: SSH to the container's node, then ``pct exec VMID -- ARGV``. pct
  runs ``lxc-attach -- ARGV`` without a shell and exits with the command's
  exit code. When pct itself fails it exits with 255, because PVE CLI errors
  are Perl ``die`` calls (checked against pve-container's src/PVE/CLI/pct.pm).
- ``qm``: SSH to the VM's node, then ``qm guest exec VMID --timeout N -- ARGV``,
  which prints the agent's exec-status as JSON (``exitcode``, ``exited``,
  ``out-data``, ``err-data``, ``out-truncated``, ``err-truncated``, ``signal``)
  or, when N seconds pass first, "timeout reached, returning pid" on stderr
  and ``{"pid": N}`` (qemu-server's PVE/CLI/qm.pm).
- ``qm-api``: the Proxmox VE API through proxmoxer: POST
  ``/nodes/{node}/qemu/{vmid}/agent/exec`` with the command as a list, then GET
  ``agent/exec-status?pid=`` until ``exited`` or the deadline. Each request
  gets at most the time left before the deadline. The API token needs
  VM.GuestAgent.Unrestricted on the VM in Proxmox VE 9 (VM.Monitor in 8).

Argument vectors go to pct and qm as separate words after ``--``, so the SSH
transport's quoting (base.shell_command) is the only quoting, and the guest
runs the vector without a shell.
"""

import json
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from proxmoxer import ProxmoxAPI, ResourceException

from prep_assets.models import AccessMethod, CommandResult, System
from prep_assets.transports.base import (
    AgentMissingError,
    AuthenticationError,
    JumpHostUnreachableError,
    NotFoundError,
    PermissionDeniedError,
    Transport,
    TransportError,
    TransportTimeoutError,
    UnreachableError,
)

logger = logging.getLogger(__name__)

PROXMOX_GUEST_METHODS = frozenset({AccessMethod.PCT, AccessMethod.QM, AccessMethod.QM_API})
# Proxmox VE accepts guest IDs in this range (pve-vmid in the API schema).
VMID_MIN = 100
VMID_MAX = 999_999_999
DEFAULT_API_PORT = 8006

# Perl's die, which every PVE CLI error ends in, exits with 255.
PVE_CLI_ERROR_EXIT = 255
EXIT_COMMAND_NOT_FOUND = 127
# Shells report a command killed by signal N as 128 + N; qm reports the signal instead.
SIGNAL_EXIT_BASE = 128

# qm guest exec polls the agent once a second after starting Perl, so the SSH
# command gets this much longer than qm's own --timeout.
QM_CLI_OVERHEAD_SECONDS = 5.0
# Wait between two exec-status requests of the API path.
API_POLL_INTERVAL_SECONDS = 0.25
# The shortest timeout of one API request when the command deadline is near
# or past, because urllib3 rejects a timeout of 0 or less with ValueError.
MIN_API_REQUEST_TIMEOUT_SECONDS = 0.1

_CONFIG_MISSING = re.compile(r"Configuration file '[^']*' does not exist")
_VM_NOT_RUNNING = re.compile(r"\bVM \d+ (?:is )?not running")
_CT_NOT_RUNNING = re.compile(r"\bcontainer '?\d+'? not running|\bCT \d+ not running")
_AGENT_TIMEOUT = re.compile(r"got timeout")
_QM_TIMEOUT = "timeout reached, returning pid"


def proxmox_node_of(system: System) -> str | None:
    """Return the inventory name of the Proxmox node that a pct, qm or qm-api system runs on.

    The ``node`` attribute wins over the Jump column. Other access methods return None.
    """
    if system.access not in PROXMOX_GUEST_METHODS:
        return None
    return system.attributes.get("node") or system.jump


def parse_vmid(value: str) -> int:
    """Parse a Proxmox guest ID; raise ValueError naming the value."""
    text = value.strip()
    if not text.isascii() or not text.isdigit() or not VMID_MIN <= int(text) <= VMID_MAX:
        raise ValueError(
            f"invalid vmid {value!r}: expected a Proxmox guest ID from {VMID_MIN} to {VMID_MAX}"
        )
    return int(text)


@dataclass(frozen=True)
class ApiToken:
    """A Proxmox VE API token: ``user@realm!tokenid`` and its secret, kept out of ``repr``."""

    user: str
    token_name: str
    secret: str = field(repr=False)

    @property
    def token_id(self) -> str:
        return f"{self.user}!{self.token_name}"


_TOKEN_ID = re.compile(r"^([^\s@!=]+@[A-Za-z0-9._-]+)!([A-Za-z][A-Za-z0-9._-]*)$")


def parse_api_token(value: str) -> ApiToken:
    """Parse ``user@realm!tokenid=secret``, optionally written ``PVEAPIToken=user@realm!tokenid=secret``.

    Raise ValueError without quoting the value, because it contains the secret.
    """
    text = value.strip()
    if text.startswith("PVEAPIToken="):
        text = text[len("PVEAPIToken=") :]
    token_id, separator, secret = text.partition("=")
    match = _TOKEN_ID.match(token_id)
    if not separator or not secret or match is None:
        raise ValueError(
            "invalid Proxmox API token: expected user@realm!tokenid=secret, as in "
            "root@pam!prep=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee; the value is not shown "
            "because it contains the secret"
        )
    return ApiToken(user=match.group(1), token_name=match.group(2), secret=secret)


def through_node_error(error: TransportError, node_label: str) -> TransportError:
    """Return ``error`` of the node connection as an error of the guest, naming the node.

    An unreachable node becomes ``jump_host_unreachable``: the guest itself may be fine.
    """
    if isinstance(error, UnreachableError):
        return JumpHostUnreachableError(
            error.system, f"Proxmox node {node_label} unreachable: {error.message}"
        )
    # Every TransportError subclass takes (system, message), like the base class.
    return type(error)(error.system, f"Proxmox node {node_label}: {error.message}")


class _NodeCommandTransport:
    """Common part of pct and qm over SSH: run a wrapped command on the node."""

    tool = ""

    def __init__(self, system: str, node: Transport, node_label: str, vmid: int) -> None:
        self.system = system
        self.node = node
        self.node_label = node_label
        self.vmid = vmid

    def close(self) -> None:
        self.node.close()

    def _run_on_node(self, argv: Sequence[str], timeout: float) -> CommandResult:
        try:
            result = self.node.run(argv, timeout)
        except TransportError as error:
            raise through_node_error(error, self.node_label) from None
        if result.exit_code == EXIT_COMMAND_NOT_FOUND and not result.stdout:
            raise TransportError(
                self.system,
                f"Proxmox node {self.node_label} has no {self.tool} command "
                f"({result.stderr.strip()[:200]}); check that the node in the inventory is "
                "a Proxmox VE host and that its SSH user may run " + self.tool,
            )
        return result


class PctTransport(_NodeCommandTransport):
    """Run commands in an LXC container with ``pct exec`` on its Proxmox node."""

    tool = "pct"

    def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        if not argv:
            raise ValueError("an empty argument list is not a command")
        result = self._run_on_node(["pct", "exec", str(self.vmid), "--", *argv], timeout)
        if result.exit_code == PVE_CLI_ERROR_EXIT:
            error = self._classify(result.stderr)
            if error is not None:
                raise error
        return result

    def _classify(self, stderr: str) -> TransportError | None:
        text = stderr.strip()
        if _CONFIG_MISSING.search(text):
            return NotFoundError(
                self.system,
                f"container {self.vmid} does not exist on Proxmox node {self.node_label} "
                f"({text[:200]}); fix the vmid or node in the inventory, the container may "
                "have moved to another node",
            )
        if _CT_NOT_RUNNING.search(text):
            return UnreachableError(
                self.system,
                f"container {self.vmid} on Proxmox node {self.node_label} is not running; "
                f"start it with pct start {self.vmid}, or mark it unmanaged",
            )
        return None


class QmGuestTransport(_NodeCommandTransport):
    """Run commands in a VM with ``qm guest exec`` on its Proxmox node."""

    tool = "qm"

    def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        if not argv:
            raise ValueError("an empty argument list is not a command")
        agent_timeout = max(1, math.ceil(timeout))
        started = time.monotonic()
        command = ["qm", "guest", "exec", str(self.vmid), "--timeout", str(agent_timeout), "--"]
        result = self._run_on_node([*command, *argv], agent_timeout + QM_CLI_OVERHEAD_SECONDS)

        if result.exit_code != 0:
            error = classify_agent_error(
                self.system, self.vmid, self.node_label, result.stderr.strip()
            )
            if error is not None:
                raise error
            raise TransportError(
                self.system,
                f"qm guest exec on Proxmox node {self.node_label} exited with "
                f"{result.exit_code}: {result.stderr.strip()[:300]}",
            )
        status = self._parse_status(result)
        if not status.get("exited"):
            raise agent_command_timeout(self.system, self.vmid, agent_timeout, status.get("pid"))
        return command_result(self.system, self.vmid, status, time.monotonic() - started)

    def _parse_status(self, result: CommandResult) -> dict[str, Any]:
        try:
            status = json.loads(result.stdout)
        except ValueError:
            status = None
        if not isinstance(status, dict):
            raise TransportError(
                self.system,
                f"qm guest exec on Proxmox node {self.node_label} printed no JSON object: "
                f"{result.stdout.strip()[:200]!r} {result.stderr.strip()[:200]!r}",
            )
        if _QM_TIMEOUT in result.stderr:
            status["exited"] = 0
        return status


def classify_agent_error(
    system: str, vmid: int, node_label: str, text: str
) -> TransportError | None:
    """Map a Proxmox VE guest agent error message to its access error, with the fix.

    The messages are those of qemu-server's PVE/QemuServer/Agent.pm and
    PVE/API2/Qemu/Agent.pm. Return None for any other message.
    """
    if "No QEMU guest agent configured" in text:
        return AgentMissingError(
            system,
            f"VM {vmid} has no QEMU guest agent configured ({text[:200]}); enable it with "
            f"qm set {vmid} --agent enabled=1, install qemu-guest-agent in the VM and restart "
            "the VM",
        )
    if "QEMU guest agent is not running" in text:
        return AgentMissingError(
            system,
            f"the QEMU guest agent of VM {vmid} is not running; install and start it in the VM "
            "(apt install qemu-guest-agent, then systemctl enable --now qemu-guest-agent)",
        )
    if _AGENT_TIMEOUT.search(text):
        return TransportTimeoutError(
            system,
            f"the QEMU guest agent of VM {vmid} did not answer ({text[:200]}); check that "
            "qemu-guest-agent runs in the VM (systemctl status qemu-guest-agent) and that the "
            "VM is not frozen or overloaded",
        )
    if _VM_NOT_RUNNING.search(text):
        return UnreachableError(
            system,
            f"VM {vmid} on Proxmox node {node_label} is not running; start it with "
            f"qm start {vmid}, or mark it unmanaged",
        )
    if _CONFIG_MISSING.search(text):
        return NotFoundError(
            system,
            f"VM {vmid} does not exist on Proxmox node {node_label} ({text[:200]}); fix the "
            "vmid or node in the inventory, the VM may have moved to another node",
        )
    if "Permission check failed" in text:
        return PermissionDeniedError(
            system,
            f"Proxmox VE refused to run a command in VM {vmid} ({text[:200]}); grant "
            f"VM.GuestAgent.Unrestricted on /vms/{vmid} (Proxmox VE 9) or VM.Monitor "
            "(Proxmox VE 8)",
        )
    return None


def agent_command_timeout(
    system: str, vmid: int, seconds: float, pid: object
) -> TransportTimeoutError:
    return TransportTimeoutError(
        system,
        f"the command did not finish within {seconds:g} s in VM {vmid} (guest agent pid "
        f"{pid}); it keeps running in the guest. Raise the access timeout if the command is "
        "expected to take longer.",
    )


def command_result(
    system: str, vmid: int, status: dict[str, Any], duration: float
) -> CommandResult:
    """Turn an agent exec-status object into a CommandResult."""
    for stream in ("out", "err"):
        if status.get(f"{stream}-truncated"):
            logger.warning(
                "%s: the guest agent of VM %d cut the std%s of the command short",
                system,
                vmid,
                stream,
            )
    exit_code = status.get("exitcode")
    if exit_code is None:
        signal = status.get("signal")
        exit_code = SIGNAL_EXIT_BASE + int(signal) if signal is not None else -1
    return CommandResult(
        exit_code=int(exit_code),
        stdout=str(status.get("out-data") or ""),
        stderr=str(status.get("err-data") or ""),
        duration_seconds=duration,
    )


@dataclass(frozen=True)
class ProxmoxApiEndpoint:
    """Address, port, TLS verification and API token of the Proxmox VE API of one cluster."""

    host: str
    port: int = DEFAULT_API_PORT
    # A CA bundle path, True for the system's trust store, or False for no TLS verification.
    verify: bool | str = True
    token: ApiToken | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"


class QmApiTransport:
    """Run commands in a VM through the Proxmox VE API's guest agent endpoints.

    One requests session per transport keeps one HTTPS connection for all
    requests of a step. Nothing is logged that contains the token.
    """

    def __init__(
        self,
        system: str,
        endpoint: ProxmoxApiEndpoint,
        node: str,
        vmid: int,
        request_timeout: float,
        poll_interval: float = API_POLL_INTERVAL_SECONDS,
    ) -> None:
        if endpoint.token is None:
            raise ValueError(f"{system}: the Proxmox API endpoint has no token")
        self.system = system
        self.endpoint = endpoint
        self.node = node
        self.vmid = vmid
        self.request_timeout = request_timeout
        self.poll_interval = poll_interval
        self._api: ProxmoxAPI | None = None

    def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        if not argv:
            raise ValueError("an empty argument list is not a command")
        started = time.monotonic()
        deadline = started + timeout
        agent = self._client().nodes(self.node).qemu(self.vmid).agent
        request = "exec"
        request_timeout = self.request_timeout
        pid: int | None = None
        try:
            request_timeout = self._limit_next_request(deadline)
            answer = agent.exec.post(command=list(argv))
            pid = int(answer["pid"])
            request = "exec-status"
            while True:
                request_timeout = self._limit_next_request(deadline)
                status = agent("exec-status").get(pid=pid)
                if status.get("exited"):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise agent_command_timeout(self.system, self.vmid, timeout, pid)
                time.sleep(min(self.poll_interval, remaining))
        except ResourceException as error:
            raise self._api_error(error) from None
        except requests.exceptions.Timeout as error:
            if request_timeout < self.request_timeout:
                raise self._deadline_error(request, pid, timeout) from None
            raise self._request_error(error) from None
        except requests.RequestException as error:
            raise self._request_error(error) from None
        except (KeyError, TypeError, ValueError) as error:
            raise TransportError(
                self.system,
                f"the Proxmox API at {self.endpoint.url} sent an unexpected answer for VM "
                f"{self.vmid}: {type(error).__name__}: {error}",
            ) from None
        return command_result(self.system, self.vmid, status, time.monotonic() - started)

    def close(self) -> None:
        if self._api is not None:
            # proxmoxer keeps its requests session in the private _store; closing
            # it closes the HTTPS connection now instead of at garbage collection.
            session = getattr(self._api, "_store", {}).get("session")
            if isinstance(session, requests.Session):
                session.close()
            self._api = None

    def _client(self) -> ProxmoxAPI:
        if self._api is None:
            token = self.endpoint.token
            assert token is not None
            self._api = ProxmoxAPI(
                self.endpoint.host,
                port=self.endpoint.port,
                user=token.user,
                token_name=token.token_name,
                token_value=token.secret,
                verify_ssl=self.endpoint.verify,
                timeout=self.request_timeout,
                service="PVE",
            )
        return self._api

    def _limit_next_request(self, deadline: float) -> float:
        """Set the timeout of the next API request to the time left before ``deadline`` and return it.

        The timeout is never above ``request_timeout`` nor below
        MIN_API_REQUEST_TIMEOUT_SECONDS.
        """
        remaining = max(deadline - time.monotonic(), MIN_API_REQUEST_TIMEOUT_SECONDS)
        seconds = min(self.request_timeout, remaining)
        # NOTE: proxmoxer 2.x (read in 2.3.0) takes no timeout per call. Its
        # session reads the timeout from its auth object on every request, so
        # the timeout is set there. requests applies it to the connect and to
        # each read, so a server that trickles bytes can still take longer, and
        # not to resolving the endpoint's host name: an IP address avoids that.
        self._client()._store["session"].auth.timeout = seconds
        return seconds

    def _deadline_error(
        self, request: str, pid: int | None, timeout: float
    ) -> TransportTimeoutError:
        """Return the error for an API request that was still unanswered at the command deadline."""
        message = (
            f"the Proxmox API at {self.endpoint.url} did not answer the {request} request for "
            f"VM {self.vmid}"
        )
        if pid is not None:
            message += f" (guest agent pid {pid})"
        message += f" before the command timeout of {timeout:g} s passed"
        if pid is not None:
            message += ", so the command may still run in the guest"
        return TransportTimeoutError(
            self.system,
            f"{message}. Check that pveproxy runs on the node and is not overloaded, or raise "
            "the access timeout.",
        )

    def _api_error(self, error: ResourceException) -> TransportError:
        text = str(error.content or "").strip()
        status = error.status_code
        token = self.endpoint.token
        token_id = token.token_id if token is not None else "-"
        if status == 401:
            return AuthenticationError(
                self.system,
                f"the Proxmox API at {self.endpoint.url} rejected API token {token_id} "
                f"({text[:200]}); check the token and that it has not expired",
            )
        if status == 403:
            return PermissionDeniedError(
                self.system,
                f"API token {token_id} may not run commands in VM {self.vmid} ({text[:200]}). "
                f"Proxmox VE 9 needs VM.GuestAgent.Unrestricted on /vms/{self.vmid} "
                "(Proxmox VE 8: VM.Monitor), for example: pveum role add PrepAssets --privs "
                '"VM.Audit VM.GuestAgent.Audit VM.GuestAgent.Unrestricted", then pveum acl '
                f"modify /vms/{self.vmid} --tokens '{token_id}' --roles PrepAssets; a token "
                "with privilege separation needs the grant on the token itself",
            )
        if status == 595:
            return UnreachableError(
                self.system,
                f"Proxmox node {self.node} is offline for the cluster ({text[:200]}); check "
                "the node and its cluster membership",
            )
        classified = classify_agent_error(self.system, self.vmid, self.node, text)
        if classified is not None:
            return classified
        return TransportError(
            self.system,
            f"the Proxmox API at {self.endpoint.url} answered {status} for VM {self.vmid}: "
            f"{text[:300]}",
        )

    def _request_error(self, error: requests.RequestException) -> TransportError:
        url = self.endpoint.url
        if isinstance(error, requests.exceptions.SSLError):
            where = (
                f"CA bundle {self.endpoint.verify}"
                if isinstance(self.endpoint.verify, str)
                else "the system's trust store"
            )
            return TransportError(
                self.system,
                f"TLS certificate of {url} could not be verified against {where}: {error}. "
                "Set api-ca on the node's inventory row to the cluster's CA "
                "(/etc/pve/pve-root-ca.pem), or set api-tls-verify: no to disable the check "
                "for this cluster",
            )
        if isinstance(error, requests.exceptions.Timeout):
            return TransportTimeoutError(
                self.system,
                f"the Proxmox API at {url} did not answer within {self.request_timeout:g} s; "
                "check that pveproxy runs on the node and is not overloaded",
            )
        if isinstance(error, requests.exceptions.ConnectionError):
            return UnreachableError(
                self.system,
                f"could not connect to the Proxmox API at {url}: {error}; check the node's "
                "address and api-port in the inventory and that pveproxy runs",
            )
        return TransportError(self.system, f"request to the Proxmox API at {url} failed: {error}")
