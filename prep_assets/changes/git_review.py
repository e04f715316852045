"""Review the commits of the infra repository since the last check (the GIT REVIEW step).

Each commit becomes zero or more change events: systems decommissioned or added,
maintenance windows and configuration changes. The MONITOR step uses them to tell
expected drift from unexpected drift. docs/change-trailers.md describes the commit
message trailers and the precedence rules that this module implements.
"""

import enum
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import git
from git.diff import NULL_TREE_SHA
from git.exc import GitCommandError, InvalidGitRepositoryError, NoSuchPathError

logger = logging.getLogger(__name__)

DEFAULT_INVENTORY_PATH = "docs/infrastructure/system-inventory.md"

# A config change under this folder whose changed lines mention a system name is
# flagged with ChangeEvent.touches_docs.
DOCS_PREFIX = "docs/"

# Characters that may be part of a system name. A name matches in a line only when
# neither neighbouring character is one of these, so "pve1" does not match inside
# "pve10". A dot is not one of them, so "pve1" matches in "pve1.home.arpa".
_NAME_CHARACTERS = "A-Za-z0-9_-"

TRAILER_DECOMMISSION = "decommission"
TRAILER_NEW_SYSTEM = "new-system"
TRAILER_MAINTENANCE = "maintenance"
_TRAILER_KEYS = (TRAILER_DECOMMISSION, TRAILER_NEW_SYSTEM, TRAILER_MAINTENANCE)

# A quick check before running `git interpret-trailers`, so that a commit without any
# of our trailers starts no extra process.
_TRAILER_HINT = re.compile(
    r"^\s*(?:" + "|".join(_TRAILER_KEYS) + r")\s*:", re.IGNORECASE | re.MULTILINE
)

# A subject such as "Decommission pve3", "retire pve3 and pve4" or "infra(pve): remove pve3".
# An optional Conventional Commits type with scope may precede the keyword.
_KEYWORD_SUBJECT = re.compile(
    r"^(?:[\w-]+(?:\([^)]*\))?!?:\s*)?"
    r"(?:decommission(?:s|ed|ing)?|retire[sd]?|retiring|remove[sd]?|removing)"
    r"[:\s]+(?P<rest>.+)$",
    re.IGNORECASE,
)
_SUBJECT_CONNECTORS = frozenset({"and", "&"})

