"""``GET /api/v1/admin/stats``: the figures of ``drip stats --json`` (admin bearer token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from drip.runtime import Runtime
from drip.stats import as_json, collect
from drip.web.auth import require_admin

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.get("/stats", summary="Per-email figures, conversions and the course funnel")
def stats(request: Request) -> dict[str, Any]:
    rt: Runtime = request.app.state.rt
    with rt.sessions() as session:
        return as_json(collect(session, rt.library, rt.settings.course_sequence, rt.clock()))
