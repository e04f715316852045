"""Package cells of the tools map: alternatives and the ``{kernel}`` placeholder.

A package cell names one package, or several alternatives separated by ``|``
with the first choice first, for example ``linux-tools-{kernel} | linux-perf``.
Inside a Markdown table the pipe is written as ``\\|`` or the cell is put in
backticks. ``{kernel}`` stands for the kernel release that ``uname -r`` prints on
the system, such as ``6.1.0-18-amd64``, so the cell above names Ubuntu's
kernel-matched perf package first and Debian's ``linux-perf`` as the fallback.

Names never reach a shell: they are validated here and passed to package
managers as separate arguments.
"""

import re
from collections.abc import Mapping

ALTERNATIVE_SEPARATOR = "|"
# Placeholder name -> the platform key (from the tool check) whose value replaces it.
PLACEHOLDERS: dict[str, str] = {"kernel": "kernel"}

# Package names of apt, apk and dnf use letters, digits and . + _ : - only. A
# name may not end with "-" or ":", because apt-get install removes a package
# written with a trailing "-".
_PACKAGE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.+_:-]*[A-Za-z0-9.+_])?$")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def split_alternatives(cell: str) -> list[str]:
    """Return the alternatives of a package cell in order, stripped of spaces."""
    return [part.strip() for part in cell.split(ALTERNATIVE_SEPARATOR)]


def validate_package_cell(cell: str, label: str = "package") -> str:
    """Return ``cell`` unchanged, or raise ValueError naming the invalid alternative.

    ``label`` names the cell in the message, for example "apt package".
    """
    for alternative in split_alternatives(cell):
        unknown = [name for name in _PLACEHOLDER.findall(alternative) if name not in PLACEHOLDERS]
        if unknown:
            supported = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
            raise ValueError(
                f"invalid {label} {alternative!r}: unknown placeholder {{{unknown[0]}}}, "
                f"expected one of {supported}"
            )
        # A placeholder stands for letters, digits, "." and "-", so the name is tested with "0" in its place.
        if not _PACKAGE_NAME.match(_PLACEHOLDER.sub("0", alternative)):
            raise ValueError(
                f"invalid {label} {alternative!r}: expected a package name such as sysstat"
            )
    return cell


def has_placeholder(name: str) -> bool:
    return bool(_PLACEHOLDER.search(name))


def concrete_alternatives(cell: str) -> list[str]:
    """Return the alternatives that need no placeholder filled, in order."""
    return [name for name in split_alternatives(cell) if name and not has_placeholder(name)]


def resolve_alternatives(cell: str, platform: Mapping[str, str]) -> list[str]:
    """Return the package names of ``cell`` in order, with placeholders filled from ``platform``.

    An alternative is left out when a placeholder's value is unknown or the filled-in
    name is not a valid package name (a kernel release containing a space, for example).
    """
    names: list[str] = []
    for alternative in split_alternatives(cell):
        name = _fill(alternative, platform)
        if name and _PACKAGE_NAME.match(name) and name not in names:
            names.append(name)
    return names


def _fill(alternative: str, platform: Mapping[str, str]) -> str | None:
    filled = alternative
    for placeholder in _PLACEHOLDER.findall(alternative):
        value = platform.get(PLACEHOLDERS.get(placeholder, ""), "")
        if not value:
            return None
        filled = filled.replace("{" + placeholder + "}", value)
    return filled
