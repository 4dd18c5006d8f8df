"""The Webhooks page: the outgoing webhooks' endpoints and their recent deliveries.

What ``drip webhooks log`` prints (:mod:`drip.outgoing.queries`), with the configured endpoints
and the events each wants; secrets are never shown. Read on every view, never cached.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from drip.models import OutgoingWebhookStatus
from drip.outgoing import endpoints_of
from drip.outgoing.queries import recent_webhooks, status_counts
from drip.web.dashboard.rendering import admin_page
from drip.web.dashboard.security import Admin, DashboardRoute
from drip.web.deps import RuntimeDep

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

ROWS_SHOWN = 100


@router.get("/webhooks")
def webhooks_page(
    request: Request, rt: RuntimeDep, admin: Admin, status: OutgoingWebhookStatus | None = None
) -> Response:
    with rt.sessions() as session:
        rows = recent_webhooks(session, limit=ROWS_SHOWN, status=status)
        counts = status_counts(session)
        endpoints = sorted(endpoints_of(session), key=lambda endpoint: endpoint.url)
    context: dict[str, Any] = {
        "section": "webhooks",
        "rows": rows,
        "counts": counts,
        "endpoints": [(e.url, sorted(e.events)) for e in endpoints],
        "status": status,
        "statuses": [str(s) for s in OutgoingWebhookStatus],
        "rows_shown": ROWS_SHOWN,
        "checked_at": rt.clock(),
    }
    return admin_page(request, "webhooks.html", context)
