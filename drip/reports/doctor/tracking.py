"""The tracking drain's lag: opens and clicks wait in a Redis stream until the drain stores them.

Beat runs the drain every ``DRIP_TRACKING_DRAIN_SECONDS`` (2 s), so the stream normally holds a
few seconds of events. When the oldest has waited longer than :func:`stalled_after`, the drain
is not keeping up or not running: the events are not lost yet, but they are not in the figures,
and they are what losing Redis would lose (docs/deploy.md). The check warns; it never fails a
deploy, since nothing is lost and sending is unaffected.
"""

from __future__ import annotations

import redis

from drip.ingest.stream import Lag, lag
from drip.reports.doctor.beat import duration
from drip.reports.doctor.findings import Finding, ok, warn
from drip.reports.doctor.runner import Context

NETWORK_SECONDS = 3.0
# A minute covers a drainer that died mid-batch: its entries are taken over after 60 s
# (drip.ingest.stream.RECLAIM_IDLE_MS). With a slower drain, a few of its runs.
MIN_STALLED_SECONDS = 60
MISSED_DRAINS = 3


def stalled_after(drain_seconds: float) -> float:
    """How long the oldest waiting event may wait, in seconds, before the drain is behind."""
    return max(MISSED_DRAINS * drain_seconds, MIN_STALLED_SECONDS)


def read_lag(redis_url: str, stream: str, timeout: float = NETWORK_SECONDS) -> Lag:
    """:func:`drip.ingest.stream.lag` on a short-lived client; each network call waits at most
    ``timeout`` seconds. Raises :class:`redis.RedisError` when Redis does not answer."""
    client = redis.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return lag(client, stream)
    finally:
        client.close()


def describe(backlog: Lag, age: float) -> str:
    """``3 opens and clicks wait ..., the oldest for 4 s`` or ``no open or click waits ...``."""
    if not backlog.waiting:
        return "no open or click waits to be stored"
    return f"{backlog.waiting:,} opens and clicks wait to be stored, the oldest for {duration(age)}"


def check_drain(context: Context) -> Finding:
    settings = context.settings
    backlog = read_lag(settings.redis_url, settings.tracking_stream)
    age = backlog.oldest_seconds(context.clock())
    seen = (
        f"{describe(backlog, age)} (Redis stream {settings.tracking_stream}); "
        f"the drain runs every {settings.tracking_drain_seconds:g} s"
    )
    if age > stalled_after(settings.tracking_drain_seconds):
        return warn(
            seen,
            "beat fires the drain and a worker runs it: check both run (the `beat` and `worker` "
            "lines) and read the workers' log for drain errors; `drip tracking drain` stores "
            "them by hand",
        )
    return ok(seen)
