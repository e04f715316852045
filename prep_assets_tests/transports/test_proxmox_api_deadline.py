"""The command timeout of the qm-api transport bounds every API request, not only the polls.

fakepve responds at once, so a wrapper of its guest agent handler delays the
response of one endpoint until the test ends. The transport's own per-request
timeout is set far above the command timeout, so only the command deadline
can end a stalled request in time.
"""

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from prep_assets.models import AccessState
from prep_assets.transports.base import TransportTimeoutError
from prep_assets.transports.proxmox import ProxmoxApiEndpoint, QmApiTransport, parse_api_token
from prep_assets_tests.fake_pve import ServedPve

pytestmark = pytest.mark.integration

TOKEN_ID = "prep@pve!check"
TOKEN_SECRET = "5d0e8f5c-7d0b-4c53-9a8e-0f3c2b1a9d77"
VMID = 205
COMMAND_TIMEOUT = 2.0
REQUEST_TIMEOUT = 30.0
# Maximum time that a stalled response waits for the test to end.
STALL_SECONDS = 60.0
STALL_POLL_SECONDS = 0.05


class StalledEndpoint:
    """Which guest agent endpoint of fakepve stalls, and the event that ends every stall."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.release = threading.Event()


@pytest.fixture
def stalled(fake_pve: ServedPve, monkeypatch: pytest.MonkeyPatch) -> Iterator[StalledEndpoint]:
    pve = fake_pve.pve
    pve.apitokens[TOKEN_ID] = TOKEN_SECRET
    vm = pve.add_vm(VMID, "command-hangs", node="pve1", status="running", config={"agent": "1"})
    vm.agent = {}
    pve.never_exits.add(VMID)
    pve.grant(TOKEN_ID, f"/vms/{VMID}", "VM.Audit", "VM.GuestAgent.Unrestricted")

    stall = StalledEndpoint()
    agent_call = pve._agent_call

    async def stalling_agent_call(match: Any, values: dict[str, Any]) -> Any:
        if match.template.rsplit("/", 1)[1] == stall.name:
            # Polls the event, because it is set from the test's thread and
            # not from fakepve's event loop.
            waited = 0.0
            while not stall.release.is_set() and waited < STALL_SECONDS:
                await asyncio.sleep(STALL_POLL_SECONDS)
                waited += STALL_POLL_SECONDS
        return await agent_call(match, values)

    monkeypatch.setattr(pve, "_agent_call", stalling_agent_call)
    try:
        yield stall
    finally:
        stall.release.set()


def api_transport(served: ServedPve, request_timeout: float = REQUEST_TIMEOUT) -> QmApiTransport:
    endpoint = ProxmoxApiEndpoint(
        host="127.0.0.1",
        port=served.port,
        verify=served.cafile,
        token=parse_api_token(f"{TOKEN_ID}={TOKEN_SECRET}"),
    )
    return QmApiTransport("vm205", endpoint, "pve1", VMID, request_timeout=request_timeout)


def timed_failure(transport: QmApiTransport, timeout: float) -> tuple[TransportTimeoutError, float]:
    started = time.monotonic()
    try:
        with pytest.raises(TransportTimeoutError) as caught:
            transport.run(["true"], timeout)
    finally:
        transport.close()
    return caught.value, time.monotonic() - started


def test_stalled_status_poll_bounded(fake_pve: ServedPve, stalled: StalledEndpoint):
    stalled.name = "exec-status"

    error, elapsed = timed_failure(api_transport(fake_pve), COMMAND_TIMEOUT)

    assert error.state is AccessState.TIMED_OUT
    assert error.message.startswith(
        f"the Proxmox API at https://127.0.0.1:{fake_pve.port} did not answer the exec-status "
        f"request for VM {VMID} (guest agent pid "
    ), error.message
    assert f"before the command timeout of {COMMAND_TIMEOUT:g} s passed" in error.message
    # A correctness bound with a generous margin, not a benchmark.
    assert elapsed < COMMAND_TIMEOUT + 2


def test_stalled_exec_request_bounded(fake_pve: ServedPve, stalled: StalledEndpoint):
    stalled.name = "exec"

    error, elapsed = timed_failure(api_transport(fake_pve), COMMAND_TIMEOUT)

    assert error.state is AccessState.TIMED_OUT
    assert error.message.startswith(
        f"the Proxmox API at https://127.0.0.1:{fake_pve.port} did not answer the exec "
        f"request for VM {VMID} before the command timeout of {COMMAND_TIMEOUT:g} s passed"
    ), error.message
    assert elapsed < COMMAND_TIMEOUT + 2


def test_request_timeout_below_deadline_kept(fake_pve: ServedPve, stalled: StalledEndpoint):
    stalled.name = "exec-status"

    error, elapsed = timed_failure(api_transport(fake_pve, request_timeout=1.0), 10.0)

    assert error.message.startswith(
        f"the Proxmox API at https://127.0.0.1:{fake_pve.port} did not answer within 1 s"
    ), error.message
    assert elapsed < 1 + 2
