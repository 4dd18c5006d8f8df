"""Signing up through a form: ``form=<slug>`` on POST /subscribe and the JSON webhook, its tags,
its confirmation email, its redirect, and the sequence its confirmation starts.

Each test runs on SQLite and PostgreSQL (the ``rt`` fixture) with the shipped forms plus a
``waitlist`` form that names a sequence, has tags, a redirect and its own confirmation wording.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from drip.clock import FrozenClock
from drip.esp.memory import MemoryBackend
from drip.models import (
    Consent,
    Delivery,
    Enrollment,
    OutgoingWebhook,
    Subscriber,
    SubscriberStatus,
)
from drip.outgoing_endpoints import TAG_ADDED, Endpoint
from drip.runtime import Runtime
from drip.settings import Settings
from drip.subscribers.confirm import ConfirmationSource
from tests.conftest import REPO
from tests.helpers import add_subscriber
from tests.test_api_webhook import post_bearer
from tests.web_support import (
    client_for,
    count,
    form_signup,
    last_confirm_path,
    subscriber,
    web_settings,
)

WAITLIST = '''name = "Runners Lab waitlist"
tags = ["waitlist", "vip"]
sequence = "runners-lab-upsell"
redirect = "https://coach.example/waitlist-thanks"
confirm_subject = "Confirm to join the waitlist, {{ first_name }}"
confirm_preheader = "One click and you are on The Runners Lab waitlist."
confirm_intro = """
Hi {{ first_name }},

