"""``drip demo``: the real scheduler over simulated days, on SQLite and the file outbox.

A fresh database, a few subscribers in different time zones, and a :class:`~drip.clock.FrozenClock`
that jumps from one due time to the next the way beat's minute ticks would reach it. Each tick runs
:func:`drip.engine.claim.tick` and the sends run :func:`drip.engine.dispatch.send_deliveries`, the
same code the
Celery workers run, in-process instead of through Redis.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from drip.clock import FrozenClock
from drip.content.loading import load_content
from drip.content.types import DEFAULT_FORM
from drip.db import make_engine
from drip.engine.automations import handle
from drip.engine.claim import tick
from drip.engine.dispatch import send_deliveries
from drip.esp.outbox import OutboxBackend, write_index
from drip.migrate import upgrade
from drip.models import Consent, Delivery, Enrollment, Subscriber, SubscriberStatus
from drip.runtime import Runtime
from drip.schedule import local_to_utc, resolve_zone
from drip.settings import Settings
from drip.subscribers.tags import add_tags

DEFAULT_ZONES = (
    "America/New_York",
    "Europe/London",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/Los_Angeles",
)
NAMES = ("Ana", "Ben", "Chloe", "Dev", "Emi", "Femi", "Gus", "Hana", "Ivo", "Jun")
SIGNUP_HOUR = 18  # local time of the demo sign-ups
CONSENT_TEXT = "Send me the free Glute Accelerator Crash Course and occasional emails."
# One more subscriber, in the first zone, signs up through the lead magnet's form: its tag starts
# the Mid-Stance Checklist (a tag-started sequence) and nothing else.
LEAD_MAGNET_FORM = "mid-stance"


@dataclass(frozen=True)
class DemoRow:
    email: str
    zone: str
    emails: int
    first_local: str
    last_local: str
    form: str = DEFAULT_FORM


def _minute_ceiling(moment: datetime) -> datetime:
    """The first beat tick at or after ``moment`` (ticks fire on the minute)."""
    floor = moment.replace(second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(minutes=1)


def run_demo(
    settings: Settings,
    *,
    start: date,
    days: int,
    zones: Sequence[str],
    database: Path,
) -> list[DemoRow]:
    """Simulate ``days`` days from ``start`` (00:00 UTC); return one summary row per subscriber.

    One subscriber per zone signs up through the default form at 18:30 local time on ``start``
    (a minute apart, so the outbox order is stable), and one more in the first zone through the
    lead magnet's form (``mid-stance``, when the forms folder has it); each is confirmed at once,
    so the form's sequences and its tags' sequences start as a confirmed signup's would.
    """
    # Check the content before deleting anything: a broken lesson must not cost the last demo.
    load_content(settings)
    database.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    outbox = settings.outbox_dir
    if outbox.exists():
        shutil.rmtree(outbox)
    outbox.mkdir(parents=True)

    # Everyone signs up on the evening of the first day, in their own zone.
    people = [(zone, DEFAULT_FORM) for zone in zones]
    engine = make_engine(f"sqlite:///{database}")
    upgrade(engine)
    clock = FrozenClock(datetime.combine(start, datetime.min.time(), tzinfo=UTC))
    backend = OutboxBackend(outbox, clock=clock)
    rt = Runtime.build(settings, engine=engine, backend=backend, clock=clock)
    if LEAD_MAGNET_FORM in rt.forms and zones:
        people.append((zones[0], LEAD_MAGNET_FORM))
    signups = [
        local_to_utc(start, SIGNUP_HOUR, 30 + i, resolve_zone(zone, "UTC"))
        for i, (zone, _) in enumerate(people)
    ]
    for i, (zone, form) in enumerate(people):
        clock.set(signups[i])
        _sign_up(rt, i, zone, form)

    clock.set(min(signups))
    end = datetime.combine(start, datetime.min.time(), tzinfo=UTC) + timedelta(days=days)
    while True:
        pending: list[list[int]] = []
        tick(rt, clock(), enqueue=pending.append)
        for batch in pending:
            send_deliveries(rt, batch, clock())
        with rt.sessions() as session:
            upcoming = session.scalar(select(func.min(Enrollment.next_send_at)))
        if upcoming is None or upcoming >= end:
            break
        clock.set(max(_minute_ceiling(upcoming), clock() + timedelta(minutes=1)))
    write_index(outbox)
    return _summary(rt, outbox)


def _sign_up(rt: Runtime, index: int, zone: str, form_slug: str) -> None:
    """A confirmed signup through ``form_slug`` at the clock's time: the form's tags, then the
    form's event (drip.engine.automations), as confirming the address would do."""
    now = rt.clock()
    name = NAMES[index % len(NAMES)]
    form = rt.forms[form_slug]
    with rt.transaction() as session:
        sub = Subscriber(
            email=f"{name.lower()}{index + 1}@example.com",
            first_name=name,
            time_zone=zone,
            status=SubscriberStatus.ACTIVE,
            source="demo",
            form=None if form_slug == DEFAULT_FORM else form_slug,
            created_at=now,
            confirmed_at=now,
        )
        session.add(sub)
        session.flush()
        session.add(
            Consent(
                subscriber_id=sub.id,
                action="signup",
                source="demo",
                text=CONSENT_TEXT,
                created_at=now,
            )
        )
        if form.tags:
            add_tags(rt, session, [sub.id], form.tags, now)
        handle(rt, session, "form", form_slug, [sub.id], now)


def _summary(rt: Runtime, outbox: Path) -> list[DemoRow]:
    import json

    lines = (outbox / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    rows = []
    with rt.sessions() as session:
        subs = session.execute(
            select(Subscriber.email, Subscriber.time_zone, Subscriber.form).order_by(Subscriber.id)
        )
        counts: dict[str | None, int] = dict(
            session.execute(
                select(Subscriber.email, func.count(Delivery.id))
                .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                .where(Delivery.status == "sent")
                .group_by(Subscriber.email)
            )
            .tuples()
            .all()
        )
        for email, zone, form in subs:
            mine = [e for e in entries if e["to"] == email]
            rows.append(
                DemoRow(
                    email=str(email),
                    zone=str(zone),
                    emails=int(counts.get(email, 0)),
                    first_local=mine[0]["sent_at_local"] if mine else "-",
                    last_local=mine[-1]["sent_at_local"] if mine else "-",
                    form=form or DEFAULT_FORM,
                )
            )
    return rows
