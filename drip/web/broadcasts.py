"""The broadcasts admin API (``/api/v1/admin/broadcasts``), bearer ``DRIP_ADMIN_TOKENS``.

Errors are the API's usual ``{"error": {"field", "message"}}``: 422 for bad input (an unknown
tag, a time in the past, an empty audience, a body with an unknown variable...), 404 for an
unknown broadcast, 409 for a change the status machine refuses, 502 when a test send fails at
the email backend. Every change is recorded with its actor: ``api:<first 8 hex of the token's
SHA-256>``, plus the ``X-Drip-Actor`` header when the client sends one (e.g. the person's name).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from drip.broadcasts import compose, control, preview, zones
from drip.broadcasts.queries import LIST_MAX, detail_of, list_broadcasts
from drip.broadcasts.segments import Segment, audience_count, context_of, parse_segment
from drip.broadcasts.status import BroadcastNotFound, BroadcastStatus, IllegalTransition
from drip.broadcasts.status import get_broadcast as load
from drip.errors import BackendError
from drip.web.api import ERRORS
from drip.web.auth import bearer_token, require_admin
from drip.web.deps import RuntimeDep
from drip.web.errors import ApiError
from drip.web.params import RowId

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from drip.models import Broadcast
    from drip.runtime import Runtime

router = APIRouter(
    prefix="/api/v1/admin/broadcasts",
    tags=["broadcasts"],
    dependencies=[Depends(require_admin)],
    responses={k: v for k, v in ERRORS.items() if k in (401, 422)},
)
_ACTOR_NOTE = re.compile(r"[^\w@.+ -]")


class BroadcastIn(BaseModel):
    subject: str = Field(max_length=200)
    body_md: str = Field(description="Markdown; {{ first_name }} and the other lesson variables.")
    preheader: str = Field("", max_length=200)
    segment: dict[str, Any] | None = Field(None, description="See docs/broadcasts.md.")
    quiet_hours: int | None = Field(None, description="Default: DRIP_BROADCAST_QUIET_HOURS.")


class BroadcastChange(BaseModel):
    """The fields to change; a field left out keeps its value. ``segment: null`` means every
    newsletter subscriber and ``quiet_hours: null`` the default, but the texts cannot be null."""

    # Typed str so that null is refused (422 naming the field) and the schema says so; the None
    # defaults are never seen: the route reads model_dump(exclude_unset=True).
    subject: str = Field(None, max_length=200)  # type: ignore[assignment]
    body_md: str = Field(None)  # type: ignore[assignment]
    preheader: str = Field(None, max_length=200)  # type: ignore[assignment]
    segment: dict[str, Any] | None = None
    quiet_hours: int | None = None


class SegmentIn(BaseModel):
    segment: dict[str, Any] | None = None


class PreviewIn(BaseModel):
    subscriber_id: RowId | None = Field(
        None, description="Default: the segment's first subscriber."
    )


class TestIn(BaseModel):
    to: list[str] = Field(min_length=1, max_length=preview.MAX_TEST_ADDRESSES)


class ScheduleIn(BaseModel):
    at: str = Field(description="ISO 8601. Absolute: with an offset (none = UTC). Local: none.")
    local_time: bool = False
    past_zones: Literal["now", "tomorrow"] = "now"


def actor(request: Request) -> str:
    token = bearer_token(request) or ""
    who = "api:" + hashlib.sha256(token.encode()).hexdigest()[:8]
    note = _ACTOR_NOTE.sub("", request.headers.get("x-drip-actor", ""))[:60].strip()
    return f"{who} ({note})" if note else who


def _get(session: Session, broadcast_id: int, *, lock: bool = False) -> Broadcast:
    try:
        return load(session, broadcast_id, lock=lock)
    except BroadcastNotFound:
        raise ApiError(404, "broadcast_id", f"no broadcast {broadcast_id}") from None


def _change(
    rt: Runtime, broadcast_id: int, change: Callable[[Session], Broadcast]
) -> dict[str, Any]:
    """Run ``change`` on an existing broadcast in one transaction: 404 for an unknown broadcast,
    409 for a change the status machine refuses, else the broadcast's detail."""
    with rt.transaction() as session:
        _get(session, broadcast_id)
        try:
            b = change(session)
        except IllegalTransition as err:
            raise ApiError(409, "status", str(err)) from None
        return detail_of(session, b).to_json()


@router.get("", summary="List broadcasts, newest first")
def list_(
    rt: RuntimeDep,
    status: BroadcastStatus | None = None,
    limit: int = Query(50, ge=1, le=LIST_MAX),
) -> dict[str, Any]:
    with rt.sessions() as session:
        page = list_broadcasts(session, status=status, limit=limit)
    return {"items": [b.to_json() for b in page.items]}


