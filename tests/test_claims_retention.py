"""Claims about retention: beat purges unconfirmed signups every hour (docs/subscribers.md, the
flow, step 5), and the task it names deletes exactly the pending signups older than
``DRIP_PENDING_PURGE_DAYS``: nothing younger, nothing confirmed.

The beat entry is read from the Celery app of ``workers/``; the task runs in-process (no worker,
no broker), on both databases.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

import workers.tasks
from drip.clock import FrozenClock
from drip.esp.memory import MemoryBackend
from drip.models import Subscriber, SubscriberStatus
from drip.runtime import Runtime
from drip.settings import Settings
from tests.beat_support import entries_for, interval_seconds
from tests.conftest import make_settings
from tests.web_support import client_for, form_signup, last_confirm_path, web_settings
from workers.celery_app import app, make_celery

PURGE_TASK = "drip.purge_pending"
RETENTION_DAYS = 12  # not the default 30: the task must read the setting


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return web_settings(tmp_path, pending_purge_days=RETENTION_DAYS)


def test_beat_runs_the_pending_purge_every_hour(tmp_path: Path) -> None:
    for celery_app in (app, make_celery(make_settings(tmp_path, tick_seconds=15))):
        (entry,) = entries_for(celery_app.conf.beat_schedule, PURGE_TASK)
        assert interval_seconds(entry) == 3600.0
    assert PURGE_TASK in app.tasks  # a worker knows the task beat sends


def _status(rt: Runtime) -> dict[str, str]:
    with rt.sessions() as session:
        return {
            row.email: row.status
            for row in session.execute(select(Subscriber.email, Subscriber.status))
            if row.email
        }


def test_the_purge_task_deletes_pending_signups_older_than_the_retention_only(
    rt: Runtime,
    clock: FrozenClock,
    memory_backend: MemoryBackend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    web = client_for(rt)
    form_signup(web, email="stale@example.com")
    form_signup(web, email="confirmed@example.com")
    assert web.get(last_confirm_path(memory_backend, "confirmed@example.com")).status_code == 200
    clock.advance(timedelta(days=1, hours=1))
    form_signup(web, email="edge@example.com")  # will be 11 days 23 hours old
    clock.advance(timedelta(days=10))
    form_signup(web, email="young@example.com")  # will be 2 days old
    clock.advance(timedelta(days=1, hours=23))  # the first two signups are 13 days old now

    monkeypatch.setattr(workers.tasks, "_runtime", rt)
    deleted = app.tasks[PURGE_TASK]()

    assert deleted == 1
    assert _status(rt) == {
        "confirmed@example.com": SubscriberStatus.ACTIVE,
        "edge@example.com": SubscriberStatus.PENDING,
        "young@example.com": SubscriberStatus.PENDING,
    }
