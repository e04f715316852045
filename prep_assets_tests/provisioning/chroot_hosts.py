"""SSH test hosts whose sessions run inside a Debian root of the test's own making.

Each root is an overlay mount over the machine's root file system
(``lowerdir=/`` with a private upperdir and workdir in pytest's temp
directory). A chroot host enters it with chroot: ``chroot <merged>
/usr/sbin/sshd -D ...`` runs sshd itself inside the root, so every session,
apt-get and dpkg included, reads and writes only the overlay. Writes land in the upperdir,
so packages installed or purged there never change the machine's own dpkg
state or files. The ``chroot_roots`` fixture prepares the same roots without
sshd, for commands that other test programs run in them with chroot, such as
the stand-in ``pct exec`` of proxmox_node.py.

Every root is prepared the same way:

- ``sysstat`` is purged with dpkg inside the root, so iostat is missing there;
- apt's sources are replaced by a local flat repository in ``/srv/prep-assets-repo``
  that holds the sysstat .deb of the machine's installed version, taken from
  apt's cache or from the folder that `make test` fills. apt-get update and
  install inside the root then work without the network.

Before its sshd starts, a chroot host's root also gets a sudoers rule that lets
the test user run any command as root through ``sudo -n``, as an access pattern
with ``Sudo: yes`` expects.

Mounts made here: the overlay, a bind mount of /dev, a new devpts instance on
its pts (so apt can open a pseudo-terminal for its log) and a proc file system.
All are made private, so nothing propagates to the machine's mounts, and all
are unmounted when the host or root is stopped.
"""

import hashlib
import itertools
import logging
import lzma
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from prep_assets_tests.sshhosts import (
    STARTUP_TIMEOUT_SECONDS,
    STOP_GRACE_SECONDS,
    TEST_USER,
    SshHostPool,
    ensure_test_user,
    free_port,
    generate_key,
)

logger = logging.getLogger(__name__)

SUDO_PATH = Path("/usr/bin/sudo")
APT_ARCHIVES = Path("/var/cache/apt/archives")
REPO_DIR = "srv/prep-assets-repo"
CONFIG_DIR = "etc/prep-assets-test"
SETUP_HINT = "run `make test`, which installs openssh-server, sysstat and sudo"
# Chroot hosts get addresses from 127.0.77.2 on, which SshHostPool does not use.
# Every host of a test session gets a new address, so no two hosts ever share
# an address and port in the pool's known_hosts file.
_ADDRESSES = itertools.count(77 * 256 + 2)
SESSION_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
UNMOUNT_ATTEMPTS = 10


def run_checked(argv: list[str], description: str, cwd: Path | None = None) -> str:
    """Run a set-up command and fail the test with its output when it fails."""
    completed = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd)
    if completed.returncode != 0:
        pytest.fail(
            f"{description} failed (exit code {completed.returncode}): {' '.join(argv)}\n"
            f"{completed.stdout}\n{completed.stderr}",
            pytrace=False,
        )
    return completed.stdout


def installed_version(package: str) -> str | None:
    """Return the machine's installed version of ``package``, or None."""
    completed = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Abbrev}\t${Version}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    status, _, version = completed.stdout.partition("\t")
    if completed.returncode != 0 or not status.startswith("ii"):
        return None
    return version


# `make test` downloads the .debs the tests install into this folder before pytest starts,
# so no test itself reaches a package mirror.
DOWNLOADED_DEBS = Path(__file__).resolve().parents[2] / ".cache" / "debs"


def fetch_package(package: str, target_dir: Path) -> Path:
    """Copy the .deb of the machine's installed ``package`` into ``target_dir``.

    The .deb comes from apt's cache or from the folder that `make test` fills;
    the tests never download it themselves.
    """
    version = installed_version(package)
    if version is None:
        pytest.fail(f"{package} is not installed on this machine ({SETUP_HINT})", pytrace=False)
    arch = run_checked(["dpkg-query", "-W", "-f=${Architecture}", package], "dpkg-query")
    # apt writes an epoch's ":" as "%3a" in file names.
    file_name = f"{package}_{version.replace(':', '%3a')}_{arch}.deb"
    target_dir.mkdir(parents=True, exist_ok=True)
    for folder in (APT_ARCHIVES, DOWNLOADED_DEBS):
        cached = folder / file_name
        if cached.is_file():
            shutil.copy2(cached, target_dir / file_name)
            return target_dir / file_name
    pytest.fail(
        f"{file_name} is neither in {APT_ARCHIVES} nor in {DOWNLOADED_DEBS}: run `make test`, "
        "which downloads it before the tests start",
        pytrace=False,
    )


