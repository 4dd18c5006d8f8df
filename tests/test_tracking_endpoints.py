"""GET /t/o/<token>.gif and GET /t/c/<token>: answers, machine flags, the stream and its drain."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import select

from drip.clock import FrozenClock
from drip.esp.memory import MemoryBackend
from drip.ingest.stream import GROUP, DrainReport, _drain_batch, drain, ensure_group
from drip.models import MessageStats, TrackingEvent
from drip.runtime import Runtime
from drip.settings import Settings
from drip.tracking.tokens import TrackingSigner
from drip.web.tracking import GIF
from tests.tracking_support import (
    HUMAN_UA,
    client_for,
    drain_all,
    drop_stream,
    sent_delivery,
    tracking_settings,
)

KEY = ec.generate_private_key(ec.SECP256R1())
LAB_URL = "https://lab.test/join?utm_source=drip"
APPLE_MPP_UA = "Mozilla/5.0"
GOOGLE_PROXY_UA = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return tracking_settings(tmp_path, KEY, redis_url=redis_url)


@pytest.fixture
def client(rt: Runtime) -> Iterator[TestClient]:
    with client_for(rt) as client:  # one event loop for the whole test
        yield client
    drop_stream(rt)


@pytest.fixture
def delivery(rt: Runtime, clock: FrozenClock) -> int:
    _, delivery_id = sent_delivery(rt, "ana@example.com")
    clock.advance(timedelta(minutes=5))  # past the scanner window of the send
    return delivery_id


def _signer(rt: Runtime) -> TrackingSigner:
    return TrackingSigner(rt.secret, rt.settings.public_url)


def _pixel(rt: Runtime, delivery_id: int) -> str:
    return f"/t/o/{_signer(rt).open_token(delivery_id)}.gif"


def _click(rt: Runtime, delivery_id: int, url: str = LAB_URL, index: int = 0) -> str:
    return f"/t/c/{_signer(rt).click_token(delivery_id, index, url)}"


def _events(rt: Runtime) -> list[TrackingEvent]:
    with rt.sessions() as session:
        return list(session.scalars(select(TrackingEvent).order_by(TrackingEvent.id)))


def _stream_length(rt: Runtime) -> int:
    client = redis.Redis.from_url(rt.settings.redis_url)
    try:
        return int(client.xlen(rt.settings.tracking_stream))
    finally:
        client.close()


# --------------------------------------------------------------------------- the pixel


def test_the_pixel_answers_a_gif_that_is_never_cached(
    client: TestClient, rt: Runtime, delivery: int
) -> None:
    answer = client.get(_pixel(rt, delivery))

    assert answer.status_code == 200
    assert answer.content == GIF
    assert answer.headers["content-type"] == "image/gif"
    assert "no-store" in answer.headers["cache-control"]
    assert answer.headers["pragma"] == "no-cache"


def test_an_open_goes_through_the_stream_into_the_database(
    client: TestClient, rt: Runtime, delivery: int
) -> None:
    client.get(_pixel(rt, delivery))

    assert _stream_length(rt) == 1
    assert _events(rt) == []  # not stored until drained
    report = drain_all(rt)

    assert (report.entries, report.stored) == (1, 1)
    assert _stream_length(rt) == 0
    [event] = _events(rt)
    assert (event.type, event.delivery_id, event.machine) == ("opened", delivery, False)
    assert event.user_agent == HUMAN_UA
    assert event.occurred_at == rt.clock()
    assert event.provider == "drip"


def test_a_bad_pixel_token_still_gets_the_gif_but_records_nothing(
    client: TestClient, rt: Runtime, delivery: int
) -> None:
    token = _signer(rt).open_token(delivery)

    for path in (
        f"/t/o/{delivery}.AAAAAAAAAAAAAAAAAAAAAA.gif",
        f"/t/o/x{token}.gif",
        "/t/o/garbage.gif",
    ):
        answer = client.get(path)
        assert (answer.status_code, answer.content) == (200, GIF), path

    assert _stream_length(rt) == 0


@pytest.mark.parametrize(
    ("user_agent", "machine"),
    [
        (APPLE_MPP_UA, True),  # Apple Mail Privacy Protection
        (GOOGLE_PROXY_UA, True),  # Gmail's image proxy
        ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", True),
        ("Barracuda Sentinel (EE)", True),  # a security scanner
        (HUMAN_UA, False),
    ],
)
def test_opens_by_privacy_proxies_and_scanners_are_flagged_machine(
    client: TestClient, rt: Runtime, delivery: int, user_agent: str, machine: bool
) -> None:
    client.get(_pixel(rt, delivery), headers={"User-Agent": user_agent})
    drain_all(rt)

    [event] = _events(rt)
    assert event.machine is machine
    with rt.sessions() as session:
        stats = session.get(MessageStats, "glute-accelerator/1")
    assert stats is not None and stats.opened == (0 if machine else 1)


def test_a_head_request_on_the_pixel_is_a_machine_open_and_counts_no_open(
    client: TestClient, rt: Runtime, delivery: int
) -> None:
    answer = client.request("HEAD", _pixel(rt, delivery), headers={"User-Agent": HUMAN_UA})

    assert answer.status_code == 200
    drain_all(rt)
    [event] = _events(rt)
    assert event.machine is True
    with rt.sessions() as session:
        stats = session.get(MessageStats, "glute-accelerator/1")
    assert stats is None or stats.opened == 0


def test_repeated_opens_are_all_stored_and_counted_once(
    client: TestClient, rt: Runtime, delivery: int
) -> None:
    for _ in range(3):
        client.get(_pixel(rt, delivery))
    drain_all(rt)

    with rt.sessions() as session:
        stats = session.get(MessageStats, "glute-accelerator/1")
    assert len(_events(rt)) == 3
    assert stats is not None and stats.opened == 1


# --------------------------------------------------------------------------- the click


def test_a_click_redirects_to_the_exact_url_and_is_recorded(
    client: TestClient, rt: Runtime, delivery: int
) -> None:
    answer = client.get(_click(rt, delivery, index=2))

    assert answer.status_code == 302
    assert answer.headers["location"] == LAB_URL
    drain_all(rt)
    [event] = _events(rt)
    assert (event.type, event.delivery_id, event.url, event.machine) == (
        "clicked",
        delivery,
        LAB_URL,
        False,
    )
    assert event.raw == {"link": 2}


@pytest.mark.parametrize(
    "path",
    [
        "/t/c/nonsense",
        "/t/c/1.0.aHR0cHM6Ly9ldmlsLnRlc3Qv.AAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_a_bad_click_token_is_a_plain_404_and_never_a_redirect(
    client: TestClient, rt: Runtime, delivery: int, path: str
) -> None:
    answer = client.get(path)

    assert answer.status_code == 404
    assert "location" not in answer.headers
    assert answer.headers["content-type"].startswith("text/plain")
    assert _stream_length(rt) == 0


def test_a_token_moved_to_another_url_does_not_redirect(
    client: TestClient, rt: Runtime, delivery: int
) -> None:
    genuine = _signer(rt).click_token(delivery, 0, LAB_URL).split(".")
    evil = _signer(rt).click_token(delivery, 0, "https://evil.test/").split(".")
    forged = ".".join([*genuine[:2], evil[2], genuine[3]])  # evil URL, genuine signature

    answer = client.get(f"/t/c/{forged}")

    assert answer.status_code == 404
    assert "location" not in answer.headers


def test_a_token_for_another_delivery_does_not_redirect(
    client: TestClient, rt: Runtime, delivery: int
) -> None:
    parts = _signer(rt).click_token(delivery, 0, LAB_URL).split(".")
    parts[0] = str(delivery + 1)

    assert client.get("/t/c/" + ".".join(parts)).status_code == 404


def test_an_open_token_is_not_a_click_token(client: TestClient, rt: Runtime, delivery: int) -> None:
    assert client.get(f"/t/c/{_signer(rt).open_token(delivery)}").status_code == 404


def test_a_click_within_seconds_of_the_send_is_a_scanners(
    client: TestClient, rt: Runtime, clock: FrozenClock
) -> None:
    _, delivery_id = sent_delivery(rt, "ben@example.com")
    clock.advance(timedelta(seconds=3))

    client.get(_click(rt, delivery_id))
    drain_all(rt)

    [event] = _events(rt)
    assert event.machine is True


@pytest.mark.parametrize(
    ("method", "user_agent"),
    [("HEAD", HUMAN_UA), ("GET", "Mozilla/5.0 (compatible; Mimecast URL Protect)"), ("GET", "")],
)
def test_clicks_by_link_scanners_are_machine_and_still_redirect(
    client: TestClient, rt: Runtime, delivery: int, method: str, user_agent: str
) -> None:
    answer = client.request(method, _click(rt, delivery), headers={"User-Agent": user_agent})

    assert answer.status_code == 302
    drain_all(rt)
    [event] = _events(rt)
    assert event.machine is True
    with rt.sessions() as session:
        stats = session.get(MessageStats, "glute-accelerator/1")
    assert stats is not None and stats.clicked == 0


# --------------------------------------------------------------------------- durability


def test_a_drain_that_died_before_acknowledging_stores_nothing_twice(
    client: TestClient, rt: Runtime, delivery: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        client.get(_pixel(rt, delivery))
    direct = redis.Redis.from_url(rt.settings.redis_url)
    stream = rt.settings.tracking_stream
    try:
        # A first drainer reads the entries and commits them, then dies before its XACK.
        ensure_group(direct, stream)
        [[_, entries]] = direct.xreadgroup(GROUP, "dead-drainer", {stream: ">"}, count=10)
        with monkeypatch.context() as patch:
            patch.setattr(direct, "pipeline", _killed_before_ack)
            with pytest.raises(ConnectionError):
                _drain_batch(rt, direct, stream, list(entries), DrainReport())
        assert len(_events(rt)) == 3

        # Not idle long enough yet: a live drainer may still be working on them.
        assert drain(rt, direct).entries == 0
        # Once idle, the next drain claims them: all duplicates, then acknowledged.
        report = drain(rt, direct, reclaim_idle_ms=0)
    finally:
        direct.close()

    assert (report.entries, report.stored, report.duplicates) == (3, 0, 3)
    assert len(_events(rt)) == 3
    assert _stream_length(rt) == 0


def _killed_before_ack(*args: Any, **kwargs: Any) -> Any:
    raise ConnectionError("worker killed before XACK")


def test_when_redis_is_down_events_are_stored_directly(
    tmp_path: Path, engine: Any, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    rt = Runtime.build(
        tracking_settings(tmp_path, KEY, redis_url="redis://127.0.0.1:1/0"),
        engine=engine,
        backend=memory_backend,
        clock=clock,
    )
    _, delivery_id = sent_delivery(rt, "ana@example.com")
    clock.advance(timedelta(minutes=5))

    with client_for(rt) as client:
        pixel = client.get(_pixel(rt, delivery_id))
        click = client.get(_click(rt, delivery_id))

    assert pixel.content == GIF and click.status_code == 302
    assert [e.type for e in _events(rt)] == ["opened", "clicked"]


def test_when_nothing_can_store_the_visitor_still_gets_the_gif_and_the_redirect(
    tmp_path: Path,
    engine: Any,
    memory_backend: MemoryBackend,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt = Runtime.build(
        tracking_settings(tmp_path, KEY, redis_url="redis://127.0.0.1:1/0"),
        engine=engine,
        backend=memory_backend,
        clock=clock,
    )
    _, delivery_id = sent_delivery(rt, "ana@example.com")

    def broken(*args: Any) -> Any:
        raise RuntimeError("database down too")

    monkeypatch.setattr("drip.ingest.stream.store_now", broken)
    with client_for(rt) as client:
        pixel = client.get(_pixel(rt, delivery_id))
        click = client.get(_click(rt, delivery_id))

    assert (pixel.status_code, pixel.content) == (200, GIF)
    assert (click.status_code, click.headers["location"]) == (302, LAB_URL)


def test_the_redirect_location_is_a_valid_header_for_any_signed_url(
    client: TestClient, rt: Runtime, delivery: int
) -> None:
    url = "https://lab.test/join?coach=Zoé Martin&x=1"

    answer = client.get(_click(rt, delivery, url))

    assert answer.status_code == 302
    assert answer.headers["location"] == "https://lab.test/join?coach=Zo%C3%A9%20Martin&x=1"


def test_other_paths_under_t_go_to_the_app(client: TestClient, rt: Runtime) -> None:
    assert client.get("/t/o/").status_code == 404
    assert client.post(_pixel(rt, 1)).status_code in (404, 405)
    assert _stream_length(rt) == 0


def test_the_drain_command_moves_the_stream_into_the_database(
    client: TestClient, rt: Runtime, engine: Any, delivery: int
) -> None:
    from click.testing import CliRunner

    from drip.cli.main import main
    from drip.settings import get_settings
    from tests.conftest import REPO

    client.get(_pixel(rt, delivery))
    client.get(_click(rt, delivery))
    env = {
        "DRIP_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "DRIP_REDIS_URL": rt.settings.redis_url,
        "DRIP_TRACKING_STREAM": rt.settings.tracking_stream,
        "DRIP_SECRET_KEY": rt.secret,
        "DRIP_CONTENT_DIR": str(REPO / "content" / "lessons"),
        "DRIP_EMAIL_BACKEND": "memory",
    }
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["tracking", "drain"], env=env)
    finally:
        get_settings.cache_clear()

    assert result.exit_code == 0, result.output
    assert "drained 2 entries in 1 batch(es): 2 stored, 0 duplicates" in result.output
    assert [e.type for e in _events(rt)] == ["opened", "clicked"]
