"""The overview page: subscribers, growth, the course funnel, revenue.

A banner on top links to the Sending page when sending needs a person (paused, unknown emails
past the settle time, failures of the last week). It is read on every view, not cached with the
figures: two small index counts, and a pause must not show a minute late.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response

from drip.reports import sending_health
from drip.web.dashboard import figures
from drip.web.dashboard.charts import funnel, grouped_bars
from drip.web.dashboard.rendering import admin_page
from drip.web.dashboard.security import Admin, DashboardRoute
from drip.web.deps import RuntimeDep

if TYPE_CHECKING:
    from drip.runtime import Runtime

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)


def _attention(rt: Runtime) -> sending_health.Attention:
    with rt.sessions() as session:
        return sending_health.attention(session, rt.clock(), rt.settings.unknown_settle_minutes)


@router.get("")
def overview(
    request: Request, admin: Admin, rt: RuntimeDep, by: Literal["week", "day"] = "week"
) -> Response:
    counts, counted_at = figures.counts(request)
    stats, stats_at = figures.stats(request)
    periods = figures.growth(request, by)
    steps = stats.funnel.steps()
    growth_chart = grouped_bars(
        "growth",
        f"Signups and confirmations per {by}",
        [p.label for p in periods],
        [
            ("signups", [p.signups for p in periods]),
            ("confirmations", [p.confirmations for p in periods]),
        ],
    )
    funnel_chart = funnel("funnel", "The course funnel", steps)
    first = steps[0][1] if steps else 0
    context = {
        "section": "overview",
        "attention": _attention(rt),
        "counts": counts,
        "counted_at": counted_at,
        "stats_at": stats_at,
        "by": by,
        "periods": periods,
        "growth_chart": growth_chart,
        "funnel_chart": funnel_chart,
        "steps": [(name, count, figures.rate(count, first)) for name, count in steps],
        "revenue": figures.money(figures.total_revenue(stats)),
        "conversions": figures.total_conversions(stats),
        "buyers": stats.funnel.converted,
        "unattributed": stats.unattributed_conversions,
        "unattributed_revenue": figures.money(stats.unattributed_revenue),
        "sequences": [
            (seq, figures.money(seq.revenue), figures.rate(seq.conversions, seq.recipients))
            for seq in stats.sequences
        ],
    }
    return admin_page(request, "overview.html", context)
