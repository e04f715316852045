"""fakepve (a fake Proxmox VE API on aiohttp) extended so that its guest agents run commands.

What fakepve 0.5.0 does by itself and the tests use: API token logins,
per-path permissions from its PVE 9 schema (``agent/exec`` needs
VM.GuestAgent.Unrestricted), "QEMU guest agent is not running" for a VM
without an agent, and ``agent_hangs``, which answers "VM N qmp command
'guest-ping' failed - got timeout".

What ``ExecutingPve`` adds, because fakepve only records exec requests and
answers every exec-status with an exited command without output:

- ``guest_paths``: a VM listed here runs each exec command for real, without a
  shell, as the unprivileged SSH test user, with the given bin dir as its whole
  PATH. exec-status reports ``exited`` 0 while it runs, then its exit code,
  ``out-data`` and ``err-data`` (omitted when empty, as the agent does).
- ``never_exits``: exec on these VMs hands out a pid whose exec-status never
  reports ``exited``, like a command that hangs in the guest.
- A VM whose config has no ``agent`` option answers "No QEMU guest agent
  configured", and a stopped VM "VM N is not running", in the order of
  qemu-server's PVE/QemuServer/Agent.pm, where fakepve answers "QEMU guest
  agent is not running" for both.
"""

import asyncio
import os
import pwd
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakepve import FakePve, PveError
from fakepve.certs import make_cert

from prep_assets_tests.sshhosts import TEST_USER, ensure_test_user

START_TIMEOUT_SECONDS = 30
# Seconds a guest command gets to end after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 2.0
HOST = "127.0.0.1"


@dataclass
class _Execution:
    process: asyncio.subprocess.Process
    stdout: bytes = b""
    stderr: bytes = b""
    finished: bool = False


class ExecutingPve(FakePve):
    """FakePve whose listed guests run agent exec commands; see the module docstring."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.guest_paths: dict[int, str] = {}
        self.never_exits: set[int] = set()
        self._executions: dict[tuple[int, int], _Execution] = {}
        self._next_pid = 5000

    async def _agent_call(self, match: Any, values: dict[str, Any]) -> Any:
        vm = self.find(values["node"], values["vmid"])
        command = match.template.rsplit("/", 1)[1]
        if "agent" not in vm.config:
            raise PveError(500, "No QEMU guest agent configured")
        if vm.status != "running":
            raise PveError(500, f"VM {vm.vmid} is not running")
        running = vm.agent is not None and not vm.agent_hangs
        if running and command == "exec" and vm.vmid in self.never_exits:
            self._next_pid += 1
            return {"pid": self._next_pid}
        if running and command == "exec" and vm.vmid in self.guest_paths:
            return {"pid": await self._start(vm.vmid, list(values["command"]))}
        if running and command == "exec-status":
            key = (vm.vmid, int(values["pid"]))
            if vm.vmid in self.never_exits:
                return {"exited": 0}
            if key in self._executions:
                return self._status(key)
        return await super()._agent_call(match, values)

    async def _start(self, vmid: int, argv: list[str]) -> int:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": self.guest_paths[vmid]},
            user=TEST_USER,
            group=pwd.getpwnam(TEST_USER).pw_gid,
            start_new_session=True,
        )
        execution = _Execution(process)
        self._executions[(vmid, process.pid)] = execution

        async def collect() -> None:
            execution.stdout, execution.stderr = await process.communicate()
            execution.finished = True

        asyncio.ensure_future(collect())
        return process.pid

    def _status(self, key: tuple[int, int]) -> dict[str, Any]:
        execution = self._executions[key]
        if not execution.finished:
            return {"exited": 0}
        # The agent forgets a process once its end was read.
        del self._executions[key]
        status: dict[str, Any] = {"exited": 1, "exitcode": execution.process.returncode}
        if execution.stdout:
            status["out-data"] = execution.stdout.decode("utf-8", "replace")
        if execution.stderr:
            status["err-data"] = execution.stderr.decode("utf-8", "replace")
        return status

    async def stop(self) -> None:
        for execution in self._executions.values():
            process = execution.process
            if process.returncode is None:
                # Each guest command leads its own process group: TERM it, then KILL after a grace.
                _signal_group(process.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
                except TimeoutError:
                    _signal_group(process.pid, signal.SIGKILL)
                    await process.wait()
        await super().stop()


def _signal_group(process_group: int, signal_number: int) -> None:
    try:
        os.killpg(process_group, signal_number)
    except ProcessLookupError:
        pass


class ServedPve:
    """An ExecutingPve served over TLS on 127.0.0.1 by an event loop in a daemon thread."""

    def __init__(self, directory: Path) -> None:
        ensure_test_user()
        self.cafile, keyfile, _ = make_cert(str(directory), hosts=(HOST,))
        self.pve = ExecutingPve(user="root@pam", password="not-used", host=HOST, port=0)
        self.pve.time_scale = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-pve", daemon=True)
        self._thread.start()
        self._call(self.pve.start(self.cafile, keyfile))

    @property
    def port(self) -> int:
        return int(self.pve.port)

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(START_TIMEOUT_SECONDS)

    def close(self) -> None:
        try:
            self._call(self.pve.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(START_TIMEOUT_SECONDS)
            if not self._thread.is_alive():
                self._loop.close()


@pytest.fixture
def fake_pve(tmp_path: Path) -> Iterator[ServedPve]:
    """A started ExecutingPve for one test."""
    directory = tmp_path / "fake-pve"
    directory.mkdir()
    os.chmod(directory, 0o755)
    served = ServedPve(directory)
    try:
        yield served
    finally:
        served.close()
