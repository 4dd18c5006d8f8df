"""Per-IP fixed-window rate limits kept in Redis, shared by every web process.

One counter per (scope, client, window): ``INCR`` then ``EXPIRE``. If Redis is unreachable the
limiter fails *open* (the request goes through) and logs a warning, at most every 30 seconds:
losing signups because a cache is down is worse than a few minutes without a limit. The web
server's own limits (body size, timeouts) still apply.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time

import redis

from drip.clock import Clock

log = logging.getLogger(__name__)
KEY_PREFIX = "drip:ratelimit"
BREAKER_SECONDS = 30.0


def client_key(ip: str | None) -> str:
    """An IPv6 client counts per /64 (one host can hold a whole /64); IPv4 per address."""
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return ip or "unknown"
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class RateLimiter:
    def __init__(self, redis_url: str, window_seconds: int, clock: Clock) -> None:
        self.window = window_seconds
        self.clock = clock
        self._redis = redis.Redis.from_url(
            redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self._down_until = 0.0

    def key(self, scope: str, ip: str | None) -> str:
        window = int(self.clock().timestamp()) // self.window
        return f"{KEY_PREFIX}:{scope}:{window}:{client_key(ip)}"

    def hit(self, scope: str, ip: str | None, limit: int) -> int | None:
        """Count one request; the seconds to wait (for ``Retry-After``) if over ``limit``."""
        if limit <= 0 or time.monotonic() < self._down_until:
            return None
        key = self.key(scope, ip)
        try:
            pipe = self._redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, self.window)
            count, _ = pipe.execute()
        except redis.RedisError as err:
            self._down_until = time.monotonic() + BREAKER_SECONDS
            log.warning("rate limit off for %.0fs: Redis unreachable (%s)", BREAKER_SECONDS, err)
            return None
        if int(count) <= limit:
            return None
        now = self.clock().timestamp()
        window_end = (int(now) // self.window + 1) * self.window
        return max(1, math.ceil(window_end - now))

    def close(self) -> None:
        self._redis.close()
