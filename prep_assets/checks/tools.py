"""The tool check: which crisis tools a system has, found in one remote round trip.

The check is a fixed POSIX shell script. Tool and package names read from the
tools map reach it only as positional arguments, so a name such as
``iostat; touch /tmp/x`` is looked up literally and never run.

To reproduce a check by hand on a system::

    sh -c 'command -v iostat; dpkg-query -W -f="${Package}\\t${Version}\\n" sysstat'
"""

import re
from collections.abc import Sequence

from prep_assets.inventory.package_names import concrete_alternatives
from prep_assets.models import ToolResult, ToolSpec, ToolState
from prep_assets.transports.base import shell_script

# Arguments: tool commands, then the separator "--packages", then package names.
# Each output line is tab-separated and starts with a record kind:
#   tool <command> <path>      the command was found (path may be a shell builtin name)
#   missing <command>          the command was not found on PATH
#   pm <name>                  the package manager whose database was read
#   pkg <package> <version>    an installed package and its version
#   os <id> <version_id>       from /etc/os-release
#   kernel <release>           what uname -r printed
#   installer <program>        a package manager program found on PATH
# The PATH search runs in the shell itself: a "$(command -v ...)" per tool
# would fork a subshell per tool, which was most of the script's CPU time.
# Names that are not files on PATH, such as shell builtins, still go to
# "command -v", and the script then reports the name itself as the path.
TOOL_CHECK_SCRIPT = r"""
set -f
packages=0
for arg in "$@"; do
  if [ "$packages" = 1 ]; then
    continue
  fi
  if [ "$arg" = "--packages" ]; then
    packages=1
    continue
  fi
  found=
  case $arg in
    */*) [ -f "$arg" ] && [ -x "$arg" ] && found=$arg ;;
    *)
      IFS=:
      for dir in $PATH; do
        [ -n "$dir" ] || dir=.
        if [ -f "$dir/$arg" ] && [ -x "$dir/$arg" ]; then
          found=$dir/$arg
          break
        fi
      done
      unset IFS
      ;;
  esac
  if [ -z "$found" ] && command -v -- "$arg" >/dev/null 2>&1; then
    found=$arg
  fi
  if [ -n "$found" ]; then
    printf 'tool\t%s\t%s\n' "$arg" "$found"
  else
    printf 'missing\t%s\n' "$arg"
  fi
done
while [ "$#" -gt 0 ] && [ "$1" != "--packages" ]; do shift; done
[ "$#" -gt 0 ] && shift
if [ -r /etc/os-release ]; then
  ( . /etc/os-release 2>/dev/null; printf 'os\t%s\t%s\n' "${ID:-unknown}" "${VERSION_ID:-}" )
fi
if release=$(uname -r 2>/dev/null); then
  printf 'kernel\t%s\n' "$release"
fi
for program in apt-get apk dnf microdnf yum zypper; do
  if command -v "$program" >/dev/null 2>&1; then
    printf 'installer\t%s\n' "$program"
  fi
done
if [ "$#" -gt 0 ]; then
  if command -v dpkg-query >/dev/null 2>&1; then
    printf 'pm\tapt\n'
    dpkg-query -W -f='pkg\t${Package}\t${Version}\t${db:Status-Abbrev}\n' "$@" 2>/dev/null
  elif command -v apk >/dev/null 2>&1; then
    printf 'pm\tapk\n'
    for name in "$@"; do
      version=$(apk info -e -v -- "$name" 2>/dev/null) && printf 'pkg\t%s\t%s\tii\n' "$name" "${version#"$name"-}"
    done
  elif command -v rpm >/dev/null 2>&1; then
    printf 'pm\tdnf\n'
    for name in "$@"; do
      rpm -q --qf 'pkg\t%{NAME}\t%{VERSION}-%{RELEASE}\tii\n' -- "$name" 2>/dev/null
    done
  fi
fi
exit 0
"""


def tool_check_command(specs: Sequence[ToolSpec]) -> list[str]:
    """Build the argument list that checks every tool of ``specs`` at once."""
    commands = [spec.command for spec in specs]
    # A cell such as "linux-tools-{kernel} | linux-perf" is queried by its names without placeholders.
    packages = sorted(
        {
            name
            for spec in specs
            for cell in spec.packages.values()
            for name in concrete_alternatives(cell)
        }
    )
    return shell_script(TOOL_CHECK_SCRIPT, *commands, "--packages", *packages)


