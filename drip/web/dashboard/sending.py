"""The Sending page: the pause, the provider's hold, and the emails that need a person.

What ``drip sending status``, ``drip deliveries unknown|failed`` show, with their actions as
buttons: "Resume sending" (``drip sending resume``), "Resend" one unknown or failed email, and
"Resend all unknown" (``drip deliveries resend --all-unknown``). The actions go through
:mod:`drip.engine.handover`, as the commands do; the ids reach the workers through the app's
``enqueue`` (``create_app(enqueue=...)``; None: the Celery send task). Each action redirects back
to the page with a short notice (``?done=...&n=...``), so a reload never repeats it.

Figures here are read on every view, never cached: after a click the page must show the change.
The page also shows the tracking drain's lag (opens and clicks waiting in Redis), as the doctor's
``tracking-drain`` check judges it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from drip.engine import handover
from drip.engine.reconcile import settle_cutoff, waiting_rows
from drip.models import DeliveryStatus
from drip.reports import sending_health
from drip.reports.doctor import tracking
from drip.runtime import Runtime
from drip.web.dashboard.rendering import admin_page
from drip.web.dashboard.security import Admin, Checked, DashboardRoute
from drip.web.deps import RuntimeDep, enqueue

log = logging.getLogger(__name__)
router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

ROWS_SHOWN = 100
# A delivery id in a path: a positive BIGINT (anything else never reaches the database).
DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1)]
NOTICES = {
    "resumed": "Sending resumed: {n} waiting emails handed to the workers.",
    "running": "Sending was not paused; {n} waiting emails handed to the workers.",
    "resent": "{n} emails queued again and handed to the workers.",
    "nothing": "Nothing queued again: only unknown or failed emails can be resent.",
}
QUEUE_DOWN = (
    " The workers' queue could not be reached: the emails stay queued and go out within 10 minutes."
)


REDIS_SECONDS = 1.0  # the page waits at most this long for Redis


@dataclass(frozen=True)
class TrackingBacklog:
    """The tracking drain's lag as the page shows it (None in the context: Redis unreachable)."""

    waiting: int
    oldest_seconds: float
    stalled: bool  # the oldest waited past tracking.stalled_after: the drain is behind
    summary: str  # tracking.describe: how many wait, the oldest for how long


def tracking_backlog(rt: Runtime) -> TrackingBacklog | None:
    """The opens and clicks waiting in the Redis stream; None when Redis does not answer."""
    settings = rt.settings
    try:
        backlog = tracking.read_lag(settings.redis_url, settings.tracking_stream, REDIS_SECONDS)
    except redis.RedisError as err:
        log.warning("dashboard: cannot read the tracking stream: %s", err)
        return None
    age = backlog.oldest_seconds(rt.clock())
    stalled = age > tracking.stalled_after(settings.tracking_drain_seconds)
    return TrackingBacklog(backlog.waiting, age, stalled, tracking.describe(backlog, age))


def _enqueue(request: Request) -> handover.Enqueue:
    return enqueue(request)


def notice(done: str, n: int, queue_down: bool) -> str | None:
    """The sentence shown after an action (None for an unknown ``done``)."""
    template = NOTICES.get(done)
    if template is None:
        return None
    return template.format(n=n) + (QUEUE_DOWN if queue_down else "")


def _back(done: str, n: int, problem: str | None) -> RedirectResponse:
    """Back to the page with the notice of ``done`` for ``n`` emails (and the broker's problem)."""
    if problem:
        log.warning("dashboard: %s", problem)
    queue = "&queue=down" if problem else ""
    return RedirectResponse(f"/admin/sending?done={done}&n={n}{queue}", status_code=303)


@router.get("/sending")
def sending_page(
    request: Request,
    rt: RuntimeDep,
    admin: Admin,
    done: str = "",
    n: Annotated[int, Query(ge=0, le=10**9)] = 0,
    queue: str = "",
) -> Response:
    now = rt.clock()
    settle = rt.settings.unknown_settle_minutes
    with rt.sessions() as session:
        health = sending_health.collect(session, now, settle)
        cutoff = settle_cutoff(now, settle)
        unknown = waiting_rows(session, DeliveryStatus.UNKNOWN, older_than=cutoff, limit=ROWS_SHOWN)
        failed = sending_health.newest_rows(session, DeliveryStatus.FAILED, ROWS_SHOWN)
    context: dict[str, Any] = {
        "section": "sending",
        "health": health,
        "pause": health.attention.pause,
        "hold": rt.throttle.remaining(),
        "unknown": unknown,
        "failed": failed,
        "rows_shown": ROWS_SHOWN,
        "checked_at": now,
        "tracking": tracking_backlog(rt),
        "drain_seconds": rt.settings.tracking_drain_seconds,
        "notice": notice(done, n, queue == "down"),
    }
    return admin_page(request, "sending.html", context)


@router.post("/sending/resume")
def resume(request: Request, rt: RuntimeDep, admin: Checked) -> Response:
    """Lift the pause and hand every waiting email to the workers (``drip sending resume``)."""
    resumed = handover.resume_sending(rt, _enqueue(request))
    log.warning("sending resumed from the dashboard by %s", admin.email)
    done = "resumed" if resumed.was_paused else "running"
    return _back(done, len(resumed.handed), resumed.problem)


@router.post("/sending/resend-unknown")
def resend_unknown(request: Request, rt: RuntimeDep, admin: Checked) -> Response:
    """Every unknown email past the settle time, queued again (a person's decision)."""
    resent = handover.resend_deliveries(rt, all_unknown=True, enqueue=_enqueue(request))
    log.warning(
        "%d unknown emails queued again from the dashboard by %s", len(resent.queued), admin.email
    )
    return _back("resent" if resent.queued else "nothing", len(resent.queued), resent.problem)


@router.post("/sending/{delivery_id}/resend")
def resend_one(
    request: Request, rt: RuntimeDep, admin: Checked, delivery_id: DeliveryId
) -> Response:
    """One unknown or failed email queued again; any other is left alone."""
    resent = handover.resend_deliveries(rt, [delivery_id], enqueue=_enqueue(request))
    queued = len(resent.queued)
    log.warning(
        "delivery %d resent from the dashboard by %s (%d queued)", delivery_id, admin.email, queued
    )
    return _back("resent" if queued else "nothing", queued, resent.problem)
