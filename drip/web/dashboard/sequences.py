"""The sequence pages: every sequence with what starts it and who is in it, and one sequence with
its triggers, figures and funnel per lesson.

Figures are :mod:`drip.reports.sequences`' (``GET /api/v1/admin/sequences``), read through the
cached stats of :mod:`drip.web.dashboard.figures`. A lesson's preview and check stay on the
course pages (``/admin/course/<slug>/<n>``), which these pages link to.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from drip.web.dashboard import figures
from drip.web.dashboard.charts import funnel
from drip.web.dashboard.rendering import admin_page
from drip.web.dashboard.security import Admin, DashboardRoute, NotFound
from drip.web.deps import RuntimeDep

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)


@router.get("/sequences")
def sequence_list(request: Request, admin: Admin) -> Response:
    stats, stats_at = figures.stats(request)
    rows = [
        (item, figures.money(item.revenue), figures.rate(item.conversions, item.recipients))
        for item in stats.per_sequence
    ]
    context = {"section": "sequences", "rows": rows, "stats_at": stats_at}
    return admin_page(request, "sequences.html", context)


@router.get("/sequences/{slug}")
def sequence_page(
    request: Request, admin: Admin, rt: RuntimeDep, slug: str = Path(max_length=64)
) -> Response:
    item, stats_at = figures.sequence(request, slug)
    if item is None:
        raise NotFound("sequence")
    steps = item.steps()
    first = steps[0][1]
    context = {
        "section": "sequences",
        "seq": item,
        "definition": rt.library[slug],
        "stats_at": stats_at,
        "revenue": figures.money(item.revenue),
        "conversion_rate": figures.rate(item.conversions, item.recipients),
        "funnel_chart": funnel("funnel", f"The funnel of {item.name}", steps),
        "steps": [(name, count, figures.rate(count, first)) for name, count in steps],
        "lessons": [
            (
                lesson,
                figures.rate(lesson.opened, lesson.sent),
                figures.rate(lesson.clicked, lesson.sent),
            )
            for lesson in item.lessons
        ],
    }
    return admin_page(request, "sequence.html", context)
