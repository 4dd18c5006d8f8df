"""SendGridBackend (the official library) against the local SendGrid sink, and the sink's checks."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drip.clock import FrozenClock
from drip.errors import PermanentBackendError, TransientBackendError
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


def test_429_is_transient_with_retry_after(sink: SendGridSink, backend: MakeBackend) -> None:
    reset = int(WHEN.timestamp()) + 30
    sink.script(429, headers={"X-RateLimit-Reset": str(reset)})
    sink.script(429)  # no header: no hint
    sink.script(429, headers={"X-RateLimit-Reset": str(reset - 90)})  # already passed
    hints = []
    for _ in range(3):
        with pytest.raises(TransientBackendError) as info:
            backend().send_batch(MESSAGE, [person(1)])
        assert info.value.status == 429
        hints.append(info.value.retry_after)
    assert hints == [30.0, None, 0.0]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_transient(sink: SendGridSink, backend: MakeBackend, status: int) -> None:
    sink.script(status)
    with pytest.raises(TransientBackendError) as info:
        backend().send_batch(MESSAGE, [person(1)])
    assert info.value.status == status


def test_timeout_is_transient(sink: SendGridSink, backend: MakeBackend) -> None:
    sink.script_delay(1.0)  # the sink's wait ends early when it stops
    with pytest.raises(TransientBackendError, match="timed out") as info:
        backend(timeout=0.2).send_batch(MESSAGE, [person(1)])
    assert info.value.__cause__ is not None
    assert sink.requests == []


def test_connection_refused_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"  # nothing listens there any more
    backend = SendGridBackend("SG.k", api_url=url, timeout=2, clock=FrozenClock(WHEN))
    with pytest.raises(TransientBackendError, match="unreachable"):
        backend.send_batch(MESSAGE, [person(1)])


def test_failure_after_an_accepted_request_is_reported_not_raised(
    sink: SendGridSink, backend: MakeBackend
) -> None:
    sink.script(503, after=1)
    results = backend().send_batch(MESSAGE, [person(n) for n in range(1500)])
    assert all(r.ok for r in results[:1000])
    assert all(not r.ok and r.transient and "503" in str(r.error) for r in results[1000:])


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
