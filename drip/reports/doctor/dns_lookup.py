"""Asking DNS for the records the doctor checks: TXT strings and a CNAME's target.

Contract: a name that does not exist, or has no record of the type asked, is an empty answer
(``[]``, ``None``), since "missing" is what the checks report; a server that cannot be asked (no
answer in time, SERVFAIL, no resolver configured) raises :class:`DnsLookupError`.
"""

from __future__ import annotations

import dns.exception
import dns.name
import dns.resolver

from drip.settings import parse_nameserver

LOOKUP_SECONDS = 5.0

_ABSENT = (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer)


class DnsLookupError(Exception):
    """DNS could not be asked; the message says which name and why."""


def make_resolver(
    nameserver: str | None, *, lifetime: float = LOOKUP_SECONDS
) -> dns.resolver.Resolver:
    """A resolver asking ``nameserver`` (``DRIP_DNS_NAMESERVER``: an IP, optionally ``:port``),
    or the system's resolvers when it is None; each lookup gives up after ``lifetime`` seconds."""
    if nameserver is None:
        try:
            resolver = dns.resolver.Resolver(configure=True)
        except dns.resolver.NoResolverConfiguration as err:
            raise DnsLookupError(f"this system has no DNS resolver configured: {err}") from err
    else:
        address, port = parse_nameserver(nameserver)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [address]
        resolver.port = port
    resolver.lifetime = lifetime
    resolver.timeout = lifetime
    return resolver


def domain_exists(resolver: dns.resolver.Resolver, name: str) -> bool:
    """False when DNS says ``name`` does not exist (NXDOMAIN); True when it has any record."""
    try:
        resolver.resolve(_absolute(name), "SOA", search=False)
    except dns.resolver.NXDOMAIN:
        return False
    except dns.resolver.NoAnswer:  # a name below its zone's apex: it exists, the SOA is above
        return True
    except dns.exception.DNSException as err:
        raise DnsLookupError(f"could not look up {name}: {_reason(err)}") from err
    return True


def txt_records(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """Each TXT record of ``name`` as one string (its character-strings joined, as SPF and DMARC
    read them)."""
    try:
        answer = resolver.resolve(_absolute(name), "TXT", search=False)
    except _ABSENT:
        return []
    except dns.exception.DNSException as err:
        raise DnsLookupError(f"could not look up TXT {name}: {_reason(err)}") from err
    return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer]


def cname_target(resolver: dns.resolver.Resolver, name: str) -> str | None:
    """Where the CNAME at ``name`` points (lower case, no final dot), or None without one."""
    try:
        answer = resolver.resolve(_absolute(name), "CNAME", search=False)
    except _ABSENT:
        return None
    except dns.exception.DNSException as err:
        raise DnsLookupError(f"could not look up CNAME {name}: {_reason(err)}") from err
    return str(answer[0].target.to_text()).rstrip(".").lower()


def _absolute(name: str) -> dns.name.Name:
    return dns.name.from_text(name.rstrip(".") + ".")


def _reason(err: dns.exception.DNSException) -> str:
    return str(err) or type(err).__name__
