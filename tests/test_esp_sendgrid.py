"""SendGridBackend (the official library) against the local SendGrid sink, and the sink's checks."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from drip.clock import FrozenClock
from drip.errors import (
    AmbiguousBackendError,
    PermanentBackendError,
    ThrottledBackendError,
    TransientBackendError,
)
from drip.esp.base import Message, Recipient
from drip.esp.sendgrid import SendGridBackend, build_body, split_requests
from tests.fakes.sendgrid_sink import SendGridSink, mail_send_validator, schema_violations

WHEN = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
SINK_SCRIPT = Path(__file__).parent / "fakes" / "sendgrid_sink.py"
MESSAGE = Message(
    message_key="glute-accelerator/3",
    subject="Day 3, %%firstname.t%%",
    html="<p>Hi %%firstname%%</p>",
    text="Hi %%firstname.t%%",
    from_email="coach@example.com",
    from_name="Glute Accelerator Coach",
    reply_to="help@example.com",
    category="lesson",
    headers={"X-Campaign": "glute"},
)


def person(n: int, email: str = "") -> Recipient:
    return Recipient(
        delivery_id=n,
        email=email or f"p{n}@example.org",
        name=f"P {n}",
        substitutions={"%%firstname%%": f"P{n}", "%%firstname.t%%": f"P{n}"},
        headers={
            "List-Unsubscribe": f"<https://example.com/u/{n}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


@pytest.fixture
def sink() -> Iterator[SendGridSink]:
    with SendGridSink() as running:
        yield running


MakeBackend = Callable[..., SendGridBackend]


@pytest.fixture
def backend(sink: SendGridSink) -> MakeBackend:
    def make(**kwargs: Any) -> SendGridBackend:
        options: dict[str, Any] = {"api_url": sink.url, "timeout": 5, "clock": FrozenClock(WHEN)}
        options.update(kwargs)
        return SendGridBackend(options.pop("api_key", "SG.test-key"), **options)

    return make


def test_body_is_valid_and_complete(sink: SendGridSink, backend: MakeBackend) -> None:
    results = backend().send_batch(MESSAGE, [person(1), person(2)])
    assert all(r.ok for r in results)
    (body,) = sink.requests
    assert schema_violations(body) == [] and sink.violations == []
    first = body["personalizations"][0]
    assert first == {
        "to": [{"email": "p1@example.org", "name": "P 1"}],
        "custom_args": {"delivery_id": "1", "message_key": "glute-accelerator/3"},
        "substitutions": {"%%firstname%%": "P1", "%%firstname.t%%": "P1"},
        "headers": {
            "List-Unsubscribe": "<https://example.com/u/1>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    }
    assert body["from"] == {"email": "coach@example.com", "name": "Glute Accelerator Coach"}
    assert body["reply_to"] == {"email": "help@example.com"}
    assert body["subject"] == "Day 3, %%firstname.t%%"  # SendGrid substitutes, not us
    assert body["content"] == [
        {"type": "text/plain", "value": "Hi %%firstname.t%%"},
        {"type": "text/html", "value": "<p>Hi %%firstname%%</p>"},
    ]
    assert body["categories"] == ["lesson"]
    assert body["headers"] == {"X-Campaign": "glute"}
    assert "mail_settings" not in body


def test_personalization_order_and_message_id(sink: SendGridSink, backend: MakeBackend) -> None:
    batch = [person(n) for n in (5, 3, 9, 1, 7)]
    results = backend().send_batch(MESSAGE, batch)
    sent = [p["to"][0]["email"] for p in sink.requests[0]["personalizations"]]
    assert sent == [r.email for r in batch]
    assert [r.delivery_id for r in results] == [5, 3, 9, 1, 7]
    assert {r.provider_message_id for r in results} == {sink.message_ids[0]}
    assert len(sink.message_ids[0]) == 22


def test_more_than_1000_recipients_split(sink: SendGridSink, backend: MakeBackend) -> None:
    batch = [person(n) for n in range(2500)]
    results = backend().send_batch(MESSAGE, batch)
    assert [len(b["personalizations"]) for b in sink.requests] == [1000, 1000, 500]
    assert [r.delivery_id for r in results] == list(range(2500))
    ids = sink.message_ids
    assert (
        results[999].provider_message_id == ids[0] and results[1000].provider_message_id == ids[1]
    )
    assert results[2499].provider_message_id == ids[2] and sink.violations == []


def test_duplicate_address_goes_to_another_request(
    sink: SendGridSink, backend: MakeBackend
) -> None:
    batch = [person(1, "a@example.org"), person(2), person(3, "A@Example.org"), person(4)]
    results = backend().send_batch(MESSAGE, batch)
    assert [
        [p["custom_args"]["delivery_id"] for p in b["personalizations"]] for b in sink.requests
    ] == [
        ["1", "2"],
        ["3", "4"],
    ]
    assert all(r.ok for r in results) and sink.violations == []
    assert [len(run) for run in split_requests(batch, limit=1)] == [1, 1, 1, 1]


def test_sandbox_answers_200_and_counts_as_sent(sink: SendGridSink, backend: MakeBackend) -> None:
    results = backend(sandbox=True).send_batch(MESSAGE, [person(1)])
    assert results[0].ok and results[0].provider_message_id == sink.message_ids[0]
    assert sink.requests[0]["mail_settings"] == {"sandbox_mode": {"enable": True}}


def test_line_breaks_in_names_and_subject_values_are_removed() -> None:
    hostile = Recipient(
        delivery_id=1,
        email="eve@example.org",
        name="Eve\r\nBcc: x@evil.test",
        substitutions={"%%firstname.t%%": "Eve\r\nBcc: y", "%%body%%": "line\nbreaks ok"},
    )
    message = Message("k/1", "Hi %%firstname.t%%", "<p>%%body%%</p>", "t", "a@example.com", "A")
    (p,) = build_body(message, [hostile], sandbox=False)["personalizations"]
    assert p["to"] == [{"email": "eve@example.org", "name": "Eve Bcc: x@evil.test"}]
    assert p["substitutions"] == {"%%firstname.t%%": "Eve Bcc: y", "%%body%%": "line\nbreaks ok"}


def test_names_with_commas_are_quoted_for_sendgrid() -> None:
    # SendGrid leaves such names unquoted in the To header (sendgrid-python#291).
    r = Recipient(delivery_id=1, email="ana@example.org", name='Smith, Ana "A"')
    (p,) = build_body(MESSAGE, [r], sandbox=False)["personalizations"]
    assert p["to"] == [{"email": "ana@example.org", "name": '"Smith, Ana \\"A\\""'}]


@pytest.mark.parametrize("status", [400, 401, 403, 413])
def test_client_errors_are_permanent_with_the_provider_message(
    sink: SendGridSink, backend: MakeBackend, status: int
) -> None:
    body = {
        "errors": [{"message": f"nope {status}", "field": "x", "help": None}, {"message": "and"}]
    }
    sink.script(status, body=body)
    with pytest.raises(PermanentBackendError) as info:
        backend().send_batch(MESSAGE, [person(1)])
    assert info.value.status == status
    assert f"nope {status}; and" in str(info.value)
    assert info.value.__cause__ is not None


def test_real_checks_reach_the_caller_as_permanent(
    sink: SendGridSink, backend: MakeBackend
) -> None:
    empty = Message("k/1", "s", "", "", "a@example.com", "A")
    with pytest.raises(PermanentBackendError, match="content parameter is required"):
        backend().send_batch(empty, [person(1)])
    with SendGridSink(api_key="SG.right") as strict:
        wrong = backend(api_url=strict.url, api_key="SG.wrong")
        with pytest.raises(PermanentBackendError, match="authorization grant") as info:
            wrong.send_batch(MESSAGE, [person(1)])
        assert info.value.status == 401 and strict.requests == []


# -- throttles: 429 and 5xx ------------------------------------------------------------------


def throttled(backend: SendGridBackend) -> ThrottledBackendError:
    with pytest.raises(ThrottledBackendError) as info:
        backend.send_batch(MESSAGE, [person(1)])
    return info.value


def test_429_hints_come_from_retry_after_or_the_rate_limit_reset(
    sink: SendGridSink, backend: MakeBackend
) -> None:
    now = int(WHEN.timestamp())
    sink.storm(429, retry_after=7)
    sink.storm(429, retry_after=format_datetime(WHEN + timedelta(seconds=45), usegmt=True))
    sink.storm(429, reset_at=now + 30)
    sink.storm(429, retry_after=5, reset_at=now + 30)  # both: the earlier one
    sink.storm(429, retry_after=50, reset_at=now + 30)  # the earlier one again
    sink.storm(429, reset_at=now - 90)  # already passed: go now
    sink.storm(429, retry_after="soon")  # unreadable: no hint
    sink.storm(429)  # no hint at all
    hints = [throttled(backend()) for _ in range(8)]
    assert [err.retry_after for err in hints] == [7.0, 45.0, 30.0, 5.0, 30.0, 0.0, None, None]
    assert {err.status for err in hints} == {429} and sink.requests == []
    assert "too many requests" in str(hints[0])


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_throttles(sink: SendGridSink, backend: MakeBackend, status: int) -> None:
    sink.storm(status)
    sink.storm(status, retry_after=20, reset_at=int(WHEN.timestamp()) + 90)
    plain, hinted = throttled(backend()), throttled(backend())
    assert plain.status == status and plain.retry_after is None
    assert hinted.retry_after == 20.0  # X-RateLimit-Reset is a 429's, not a 5xx's


def test_a_revoked_key_is_permanent(sink: SendGridSink, backend: MakeBackend) -> None:
    sink.revoke_key()
    with pytest.raises(PermanentBackendError, match="invalid or revoked") as info:
        backend().send_batch(MESSAGE, [person(1)])
    assert info.value.status == 401


def test_a_key_without_mail_send_is_permanent(sink: SendGridSink, backend: MakeBackend) -> None:
    sink.set_scopes(["alerts.read"])
    with pytest.raises(PermanentBackendError, match="access forbidden") as info:
        backend().send_batch(MESSAGE, [person(1)])
    assert info.value.status == 403


# -- no answer: maybe sent; no connection: not sent -----------------------------------------


def ambiguous(backend: SendGridBackend, count: int = 1) -> tuple[AmbiguousBackendError, float]:
    """The error of a send that got no answer, and how long the call took."""
    started = time.monotonic()
    with pytest.raises(AmbiguousBackendError) as info:
        backend.send_batch(MESSAGE, [person(n) for n in range(1, count + 1)])
    return info.value, time.monotonic() - started


def test_a_late_answer_is_ambiguous_and_the_email_was_accepted_once(
    sink: SendGridSink, backend: MakeBackend
) -> None:
    sink.late(3.0)
    err, took = ambiguous(backend(timeout=0.5))
    assert took < 2.0 and "within 0.5s" in str(err) and err.__cause__ is not None
    # SendGrid has it: a blind retry would have sent it twice. The backend tried once.
    assert sink.acceptance_counts() == Counter({("p1@example.org", MESSAGE.message_key): 1})
    assert sink.attempts == 1


def test_a_trickled_answer_stops_at_the_deadline(sink: SendGridSink, backend: MakeBackend) -> None:
    sink.trickle(0.3)  # a per-read timeout would wait for every byte: about a minute
    err, took = ambiguous(backend(timeout=1.0))
    assert 0.9 <= took < 3.0, took
    assert "within 1s" in str(err) and len(sink.requests) == 1


def test_a_hanging_request_is_ambiguous_within_the_deadline(
    sink: SendGridSink, backend: MakeBackend
) -> None:
    sink.hang()
    _, took = ambiguous(backend(timeout=0.5))
    assert took < 1.5


@pytest.mark.parametrize("rst", [False, True])
def test_a_reset_while_reading_the_answer_is_ambiguous(
    sink: SendGridSink, backend: MakeBackend, rst: bool
) -> None:
    sink.reset(accept=True, rst=rst)
    err, _ = ambiguous(backend(timeout=1.0))
    assert "may have accepted" in str(err) and len(sink.requests) == 1


def test_connection_refused_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"  # nothing listens there any more
    backend = SendGridBackend("SG.k", api_url=url, timeout=1, clock=FrozenClock(WHEN))
    with pytest.raises(TransientBackendError, match="unreachable") as info:
        backend.send_batch(MESSAGE, [person(1)])
    assert type(info.value) is TransientBackendError and info.value.__cause__ is not None


def test_the_deadline_passing_while_sending_is_transient() -> None:
    # A server that never reads: the request cannot leave whole, so SendGrid cannot have it.
    big = Message("k/1", "s", "<p>" + "x" * 8_000_000 + "</p>", "t", "a@example.com", "A")
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        backend = SendGridBackend("SG.k", api_url=url, timeout=0.5, clock=FrozenClock(WHEN))
        started = time.monotonic()
        with pytest.raises(TransientBackendError, match=r"within 0\.5s") as info:
            backend.send_batch(big, [person(1)])
    assert type(info.value) is TransientBackendError
    assert time.monotonic() - started < 2.0


# -- a batch split over several requests ------------------------------------------------------


def test_a_later_request_answered_late_leaves_its_recipients_unknown(
    sink: SendGridSink, backend: MakeBackend
) -> None:
    sink.late(3.0, after=1)
    batch = [person(n) for n in range(2500)]  # three requests: 1000, 1000, 500
    results = backend(timeout=1.0).send_batch(MESSAGE, batch)
    assert [r.delivery_id for r in results] == list(range(2500))
    assert all(r.ok for r in results[:1000])
    assert all(not r.ok and r.unknown and not r.transient for r in results[1000:2000])
    assert all(not r.ok and r.transient and not r.unknown for r in results[2000:])  # never tried
    assert set(sink.acceptance_counts().values()) == {1} and len(sink.acceptance_counts()) == 2000
    assert sink.attempts == 2


@pytest.mark.parametrize(("hint", "expected"), [(12, 12.0), (None, 0.0)])
def test_a_later_request_throttled_keeps_the_hint_in_the_results(
    sink: SendGridSink, backend: MakeBackend, hint: int | None, expected: float
) -> None:
    sink.storm(429, retry_after=hint, after=1)
    results = backend().send_batch(MESSAGE, [person(n) for n in range(1500)])
    assert all(r.ok and r.retry_after is None for r in results[:1000])
    rest = results[1000:]
    assert all(not r.ok and r.transient and r.retry_after == expected for r in rest)
    assert "429" in str(rest[0].error)


def test_a_later_request_refused_fails_its_recipients_only(
    sink: SendGridSink, backend: MakeBackend
) -> None:
    sink.script(400, after=1)
    results = backend().send_batch(MESSAGE, [person(n) for n in range(2500)])
    refused, untried = results[1000:2000], results[2000:]
    assert all(not (r.ok or r.transient or r.unknown) and "400" in str(r.error) for r in refused)
    assert all(r.transient and r.retry_after is None for r in untried)


# -- probe -----------------------------------------------------------------------------------


def test_probe_passes_for_a_key_that_may_send(sink: SendGridSink, backend: MakeBackend) -> None:
    backend().probe()  # returns quietly
    assert sink.stats()["scopes_requests"] == 1 and sink.attempts == 0  # no email


@pytest.mark.parametrize(
    ("fault", "match"),
    [
        (lambda sink: sink.revoke_key(), "invalid or revoked"),
        (lambda sink: sink.set_scopes(["alerts.read"]), "mail.send"),
    ],
)
def test_probe_refuses_a_bad_key(
    sink: SendGridSink, backend: MakeBackend, fault: Callable[[SendGridSink], None], match: str
) -> None:
    fault(sink)
    with pytest.raises(PermanentBackendError, match=match):
        backend().probe()


def test_probe_throttled_or_unanswered(sink: SendGridSink, backend: MakeBackend) -> None:
    sink.storm(503, retry_after=9, endpoint="scopes")
    with pytest.raises(ThrottledBackendError) as info:
        backend().probe()
    assert info.value.retry_after == 9.0
    sink.hang(endpoint="scopes")
    started = time.monotonic()
    with pytest.raises(TransientBackendError, match="did not answer") as unanswered:
        backend(timeout=0.5).probe()
    assert type(unanswered.value) is TransientBackendError
    assert time.monotonic() - started < 1.5


def test_probe_of_an_unreachable_server_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    backend = SendGridBackend("SG.k", api_url=url, timeout=1, clock=FrozenClock(WHEN))
    with pytest.raises(TransientBackendError, match="unreachable"):
        backend.probe()


# -- the sink's own checks -------------------------------------------------------------------


def post(sink: SendGridSink, body: Any, key: str | None = "SG.k") -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    status, _, answer = sink.handle("/v3/mail/send", headers, raw, len(raw))
    return status, answer if isinstance(answer, dict) else {}


def valid_body(count: int = 1) -> dict[str, Any]:
    return build_body(MESSAGE, [person(n) for n in range(count)], sandbox=False)


@pytest.mark.parametrize("validate", [True, False])
def test_sink_refuses_1001_personalizations(validate: bool) -> None:
    sink = SendGridSink(validate=validate)
    status, answer = post(sink, valid_body(1001))
    assert status == 400 and answer["errors"][0]["field"] == "personalizations"
    assert sink.violations and sink.requests == []


def test_sink_refuses_a_duplicate_address_across_to_and_bcc() -> None:
    sink = SendGridSink()
    body = valid_body(2)
    body["personalizations"][1]["bcc"] = [{"email": "P0@EXAMPLE.org"}]
    status, answer = post(sink, body)
    assert status == 400 and "unique" in answer["errors"][0]["message"]
    assert [v.field for v in sink.violations] == ["personalizations.1.bcc"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b["personalizations"][0]["substitutions"].update(x=1), "substitutions"),
        (lambda b: b["personalizations"][0]["custom_args"].update(x="y" * 10_001), "custom_args"),
        (lambda b: b.update(categories=["ana@example.org"]), "categories"),
        (lambda b: b.update(categories=[str(n) for n in range(11)]), "categories"),
        (lambda b: b.pop("subject"), "subject"),
        (lambda b: b.pop("from"), "from"),
        (lambda b: b.update(content=[]), "content"),
        (lambda b: b["content"].reverse(), "content"),
        (lambda b: b["personalizations"][0]["to"][0].update(email="not-an-address"), "to"),
    ],
)
def test_sink_rules(change: Callable[[dict[str, Any]], Any], field: str) -> None:
    sink = SendGridSink()
    body = valid_body(2)
    change(body)
    status, answer = post(sink, body)
    assert status == 400
    assert any(field in str(e["field"]) for e in answer["errors"]), answer


def test_sink_auth_and_json() -> None:
    sink = SendGridSink()
    assert post(sink, valid_body(), key=None)[0] == 401
    assert post(sink, b"{not json")[0] == 400
    assert post(sink, valid_body())[0] == 202 and sink.personalization_count() == 1


def test_sink_fails_loudly_without_the_spec(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mail_send_validator.cache_clear()
    monkeypatch.setenv("DRIP_SENDGRID_SPEC", str(tmp_path / "missing.json"))
    try:
        with pytest.raises(FileNotFoundError, match="DRIP_SENDGRID_SPEC"):
            SendGridSink(validate=True)
    finally:
        mail_send_validator.cache_clear()


def test_sink_runs_standalone() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(SINK_SCRIPT), "--port", "0", "--no-validate"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        request = urllib.request.Request(
            f"{url}/v3/mail/send",
            data=json.dumps(valid_body(3)).encode(),
            headers={"Authorization": "Bearer SG.k", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 202 and response.headers["X-Message-Id"]
        with urllib.request.urlopen(f"{url}/_sink/stats", timeout=5) as response:
            assert json.load(response)["personalizations"] == 3
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
