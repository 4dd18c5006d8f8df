"""A local stand-in for SendGrid's v3 Mail Send endpoint, for tests and benchmarks.

``POST /v3/mail/send`` is checked like SendGrid would: a Bearer key (else 401), a JSON body valid
against the request schema of the official OpenAPI file (``tsg_mail_v3.json``, $refs resolved,
loaded once), and the rules the schema leaves out (deliverability.md): at most 1000
personalizations and 1000 recipients, each address once per request, substitutions and custom_args
at most 10,000 bytes per personalization with string values, at most 10 categories of at most 255
characters and no email address in them, a from address, a subject for every personalization and
non-empty content. A violation answers 400 with SendGrid's error shape; success answers 202 with an
``X-Message-Id`` (200 in sandbox mode). Faults can be scripted (:meth:`SendGridSink.script`,
:meth:`SendGridSink.script_delay`). ``GET /_sink/stats`` reports counts, for benchmarks.

Standalone: ``python tests/fakes/sendgrid_sink.py --port 0 [--no-validate]`` prints its base URL as
the first line of stdout and serves until killed. No pytest in here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SPEC_ENV = "DRIP_SENDGRID_SPEC"
# Vendored (sendgrid/SOURCE.md says from where): the repository needs nothing outside itself.
VENDORED_SPEC = Path(__file__).resolve().parent / "sendgrid" / "tsg_mail_v3.json"
SEND_PATH = "/v3/mail/send"
MAX_BODY = 30 * 1024 * 1024  # SendGrid's limit on the whole request
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_ARGS_BYTES = 10_000
MAX_CATEGORIES = 10
EMAIL_IN_TEXT = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
UNAUTHORIZED = "The provided authorization grant is invalid, expired, or revoked"
DUPLICATE = "Each email address in the personalization block should be unique within a request"
NO_CONTENT = "Unless a valid template_id is provided, the content parameter is required."


@dataclass(frozen=True)
class Violation:
    """One reason a request was refused, in SendGrid's terms."""

    message: str
    field: str | None = None

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def spec_path() -> Path:
    """The OpenAPI file: ``$DRIP_SENDGRID_SPEC`` if set, else the copy vendored beside this file.

    Missing -> FileNotFoundError: a sink that silently skipped validation would pass anything.
    """
    override = os.environ.get(SPEC_ENV)
    path = Path(override) if override else VENDORED_SPEC
    if not path.is_file():
        origin = f"{SPEC_ENV}={override}" if override else "the vendored spec"
        raise FileNotFoundError(f"{origin}: no such file {path}; set {SPEC_ENV}")
    return path


