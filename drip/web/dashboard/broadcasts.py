"""The broadcast pages: list, compose, edit, test, schedule, pause/resume/cancel, progress.

Every action calls the function the admin API route calls (drip/web/broadcasts.py), in the same
transaction shape, with ``dashboard:<account>`` as the actor of the audit trail. A refusal of
drip.broadcasts (:class:`InvalidInput`, :class:`IllegalTransition`, a backend error on a test)
comes back as the page with the message next to the form, never as a stack trace. What the pages
show is read through :mod:`drip.broadcasts.queries` and handed to the templates in the admin
API's JSON shape, so a page and the API cannot disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from drip.broadcasts import compose, control, preview, zones
from drip.broadcasts.queries import BroadcastSummary, broadcast_detail, list_broadcasts
from drip.broadcasts.results import results
from drip.broadcasts.status import (
    EDITABLE,
    FINAL,
    BroadcastNotFound,
    BroadcastStatus,
    IllegalTransition,
    get_broadcast,
)
from drip.errors import BackendError, InvalidInput
from drip.web.dashboard import broadcast_forms as forms
from drip.web.dashboard.cache import figure_cache
from drip.web.dashboard.rendering import admin_page, email_frame
from drip.web.dashboard.security import Admin, Checked, DashboardRoute, NotFound
from drip.web.dashboard.sessions import SignedIn
from drip.web.deps import RuntimeDep, runtime
from drip.web.params import Cursor, RowId

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from drip.models import Broadcast
    from drip.runtime import Runtime

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)
PAGE_SIZE = 20
NOTICES = {
    "created": "Draft saved. Check the preview, send yourself a test, then schedule it.",
    "saved": "Changes saved.",
    "tested": "Test sent. Look for [TEST] in the inbox.",
    "scheduled": "Scheduled.",
    "unscheduled": "Back to draft: it will not go out until you schedule it again.",
    "paused": "Paused: nothing more goes out until you resume.",
    "resumed": "Resumed: sending carries on within a minute.",
    "cancelled": "Cancelled: nothing more of it will be sent.",
}
DONE = {"unschedule": "unscheduled", "pause": "paused", "resume": "resumed", "cancel": "cancelled"}
LIVE = frozenset({BroadcastStatus.SCHEDULED, BroadcastStatus.SENDING, BroadcastStatus.PAUSED})


def actor(admin: SignedIn) -> str:
    return f"dashboard:{admin.email}"[:100]


def find(session: Session, broadcast_id: int, *, lock: bool = False) -> Broadcast:
    try:
        return get_broadcast(session, broadcast_id, lock=lock)
    except BroadcastNotFound:
        raise NotFound("broadcast") from None


def _done(broadcast_id: int, what: str) -> RedirectResponse:
    return RedirectResponse(f"/admin/broadcasts/{broadcast_id}?done={what}", status_code=303)


@router.get("/broadcasts")
def broadcast_list(
    request: Request, admin: Admin, rt: RuntimeDep, before: Cursor = 0, status: str = ""
) -> Response:
    shown = BroadcastStatus(status) if status in BroadcastStatus.__members__.values() else None
    with rt.sessions() as session:
        page = list_broadcasts(session, status=shown, before=before or None, limit=PAGE_SIZE)
        items = [{**b.to_json(), "results": _results(request, session, b)} for b in page.items]
    context = {
        "section": "broadcasts",
        "items": items,
        "status": status,
        "statuses": [s.value for s in BroadcastStatus],
        "next_before": page.next_before,
        "before": before,
    }
    return admin_page(request, "broadcasts.html", context)


def _results(request: Request, session: Session, b: BroadcastSummary) -> dict[str, Any] | None:
    """A started broadcast's results for the list, cached like the other figures: each costs a
    few counts over its deliveries, and a list shows twenty."""
    if b.started_at is None:
        return None
    key = f"broadcast-results:{b.id}"
    found, _ = figure_cache(request).get(key, lambda: results(session, b.id))
    return found.to_json()


def _compose_context(
    rt: Runtime, values: dict[str, Any], segment: dict[str, Any]
) -> dict[str, Any]:
    return {
        "section": "broadcasts",
        "values": values,
        "segment": forms.segment_fields(segment),
        "state_labels": forms.STATE_LABELS,
        "default_zone": rt.settings.default_timezone,
        "editable": True,
        "live": False,
        "final": False,
    }


@router.get("/broadcasts/new")
def new_form(request: Request, rt: RuntimeDep, admin: Admin) -> Response:
    values = {"subject": "", "preheader": "", "body_md": "Hi {{ first_name }},\n\n"}
    context = {**_compose_context(rt, values, {}), "broadcast": None}
    return admin_page(request, "broadcast_compose.html", context)


@router.post("/broadcasts/new")
async def create(request: Request, rt: RuntimeDep, admin: Checked) -> Response:
    form = await request.form()
    values = forms.content(form)

    def run() -> int:
        spec = forms.segment(form)
        with rt.transaction() as session:
            b = compose.create_broadcast(
                session,
                rt,
                subject=values["subject"],
                body_md=values["body_md"],
                preheader=values["preheader"],
                segment=spec,
                actor=actor(admin),
                now=rt.clock(),
            )
            return b.id

    try:
        broadcast_id = await run_in_threadpool(run)
    except InvalidInput as err:
        spec = _spec_or_empty(form)
        context = {**_compose_context(rt, values, spec), "broadcast": None, "error": err}
        return admin_page(request, "broadcast_compose.html", context, status=422)
    return _done(broadcast_id, "created")


def _spec_or_empty(form: Any) -> dict[str, Any]:
    try:
        return forms.segment(form)
    except InvalidInput:
        return {}


def _page(
    request: Request, broadcast_id: int, *, error: Any = None, status: int = 200, done: str = ""
) -> Response:
    rt = runtime(request)
    with rt.sessions() as session:
        try:
            found = broadcast_detail(session, broadcast_id)
        except BroadcastNotFound:
            raise NotFound("broadcast") from None
    b = found.broadcast
    values = {"subject": b.subject, "preheader": b.preheader, "body_md": found.body_md}
    context = {
        **_compose_context(rt, values, b.segment or {}),
        "broadcast": found.to_json(),
        "editable": b.status in EDITABLE,
        "live": b.status in LIVE,
        "final": b.status in FINAL,
        "error": error,
        "notice": NOTICES.get(done),
    }
    return admin_page(request, "broadcast_compose.html", context, status=status)


@router.get("/broadcasts/{broadcast_id}")
def broadcast_page(request: Request, admin: Admin, broadcast_id: RowId, done: str = "") -> Response:
    return _page(request, broadcast_id, done=done)


@router.post("/broadcasts/{broadcast_id}/edit")
async def edit(request: Request, rt: RuntimeDep, admin: Checked, broadcast_id: RowId) -> Response:
    form = await request.form()

    def run() -> None:
        changes: dict[str, Any] = forms.content(form)
        with rt.transaction() as session:
            if find(session, broadcast_id).status == BroadcastStatus.DRAFT:
                changes["segment"] = forms.segment(form)  # a scheduled one keeps its audience
            compose.update_broadcast(
                session, rt, broadcast_id, changes=changes, actor=actor(admin), now=rt.clock()
            )

    return await _attempt(request, broadcast_id, run, "saved")


async def _attempt(request: Request, broadcast_id: int, run: Any, done: str) -> Response:
    """Run a change; the page with the refusal next to the forms if drip.broadcasts refuses."""
    try:
        await run_in_threadpool(run)
    except InvalidInput as err:
        return _page(request, broadcast_id, error=err, status=422)
    except IllegalTransition as err:
        refusal = InvalidInput("status", str(err))
        return _page(request, broadcast_id, error=refusal, status=409)
    except BackendError as err:
        message = InvalidInput("to", f"the email backend refused the test: {err}")
        return _page(request, broadcast_id, error=message, status=502)
    return _done(broadcast_id, done)


@router.post("/broadcasts/{broadcast_id}/test")
async def send_test(
    request: Request, rt: RuntimeDep, admin: Checked, broadcast_id: RowId
) -> Response:
    addresses = forms.test_addresses(await request.form())

    def run() -> None:
        with rt.sessions() as session:  # as the API: no transaction open during the send
            sent = preview.send_test(rt, session, find(session, broadcast_id), addresses)
        with rt.transaction() as session:
            b = find(session, broadcast_id)
            preview.record_test(session, b, sent, actor=actor(admin), now=rt.clock())

    return await _attempt(request, broadcast_id, run, "tested")


@router.post("/broadcasts/{broadcast_id}/schedule")
async def schedule(
    request: Request, rt: RuntimeDep, admin: Checked, broadcast_id: RowId
) -> Response:
    form = await request.form()

    def run() -> None:
        when = forms.schedule(form, rt.settings.default_timezone)
        with rt.transaction() as session:
            find(session, broadcast_id)
            zones.schedule(
                session,
                rt,
                broadcast_id,
                at=when.at,
                local_time=when.local_time,
                past_zones=when.past_zones,
                actor=actor(admin),
                now=rt.clock(),
            )

    return await _attempt(request, broadcast_id, run, "scheduled")


@router.post("/broadcasts/{broadcast_id}/{action}")
async def act(
    request: Request, rt: RuntimeDep, admin: Checked, broadcast_id: RowId, action: str
) -> Response:
    change = control.ACTIONS.get(action)
    if change is None:
        raise NotFound("action")
    if action == "cancel" and forms.text(await request.form(), "confirm") != "yes":
        refusal = InvalidInput("confirm", "tick the box to confirm: a cancel cannot be undone")
        return _page(request, broadcast_id, error=refusal, status=422)

    def run() -> None:
        with rt.transaction() as session:
            find(session, broadcast_id)
            change(session, broadcast_id, actor=actor(admin), now=rt.clock())

    return await _attempt(request, broadcast_id, run, DONE[action])


@router.get("/broadcasts/{broadcast_id}/email.html")
def email_html(rt: RuntimeDep, admin: Admin, broadcast_id: RowId) -> Response:
    """The saved broadcast as the segment's first subscriber gets it (the API's preview)."""
    with rt.sessions() as session:
        shown = preview.preview(rt, session, find(session, broadcast_id))
    return email_frame(shown.html)
