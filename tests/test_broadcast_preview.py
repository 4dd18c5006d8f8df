"""Preview and test sends: HTML and text as a subscriber gets them; tests leave stats alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from drip.broadcasts.preview import preview, record_test, send_test
from drip.broadcasts.results import results
from drip.broadcasts.status import get_broadcast
from drip.clock import FrozenClock
from drip.errors import InvalidInput, TransientBackendError
from drip.esp.memory import MemoryBackend
from drip.models import Delivery, EngineState, MessageStats, TrackingEvent
from drip.runtime import Runtime
from tests.broadcast_support import add_sub, make_rt, new_broadcast


@pytest.fixture
def pair(engine: Engine, tmp_path: Path, clock: FrozenClock) -> tuple[Runtime, MemoryBackend]:
    return make_rt(engine, tmp_path, clock)


def test_preview_as_a_chosen_subscriber(pair: tuple[Runtime, MemoryBackend]) -> None:
    rt, _ = pair
    add_sub(rt, "first@example.com", name="Zoe")
    chosen = add_sub(rt, "ben@example.com", name="<Ben>")
    broadcast_id = new_broadcast(rt)

    with rt.sessions() as session:
        shown = preview(rt, session, get_broadcast(session, broadcast_id), chosen)

    assert (shown.to, shown.subject) == ("ben@example.com", "Hill week, <Ben>")
    assert "Hi &lt;Ben&gt;," in shown.html and "Hi <Ben>," in shown.text
    assert rt.unsubscribe_url(chosen) in shown.html and rt.unsubscribe_url(chosen) in shown.text
    assert "<strong>three</strong>" in shown.html and "https://lab.test/join" in shown.html
    assert "%%" not in shown.html + shown.text  # every placeholder filled, no tracking ones


def test_preview_without_a_choice_uses_the_segments_first_subscriber(
    pair: tuple[Runtime, MemoryBackend],
) -> None:
    rt, _ = pair
    add_sub(rt, "not-5k@example.com", name="Ann")
    add_sub(rt, "5k@example.com", name="Kim", tags=["5k"])
    with_tag = new_broadcast(rt, segment={"tags_any": ["5k"]})

    with rt.sessions() as session:
        shown = preview(rt, session, get_broadcast(session, with_tag))
        with pytest.raises(InvalidInput, match="no subscriber 999"):
            preview(rt, session, get_broadcast(session, with_tag), 999)

    assert (shown.to, shown.subject) == ("5k@example.com", "Hill week, Kim")


def _stats_snapshot(rt: Runtime) -> tuple[int, int, int, int]:
    with rt.sessions() as session:
        return (
            session.scalar(select(func.count()).select_from(Delivery)) or 0,
            session.scalar(select(func.count()).select_from(TrackingEvent)) or 0,
            session.scalar(select(func.count()).select_from(MessageStats)) or 0,
            session.scalar(select(func.count()).select_from(EngineState)) or 0,
        )


def test_a_test_send_reaches_the_backend_marked_test_and_touches_no_stats(
    pair: tuple[Runtime, MemoryBackend],
) -> None:
    rt, backend = pair
    add_sub(rt, "marketer@example.com", name="Mia")
    broadcast_id = new_broadcast(rt)
    before = _stats_snapshot(rt)

    with rt.transaction() as session:
        b = get_broadcast(session, broadcast_id)
        sent = send_test(rt, session, b, ["Marketer@Example.com", "coach@example.org"])
        record_test(session, b, sent, actor="ana", now=rt.clock())

    assert [r.ok for r in sent] == [True, True]
    assert [(s.to, s.subject) for s in backend.outbox] == [
        ("marketer@example.com", "[TEST] Hill week, Mia"),
        ("coach@example.org", "[TEST] Hill week, Sam"),
    ]
    assert backend.outbox[0].message.category == "broadcast-test"
    assert "/t/" not in backend.outbox[0].html  # no open pixel, no tracked links
    assert _stats_snapshot(rt) == before  # no delivery, event, counter or failure streak
    with rt.sessions() as session:
        figures = results(session, broadcast_id)
        assert get_broadcast(session, broadcast_id).status == "draft"
    assert figures.sent == 0 and figures.opens == 0


def test_a_failed_test_send_raises_and_still_touches_nothing(
    pair: tuple[Runtime, MemoryBackend],
) -> None:
    rt, backend = pair
    broadcast_id = new_broadcast(rt)
    backend.raise_next(TransientBackendError("503 from the provider"))
    before = _stats_snapshot(rt)

    with pytest.raises(TransientBackendError), rt.transaction() as session:
        send_test(rt, session, get_broadcast(session, broadcast_id), ["a@example.com"])

    assert _stats_snapshot(rt) == before


@pytest.mark.parametrize(
    ("addresses", "words"),
    [
        ([], "at least one"),
        (["not-an-address"], "'not-an-address' is not a valid email address"),
        ([f"t{i}@example.com" for i in range(11)], "at most 10"),
    ],
)
def test_test_addresses_are_checked(
    pair: tuple[Runtime, MemoryBackend], addresses: list[str], words: str
) -> None:
    rt, backend = pair
    broadcast_id = new_broadcast(rt)

    with pytest.raises(InvalidInput) as err, rt.sessions() as session:
        send_test(rt, session, get_broadcast(session, broadcast_id), addresses)

    assert err.value.field == "to" and words in err.value.message
    assert backend.outbox == []
