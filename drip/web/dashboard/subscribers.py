"""The subscriber pages: search and filter, one subscriber's story, unsubscribe, export, erase.

The list is the admin API's (:func:`drip.subscribers.queries.list_subscribers`): keyset pages
by id, never an ``OFFSET`` and never a count of the filtered rows; the total shown is the cached
count per status. A subscriber's page is the GDPR export (:func:`export_subscriber`) laid out
for people, with every enrollment's history (:func:`enrollment_histories`: entry, trigger,
status, the lesson emails of its sequence); the buttons call what the admin API calls, with
``dashboard`` as the source.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from drip.engine.consent import unsubscribe
from drip.errors import InvalidInput
from drip.reports.sequences import enrollment_histories
from drip.subscribers.gdpr import erase_subscriber, export_subscriber
from drip.subscribers.manual import MANUAL, Refusal, StartRefused, start_by_hand
from drip.subscribers.queries import COURSE_STATES, find_subscriber, list_subscribers, tag_names
from drip.web.admin import upsell_slugs
from drip.web.dashboard import figures
from drip.web.dashboard.rendering import admin_page
from drip.web.dashboard.security import Admin, Checked, DashboardRoute, NotFound
from drip.web.deps import RuntimeDep
from drip.web.forms import read_form
from drip.web.params import Cursor, RowId

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from drip.models import Subscriber

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)
PAGE_SIZE = 50
TAGS_SHOWN = 200
TIMELINE_MAX = 200
STATUSES = ("active", "pending", "unsubscribed", "erased")
# Why a start by hand did nothing, for a person (drip.subscribers.manual.Refusal).
REFUSALS = {
    Refusal.UNKNOWN_SEQUENCE: "Nothing started: there is no such sequence.",
    Refusal.NOT_MANUAL: "Nothing started: that sequence is not started by hand.",
    Refusal.NOT_ACTIVE: "Nothing started: sequences start for active subscribers only.",
    Refusal.IN_IT: "Nothing started: this subscriber is in that sequence now.",
    Refusal.DONE: "Nothing started: this subscriber went through it, and it allows no re-entry.",
}
NOTICES = {
    "unsubscribed": "Unsubscribed: no more emails of any kind.",
    "already": "Nothing to do: this subscriber was already unsubscribed or erased.",
    "erased": "Erased: the personal data is gone; the address stays suppressed as a hash.",
    "started": "Started: the sequence's first email goes out as its first_lesson rule says.",
    **{f"refused-{r.value}": text for r, text in REFUSALS.items()},
}


def _get(session: Session, subscriber_id: int) -> Subscriber:
    sub = find_subscriber(session, subscriber_id)
    if sub is None:
        raise NotFound("subscriber")
    return sub


@router.get("/subscribers")
def subscriber_list(
    request: Request,
    rt: RuntimeDep,
    admin: Admin,
    q: str = Query("", max_length=320),
    status: Literal["", "active", "pending", "unsubscribed", "erased"] = "",
    tag: str = Query("", max_length=64),
    state: str = Query("", max_length=32),
    after: Cursor = 0,
    before: RowId | None = None,
) -> Response:
    error = None
    with rt.sessions() as session:
        tags = tag_names(session, TAGS_SHOWN)
        try:
            page = list_subscribers(
                session,
                status=status or None,
                tag=tag or None,
                q=q or None,
                state=state or None,
                course=rt.settings.course_sequence,
                upsells=upsell_slugs(rt),
                after=after,
                before=before,
                limit=PAGE_SIZE,
            )
            items = page.items
            next_after, previous_before = page.next_after, page.previous_before
        except InvalidInput as err:
            items, next_after, previous_before, error = [], None, None, err
    counts, counted_at = figures.counts(request)
    filters = {"q": q, "status": status, "tag": tag, "state": state}
    context = {
        "section": "subscribers",
        "items": items,
        "next_after": next_after,
        "previous_before": previous_before,
        "continued": bool(after or before),
        "filters": filters,
        "filtered": any(filters.values()),
        "query": {k: v for k, v in filters.items() if v},
        "tags": tags,
        "statuses": STATUSES,
        "states": COURSE_STATES,
        "total": sum(counts[s] for s in STATUSES),
        "counted_at": counted_at,
        "error": error,
    }
    return admin_page(request, "subscribers.html", context)


def _timeline(export: dict[str, Any]) -> list[dict[str, Any]]:
    """Emails and tracking events together, newest first."""
    entries = [
        {"at": e["sent_at"] or e["created_at"], "what": "email", "detail": e}
        for e in export["emails"]
    ]
    entries += [{"at": ev["at"], "what": "event", "detail": ev} for ev in export["events"]]
    entries.sort(key=lambda e: e["at"] or "", reverse=True)
    return entries[:TIMELINE_MAX]


@router.get("/subscribers/{subscriber_id}")
def subscriber_page(
    request: Request, rt: RuntimeDep, admin: Admin, subscriber_id: RowId, done: str = ""
) -> Response:
    with rt.sessions() as session:
        export = export_subscriber(session, _get(session, subscriber_id), rt.clock())
        enrollments = enrollment_histories(session, subscriber_id)
    lengths = {slug: seq.length for slug, seq in rt.library.items()}
    names = {slug: seq.name for slug, seq in rt.library.items()}
    manual = [(s.slug, s.name) for s in rt.automations.started_by(MANUAL)]
    context = {
        "section": "subscribers",
        "sub": export["subscriber"],
        "manual": manual,
        "export": export,
        "enrollments": enrollments,
        "lengths": lengths,
        "names": names,
        "timeline": _timeline(export),
        "timeline_max": TIMELINE_MAX,
        "notice": NOTICES.get(done),
    }
    return admin_page(request, "subscriber.html", context)


def _back(subscriber_id: int, done: str) -> RedirectResponse:
    return RedirectResponse(f"/admin/subscribers/{subscriber_id}?done={done}", status_code=303)


@router.post("/subscribers/{subscriber_id}/unsubscribe")
def unsubscribe_(
    request: Request, rt: RuntimeDep, admin: Checked, subscriber_id: RowId
) -> Response:
    with rt.transaction() as session:
        changed = unsubscribe(session, _get(session, subscriber_id), rt.clock(), "dashboard")
    figures.forget(request)
    return _back(subscriber_id, "unsubscribed" if changed else "already")


@router.post("/subscribers/{subscriber_id}/sequences")
async def start_sequence(
    request: Request, rt: RuntimeDep, admin: Checked, subscriber_id: RowId
) -> Response:
    """Start a sequence that has a ``manual`` trigger (drip.subscribers.manual)."""
    slug = (await read_form(request)).get("slug", "").strip()[:64]

    def run() -> str:
        try:
            with rt.transaction() as session:
                start_by_hand(rt, session, _get(session, subscriber_id), slug, rt.clock())
        except StartRefused as refused:
            return f"refused-{refused.reason.value}"
        return "started"

    done = await run_in_threadpool(run)
    figures.forget(request)
    return _back(subscriber_id, done)


@router.get("/subscribers/{subscriber_id}/export.json")
def export(request: Request, rt: RuntimeDep, admin: Admin, subscriber_id: RowId) -> Response:
    with rt.sessions() as session:
        data = export_subscriber(session, _get(session, subscriber_id), rt.clock())
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="subscriber-{subscriber_id}.json"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/subscribers/{subscriber_id}/erase")
def erase_confirm(request: Request, rt: RuntimeDep, admin: Admin, subscriber_id: RowId) -> Response:
    with rt.sessions() as session:
        sub = _get(session, subscriber_id)
        context = {"section": "subscribers", "sub_id": sub.id, "email": sub.email}
    return admin_page(request, "erase.html", context)


@router.post("/subscribers/{subscriber_id}/erase")
async def erase(request: Request, rt: RuntimeDep, admin: Checked, subscriber_id: RowId) -> Response:
    typed = (await read_form(request)).get("confirm_email", "").strip().lower()

    def run() -> tuple[bool | None, str | None]:
        with rt.transaction() as session:
            sub = _get(session, subscriber_id)
            if sub.email is not None and typed != sub.email:
                return None, sub.email  # the confirmation step was not passed
            return erase_subscriber(session, sub, rt.clock()), None

    erased, email = await run_in_threadpool(run)
    if erased is None:
        context = {
            "section": "subscribers",
            "sub_id": subscriber_id,
            "email": email,
            "error": "The address you typed is not this subscriber's. Nothing was erased.",
        }
        return admin_page(request, "erase.html", context, status=422)
    figures.forget(request)
    return _back(subscriber_id, "erased" if erased else "already")
