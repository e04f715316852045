"""A "Proxmox node" test host: a real sshd whose PATH has stand-in ``pct`` and ``qm`` programs.

The stand-ins take the argument shapes of the real CLIs, print their messages
and exit with their exit codes, and run the guest's command as an argument
vector without a shell, as ``lxc-attach`` and the QEMU guest agent do. A
guest's "file system" is a bin dir that becomes the command's whole PATH.
Guests are described in ``pve-guests.json`` next to the host's bin dir, which
tests may rewrite between commands.

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

import json
from pathlib import Path
from typing import Any

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


def write_guests(bin_dir: Path, node: str, guests: dict[str, dict[str, Any]]) -> Path:
    """Describe the node's guests for the stand-ins; return the log of the commands they ran.

    ``guests`` maps a VMID to ``type`` (lxc or qemu), ``status`` (running or
    stopped), ``path`` (the guest's bin dir) and, for VMs, ``agent``: running,
    disabled (no agent configured), stopped (configured, not running) or hang
    (the QMP command times out after ``hang_seconds``).
    """
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
