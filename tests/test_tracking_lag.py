"""The tracking drain's lag (``drip.ingest.stream.lag``) against the real Redis: how many opens
and clicks wait in the stream and when Redis took the oldest, until a drain stores them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from drip.ingest.stream import CLICK, GROUP, OPEN, Lag, drain, ensure_group, entry, lag
from drip.runtime import Runtime
from drip.settings import Settings
from tests.conftest import START, make_settings
from tests.tracking_support import sent_delivery

URL = "https://lab.test/join"


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return make_settings(
        tmp_path, redis_url=redis_url, tracking_stream=f"drip:test-lag:{uuid.uuid4().hex}"
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(settings.redis_url)
    yield conn
    conn.delete(settings.tracking_stream)
    conn.close()


def _add(client: redis.Redis, stream: str, seconds_before_start: int) -> str:
    """An open entry that Redis took ``seconds_before_start`` before START (its id's time)."""
    millis = int((START - timedelta(seconds=seconds_before_start)).timestamp() * 1000)
    fields = entry(OPEN, 1, at=START, ip=None, user_agent=None)
    return str(client.xadd(stream, fields, id=f"{millis}-0").decode())  # type: ignore[arg-type]


def test_a_missing_stream_has_nothing_waiting(client: redis.Redis, settings: Settings) -> None:
    backlog = lag(client, settings.tracking_stream)
    assert backlog == Lag(0, None)
    assert backlog.oldest_seconds(START) == 0.0
    assert not client.exists(settings.tracking_stream)  # reading creates nothing


def test_the_count_and_the_oldest_entry_time(client: redis.Redis, settings: Settings) -> None:
    stream = settings.tracking_stream
    for seconds in (90, 30, 5):
        _add(client, stream, seconds)
    backlog = lag(client, stream)
    assert backlog.waiting == 3
    assert backlog.oldest_at == START - timedelta(seconds=90)
    assert backlog.oldest_seconds(START) == 90.0
    # A clock behind Redis's never reads as a negative age.
    assert backlog.oldest_seconds(START - timedelta(minutes=5)) == 0.0


def test_entries_read_but_not_acknowledged_still_wait(
    client: redis.Redis, settings: Settings
) -> None:
    stream = settings.tracking_stream
    oldest = _add(client, stream, 120)
    _add(client, stream, 10)
    ensure_group(client, stream)
    client.xreadgroup(GROUP, "a-drainer-that-died", {stream: ">"}, count=1)  # pending, unacked
    assert lag(client, stream).waiting == 2
    assert lag(client, stream).oldest_seconds(START) == 120.0
    # Stored, acknowledged and deleted (what the drain does): the next one is the oldest.
    client.xack(stream, GROUP, oldest)
    client.xdel(stream, oldest)
    assert lag(client, stream) == Lag(1, START - timedelta(seconds=10))


def test_a_drain_empties_the_backlog(rt: Runtime, client: redis.Redis) -> None:
    _, delivery_id = sent_delivery(rt, "ana@example.com")
    stream = rt.settings.tracking_stream
    now = rt.clock()
    opened = entry(OPEN, delivery_id, at=now, ip=None, user_agent=None)
    clicked = entry(CLICK, delivery_id, at=now, ip=None, user_agent=None, index=0, url=URL)
    for fields in (opened, clicked):
        client.xadd(stream, fields)  # type: ignore[arg-type]
    assert lag(client, stream).waiting == 2
    report = drain(rt, client)
    assert report.entries == 2
    assert lag(client, stream) == Lag(0, None)
