"""Errors, health, logs and headers: nothing internal ever reaches a visitor."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from drip.runtime import Runtime
from drip.settings import Settings
from drip.web.app import create_app
from drip.web.logs import JsonFormatter, configure_logging, request_id_var
from tests.helpers import add_subscriber
from tests.web_support import API_TOKEN, client_for, web_settings, worker_inline

SECRET_DETAIL = "password=hunter2 at /srv/drip/secret.py line 42"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return web_settings(tmp_path)


def _with_broken_routes(rt: Runtime) -> TestClient:
    app: FastAPI = create_app(rt, enqueue=worker_inline(rt))

    def boom() -> None:
        raise RuntimeError(SECRET_DETAIL)

    app.add_api_route("/boom", boom)
    app.add_api_route("/api/v1/boom", boom)
    return TestClient(app)


def test_a_crash_shows_a_friendly_500_page_with_a_request_id_and_no_trace(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    answer = _with_broken_routes(rt).get("/boom")
    assert answer.status_code == 500
    assert answer.headers["content-type"].startswith("text/html")
    request_id = answer.headers["x-request-id"]
    assert f"Reference: {request_id}" in answer.text
    for leak in ("Traceback", "RuntimeError", "hunter2", "secret.py"):
        assert leak not in answer.text
    assert "hunter2" in caplog.text  # the details go to the log, for us
    assert any(r.exc_info for r in caplog.records if r.name == "drip.web")


def test_a_crash_under_the_api_answers_json_with_the_request_id(rt: Runtime) -> None:
    answer = _with_broken_routes(rt).get("/api/v1/boom", headers={"X-Request-ID": "abc12345-x"})
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert error["request_id"] == "abc12345-x" == answer.headers["x-request-id"]
    assert "hunter2" not in answer.text and "Traceback" not in answer.text


def test_a_database_failure_mid_request_is_a_500_page_too(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    def down(*_: object, **__: object) -> None:
        raise OperationalError("select", {}, Exception("connection refused to 10.0.0.5"))

    monkeypatch.setattr("drip.web.pages.signup_and_confirm", down)
    answer = client_for(rt).post("/subscribe", data={"email": "ana@example.com"})
    assert answer.status_code == 500
    assert "10.0.0.5" not in answer.text and "OperationalError" not in answer.text


def test_unknown_pages_and_methods_get_friendly_answers(rt: Runtime) -> None:
    client = client_for(rt)
    page = client.get("/no/such/page")
    assert page.status_code == 404 and "Page not found" in page.text
    api = client.get("/api/v1/nothing")
    assert api.status_code == 404 and api.json()["error"]["message"]
    wrong = client.put("/subscribe")
    assert wrong.status_code == 405 and "<html" in wrong.text


def test_an_incoming_request_id_is_kept_only_if_it_is_sane(rt: Runtime) -> None:
    client = client_for(rt)
    assert (
        client.get("/healthz", headers={"X-Request-ID": "req-12345678"}).headers["x-request-id"]
        == "req-12345678"
    )
    evil = client.get("/healthz", headers={"X-Request-ID": "x<script>alert(1)</script>"})
    assert evil.headers["x-request-id"] != "x<script>alert(1)</script>"
    assert len(evil.headers["x-request-id"]) == 32


def test_healthz_checks_the_database(rt: Runtime, tmp_path: Path) -> None:
    ok = client_for(rt).get("/healthz")
    assert (ok.status_code, ok.json()) == (200, {"status": "ok", "database": "ok"})
    broken_engine = create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'nope.sqlite3'}")
    broken = Runtime(
        settings=rt.settings,
        engine=broken_engine,
        library=rt.library,
        renderer=rt.renderer,
        backend=rt.backend,
        clock=rt.clock,
    )
    down = client_for(broken).get("/healthz")
    assert down.status_code == 503
    assert down.json() == {"status": "unavailable", "database": "unreachable"}
    broken_engine.dispose()


def test_pages_carry_safe_headers(rt: Runtime) -> None:
    page = client_for(rt).get("/signup")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert 'name="viewport"' in page.text and '<html lang="en">' in page.text


def test_requests_are_logged_as_json_without_tokens_in_the_path(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    add_subscriber(rt, "ana@example.com")
    client = client_for(rt)
    caplog.set_level(logging.INFO, logger="drip.web")
    client.get("/unsubscribe/SECRET-TOKEN-VALUE")
    client.post(
        "/api/v1/subscribers",
        json={"email": "zed@example.com"},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    records = [r for r in caplog.records if r.getMessage() == "request"]
    assert [r.__dict__["route"] for r in records] == [
        "/unsubscribe/{token}",
        "/api/v1/subscribers",
    ]
    assert [r.__dict__["status"] for r in records] == [400, 202]
    formatter = JsonFormatter()
    for record in records:
        line = json.loads(formatter.format(record))
        assert line["msg"] == "request" and line["method"] in ("GET", "POST")
        assert "duration_ms" in line
    assert "SECRET-TOKEN-VALUE" not in caplog.text
    assert "zed@example.com" not in caplog.text


def test_the_json_formatter_writes_one_object_per_line_with_request_id() -> None:
    formatter = JsonFormatter()
    token = request_id_var.set("req-abcdef12")
    try:
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            record = logging.LogRecord(
                "drip.x", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info()
            )
        record.__dict__["route"] = "/x"
        line = formatter.format(record)
    finally:
        request_id_var.reset(token)
    assert "\n" not in line
    data = json.loads(line)
    assert (data["level"], data["logger"], data["msg"], data["request_id"], data["route"]) == (
        "error",
        "drip.x",
        "failed x",
        "req-abcdef12",
        "/x",
    )
    assert "ValueError" in data["exc"]


def test_configure_logging_routes_uvicorn_through_the_json_handler() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("WARNING")
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert logging.getLogger("uvicorn.error").propagate
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_the_serve_command_is_registered() -> None:
    from click.testing import CliRunner

    from drip.cli.main import main

    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0 and "--port" in result.output and "--host" in result.output


def test_too_large_bodies_get_413_as_a_page_or_as_json(rt: Runtime) -> None:
    client = client_for(rt)
    big = b"x" * (rt.settings.max_body_bytes + 1)
    form = client.post(
        "/subscribe", content=big, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert form.status_code == 413 and "<html" in form.text
    api = client.post(
        "/api/v1/subscribers",
        content=big,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"},
    )
    assert api.status_code == 413 and api.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams
        for _ in range(100):
            yield b"email=" + b"a" * 1000

    streamed = client.post(
        "/subscribe",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert streamed.status_code == 413


def test_provider_webhooks_get_their_own_body_limit(rt: Runtime) -> None:
    app: FastAPI = create_app(rt, enqueue=worker_inline(rt))

    async def sink(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    # Under the real webhook's path prefix (the real route answers 503 without a public key).
    app.add_api_route("/webhooks/sendgrid/probe", sink, methods=["POST"])
    body = b"[" + b" " * 200_000 + b"]"  # SendGrid batches run to ~768 KB
    answer = TestClient(app).post("/webhooks/sendgrid/probe", content=body)
    assert answer.status_code == 200 and answer.json() == {"bytes": len(body)}
