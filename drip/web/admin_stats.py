"""``GET /api/v1/admin/stats``: the figures of ``drip stats --json`` (admin bearer token).

Its ``sending`` part says whether sending is paused and how many deliveries are queued, sending,
unknown and failed, with the command to run when some need a person
(:mod:`drip.reports.sending_health`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from drip.reports.stats import as_json, collect
from drip.web.auth import require_admin
from drip.web.deps import RuntimeDep

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.get(
    "/stats", summary="Per-email figures, conversions, the course funnel and sending's state"
)
def stats(rt: RuntimeDep) -> dict[str, Any]:
    with rt.sessions() as session:
        figures = collect(
            session,
            rt.library,
            rt.settings.course_sequence,
            rt.clock(),
            unknown_settle_minutes=rt.settings.unknown_settle_minutes,
        )
    return as_json(figures)
