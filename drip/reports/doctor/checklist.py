"""Every check of ``drip doctor``, in the order they run, and :func:`diagnose`.

Contract of :func:`diagnose`: one result per check, settings first; the order and the names are
stable (monitoring keys on them). When the settings don't load, every other check is skipped.
Nothing here raises.
"""

from __future__ import annotations

from collections.abc import Callable

from dns.resolver import Resolver

from drip.clock import Clock, system_clock
from drip.reports.doctor import (
    beat,
    configuration,
    content,
    database,
    sending,
    services,
    tracking,
)
from drip.reports.doctor.dns_lookup import DnsLookupError, make_resolver
from drip.reports.doctor.findings import CheckResult, Finding, fail
from drip.reports.doctor.mail_dns import (
    check_dkim,
    check_dmarc,
    check_domain,
    check_spf,
    from_domain,
)
from drip.reports.doctor.runner import (
    WORKER_PING_SECONDS,
    Check,
    Context,
    WorkerPing,
    run_checks,
    skipped,
)
from drip.settings import Settings

SETTINGS = "settings"


def check_from_domain(context: Context) -> Finding:
    return _ask_dns(context, check_domain)


def check_spf_record(context: Context) -> Finding:
    return _ask_dns(context, check_spf)


def check_dkim_records(context: Context) -> Finding:
    selectors = context.settings.dkim_selectors
    return _ask_dns(context, lambda domain, resolver: check_dkim(domain, resolver, selectors))


def check_dmarc_record(context: Context) -> Finding:
    return _ask_dns(context, check_dmarc)


def _ask_dns(context: Context, check: Callable[[str, Resolver], Finding]) -> Finding:
    """``check`` of the From domain, asked through ``DRIP_DNS_NAMESERVER`` or the system's."""
    try:
        resolver = make_resolver(context.settings.dns_nameserver)
    except DnsLookupError as err:
        return fail(str(err), "set DRIP_DNS_NAMESERVER to a DNS server's IP address")
    return check(from_domain(context.settings.from_email), resolver)


CHECKS: tuple[Check, ...] = (
    Check("secret-key", configuration.check_secret_key),
    Check("database", database.check_database),
    Check("migrations", database.check_migrations, needs=("database",)),
    Check("redis", services.check_redis),
    Check("broker", services.check_broker),
    Check("worker", services.check_worker, needs=("broker",)),
    Check("beat", beat.check_beat, needs=("redis", "worker")),
    Check("tracking-drain", tracking.check_drain, needs=("redis",)),
    Check("content", content.check_content),
    Check("email-backend", sending.check_backend),
    # One DNS server that does not answer costs one timeout, not one per record.
    Check("dns", check_from_domain),
    Check("spf", check_spf_record, needs=("dns",)),
    Check("dkim", check_dkim_records, needs=("dns",)),
    Check("dmarc", check_dmarc_record, needs=("dns",)),
    Check("event-webhook", configuration.check_event_webhook),
    Check("purchase-webhook", configuration.check_purchase_webhook),
    Check("healthz", services.check_healthz),
)


def diagnose(
    load_settings: Callable[[], Settings],
    *,
    ping_workers: WorkerPing,
    clock: Clock = system_clock,
    worker_timeout: float = WORKER_PING_SECONDS,
) -> list[CheckResult]:
    """Run every check against the settings ``load_settings`` returns."""
    settings, finding = configuration.load_checked(load_settings)
    head = CheckResult.named(SETTINGS, finding)
    if settings is None:
        return [head, *skipped(CHECKS, f"needs {SETTINGS}, which did not pass")]
    context = Context(settings, ping_workers, clock, worker_timeout)
    return [head, *run_checks(CHECKS, context)]