def parse_tool_check(output: str, specs: Sequence[ToolSpec]) -> list[ToolResult]:
    """Turn the tool check script's output into one result per expected tool.

    A tool the output does not mention is ``unknown``: the script was cut short.
    """
    paths: dict[str, str] = {}
    missing: set[str] = set()
    versions = parse_package_versions(output)
    package_manager: str | None = None
    for line in output.splitlines():
        fields = line.split("\t")
        kind = fields[0]
        if kind == "tool" and len(fields) >= 3:
            paths[fields[1]] = fields[2]
        elif kind == "missing" and len(fields) >= 2:
            missing.add(fields[1])
        elif kind == "pm" and len(fields) >= 2:
            package_manager = fields[1]

    results = []
    for spec in specs:
        cell = spec.packages.get(package_manager) if package_manager else None
        if cell is None and spec.packages:
            cell = next(iter(spec.packages.values()))
        package, version = _installed_alternative(cell, versions)
        if spec.command in paths:
            state = ToolState.INSTALLED
            if spec.min_version and version and compare_versions(version, spec.min_version) < 0:
                state = ToolState.OUTDATED
            path = paths[spec.command]
            results.append(
                ToolResult(
                    spec.command,
                    state,
                    path=path if path.startswith("/") else None,
                    package=package,
                    version=version,
                )
            )
        elif spec.command in missing:
            results.append(ToolResult(spec.command, ToolState.MISSING, package=package))
        else:
            results.append(ToolResult(spec.command, ToolState.UNKNOWN, package=package))
    return results


def parse_package_versions(output: str) -> dict[str, str]:
    """Return the version of each installed package that the tool check script listed."""
    versions: dict[str, str] = {}
    for line in output.splitlines():
        fields = line.split("\t")
        if fields[0] == "pkg" and len(fields) >= 3:
            # dpkg lists removed packages whose configuration is left ("rc"); only "ii" is installed.
            status = fields[3].strip() if len(fields) >= 4 else "ii"
            if status.startswith("ii"):
                versions[fields[1]] = fields[2]
    return versions


def _installed_alternative(
    cell: str | None, versions: dict[str, str]
) -> tuple[str | None, str | None]:
    """Return the first alternative of ``cell`` that is installed, with its version.

    Without an installed one, return the cell's first alternative and no version.
    """
    if cell is None:
        return None, None
    names = concrete_alternatives(cell)
    for name in names:
        if name in versions:
            return name, versions[name]
    return (names[0] if names else cell), None


def parse_platform(output: str) -> dict[str, str]:
    """Return the package manager, OS, kernel release and installer programs that the check reported.

    ``installers`` is a comma-separated list such as ``apt-get`` or ``dnf,yum``.
    """
    platform: dict[str, str] = {}
    installers: list[str] = []
    for line in output.splitlines():
        fields = line.split("\t")
        if fields[0] == "pm" and len(fields) >= 2:
            platform["package_manager"] = fields[1]
        elif fields[0] == "os" and len(fields) >= 3:
            platform["os_id"] = fields[1]
            platform["os_version"] = fields[2]
        elif fields[0] == "kernel" and len(fields) >= 2:
            platform["kernel"] = fields[1]
        elif fields[0] == "installer" and len(fields) >= 2:
            installers.append(fields[1])
    if installers:
        platform["installers"] = ",".join(installers)
    return platform


def not_applicable(specs: Sequence[ToolSpec]) -> list[ToolResult]:
    """Results for a system where tools are not checked (read-only or not contacted)."""
    return [ToolResult(spec.command, ToolState.NOT_APPLICABLE) for spec in specs]


_VERSION_PART = re.compile(r"(\d+|[A-Za-z]+|~)")


def _version_key(version: str) -> list[tuple[int, int | str]]:
    # Drop a Debian epoch ("2:") and compare the upstream part piece by piece:
    # numbers as numbers, letters as text, and "~" before anything else.
    upstream = version.split(":", 1)[-1]
    key: list[tuple[int, int | str]] = []
    for part in _VERSION_PART.findall(upstream):
        if part == "~":
            key.append((-1, 0))
        elif part.isdigit():
            key.append((1, int(part)))
        else:
            key.append((0, part))
    # The end marker sorts after "~" and before any further part, so 1.0~rc1 < 1.0 < 1.0.1.
    key.append((0, ""))
    return key


def compare_versions(left: str, right: str) -> int:
    """Compare two package versions; return -1, 0 or 1.

    NOTE: this approximates dpkg's ordering and ignores epochs. It serves
    "at least this version" checks, not every corner of dpkg's rules.
    """
    left_key, right_key = _version_key(left), _version_key(right)
    if left_key == right_key:
        return 0
    return -1 if left_key < right_key else 1
