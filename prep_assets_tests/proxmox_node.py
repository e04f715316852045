"""A "Proxmox node" test host: a real sshd whose PATH has stand-in ``pct`` and ``qm`` programs.

The stand-ins take the argument shapes of the real CLIs, print their messages
and exit with their exit codes, and run the guest's command as an argument
vector without a shell, as ``lxc-attach`` and the QEMU guest agent do. A
guest's "file system" is a bin dir that becomes the command's whole PATH.
Guests are described in ``pve-guests.json`` next to the host's bin dir, which
tests may rewrite between commands.

A container or VM may instead name a root directory, such as a root prepared
by provisioning/chroot_hosts.py. ``pct exec`` and ``qm guest exec`` then run
the command as root inside it: ``sudo -n chroot <root> env -i PATH=... <argv>``,
as lxc-attach and the guest agent run commands as the guest's root user. The
stand-ins run as the node host's login user, which is not root, and chroot
needs root. So ``guest_root_sudo_rule`` installs a sudoers rule on the machine
that lets that user run exactly this chroot into that one root, and removes it
afterwards.

Formats checked against these sources:

- ``pct exec <vmid> [<extra-args>] [OPTIONS]``, ``qm guest exec <vmid>
  [<extra-args>] [OPTIONS]`` with ``--timeout`` (default 30) and
  ``--synchronous``: https://pve.proxmox.com/pve-docs/pct.1.html and
  https://pve.proxmox.com/pve-docs/qm.1.html
- pct exec loads the config ("Configuration file 'nodes/NODE/lxc/VMID.conf'
  does not exist"), dies with "container 'VMID' not running!", then execs
  ``lxc-attach -n VMID -- ARGS``: src/PVE/CLI/pct.pm of
  https://github.com/proxmox/pve-container
- qm guest exec prints the exec-status as JSON with Perl's
  ``to_json(pretty => 1, canonical => 1)`` (three-space indent, ``"key" :
  value``, sorted keys), ``exited`` as 1, ``out-data`` and ``err-data`` decoded;
  past ``--timeout`` it warns "timeout reached, returning pid" and prints
  ``{"pid": N}`` with exit code 0: PVE/CLI/qm.pm of
  https://github.com/proxmox/qemu-server
- Agent errors "No QEMU guest agent configured", "VM VMID is not running",
  "QEMU guest agent is not running": PVE/QemuServer/Agent.pm of the same
  repository; "VM VMID qmp command 'guest-exec' failed - got timeout" is the
  QMP timeout wording that fakepve also uses.
- Errors of PVE CLI commands are Perl ``die`` calls, so the message goes to
  stderr and the exit code is 255: src/PVE/CLIHandler.pm of
  https://github.com/proxmox/pve-common
"""

import contextlib
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prep_assets_tests.sshhosts import TEST_USER