@lru_cache(maxsize=1)
def mail_send_validator() -> Any:
    """A jsonschema validator for the Mail Send request body, built once per process."""
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    spec = json.loads(spec_path().read_text(encoding="utf-8"))
    base = "urn:drip:sendgrid-openapi"
    registry: Registry[Any] = Registry().with_resource(base, DRAFT202012.create_resource(spec))
    request_body = spec["paths"][SEND_PATH]["post"]["requestBody"]
    pointer = request_body.get("$ref", "#/paths/~1v3~1mail~1send/post/requestBody")
    schema = {"$ref": f"{base}{pointer}/content/application~1json/schema"}
    return Draft202012Validator(
        schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def schema_violations(body: Any, limit: int = 20) -> list[Violation]:
    found: list[Violation] = []
    for error in mail_send_validator().iter_errors(body):
        field = ".".join(str(p) for p in error.absolute_path) or None
        found.append(Violation(error.message[:300], field))
        if len(found) >= limit:
            break
    return found


def _size(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _string_map(value: Any, field: str, out: list[Violation]) -> None:
    if not isinstance(value, dict):
        out.append(Violation("must be an object", field))
        return
    if any(not isinstance(v, str) for v in value.values()):
        out.append(Violation("values must be strings", field))
    if _size(value) > MAX_ARGS_BYTES:
        out.append(Violation(f"may not exceed {MAX_ARGS_BYTES} bytes", field))


def _addresses(p: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for kind in ("to", "cc", "bcc"):
        boxes = p.get(kind) or []
        for box in boxes if isinstance(boxes, list) else []:
            yield kind, box.get("email") if isinstance(box, dict) else None


def rule_violations(body: Any) -> list[Violation]:
    """SendGrid's rules that the schema does not express."""
    if not isinstance(body, dict):
        return [Violation("The request body must be a JSON object")]
    out: list[Violation] = []
    ps = body.get("personalizations")
    if not isinstance(ps, list) or not ps:
        out.append(Violation("The personalizations field is required", "personalizations"))
        ps = []
    if len(ps) > MAX_PERSONALIZATIONS:
        out.append(Violation("personalizations may not exceed 1000 items", "personalizations"))
    top_subject = isinstance(body.get("subject"), str) and body["subject"] != ""
    seen: set[str] = set()
    count = 0
    for i, p in enumerate(ps):
        field = f"personalizations.{i}"
        if not isinstance(p, dict):
            out.append(Violation("must be an object", field))
            continue
        if not p.get("to"):
            out.append(Violation("The to array is required for all personalization objects", field))
        for kind, email in _addresses(p):
            count += 1
            if not isinstance(email, str) or "@" not in email:
                out.append(Violation("Does not contain a valid address.", f"{field}.{kind}"))
            elif email.lower() in seen:
                out.append(Violation(f"{DUPLICATE}: {email}", f"{field}.{kind}"))
            else:
                seen.add(email.lower())
        for key in ("substitutions", "custom_args"):
            if key in p:
                _string_map(p[key], f"{field}.{key}", out)
        if not top_subject and not (isinstance(p.get("subject"), str) and p["subject"]):
            out.append(Violation("The subject is required", f"{field}.subject"))
    if count > MAX_RECIPIENTS:
        out.append(Violation(f"{count} recipients: at most 1000 per request", "personalizations"))
    sender = body.get("from")
    if not isinstance(sender, dict) or not sender.get("email"):
        out.append(Violation("The from object must be provided for every email send.", "from"))
    categories = body.get("categories", [])
    if not isinstance(categories, list) or len(categories) > MAX_CATEGORIES:
        out.append(Violation("at most 10 categories", "categories"))
    else:
        for c in categories:
            if not isinstance(c, str) or len(c) > 255:
                out.append(Violation("categories are strings of at most 255", "categories"))
            elif EMAIL_IN_TEXT.search(c):
                out.append(Violation("categories must not contain personal data", "categories"))
    content = body.get("content")
    if not body.get("template_id"):
        if not isinstance(content, list) or not content:
            out.append(Violation(NO_CONTENT, "content"))
        elif any(not isinstance(c, dict) or not c.get("value") for c in content):
            out.append(Violation("content values must be non-empty strings", "content"))
        elif any(c.get("type") == "text/plain" for c in content[1:]):
            out.append(Violation("The text/plain content type must be first", "content"))
    return out


@dataclass
class _Fault:
    status: int
    headers: dict[str, str]
    body: bytes


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close, so a stopped sink leaves nothing running behind it.
    daemon_threads = False
    sink: SendGridSink

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its timeout) makes the late answer fail: expected, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection, closed after the answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and benchmarks read results, not logs

    def do_GET(self) -> None:
        if self.path != "/_sink/stats":
            self._answer(404, {"errors": [{"message": "Not Found", "field": None, "help": None}]})
            return
        self._answer(200, self.server.sink.stats())

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if 0 < length <= MAX_BODY else b""
        status, headers, body = self.server.sink.handle(self.path, dict(self.headers), raw, length)
        self._answer(status, body, headers)

    def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode() if body else b""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _error(status: int, violations: list[Violation]) -> tuple[int, dict[str, str], Any]:
    errors = [{"message": v.message, "field": v.field, "help": None} for v in violations]
    return status, {}, {"errors": errors}


class SendGridSink:
    """The fake endpoint. ``api_key`` None accepts any non-empty Bearer key. Thread-safe."""

    def __init__(
        self, validate: bool = True, *, api_key: str | None = None, record: bool = True
    ) -> None:
        self.validate = validate
        self.api_key = api_key
        self.record = record  # False keeps no bodies (long benchmarks), counts only
        self._lock = threading.Lock()
        self._wake = threading.Event()  # ends scripted delays early when the sink stops
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._faults: list[_Fault | None] = []  # None: answer that request normally
        self._delays: list[float] = []
        self._requests: list[dict[str, Any]] = []
        self._message_ids: list[str] = []
        self._violations: list[Violation] = []
        self._attempts = 0
        self._personalizations = 0
        if validate:
            mail_send_validator()  # load the spec now: a missing file fails here, loudly

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> SendGridSink:
        if self._server is not None:
            raise RuntimeError("sink already started")
        self._wake.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.sink = self
        self._server = server
        # A short poll interval keeps stop() quick (shutdown waits for the next poll).
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="sendgrid-sink"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._wake.set()
        server.shutdown()
        thread.join()
        server.server_close()  # joins handler threads
        self._server = self._thread = None

    def __enter__(self) -> SendGridSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("sink not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- scripting and inspection ----------------------------------------------------------
    def script(
        self,
        status: int,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
        after: int = 0,
    ) -> None:
        """Answer ``times`` POSTs with ``status`` (before any check), after letting ``after``
        POSTs through normally; scripts queue behind earlier ones. ``body`` may be bytes, a
        JSON-able object, or None for SendGrid's error shape."""
        if body is None and status >= 400:
            body = {"errors": [{"message": f"scripted {status}", "field": None, "help": None}]}
        data = body if isinstance(body, bytes) else json.dumps(body).encode() if body else b""
        with self._lock:
            self._faults += [None] * after
            self._faults += [_Fault(status, dict(headers or {}), data) for _ in range(times)]

    def script_delay(self, seconds: float, times: int = 1) -> None:
        """Hold the next ``times`` POSTs for ``seconds`` before answering (client timeouts)."""
        with self._lock:
            self._delays += [seconds] * times

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Accepted bodies, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def message_ids(self) -> list[str]:
        with self._lock:
            return list(self._message_ids)

    @property
    def violations(self) -> list[Violation]:
        with self._lock:
            return list(self._violations)

    @property
    def attempts(self) -> int:
        """Every POST received, scripted, refused or accepted."""
        with self._lock:
            return self._attempts

    def personalization_count(self) -> int:
        with self._lock:
            return self._personalizations

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "attempts": self._attempts,
                "accepted": len(self._message_ids),
                "personalizations": self._personalizations,
                "violations": len(self._violations),
            }

    # -- the endpoint ------------------------------------------------------------------------
    def handle(
        self, path: str, headers: dict[str, str], raw: bytes, length: int
    ) -> tuple[int, dict[str, str], Any]:
        """Status, headers and body for one POST; called from handler threads."""
        with self._lock:
            self._attempts += 1
            delay = self._delays.pop(0) if self._delays else 0.0
            fault = self._faults.pop(0) if self._faults else None
        if delay:
            self._wake.wait(delay)
        if fault is not None:
            return fault.status, fault.headers, fault.body
        if path.split("?")[0] != SEND_PATH:
            return _error(404, [Violation("Not Found")])
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        key = auth[7:].strip() if auth.startswith("Bearer ") else ""
        if not key or (self.api_key is not None and key != self.api_key):
            return _error(401, [Violation(UNAUTHORIZED)])
        if length > MAX_BODY:
            return _error(413, [Violation("Payload Too Large")])
        try:
            body = json.loads(raw)
        except ValueError:
            return self._refuse([Violation("Bad Request: body is not JSON")])
        found = (schema_violations(body) if self.validate else []) + rule_violations(body)
        if found:
            return self._refuse(found)
        message_id = secrets.token_urlsafe(16)  # 22 characters, like SendGrid's
        with self._lock:
            self._message_ids.append(message_id)
            self._personalizations += len(body["personalizations"])
            if self.record:
                self._requests.append(body)
        sandbox = body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable") is True
        return (200 if sandbox else 202), {"X-Message-Id": message_id}, b""

    def _refuse(self, found: list[Violation]) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            self._violations += found
        return _error(400, found)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--no-validate", action="store_true", help="skip the jsonschema step")
    parser.add_argument("--api-key", default=None, help="accept only this key")
    parser.add_argument("--record", action="store_true", help="keep accepted bodies in memory")
    args = parser.parse_args(argv)
    sink = SendGridSink(validate=not args.no_validate, api_key=args.api_key, record=args.record)
    server = _Server(("127.0.0.1", args.port), _Handler)
    server.sink = sink
    host, port = server.server_address[:2]
    print(f"http://{host!s}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
