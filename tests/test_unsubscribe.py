"""Unsubscribe links: RFC 8058 one-click POST, the preferences page, resubscribe."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from drip.clock import FrozenClock
from drip.esp.memory import MemoryBackend
from drip.models import (
    Consent,
    Delivery,
    Enrollment,
    EnrollmentStatus,
    SubscriberStatus,
)
from drip.runtime import UNSUBSCRIBE_PURPOSE, Runtime
from drip.settings import Settings
from drip.suppress import suppress
from drip.tokens import subscriber_token
from tests.helpers import add_subscriber, run_tick
from tests.web_support import (
    BROWSER_UA,
    UNSUBSCRIBE_LINK,
    client_for,
    confirm_links,
    count,
    form_signup,
    last_confirm_path,
    path_of,
    subscriber,
    web_settings,
)

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return web_settings(tmp_path)


def _active(rt: Runtime, email: str = "ana@example.com") -> tuple[int, str]:
    sid = add_subscriber(rt, email)
    return sid, f"/unsubscribe/{subscriber_token(rt.secret, UNSUBSCRIBE_PURPOSE, sid)}"


def _status(rt: Runtime, email: str = "ana@example.com") -> str:
    with rt.sessions() as session:
        return str(subscriber(session, email).status)


def test_one_click_post_unsubscribes_at_once_with_200_and_no_redirect_or_cookie(
    rt: Runtime,
) -> None:
    _, path = _active(rt)
    client = TestClient(client_for(rt).app, follow_redirects=False)  # no cookies, no UA
    answer = client.post(path, data=ONE_CLICK)
    assert answer.status_code == 200
    assert "location" not in answer.headers
    assert "set-cookie" not in answer.headers
    assert _status(rt) == SubscriberStatus.UNSUBSCRIBED
    with rt.sessions() as session:
        enrollment = session.scalars(select(Enrollment)).one()
        assert (enrollment.status, enrollment.stop_reason, enrollment.next_send_at) == (
            EnrollmentStatus.STOPPED,
            "unsubscribed",
            None,
        )
        sub = subscriber(session, "ana@example.com")
        assert sub.unsubscribed_at == rt.clock()
        assert session.scalars(select(Consent.action)).all() == ["unsubscribe"]
    again = client.post(path, data=ONE_CLICK)  # a second click changes nothing
    assert again.status_code == 200


@pytest.mark.parametrize("how", ["link", "preferences"])
def test_an_unsubscribe_keeps_the_requests_address_and_browser_in_the_consent_log(
    rt: Runtime, how: str
) -> None:
    _, path = _active(rt)
    client = client_for(rt)  # a browser's user agent; TestClient's address
    if how == "link":
        client.post(path, data=ONE_CLICK)
    else:
        # Neither box ticked (a browser still posts the form's button): out of everything.
        client.post(f"{path}/preferences", data={"save": "1"})
    assert _status(rt) == SubscriberStatus.UNSUBSCRIBED
    with rt.sessions() as session:
        consent = session.scalars(select(Consent).where(Consent.action == "unsubscribe")).one()
    assert consent.user_agent == BROWSER_UA
    assert consent.ip is not None


def test_the_list_unsubscribe_url_of_a_real_lesson_email_works(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    _active(rt)
    run_tick(rt)
    [lesson] = memory_backend.sent_to("ana@example.com")
    header = lesson.mime["List-Unsubscribe"].strip("<>")
    assert lesson.mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert header.startswith("https://")
    assert UNSUBSCRIBE_LINK.search(lesson.text)  # the visible link too
    answer = client_for(rt).post(
        path_of(header),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200
    assert _status(rt) == SubscriberStatus.UNSUBSCRIBED


def test_get_shows_the_choices_and_never_unsubscribes(rt: Runtime) -> None:
    _, path = _active(rt)
    client = client_for(rt)
    for _ in range(3):  # link scanners fetch a URL more than once
        page = client.get(path)
        assert page.status_code == 200
    assert "Unsubscribe from everything" in page.text
    assert 'name="course_emails"' in page.text and 'name="newsletter"' in page.text
    assert "a•••@example.com" in page.text and "ana@example.com" not in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert _status(rt) == SubscriberStatus.ACTIVE
    client.head(path)
    assert _status(rt) == SubscriberStatus.ACTIVE


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("xx" if not t.endswith("xx") else "yy"),
        lambda t: "2" + t[1:],
        lambda t: t.split(".")[0],
        lambda t: "x" * 2000,
    ],
)
def test_a_changed_token_is_rejected_with_a_friendly_page(rt: Runtime, mangle: object) -> None:
    _active(rt)
    add_subscriber(rt, "bob@example.com")
    _, path = _active(rt, "carl@example.com")
    token = path.rsplit("/", 1)[1]
    bad = f"/unsubscribe/{mangle(token)}"  # type: ignore[operator]
    client = client_for(rt)
    for answer in (
        client.get(bad),
        client.post(bad, data=ONE_CLICK),
        client.post(bad + "/preferences", data={"newsletter": "on"}),
        client.post(bad + "/resubscribe"),
    ):
        assert answer.status_code in (400, 404)
        assert "Traceback" not in answer.text
    for email in ("ana@example.com", "bob@example.com", "carl@example.com"):
        assert _status(rt, email) == SubscriberStatus.ACTIVE


def test_an_unsubscribe_takes_effect_before_the_next_send(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    _, path = _active(rt)
    batches: list[list[int]] = []
    from drip.engine.claim import tick
    from drip.engine.dispatch import send_deliveries

    tick(rt, clock(), enqueue=batches.append)  # lesson 1 is queued...
    client_for(rt).post(path, data=ONE_CLICK)  # ...and the subscriber leaves before it goes
    for batch in batches:
        send_deliveries(rt, batch, clock())
    assert memory_backend.outbox == []
    with rt.sessions() as session:
        assert session.scalars(select(Delivery.status)).one() == "skipped"


def test_turning_course_emails_off_stops_the_course_and_on_resumes_it(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    _, path = _active(rt)
    run_tick(rt)
    client = client_for(rt)
    saved = client.post(f"{path}/preferences", data={"newsletter": "on"})
    assert saved.status_code == 200 and "Course emails: <strong>off</strong>" in saved.text
    with rt.sessions() as session:
        sub = subscriber(session, "ana@example.com")
        assert (sub.status, sub.course_emails, sub.newsletter) == ("active", False, True)
        enrollment = session.scalars(select(Enrollment)).one()
        assert (enrollment.status, enrollment.stop_reason) == ("stopped", "preferences")
    clock.advance(timedelta(days=2))
    memory_backend.clear()
    run_tick(rt)
    assert memory_backend.outbox == []

    client.post(f"{path}/preferences", data={"course_emails": "on", "newsletter": "on"})
    with rt.sessions() as session:
        enrollment = session.scalars(select(Enrollment)).one()
        assert enrollment.status == "active"
        assert enrollment.next_send_at is not None and enrollment.next_send_at > clock()
    clock.advance(timedelta(days=1))
    run_tick(rt)
    [lesson] = memory_backend.sent_to("ana@example.com")
    assert lesson.message.message_key == "glute-accelerator/2"


def test_unticking_both_choices_unsubscribes_from_everything(rt: Runtime) -> None:
    _, path = _active(rt)
    answer = client_for(rt).post(f"{path}/preferences", data={"List-Unsubscribe": "x"})
    assert answer.status_code == 200 and "You're unsubscribed" in answer.text
    assert _status(rt) == SubscriberStatus.UNSUBSCRIBED


def test_preferences_need_a_form_post(rt: Runtime) -> None:
    _, path = _active(rt)
    answer = client_for(rt).post(f"{path}/preferences", json={"newsletter": True})
    assert answer.status_code == 415


def test_resubscribe_brings_a_confirmed_subscriber_back_and_resumes_the_course(
    rt: Runtime, clock: FrozenClock
) -> None:
    _, path = _active(rt)
    run_tick(rt)
    client = client_for(rt)
    client.post(path, data=ONE_CLICK)
    page = client.get(path)
    assert 'action="' + path + '/resubscribe"' in page.text
    answer = client.post(f"{path}/resubscribe")
    assert answer.status_code == 200 and "Welcome back" in answer.text
    with rt.sessions() as session:
        sub = subscriber(session, "ana@example.com")
        assert (sub.status, sub.unsubscribed_at) == ("active", None)
        enrollment = session.scalars(select(Enrollment)).one()
        assert (enrollment.status, enrollment.position) == ("active", 1)
        actions = session.scalars(select(Consent.action).order_by(Consent.id)).all()
        assert actions == ["unsubscribe", "resubscribe"]


def test_a_lesson_skipped_while_unsubscribed_comes_first_after_resubscribing(
    rt: Runtime,
) -> None:
    from drip.engine.claim import tick
    from drip.engine.dispatch import send_deliveries

    _, path = _active(rt)
    client = client_for(rt)
    batches: list[list[int]] = []
    tick(rt, rt.clock(), enqueue=batches.append)  # lesson 1 queued ...
    client.post(path, data=ONE_CLICK)  # ... and the unsubscribe lands before a worker sends it
    assert sum(send_deliveries(rt, b, rt.clock()).skipped for b in batches) == 1
    assert client.post(f"{path}/resubscribe").status_code == 200

    def lessons() -> list[tuple[str, str]]:
        with rt.sessions() as session:
            rows = session.execute(
                select(Delivery.message_key, Delivery.status).order_by(Delivery.id)
            )
            return [(key, status) for key, status in rows]

    def due() -> datetime:
        with rt.sessions() as session:
            moment = session.scalars(select(Enrollment.next_send_at)).one()
        assert moment is not None
        return moment

    first, second = "glute-accelerator/1", "glute-accelerator/2"
    assert lessons() == [(first, "skipped")]
    resumed_at = due()
    assert resumed_at > rt.clock()  # at the next send hour, not at once
    _, report = run_tick(rt, resumed_at)
    assert report.sent == 1
    assert lessons() == [(first, "sent")]  # the same row, queued again and sent
    moment = due()
    _, report = run_tick(rt, moment)
    assert report.sent == 1
    assert lessons() == [(first, "sent"), (second, "sent")]
    _, report = run_tick(rt, moment)  # a second tick at the same moment sends nothing
    assert report.sent == 0 and len(lessons()) == 2


def test_someone_who_never_confirmed_must_confirm_to_resubscribe(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    client = client_for(rt)
    form_signup(client, email="ana@example.com")
    [email] = memory_backend.sent_to("ana@example.com")
    path = path_of(UNSUBSCRIBE_LINK.search(email.text).group(0))  # type: ignore[union-attr]
    client.post(path, data=ONE_CLICK)  # from the confirmation email itself
    assert _status(rt) == SubscriberStatus.UNSUBSCRIBED
    answer = client.post(f"{path}/resubscribe")
    assert "One more step" in answer.text
    assert _status(rt) == SubscriberStatus.PENDING
    assert len(confirm_links(memory_backend, "ana@example.com")) == 1  # within 10 minutes
    assert client.get(last_confirm_path(memory_backend, "ana@example.com")).status_code == 200
    assert _status(rt) == SubscriberStatus.ACTIVE


def test_a_suppressed_address_cannot_resubscribe(rt: Runtime) -> None:
    _, path = _active(rt)
    client = client_for(rt)
    client.post(path, data=ONE_CLICK)
    with rt.transaction() as session:
        suppress(session, "ana@example.com", "complaint")
    answer = client.post(f"{path}/resubscribe")
    assert answer.status_code == 200
    assert _status(rt) == SubscriberStatus.UNSUBSCRIBED
    with rt.sessions() as session:
        assert count(session, Consent, Consent.action == "resubscribe") == 0


def test_unsubscribing_many_at_once_credits_each_subscribers_last_email(rt: Runtime) -> None:
    from drip.engagement import credit_unsubscribes
    from drip.engine.consent import unsubscribe_many
    from drip.models import MessageStats, Subscriber, TrackingEvent

    mailed = [add_subscriber(rt, f"r{i}@example.com") for i in range(3)]
    run_tick(rt)  # lesson 1 to each
    never_mailed = add_subscriber(rt, "late@example.com")
    now = rt.clock() + timedelta(hours=1)
    with rt.transaction() as session:
        session.get_one(Subscriber, mailed[2]).status = SubscriberStatus.UNSUBSCRIBED
    with rt.transaction() as session:
        changed = unsubscribe_many(session, [never_mailed, *mailed], now, "provider-event")
        assert changed == [mailed[0], mailed[1], never_mailed]
    with rt.sessions() as session:
        credited = session.execute(
            select(TrackingEvent.subscriber_id, TrackingEvent.delivery_id).where(
                TrackingEvent.type == "unsubscribed"
            )
        ).all()
        sent = dict(session.execute(select(Delivery.subscriber_id, Delivery.id)).all())
        assert sorted(credited) == [(mailed[0], sent[mailed[0]]), (mailed[1], sent[mailed[1]])]
        assert session.scalars(select(MessageStats.unsubscribed)).all() == [2]
        assert count(session, Consent, Consent.action == "unsubscribe") == 3
        stopped = session.scalars(
            select(Enrollment.subscriber_id).where(Enrollment.status == EnrollmentStatus.STOPPED)
        ).all()
        assert sorted(stopped) == [mailed[0], mailed[1], never_mailed]
    with rt.transaction() as session:  # crediting again for the same moment changes nothing
        assert credit_unsubscribes(session, mailed[:2], now) == {
            mailed[0]: sent[mailed[0]],
            mailed[1]: sent[mailed[1]],
        }
    with rt.sessions() as session:
        assert session.scalars(select(MessageStats.unsubscribed)).all() == [2]
