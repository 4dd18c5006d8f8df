"""Double opt-in: the confirmation email, GET /confirm/<token>, resends, the purge."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from drip.cli.main import main
from drip.clock import FrozenClock
from drip.esp.memory import MemoryBackend
from drip.models import (
    Consent,
    Delivery,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    SubscriberStatus,
    TrackingEvent,
)
from drip.runtime import UNSUBSCRIBE_PURPOSE, Runtime
from drip.settings import Settings
from drip.subscribers.confirm import CONFIRM_PURPOSE
from drip.subscribers.signup import purge_pending
from drip.suppress import suppress
from drip.tokens import expiring_token, subscriber_token
from tests.helpers import run_tick
from tests.web_support import (
    client_for,
    confirm_links,
    count,
    form_signup,
    last_confirm_path,
    path_of,
    same_page,
    subscriber,
    web_settings,
)

COURSE = "glute-accelerator"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return web_settings(tmp_path)


def test_full_flow_signup_email_confirm_enrollment_and_first_lesson(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    client = client_for(rt)
    assert (
        form_signup(
            client, email="ana@example.com", first_name="Ana", timezone="Europe/Berlin"
        ).status_code
        == 303
    )
    [email] = memory_backend.sent_to("ana@example.com")
    assert email.mime["List-Unsubscribe"].startswith("<https://drip.test/unsubscribe/")
    link = confirm_links(memory_backend, "ana@example.com")[0]
    assert link.startswith(f"{rt.settings.public_url}/confirm/")
    assert link in email.html  # the button carries the same link

    clock.advance(timedelta(minutes=5))
    page = client.get(path_of(link))
    assert page.status_code == 200
    assert "You're in, Ana!" in page.text
    with rt.sessions() as session:
        sub = subscriber(session, "ana@example.com")
        assert sub.status == SubscriberStatus.ACTIVE
        assert sub.confirmed_at == clock()
        confirm = session.scalars(select(Consent).where(Consent.action == "confirm")).one()
        assert confirm.created_at == clock()
        enrollment = session.scalars(select(Enrollment)).one()
        assert (enrollment.sequence, enrollment.status, enrollment.position) == (
            COURSE,
            EnrollmentStatus.ACTIVE,
            0,
        )
        assert enrollment.next_send_at == clock()  # the course's first lesson: "immediately"

    memory_backend.clear()
    _, report = run_tick(rt)
    assert report.sent == 1
    [lesson] = memory_backend.sent_to("ana@example.com")
    with rt.sessions() as session:
        delivery = session.scalars(select(Delivery).where(Delivery.kind == "lesson")).one()
        assert (delivery.message_key, delivery.status) == (f"{COURSE}/1", "sent")
    assert "Ana" in lesson.text


def test_a_reused_link_shows_already_confirmed_and_changes_nothing(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    client = client_for(rt)
    form_signup(client, email="ana@example.com")
    path = last_confirm_path(memory_backend, "ana@example.com")
    client.get(path)
    clock.advance(timedelta(hours=1))
    again = client.get(path)
    assert again.status_code == 200
    assert "already confirmed" in again.text
    with rt.sessions() as session:
        assert count(session, Consent, Consent.action == "confirm") == 1
        assert count(session, Enrollment) == 1
        assert subscriber(session, "ana@example.com").confirmed_at == clock() - timedelta(hours=1)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature changed
        lambda t: "2" + t[1:],  # another subscriber id, old signature
        lambda t: t.split(".")[0],  # signature cut off by a mail program
        lambda t: "x" * 600,
        lambda t: "",
    ],
)
def test_a_tampered_link_gets_a_friendly_400_with_a_resend_form(
    rt: Runtime, memory_backend: MemoryBackend, mangle: object
) -> None:
    client = client_for(rt)
    form_signup(client, email="ana@example.com")
    form_signup(client, email="bob@example.com")
    token = last_confirm_path(memory_backend, "ana@example.com").rsplit("/", 1)[1]
    bad = mangle(token)  # type: ignore[operator]
    page = client.get(f"/confirm/{bad}")
    assert page.status_code in (400, 404)
    if page.status_code == 400:
        assert 'action="/confirm/resend"' in page.text
        assert "Traceback" not in page.text
    with rt.sessions() as session:
        assert count(session, Subscriber, Subscriber.status == SubscriberStatus.ACTIVE) == 0


def test_a_token_made_for_another_purpose_is_refused(rt: Runtime) -> None:
    client = client_for(rt)
    form_signup(client, email="ana@example.com")
    with rt.sessions() as session:
        sid = subscriber(session, "ana@example.com").id
    unsub = subscriber_token(rt.secret, UNSUBSCRIBE_PURPOSE, sid)
    other_secret = expiring_token("x" * 32, CONFIRM_PURPOSE, str(sid), now=rt.clock())
    for token in (unsub, other_secret):
        assert client.get(f"/confirm/{token}").status_code == 400
    with rt.sessions() as session:
        assert subscriber(session, "ana@example.com").status == SubscriberStatus.PENDING


def test_an_expired_link_gets_410_and_a_new_one_can_be_asked_for(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    client = client_for(rt)
    form_signup(client, email="ana@example.com")
    path = last_confirm_path(memory_backend, "ana@example.com")
    clock.advance(timedelta(days=rt.settings.confirm_max_age_days, seconds=1))
    page = client.get(path)
    assert page.status_code == 410
    assert "expired" in page.text and 'action="/confirm/resend"' in page.text
    with rt.sessions() as session:
        assert subscriber(session, "ana@example.com").status == SubscriberStatus.PENDING

    sent = client.post("/confirm/resend", data={"email": "ANA@example.com"})
    assert sent.status_code == 200 and "Check your inbox" in sent.text
    links = confirm_links(memory_backend, "ana@example.com")
    assert len(links) == 2
    assert client.get(path_of(links[-1])).status_code == 200
    with rt.sessions() as session:
        assert subscriber(session, "ana@example.com").status == SubscriberStatus.ACTIVE
        keys = sorted(session.scalars(select(Delivery.message_key)))
    assert keys == ["confirm/1", "confirm/2"]


def test_a_link_just_inside_its_lifetime_still_works(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    client = client_for(rt)
    form_signup(client, email="ana@example.com")
    clock.advance(timedelta(days=rt.settings.confirm_max_age_days) - timedelta(seconds=1))
    assert client.get(last_confirm_path(memory_backend, "ana@example.com")).status_code == 200


def test_resend_answers_the_same_for_any_address_and_sends_only_to_pending_ones(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    client = client_for(rt)
    form_signup(client, email="active@example.com")
    client.get(last_confirm_path(memory_backend, "active@example.com"))
    with rt.transaction() as session:
        suppress(session, "blocked@example.com", "bounce")
    memory_backend.clear()
    clock.advance(timedelta(hours=1))
    answers = [
        client.post("/confirm/resend", data={"email": e})
        for e in ("nobody@example.com", "active@example.com", "blocked@example.com")
    ]
    assert {(a.status_code, same_page(a.text)) for a in answers} == {
        (200, same_page(answers[0].text))
    }
    assert memory_backend.outbox == []
    bad = client.post("/confirm/resend", data={"email": "not an address"})
    assert bad.status_code == 400 and "<strong>Email</strong>" in bad.text
    assert client.post("/confirm/resend", json={"email": "a@example.com"}).status_code == 415


def test_an_unsubscribed_or_erased_subscriber_cannot_be_confirmed_by_an_old_link(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    client = client_for(rt)
    form_signup(client, email="ana@example.com")
    path = last_confirm_path(memory_backend, "ana@example.com")
    with rt.transaction() as session:
        subscriber(session, "ana@example.com").status = SubscriberStatus.UNSUBSCRIBED
    assert client.get(path).status_code == 400
    with rt.transaction() as session:
        session.execute(update(Subscriber).values(status="erased", email=None))
    assert client.get(path).status_code == 400


def test_a_re_signup_after_unsubscribing_resumes_the_course_on_confirmation(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    client = client_for(rt)
    form_signup(client, email="ana@example.com")
    client.get(last_confirm_path(memory_backend, "ana@example.com"))
    run_tick(rt)  # lesson 1 goes out
    with rt.sessions() as session:
        sid = subscriber(session, "ana@example.com").id
    client.post(f"/unsubscribe/{subscriber_token(rt.secret, UNSUBSCRIBE_PURPOSE, sid)}")
    clock.advance(timedelta(days=3))
    form_signup(client, email="ana@example.com")
    with rt.sessions() as session:
        assert subscriber(session, "ana@example.com").status == SubscriberStatus.PENDING
        enrollment = session.scalars(select(Enrollment)).one()
        assert enrollment.status == EnrollmentStatus.STOPPED
    client.get(last_confirm_path(memory_backend, "ana@example.com"))
    with rt.sessions() as session:
        assert subscriber(session, "ana@example.com").status == SubscriberStatus.ACTIVE
        enrollment = session.scalars(select(Enrollment)).one()
        assert enrollment.status == EnrollmentStatus.ACTIVE
        assert enrollment.position == 1
        assert enrollment.next_send_at is not None and enrollment.next_send_at > clock()


def _pending(rt: Runtime, email: str) -> None:
    form_signup(client_for(rt), email=email)


def test_pending_signups_older_than_the_purge_age_are_deleted(
    rt: Runtime, clock: FrozenClock
) -> None:
    _pending(rt, "old@example.com")
    clock.advance(timedelta(days=20))
    _pending(rt, "recent@example.com")
    _pending(rt, "again@example.com")
    clock.advance(timedelta(days=11))
    _pending(rt, "again@example.com")  # signed up again 11 days later: the clock restarts
    with rt.transaction() as session:
        assert purge_pending(session, clock(), 30) == 1
    with rt.sessions() as session:
        emails = set(session.scalars(select(Subscriber.email)))
        assert emails == {"recent@example.com", "again@example.com"}
        assert count(session, Consent) == 3  # the purged signup's consent went with it
        assert count(session, Delivery) == 3


def test_a_purged_signup_leaves_its_tracking_events_without_ids(
    rt: Runtime, clock: FrozenClock
) -> None:
    """tracking_events has no foreign keys (migration 0007): the purge clears the ids itself."""
    _pending(rt, "old@example.com")
    clock.advance(timedelta(days=20))
    _pending(rt, "recent@example.com")
    with rt.transaction() as session:
        for delivery in session.scalars(select(Delivery)):
            for kind in ("delivered", "opened"):
                session.add(
                    TrackingEvent(
                        type=kind,
                        occurred_at=clock(),
                        delivery_id=delivery.id,
                        subscriber_id=delivery.subscriber_id,
                        provider_event_id=f"{kind}-{delivery.id}",
                    )
                )
        old = subscriber(session, "old@example.com").id
        # A bounce matched by address only: a subscriber id and no delivery.
        session.add(
            TrackingEvent(
                type="bounced", occurred_at=clock(), subscriber_id=old, provider_event_id="b"
            )
        )
    clock.advance(timedelta(days=11))
    with rt.transaction() as session:
        assert purge_pending(session, clock(), 30) == 1
    with rt.sessions() as session:
        events = session.execute(
            select(TrackingEvent.provider_event_id, TrackingEvent.delivery_id)
            .add_columns(TrackingEvent.subscriber_id)
            .order_by(TrackingEvent.provider_event_id)
        ).all()
        recent = subscriber(session, "recent@example.com")
        kept = session.scalar(select(Delivery.id).where(Delivery.subscriber_id == recent.id))
    assert len(events) == 5  # nothing deleted: the counts stay
    by_id = {e.provider_event_id: (e.delivery_id, e.subscriber_id) for e in events}
    assert by_id["b"] == (None, None)
    assert by_id[f"opened-{kept}"] == (kept, recent.id)  # someone else's: untouched
    orphans = [k for k, ids in by_id.items() if ids == (None, None)]
    assert len(orphans) == 3  # the purged signup's two events and its bounce


def test_a_confirmed_subscriber_who_re_signs_and_never_confirms_keeps_their_history(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    client = client_for(rt)
    form_signup(client, email="ana@example.com")
    client.get(last_confirm_path(memory_backend, "ana@example.com"))
    with rt.transaction() as session:
        subscriber(session, "ana@example.com").status = SubscriberStatus.UNSUBSCRIBED
    form_signup(client, email="ana@example.com")  # pending again
    clock.advance(timedelta(days=31))
    with rt.transaction() as session:
        assert purge_pending(session, clock(), 30) == 0
    with rt.sessions() as session:
        assert subscriber(session, "ana@example.com").status == SubscriberStatus.UNSUBSCRIBED


def test_the_purge_command_uses_the_configured_age(
    rt: Runtime, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pending(rt, "old@example.com")
    clock.advance(timedelta(days=31))
    monkeypatch.setattr("drip.cli.subscribers._runtime", lambda: rt)
    result = CliRunner().invoke(main, ["subscribers", "purge-pending"])
    assert result.exit_code == 0, result.output
    assert "1 unconfirmed signups deleted" in result.output
    with rt.sessions() as session:
        assert count(session, Subscriber) == 0
