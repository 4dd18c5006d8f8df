"""The global rate limit against the real Redis: deterministic with a given clock, and shared
by concurrent callers in real time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from drip.broadcasts.ratelimit import Grant, RedisRateLimiter, limiter_from_settings, page_quota
from drip.clock import FrozenClock
from tests.conftest import make_settings

pytestmark = pytest.mark.redis


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    for key in conn.scan_iter(match="test:rate*"):
        conn.delete(key)
    conn.close()


def limiter(
    client: redis.Redis,
    clock: FrozenClock | None = None,
    *,
    per_second: int,
    per_hour: int = 0,
    per_day: int = 0,
) -> RedisRateLimiter:
    return RedisRateLimiter(
        client,
        key=f"test:rate:{time.monotonic_ns()}",
        per_second=per_second,
        per_hour=per_hour,
        per_day=per_day,
        clock=clock,
    )


def test_per_second_grants_are_paid_off_at_the_rate(client: redis.Redis) -> None:
    clock = FrozenClock(datetime(2026, 3, 2, 12, tzinfo=UTC))
    rl = limiter(client, clock, per_second=100)

    assert rl.acquire(10) == Grant(10, 0.0)
    assert rl.acquire(10) == Grant(0, 0.1)  # 10 emails at 100/s take 0.1 s
    clock.advance(timedelta(milliseconds=60))
    assert rl.acquire(10) == Grant(0, 0.04)
    clock.advance(timedelta(milliseconds=40))
    assert rl.acquire(10) == Grant(10, 0.0)
    clock.advance(timedelta(seconds=10))  # an idle limiter does not save up a burst
    assert rl.acquire(50) == Grant(50, 0.0)
    assert rl.acquire(1) == Grant(0, 0.5)


def test_hour_and_day_windows_cut_grants_down_and_say_when_they_reopen(
    client: redis.Redis,
) -> None:
    clock = FrozenClock(datetime(2026, 3, 2, 12, 59, 30, tzinfo=UTC))
    rl = limiter(client, clock, per_second=0, per_hour=25, per_day=40)

    assert [rl.acquire(10).granted for _ in range(3)] == [10, 10, 5]
    assert rl.acquire(10) == Grant(0, 30.0)  # the 13:00 window opens in 30 s
    clock.set(datetime(2026, 3, 2, 13, 0, tzinfo=UTC))
    assert [rl.acquire(10).granted for _ in range(2)] == [10, 5]  # the day has 15 left
    assert rl.acquire(1) == Grant(0, 11 * 3600.0)  # tomorrow, 00:00 UTC


def test_a_refused_request_takes_nothing_from_the_windows(client: redis.Redis) -> None:
    clock = FrozenClock(datetime(2026, 3, 2, 12, tzinfo=UTC))
    rl = limiter(client, clock, per_second=10, per_hour=100)

    assert rl.acquire(10).granted == 10
    assert rl.acquire(10).granted == 0  # refused by the per-second rule
    clock.advance(timedelta(seconds=1))
    assert rl.acquire(100).granted == 90  # only the granted 10 were counted


def test_two_workers_together_stay_within_the_limit(client: redis.Redis) -> None:
    """Two threads hammer one shared limit in real time; Redis's clock decides."""
    rate, page, run_for = 400, 10, 1.5
    rl = limiter(client, per_second=rate)
    grants: list[tuple[float, int]] = []
    lock = threading.Lock()

    def worker() -> None:
        own = RedisRateLimiter(client, key=rl.keys[0], per_second=rate)  # same key, own object
        stop = time.monotonic() + run_for
        while time.monotonic() < stop:
            grant = own.acquire(page)
            if grant.granted:
                with lock:
                    grants.append((time.monotonic(), grant.granted))
            else:
                time.sleep(grant.wait)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    total = sum(n for _, n in grants)
    span = grants[-1][0] - grants[0][0]
    # Each grant is paid off before the next: over the span, at most rate * span + one page.
    assert total <= rate * span + page + rate * 0.02  # 20 ms of scheduling slack
    assert total >= 0.85 * rate * run_for  # and the budget was actually used


def test_settings_make_the_limiter_and_size_the_pages(tmp_path: Path, redis_url: str) -> None:
    off = make_settings(tmp_path)
    on = make_settings(tmp_path, broadcast_rate_per_second=2000, redis_url=redis_url)
    slow = make_settings(tmp_path, broadcast_rate_per_second=5, redis_url=redis_url)

    assert limiter_from_settings(off) is None
    assert isinstance(limiter_from_settings(on), RedisRateLimiter)
    assert (page_quota(off), page_quota(on), page_quota(slow)) == (1000, 200, 1)
