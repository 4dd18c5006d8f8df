"""Thin Celery tasks: take ids, call the plain drip functions that hold the logic."""

from __future__ import annotations

import logging
import random
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from drip.engine.claim import tick
from drip.engine.dispatch import (
    backoff_seconds,
    db_retry_seconds,
    held_retry_seconds,
    send_deliveries,
)
from drip.reports.doctor.beat import record_beat_tick
from drip.runtime import Runtime
from drip.settings import get_settings
from drip.subscribers import purge_pending
from workers.celery_app import app

log = logging.getLogger(__name__)
_runtime: Runtime | None = None
_rng = random.Random()


def runtime() -> Runtime:
    """This worker process's runtime, built on first use (after the prefork, never before)."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime.build(get_settings())
    return _runtime


@app.task(name="drip.tick")  # type: ignore[untyped-decorator]
def tick_task() -> dict[str, Any]:
    rt = runtime()
    report = tick(rt, rt.clock(), enqueue=lambda ids: send_task.delay(ids))
    record_beat_tick(rt.settings.redis_url, rt.clock())  # what `drip doctor` reads
    if report.unknown:
        log.warning("deliveries left unknown by a worker crash: %s", report.unknown)
    if report.paused:
        log.error("sending is paused: %s", report.paused)
    return {"claimed": report.claimed, "batches": report.batches, "unknown": len(report.unknown)}


@app.task(name="drip.send", bind=True, max_retries=None)  # type: ignore[untyped-decorator]
def send_task(self: Any, delivery_ids: list[int]) -> dict[str, int]:
    """Send ``delivery_ids``; retried after a database hiccup, and for the rows not sent."""
    rt = runtime()
    try:
        report = send_deliveries(rt, delivery_ids, rt.clock())
    except (OperationalError, InterfaceError) as err:
        # The database went away before anything was claimed, or while results were stored
        # (drip.engine.outcomes waited for it): the rows are still queued, or settled by the reaper.
        delay = db_retry_seconds(self.request.retries + 1, _rng)
        log.warning("database unreachable (%s); send task again in %.1fs", err, delay)
        raise self.retry(countdown=delay, exc=err) from err
    if report.retry:
        if report.held:  # the provider asked us to wait: come back when it said, not later
            delay = held_retry_seconds(report.retry_after or 0.0, _rng)
        else:
            delay = backoff_seconds(self.request.retries + 1, report.retry_after, _rng)
        log.info("retrying %d deliveries in %.1fs", len(report.retry), delay)
        raise self.retry(args=(report.retry,), countdown=delay)
    return {
        "sent": report.sent,
        "failed": report.failed,
        "skipped": report.skipped,
        "unknown": report.unknown,
    }


@app.task(name="drip.purge_pending")  # type: ignore[untyped-decorator]
def purge_pending_task() -> int:
    rt = runtime()
    with rt.transaction() as session:
        return purge_pending(session, rt.clock(), rt.settings.pending_purge_days)


@app.task(name="drip.tracking_drain")  # type: ignore[untyped-decorator]
def tracking_drain_task() -> dict[str, int]:
    """Drain the tracking stream; bounded so that runs never pile up behind each other."""
    from drip.ingest.stream import drain

    rt = runtime()
    report = drain(rt, max_seconds=max(rt.settings.tracking_drain_seconds * 10, 10.0))
    return {"entries": report.entries, "stored": report.stored, "duplicates": report.duplicates}


@app.task(name="drip.outgoing_webhooks")  # type: ignore[untyped-decorator]
def outgoing_webhooks_task() -> dict[str, int]:
    """Post the outgoing webhooks that are due (drip.outgoing.delivery): at most
    DRIP_OUTGOING_WEBHOOK_BATCH at once, each within DRIP_OUTGOING_WEBHOOK_TIMEOUT."""
    from drip.outgoing.delivery import deliver_due

    report = deliver_due(runtime())
    return {
        "claimed": report.claimed,
        "delivered": report.delivered,
        "retrying": report.retrying,
        "failed": report.failed,
    }


# --------------------------------------------------------------------------- broadcasts
_broadcast_limiter: list[Any] = []  # built on first use, after the prefork: [RateLimiter | None]


def _limiter(rt: Runtime) -> Any:
    from drip.broadcasts.ratelimit import limiter_from_settings

    if not _broadcast_limiter:
        _broadcast_limiter.append(limiter_from_settings(rt.settings))
    return _broadcast_limiter[0]


def kick_page(broadcast_id: int, runner: str, countdown: float = 0.0) -> None:
    """Queue one page step of a broadcast (a countdown of a few seconds at most)."""
    options = {"countdown": countdown} if countdown > 0 else {}
    broadcast_send_task.apply_async(args=[broadcast_id, runner], **options)


@app.task(name="drip.broadcasts_tick")  # type: ignore[untyped-decorator]
def broadcasts_tick_task() -> dict[str, int]:
    from drip.broadcasts.tick import broadcasts_tick

    rt = runtime()
    report = broadcasts_tick(rt, rt.clock(), kick=kick_page)
    return {
        "started": len(report.started),
        "kicked": len(report.kicked),
        "finished": len(report.finished),
    }


@app.task(name="drip.broadcast_send")  # type: ignore[untyped-decorator]
def broadcast_send_task(broadcast_id: int, runner: str) -> dict[str, Any]:
    """One page of a broadcast; its send tasks are queued first, then the next page."""
    from drip.broadcasts.sending import run_page

    rt = runtime()
    result = run_page(
        rt,
        broadcast_id,
        runner,
        rt.clock(),
        enqueue=lambda ids: send_task.delay(ids),
        limiter=_limiter(rt),
    )
    if result.next_in is not None:
        kick_page(broadcast_id, runner, result.next_in)
    return {"state": result.state, "written": result.written, "quiet": result.quiet}
