"""What the compose page's script asks for while a person types, and the live progress.

- ``POST /admin/api/broadcasts/render``: the problems of the subject and body (the rules of
  :func:`drip.broadcasts.compose.check_content`) and the plain-text part;
- ``POST /admin/broadcasts/preview-frame``: the HTML part, as a page for the preview ``<iframe>``
  (the form posts into the frame, so the email gets its own sandboxing CSP);
- ``POST /admin/api/broadcasts/audience``: how many subscribers the segment holds now;
- ``GET /admin/api/broadcasts/{id}/progress``: status, progress and results of a send.

The unsaved text is previewed by :func:`drip.broadcasts.preview.preview`, the admin API's own
preview, given a broadcast object that is never added to a session. Every POST needs the
session's CSRF token, like every other change.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from drip.broadcasts import preview
from drip.broadcasts.compose import check_content
from drip.broadcasts.queries import live_progress
from drip.broadcasts.segments import audience_count, context_of, parse_segment
from drip.broadcasts.status import BroadcastNotFound
from drip.errors import InvalidInput
from drip.models import Broadcast
from drip.web.dashboard import broadcast_forms as forms
from drip.web.dashboard.rendering import email_frame
from drip.web.dashboard.security import Admin, Checked, DashboardRoute, NotFound
from drip.web.deps import RuntimeDep
from drip.web.errors import error_json
from drip.web.params import MAX_ID, RowId

if TYPE_CHECKING:
    from drip.runtime import Runtime

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)


def _draft(form: FormData) -> Broadcast:
    """A broadcast that exists only for this preview (never added to a session)."""
    values = forms.content(form)
    broadcast_id = forms.text(form, "broadcast_id")
    known = broadcast_id.isascii() and broadcast_id.isdigit() and int(broadcast_id) <= MAX_ID
    return Broadcast(
        id=int(broadcast_id) if known else 0,
        segment=forms.segment(form),
        **values,
    )


def _render(rt: Runtime, form: FormData) -> preview.Preview:
    """The unsaved broadcast as its segment's first subscriber would get it, or
    :class:`InvalidInput` listing what is wrong with it."""
    draft = _draft(form)
    check_content(draft.subject, draft.preheader, draft.body_md, rt.settings.runners_lab_url)
    with rt.sessions() as session:
        return preview.preview(rt, session, draft)


@router.post("/api/broadcasts/render")
async def render(request: Request, rt: RuntimeDep, admin: Checked) -> Response:
    form = await request.form()
    try:
        shown = await run_in_threadpool(_render, rt, form)
    except InvalidInput as err:
        return JSONResponse({"problems": str(err), "text": ""})  # each line names its field
    return JSONResponse(
        {"problems": None, "subject": shown.subject, "to": shown.to, "text": shown.text}
    )


@router.post("/broadcasts/preview-frame")
async def preview_frame(request: Request, rt: RuntimeDep, admin: Checked) -> Response:
    form = await request.form()
    try:
        shown = await run_in_threadpool(_render, rt, form)
    except InvalidInput as err:
        return email_frame(
            "<!DOCTYPE html><meta charset=utf-8><title>No preview</title>"
            "<p style='font:16px sans-serif;color:#6e1711'>No preview until this is fixed:</p>"
            f"<pre style='white-space:pre-wrap'>{escape(str(err))}</pre>"
        )
    return email_frame(shown.html)


@router.post("/api/broadcasts/audience")
async def audience(request: Request, rt: RuntimeDep, admin: Checked) -> Response:
    form = await request.form()

    def count() -> dict[str, Any]:
        segment = parse_segment(forms.segment(form))
        with rt.sessions() as session:
            found = audience_count(session, segment, context_of(rt), rt.clock())
        return {"count": found, "description": segment.describe()}

    try:
        return JSONResponse(await run_in_threadpool(count))
    except InvalidInput as err:
        return error_json(422, err.field, err.message)


@router.get("/api/broadcasts/{broadcast_id}/progress")
def progress(admin: Admin, rt: RuntimeDep, broadcast_id: RowId) -> Response:
    with rt.sessions() as session:
        try:
            found = live_progress(session, broadcast_id)
        except BroadcastNotFound:
            raise NotFound("broadcast") from None
    return JSONResponse(found.to_json())
