"""The SendGrid sink's scripted faults, seen from a plain ``http.client`` client.

Each fault is checked for what a client sees (a late, trickled, missing or torn answer, a 429 with
or without hints) and for what the sink recorded (accepted or not), since fault tests elsewhere
count duplicates and losses from the sink's side.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.sendgrid_sink import (
    SPEC_ENV,
    VENDORED_SPEC,
    AcceptedRecipient,
    SendGridSink,
    spec_path,
)

REPO = Path(__file__).resolve().parents[1]
SINK_SCRIPT = REPO / "tests" / "fakes" / "sendgrid_sink.py"
Reply = tuple[int, dict[str, str], Any]


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def mail(*addresses: str, message_key: str = "glute-accelerator/1") -> dict[str, Any]:
    """A valid Mail Send body: one personalization per address, custom_args as drip sends."""
    return {
        "personalizations": [
            {
                "to": [{"email": address}],
                "custom_args": {"delivery_id": str(n), "message_key": message_key},
            }
            for n, address in enumerate(addresses, start=1)
        ],
        "from": {"email": "coach@example.com"},
        "subject": "Day 1",
        "content": [{"type": "text/plain", "value": "Hi"}],
    }


def people(count: int) -> list[str]:
    return [f"runner{n}@example.org" for n in range(count)]


def call(
    url: str,
    method: str = "POST",
    path: str = "/v3/mail/send",
    body: Any = None,
    key: str | None = "SG.key",
    timeout: float = 5.0,
) -> Reply:
    """One request; the status, headers and decoded body (JSON if any) of its answer."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        decoded = json.loads(raw) if raw else None
        return response.status, dict(response.getheaders()), decoded
    finally:
        conn.close()


def send(sink: SendGridSink, *addresses: str, timeout: float = 5.0) -> Reply:
    return call(sink.url, body=mail(*(addresses or ("ana@example.org",))), timeout=timeout)


def raw_exchange(sink: SendGridSink, body: dict[str, Any]) -> socket.socket:
    """A socket that has sent a whole Mail Send request and not read anything yet."""
    data = json.dumps(body).encode()
    host, port = sink.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    head = (
        f"POST /v3/mail/send HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer SG.key\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


@pytest.fixture
def sink() -> Iterator[SendGridSink]:
    with SendGridSink() as running:
        yield running


# -- the vendored spec -----------------------------------------------------------------------


def test_the_spec_is_vendored_inside_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SPEC_ENV, raising=False)
    assert spec_path() == VENDORED_SPEC and VENDORED_SPEC.is_relative_to(REPO)
    source = (VENDORED_SPEC.parent / "SOURCE.md").read_text()
    assert "twilio/sendgrid-oai" in source and "spec/json/tsg_mail_v3.json" in source
    assert "MIT License" in (VENDORED_SPEC.parent / "LICENSE").read_text()
    assert "/v3/mail/send" in json.loads(VENDORED_SPEC.read_text())["paths"]


# -- late, trickle, hang, reset --------------------------------------------------------------


def test_late_accepts_at_once_and_answers_after_the_delay(sink: SendGridSink) -> None:
    sink.late(1.0)
    with pytest.raises(TimeoutError):
        send(sink, "ana@example.org", timeout=0.2)
    # The client gave up, yet the email was accepted: the duplicate trap of a blind retry.
    assert [r.email for r in sink.accepted_recipients()] == ["ana@example.org"]
    sink.late(0.3)
    started = time.monotonic()
    status, headers, _ = send(sink, "bo@example.org")
    assert status == 202 and headers["X-Message-Id"] == sink.message_ids[-1]
    assert time.monotonic() - started >= 0.3
    assert sink.stats()["late"] == 2 and sink.stats()["accepted"] == 2


def test_trickle_sends_the_status_line_one_byte_at_a_time(sink: SendGridSink) -> None:
    sink.trickle(0.05)
    sock = raw_exchange(sink, mail("ana@example.org"))
    try:
        started, chunks = time.monotonic(), list[bytes]()
        while len(chunks) < 12:
            chunks.append(sock.recv(64))
        elapsed = time.monotonic() - started
    finally:
        sock.close()
    assert b"".join(chunks) == b"HTTP/1.0 202"
    assert {len(chunk) for chunk in chunks} == {1}
    assert elapsed >= 11 * 0.05 * 0.9
    assert len(sink.requests) == 1  # accepted before the first byte of the answer


def test_a_whole_trickled_answer_is_a_valid_202(sink: SendGridSink) -> None:
    sink.trickle(0.001)
    status, headers, _ = send(sink, "ana@example.org")
    assert status == 202 and headers["X-Message-Id"] == sink.message_ids[0]
    assert sink.stats()["trickled"] == 1


@pytest.mark.parametrize("accept", [False, True])
def test_hang_reads_and_never_answers(sink: SendGridSink, accept: bool) -> None:
    sink.hang(accept=accept)
    with pytest.raises(TimeoutError):
        send(sink, "ana@example.org", timeout=0.3)
    assert len(sink.requests) == (1 if accept else 0)
    assert sink.stats()["hung"] == 1 and sink.attempts == 1
    assert send(sink, "bo@example.org")[0] == 202  # one request only


