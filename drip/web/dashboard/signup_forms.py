"""The Forms page: every signup form (drip.content.forms) with its tags, what confirming it
starts, the HTML to paste into the coach's site, and its signups and confirmations.

The figures are one grouped count (:func:`drip.subscribers.queries.form_counts`), cached like
the overview's (:mod:`drip.web.dashboard.cache`). What a form starts is read from the runtime's
automations index, so it shows both ways of saying it: the form's ``sequence`` and a sequence's
``[[triggers]] on = "form"`` (and the ``DRIP_COURSE_SEQUENCE`` fallback of the default form).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response

from drip.content.forms import Form
from drip.content.types import DEFAULT_FORM
from drip.subscribers.queries import FormCount, form_counts
from drip.web.dashboard import figures
from drip.web.dashboard.cache import figure_cache
from drip.web.dashboard.rendering import admin_page
from drip.web.dashboard.security import Admin, DashboardRoute
from drip.web.deps import RuntimeDep

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)
NO_SIGNUPS = FormCount(0, 0)


@dataclass(frozen=True)
class FormRow:
    form: Form
    starts: list[str]  # names of the sequences confirming it starts
    counts: FormCount
    confirm_rate: str


def _counts(request: Request, rt: RuntimeDep) -> tuple[dict[str | None, FormCount], datetime]:
    def compute() -> dict[str | None, FormCount]:
        with rt.sessions() as session:
            return form_counts(session)

    return figure_cache(request).get("form_counts", compute)


@router.get("/forms")
def forms_page(request: Request, admin: Admin, rt: RuntimeDep) -> Response:
    counts, counted_at = _counts(request, rt)
    slugs = sorted(rt.forms, key=lambda slug: (slug != DEFAULT_FORM, slug))  # default first
    rows = []
    for slug in slugs:
        found = counts.get(slug, NO_SIGNUPS)
        starts = [s.name for s in rt.automations.started_by("form", slug)]
        rate = figures.rate(found.confirmations, found.signups)
        rows.append(FormRow(rt.forms[slug], starts, found, rate))
    context = {
        "section": "forms",
        "rows": rows,
        "unrecorded": counts.get(None, NO_SIGNUPS),
        # Forms removed from the folder still have their subscribers: counted, not hidden.
        "retired": sorted((k, v) for k, v in counts.items() if k is not None and k not in rt.forms),
        "public_url": rt.settings.public_url,
        "consent_text": rt.settings.consent_text,
        "counted_at": counted_at,
    }
    return admin_page(request, "forms.html", context)
