"""Validation and normalization of signups, and the signup rules themselves (both databases)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from drip.errors import InvalidInput
from drip.models import Consent, Delivery, Subscriber, SubscriberStatus, Tag
from drip.runtime import Runtime
from drip.settings import Settings
from drip.subscribers.signup import signup
from drip.subscribers.validation import (
    clean_name,
    clean_signup,
    clean_source,
    clean_tags,
    clean_zone,
    normalize_address,
)
from drip.suppress import suppress
from tests.web_support import count, subscriber, web_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return web_settings(tmp_path)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ana@example.com", "ana@example.com"),
        ("  Ana.Runner@Example.COM\t", "ana.runner@example.com"),
        ("ana+glutes@example.co.uk", "ana+glutes@example.co.uk"),
        ("jose@EXÄMPLE.de", "jose@xn--exmple-cua.de"),  # IDN domain stored in ASCII form
        ("jose@xn--exmple-cua.de", "jose@xn--exmple-cua.de"),  # ... so both spellings match
        ("jose@exa\u0308mple.de", "jose@xn--exmple-cua.de"),  # decomposed umlaut: NFC first
    ],
)
def test_addresses_are_normalized(raw: str, expected: str) -> None:
    assert normalize_address(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "plainaddress",
        "@example.com",
        "ana@",
        "ana@@example.com",
        "ana@example",  # no dot in the domain
        "ana example@example.com",
        "ana@exa mple.com",
        "ana@example.com\r\nBcc: victim@example.org",  # header injection
        "ana@example.com\nx",
        "ana\x00@example.com",
        "josé@example.com",  # non-ASCII local part: most providers can't deliver it
        "a" * 65 + "@example.com",  # local part over 64
        "ana@" + "a" * 250 + ".com",  # over 254 in all
        "x" * 5000,
        "<script>@example.com",
        "ana@-example-.com",
    ],
)
def test_malformed_addresses_are_refused_naming_the_email_field(raw: str) -> None:
    with pytest.raises(InvalidInput) as err:
        normalize_address(raw)
    assert err.value.field == "email"


@pytest.mark.parametrize("value", [None, 42, ["ana@example.com"], {"a": 1}])
def test_an_address_that_is_not_text_is_refused(value: object) -> None:
    with pytest.raises(InvalidInput, match="email"):
        normalize_address(value)


def test_names_keep_html_as_text_and_collapse_spaces() -> None:
    assert clean_name("  <b>Ana</b>   <script>alert(1)</script> ") == (
        "<b>Ana</b> <script>alert(1)</script>"
    )
    assert clean_name("Zoë") == "Zoë"
    assert clean_name("Zoe\u0308") == "Zoë"  # NFC
    assert clean_name(None) == ""


@pytest.mark.parametrize(
    "name",
    [
        "Ana\r\nBcc: victim@example.org",
        "Ana\nSubject: hi",
        "Ana\rX",
        "Ana\x00",
        "Ana\x1b[31m",
        "Ana\u2028Bcc: x",
        "Ana\x85",
    ],
)
def test_names_with_line_breaks_or_control_characters_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput) as err:
        clean_name(name)
    assert err.value.field == "first_name"


def test_oversized_fields_are_refused_naming_the_field() -> None:
    cases = {
        "first_name": {"first_name": "A" * 101},
        "tags": {"tags": "x" * 65},
        "source": {"source": "s" * 101},
        "timezone": {"timezone": "Z" * 65},
        "consent_text": {"consent_text": "c" * 2001},
    }
    for field, extra in cases.items():
        with pytest.raises(InvalidInput) as err:
            clean_signup(email="ana@example.com", **extra)  # type: ignore[arg-type]
        assert err.value.field == field
    assert clean_name("A" * 100) == "A" * 100


def test_tags_are_trimmed_lowercased_unique_and_limited() -> None:
    assert clean_tags(" Hip Drills, hip drills ,,Beginner ") == ("hip drills", "beginner")
    assert clean_tags(["VIP", "vip", " 5k "]) == ("vip", "5k")
    assert clean_tags("") == ()
    with pytest.raises(InvalidInput, match="at most 20"):
        clean_tags(",".join(f"t{i}" for i in range(21)))
    with pytest.raises(InvalidInput):
        clean_tags(["a,b"])  # a list item can't smuggle a comma
    with pytest.raises(InvalidInput):
        clean_tags([1, 2])
    with pytest.raises(InvalidInput):
        clean_tags("a\nb")


def test_time_zones_unknown_ones_fall_back_garbage_is_refused() -> None:
    assert clean_zone("Europe/Berlin") == "Europe/Berlin"
    assert clean_zone(" America/New_York ") == "America/New_York"
    assert clean_zone("") is None
    assert clean_zone("Mars/Olympus_Mons") is None  # browser-filled: not the visitor's fault
    assert clean_zone("localtime") is None
    with pytest.raises(InvalidInput, match="timezone"):
        clean_zone("Europe/Berlin\r\nX")


def test_sources_are_short_plain_labels() -> None:
    assert clean_source("homepage-footer") == "homepage-footer"
    assert clean_source("https://coach.example/blog") == "https://coach.example/blog"
    for bad in ("<script>", "a\nb", 'quote"s'):
        with pytest.raises(InvalidInput, match="source"):
            clean_source(bad)


def test_request_addresses_that_are_not_ips_are_not_stored() -> None:
    data = clean_signup(email="a@example.com", ip="testclient", user_agent="UA\r\nX" + "u" * 600)
    assert data.ip is None
    assert data.user_agent is not None and "\n" not in data.user_agent
    assert len(data.user_agent) == 512
    assert clean_signup(email="a@example.com", ip="2001:db8::1").ip == "2001:db8::1"


# -- the signup rules, on SQLite and PostgreSQL ------------------------------------------------


def _signup(rt: Runtime, email: str, **fields: object) -> object:
    data = clean_signup(email=email, consent_text="I agree", **fields)  # type: ignore[arg-type]
    with rt.transaction() as session:
        return signup(
            session, data, now=rt.clock(), channel="form", resend_every=timedelta(minutes=10)
        )


def test_a_new_address_becomes_pending_with_consent_tags_and_a_queued_confirmation(
    rt: Runtime,
) -> None:
    outcome = _signup(
        rt,
        "Ana@Example.com",
        first_name="Ana",
        tags="hip, beginner",
        source="footer",
        ip="203.0.113.7",
        user_agent="Firefox",
    )
    assert outcome.state == "new"  # type: ignore[attr-defined]
    with rt.sessions() as session:
        sub = subscriber(session, "ana@example.com")
        assert sub.status == SubscriberStatus.PENDING
        assert sub.source == "footer"
        assert sorted(t.name for t in sub.tags) == ["beginner", "hip"]
        consent = session.scalars(select(Consent)).one()
        assert (consent.action, consent.source, consent.ip, consent.user_agent, consent.text) == (
            "signup",
            "form:footer",
            "203.0.113.7",
            "Firefox",
            "I agree",
        )
        assert consent.created_at == rt.clock()
        delivery = session.scalars(select(Delivery)).one()
        assert (delivery.kind, delivery.message_key, delivery.status) == (
            "confirm",
            "confirm/1",
            "queued",
        )


def test_the_same_address_twice_makes_no_duplicate_and_no_second_email_right_away(
    rt: Runtime, clock: object
) -> None:
    first = _signup(rt, "ana@example.com", first_name="Ana")
    second = _signup(rt, "ANA@example.com ", first_name="Ana", tags="again")
    assert second.subscriber_id == first.subscriber_id  # type: ignore[attr-defined]
    assert second.delivery_id is None  # type: ignore[attr-defined]
    with rt.sessions() as session:
        assert count(session, Subscriber) == 1
        assert count(session, Delivery) == 1
        assert count(session, Consent) == 2  # both form posts are on record
        assert count(session, Tag) == 1


def test_a_pending_address_gets_a_new_confirmation_after_the_resend_interval(
    rt: Runtime, clock: object
) -> None:
    _signup(rt, "ana@example.com")
    clock.advance(timedelta(minutes=11))  # type: ignore[attr-defined]
    again = _signup(rt, "ana@example.com")
    with rt.sessions() as session:
        keys = sorted(session.scalars(select(Delivery.message_key)))
    assert keys == ["confirm/1", "confirm/2"]
    assert again.delivery_id is not None  # type: ignore[attr-defined]


def test_no_more_than_five_confirmations_a_day(rt: Runtime, clock: object) -> None:
    for _ in range(8):
        _signup(rt, "ana@example.com")
        clock.advance(timedelta(minutes=11))  # type: ignore[attr-defined]
    with rt.sessions() as session:
        assert count(session, Delivery) == 5


def test_an_active_subscriber_gets_no_email_and_keeps_their_name(rt: Runtime) -> None:
    _signup(rt, "ana@example.com", first_name="Ana")
    with rt.transaction() as session:
        sub = subscriber(session, "ana@example.com")
        sub.status = SubscriberStatus.ACTIVE
    outcome = _signup(rt, "ana@example.com", first_name="Mallory", tags="second-form")
    assert outcome.state == "active"  # type: ignore[attr-defined]
    assert outcome.delivery_id is None  # type: ignore[attr-defined]
    with rt.sessions() as session:
        sub = subscriber(session, "ana@example.com")
        assert sub.first_name == "Ana"
        assert [t.name for t in sub.tags] == ["second-form"]
        assert count(session, Delivery) == 1


def test_an_unsubscribed_address_is_asked_to_confirm_again(rt: Runtime) -> None:
    _signup(rt, "ana@example.com")
    with rt.transaction() as session:
        sub = subscriber(session, "ana@example.com")
        sub.status = SubscriberStatus.UNSUBSCRIBED
        sub.newsletter = False
    outcome = _signup(rt, "ana@example.com")
    assert outcome.state == "resubscribing"  # type: ignore[attr-defined]
    with rt.sessions() as session:
        sub = subscriber(session, "ana@example.com")
        assert sub.status == SubscriberStatus.PENDING  # only the click re-activates
        assert sub.newsletter is True


def test_a_suppressed_address_is_neither_stored_nor_mailed(rt: Runtime) -> None:
    with rt.transaction() as session:
        suppress(session, "ana@example.com", "complaint")
    outcome = _signup(rt, "Ana@Example.com")
    assert outcome.state == "suppressed"  # type: ignore[attr-defined]
    with rt.sessions() as session:
        assert count(session, Subscriber) == 0
        assert count(session, Delivery) == 0
        assert count(session, Consent) == 0