STANDIN_SCRIPT = r'''#!/usr/bin/python3
"""Stand-in for Proxmox VE's pct and qm, written by prep-assets' tests."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(__file__).resolve().parent.parent / "pve-guests.json"
# Seconds a guest command gets to exit after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 2


def die(message):
    # PVE CLI errors are Perl die calls: the message on stderr, exit code 255.
    sys.stderr.write(message + "\n")
    sys.exit(255)


def split_command(args):
    if "--" not in args:
        return args, []
    index = args.index("--")
    return args[:index], args[index + 1:]


def options_of(words):
    options = {}
    for index in range(0, len(words) - 1, 2):
        if not words[index].startswith("--"):
            die("400 too many arguments")
        options[words[index][2:]] = words[index + 1]
    if len(words) % 2:
        die("400 too many arguments")
    return options


def find_guest(state, vmid, kind):
    guest = state["guests"].get(vmid)
    if guest is None or guest["type"] != kind:
        directory = "lxc" if kind == "lxc" else "qemu-server"
        die(f"Configuration file 'nodes/{state['node']}/{directory}/{vmid}.conf' does not exist")
    return guest


def guest_environment(guest):
    return {"PATH": guest.get("path") or os.environ.get("PATH", "")}


def pct(args, state):
    if len(args) < 2 or args[0] != "exec":
        die("400 unknown command 'pct " + " ".join(args[:1]) + "'")
    vmid = args[1]
    words, command = split_command(args[2:])
    options_of(words)
    guest = find_guest(state, vmid, "lxc")
    if guest["status"] != "running":
        die(f"container '{vmid}' not running!")
    if not command:
        die("missing command")
    with open(state["log"], "a") as log:
        log.write(json.dumps(["pct", *args]) + "\n")
    # A container with a root directory runs the command there, as root, behind the
    # sudo and chroot prefix that write_guests stored.
    command = guest.get("command_prefix", []) + command
    try:
        os.execvpe(command[0], command, guest_environment(guest))
    except OSError as error:
        sys.stderr.write(f"lxc-attach: {vmid}: failed to exec {command[0]!r}: {error.strerror}\n")
        sys.exit(127)


def qm(args, state):
    if args[:2] != ["guest", "exec"] or len(args) < 3:
        die("400 unknown command 'qm " + " ".join(args[:2]) + "'")
    vmid = args[2]
    words, command = split_command(args[3:])
    options = options_of(words)
    timeout = int(options.get("timeout", "30"))
    guest = find_guest(state, vmid, "qemu")
    agent = guest.get("agent", "running")
    if agent == "disabled":
        die("No QEMU guest agent configured")
    if guest["status"] != "running":
        die(f"VM {vmid} is not running")
    if agent == "stopped":
        die("QEMU guest agent is not running")
    if agent == "hang":
        time.sleep(float(guest.get("hang_seconds", 1)))
        die(f"VM {vmid} qmp command 'guest-exec' failed - got timeout")
    if not command:
        die("400 Parameter verification failed.\nextra-args: No command given")
    with open(state["log"], "a") as log:
        log.write(json.dumps(["qm", *args]) + "\n")
    # A VM with a root directory runs the command there, as the guest agent runs it as root.
    command = guest.get("command_prefix", []) + command
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=guest_environment(guest),
        )
    except OSError as error:
        die(f"Agent error: Guest agent command failed, error was 'Failed to execute child "
            f"process \"{command[0]}\" ({error.strerror})'")
    try:
        out, err = process.communicate(timeout=timeout if timeout else None)
    except subprocess.TimeoutExpired:
        # The real command keeps running in the guest; the stand-in ends it so no
        # process outlives the test: TERM first, then KILL after a grace period.
        process.terminate()
        try:
            process.communicate(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        sys.stderr.write("timeout reached, returning pid\n")
        print(json.dumps({"pid": process.pid}, indent=3, sort_keys=True, separators=(",", " : ")))
        return
    result = {"exited": 1}
    if process.returncode < 0:
        result["signal"] = -process.returncode
    else:
        result["exitcode"] = process.returncode
    if out:
        result["out-data"] = out.decode("utf-8", "replace")
    if err:
        result["err-data"] = err.decode("utf-8", "replace")
    print(json.dumps(result, indent=3, sort_keys=True, separators=(",", " : ")))


state = json.loads(STATE.read_text())
program = Path(sys.argv[0]).name
if program == "pct":
    pct(sys.argv[1:], state)
elif program == "qm":
    qm(sys.argv[1:], state)
else:
    die(f"unknown stand-in {program}")
'''

STANDIN_PROGRAMS = {"pct": STANDIN_SCRIPT, "qm": STANDIN_SCRIPT}


SUDO_PATH = "/usr/bin/sudo"
CHROOT_PATH = "/usr/sbin/chroot"
ENV_PATH = "/usr/bin/env"
# PATH of commands in a guest root unless the guest sets "path": the
# secure_path of Debian 12's /etc/sudoers.
ROOT_GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SUDOERS_DIR = Path("/etc/sudoers.d")
# Characters that need no quoting in a sudoers command line and match no wildcard.
_SUDOERS_PLAIN_PATH = re.compile(r"/[A-Za-z0-9/._-]+")


