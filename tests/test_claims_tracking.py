"""Claims about draining opens and clicks (docs/tracking.md, "Durable path of opens and clicks";
the README's ``DRIP_TRACKING_DRAIN_SECONDS``): beat drains every 2 s, and
``drip tracking drain --forever`` keeps draining until it is stopped, then exits cleanly.

The one subprocess of the suite's claims tests: the real command against a SQLite file and the
real Redis, polled with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, select

import workers.tasks  # noqa: F401 (registers the tasks with the app, as a worker does)
from drip.clock import FrozenClock
from drip.ingest.stream import OPEN, entry
from drip.models import TrackingEvent
from drip.runtime import Runtime
from drip.settings import Settings
from tests.beat_support import entries_for, interval_seconds
from tests.conftest import REPO, make_settings
from tests.tracking_support import HUMAN_UA, sent_delivery
from workers.celery_app import app, make_celery

DRAIN_TASK = "drip.tracking_drain"
DEADLINE_SECONDS = 30.0


def test_beat_drains_the_tracking_stream_every_two_seconds(tmp_path: Path) -> None:
    (default,) = entries_for(make_celery(make_settings(tmp_path)).conf.beat_schedule, DRAIN_TASK)
    tuned = make_celery(make_settings(tmp_path, tracking_drain_seconds=0.5))
    (faster,) = entries_for(tuned.conf.beat_schedule, DRAIN_TASK)

    assert interval_seconds(default) == 2.0
    assert interval_seconds(faster) == 0.5  # DRIP_TRACKING_DRAIN_SECONDS sets it
    assert DRAIN_TASK in app.tasks  # a worker knows the task beat sends


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return make_settings(
        tmp_path,
        redis_url=redis_url,
        tracking_stream=f"drip:test:{uuid.uuid4().hex}",
        tracking_drain_seconds=0.2,
    )


@pytest.fixture
def rt(settings: Settings, sqlite_engine: Engine, clock: FrozenClock) -> Runtime:
    """On the SQLite file the subprocess opens too."""
    return Runtime.build(settings, engine=sqlite_engine, clock=clock)


def _env(settings: Settings, engine: Engine) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIP_")}
    env.update(
        {
            "DRIP_DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "DRIP_REDIS_URL": settings.redis_url,
            "DRIP_TRACKING_STREAM": settings.tracking_stream,
            "DRIP_TRACKING_DRAIN_SECONDS": str(settings.tracking_drain_seconds),
            "DRIP_EMAIL_BACKEND": "memory",
            "DRIP_SECRET_KEY": settings.secret_key.get_secret_value(),
            "DRIP_CONTENT_DIR": str(settings.content_dir),
            "DRIP_TEMPLATES_DIR": str(settings.templates_dir),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture
def drainer(rt: Runtime) -> Iterator[subprocess.Popen[str]]:
    """``drip tracking drain --forever`` running; killed at the end if it is still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "drip.cli", "tracking", "drain", "--forever"],
        cwd=REPO,
        env=_env(rt.settings, rt.engine),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _stored_opens(rt: Runtime) -> list[TrackingEvent]:
    with rt.sessions() as session:
        query = select(TrackingEvent).where(TrackingEvent.provider == "drip")
        return list(session.scalars(query))


def test_drain_forever_moves_queued_opens_into_the_database_and_stops_cleanly(
    rt: Runtime, drainer: subprocess.Popen[str]
) -> None:
    _, delivery_id = sent_delivery(rt, "ana@example.com")
    lines: list[str] = []
    assert drainer.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(drainer.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    client = redis.Redis.from_url(rt.settings.redis_url)
    try:
        fields = entry(OPEN, delivery_id, at=rt.clock(), ip="198.51.100.7", user_agent=HUMAN_UA)
        client.xadd(rt.settings.tracking_stream, fields)  # type: ignore[arg-type]
        # Until the command says it drained the entry: only then is it surely in its loop, with
        # its SIGTERM handler in place (a signal during start-up would kill it, as it should).
        deadline = time.monotonic() + DEADLINE_SECONDS
        while (
            not any("drained 1 entries" in line for line in lines)
            and drainer.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        left = client.xlen(rt.settings.tracking_stream)
    finally:
        client.delete(rt.settings.tracking_stream)
        client.close()
    running = drainer.poll() is None

    drainer.send_signal(signal.SIGTERM)
    drainer.wait(timeout=DEADLINE_SECONDS)
    reader.join(timeout=DEADLINE_SECONDS)
    assert drainer.stderr is not None
    err = drainer.stderr.read()
    out = "".join(lines)
    drainer.stdout.close()
    drainer.stderr.close()

    assert running, err
    [event] = _stored_opens(rt)
    assert (event.type, event.delivery_id, event.machine) == ("opened", delivery_id, False)
    assert left == 0  # acknowledged and deleted once stored
    assert "drained 1 entries" in out, (out, err)
    assert drainer.returncode == 0, err  # SIGTERM: the drain in hand ends, then a clean exit
    assert out.rstrip().endswith("stopped")
    assert "Traceback" not in err
