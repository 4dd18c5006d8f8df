"""A local stand-in for SendGrid's v3 API (Mail Send and Scopes) that misbehaves on request.

``POST /v3/mail/send`` is checked like SendGrid would: a Bearer key (else 401), a JSON body valid
against the request schema of the official OpenAPI file (``sendgrid/tsg_mail_v3.json`` beside this
file, $refs resolved, loaded once), and the rules the schema leaves out (deliverability.md): at most
1000 personalizations and 1000 recipients, each address once per request, substitutions and
custom_args at most 10,000 bytes per personalization with string values, at most 10 categories of
at most 255 characters and no email address in them, a from address, a subject for every
personalization and non-empty content. A violation answers 400 with SendGrid's error shape;
success answers 202 with an ``X-Message-Id`` (200 in sandbox mode). ``GET /v3/scopes`` lists the
key's scopes (401 for a bad key). ``GET /_sink/stats`` reports counts, for benchmarks.

Faults, in the spirit of Toxiproxy's toxics, each for the next ``times`` requests (after letting
``after`` through) or, with ``times=None``, standing until :meth:`SendGridSink.clear`:

- :meth:`~SendGridSink.script` / :meth:`~SendGridSink.storm`: a canned status (429 with or
  without ``Retry-After`` / ``X-RateLimit-Reset``, 5xx, anything), before any check;
- :meth:`~SendGridSink.late`: accept, answer after a while (the client may have given up);
- :meth:`~SendGridSink.trickle`: accept, send the answer one byte at a time;
- :meth:`~SendGridSink.hang`: read the request, never answer;
- :meth:`~SendGridSink.reset`: read the request (accepting it or not), close without an answer;
- :meth:`~SendGridSink.rate_limit`: a token bucket over personalizations, 429 beyond it;
- :meth:`~SendGridSink.revoke_key` / :meth:`~SendGridSink.set_scopes`: a bad key.

:meth:`~SendGridSink.accepted_recipients` lists every accepted (address, delivery id, message
key), so fault tests can count duplicates, losses and unknowns.

Standalone: ``python tests/fakes/sendgrid_sink.py --port 0 [--no-validate] [--rate-limit N]``
prints its base URL as the first line of stdout and serves until killed. No pytest in here.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import secrets
import select
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, NamedTuple

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


# -- faults ------------------------------------------------------------------------------------

SCOPES_PATH = "/v3/scopes"
STATS_PATH = "/_sink/stats"
Endpoint = Literal["send", "scopes"]  # what a fault targets: POST /v3/mail/send, GET /v3/scopes
SEND: Endpoint = "send"
SCOPES: Endpoint = "scopes"
MAIL_SEND_SCOPE = "mail.send"
DEFAULT_SCOPES = ("alerts.read", "mail.batch.read", "mail.send", "user.profile.read")
FORBIDDEN = "access forbidden"
TOO_MANY = "too many requests"
HANG_POLL = 0.05  # how often a hanging answer looks whether its client left or the sink stops

Answer = tuple[int, dict[str, str], Any]  # status, headers, body (bytes, JSON-able or None)
FaultKind = Literal["answer", "late", "trickle", "hang", "reset"]
_FAULT_COUNTERS = {"late": "late", "trickle": "trickled", "hang": "hung", "reset": "resets"}


@dataclass(frozen=True)
class _Fault:
    """What the sink does to one request instead of, or around, its normal answer.

    ``answer``: the canned ``status``/``headers``/``body``, before any check (``reset_in`` adds an
    ``X-RateLimit-Reset`` that many seconds after the moment of answering). ``late``: the normal
    answer after ``seconds``. ``trickle``: the normal answer one byte every ``seconds``. ``hang``:
    no answer until the client leaves or the sink stops. ``reset``: the connection closed with no
    answer (a TCP RST if ``rst``, else a plain close). ``accept``: the request goes through the
    normal checks first, so a valid one is accepted and counted; always so for late and trickle.
    """

    kind: FaultKind
    status: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0
    accept: bool = True
    rst: bool = False
    reset_in: float | None = None


class AcceptedRecipient(NamedTuple):
    """One ``to`` address of an accepted personalization, with its ``custom_args`` as sent."""

    email: str
    delivery_id: str | None
    message_key: str | None


class TokenBucket:
    """``per_second`` tokens a second, at most ``burst`` held (full at the start).

    A request needing more than ``burst`` passes when the bucket is full and leaves it in debt, so
    the long-run rate is ``per_second`` whatever the request size (else it could never pass).
    Not thread-safe: the sink holds its lock around it.
    """

    # Epoch seconds are large floats (their last bit is ~2e-7 s): that noise must not refuse a
    # request that fits exactly. A thousandth of a personalization is nothing.
    EPSILON = 1e-3

    def __init__(self, per_second: float, burst: float, now: float) -> None:
        if per_second <= 0 or burst <= 0:
            raise ValueError("per_second and burst must be positive")
        self.per_second = per_second
        self.burst = burst
        self.tokens = burst
        self._updated = now

    def take(self, count: int, now: float) -> float:
        """Take ``count`` tokens and return 0.0, or take none and return the seconds to wait."""
        self._refill(now)
        needed = min(count, self.burst)
        if self.tokens + self.EPSILON >= needed:
            self.tokens -= count
            return 0.0
        return (needed - self.tokens) / self.per_second

    def seconds_until_full(self, now: float) -> float:
        self._refill(now)
        return max(0.0, (self.burst - self.tokens) / self.per_second)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.per_second)
        self._updated = now


@dataclass
class _RateLimit:
    bucket: TokenBucket
    retry_headers: bool
    whole_seconds: bool


def _seconds_text(seconds: float) -> str:
    """A number of seconds as a header value: ``30``, ``0.25``."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:.3f}".rstrip("0")


