"""build_mime: headers and their order, multipart structure, personalization, header injection.
Also the memory backend, which records what build_mime makes."""

from __future__ import annotations

import email
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage

import pytest

from drip.clock import FrozenClock
from drip.errors import PermanentBackendError, TransientBackendError
from drip.esp.base import Message, Recipient
from drip.esp.memory import MemoryBackend
from drip.esp.mime import InvalidAddress, build_mime, clean_header_value

WHEN = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
UNSUB = "https://example.com/unsubscribe/" + "t0k3n" * 30  # a long signed token, like the real one

MESSAGE = Message(
    message_key="glute-accelerator/3",
    subject="Day 3, %%firstname.t%%: hips",
    html="<p>Hi %%firstname%%!</p>",
    text="Hi %%firstname.t%%!\n\nUnsubscribe: %%unsubscribe.t%%",
    from_email="coach@example.com",
    from_name="Glute Accelerator Coach",
    reply_to="help@example.com",
    headers={"X-Campaign": "glute"},
)


def recipient(name: str = "Ana", **subs: str) -> Recipient:
    values = {
        "%%firstname%%": "Ana &amp; Bo",
        "%%firstname.t%%": "Ana & Bo",
        "%%unsubscribe.t%%": UNSUB,
    }
    values.update(subs)
    return Recipient(
        delivery_id=57,
        email="ana@example.org",
        name=name,
        substitutions=values,
        headers={
            "List-Unsubscribe": f"<{UNSUB}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


def reparse(msg: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_headers_in_order_with_values() -> None:
    msg = reparse(build_mime(MESSAGE, recipient(), date=WHEN, message_id_domain="example.com"))
    assert msg.keys()[:10] == [
        "From", "To", "Reply-To", "Subject", "Date", "Message-ID", "X-Drip-Delivery-Id",
        "X-Campaign", "List-Unsubscribe", "List-Unsubscribe-Post",
    ]  # fmt: skip
    assert msg["From"] == "Glute Accelerator Coach <coach@example.com>"
    assert msg["To"] == "Ana <ana@example.org>"
    assert msg["Reply-To"] == "help@example.com"
    assert msg["Subject"] == "Day 3, Ana & Bo: hips"  # the .t (raw) value, not the HTML one
    assert msg["Date"].datetime == WHEN
    assert msg["Message-ID"].startswith("<drip.57.") and msg["Message-ID"].endswith("@example.com>")
    assert msg["X-Drip-Delivery-Id"] == "57"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_long_list_unsubscribe_url_is_written_verbatim() -> None:
    raw = build_mime(MESSAGE, recipient(), date=WHEN, message_id_domain="example.com").as_bytes()
    # Encoded-words or folding inside the URL would break one-click unsubscribe.
    assert f"\r\nList-Unsubscribe: <{UNSUB}>\r\n".encode() in raw


def test_multipart_alternative_text_first_then_html_utf8() -> None:
    msg = reparse(build_mime(MESSAGE, recipient(), date=WHEN, message_id_domain="example.com"))
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    # Line ends are CRLF on the wire; compare the text.
    assert parts[0].get_content().splitlines() == ["Hi Ana & Bo!", "", f"Unsubscribe: {UNSUB}"]
    assert parts[1].get_content().splitlines() == ["<p>Hi Ana &amp; Bo!</p>"]


def test_non_ascii_name_and_subject_round_trip() -> None:
    r = recipient(name="Zoë Ñúñez", **{"%%firstname.t%%": "Zoë"})
    raw = build_mime(MESSAGE, r, date=WHEN, message_id_domain="example.com").as_bytes()
    assert raw.isascii()  # RFC 2047 and quoted-printable: 7-bit clean for any relay
    msg = reparse(build_mime(MESSAGE, r, date=WHEN, message_id_domain="example.com"))
    assert msg["To"].addresses[0].display_name == "Zoë Ñúñez"
    assert msg["Subject"] == "Day 3, Zoë: hips"


@pytest.mark.parametrize("brk", ["\r\n", "\n", "\r", "\r\n\r\n"])
def test_line_breaks_in_name_subject_and_headers_never_make_a_header(brk: str) -> None:
    hostile = f"Eve{brk}Bcc: x@evil.test"
    r = Recipient(
        delivery_id=1,
        email="eve@example.org",
        name=hostile,
        substitutions={"%%firstname.t%%": hostile, "%%firstname%%": "Eve"},
        headers={"List-Unsubscribe": f"<https://example.com/u>{hostile}"},
    )
    built = build_mime(MESSAGE, r, date=WHEN, message_id_domain="example.com")
    head = built.as_bytes().split(b"\r\n\r\n", 1)[0]  # the body may hold line breaks
    assert b"\nBcc:" not in head and b"\rBcc:" not in head
    msg = reparse(built)
    assert "Bcc" not in msg
    assert [a.addr_spec for a in msg["To"].addresses] == ["eve@example.org"]
    assert msg["To"].addresses[0].display_name == "Eve Bcc: x@evil.test"
    assert msg["Subject"] == "Day 3, Eve Bcc: x@evil.test: hips"
    assert msg["List-Unsubscribe"] == "<https://example.com/u>Eve Bcc: x@evil.test"


@pytest.mark.parametrize(
    "address", ["a@x.test, b@evil.test", "a@x.test\r\nBcc: b@evil.test", "no-at"]
)
def test_an_address_that_is_not_one_mailbox_is_refused(address: str) -> None:
    r = Recipient(delivery_id=1, email=address)
    with pytest.raises(InvalidAddress):
        build_mime(MESSAGE, r, date=WHEN, message_id_domain="example.com")


def test_recipient_headers_override_message_headers_and_own_headers_are_guarded() -> None:
    message = Message("k/1", "s", "<p>h</p>", "t", "a@example.com", "A", headers={"X-Tag": "m"})
    r = Recipient(delivery_id=2, email="b@example.org", headers={"x-tag": "r"})
    msg = build_mime(message, r, date=WHEN, message_id_domain="example.com")
    assert msg.get_all("X-Tag") == ["r"]
    with pytest.raises(ValueError, match="Subject"):
        build_mime(
            message,
            Recipient(delivery_id=2, email="b@example.org", headers={"Subject": "x"}),
            date=WHEN,
            message_id_domain="example.com",
        )
    with pytest.raises(ValueError, match="header name"):
        build_mime(
            message,
            Recipient(delivery_id=2, email="b@example.org", headers={"X-Bad\r\nBcc": "x"}),
            date=WHEN,
            message_id_domain="example.com",
        )


def test_date_must_be_aware_and_keeps_its_offset() -> None:
    with pytest.raises(ValueError):
        build_mime(MESSAGE, recipient(), date=datetime(2025, 1, 1), message_id_domain="x.test")
    local = WHEN.astimezone(timezone(timedelta(hours=-7)))
    msg = reparse(build_mime(MESSAGE, recipient(), date=local, message_id_domain="x.test"))
    assert msg["Date"].endswith("-0700") and msg["Date"].datetime == WHEN


def test_message_ids_are_unique() -> None:
    ids = {
        build_mime(MESSAGE, recipient(), date=WHEN, message_id_domain="example.com")["Message-ID"]
        for _ in range(50)
    }
    assert len(ids) == 50


# -- MemoryBackend --------------------------------------------------------------------------


def test_memory_backend_records_personalized_copies() -> None:
    backend = MemoryBackend(clock=FrozenClock(WHEN))
    results = backend.send_batch(MESSAGE, [recipient(), recipient(name="Bo")])
    assert [r.ok for r in results] == [True, True]
    sent = backend.outbox[0]
    assert (sent.to, sent.subject) == ("ana@example.org", "Day 3, Ana & Bo: hips")
    assert sent.html == "<p>Hi Ana &amp; Bo!</p>"
    assert sent.text.startswith("Hi Ana & Bo!")
    assert sent.mime["Message-ID"] == results[0].provider_message_id
    assert sent.sent_at == WHEN
    assert len(backend.sent_to("ANA@example.org")) == 2


def test_memory_backend_scripted_errors_and_failing_addresses() -> None:
    backend = MemoryBackend(clock=FrozenClock(WHEN))
    backend.raise_next(TransientBackendError("busy", status=429, retry_after=5), times=2)
    backend.raise_next(PermanentBackendError("bad key", status=401))
    for expected in (TransientBackendError, TransientBackendError, PermanentBackendError):
        with pytest.raises(expected):
            backend.send_batch(MESSAGE, [recipient()])
    assert backend.outbox == [] and backend.calls == 3

    backend.fail_address("ANA@example.org", transient=True, error="451 try later")
    other = Recipient(
        delivery_id=9, email="bo@example.org", substitutions=recipient().substitutions
    )
    first, second = backend.send_batch(MESSAGE, [recipient(), other])
    assert (first.ok, first.transient, first.error) == (False, True, "451 try later")
    assert second.ok and [s.to for s in backend.outbox] == ["bo@example.org"]
    backend.unfail_address("ana@example.org")
    assert backend.send_batch(MESSAGE, [recipient()])[0].ok
    backend.close()
    assert backend.closed


def test_clean_header_value_equals_the_plain_regex_for_every_kind_of_character() -> None:
    """The printable fast path must give exactly what the regex gives."""

    def reference(value: str) -> str:
        spaced = re.sub(r"[\x00-\x08\x0a-\x1f\x7f]+", " ", value)
        return re.sub("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]", "", spaced).strip()

    alphabet = [chr(c) for c in range(0x80)] + ["é", "\u200b", "\u2028", "\xa0", "😀", "\t"]
    alphabet += ["\u202e", "\u2066", "\u200f"]  # bidirectional controls: removed
    rng = random.Random(8058)
    samples = ["", " ", "Ana", " Ana ", "a\r\nBcc: x@example.com", "\tx\t", "x\x7f"]
    samples += ["".join(rng.choices(alphabet, k=rng.randint(0, 12))) for _ in range(3000)]
    for value in samples:
        assert clean_header_value(value) == reference(value), repr(value)
    assert clean_header_value("a\r\nBcc: x") == "a Bcc: x"
    assert clean_header_value("Ana\u202eevil") == "Anaevil"  # a stored name, cleaned on send
