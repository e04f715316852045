"""Run commands on the machine that runs prep-assets, without a shell."""

import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence

from prep_assets.models import CommandResult
from prep_assets.transports.base import TransportError, TransportTimeoutError

logger = logging.getLogger(__name__)

# How long to wait for output after killing a timed-out process group before
# the pipes are abandoned (a process that left the group may keep them open).
KILL_GRACE_SECONDS = 2.0

# Exit codes that POSIX shells report for a command that cannot be found or run,
# so checks treat a missing local tool the same way as a missing remote one.
EXIT_COMMAND_NOT_FOUND = 127
EXIT_COMMAND_NOT_EXECUTABLE = 126


class LocalTransport:
    """Run argument lists as child processes of this process.

    Each command runs in its own process group, so a timeout kills the command
    together with every child that it started in that group.
    """

    def __init__(self, system: str) -> None:
        self.system = system

    def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """Run ``argv`` and return its exit code, output and duration.

        A program that does not exist returns exit code 127 and one that cannot
        be executed returns 126, as a shell would. Raise TransportTimeoutError
        when the command runs longer than ``timeout`` seconds.
        """
        if not argv:
            raise ValueError("an empty argument list is not a command")
        arguments = list(argv)
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                arguments,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError:
            return self._not_run(arguments[0], "command not found", EXIT_COMMAND_NOT_FOUND, started)
        except PermissionError:
            return self._not_run(
                arguments[0], "permission denied", EXIT_COMMAND_NOT_EXECUTABLE, started
            )
        except OSError as exc:
            raise TransportError(
                self.system, f"could not start {arguments[0]!r}: {exc.strerror or exc}"
            ) from exc

        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_process_group(process)
            raise TransportTimeoutError(
                self.system,
                f"command {arguments[0]!r} did not finish within {timeout:g} s and was killed; "
                "raise the command timeout if the command is expected to take longer",
            ) from None

        return CommandResult(
            exit_code=process.returncode,
            stdout=stdout.decode("utf-8", errors="replace"),
            stderr=stderr.decode("utf-8", errors="replace"),
            duration_seconds=time.monotonic() - started,
        )

    def close(self) -> None:
        """Do nothing, because a local transport has no connection to close."""

    def _not_run(self, program: str, reason: str, exit_code: int, started: float) -> CommandResult:
        logger.debug("%s: %s: %s", self.system, program, reason)
        return CommandResult(
            exit_code=exit_code,
            stdout="",
            stderr=f"{program}: {reason}\n",
            duration_seconds=time.monotonic() - started,
        )

    def _kill_process_group(self, process: subprocess.Popen[bytes]) -> None:
        # start_new_session=True made the child the leader of its own group,
        # so its PID is the group ID.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            process.communicate(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            logger.warning(
                "%s: output pipes of killed process %d stayed open for %.1f s; "
                "a process outside its group may still hold them",
                self.system,
                process.pid,
                KILL_GRACE_SECONDS,
            )
            # Close our ends of the pipes without reading further.
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
            process.wait()
