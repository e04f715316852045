"""Check the inventory against DNS: forward lookups of every name, reverse lookups of every address.

All queries go to the one configured resolver, never to the machine's own
resolver configuration. A system name without a dot gets the configured domain
appended. Findings, per system:

- ``name_not_found``: neither an A nor an AAAA record exists for the name (or
  for a host name written as the address);
- ``forward_mismatch``: the name resolves, but not to the system's IP address;
- ``reverse_other_system``: the PTR record of the system's address names another
  system of the inventory, which usually means the address was reused;
- ``reverse_mismatch``: the PTR record names a host that is not in the inventory;
- ``no_reverse_record``: the address has no PTR record;
- ``lookup_failed``: the resolver returned an error such as REFUSED or SERVFAIL.

Loopback addresses are not looked up in reverse, because every host maps them
to ``localhost``. A resolver that times out or cannot be reached marks the DNS
source as down and ends the checks of this pass.
"""

import enum
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from prep_assets.inventory.discovery.config import DnsSource
from prep_assets.inventory.discovery.records import ErrorKind, SourceResult
from prep_assets.models import System

logger = logging.getLogger(__name__)


class FindingKind(enum.StrEnum):
    NAME_NOT_FOUND = "name_not_found"
    FORWARD_MISMATCH = "forward_mismatch"
    REVERSE_OTHER_SYSTEM = "reverse_other_system"
    REVERSE_MISMATCH = "reverse_mismatch"
    NO_REVERSE_RECORD = "no_reverse_record"
    LOOKUP_FAILED = "lookup_failed"


@dataclass(frozen=True)
class DnsFinding:
    """One disagreement between DNS and the inventory."""

    system: str
    kind: FindingKind
    # The name or address that was looked up.
    query: str
    # The answers: addresses for a forward lookup, host names for a reverse one.
    found: tuple[str, ...]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "kind": self.kind.value,
            "query": self.query,
            "found": list(self.found),
            "message": self.message,
        }


class _ResolverDown(Exception):
    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class _LookupFailed(Exception):
    """The resolver returned an error rcode for the query."""


def check_dns(
    source: DnsSource, systems: Sequence[System]
) -> tuple[SourceResult, list[DnsFinding]]:
    """Look up every system's name and address; return the source result and the findings.

    When the resolver goes down part way, the findings made so far are dropped with
    the rest, because a partial list would read as "everything else is fine".
    """
    result = SourceResult(source.key, "dns", "dns", source.endpoint)
    checker = _Checker(source, systems, result)
    findings: list[DnsFinding] = []
    with result.timed():
        try:
            for system in sorted(systems, key=lambda system: system.name):
                findings.extend(checker.check(system))
        except _ResolverDown as error:
            result.fail(error.kind, error.message)
            findings = []
    if result.error_kind is not None:
        logger.warning(
            "DNS resolver %s is down for discovery (%s): %s",
            source.endpoint,
            result.error_kind.value,
            result.message,
        )
    else:
        logger.info(
            "DNS checks against %s: %d systems, %d queries, %d findings in %.0f ms",
            source.endpoint,
            len(systems),
            result.api_calls,
            len(findings),
            result.duration_ms,
        )
    return result, findings


def fqdn(name: str, domain: str | None) -> str:
    """Return ``name`` with ``domain`` appended when it has no dot, in lower case."""
    text = name.strip().rstrip(".").lower()
    if "." in text or not domain:
        return text
    return f"{text}.{domain}"


