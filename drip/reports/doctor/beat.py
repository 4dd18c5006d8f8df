"""Beat's last tick: the worker that runs the drip tick notes the time, the doctor reads it.

The record is one Redis key in ``DRIP_REDIS_URL`` holding the UTC time of the last tick that
finished, as ISO 8601: one SET a minute, no row lock, no table. Losing Redis loses only the
record, and the next tick writes it again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import lru_cache

import redis

from drip.reports.doctor.findings import Finding, fail, ok
from drip.reports.doctor.runner import Context

log = logging.getLogger(__name__)

BEAT_KEY = "drip:beat:last_tick"
NETWORK_SECONDS = 3.0
# A tick may wait behind a queue of sends: stale only after a few missed ticks.
MISSED_TICKS = 3
MIN_STALE_SECONDS = 120


def record_beat_tick(redis_url: str, now: datetime) -> None:
    """Note that the drip tick ran at ``now``. Never raises: a tick that worked must not fail
    for want of its record (the doctor reports the missing record instead)."""
    try:
        _client(redis_url).set(BEAT_KEY, now.astimezone(UTC).isoformat())
    except redis.RedisError as err:
        log.warning("could not record the tick's time for drip doctor: %s", err)


def last_beat_tick(client: redis.Redis) -> datetime | None:
    """When the drip tick last ran, or None when there is no record."""
    raw = client.get(BEAT_KEY)
    if raw is None:
        return None
    return datetime.fromisoformat(raw if isinstance(raw, str) else raw.decode())


def stale_after(tick_seconds: int) -> int:
    """How old the last tick may be, in seconds, before beat is called stopped."""
    return max(MISSED_TICKS * tick_seconds, MIN_STALE_SECONDS)


def check_beat(context: Context) -> Finding:
    settings = context.settings
    start_beat = (
        "start exactly one `drip beat` (docker compose up -d beat) and look at its log and the "
        "workers' (beat fires the tick, a worker runs it)"
    )
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=NETWORK_SECONDS, socket_connect_timeout=NETWORK_SECONDS
    )
    try:
        last = last_beat_tick(client)
    finally:
        client.close()
    if last is None:
        return fail("no drip tick recorded in DRIP_REDIS_URL: beat has not fired one", start_beat)
    age = max((context.clock() - last).total_seconds(), 0.0)
    every = f"beat fires it every {settings.tick_seconds} s"
    if age > stale_after(settings.tick_seconds):
        return fail(f"the drip tick last ran {duration(age)} ago; {every}", start_beat)
    return ok(f"the drip tick ran {duration(age)} ago; {every}")


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 5 min``, ``2 days``: how long, for a person."""
    whole = int(seconds)
    if whole < 120:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} days"


@lru_cache(maxsize=4)
def _client(redis_url: str) -> redis.Redis:
    # One client (and connection pool) per worker process, built on its first tick.
    return redis.Redis.from_url(
        redis_url, socket_timeout=NETWORK_SECONDS, socket_connect_timeout=NETWORK_SECONDS
    )
