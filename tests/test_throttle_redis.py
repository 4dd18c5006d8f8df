"""The provider's hold in Redis, shared by every worker: later only, and open if Redis is gone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis

from drip.clock import FrozenClock
from drip.engine.throttle import RedisThrottle
from tests.conftest import START

pytestmark = pytest.mark.redis


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    conn.delete("drip:test:hold")
    yield conn
    conn.delete("drip:test:hold")
    conn.close()


def test_two_workers_share_one_hold_that_only_moves_later(client: redis.Redis) -> None:
    clock = FrozenClock(START)
    one = RedisThrottle(client, clock, key="drip:test:hold")
    two = RedisThrottle(client, clock, key="drip:test:hold")
    one.hold(10)
    two.hold(3)  # an earlier hint never shortens the hold
    assert two.remaining() == pytest.approx(10)
    clock.advance(timedelta(seconds=4))
    assert one.remaining() == pytest.approx(6)
    clock.advance(timedelta(seconds=6))
    assert two.remaining() == 0


def test_an_unreachable_redis_reads_as_open_and_never_raises() -> None:
    gone = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    throttle = RedisThrottle(gone, FrozenClock(START))
    assert throttle.hold(5) == 5  # logged, not raised: sending goes on
    assert throttle.remaining() == 0.0