One click and you are on the **Runners Lab waitlist**.
"""
confirm_button = "Put me on the list"
'''
# A form that changes only the subject: the rest of the email is today's.
QUIZ = 'name = "Quiz"\nconfirm_subject = "Your quiz results are one click away"\n'
UPSELL = "runners-lab-upsell"
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
COURSE = "glute-accelerator"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    forms = tmp_path / "forms"
    shutil.copytree(REPO / "content" / "forms", forms)
    (forms / "waitlist.toml").write_text(WAITLIST, encoding="utf-8")
    (forms / "quiz.toml").write_text(QUIZ, encoding="utf-8")
    return web_settings(tmp_path, forms_dir=forms)


def _enrollments(rt: Runtime, email: str) -> dict[str, str | None]:
    with rt.sessions() as session:
        sub = subscriber(session, email)
        rows = session.scalars(select(Enrollment).where(Enrollment.subscriber_id == sub.id))
        return {row.sequence: row.trigger for row in rows}


def _nothing_stored(rt: Runtime) -> None:
    with rt.sessions() as session:
        assert count(session, Subscriber) == 0
        assert count(session, Consent) == 0
        assert count(session, Delivery) == 0


def test_an_unknown_form_gets_a_422_page_naming_it_and_nothing_is_stored(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    answer = form_signup(client_for(rt), email="ana@example.com", form="wait-list")
    assert answer.status_code == 422
    assert "<strong>Form</strong> &#39;wait-list&#39; is not a signup form" in answer.text
    assert 'role="alert"' in answer.text
    assert 'name="form" value="wait-list"' in answer.text  # never swapped for the default
    _nothing_stored(rt)
    assert memory_backend.outbox == []


def test_an_unknown_form_gets_a_422_naming_the_field_from_the_json_webhook(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    answer = post_bearer(client_for(rt), {"email": "ana@example.com", "form": "wait-list"})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["field"] == "form"
    assert "'wait-list'" in error["message"]
    too_long = post_bearer(client_for(rt), {"email": "ana@example.com", "form": "x" * 65})
    assert (too_long.status_code, too_long.json()["error"]["field"]) == (422, "form")
    _nothing_stored(rt)
    assert memory_backend.outbox == []


def test_no_form_is_the_default_form_with_todays_confirmation_and_thank_you_page(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    answer = form_signup(client_for(rt), email="ana@example.com", form="")
    assert (answer.status_code, answer.headers["location"]) == (303, "http://testserver/thanks")
    api = post_bearer(client_for(rt), {"email": "bob@example.com"})
    assert api.status_code == 202
    with rt.sessions() as session:
        assert subscriber(session, "ana@example.com").form == "default"
        assert subscriber(session, "bob@example.com").form == "default"
        keys = set(session.scalars(select(Delivery.message_key)))
    assert keys == {"confirm/1"}
    message = rt.renderer.confirmation()
    for email in ("ana@example.com", "bob@example.com"):
        [sent] = memory_backend.sent_to(email)
        assert sent.message is message  # today's email, rendered once as before forms
        assert sent.subject == "Please confirm your subscription"


def test_a_form_post_gets_the_forms_tags_wording_and_redirect(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    answer = form_signup(
        client_for(rt), email="ana@example.com", first_name="Ana", tags="Hip", form="waitlist"
    )
    assert (answer.status_code, answer.headers["location"]) == (
        303,
        "https://coach.example/waitlist-thanks",
    )
    with rt.sessions() as session:
        sub = subscriber(session, "ana@example.com")
        assert (sub.form, sub.status) == ("waitlist", SubscriberStatus.PENDING)
        assert sorted(t.name for t in sub.tags) == ["hip", "vip", "waitlist"]
        delivery = session.scalars(select(Delivery)).one()
        assert delivery.message_key == "confirm/waitlist/1"
    [sent] = memory_backend.sent_to("ana@example.com")
    assert sent.subject == "Confirm to join the waitlist, Ana"
    assert ">Put me on the list</a>" in sent.html
    assert "One click and you are on The Runners Lab waitlist." in sent.html  # the preheader
    assert "<strong>Runners Lab waitlist</strong>" in sent.html
    assert "One click and you are on the Runners Lab waitlist." in sent.text
    assert "Yes, send me the course" not in sent.html
    assert "/confirm/" in sent.text  # the link is there, per recipient
    assert "(The link works for 7 days.)" in sent.text


def test_what_a_form_leaves_out_of_its_wording_is_todays(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    client = client_for(rt)
    form_signup(client, email="ana@example.com", first_name="Ana", form="quiz")
    form_signup(client, email="bob@example.com", first_name="Ana")
    [quiz] = memory_backend.sent_to("ana@example.com")
    [today] = memory_backend.sent_to("bob@example.com")
    assert quiz.subject == "Your quiz results are one click away"
    assert quiz.message is not today.message
    # Everything but the subject (and each recipient's own links) reads as before forms.
    link = re.compile(r"/(confirm|unsubscribe)/[A-Za-z0-9._-]+")
    assert link.sub("", quiz.text) == link.sub("", today.text)
    assert ">Yes, send me the course</a>" in quiz.html
    assert "One click and your first lesson of the crash course is on its way." in quiz.html


def test_the_shipped_lead_magnet_form_tags_and_its_tag_starts_the_checklist(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    client = client_for(rt)
    form_signup(client, email="ana@example.com", first_name="Ana", form="mid-stance")
    [sent] = memory_backend.sent_to("ana@example.com")
    assert sent.subject == "Confirm your address to get the checklist"
    assert ">Yes, send me the checklist</a>" in sent.html
    assert client.get(last_confirm_path(memory_backend, "ana@example.com")).status_code == 200
    assert _enrollments(rt, "ana@example.com") == {"mid-stance-checklist": "tag_added:mid-stance"}


def test_the_json_webhook_takes_the_form_too(rt: Runtime, memory_backend: MemoryBackend) -> None:
    answer = post_bearer(
        client_for(rt), {"email": "ana@example.com", "tags": ["zapier"], "form": "waitlist"}
    )
    assert answer.status_code == 202
    with rt.sessions() as session:
        sub = subscriber(session, "ana@example.com")
        assert sub.form == "waitlist"
        assert sorted(t.name for t in sub.tags) == ["vip", "waitlist", "zapier"]
    [sent] = memory_backend.sent_to("ana@example.com")
    assert sent.subject.startswith("Confirm to join the waitlist")


def test_confirming_starts_the_forms_sequence_and_not_the_default_forms(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    client = client_for(rt)
    form_signup(client, email="ana@example.com", form="waitlist")
    form_signup(client, email="bob@example.com")
    assert _enrollments(rt, "ana@example.com") == {}  # pending: nothing starts yet
    clock.advance(timedelta(minutes=5))
    for email in ("ana@example.com", "bob@example.com"):
        assert client.get(last_confirm_path(memory_backend, email)).status_code == 200
    assert _enrollments(rt, "ana@example.com") == {UPSELL: "form:waitlist"}
    assert _enrollments(rt, "bob@example.com") == {COURSE: "form:default"}


def test_an_active_subscriber_signing_up_through_a_form_starts_its_sequence_at_once(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    add_subscriber(rt, "ana@example.com", enroll_now=False, tags=["vip"])
    answer = form_signup(client_for(rt), email="ana@example.com", form="waitlist")
    assert answer.status_code == 303
    assert _enrollments(rt, "ana@example.com") == {UPSELL: "form:waitlist"}
    assert memory_backend.outbox == []  # confirmed long ago: no email
    with rt.sessions() as session:
        sub = subscriber(session, "ana@example.com")
        assert sub.form is None  # they keep the form they came through
        assert sorted(t.name for t in sub.tags) == ["vip", "waitlist"]


def test_an_active_subscribers_new_tags_are_tag_events(rt: Runtime) -> None:
    # The upsell also starts on the tag "vip": the shipped default form adds none, the post does.
    add_subscriber(rt, "ana@example.com", enroll_now=False)
    add_subscriber(rt, "bob@example.com", enroll_now=False, tags=["vip"])
    starts = dict(rt.automations.starts)
    starts[("tag_added", "vip")] = (rt.library[UPSELL],)
    rt.automations = type(rt.automations)(starts, rt.automations.ends)
    client = client_for(rt)
    form_signup(client, email="ana@example.com", tags="vip")
    form_signup(client, email="bob@example.com", tags="vip")  # had it: no event
    assert _enrollments(rt, "ana@example.com") == {
        COURSE: "form:default",  # the default form's event: they never took the course
        UPSELL: "tag_added:vip",
    }
    assert _enrollments(rt, "bob@example.com") == {COURSE: "form:default"}


def test_an_active_subscribers_new_tags_go_to_the_outgoing_webhooks(
    rt: Runtime, settings: Settings
) -> None:
    wants = Endpoint("https://hooks.example/drip", frozenset({TAG_ADDED}), SECRET)
    hooked = Runtime.build(
        settings.model_copy(update={"outgoing_webhooks": (wants,)}),
        engine=rt.engine,
        backend=rt.backend,
        clock=rt.clock,
    )
    add_subscriber(rt, "ana@example.com", tags=["vip"])
    form_signup(client_for(hooked), email="ana@example.com", form="waitlist")
    with rt.sessions() as session:
        hooks = session.scalars(select(OutgoingWebhook)).all()
    assert [(h.event_type, json.loads(h.body)["data"]["tag"]) for h in hooks] == [
        (TAG_ADDED, "waitlist")  # "vip" they had: no event
    ]


def test_a_pending_signup_through_another_form_switches_to_it(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    client = client_for(rt)
    form_signup(client, email="ana@example.com")
    clock.advance(timedelta(minutes=11))  # past DRIP_CONFIRM_RESEND_MINUTES
    form_signup(client, email="ana@example.com", form="waitlist")
    first, second = memory_backend.sent_to("ana@example.com")
    assert first.subject == "Please confirm your subscription"
    assert second.subject.startswith("Confirm to join the waitlist")
    assert client.get(last_confirm_path(memory_backend, "ana@example.com")).status_code == 200
    assert _enrollments(rt, "ana@example.com") == {UPSELL: "form:waitlist"}


def test_a_resent_link_keeps_the_forms_wording(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    client = client_for(rt)
    form_signup(client, email="ana@example.com", form="waitlist")
    clock.advance(timedelta(minutes=11))
    assert client.post("/confirm/resend", data={"email": "ana@example.com"}).status_code == 200
    with rt.sessions() as session:
        keys = sorted(session.scalars(select(Delivery.message_key)))
    assert keys == ["confirm/waitlist/1", "confirm/waitlist/2"]
    assert all(s.subject.startswith("Confirm to join") for s in memory_backend.outbox)
    assert len(memory_backend.outbox) == 2


def test_the_honeypot_answers_with_the_forms_redirect_and_stores_nothing(rt: Runtime) -> None:
    answer = form_signup(client_for(rt), email="bot@example.com", website="spam", form="waitlist")
    assert (answer.status_code, answer.headers["location"]) == (
        303,
        "https://coach.example/waitlist-thanks",
    )
    _nothing_stored(rt)


def test_a_form_gone_since_the_signup_falls_back_to_the_default_wording(rt: Runtime) -> None:
    source = ConfirmationSource()
    waitlist = source.message(rt, "confirm/waitlist/1")
    assert waitlist.subject.startswith("Confirm to join")
    assert source.message(rt, "confirm/waitlist/2") is waitlist  # rendered once per form
    del rt.forms["waitlist"]
    assert source.message(rt, "confirm/waitlist/3") is rt.renderer.confirmation()
    assert source.message(rt, "confirm/4") is rt.renderer.confirmation()


def test_a_form_without_a_redirect_lands_on_our_thank_you_page_naming_what_is_on_its_way(
    rt: Runtime,
) -> None:
    http = client_for(rt)
    answer = form_signup(http, email="ana@example.com", form="quiz")
    assert (answer.status_code, answer.headers["location"]) == (
        303,
        "http://testserver/thanks?form=quiz",
    )
    page = http.get(answer.headers["location"]).text
    assert "Click it and Quiz is on its way." in page
    default = http.get("/thanks").text
    assert "your first lesson of the" in default
    assert "your first lesson of the" in http.get("/thanks?form=nowhere").text  # unknown: default
