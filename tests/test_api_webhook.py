"""POST /api/v1/subscribers: the JSON webhook, its authentication and its answers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from drip.esp.memory import MemoryBackend
from drip.models import Consent, Subscriber, SubscriberStatus
from drip.runtime import Runtime
from drip.settings import Settings
from drip.web.auth import sign
from tests.web_support import (
    API_TOKEN,
    WEBHOOK_SECRET,
    client_for,
    count,
    subscriber,
    web_settings,
)

URL = "/api/v1/subscribers"
BODY = {"email": "Ana@Example.com", "first_name": "Ana", "tags": ["zapier"], "source": "quiz"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return web_settings(tmp_path)


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


def post_bearer(client: TestClient, body: Any, token: str = API_TOKEN) -> Any:
    return client.post(
        URL,
        content=_json(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


def post_signed(
    client: TestClient, raw: bytes, signature: str, timestamp: str | None = None
) -> Any:
    headers = {"X-Drip-Signature": signature, "Content-Type": "application/json"}
    if timestamp is not None:
        headers["X-Drip-Timestamp"] = timestamp
    return client.post(URL, content=raw, headers=headers)


def test_a_bearer_token_signs_someone_up_with_202(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    answer = post_bearer(client_for(rt), {**BODY, "ip": "198.51.100.4", "user_agent": "Safari"})
    assert answer.status_code == 202
    assert answer.json()["status"] == "accepted"
    with rt.sessions() as session:
        sub = subscriber(session, "ana@example.com")
        assert sub.status == SubscriberStatus.PENDING
        assert [t.name for t in sub.tags] == ["zapier"]
        consent = session.scalars(select(Consent)).one()
        assert (consent.source, consent.ip, consent.user_agent) == (
            "api:quiz",
            "198.51.100.4",
            "Safari",
        )
        assert consent.text == rt.settings.consent_text
    assert len(memory_backend.sent_to("ana@example.com")) == 1


def test_the_answer_is_the_same_for_new_repeated_active_and_unknown_states(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    client = client_for(rt)
    answers = [post_bearer(client, BODY) for _ in range(2)]
    with rt.transaction() as session:
        subscriber(session, "ana@example.com").status = SubscriberStatus.ACTIVE
    answers.append(post_bearer(client, BODY))
    assert {(a.status_code, a.text) for a in answers} == {(answers[0].status_code, answers[0].text)}
    with rt.sessions() as session:
        assert count(session, Subscriber) == 1
    assert len(memory_backend.sent_to("ana@example.com")) == 1


def test_a_consent_text_sent_by_the_integration_is_recorded(rt: Runtime) -> None:
    post_bearer(client_for(rt), {**BODY, "consent_text": "Send me the quiz results"})
    with rt.sessions() as session:
        assert session.scalars(select(Consent.text)).one() == "Send me the quiz results"


def test_a_comma_separated_tag_string_works_too(rt: Runtime) -> None:
    post_bearer(client_for(rt), {**BODY, "tags": "a, b"})
    with rt.sessions() as session:
        assert sorted(t.name for t in subscriber(session, "ana@example.com").tags) == ["a", "b"]


def test_a_good_signature_of_the_raw_body_is_accepted(rt: Runtime) -> None:
    raw = _json(BODY)
    answer = post_signed(client_for(rt), raw, sign(WEBHOOK_SECRET, raw))
    assert answer.status_code == 202


def test_a_good_timestamped_signature_inside_the_window_is_accepted(rt: Runtime) -> None:
    raw = _json(BODY)
    stamp = str(int(rt.clock().timestamp()) - 200)
    answer = post_signed(client_for(rt), raw, sign(WEBHOOK_SECRET, raw, stamp), stamp)
    assert answer.status_code == 202


def _refused(answer: Any) -> None:
    assert answer.status_code == 401
    assert answer.json()["error"]["field"] == "authorization"
    assert answer.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Bearer {API_TOKEN}x"},
        {"Authorization": f"Bearer {API_TOKEN[:-1]}"},
        {"Authorization": f"Basic {API_TOKEN}"},
        {"Authorization": "Bearer "},
    ],
)
def test_missing_or_wrong_tokens_get_401_and_nothing_is_stored(
    rt: Runtime, headers: dict[str, str]
) -> None:
    client = client_for(rt)
    answer = client.post(
        URL, content=_json(BODY), headers={"Content-Type": "application/json", **headers}
    )
    _refused(answer)
    with rt.sessions() as session:
        assert count(session, Subscriber) == 0


def test_bad_signatures_get_401(rt: Runtime) -> None:
    client = client_for(rt)
    raw = _json(BODY)
    good = sign(WEBHOOK_SECRET, raw)
    tampered = _json({**BODY, "email": "mallory@example.com"})
    _refused(post_signed(client, tampered, good))  # body changed after signing
    _refused(post_signed(client, raw, sign("another-secret-0123456789", raw)))
    _refused(post_signed(client, raw, good.removeprefix("sha256=")))
    _refused(post_signed(client, raw, "sha256=" + "0" * 64))
    _refused(post_signed(client, raw, ""))
    # Re-serialized JSON is not the raw body that was signed.
    _refused(post_signed(client, json.dumps(BODY, indent=2).encode(), good))
    with rt.sessions() as session:
        assert count(session, Subscriber) == 0


def test_replayed_or_mismatched_timestamps_get_401(rt: Runtime) -> None:
    client = client_for(rt)
    raw = _json(BODY)
    now = int(rt.clock().timestamp())
    old = str(now - 301)
    _refused(post_signed(client, raw, sign(WEBHOOK_SECRET, raw, old), old))  # replay
    future = str(now + 301)
    _refused(post_signed(client, raw, sign(WEBHOOK_SECRET, raw, future), future))
    fresh = str(now)
    # A body-only signature sent with a timestamp, and a timestamp swapped after signing.
    _refused(post_signed(client, raw, sign(WEBHOOK_SECRET, raw), fresh))
    _refused(post_signed(client, raw, sign(WEBHOOK_SECRET, raw, fresh), str(now - 1)))
    _refused(post_signed(client, raw, sign(WEBHOOK_SECRET, raw, "abc"), "abc"))


def test_a_required_timestamp_refuses_body_only_signatures(tmp_path: Path, rt: Runtime) -> None:
    settings = web_settings(tmp_path, webhook_require_timestamp=True)
    strict = Runtime.build(settings, engine=rt.engine, backend=rt.backend, clock=rt.clock)
    raw = _json(BODY)
    client = client_for(strict)
    _refused(post_signed(client, raw, sign(WEBHOOK_SECRET, raw)))
    stamp = str(int(rt.clock().timestamp()))
    assert post_signed(client, raw, sign(WEBHOOK_SECRET, raw, stamp), stamp).status_code == 202


def test_without_a_configured_secret_signatures_are_refused(tmp_path: Path, rt: Runtime) -> None:
    settings = web_settings(tmp_path, webhook_secret=None, api_tokens="")
    bare = Runtime.build(settings, engine=rt.engine, backend=rt.backend, clock=rt.clock)
    raw = _json(BODY)
    client = client_for(bare)
    _refused(post_signed(client, raw, sign(WEBHOOK_SECRET, raw)))
    _refused(post_bearer(client, BODY))


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", ""])
def test_a_wrong_content_type_gets_415(rt: Runtime, content_type: str) -> None:
    answer = client_for(rt).post(
        URL,
        content=_json(BODY),
        headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": content_type},
    )
    assert answer.status_code == 415
    assert answer.json()["error"]["field"] == "content-type"


@pytest.mark.parametrize(
    ("raw", "status", "field"),
    [
        (b"{not json", 400, "body"),
        (b"\xff\xfe", 400, "body"),
        (b'["ana@example.com"]', 400, "body"),
        (b"{}", 422, "email"),
        (b'{"email": 42}', 422, "email"),
        (b'{"email": "nope"}', 422, "email"),
        (b'{"email": "a@example.com\\r\\nBcc: x@example.org"}', 422, "email"),
        (b'{"email": "a@example.com", "first_name": "Ana\\nBcc: x"}', 422, "first_name"),
        (b'{"email": "a@example.com", "first_name": "' + b"A" * 101 + b'"}', 422, "first_name"),
        (b'{"email": "a@example.com", "tags": [1]}', 422, "tags"),
        (b'{"email": "a@example.com", "tags": {"a": 1}}', 422, "tags"),
        (b'{"email": "a@example.com", "ip": "not-an-ip"}', 422, "ip"),
        (b'{"email": "a@example.com", "source": "<b>"}', 422, "source"),
    ],
)
def test_bad_bodies_get_a_json_error_naming_the_field(
    rt: Runtime, raw: bytes, status: int, field: str
) -> None:
    answer = client_for(rt).post(
        URL,
        content=raw,
        headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
    )
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["field"] == field or error["field"].startswith(field)
    assert error["message"]
    assert error["request_id"] == answer.headers["x-request-id"]
    with rt.sessions() as session:
        assert count(session, Subscriber) == 0


def test_unknown_fields_are_ignored(rt: Runtime) -> None:
    assert post_bearer(client_for(rt), {**BODY, "zap_id": 7}).status_code == 202


def test_the_webhook_is_in_the_openapi_document(rt: Runtime) -> None:
    client = client_for(rt)
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/api/v1/subscribers"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert "email" in schema["properties"] and schema["required"] == ["email"]
    assert {"202", "401", "415", "422", "429"} <= set(operation["responses"])
    assert "/subscribe" not in spec["paths"]  # the HTML routes are not part of the API
    assert client.get("/docs").status_code == 200


def test_the_documented_openssl_signature_is_accepted(rt: Runtime) -> None:
    """docs/subscribers.md's shell line computes the signature this server checks."""
    docs = (Path(__file__).resolve().parent.parent / "docs" / "subscribers.md").read_text()
    [line] = [x for x in docs.splitlines() if x.startswith("SIG=")]
    body = '{"email": "ana@example.com", "first_name": "Ana", "tags": ["quiz"]}'
    stamp = str(int(rt.clock().timestamp()))
    env = {
        "BODY": body,
        "TS": stamp,
        "DRIP_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        ["bash", "-c", f'{line}\nprintf "%s" "$SIG"'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    answer = post_signed(client_for(rt), body.encode(), f"sha256={result.stdout}", stamp)
    assert answer.status_code == 202, answer.text
