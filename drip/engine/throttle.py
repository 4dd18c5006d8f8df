"""The provider's brake, shared by every worker: "hold off until T".

When the provider answers 429 or 5xx (:class:`~drip.errors.ThrottledBackendError`), the worker
that heard it sets a hold until the moment the provider named (``Retry-After``,
``X-RateLimit-Reset``) or, without a hint, a short backoff. Every worker checks the hold before
each request and puts its rows back in the queue instead of hammering the provider, so a 429 storm
slows all sending down together and nothing counts as a failure.

Contract: :meth:`Throttle.hold` only ever moves the hold later (two workers hearing two different
hints keep the later one); :meth:`Throttle.remaining` is the seconds left, 0.0 when sending may go
on. Neither blocks nor raises: if Redis is unreachable the throttle reads as open (sending goes on
and the provider's next 429 says so again), because a brake that stops everything when its own
store is down would turn a Redis restart into a sending outage.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import redis

from drip.clock import Clock
from drip.settings import Settings

log = logging.getLogger(__name__)

KEY = "drip:provider:hold_until"
# Seconds, when the provider gives no hint: short, because a rate limit's bucket refills within
# a second or so (2 s left half the allowed rate unused in bench/throttled.py), and a 5xx storm
# just gets another short hold after each try.
DEFAULT_HOLD = 0.5
MAX_HOLD = 300.0  # never trust a hint past five minutes: the retry countdowns stay short

# Move the hold later, never earlier; the key expires when the hold does.
_HOLD_SCRIPT = """
local until_ms = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ms > current then
  redis.call('SET', KEYS[1], string.format('%.0f', until_ms), 'PX', math.max(1, ARGV[2]))
  return 1
end
return 0
"""


class Throttle(Protocol):
    def hold(self, seconds: float | None) -> float:
        """Hold every sender off for ``seconds`` (None: the default); returns the hold used."""

    def remaining(self) -> float:
        """Seconds left of the current hold; 0.0 when sending may go on."""


def hold_seconds(hint: float | None) -> float:
    """The hold for a provider's hint: the hint itself within bounds, else the default."""
    if hint is None or hint <= 0:
        return DEFAULT_HOLD
    return min(hint, MAX_HOLD)


class LocalThrottle:
    """The throttle of a single process (the demo, SQLite, tests without Redis)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._until = 0.0
        self._lock = threading.Lock()

    def hold(self, seconds: float | None) -> float:
        held = hold_seconds(seconds)
        with self._lock:
            self._until = max(self._until, self._clock().timestamp() + held)
        return held

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._until - self._clock().timestamp())


class RedisThrottle:
    """The throttle shared by every worker on every machine, through one Redis key.

    Times are the workers' clocks (``clock``): a hold is a few seconds, so clock skew between
    machines of a second or so only shifts it slightly.
    """

    def __init__(self, client: redis.Redis, clock: Clock, key: str = KEY) -> None:
        self._client = client
        self._clock = clock
        self._key = key
        self._script = client.register_script(_HOLD_SCRIPT)

    def hold(self, seconds: float | None) -> float:
        held = hold_seconds(seconds)
        until_ms = (self._clock().timestamp() + held) * 1000
        try:
            self._script(keys=[self._key], args=[f"{until_ms:.0f}", int(held * 1000) + 1000])
        except redis.RedisError as err:
            log.warning("throttle: cannot record a hold of %.1fs in Redis: %s", held, err)
        return held

    def remaining(self) -> float:
        try:
            value = self._client.get(self._key)
        except redis.RedisError as err:
            log.warning("throttle: Redis unreachable, reading as open: %s", err)
            return 0.0
        if not value:
            return 0.0
        until = float(value) / 1000
        return max(0.0, until - self._clock().timestamp())


def throttle_for(settings: Settings, clock: Clock) -> Throttle:
    """Redis-shared for the network backends (many workers), in-process for the others."""
    if settings.email_backend in ("sendgrid", "smtp"):
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        return RedisThrottle(client, clock)
    return LocalThrottle(clock)
