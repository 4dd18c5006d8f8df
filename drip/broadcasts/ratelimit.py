"""The global broadcast rate limit, shared by every worker through Redis.

Per second: GCRA (the generic cell rate algorithm), one Redis key holding the theoretical
arrival time (TAT) of the next email. A request for ``n`` emails is granted when the TAT is not
ahead of now by more than the burst tolerance, and then moves the TAT ``n / rate`` seconds on;
otherwise it is refused with the time to wait. Per hour and per day: fixed windows aligned on
UTC, one counter each; a request is cut down to what is left in them. The three checks and the
updates run in one Lua script, so workers on any number of machines never exceed the limits
together, and the script reads Redis's own clock (``TIME``), so their clocks need not agree.

Contract of :meth:`RedisRateLimiter.acquire`: it returns ``Grant(granted, wait)`` with
``0 <= granted <= wanted``; ``granted == 0`` means ask again in ``wait`` seconds. It never
sleeps. A single Redis server is assumed (the window keys are derived inside the script).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import redis

from drip.clock import Clock
from drip.settings import Settings

KEY = "drip:broadcasts:rate"
PAGE_SECONDS = 0.1  # a throttled page holds at most this much of the per-second budget
BURST_SECONDS = 0.2  # how late a page may come and still keep the schedule (two pages)

_SCRIPT = """
local wanted = tonumber(ARGV[1])
local per_second = tonumber(ARGV[2])
local limits = {tonumber(ARGV[3]), tonumber(ARGV[4])}
local sizes = {3600000000, 86400000000}
local burst = tonumber(ARGV[6])
local now
if ARGV[5] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[5])
end
local grant = wanted
local wait = 0
local windows = {}
for i = 1, 2 do
  if limits[i] > 0 then
    local start = now - (now % sizes[i])
    local key = KEYS[i + 1] .. ':' .. string.format('%.0f', start)
    local used = tonumber(redis.call('GET', key) or '0')
    local left = limits[i] - used
    if left <= 0 then
      grant = 0
      wait = math.max(wait, start + sizes[i] - now)
    elseif left < grant then
      grant = left
    end
    windows[#windows + 1] = {key, sizes[i]}
  end
end
if grant > 0 and per_second > 0 then
  local interval = 1000000 / per_second
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < now then tat = now end
  if tat - now > burst then
    wait = math.max(wait, tat - now - burst)
    grant = 0
  else
    local new_tat = tat + grant * interval
    redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
               'PX', math.ceil((new_tat - now) / 1000) + 1000)
  end
end
if grant > 0 then
  for _, w in ipairs(windows) do
    redis.call('INCRBY', w[1], grant)
    redis.call('PEXPIRE', w[1], math.ceil(w[2] / 1000) + 60000)
  end
end
return {grant, string.format('%.0f', wait)}
"""


@dataclass(frozen=True)
class Grant:
    granted: int
    wait: float  # seconds; meaningful when granted == 0


class RateLimiter(Protocol):
    def acquire(self, wanted: int) -> Grant:
        """Take up to ``wanted`` emails of the budget now; never blocks."""


class RedisRateLimiter:
    """Per-second GCRA plus optional hourly and daily windows, atomic in Redis.

    ``clock`` is for tests: given, its time replaces Redis's ``TIME`` (so a test can move time
    deterministically). ``burst`` is the GCRA tolerance in seconds: 0 means a grant of ``n``
    must be "paid off" at the rate before the next one; ``b`` lets a request come up to ``b``
    seconds early. Any window of length ``T`` then holds at most ``rate * (T + b)`` emails plus
    one grant.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        per_second: int,
        per_hour: int = 0,
        per_day: int = 0,
        key: str = KEY,
        burst: float = 0.0,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.per_second = per_second
        self.per_hour = per_hour
        self.per_day = per_day
        self.keys = [key, f"{key}:hour", f"{key}:day"]
        self.burst_us = int(burst * 1_000_000)
        self.clock = clock
        self._script = client.register_script(_SCRIPT)

    def acquire(self, wanted: int) -> Grant:
        if wanted <= 0:
            return Grant(0, 0.0)
        now = "" if self.clock is None else str(int(self.clock().timestamp() * 1_000_000))
        args: list[int | str] = [
            wanted,
            self.per_second,
            self.per_hour,
            self.per_day,
            now,
            self.burst_us,
        ]
        granted, wait_us = self._script(keys=self.keys, args=args)
        return Grant(int(granted), int(wait_us) / 1_000_000)

    def reset(self) -> None:
        """Forget the budget used (tests; a new benchmark run)."""
        for pattern in (self.keys[0], f"{self.keys[1]}:*", f"{self.keys[2]}:*"):
            for key in self.client.scan_iter(match=pattern):
                self.client.delete(key)


def limiter_from_settings(
    settings: Settings, clock: Clock | None = None
) -> RedisRateLimiter | None:
    """The configured limiter, or None when every ``DRIP_BROADCAST_RATE_*`` is 0 (unthrottled)."""
    s = settings
    if not (s.broadcast_rate_per_second or s.broadcast_rate_per_hour or s.broadcast_rate_per_day):
        return None
    return RedisRateLimiter(
        redis.Redis.from_url(s.redis_url),
        per_second=s.broadcast_rate_per_second,
        per_hour=s.broadcast_rate_per_hour,
        per_day=s.broadcast_rate_per_day,
        # Tolerance: a page task that comes a little late (a busy worker, a slow queue) keeps
        # the schedule instead of pushing every later page back, which would lose the rate.
        burst=BURST_SECONDS,
        clock=clock,
    )


def page_quota(settings: Settings) -> int:
    """Subscribers per page: ``DRIP_BROADCAST_PAGE_SIZE``, but at most ~0.1 s of the per-second
    rate, so that throttled pages are small and the achieved rate stays even."""
    size = settings.broadcast_page_size
    if settings.broadcast_rate_per_second:
        size = min(size, max(1, math.ceil(settings.broadcast_rate_per_second * PAGE_SECONDS)))
    return size
