"""Results of a broadcast come from the same tracking tables as ``drip stats``: events go in
through the real ingest, conversions and unsubscribes through their real paths."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, select

from drip.broadcasts.queries import broadcast_detail
from drip.clock import FrozenClock
from drip.engine.consent import unsubscribe
from drip.ingest.events import Event, EventType, ingest
from drip.models import Conversion, Delivery, Subscriber
from tests.broadcast_support import add_sub, make_rt, new_broadcast, run_pages, send_all, start_now

BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Safari/605.1.15"
)


def test_results_count_human_engagement_unsubscribes_and_conversions(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    rt, _ = make_rt(engine, tmp_path, clock)
    for i in range(5):
        add_sub(rt, f"r{i}@example.com")
    broadcast_id = new_broadcast(rt)
    _, batches = run_pages(rt, broadcast_id, start_now(rt, broadcast_id))
    send_all(rt, batches)
    with rt.sessions() as session:
        ids = list(
            session.scalars(
                select(Delivery.id)
                .where(Delivery.broadcast_id == broadcast_id)
                .order_by(Delivery.id)
            )
        )
    clock.advance(timedelta(hours=1))
    now = clock()

    def event(n: int, kind: EventType, delivery: int, **kw: object) -> Event:
        """An event from a person's browser unless ``kw`` says otherwise."""
        values: dict[str, object] = {"user_agent": BROWSER, "ip": "203.0.113.5", **kw}
        return Event(kind, now, "sendgrid", f"ev{n}", delivery_id=delivery, **values)  # type: ignore[arg-type]

    events = [
        event(1, EventType.DELIVERED, ids[0]),
        event(2, EventType.DELIVERED, ids[1]),
        event(3, EventType.OPENED, ids[0]),
        event(4, EventType.OPENED, ids[0]),  # the same person again: one open
        event(5, EventType.CLICKED, ids[1]),  # a human click counts as an open too
        event(6, EventType.OPENED, ids[2], provider_machine=True),  # a privacy proxy
        event(7, EventType.BOUNCED, ids[3], suppress="bounce"),
    ]
    with rt.transaction() as session:
        ingest(session, events, now=now, scanner_click_seconds=0)
        sub = session.get(Subscriber, session.get(Delivery, ids[4]).subscriber_id)  # type: ignore[union-attr]
        assert sub is not None
        unsubscribe(session, sub, now, "link")
        session.add(
            Conversion(
                order_id="order-1",
                subscriber_id=sub.id,
                product="The Runners Lab",
                amount_cents=4900,
                currency="USD",
                occurred_at=now,
                attributed_delivery_id=ids[1],
            )
        )

    with rt.sessions() as session:
        info = broadcast_detail(session, broadcast_id).to_json()

    assert info["results"] == {
        "sent": 5,
        "delivered": 2,
        "opens": 2,
        "clicks": 1,
        "unsubscribes": 1,
        "bounces": 1,
        "complaints": 0,
        "conversions": 1,
        "revenue": {"USD": 4900},
        "open_rate": 0.4,
        "click_rate": 0.2,
    }
    assert info["progress"]["by_status"]["sent"] == 5 and info["progress"]["percent"] == 100.0