def write_flat_repository(repo_dir: Path, debs: list[Path]) -> None:
    """Write a ``Packages`` index for ``debs`` so that apt reads ``repo_dir`` as a flat repository."""
    stanzas = []
    for deb in debs:
        control = run_checked(["dpkg-deb", "--field", str(deb)], "dpkg-deb --field").rstrip("\n")
        data = deb.read_bytes()
        stanzas.append(
            f"{control}\nFilename: ./{deb.name}\nSize: {len(data)}\n"
            f"SHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
    index = "\n".join(stanzas).encode()
    (repo_dir / "Packages").write_bytes(index)
    # apt requests Packages.xz first and logs an error for each form that is missing.
    (repo_dir / "Packages.xz").write_bytes(lzma.compress(index))


def file_fingerprint(path: Path) -> tuple[int, int, str]:
    """Return inode, modification time and SHA-256 of a file, to prove it did not change."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class ChrootRoot:
    """One prepared root: the overlay's merged directory, which is the root, and its upperdir."""

    name: str
    merged: Path
    upper: Path

    def path(self, relative: str) -> Path:
        """Return a path inside the root as seen from the machine."""
        return self.merged / relative.lstrip("/")

    def dpkg_status(self, package: str) -> str:
        """Return dpkg's status abbreviation and version of ``package`` inside the root."""
        completed = subprocess.run(
            [
                "chroot",
                str(self.merged),
                "dpkg-query",
                "-W",
                "-f=${db:Status-Abbrev}${Version}",
                package,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        return completed.stdout.strip() if completed.returncode == 0 else "not known to dpkg"


@dataclass(frozen=True)
class ChrootHost(ChrootRoot):
    """One running chroot host, with the values its inventory row needs."""

    address: str
    port: int
    user: str
    log_path: Path

    def login_count(self) -> int:
        text = self.log_path.read_text(errors="replace")
        return sum(1 for line in text.splitlines() if line.startswith("Accepted publickey for "))


class ChrootHostRunner:
    """Mounts, sshd process (chroot hosts only) and clean-up of one root."""

    def __init__(self, name: str, base_dir: Path) -> None:
        self.name = name
        self.base_dir = base_dir
        self.upper = base_dir / "upper"
        self.work = base_dir / "work"
        self.merged = base_dir / "merged"
        self.log_path = base_dir / "sshd.log"
        self.mounts: list[Path] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def mount(self) -> None:
        for directory in (self.upper, self.work, self.merged):
            directory.mkdir(parents=True)
        options = f"lowerdir=/,upperdir={self.upper},workdir={self.work}"
        self._mount(["-t", "overlay", "overlay", "-o", options], self.merged)
        self._mount(["--bind", "/dev"], self.merged / "dev")
        self._mount(
            ["-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620", "devpts"],
            self.merged / "dev/pts",
        )
        self._mount(["-t", "proc", "proc"], self.merged / "proc")

    def _mount(self, arguments: list[str], target: Path) -> None:
        run_checked(["mount", *arguments, str(target)], f"mounting {target}")
        self.mounts.append(target)
        run_checked(["mount", "--make-private", str(target)], f"making {target} private")

    def run_in_root(self, argv: list[str], description: str) -> str:
        return run_checked(["chroot", str(self.merged), *argv], description)

    def start_sshd(self, config: str) -> None:
        config_path = self.merged / CONFIG_DIR / "sshd_config"
        config_path.write_text(config)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                "chroot",
                str(self.merged),
                "/usr/sbin/sshd",
                "-D",
                "-e",
                "-f",
                f"/{CONFIG_DIR}/sshd_config",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )

    def wait_listening(self, address: str, port: int) -> bool:
        """Wait for sshd's "Server listening" line; return False if sshd exited first."""
        expected = f"Server listening on {address} port {port}."
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if expected in self.log_path.read_text(errors="replace"):
                return True
            if self.process is not None and self.process.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Stop sshd and every process left in the root, then unmount in reverse order."""
        if self.process is not None:
            _terminate_group(self.process)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self._stop_processes_in_root()
        for target in reversed(self.mounts):
            self._unmount(target)
        self.mounts.clear()

    def _stop_processes_in_root(self) -> None:
        # Sessions that sshd started may outlive it; they are found by their root directory.
        for signal_number in (signal.SIGTERM, signal.SIGKILL):
            pids = self._pids_in_root()
            for pid in pids:
                try:
                    os.kill(pid, signal_number)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while pids and time.monotonic() < deadline:
                time.sleep(0.05)
                pids = self._pids_in_root()
            if not pids:
                return

    def _pids_in_root(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                root = os.readlink(entry / "root")
            except OSError:
                continue
            if root == str(self.merged):
                pids.append(int(entry.name))
        return pids

    def _unmount(self, target: Path) -> None:
        for _attempt in range(UNMOUNT_ATTEMPTS):
            completed = subprocess.run(
                ["umount", str(target)], capture_output=True, text=True, check=False
            )
            if completed.returncode == 0:
                return
            time.sleep(0.2)
        # NOTE: a lazy unmount detaches the mount now and frees it when its last user exits.
        logger.warning("%s stayed busy: %s; detaching it lazily", target, completed.stderr.strip())
        subprocess.run(["umount", "--lazy", str(target)], check=False)


def _terminate_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


class ChrootRootFactory:
    """Prepares roots without sshd and unmounts them at the end."""

    def __init__(self, base_dir: Path, debs: list[Path]) -> None:
        if os.geteuid() != 0:
            pytest.fail("chroot test roots need root for mount and chroot", pytrace=False)
        self.base_dir = base_dir
        self.debs = debs
        self.runners: list[ChrootHostRunner] = []

    def prepare(self, name: str, hide: tuple[str, ...] = ("sysstat",)) -> ChrootRoot:
        """Prepare a root named ``name`` with the packages of ``hide`` purged inside."""
        runner = self._mount_prepared_root(name, hide)
        return ChrootRoot(name=name, merged=runner.merged, upper=runner.upper)

    def _mount_prepared_root(self, name: str, hide: tuple[str, ...]) -> ChrootHostRunner:
        runner = ChrootHostRunner(name, self.base_dir / name)
        self.runners.append(runner)
        runner.mount()
        self._prepare_root(runner, hide)
        return runner

    def _prepare_root(self, runner: ChrootHostRunner, hide: tuple[str, ...]) -> None:
        # Without this flag file, man-db's dpkg trigger skips rebuilding its index,
        # which saves several seconds per purge and install in the root.
        (runner.merged / "var/lib/man-db/auto-update").unlink(missing_ok=True)
        for package in hide:
            if installed_version(package) is not None:
                runner.run_in_root(["dpkg", "--purge", package], f"purging {package} in the root")

        repo_dir = runner.merged / REPO_DIR
        repo_dir.mkdir(parents=True)
        copies = [Path(shutil.copy2(deb, repo_dir / deb.name)) for deb in self.debs]
        write_flat_repository(repo_dir, copies)
        for path in [repo_dir, *repo_dir.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        sources = runner.merged / "etc/apt/sources.list.d"
        for entry in sources.iterdir():
            entry.unlink()
        # trusted=yes: the flat repository has no signed Release file.
        (runner.merged / "etc/apt/sources.list").write_text(
            f"deb [trusted=yes] file:/{REPO_DIR} ./\n"
        )

    def close(self) -> None:
        for runner in reversed(self.runners):
            runner.stop()
        self.runners.clear()


class ChrootHostFactory(ChrootRootFactory):
    """Starts chroot hosts that accept the SSH pool's client key and stops them at the end."""

    def __init__(self, pool: SshHostPool, base_dir: Path, debs: list[Path]) -> None:
        super().__init__(base_dir, debs)
        if not os.access(SUDO_PATH, os.X_OK):
            pytest.fail(f"{SUDO_PATH} is missing; install sudo ({SETUP_HINT})", pytrace=False)
        ensure_test_user()
        self.pool = pool

    def start(self, name: str, hide: tuple[str, ...] = ("sysstat",)) -> ChrootHost:
        """Start a chroot host named ``name`` with the packages of ``hide`` purged inside."""
        number = next(_ADDRESSES)
        address = f"127.0.{number // 256}.{number % 256}"
        runner = self._mount_prepared_root(name, hide)
        self._prepare_login(runner)
        host_key = generate_key(
            runner.merged / CONFIG_DIR / "ssh_host_ed25519_key", f"host key of {name}"
        )
        authorized_keys = runner.merged / CONFIG_DIR / "authorized_keys"
        authorized_keys.write_text(self.pool.client_key.public_key + "\n")
        authorized_keys.chmod(0o644)

        port = 0
        for _attempt in range(3):
            port = free_port(address)
            runner.start_sshd(_sshd_config(address, port))
            if runner.wait_listening(address, port):
                break
            if runner.process is not None:
                _terminate_group(runner.process)
                runner.process = None
        else:
            pytest.fail(
                f"sshd of chroot host {name} did not start; log:\n"
                f"{runner.log_path.read_text(errors='replace')}",
                pytrace=False,
            )
        key_type, key_base64 = host_key.public_key.split()[:2]
        with self.pool.known_hosts_path.open("a") as known_hosts:
            known_hosts.write(f"[{address}]:{port} {key_type} {key_base64}\n")
        return ChrootHost(
            name=name,
            address=address,
            port=port,
            user=TEST_USER,
            merged=runner.merged,
            upper=runner.upper,
            log_path=runner.log_path,
        )

    def _prepare_login(self, runner: ChrootHostRunner) -> None:
        sudoers = runner.merged / "etc/sudoers.d/prep-assets-test"
        sudoers.write_text(f"{TEST_USER} ALL=(root) NOPASSWD: ALL\n")
        sudoers.chmod(0o440)
        (runner.merged / CONFIG_DIR).mkdir(parents=True)
        (runner.merged / "run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)


def _sshd_config(address: str, port: int) -> str:
    lines = [
        f"ListenAddress {address}:{port}",
        f"HostKey /{CONFIG_DIR}/ssh_host_ed25519_key",
        "PidFile none",
        "UsePAM no",
        "StrictModes no",
        "LogLevel VERBOSE",
        f"AuthorizedKeysFile /{CONFIG_DIR}/authorized_keys",
        f"AllowUsers {TEST_USER}",
        "PermitRootLogin no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitUserRC no",
        "PermitUserEnvironment no",
        f"SetEnv PATH={SESSION_PATH}",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "AllowAgentForwarding no",
        "PermitTunnel no",
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def sysstat_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb of the machine's installed sysstat, from apt's cache or apt-get download."""
    return fetch_package("sysstat", tmp_path_factory.mktemp("debs"))


@pytest.fixture
def chroot_hosts(
    ssh_hosts: SshHostPool, sysstat_deb: Path, tmp_path: Path
) -> Iterator[Callable[..., ChrootHost]]:
    """Return a function that starts chroot hosts; they stop and unmount when the test ends."""
    factory = ChrootHostFactory(ssh_hosts, tmp_path / "chroot-hosts", [sysstat_deb])
    try:
        yield factory.start
    finally:
        factory.close()


@pytest.fixture
def chroot_roots(sysstat_deb: Path, tmp_path: Path) -> Iterator[Callable[..., ChrootRoot]]:
    """Return a function that prepares roots without sshd; they unmount when the test ends."""
    factory = ChrootRootFactory(tmp_path / "chroot-roots", [sysstat_deb])
    try:
        yield factory.prepare
    finally:
        factory.close()