def test_stop_is_quick_while_a_request_hangs() -> None:
    sink = SendGridSink().start()
    sink.hang(times=None)
    sock = raw_exchange(sink, mail("ana@example.org"))  # stays connected, waiting
    try:
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        started = time.monotonic()
        sink.stop()
        assert time.monotonic() - started < 1.0
        sock.settimeout(1)
        assert sock.recv(1) == b""  # closed without a single byte of answer
    finally:
        sock.close()
        sink.stop()


@pytest.mark.parametrize("accept", [False, True])
def test_reset_closes_without_an_answer(sink: SendGridSink, accept: bool) -> None:
    sink.reset(accept=accept)
    with pytest.raises(http.client.RemoteDisconnected):
        send(sink, "ana@example.org")
    assert len(sink.requests) == (1 if accept else 0) and sink.stats()["resets"] == 1


def test_reset_with_rst_aborts_the_connection(sink: SendGridSink) -> None:
    sink.reset(rst=True, accept=True)
    with pytest.raises(ConnectionResetError) as info:
        send(sink, "ana@example.org")
    assert not isinstance(info.value, http.client.RemoteDisconnected)
    assert len(sink.requests) == 1


# -- storms ----------------------------------------------------------------------------------


def test_429_storm_with_each_kind_of_hint() -> None:
    clock = FakeClock()
    with SendGridSink(clock=clock) as sink:
        sink.storm(429, retry_after=7)
        sink.storm(429, reset_at=clock.now + 30)
        sink.storm(429, reset_in=5)
        sink.storm(429, retry_after="Wed, 21 Oct 2026 07:28:00 GMT")
        sink.storm(429)
        replies = [send(sink) for _ in range(5)]
        assert {status for status, _, _ in replies} == {429}
        hints = [
            {k: v for k, v in headers.items() if k in ("Retry-After", "X-RateLimit-Reset")}
            for _, headers, _ in replies
        ]
        assert hints == [
            {"Retry-After": "7"},
            {"X-RateLimit-Reset": str(int(clock.now) + 30)},
            {"X-RateLimit-Reset": str(int(clock.now) + 5)},
            {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"},
            {},
        ]
        assert replies[0][2] == {"errors": [{"field": None, "message": "too many requests"}]}
        assert sink.requests == [] and sink.stats()["throttled"] == 5


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_error_storms(sink: SendGridSink, status: int) -> None:
    sink.storm(status, retry_after=2, times=2)
    replies = [send(sink) for _ in range(3)]
    assert [reply[0] for reply in replies] == [status, status, 202]
    assert replies[0][1]["Retry-After"] == "2"
    assert replies[0][2]["errors"][0]["message"] == str(http.HTTPStatus(status).phrase).lower()
    assert sink.stats()["server_errors"] == 2 and len(sink.requests) == 1


def test_a_standing_fault_lasts_until_cleared(sink: SendGridSink) -> None:
    sink.storm(503, times=None, after=1)
    assert [send(sink)[0] for _ in range(4)] == [202, 503, 503, 503]
    sink.clear()
    assert send(sink)[0] == 202


def test_storms_refuse_other_statuses(sink: SendGridSink) -> None:
    with pytest.raises(ValueError, match="429 or 5xx"):
        sink.storm(400)


def test_faults_target_one_endpoint(sink: SendGridSink) -> None:
    sink.storm(503, endpoint="scopes")
    assert send(sink)[0] == 202
    assert call(sink.url, "GET", "/v3/scopes")[0] == 503
    assert call(sink.url, "GET", "/v3/scopes")[0] == 200


def test_handle_without_a_connection_uses_up_transport_faults() -> None:
    sink = SendGridSink()
    sink.hang()
    raw = json.dumps(mail("ana@example.org")).encode()
    auth = {"Authorization": "Bearer SG.k"}
    assert sink.handle("/v3/mail/send", auth, raw, len(raw))[0] == 0
    assert sink.handle("/v3/mail/send", auth, raw, len(raw))[0] == 202


# -- rate limit ------------------------------------------------------------------------------


def test_rate_limit_refuses_what_exceeds_the_bucket_with_hints() -> None:
    clock = FakeClock()
    with SendGridSink(clock=clock) as sink:
        sink.rate_limit(per_second=10, burst=10)
        assert send(sink, *people(4))[0] == 202
        status, headers, _ = send(sink, *people(4))
        assert status == 202 and headers["X-RateLimit-Remaining"] == "2"
        status, headers, body = send(sink, *people(4))
        assert status == 429 and body["errors"][0]["message"] == "too many requests"
        assert headers["Retry-After"] == "1"  # 0.2 s, in HTTP's whole seconds
        assert headers["X-RateLimit-Limit"] == "10" and headers["X-RateLimit-Remaining"] == "2"
        assert headers["X-RateLimit-Reset"] == str(int(clock.now) + 1)
        clock.now += 0.2
        assert send(sink, *people(4))[0] == 202
        assert sink.stats()["rate_limited"] == 1 and sink.personalization_count() == 12


def test_rate_limit_accepts_per_second_over_a_window() -> None:
    clock = FakeClock()
    with SendGridSink(validate=False, clock=clock) as sink:
        sink.rate_limit(per_second=20, burst=5)
        accepted = 0
        for tick in range(31):  # 3 simulated seconds, a client pushing as hard as it can
            if tick:
                clock.now += 0.1
            while send(sink, "ana@example.org")[0] == 202:
                accepted += 1
        assert accepted == 5 + 20 * 3  # the burst, then exactly 20 a second
        assert sink.stats()["rate_limited"] == 31


def test_a_request_larger_than_the_burst_passes_and_leaves_a_debt() -> None:
    clock = FakeClock()
    with SendGridSink(clock=clock) as sink:
        sink.rate_limit(per_second=10, burst=10, whole_seconds=False)
        assert send(sink, *people(25))[0] == 202  # a full bucket lets it through
        status, headers, _ = send(sink, "ana@example.org")
        assert status == 429 and headers["Retry-After"] == "1.6"  # 15 owed + 1 needed
        clock.now += 1.6
        assert send(sink, "ana@example.org")[0] == 202


def test_rate_limit_can_omit_every_hint() -> None:
    clock = FakeClock()
    with SendGridSink(clock=clock) as sink:
        sink.rate_limit(per_second=1, burst=1, retry_headers=False)
        assert send(sink)[0] == 202
        status, headers, _ = send(sink)
        assert status == 429
        assert not {"Retry-After", "X-RateLimit-Reset", "X-RateLimit-Limit"} & set(headers)


def test_standalone_sink_takes_a_rate_limit() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(SINK_SCRIPT), "--no-validate", "--rate-limit", "5", "--burst", "5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert call(url, body=mail(*people(5)))[0] == 202
        status, headers, _ = call(url, body=mail(*people(5)))
        assert status == 429 and headers["Retry-After"] == "1"
        stats = call(url, "GET", "/_sink/stats", key=None)[2]
        assert stats["rate_limited"] == 1 and stats["personalizations"] == 5
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


# -- accounting ------------------------------------------------------------------------------


def test_accepted_recipients_count_duplicates_per_address_and_message(sink: SendGridSink) -> None:
    call(sink.url, body=mail("ana@example.org", "bo@example.org"))
    call(sink.url, body=mail("ANA@example.org"))  # the same email again: a duplicate
    call(sink.url, body=mail("ana@example.org", message_key="glute-accelerator/2"))
    assert sink.accepted_recipients()[:2] == [
        AcceptedRecipient("ana@example.org", "1", "glute-accelerator/1"),
        AcceptedRecipient("bo@example.org", "2", "glute-accelerator/1"),
    ]
    assert sink.acceptance_counts() == Counter(
        {
            ("ana@example.org", "glute-accelerator/1"): 2,
            ("bo@example.org", "glute-accelerator/1"): 1,
            ("ana@example.org", "glute-accelerator/2"): 1,
        }
    )
    stats = call(sink.url, "GET", "/_sink/stats", key=None)[2]
    assert stats["duplicates"] == 1 and stats["personalizations"] == 4


def test_without_recording_only_counts_are_kept() -> None:
    with SendGridSink(record=False) as sink:
        send(sink, "ana@example.org")
        assert sink.accepted_recipients() == [] and sink.stats()["personalizations"] == 1


# -- the key and its scopes ------------------------------------------------------------------


def test_scopes_list_mail_send_for_a_valid_key(sink: SendGridSink) -> None:
    status, _, body = call(sink.url, "GET", "/v3/scopes")
    assert status == 200 and "mail.send" in body["scopes"]
    status, _, body = call(sink.url, "GET", "/v3/scopes", key=None)
    assert status == 401 and body["errors"][0]["message"]


def test_a_revoked_key_gets_401_everywhere(sink: SendGridSink) -> None:
    sink.revoke_key()
    assert call(sink.url, "GET", "/v3/scopes")[0] == 401
    status, _, body = send(sink)
    assert status == 401 and "revoked" in body["errors"][0]["message"]
    sink.revoke_key(False)
    assert send(sink)[0] == 202
    assert sink.stats()["unauthorized"] == 2


def test_a_key_without_mail_send_is_forbidden_to_send(sink: SendGridSink) -> None:
    sink.set_scopes(["alerts.read", "user.profile.read"])
    assert call(sink.url, "GET", "/v3/scopes")[2] == {
        "scopes": ["alerts.read", "user.profile.read"]
    }
    status, _, body = send(sink)
    assert status == 403 and body["errors"][0]["message"] == "access forbidden"
    sink.clear()
    assert send(sink)[0] == 202 and sink.stats()["forbidden"] == 1