def _json_bytes(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode() if body else b""


def _error(status: int, violations: list[Violation]) -> Answer:
    errors = [{"message": v.message, "field": v.field, "help": None} for v in violations]
    return status, {}, {"errors": errors}


def _bearer_key(headers: Mapping[str, str]) -> str:
    auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
    return auth[7:].strip() if auth.startswith("Bearer ") else ""


# -- the HTTP server -------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close, so a stopped sink leaves nothing running behind it.
    daemon_threads = False
    request_queue_size = 128  # many workers connecting at once (benchmarks)
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
        path = self.path.split("?")[0]
        if path == STATS_PATH:
            self.wfile.write(self._render((200, {}, self.server.sink.stats())))
        elif path == SCOPES_PATH:
            self._serve(SCOPES, b"", 0)
        else:
            self.wfile.write(self._render(_error(404, [Violation("Not Found")])))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if 0 < length <= MAX_BODY else b""
        self._serve(SEND, raw, length)

    def _serve(self, endpoint: Endpoint, raw: bytes, length: int) -> None:
        sink = self.server.sink
        fault = sink._take_fault(endpoint)
        answer = sink._respond(endpoint, fault, self.path, dict(self.headers), raw, length)
        if fault is not None and fault.kind == "hang":
            self._hold_until_client_leaves()
            return
        if fault is not None and fault.kind == "reset":
            self._drop_connection(rst=fault.rst)
            return
        if answer is None:
            return
        if fault is not None and fault.kind == "late" and sink._stopping_within(fault.seconds):
            return  # the sink is stopping: nobody waits for this answer any more
        data = self._render(answer)
        if fault is not None and fault.kind == "trickle":
            self._trickle(data, fault.seconds)
        else:
            self.wfile.write(data)

    def _render(self, answer: Answer) -> bytes:
        """The whole HTTP answer, status line and headers included, as bytes."""
        status, headers, body = answer
        data = _json_bytes(body)
        buffer = io.BytesIO()
        real, self.wfile = self.wfile, buffer  # the stdlib's header formatting, into a buffer
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
        finally:
            self.wfile = real
        return buffer.getvalue() + data

    def _trickle(self, data: bytes, interval: float) -> None:
        for i in range(len(data)):
            self.wfile.write(data[i : i + 1])
            if i + 1 < len(data) and self.server.sink._stopping_within(interval):
                return

    def _hold_until_client_leaves(self) -> None:
        """Answer nothing; return when the client closes the connection or the sink stops."""
        sink = self.server.sink
        while not sink._stopping_within(0):
            readable, _, _ = select.select([self.connection], [], [], HANG_POLL)
            try:
                if readable and not self.connection.recv(4096):
                    return  # the client gave up: no thread waits for nobody
            except OSError:
                return

    def _drop_connection(self, *, rst: bool) -> None:
        """Close without a word: returning does it (FIN); ``rst`` aborts with a TCP RST."""
        if rst:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # the socket's file holds it open; close() must really close
            self.connection.close()


# -- the sink --------------------------------------------------------------------------------


class SendGridSink:
    """The fake SendGrid. ``api_key`` None accepts any non-empty Bearer key. Thread-safe.

    ``record`` False keeps no bodies and no per-recipient accounting (long benchmarks): counts
    only. ``clock`` (epoch seconds) drives the rate limit and the ``X-RateLimit-Reset`` values;
    tests may inject a fake one. The waits of late, trickle and hang are real time.
    """

    def __init__(
        self,
        validate: bool = True,
        *,
        api_key: str | None = None,
        record: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.validate = validate
        self.api_key = api_key
        self.record = record
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()  # set when the sink stops: every scripted wait ends
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._queued: dict[Endpoint, list[_Fault | None]] = {SEND: [], SCOPES: []}
        self._standing: dict[Endpoint, _Fault | None] = {SEND: None, SCOPES: None}
        self._delays: list[float] = []
        self._rate_limit: _RateLimit | None = None
        self._revoked = False
        self._scopes: tuple[str, ...] = DEFAULT_SCOPES
        self._requests: list[dict[str, Any]] = []
        self._message_ids: list[str] = []
        self._violations: list[Violation] = []
        self._accepted: list[AcceptedRecipient] = []
        self._times_accepted: Counter[tuple[str, str | None]] = Counter()
        self._counts: Counter[str] = Counter()
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
        """Stop serving; quick even with requests hanging (their waits end at once)."""
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

    # -- faults ------------------------------------------------------------------------------
    def script(
        self,
        status: int,
        *,
        times: int | None = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
        after: int = 0,
        endpoint: Endpoint = SEND,
    ) -> None:
        """Answer ``times`` requests with ``status`` (before any check), after letting ``after``
        through normally; scripts queue behind earlier ones. ``body`` may be bytes, a JSON-able
        object, or None for SendGrid's error shape. ``times=None``: a standing fault."""
        if body is None and status >= 400:
            body = {"errors": [{"message": f"scripted {status}", "field": None, "help": None}]}
        fault = _Fault("answer", status, dict(headers or {}), _json_bytes(body))
        self._add(fault, times=times, after=after, endpoint=endpoint)

    def script_delay(self, seconds: float, times: int = 1) -> None:
        """Hold the next ``times`` POSTs for ``seconds`` before handling them at all (so a
        client that gives up meanwhile was not accepted: compare :meth:`late`)."""
        with self._lock:
            self._delays += [seconds] * times

    def storm(
        self,
        status: int = 429,
        *,
        retry_after: float | str | None = None,
        reset_at: float | None = None,
        reset_in: float | None = None,
        times: int | None = 1,
        after: int = 0,
        endpoint: Endpoint = SEND,
    ) -> None:
        """Answer 429 or 5xx, in SendGrid's error shape, before any check.

        ``retry_after``: a ``Retry-After`` header, seconds or an HTTP-date string.
        ``reset_at``: an ``X-RateLimit-Reset`` header, epoch seconds as given. ``reset_in``: the
        same, that many seconds after the moment of answering (by the sink's clock). None of
        them: no hint at all."""
        if status != 429 and not 500 <= status <= 599:
            raise ValueError("a storm is 429 or 5xx; script() answers anything else")
        headers: dict[str, str] = {}
        if retry_after is not None:
            text = retry_after if isinstance(retry_after, str) else _seconds_text(retry_after)
            headers["Retry-After"] = text
        if reset_at is not None:
            headers["X-RateLimit-Reset"] = str(int(reset_at))
        message = TOO_MANY if status == 429 else HTTPStatus(status).phrase.lower()
        body = _json_bytes({"errors": [{"field": None, "message": message}]})
        fault = _Fault("answer", status, headers, body, reset_in=reset_in)
        self._add(fault, times=times, after=after, endpoint=endpoint)

    def late(
        self, seconds: float, *, times: int | None = 1, after: int = 0, endpoint: Endpoint = SEND
    ) -> None:
        """Handle the request at once (a valid one is accepted and counted), answer after
        ``seconds``: a client with a shorter deadline gives up on an accepted email."""
        self._add(_Fault("late", seconds=seconds), times=times, after=after, endpoint=endpoint)

    def trickle(
        self, interval: float, *, times: int | None = 1, after: int = 0, endpoint: Endpoint = SEND
    ) -> None:
        """Handle the request at once, then send the whole answer (status line and headers
        included) one byte every ``interval`` seconds."""
        fault = _Fault("trickle", seconds=interval)
        self._add(fault, times=times, after=after, endpoint=endpoint)

    def hang(
        self,
        *,
        accept: bool = False,
        times: int | None = 1,
        after: int = 0,
        endpoint: Endpoint = SEND,
    ) -> None:
        """Read the request and never answer (until the client leaves or the sink stops).
        ``accept``: handle it first, so a valid one is accepted although never answered."""
        self._add(_Fault("hang", accept=accept), times=times, after=after, endpoint=endpoint)

    def reset(
        self,
        *,
        accept: bool = False,
        rst: bool = False,
        times: int | None = 1,
        after: int = 0,
        endpoint: Endpoint = SEND,
    ) -> None:
        """Read the request and close the connection without an answer. ``accept``: handle it
        first (a valid one is accepted). ``rst``: abort with a TCP RST instead of a plain close
        (the client sees ConnectionResetError rather than RemoteDisconnected)."""
        fault = _Fault("reset", accept=accept, rst=rst)
        self._add(fault, times=times, after=after, endpoint=endpoint)

    def rate_limit(
        self,
        per_second: float,
        *,
        burst: float | None = None,
        retry_headers: bool = True,
        whole_seconds: bool = True,
    ) -> None:
        """Accept at most ``per_second`` personalizations a second, ``burst`` (default: one
        second's worth) at once, like a token bucket; a request that would exceed it gets 429
        and takes nothing. Every Mail Send answer carries ``X-RateLimit-Limit`` (the burst),
        ``-Remaining`` and ``-Reset`` (epoch seconds), a 429 also ``Retry-After``: the wait until
        the request would fit, rounded up to ``whole_seconds`` (HTTP's delta-seconds) or else to
        the millisecond. ``retry_headers`` False: none of these headers. Standing until
        :meth:`clear`; calling again replaces the bucket."""
        size = burst if burst is not None else max(per_second, 1.0)
        bucket = TokenBucket(per_second, size, self._clock())
        with self._lock:
            self._rate_limit = _RateLimit(bucket, retry_headers, whole_seconds)

    def revoke_key(self, revoked: bool = True) -> None:
        """Answer 401 to everything, like a deleted or revoked API key (False: valid again)."""
        with self._lock:
            self._revoked = revoked

    def set_scopes(self, scopes: Iterable[str]) -> None:
        """The key's scopes, as ``GET /v3/scopes`` lists them; without ``mail.send``, Mail
        Send answers 403 ("access forbidden")."""
        with self._lock:
            self._scopes = tuple(scopes)

    def clear(self) -> None:
        """End every fault: queued and standing ones, delays, the rate limit, a revoked key,
        missing scopes. What was recorded stays."""
        with self._lock:
            self._queued = {SEND: [], SCOPES: []}
            self._standing = {SEND: None, SCOPES: None}
            self._delays = []
            self._rate_limit = None
            self._revoked = False
            self._scopes = DEFAULT_SCOPES

    def _add(self, fault: _Fault, *, times: int | None, after: int, endpoint: Endpoint) -> None:
        if endpoint not in self._queued:
            raise ValueError(f"endpoint must be one of {sorted(self._queued)}")
        if (times is not None and times < 0) or after < 0:
            raise ValueError("times and after must not be negative")
        with self._lock:
            queue = self._queued[endpoint]
            queue += [None] * after
            if times is None:
                self._standing[endpoint] = fault
            else:
                queue += [fault] * times

    # -- inspection --------------------------------------------------------------------------
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
            return self._counts["attempts"]

    def personalization_count(self) -> int:
        with self._lock:
            return self._counts["personalizations"]

    def accepted_recipients(self) -> list[AcceptedRecipient]:
        """Every ``to`` address of every accepted personalization, in arrival order, once per
        acceptance (an email accepted twice is listed twice). Empty unless ``record``."""
        with self._lock:
            return list(self._accepted)

    def acceptance_counts(self) -> Counter[tuple[str, str | None]]:
        """How many times each (lower-cased address, message_key) was accepted; one sent
        exactly once counts 1, a duplicate 2 or more, a lost one is absent. Needs ``record``."""
        with self._lock:
            return Counter(self._times_accepted)

    def stats(self) -> dict[str, int]:
        """The counters ``GET /_sink/stats`` reports.

        attempts (POSTs), accepted (requests), personalizations (accepted), violations (400s'
        reasons), duplicates (accepted personalizations whose address and message_key had been
        accepted before; counted only with ``record``), throttled (429 answers), rate_limited
        (429s of the rate limit), server_errors (5xx answers), unauthorized (401), forbidden
        (403), late, trickled, hung, resets (requests those faults took), scopes_requests.
        """
        with self._lock:
            counts = self._counts
            return {
                "attempts": counts["attempts"],
                "accepted": len(self._message_ids),
                "personalizations": counts["personalizations"],
                "violations": len(self._violations),
                "duplicates": counts["duplicates"],
                "throttled": counts["throttled"],
                "rate_limited": counts["rate_limited"],
                "server_errors": counts["server_errors"],
                "unauthorized": counts["unauthorized"],
                "forbidden": counts["forbidden"],
                "late": counts["late"],
                "trickled": counts["trickled"],
                "hung": counts["hung"],
                "resets": counts["resets"],
                "scopes_requests": counts["scopes_requests"],
            }

    # -- the endpoints -----------------------------------------------------------------------
    def handle(
        self, path: str, headers: dict[str, str], raw: bytes, length: int
    ) -> tuple[int, dict[str, str], Any]:
        """Status, headers and body for one POST, without a connection (tests call it directly).

        Canned answers apply; a transport fault (late, trickle, hang, reset) is used up, and the
        request is handled if that fault accepts, else the status is 0 (no answer)."""
        fault = self._take_fault(SEND)
        answer = self._respond(SEND, fault, path, headers, raw, length)
        return answer if answer is not None else (0, {}, b"")

    def _take_fault(self, endpoint: Endpoint) -> _Fault | None:
        """Count the request, wait out a scripted delay, and take its fault (None: none)."""
        with self._lock:
            self._counts["attempts" if endpoint == SEND else "scopes_requests"] += 1
            delay = self._delays.pop(0) if endpoint == SEND and self._delays else 0.0
            queue = self._queued[endpoint]
            fault = queue.pop(0) if queue else self._standing[endpoint]
            if fault is not None and fault.kind in _FAULT_COUNTERS:
                self._counts[_FAULT_COUNTERS[fault.kind]] += 1
        if delay:
            self._wake.wait(delay)
        return fault

    def _stopping_within(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True as soon as the sink is stopping."""
        return self._wake.wait(seconds) if seconds > 0 else self._wake.is_set()

    def _respond(
        self,
        endpoint: Endpoint,
        fault: _Fault | None,
        path: str,
        headers: dict[str, str],
        raw: bytes,
        length: int,
    ) -> Answer | None:
        """The answer to ``fault`` (None: no fault), or None when the request is not handled."""
        if fault is not None and fault.kind == "answer":
            answer = self._canned(fault)
        elif fault is not None and not fault.accept:
            return None
        elif endpoint == SCOPES:
            answer = self._list_scopes(headers)
        else:
            answer = self._mail_send(path, headers, raw, length)
        self._tally(answer[0])
        return answer

    def _canned(self, fault: _Fault) -> Answer:
        headers = dict(fault.headers)
        if fault.reset_in is not None:
            headers["X-RateLimit-Reset"] = str(math.ceil(self._clock() + fault.reset_in))
        return fault.status, headers, fault.body

    def _tally(self, status: int) -> None:
        counter = {401: "unauthorized", 403: "forbidden", 429: "throttled"}.get(status)
        if counter is None and 500 <= status <= 599:
            counter = "server_errors"
        if counter is not None:
            with self._lock:
                self._counts[counter] += 1

    def _key_refusal(self, headers: Mapping[str, str], scope: str | None) -> Answer | None:
        """401 for a missing, wrong or revoked key, 403 for a key without ``scope``."""
        key = _bearer_key(headers)
        with self._lock:
            revoked, scopes = self._revoked, self._scopes
        if not key or revoked or (self.api_key is not None and key != self.api_key):
            return _error(401, [Violation(UNAUTHORIZED)])
        if scope is not None and scope not in scopes:
            return _error(403, [Violation(FORBIDDEN)])
        return None

    def _list_scopes(self, headers: Mapping[str, str]) -> Answer:
        refusal = self._key_refusal(headers, scope=None)
        if refusal is not None:
            return refusal
        with self._lock:
            return 200, {}, {"scopes": list(self._scopes)}

    def _mail_send(self, path: str, headers: dict[str, str], raw: bytes, length: int) -> Answer:
        if path.split("?")[0] != SEND_PATH:
            return _error(404, [Violation("Not Found")])
        refusal = self._key_refusal(headers, scope=MAIL_SEND_SCOPE)
        if refusal is not None:
            return refusal
        if length > MAX_BODY:
            return _error(413, [Violation("Payload Too Large")])
        try:
            body = json.loads(raw)
        except ValueError:
            return self._refuse([Violation("Bad Request: body is not JSON")])
        found = (schema_violations(body) if self.validate else []) + rule_violations(body)
        if found:
            return self._refuse(found)
        throttled, rate_headers = self._admit(len(body["personalizations"]))
        if throttled is not None:
            return throttled
        message_id = self._accept(body)
        sandbox = body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable") is True
        return (200 if sandbox else 202), {**rate_headers, "X-Message-Id": message_id}, b""

    def _admit(self, personalizations: int) -> tuple[Answer | None, dict[str, str]]:
        """Under the rate limit: (None, its headers) to go ahead, else (a 429, ...)."""
        with self._lock:
            limit = self._rate_limit
            if limit is None:
                return None, {}
            now = self._clock()
            wait = limit.bucket.take(personalizations, now)
            if wait:
                self._counts["rate_limited"] += 1
            remaining = max(0, math.floor(limit.bucket.tokens))
            reset = now + (wait or limit.bucket.seconds_until_full(now))
        if not limit.retry_headers:
            headers: dict[str, str] = {}
        else:
            headers = {
                "X-RateLimit-Limit": _seconds_text(limit.bucket.burst),
                "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": str(math.ceil(reset)),
            }
            if wait:
                delay = math.ceil(wait) if limit.whole_seconds else math.ceil(wait * 1000) / 1000
                headers["Retry-After"] = _seconds_text(delay)
        if not wait:
            return None, headers
        return (429, headers, {"errors": [{"field": None, "message": TOO_MANY}]}), headers

    def _accept(self, body: dict[str, Any]) -> str:
        """Record an accepted request; its message id."""
        message_id = secrets.token_urlsafe(16)  # 22 characters, like SendGrid's
        personalizations = body["personalizations"]
        with self._lock:
            self._message_ids.append(message_id)
            self._counts["personalizations"] += len(personalizations)
            if self.record:
                self._requests.append(body)
                for p in personalizations:
                    self._account(p)
        return message_id

    def _account(self, personalization: dict[str, Any]) -> None:
        """Per-recipient bookkeeping of one accepted personalization (the lock is held)."""
        args = personalization.get("custom_args") or {}
        for kind, email in _addresses(personalization):
            if kind != "to" or not isinstance(email, str):
                continue
            recipient = AcceptedRecipient(email, args.get("delivery_id"), args.get("message_key"))
            key = (email.lower(), recipient.message_key)
            if self._times_accepted[key]:
                self._counts["duplicates"] += 1
            self._times_accepted[key] += 1
            self._accepted.append(recipient)

    def _refuse(self, found: list[Violation]) -> Answer:
        with self._lock:
            self._violations += found
        return _error(400, found)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--no-validate", action="store_true", help="skip the jsonschema step")
    parser.add_argument("--api-key", default=None, help="accept only this key")
    parser.add_argument("--record", action="store_true", help="keep accepted bodies in memory")
    parser.add_argument(
        "--rate-limit", type=float, default=None, metavar="PER_SECOND",
        help="accept at most this many personalizations a second (429 beyond)",
    )  # fmt: skip
    parser.add_argument("--burst", type=float, default=None, help="the rate limit's bucket size")
    parser.add_argument(
        "--no-retry-headers", action="store_true",
        help="rate-limit 429s without Retry-After / X-RateLimit-* headers",
    )  # fmt: skip
    parser.add_argument(
        "--fractional-retry-after", action="store_true",
        help="Retry-After to the millisecond instead of whole seconds",
    )  # fmt: skip
    args = parser.parse_args(argv)
    sink = SendGridSink(validate=not args.no_validate, api_key=args.api_key, record=args.record)
    if args.rate_limit is not None:
        sink.rate_limit(
            args.rate_limit,
            burst=args.burst,
            retry_headers=not args.no_retry_headers,
            whole_seconds=not args.fractional_retry_after,
        )
    serve(sink, port=args.port)


def serve(sink: SendGridSink, *, port: int = 0, handler: type[_Handler] = _Handler) -> None:
    """Serve ``sink`` in this process until killed, its base URL the first line of stdout (the
    contract of standalone use; bench/throttled.py serves a sink with extra endpoints this way)."""
    server = _Server(("127.0.0.1", port), handler)
    server.sink = sink
    host, bound = server.server_address[:2]
    print(f"http://{host!s}:{bound}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