class _Checker:
    def __init__(self, source: DnsSource, systems: Sequence[System], result: SourceResult) -> None:
        self.source = source
        self.result = result
        self.resolver = dns.resolver.Resolver(configure=False)
        self.resolver.nameservers = [source.host]
        self.resolver.port = source.port
        self.resolver.timeout = source.timeout
        self.resolver.lifetime = source.timeout
        self.resolver.cache = None
        # Every spelling that names a system: full name and the name without the domain.
        self.owner_by_name: dict[str, System] = {}
        for system in systems:
            for spelling in self._spellings(system.name):
                self.owner_by_name.setdefault(spelling, system)

    def _spellings(self, name: str) -> set[str]:
        full = fqdn(name, self.source.domain)
        return {full, full.split(".", 1)[0], name.lower()}

    def check(self, system: System) -> list[DnsFinding]:
        findings: list[DnsFinding] = []
        name = fqdn(system.name, self.source.domain)
        findings.extend(self._forward(system, name))
        address = _ip(system.address)
        if system.address and address is None and fqdn(system.address, self.source.domain) != name:
            findings.extend(self._forward(system, fqdn(system.address, self.source.domain)))
        if address is not None and not address.is_loopback:
            findings.extend(self._reverse(system, address))
        return findings

    def _forward(self, system: System, name: str) -> list[DnsFinding]:
        try:
            found = self._query(name, "A") + self._query(name, "AAAA")
        except _LookupFailed as error:
            return [self._finding(system, FindingKind.LOOKUP_FAILED, name, (), str(error))]
        if not found:
            return [
                self._finding(
                    system,
                    FindingKind.NAME_NOT_FOUND,
                    name,
                    (),
                    f"{name} does not resolve: the resolver has no A or AAAA record for it",
                )
            ]
        address = _ip(system.address)
        if (
            address is not None
            and str(address) not in found
            and name == fqdn(system.name, self.source.domain)
        ):
            return [
                self._finding(
                    system,
                    FindingKind.FORWARD_MISMATCH,
                    name,
                    tuple(found),
                    f"{name} resolves to {', '.join(found)}, not to the inventory address "
                    f"{address}",
                )
            ]
        return []

    def _reverse(
        self, system: System, address: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> list[DnsFinding]:
        query = str(address)
        reverse_name = dns.reversename.from_address(query).to_text()
        try:
            names = [name.rstrip(".").lower() for name in self._query(reverse_name, "PTR")]
        except _LookupFailed as error:
            return [self._finding(system, FindingKind.LOOKUP_FAILED, query, (), str(error))]
        if not names:
            return [
                self._finding(
                    system,
                    FindingKind.NO_REVERSE_RECORD,
                    query,
                    (),
                    f"{query} of {system.name} has no PTR record",
                )
            ]
        own = self._spellings(system.name)
        if any(name in own or name.split(".", 1)[0] in own for name in names):
            return []
        for name in names:
            other = self.owner_by_name.get(name) or self.owner_by_name.get(name.split(".", 1)[0])
            if other is not None and other.name != system.name and other.address != system.address:
                return [
                    self._finding(
                        system,
                        FindingKind.REVERSE_OTHER_SYSTEM,
                        query,
                        tuple(names),
                        f"the PTR record of {query} names {name}, which is the system "
                        f"{other.name}, not {system.name}; the address may have been reused",
                    )
                ]
        return [
            self._finding(
                system,
                FindingKind.REVERSE_MISMATCH,
                query,
                tuple(names),
                f"the PTR record of {query} names {', '.join(names)}, not {system.name}",
            )
        ]

    def _query(self, name: str, record_type: str) -> list[str]:
        """Return the answers' texts; an empty list for NXDOMAIN or no records of that type."""
        self.result.api_calls += 1
        try:
            answer = self.resolver.resolve(
                dns.name.from_text(name), record_type, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.Timeout:
            raise _ResolverDown(
                ErrorKind.TIMED_OUT,
                f"the resolver did not answer a {record_type} query for {name} within "
                f"{self.source.timeout:g} s",
            ) from None
        except dns.resolver.NoNameservers as error:
            raise self._nameserver_failure(error, name, record_type) from None
        except dns.exception.DNSException as error:
            raise _LookupFailed(f"the {record_type} lookup of {name} failed: {error}") from None
        if answer.rrset is None:
            return []
        return [record.to_text() for record in answer.rrset]

    def _nameserver_failure(
        self, error: dns.resolver.NoNameservers, name: str, record_type: str
    ) -> Exception:
        """Return _ResolverDown when the resolver could not be reached, else _LookupFailed."""
        for entry in error.kwargs.get("errors", []):
            reason = entry[-1] if isinstance(entry, tuple) else entry
            if isinstance(reason, OSError):
                return _ResolverDown(
                    ErrorKind.UNREACHABLE,
                    f"the resolver {self.source.endpoint} cannot be reached: {reason}",
                )
        return _LookupFailed(
            f"the resolver returned an error for the {record_type} lookup of {name}: {error}"
        )

    def _finding(
        self, system: System, kind: FindingKind, query: str, found: tuple[str, ...], message: str
    ) -> DnsFinding:
        return DnsFinding(system.name, kind, query, found, message)


def _ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not value:
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None
