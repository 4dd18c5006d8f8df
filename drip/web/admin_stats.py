"""``GET /api/v1/admin/stats``: the figures of ``drip stats --json`` (admin bearer token); and
``GET /api/v1/admin/sequences[/{slug}]``: every sequence's triggers, exits, enrollments and
conversions, and one sequence with its funnel per lesson (:mod:`drip.reports.sequences`).

The ``sending`` part of the stats says whether sending is paused and how many deliveries are
queued, sending, unknown and failed, with the command to run when some need a person
(:mod:`drip.reports.sending_health`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from drip.reports import sequences
from drip.reports.stats import as_json, collect
from drip.web.api import ERRORS, ErrorBody
from drip.web.auth import require_admin
from drip.web.deps import RuntimeDep
from drip.web.errors import ApiError

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])
Slug = Annotated[str, Path(max_length=64, description="The sequence's slug (its folder).")]


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
            automations=rt.automations,
        )
    return as_json(figures)


@router.get(
    "/sequences",
    summary="Every sequence: triggers, exits, priority, enrollments, conversions",
    responses={k: v for k, v in ERRORS.items() if k == 401},
)
def sequence_list(rt: RuntimeDep) -> dict[str, Any]:
    with rt.sessions() as session:
        found = sequences.collect(session, rt.library, rt.automations)
    return {
        "generated_at": rt.clock().isoformat(),
        "sequences": [sequences.as_json(item, detail=False) for item in found],
    }


@router.get(
    "/sequences/{slug}",
    summary="One sequence with its figures and its funnel per lesson",
    responses={
        **{k: v for k, v in ERRORS.items() if k in (401, 422)},
        404: {"model": ErrorBody, "description": "No sequence has this slug"},
    },
)
def sequence_detail(rt: RuntimeDep, slug: Slug) -> dict[str, Any]:
    with rt.sessions() as session:
        found = sequences.find(session, rt.library, rt.automations, slug)
    if found is None:
        raise ApiError(404, "slug", "no such sequence")
    return {"generated_at": rt.clock().isoformat(), **sequences.as_json(found)}