@router.post("", status_code=201, summary="Create a draft")
def create(request: Request, rt: RuntimeDep, body: BroadcastIn) -> dict[str, Any]:
    with rt.transaction() as session:
        b = compose.create_broadcast(
            session, rt, **body.model_dump(), actor=actor(request), now=rt.clock()
        )
        return detail_of(session, b).to_json()


@router.post("/audience", summary="How many subscribers a segment holds now")
def audience(rt: RuntimeDep, body: SegmentIn) -> dict[str, Any]:
    with rt.sessions() as session:
        return _audience(rt, session, parse_segment(body.segment))


@router.get("/{broadcast_id}", summary="One broadcast: progress, zone groups, results, history")
def show(rt: RuntimeDep, broadcast_id: RowId) -> dict[str, Any]:
    with rt.sessions() as session:
        return detail_of(session, _get(session, broadcast_id)).to_json()


@router.patch("/{broadcast_id}", summary="Change a draft or scheduled broadcast")
def update(
    request: Request, rt: RuntimeDep, broadcast_id: RowId, body: BroadcastChange
) -> dict[str, Any]:
    return _change(
        rt,
        broadcast_id,
        lambda session: compose.update_broadcast(
            session,
            rt,
            broadcast_id,
            changes=body.model_dump(exclude_unset=True),
            actor=actor(request),
            now=rt.clock(),
        ),
    )


@router.get("/{broadcast_id}/audience", summary="How many subscribers its segment holds now")
def broadcast_audience(rt: RuntimeDep, broadcast_id: RowId) -> dict[str, Any]:
    with rt.sessions() as session:
        return _audience(rt, session, parse_segment(_get(session, broadcast_id).segment))


def _audience(rt: Runtime, session: Session, segment: Segment) -> dict[str, Any]:
    count = audience_count(session, segment, context_of(rt), rt.clock())
    return {"segment": segment.to_json(), "description": segment.describe(), "count": count}


@router.post("/{broadcast_id}/preview", summary="HTML and text as one subscriber would get it")
def preview_(rt: RuntimeDep, broadcast_id: RowId, body: PreviewIn) -> dict[str, Any]:
    with rt.sessions() as session:
        shown = preview.preview(rt, session, _get(session, broadcast_id), body.subscriber_id)
    return {
        "to": shown.to,
        "subscriber_id": shown.subscriber_id,
        "subject": shown.subject,
        "html": shown.html,
        "text": shown.text,
    }


@router.post("/{broadcast_id}/test", summary="Send a [TEST] copy to a few addresses")
def test(request: Request, rt: RuntimeDep, broadcast_id: RowId, body: TestIn) -> dict[str, Any]:
    with rt.sessions() as session:  # no transaction open during the backend call
        try:
            results = preview.send_test(rt, session, _get(session, broadcast_id), body.to)
        except BackendError as err:
            raise ApiError(502, "to", f"the email backend refused the test: {err}") from None
    with rt.transaction() as session:
        b = _get(session, broadcast_id)
        preview.record_test(session, b, results, actor=actor(request), now=rt.clock())
    return {
        "sent": [r.ok for r in results].count(True),
        "results": [{"ok": r.ok, "error": r.error} for r in results],
    }


@router.post("/{broadcast_id}/schedule", summary="Schedule at a time, or a local time per zone")
def schedule(
    request: Request, rt: RuntimeDep, broadcast_id: RowId, body: ScheduleIn
) -> dict[str, Any]:
    return _change(
        rt,
        broadcast_id,
        lambda session: zones.schedule(
            session,
            rt,
            broadcast_id,
            at=body.at,
            local_time=body.local_time,
            past_zones=body.past_zones,
            actor=actor(request),
            now=rt.clock(),
        ),
    )


def _action(request: Request, rt: Runtime, broadcast_id: int, name: str) -> dict[str, Any]:
    act = control.ACTIONS[name]
    return _change(
        rt,
        broadcast_id,
        lambda session: act(session, broadcast_id, actor=actor(request), now=rt.clock()),
    )


@router.post("/{broadcast_id}/unschedule", summary="Back to draft")
def unschedule(request: Request, rt: RuntimeDep, broadcast_id: RowId) -> dict[str, Any]:
    return _action(request, rt, broadcast_id, "unschedule")


@router.post("/{broadcast_id}/pause", summary="Stop sending now (queued emails are held)")
def pause(request: Request, rt: RuntimeDep, broadcast_id: RowId) -> dict[str, Any]:
    return _action(request, rt, broadcast_id, "pause")


@router.post("/{broadcast_id}/resume", summary="Carry on where it stopped (within a minute)")
def resume(request: Request, rt: RuntimeDep, broadcast_id: RowId) -> dict[str, Any]:
    return _action(request, rt, broadcast_id, "resume")


@router.post("/{broadcast_id}/cancel", summary="Stop for good; unsent emails are dropped")
def cancel(request: Request, rt: RuntimeDep, broadcast_id: RowId) -> dict[str, Any]:
    return _action(request, rt, broadcast_id, "cancel")