# ISO 8601 duration without years and months, whose length depends on the calendar.
_DURATION = re.compile(
    r"^P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)


class ChangeReviewError(Exception):
    """The infra repository could not be opened or has no commits."""


class EventKind(enum.StrEnum):
    DECOMMISSION = "decommission"
    NEW_SYSTEM = "new_system"
    MAINTENANCE = "maintenance"
    CONFIG_CHANGE = "config_change"


class EventSource(enum.StrEnum):
    """The part of a commit that an event was found in."""

    TRAILER = "trailer"
    INVENTORY_DIFF = "inventory-diff"
    KEYWORD = "keyword"
    # Config changes: the lines that the commit changed in any file.
    DIFF = "diff"


# Order of events within one commit, and the precedence of the sources of one event.
_KIND_ORDER = {kind: index for index, kind in enumerate(EventKind)}
_SOURCE_PRECEDENCE = {
    EventSource.TRAILER: 0,
    EventSource.INVENTORY_DIFF: 1,
    EventSource.KEYWORD: 2,
    EventSource.DIFF: 3,
}


def format_utc(moment: datetime) -> str:
    """Format an aware datetime as ISO 8601 in UTC, for example ``2026-12-05T02:00:00Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_utc(text: str) -> datetime:
    """Parse an ISO 8601 date and time with a UTC offset and convert it to UTC.

    Raises ValueError when the text is not ISO 8601 or has no offset.
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset; add Z or an offset such as +01:00")
    return moment.astimezone(UTC)


def _format_count(count: int, noun: str) -> str:
    """Format a count and a regular English noun for a log message: ``1 commit``, ``2 commits``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {moment.isoformat()}")


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class CommitInfo:
    """The identity of one commit as shown in reports."""

    sha: str
    short_sha: str
    author: str
    # Committer date in ISO 8601, UTC.
    committed_at: str
    subject: str

    @property
    def committed_datetime(self) -> datetime:
        return parse_utc(self.committed_at)

    @classmethod
    def from_commit(cls, commit: git.Commit, short_sha: str) -> "CommitInfo":
        message = _message_text(commit)
        return cls(
            sha=commit.hexsha,
            short_sha=short_sha,
            author=commit.author.name or "",
            committed_at=format_utc(commit.committed_datetime),
            subject=message.split("\n", 1)[0].strip(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha": self.sha,
            "short_sha": self.short_sha,
            "author": self.author,
            "committed_at": self.committed_at,
            "subject": self.subject,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CommitInfo":
        return cls(
            sha=data["sha"],
            short_sha=data["short_sha"],
            author=data["author"],
            committed_at=data["committed_at"],
            subject=data["subject"],
        )


@dataclass(frozen=True)
class ChangeEvent:
    """One change that a commit made to a system or to the configuration.

    ``start`` and ``end`` are set for maintenance events only, and ``files`` and
    ``touches_docs`` for config changes only.
    """

    kind: EventKind
    system: str | None
    commit: CommitInfo
    source: EventSource
    start: datetime | None = None
    end: datetime | None = None
    files: tuple[str, ...] = ()
    # True when a changed line under docs/ mentions ``system``.
    touches_docs: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "system": self.system,
            "commit": self.commit.to_dict(),
            "source": self.source.value,
            "start": format_utc(self.start) if self.start else None,
            "end": format_utc(self.end) if self.end else None,
            "files": list(self.files),
            "touches_docs": self.touches_docs,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChangeEvent":
        return cls(
            kind=EventKind(data["kind"]),
            system=data.get("system"),
            commit=CommitInfo.from_dict(data["commit"]),
            source=EventSource(data["source"]),
            start=parse_utc(data["start"]) if data.get("start") else None,
            end=parse_utc(data["end"]) if data.get("end") else None,
            files=tuple(data.get("files", ())),
            touches_docs=bool(data.get("touches_docs", False)),
        )


@dataclass(frozen=True)
class MaintenanceWindow:
    """A time span during which a system may be down, set by a Maintenance trailer."""

    system: str
    start: datetime
    end: datetime
    commit: CommitInfo

    def covers(self, system: str, at: datetime) -> bool:
        """Return whether this window is for ``system`` and contains ``at``.

        The start is included and the end is excluded. Raises ValueError for a naive ``at``.
        """
        _require_aware(at, "at")
        return system == self.system and self.start <= at < self.end

    @property
    def interval(self) -> str:
        """The window as an ISO 8601 interval in UTC."""
        return f"{format_utc(self.start)}/{format_utc(self.end)}"

    @classmethod
    def from_event(cls, event: ChangeEvent) -> "MaintenanceWindow":
        if event.kind is not EventKind.MAINTENANCE or not event.system:
            raise ValueError(f"expected a maintenance event with a system, got {event.kind.value}")
        if event.start is None or event.end is None:
            raise ValueError(f"maintenance event of {event.system} has no start or end")
        return cls(event.system, event.start, event.end, event.commit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "start": format_utc(self.start),
            "end": format_utc(self.end),
            "commit": self.commit.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MaintenanceWindow":
        return cls(
            system=data["system"],
            start=parse_utc(data["start"]),
            end=parse_utc(data["end"]),
            commit=CommitInfo.from_dict(data["commit"]),
        )


@dataclass
class ChangeContext:
    """The result of one review: the commits read, their events, windows and warnings.

    ``commits`` and ``events`` are ordered oldest first, so the last matching event is
    the latest. ``windows`` contains the windows of ``events``. After a normal run it
    also contains the windows set by earlier commits within ``window_lookback_days``,
    because a window is usually committed days before the check that falls inside it.
    """

    head_sha: str
    # The commit the review started after, or None for a first run or a fallback.
    since_sha: str | None
    inventory_path: str = DEFAULT_INVENTORY_PATH
    commits: list[CommitInfo] = field(default_factory=list)
    events: list[ChangeEvent] = field(default_factory=list)
    windows: list[MaintenanceWindow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def _latest(self, kind: EventKind, system: str) -> ChangeEvent | None:
        for event in reversed(self.events):
            if event.kind is kind and event.system == system:
                return event
        return None

    def decommission_for(self, system: str) -> ChangeEvent | None:
        """Return the latest decommission event of ``system``, or None."""
        return self._latest(EventKind.DECOMMISSION, system)

    def new_system_for(self, system: str) -> ChangeEvent | None:
        """Return the latest new-system event of ``system``, or None."""
        return self._latest(EventKind.NEW_SYSTEM, system)

    def config_changes_for(self, system: str) -> list[ChangeEvent]:
        """Return the config changes whose changed lines mention ``system``, oldest first."""
        return [
            event
            for event in self.events
            if event.kind is EventKind.CONFIG_CHANGE and event.system == system
        ]

    def inventory_change_for(self, system: str) -> ChangeEvent | None:
        """Return the latest config change of an inventory line that mentions ``system``.

        NOTE: A changed row counts for every system that it mentions. A jump host named
        in another system's row therefore looks changed too, so its own address change
        is judged expected.
        """
        for event in reversed(self.config_changes_for(system)):
            if self.inventory_path in event.files:
                return event
        return None

    def window_covering(self, system: str, at: datetime) -> MaintenanceWindow | None:
        """Return the window of ``system`` that contains ``at``, or None.

        When several windows overlap, the one set by the latest commit wins.
        """
        for window in reversed(self.windows):
            if window.covers(system, at):
                return window
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "head_sha": self.head_sha,
            "since_sha": self.since_sha,
            "inventory_path": self.inventory_path,
            "commits": [commit.to_dict() for commit in self.commits],
            "events": [event.to_dict() for event in self.events],
            "windows": [window.to_dict() for window in self.windows],
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChangeContext":
        return cls(
            head_sha=data["head_sha"],
            since_sha=data.get("since_sha"),
            inventory_path=data.get("inventory_path", DEFAULT_INVENTORY_PATH),
            commits=[CommitInfo.from_dict(item) for item in data.get("commits", [])],
            events=[ChangeEvent.from_dict(item) for item in data.get("events", [])],
            windows=[MaintenanceWindow.from_dict(item) for item in data.get("windows", [])],
            warnings=list(data.get("warnings", [])),
        )


# --------------------------------------------------------------------------- trailers


@dataclass(frozen=True)
class Trailer:
    """A parsed Decommission, New-System or Maintenance trailer.

    ``start`` and ``end`` are set for Maintenance only.
    """

    kind: EventKind
    systems: tuple[str, ...]
    start: datetime | None = None
    end: datetime | None = None


def _split_names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def parse_duration(text: str) -> timedelta:
    """Parse an ISO 8601 duration such as ``PT2H`` or ``P1DT30M``.

    Years and months are rejected because their length depends on the calendar.
    Raises ValueError for anything else that is not a positive duration.
    """
    match = _DURATION.match(text)
    if not match or not any(match.groupdict().values()):
        raise ValueError(
            f"{text!r} is not an ISO 8601 duration in weeks, days, hours, minutes "
            "or seconds, such as PT2H"
        )
    parts = {unit: float(value) for unit, value in match.groupdict().items() if value}
    return timedelta(**parts)


def parse_interval(text: str) -> tuple[datetime, datetime]:
    """Parse an ISO 8601 interval and return its start and end in UTC.

    Accepted forms are ``<start>/<end>``, ``<start>/<duration>`` and ``<duration>/<end>``.
    Both ends need a UTC offset. Raises ValueError when the interval is invalid or empty.
    """
    parts = text.split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{text!r} is not an ISO 8601 interval such as <start>/<end>")
    first, second = parts

    if first.upper().startswith("P"):
        end = parse_utc(second)
        start = end - parse_duration(first)
    elif second.upper().startswith("P"):
        start = parse_utc(first)
        end = start + parse_duration(second)
    else:
        start = parse_utc(first)
        end = parse_utc(second)

    if end <= start:
        raise ValueError(f"interval {text!r} ends before it starts")
    return start, end


def parse_trailer(key: str, value: str) -> Trailer | None:
    """Parse one ``key: value`` trailer.

    Returns None for keys other than Decommission, New-System and Maintenance, which
    are matched case-insensitively. Raises ValueError when the value is invalid.
    """
    normalized_key = key.strip().lower()
    if normalized_key not in _TRAILER_KEYS:
        return None

    if normalized_key == TRAILER_MAINTENANCE:
        pieces = value.strip().rsplit(None, 1)
        if len(pieces) != 2:
            raise ValueError(
                f"Maintenance value {value!r} needs a system and an interval, "
                "such as 'pve1 2026-12-05T02:00Z/PT2H'"
            )
        systems = _split_names(pieces[0])
        start, end = parse_interval(pieces[1])
        return Trailer(EventKind.MAINTENANCE, systems, start, end)

    systems = _split_names(value)
    if not systems:
        raise ValueError(f"{key.strip()} trailer names no system")
    if normalized_key == TRAILER_DECOMMISSION:
        return Trailer(EventKind.DECOMMISSION, systems)
    return Trailer(EventKind.NEW_SYSTEM, systems)


def _read_trailers(commit: git.Commit) -> list[tuple[str, str]]:
    """Return the trailers of the commit message as parsed by ``git interpret-trailers``."""
    if not _TRAILER_HINT.search(_message_text(commit)):
        return []
    return commit.trailers_list


# --------------------------------------------------------------------------- diffs


@dataclass
class _FileChange:
    """The paths and the changed lines of one file in one commit."""

    paths: tuple[str, ...]
    added: list[str]
    removed: list[str]

    @property
    def changed_lines(self) -> list[str]:
        return self.added + self.removed


def _message_text(commit: git.Commit) -> str:
    message = commit.message
    if isinstance(message, bytes):
        return message.decode("utf-8", errors="replace")
    return message


def _diff_paths(diff: git.Diff) -> tuple[str, ...]:
    paths = [path for path in (diff.a_path, diff.b_path) if path]
    return tuple(dict.fromkeys(paths))


def _file_change(diff: git.Diff) -> _FileChange:
    patch = diff.diff
    text = patch.decode("utf-8", errors="replace") if isinstance(patch, bytes) else patch or ""
    added: list[str] = []
    removed: list[str] = []
    for line in text.splitlines():
        if line.startswith("+"):
            added.append(line[1:])
        elif line.startswith("-"):
            removed.append(line[1:])
    return _FileChange(_diff_paths(diff), added, removed)


def _changed_files(repo: git.Repo, commit: git.Commit) -> list[_FileChange]:
    """Return the files that the commit changed, with their changed lines.

    A root commit is compared with the empty tree. A merge commit keeps only the files
    that differ from every parent, as the combined diff of ``git show -c`` does. The
    other files were changed by commits on the merged branches, which the review
    reads on their own.
    """
    if not commit.parents:
        diffs = repo.tree(NULL_TREE_SHA).diff(commit, create_patch=True)
        return [_file_change(diff) for diff in diffs]

    first_parent = commit.parents[0]
    diffs = first_parent.diff(commit, create_patch=True)
    if len(commit.parents) == 1:
        return [_file_change(diff) for diff in diffs]

    touched_by_every_parent: set[str] | None = None
    for parent in commit.parents:
        paths = {path for diff in parent.diff(commit) for path in _diff_paths(diff)}
        if touched_by_every_parent is None:
            touched_by_every_parent = paths
        else:
            touched_by_every_parent &= paths
    kept = touched_by_every_parent or set()
    return [_file_change(diff) for diff in diffs if set(_diff_paths(diff)) & kept]


class _NameMatcher:
    """Matcher of system names as whole words in lines of text, ignoring case."""

    def __init__(self, names: Iterable[str]) -> None:
        self._canonical = {name.lower(): name for name in names if name}
        if self._canonical:
            # Longest names first, so that "pve1-old" wins over "pve1".
            alternatives = sorted(self._canonical, key=len, reverse=True)
            pattern = "|".join(re.escape(name) for name in alternatives)
            self._pattern: re.Pattern[str] | None = re.compile(
                rf"(?<![{_NAME_CHARACTERS}])(?:{pattern})(?![{_NAME_CHARACTERS}])",
                re.IGNORECASE,
            )
        else:
            self._pattern = None

    def canonical(self, word: str) -> str | None:
        return self._canonical.get(word.lower())

    def find(self, lines: Iterable[str]) -> set[str]:
        if self._pattern is None:
            return set()
        found: set[str] = set()
        for line in lines:
            for match in self._pattern.finditer(line):
                found.add(self._canonical[match.group(0).lower()])
        return found


def _keyword_systems(subject: str, matcher: _NameMatcher) -> list[str]:
    """Return the system names that follow a decommission keyword at the start of a subject.

    "Retire pve3 and pve4" returns both names. The list ends at the first word that is
    no system name, so "Remove old backups from pve1" returns nothing.
    """
    match = _KEYWORD_SUBJECT.match(subject.strip())
    if not match:
        return []
    systems: list[str] = []
    for word in re.split(r"[\s,;]+", match.group("rest")):
        word = word.strip(".:!?()[]'\"`")
        if not word or word.lower() in _SUBJECT_CONNECTORS:
            continue
        name = matcher.canonical(word)
        if name is None:
            break
        systems.append(name)
    return systems


# --------------------------------------------------------------------------- one commit


class _CommitReviewer:
    """Converter of commits into change events, with a cache of parsed inventories by blob."""

    def __init__(
        self,
        repo: git.Repo,
        inventory_path: str,
        system_names: Callable[[str], set[str]],
        warnings: list[str],
    ) -> None:
        self._repo = repo
        self._inventory_path = inventory_path
        self._system_names = system_names
        self._warnings = warnings
        self._names_by_blob: dict[str, frozenset[str] | None] = {}

    def _warn(self, info: CommitInfo, message: str) -> None:
        text = f"Commit {info.short_sha}: {message}"
        logger.warning("%s", text)
        self._warnings.append(text)

    def _inventory_blob(self, commit: git.Commit) -> git.Blob | None:
        try:
            return commit.tree / self._inventory_path
        except KeyError:
            return None

    def inventory_names(self, commit: git.Commit, info: CommitInfo) -> frozenset[str] | None:
        """Return the system names of the inventory at ``commit``.

        Returns None when the file is missing or the parser raised ValueError.
        """
        blob = self._inventory_blob(commit)
        if blob is None:
            return None
        if blob.hexsha in self._names_by_blob:
            return self._names_by_blob[blob.hexsha]

        text = blob.data_stream.read().decode("utf-8", errors="replace")
        try:
            names: frozenset[str] | None = frozenset(self._system_names(text))
        except ValueError as error:
            self._warn(
                info,
                f"{self._inventory_path} at {commit.hexsha[:12]} could not be parsed "
                f"({error}); its systems are not compared",
            )
            names = None
        self._names_by_blob[blob.hexsha] = names
        return names

    def review(self, commit: git.Commit, info: CommitInfo) -> list[ChangeEvent]:
        current_names = self.inventory_names(commit, info)
        parent_names = [self.inventory_names(parent, info) for parent in commit.parents]
        known_names = set(current_names or ())
        for names in parent_names:
            known_names |= names or set()
        matcher = _NameMatcher(known_names)

        lifecycle: dict[tuple[EventKind, str], ChangeEvent] = {}
        maintenance: list[ChangeEvent] = []

        def add_lifecycle(kind: EventKind, system: str, source: EventSource) -> None:
            key = (kind, system)
            existing = lifecycle.get(key)
            if existing is None or _SOURCE_PRECEDENCE[source] < _SOURCE_PRECEDENCE[existing.source]:
                lifecycle[key] = ChangeEvent(kind, system, info, source)

        self._add_trailer_events(commit, info, matcher, add_lifecycle, maintenance)
        self._add_inventory_events(commit, info, current_names, parent_names, add_lifecycle)

        changes = _changed_files(self._repo, commit)
        removed_lines = [line for change in changes for line in change.removed]
        mentioned_in_removed = matcher.find(removed_lines)
        for system in _keyword_systems(info.subject, matcher):
            if system in mentioned_in_removed:
                add_lifecycle(EventKind.DECOMMISSION, system, EventSource.KEYWORD)

        lifecycle_systems = {system for (_, system) in lifecycle}
        for system in sorted(lifecycle_systems):
            kinds = {kind for (kind, name) in lifecycle if name == system}
            if kinds == {EventKind.DECOMMISSION, EventKind.NEW_SYSTEM}:
                self._warn(info, f"{system} is both decommissioned and added by this commit")

        config_changes = _config_change_events(info, changes, matcher, lifecycle_systems)
        events = sorted(
            lifecycle.values(), key=lambda event: (_KIND_ORDER[event.kind], event.system or "")
        )
        return events + maintenance + config_changes

    def _add_trailer_events(
        self,
        commit: git.Commit,
        info: CommitInfo,
        matcher: _NameMatcher,
        add_lifecycle: Callable[[EventKind, str, EventSource], None],
        maintenance: list[ChangeEvent],
    ) -> None:
        """Add the events of the Decommission, New-System and Maintenance trailers.

        System names take their spelling from the inventory.
        """
        for key, value in _read_trailers(commit):
            try:
                trailer = parse_trailer(key, value)
            except ValueError as error:
                self._warn(info, f"trailer '{key}: {value}' is invalid and was ignored: {error}")
                continue
            if trailer is None:
                continue

            for written_name in trailer.systems:
                system = matcher.canonical(written_name)
                if system is None:
                    system = written_name
                    self._warn(
                        info,
                        f"trailer '{key}: {value}' names {system}, which is not in "
                        f"{self._inventory_path} at this commit or its parent",
                    )
                if trailer.kind is EventKind.MAINTENANCE:
                    maintenance.append(
                        ChangeEvent(
                            EventKind.MAINTENANCE,
                            system,
                            info,
                            EventSource.TRAILER,
                            start=trailer.start,
                            end=trailer.end,
                        )
                    )
                else:
                    add_lifecycle(trailer.kind, system, EventSource.TRAILER)

    def _add_inventory_events(
        self,
        commit: git.Commit,
        info: CommitInfo,
        current_names: frozenset[str] | None,
        parent_names: list[frozenset[str] | None],
        add_lifecycle: Callable[[EventKind, str, EventSource], None],
    ) -> None:
        """Add the systems that the commit added to or removed from the inventory.

        A merge counts only names that differ from every parent, as ``git show -c`` does
        for files.
        """
        if not parent_names:
            return
        if current_names is None or any(names is None for names in parent_names):
            deleted = self._inventory_blob(commit) is None and any(
                self._inventory_blob(parent) is not None for parent in commit.parents
            )
            if deleted:
                self._warn(
                    info,
                    f"this commit deletes or moves {self._inventory_path}, so no system "
                    "is reported as decommissioned by the inventory diff",
                )
            return

        parents = [names for names in parent_names if names is not None]
        in_any_parent = frozenset().union(*parents)
        in_every_parent = frozenset.intersection(*parents)
        for system in sorted(current_names - in_any_parent):
            add_lifecycle(EventKind.NEW_SYSTEM, system, EventSource.INVENTORY_DIFF)
        for system in sorted(in_every_parent - current_names):
            add_lifecycle(EventKind.DECOMMISSION, system, EventSource.INVENTORY_DIFF)


def _config_change_events(
    info: CommitInfo,
    changes: list[_FileChange],
    matcher: _NameMatcher,
    lifecycle_systems: set[str],
) -> list[ChangeEvent]:
    """Group the changed files by the systems that their changed lines mention.

    Systems with a decommission or new-system event in the same commit are left out,
    because that event already explains their lines. Files that mention no other
    system form one event with no system.
    """
    files_by_system: dict[str, list[str]] = {}
    unassigned: list[str] = []
    for change in changes:
        mentioned = matcher.find(change.changed_lines)
        for system in mentioned - lifecycle_systems:
            files_by_system.setdefault(system, []).extend(change.paths)
        if not mentioned:
            unassigned.extend(change.paths)

    events = [
        ChangeEvent(
            EventKind.CONFIG_CHANGE,
            system,
            info,
            EventSource.DIFF,
            files=tuple(files),
            touches_docs=any(path.startswith(DOCS_PREFIX) for path in files),
        )
        for system, files in sorted(files_by_system.items())
    ]
    if unassigned:
        events.append(
            ChangeEvent(
                EventKind.CONFIG_CHANGE, None, info, EventSource.DIFF, files=tuple(unassigned)
            )
        )
    return events


# --------------------------------------------------------------------------- commit ranges


def _open_repo(repo_path: Path) -> git.Repo:
    try:
        repo = git.Repo(repo_path)
    except (InvalidGitRepositoryError, NoSuchPathError) as error:
        raise ChangeReviewError(
            f"{repo_path} is not a git repository; clone the infra repository there"
        ) from error
    if not repo.head.is_valid():
        raise ChangeReviewError(f"git repository {repo_path} has no commits; commit the docs first")
    return repo


def _list_commits(
    repo: git.Repo, revision: str, max_count: int, after: datetime | None = None
) -> list[tuple[git.Commit, str]]:
    """Return commits of ``revision`` newest first, with short shas.

    ``--date-order`` lists children before parents and otherwise orders by commit date.
    """
    arguments = ["--date-order", f"--max-count={max_count}", "--format=%h"]
    if after is not None:
        arguments.append(f"--since={after.isoformat()}")
    output = repo.git.rev_list(*arguments, revision)

    # rev-list prints "commit <sha>" and then the formatted line for every commit.
    lines = output.splitlines()
    commits: list[tuple[git.Commit, str]] = []
    for header, short_sha in zip(lines[::2], lines[1::2], strict=True):
        sha = header.removeprefix("commit ").strip()
        commit = repo.commit(sha)
        if after is not None and commit.committed_datetime < after:
            continue
        commits.append((commit, short_sha.strip()))
    return commits


def _resolve_since(
    repo: git.Repo, since_commit: str | None, head: git.Commit, warnings: list[str]
) -> str | None:
    """Return the full sha of ``since_commit`` when it is an ancestor of HEAD, else None."""
    if since_commit is None:
        return None
    try:
        # repo.commit() accepts any 40-digit sha without reading it, but rev-parse --verify
        # fails when the object is missing.
        since_sha = repo.git.rev_parse("--verify", "--quiet", f"{since_commit}^{{commit}}")
    except GitCommandError:
        message = (
            f"Last reviewed commit {since_commit} no longer exists (history was rewritten); "
            "reviewing the first-run window instead"
        )
        logger.warning("%s", message)
        warnings.append(message)
        return None
    if not repo.is_ancestor(since_sha, head):
        message = (
            f"Last reviewed commit {since_commit} is not an ancestor of HEAD {head.hexsha[:12]} "
            "(history was rewritten); reviewing the first-run window instead"
        )
        logger.warning("%s", message)
        warnings.append(message)
        return None
    return since_sha


def _earlier_windows(
    repo: git.Repo, since_sha: str, after: datetime, max_commits: int, matcher: _NameMatcher
) -> list[MaintenanceWindow]:
    """Return the maintenance windows set by ``since_sha`` and its ancestors after ``after``.

    System names take their inventory spelling from ``matcher``. Invalid trailers are
    skipped without a warning, because the review that read those commits reported them.
    """
    windows: list[MaintenanceWindow] = []
    for commit, short_sha in reversed(_list_commits(repo, since_sha, max_commits, after)):
        info: CommitInfo | None = None
        for key, value in _read_trailers(commit):
            try:
                trailer = parse_trailer(key, value)
            except ValueError:
                continue
            if trailer is None or trailer.kind is not EventKind.MAINTENANCE:
                continue
            if trailer.start is None or trailer.end is None:
                continue
            info = info or CommitInfo.from_commit(commit, short_sha)
            windows.extend(
                MaintenanceWindow(matcher.canonical(name) or name, trailer.start, trailer.end, info)
                for name in trailer.systems
            )
    if windows:
        logger.info(
            "Found %s set before the reviewed commits",
            _format_count(len(windows), "maintenance window"),
        )
    return windows


# --------------------------------------------------------------------------- entry point


def review_changes(
    repo_path: Path,
    since_commit: str | None,
    *,
    now: datetime,
    inventory_path: str = DEFAULT_INVENTORY_PATH,
    system_names: Callable[[str], set[str]],
    first_run_days: int = 30,
    max_commits: int = 500,
    window_lookback_days: int = 30,
) -> ChangeContext:
    """Review the commits reachable from HEAD after ``since_commit`` and return their events.

    ``since_commit`` is excluded. When it is None (first run), or it no longer exists
    or is no longer an ancestor of HEAD (rewritten history), the review covers the
    commits of the last ``first_run_days`` before ``now`` instead, and a fallback adds
    a warning. Commits dated after ``now`` are included. At most ``max_commits`` of
    the newest commits are read, and a warning reports that older ones were left out.

    ``system_names`` returns the system names of an inventory text and may raise
    ValueError for text it cannot parse. Maintenance windows set by commits before
    the range, up to ``window_lookback_days`` before ``now``, are added to
    ``ChangeContext.windows``.

    Raises ChangeReviewError when ``repo_path`` is no git repository or has no commits.
    """
    _require_aware(now, "now")
    for name, value in (
        ("first_run_days", first_run_days),
        ("max_commits", max_commits),
        ("window_lookback_days", window_lookback_days),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")

    repo = _open_repo(repo_path)
    head = repo.head.commit
    warnings: list[str] = []
    since_sha = _resolve_since(repo, since_commit, head, warnings)

    # One more than the limit, to tell whether commits were left out.
    if since_sha is None:
        cutoff = now - timedelta(days=first_run_days)
        listed = _list_commits(repo, head.hexsha, max_commits + 1, after=cutoff)
    else:
        listed = _list_commits(repo, f"{since_sha}..{head.hexsha}", max_commits + 1)
    if len(listed) > max_commits:
        message = (
            f"More than {max_commits} commits to review; only the newest {max_commits} "
            "were read. Raise max_commits to read them all"
        )
        logger.warning("%s", message)
        warnings.append(message)
        listed = listed[:max_commits]
    listed.reverse()

    if since_sha:
        reviewed_range = f"after {since_sha[:12]}"
    else:
        reviewed_range = f"from the last {_format_count(first_run_days, 'day')}"
    logger.info(
        "Reviewing %s of %s %s up to %s",
        _format_count(len(listed), "commit"),
        repo_path,
        reviewed_range,
        head.hexsha[:12],
    )
    reviewer = _CommitReviewer(repo, inventory_path, system_names, warnings)
    commits: list[CommitInfo] = []
    events: list[ChangeEvent] = []
    for commit, short_sha in listed:
        info = CommitInfo.from_commit(commit, short_sha)
        commits.append(info)
        events.extend(reviewer.review(commit, info))

    windows = [
        MaintenanceWindow.from_event(event)
        for event in events
        if event.kind is EventKind.MAINTENANCE
    ]
    if since_sha is not None:
        head_info = CommitInfo.from_commit(head, repo.git.rev_parse("--short", head.hexsha))
        head_matcher = _NameMatcher(reviewer.inventory_names(head, head_info) or ())
        lookback_start = now - timedelta(days=window_lookback_days)
        earlier = _earlier_windows(repo, since_sha, lookback_start, max_commits, head_matcher)
        windows = earlier + windows

    logger.info(
        "Reviewed %s up to %s: %s, %s, %s",
        _format_count(len(commits), "commit"),
        head.hexsha[:12],
        _format_count(len(events), "event"),
        _format_count(len(windows), "maintenance window"),
        _format_count(len(warnings), "warning"),
    )
    return ChangeContext(
        head_sha=head.hexsha,
        since_sha=since_sha,
        inventory_path=inventory_path,
        commits=commits,
        events=events,
        windows=windows,
        warnings=warnings,
    )
