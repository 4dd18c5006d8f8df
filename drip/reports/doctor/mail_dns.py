"""The From domain's DNS, as SendGrid and the big mailbox providers want it: SPF, DKIM, DMARC.

Plain functions of a domain and a resolver (tests point the resolver at a local DNS server):

- :func:`check_domain`: DNS answers at all, and the domain exists (the others need it);
- :func:`check_spf`: the domain has one SPF record and it authorizes ``include:sendgrid.net``,
  directly or through its own includes (at most the 10 lookups SPF allows, RFC 7208 4.6.4);
- :func:`check_dkim`: each DKIM selector's ``<selector>._domainkey.<domain>`` is a CNAME into
  ``sendgrid.net`` (SendGrid's automated security: ``s1`` and ``s2``);
- :func:`check_dmarc`: ``_dmarc.<domain>`` holds one DMARC record with a policy; ``p=none`` is
  a warning (monitoring only).

A lookup that fails (no answer in time, SERVFAIL) is a ``fail`` saying so, never an exception.
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.resolver

from drip.reports.doctor.dns_lookup import (
    DnsLookupError,
    cname_target,
    domain_exists,
    txt_records,
)
from drip.reports.doctor.findings import Finding, fail, ok, warn

SENDGRID = "sendgrid.net"
SPF_INCLUDE = f"include:{SENDGRID}"
MAX_SPF_LOOKUPS = 10
DMARC_POLICIES = ("none", "quarantine", "reject")
ASK_DNS = (
    "check that DRIP_DNS_NAMESERVER (or this server's resolver) answers, then run `drip doctor` "
    "again"
)


def from_domain(from_email: str) -> str:
    """The domain of ``DRIP_FROM_EMAIL``, lower case."""
    return from_email.rpartition("@")[2].strip().rstrip(".").lower()


def check_domain(domain: str, resolver: dns.resolver.Resolver) -> Finding:
    try:
        exists = domain_exists(resolver, domain)
    except DnsLookupError as err:
        return fail(str(err), ASK_DNS)
    if not exists:
        return fail(
            f"DRIP_FROM_EMAIL: the domain {domain} does not exist in DNS",
            "send from a domain you own and can add DNS records to, and set DRIP_FROM_EMAIL "
            "to an address there",
        )
    return ok(f"DNS answers for {domain}")


def check_spf(domain: str, resolver: dns.resolver.Resolver) -> Finding:
    try:
        records = _spf_records(resolver, domain)
        if len(records) != 1:
            return _spf_count_problem(domain, len(records))
        path = _path_to_sendgrid(resolver, records[0], [MAX_SPF_LOOKUPS])
    except DnsLookupError as err:
        return fail(str(err), ASK_DNS)
    if path is None:
        return fail(
            f"SPF of {domain} does not include {SENDGRID}",
            f"add {SPF_INCLUDE} to the TXT record (before its all), e.g. "
            f'"v=spf1 {SPF_INCLUDE} ~all"',
        )
    through = f" (through {' -> '.join(path)})" if path else ""
    return ok(f"SPF of {domain} includes {SENDGRID}{through}")


def check_dkim(
    domain: str, resolver: dns.resolver.Resolver, selectors: Sequence[str] = ("s1", "s2")
) -> Finding:
    names = [f"{selector}._domainkey.{domain}" for selector in selectors]
    problems = []
    try:
        for name in names:
            target = cname_target(resolver, name)
            if target is None:
                problems.append(f"no CNAME at {name}")
            elif not _in_sendgrid(target):
                problems.append(f"{name} points to {target}, not into {SENDGRID}")
    except DnsLookupError as err:
        return fail(str(err), ASK_DNS)
    if problems:
        return fail(
            "; ".join(problems),
            f"add the DKIM CNAMEs SendGrid shows for {domain} (Settings > Sender "
            f"Authentication), e.g. {selectors[0]}._domainkey -> "
            f"{selectors[0]}.domainkey.u1234.wl123.{SENDGRID}; with a custom DKIM selector, "
            "set DRIP_DKIM_SELECTORS to the selectors SendGrid shows",
        )
    return ok(f"DKIM: {', '.join(names)} point into {SENDGRID}")


def check_dmarc(domain: str, resolver: dns.resolver.Resolver) -> Finding:
    name = f"_dmarc.{domain}"
    try:
        records = [r for r in txt_records(resolver, name) if _tags(r).get("v") == "DMARC1"]
    except DnsLookupError as err:
        return fail(str(err), ASK_DNS)
    if not records:
        return fail(
            f"no DMARC record at {name}",
            f'add a TXT record at {name}: "v=DMARC1; p=none; rua=mailto:dmarc@{domain}" '
            "(Gmail and Yahoo require one of bulk senders)",
        )
    if len(records) > 1:
        return fail(
            f"{name} has {len(records)} DMARC records, so receivers ignore them all",
            "keep exactly one",
        )
    policy = _tags(records[0]).get("p", "").lower()
    if policy not in DMARC_POLICIES:
        return fail(
            f"the DMARC record at {name} has no valid policy (p=none, quarantine or reject)",
            f'add p=none to it: "v=DMARC1; p=none; rua=mailto:dmarc@{domain}"',
        )
    if policy == "none":
        return warn(
            f"DMARC of {domain}: p=none, which only monitors",
            "move to p=quarantine, then p=reject, once the aggregate reports show only mail "
            "you send",
        )
    return ok(f"DMARC of {domain}: p={policy}")


def _spf_records(resolver: dns.resolver.Resolver, domain: str) -> list[str]:
    records = txt_records(resolver, domain)
    return [r for r in records if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]


def _spf_count_problem(domain: str, count: int) -> Finding:
    if count == 0:
        return fail(
            f"no SPF record at {domain} (a TXT record starting v=spf1)",
            f'add a TXT record at {domain}: "v=spf1 {SPF_INCLUDE} ~all"',
        )
    return fail(
        f"{domain} has {count} SPF records, which receivers treat as an error (RFC 7208)",
        f"merge them into one TXT record that has {SPF_INCLUDE}",
    )


def _path_to_sendgrid(
    resolver: dns.resolver.Resolver, record: str, lookups_left: list[int]
) -> list[str] | None:
    """The domains an SPF ``record`` goes through to reach ``include:sendgrid.net`` (``[]``:
    directly), or None if it never does. ``lookups_left`` is shared down the recursion, so a
    loop of includes ends."""
    for term in record.split()[1:]:
        if term[0] in "-~?":  # a qualifier other than pass does not authorize SendGrid
            continue
        mechanism = term.lstrip("+").lower().rstrip(".")
        if mechanism == SPF_INCLUDE:
            return []
        target = _include_target(mechanism)
        if target is None or lookups_left[0] <= 0:
            continue
        lookups_left[0] -= 1
        nested = _spf_records(resolver, target)
        if len(nested) == 1:
            path = _path_to_sendgrid(resolver, nested[0], lookups_left)
            if path is not None:
                return [target, *path]
    return None


def _include_target(mechanism: str) -> str | None:
    for prefix in ("include:", "redirect="):
        if mechanism.startswith(prefix) and "%" not in mechanism:  # macros: not followed
            return mechanism.removeprefix(prefix)
    return None


def _in_sendgrid(target: str) -> bool:
    return target == SENDGRID or target.endswith(f".{SENDGRID}")


def _tags(record: str) -> dict[str, str]:
    """A DMARC record's ``tag=value`` pairs (``v=DMARC1; p=none``)."""
    tags = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = value.strip()
    return tags