def root_command_prefix(root: str, path: str) -> list[str]:
    """Return the argument vector that pct and qm put before a command for a guest's root.

    ``env -i`` leaves the command only PATH, as a guest with a bin dir gets.
    NOTE: env reads a leading command word that contains "=" as a variable, so
    such a command cannot run in a guest root.
    """
    return [SUDO_PATH, "-n", CHROOT_PATH, root, ENV_PATH, "-i", f"PATH={path}"]


def write_guests(bin_dir: Path, node: str, guests: dict[str, dict[str, Any]]) -> Path:
    """Describe the node's guests for the stand-ins; return the log of the commands they ran.

    ``guests`` maps a VMID to ``type`` (lxc or qemu), ``status`` (running or
    stopped), ``path`` (the guest's bin dir) and, for VMs, ``agent``: running,
    disabled (no agent configured), stopped (configured, not running) or hang
    (the QMP command times out after ``hang_seconds``). A guest may name a
    ``root`` directory in place of a bin dir. Its commands then run in that root
    with ``path`` (default ROOT_GUEST_PATH) as PATH, which needs the sudoers rule
    of ``guest_root_sudo_rule``.

    NOTE: in a VM's root, a program that is not on PATH makes env exit with 127
    and an error on stderr, which qm reports as the command's result. The real
    guest agent rejects the guest-exec request instead, and qm dies with "Agent
    error: ... Failed to execute child process".
    """
    guests = {vmid: dict(guest) for vmid, guest in guests.items()}
    for guest in guests.values():
        root = guest.get("root")
        if root is None:
            continue
        guest["command_prefix"] = root_command_prefix(
            str(root), guest.get("path") or ROOT_GUEST_PATH
        )
    host_dir = bin_dir.parent
    log = host_dir / "pve-commands.log"
    log.touch()
    log.chmod(0o666)
    state = host_dir / "pve-guests.json"
    state.write_text(json.dumps({"node": node, "guests": guests, "log": str(log)}))
    state.chmod(0o644)
    return log


def logged_commands(log: Path) -> list[list[str]]:
    """Return the argument vectors of the pct and qm calls that reached a guest."""
    return [json.loads(line) for line in log.read_text().splitlines() if line]


@contextlib.contextmanager
def guest_root_sudo_rule(root: Path, user: str = TEST_USER) -> Iterator[Path]:
    """Install a sudoers rule for the stand-ins' chroot into ``root`` while the block runs.

    The rule in /etc/sudoers.d lets ``user`` run only ``chroot <root> env -i ...``
    as root, which is what ``root_command_prefix`` runs. visudo checks it before sudo reads it, and
    the rule file is removed when the block ends. Yields the rule file's path.
    """
    if os.geteuid() != 0:
        pytest.fail("a sudoers rule for a guest root needs root", pytrace=False)
    if not _SUDOERS_PLAIN_PATH.fullmatch(str(root)):
        raise ValueError(
            f"guest root {root} contains characters that sudoers would read as "
            "wildcards or separators; use a path of letters, digits and /._-"
        )
    # sudo skips files in an @includedir whose name contains a dot (sudoers(5)),
    # so the draft is never read while it is written and checked.
    name = "prep-assets-guest-root-" + hashlib.sha256(str(root).encode()).hexdigest()[:12]
    rule = SUDOERS_DIR / name
    draft = SUDOERS_DIR / f".{name}.draft"
    draft.write_text(f"{user} ALL=(root) NOPASSWD: {CHROOT_PATH} {root} {ENV_PATH} -i *\n")
    try:
        draft.chmod(0o440)
        checked = subprocess.run(
            ["visudo", "--check", "--quiet", "--file", str(draft)],
            capture_output=True,
            text=True,
            check=False,
        )
        if checked.returncode != 0:
            pytest.fail(
                f"visudo rejected the sudoers rule for {root}: {checked.stdout}{checked.stderr}",
                pytrace=False,
            )
        draft.replace(rule)
        yield rule
    finally:
        draft.unlink(missing_ok=True)
        rule.unlink(missing_ok=True)
