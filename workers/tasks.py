"""Thin Celery tasks: take ids, call the plain drip functions that hold the logic."""

from __future__ import annotations

import logging
import random
from typing import Any

from drip.claim import tick
from drip.dispatch import backoff_seconds, send_deliveries
from drip.runtime import Runtime
from drip.settings import get_settings
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
    if report.unknown:
        log.warning("deliveries left unknown by a worker crash: %s", report.unknown)
    if report.paused:
        log.error("sending is paused: %s", report.paused)
    return {"claimed": report.claimed, "batches": report.batches, "unknown": len(report.unknown)}


@app.task(name="drip.send", bind=True, max_retries=None)  # type: ignore[untyped-decorator]
def send_task(self: Any, delivery_ids: list[int]) -> dict[str, int]:
    rt = runtime()
    report = send_deliveries(rt, delivery_ids, rt.clock())
    if report.retry:
        delay = backoff_seconds(self.request.retries + 1, report.retry_after, _rng)
        log.info("retrying %d deliveries in %.1fs", len(report.retry), delay)
        raise self.retry(args=(report.retry,), countdown=delay)
    return {"sent": report.sent, "failed": report.failed, "skipped": report.skipped}
