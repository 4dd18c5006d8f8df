"""A signup never waits on the email provider: the form answers at once, the worker sends.

Real processes: the web app (in-process) hands the confirmation to a real Celery worker through
Redis; the worker sends through the official ``sendgrid`` library to a stand-in that hangs or
fails. The form's answer time is the promise of the README ("answers in milliseconds whatever
SendGrid does"), checked with a generous bound; the confirmation reaches SendGrid exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from drip.clock import FrozenClock
from drip.esp.memory import MemoryBackend
from drip.ingest.events import Event, EventType, store
from drip.models import Delivery, DeliveryStatus
from drip.runtime import Runtime
from drip.web.app import create_app
from tests.conftest import truncate_all
from tests.fakes.sendgrid_sink import SendGridSink
from tests.web_support import BROWSER_UA, form_signup, web_settings
from tests.worker_harness import WorkerProcess, client, wait_for, worker_env

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis]

FORM_BOUND = 0.2  # seconds: the "under 200 ms", whatever the provider does
ADDRESS = "ana@example.com"


@pytest.fixture
def web(pg_engine: Engine, broker: str, tmp_path: Path) -> Iterator[tuple[Runtime, TestClient]]:
    """The web app on PostgreSQL, handing confirmations to the workers through ``broker``."""
    truncate_all(pg_engine)
    settings = web_settings(tmp_path, redis_url=broker, broker_url=broker)
    rt = Runtime.build(
        settings, engine=pg_engine, backend=MemoryBackend(), clock=FrozenClock(datetime.now(UTC))
    )
    producer = client(broker)

    def enqueue(ids: list[int]) -> None:
        producer.send_task("drip.send", args=[ids], queue="drip")

    app = create_app(rt, enqueue=enqueue)
    with TestClient(app, follow_redirects=False, headers={"User-Agent": BROWSER_UA}) as http:
        yield rt, http


@pytest.fixture
def worker(
    pg_engine: Engine, broker: str, sink: SendGridSink, tmp_path: Path
) -> Iterator[WorkerProcess]:
    env = worker_env(
        database_url=pg_engine.url.render_as_string(hide_password=False),
        broker_url=broker,
        sendgrid_url=sink.url,
        extra={"DRIP_SENDGRID_TIMEOUT": "2.0"},
    )
    process = WorkerProcess(env, log=tmp_path / "worker.log").start()
    yield process
    process.stop()


def _timed_signup(http: TestClient) -> float:
    started = time.perf_counter()
    answer = form_signup(http, email=ADDRESS, first_name="Ana")
    elapsed = time.perf_counter() - started
    assert answer.status_code == 303
    return elapsed


def _confirmation(rt: Runtime) -> Delivery:
    with rt.sessions() as session:
        return session.scalars(select(Delivery)).one()


def test_a_hanging_provider_never_holds_the_form_and_gets_the_confirmation_once(
    web: tuple[Runtime, TestClient], worker: WorkerProcess, sink: SendGridSink
) -> None:
    rt, http = web
    sink.hang(accept=True, times=1)  # SendGrid takes the request and never answers
    assert _timed_signup(http) < FORM_BOUND
    wait_for(
        lambda: _confirmation(rt).status == DeliveryStatus.UNKNOWN,
        timeout=30,
        what="the worker to give up on the hanging answer",
        log=worker,
    )
    assert sink.acceptance_counts()[(ADDRESS, "confirm")] == 1
    # SendGrid's "processed" event for it comes in: the confirmation counts as sent, once.
    row = _confirmation(rt)
    event = Event(
        type=EventType.QUEUED,
        occurred_at=rt.clock(),
        provider="sendgrid",
        provider_event_id="processed-confirm",
        delivery_id=row.id,
        email=ADDRESS,
    )
    assert store(rt, [event]).settled == {"sent": 1, "failed": 0}
    assert _confirmation(rt).status == DeliveryStatus.SENT
    assert sink.acceptance_counts()[(ADDRESS, "confirm")] == 1


def test_a_signup_during_an_outage_gets_its_confirmation_once_when_the_provider_is_back(
    web: tuple[Runtime, TestClient], worker: WorkerProcess, sink: SendGridSink
) -> None:
    rt, http = web
    sink.storm(503, retry_after=1, times=None)  # SendGrid down
    assert _timed_signup(http) < FORM_BOUND
    wait_for(lambda: sink.stats()["server_errors"] >= 2, timeout=30, what="two refused tries")
    assert _confirmation(rt).status == DeliveryStatus.QUEUED  # waiting, not failed
    sink.clear()  # SendGrid is back
    wait_for(
        lambda: _confirmation(rt).status == DeliveryStatus.SENT,
        timeout=30,
        what="the confirmation after the outage",
        log=worker,
    )
    assert sink.acceptance_counts()[(ADDRESS, "confirm")] == 1
