"""The figures the dashboard shows, read through the functions the admin API and the CLI use.

Nothing is computed here that those lack: subscriber counts and growth come from
:mod:`drip.subscribers.queries`, per-email results, the funnel and revenue from
:func:`drip.reports.stats.collect` (``GET /api/v1/admin/stats``). What this module adds is caching
(:mod:`drip.web.dashboard.cache`) and shaping for display: weeks from days, rates, money.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Request

from drip.reports.sequences import SequenceFigures
from drip.reports.stats import EmailStats, Stats, collect
from drip.subscribers.queries import DayCount, daily_growth, status_counts
from drip.web.dashboard.cache import figure_cache
from drip.web.deps import runtime

DAYS_SHOWN = 30
WEEKS_SHOWN = 26


@dataclass(frozen=True)
class Period:
    label: str
    signups: int
    confirmations: int


def counts(request: Request) -> tuple[dict[str, int], datetime]:
    """Subscribers per status and the suppression list's size, and when they were counted."""
    rt = runtime(request)

    def compute() -> dict[str, int]:
        with rt.sessions() as session:
            return status_counts(session)

    return figure_cache(request).get("status_counts", compute)


def stats(request: Request) -> tuple[Stats, datetime]:
    """``drip.reports.stats.collect``: the course, and every sequence in ``per_sequence``
    (cached like the counts)."""
    rt = runtime(request)

    def compute() -> Stats:
        with rt.sessions() as session:
            return collect(
                session,
                rt.library,
                rt.settings.course_sequence,
                rt.clock(),
                automations=rt.automations,
            )

    return figure_cache(request).get("stats", compute)


def growth(request: Request, by: str) -> list[Period]:
    """Signups and confirmations per day (the last 30) or ISO week (the last 26), in the
    dashboard's zone. Both views share one computation of the 26 weeks' days (the day view is
    its tail)."""
    rt = runtime(request)
    zone = rt.settings.dashboard_zone
    now = rt.clock().astimezone(zone)
    today = datetime(now.year, now.month, now.day, tzinfo=zone)  # local midnight
    since = today - timedelta(days=today.weekday(), weeks=WEEKS_SHOWN - 1)

    def compute() -> list[DayCount]:
        with rt.sessions() as session:
            return daily_growth(session, since, now, zone)

    days, _ = figure_cache(request).get("growth", compute)
    if by == "day":
        return [Period(f"{d.day:%b %d}", d.signups, d.confirmations) for d in days[-DAYS_SHOWN:]]
    weeks: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for d in days:
        monday = d.day - timedelta(days=d.day.weekday())
        week = weeks[f"{monday:%b %d}"]
        week[0] += d.signups
        week[1] += d.confirmations
    return [Period(label, s, c) for label, (s, c) in weeks.items()]


def rate(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def money(amounts: dict[str, int]) -> str:
    """``1,234.00 USD + 99.00 EUR`` from minor units per currency; ``0`` when empty."""
    if not amounts:
        return "0"
    return " + ".join(f"{cents / 100:,.2f} {cur}" for cur, cents in sorted(amounts.items()))


def total_revenue(stats: Stats) -> dict[str, int]:
    """Every purchase: credited to an email or not (the stats keep both)."""
    total: dict[str, int] = defaultdict(int)
    for email in stats.emails:
        for currency, cents in email.revenue.items():
            total[currency] += cents
    for currency, cents in stats.unattributed_revenue.items():
        total[currency] += cents
    return dict(total)


def total_conversions(stats: Stats) -> int:
    return sum(e.conversions for e in stats.emails) + stats.unattributed_conversions


def by_key(stats: Stats) -> dict[str, EmailStats]:
    return {e.message_key: e for e in stats.emails}


def sequence(request: Request, slug: str) -> tuple[SequenceFigures | None, datetime]:
    """One sequence's figures from the cached stats (``None``: no such sequence)."""
    stats_, at = stats(request)
    return next((s for s in stats_.per_sequence if s.slug == slug), None), at


def forget(request: Request) -> None:
    """Drop the cached figures after a change made from the dashboard itself."""
    figure_cache(request).clear()
