"""SendGrid v3 Mail Send backend, through the official ``sendgrid`` library.

One request carries one personalization per recipient, in the batch's order; SendGrid fills the
placeholders from each personalization's ``substitutions``. A request holds at most 1000 recipients
and never the same address twice (SendGrid rejects both), so a batch may take several requests.

Contract (see :mod:`drip.esp.base`); a request has one of these outcomes:

- **2xx**: every recipient of it ok, ``provider_message_id`` = the ``X-Message-Id`` response
  header (the prefix of ``sg_message_id`` in events).
- **Nothing left whole** (connection refused, DNS failure, connect timeout, an error or the
  deadline while still sending the request): :class:`TransientBackendError`.
- **The request left, no usable answer came** (read timeout, reset or disconnect while reading the
  answer, a torn answer, the deadline passed after sending): :class:`AmbiguousBackendError`;
  SendGrid may have the emails, so they must not be sent again blindly.
- **429 or 5xx**: :class:`ThrottledBackendError` (nothing sent), ``retry_after`` from
  ``Retry-After`` (delta seconds or an HTTP-date) and, for 429, ``X-RateLimit-Reset`` (epoch
  seconds, against the injected clock): the earlier of the two; None without a hint. Both are
  upper bounds of the moment capacity returns, in whole seconds: ``Retry-After`` rounds the wait
  up, the reset names the second it ends, so the earlier one wastes less of the allowed rate
  (the later left a quarter of it unused in bench/throttled.py, Retry-After alone a fifth).
- **Any other 4xx** (400, 401, 403, 413, ...): :class:`PermanentBackendError` carrying
  SendGrid's error messages.

``timeout`` is a deadline for the whole call of one request (connect, send, the whole answer),
not a per-read timeout: the library's HTTP goes through urllib openers whose connections give
each socket operation only the time left, so an answer trickled a byte at a time cannot hold a
worker past it. No thread is involved.

A failure of a batch's first request raises. Once a request has been accepted, a later failure is
reported in the remaining results instead, so nothing is sent twice: the failed request's
recipients get ``unknown`` (maybe sent), ``transient`` (certainly not) or a permanent error, and
those of the requests never tried get ``transient``. After a throttle every remaining result also
carries ``retry_after`` (0.0 when SendGrid gave no hint), which is how the engine tells a throttle
from another transient failure.

:meth:`SendGridBackend.probe` asks ``GET /v3/scopes`` whether the key works and may send.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import json
import math
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC
from email.message import Message as HeaderMap
from email.utils import parsedate_to_datetime, quote
from typing import Any, NoReturn, Protocol

import python_http_client
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from drip.clock import Clock
from drip.errors import (
    AmbiguousBackendError,
    BackendError,
    PermanentBackendError,
    ThrottledBackendError,
    TransientBackendError,
)
from drip.esp.base import EmailBackend, Message, Recipient, SendResult
from drip.esp.mime import clean_header_value

MAX_RECIPIENTS = 1000  # per request: personalizations and recipients alike


def split_requests(
    recipients: Sequence[Recipient], limit: int = MAX_RECIPIENTS
) -> list[list[Recipient]]:
    """Consecutive runs of ``recipients``, each at most ``limit`` long with distinct addresses.

    Runs are consecutive so that concatenating the results keeps the batch's order.
    """
    runs: list[list[Recipient]] = []
    current: list[Recipient] = []
    seen: set[str] = set()
    for recipient in recipients:
        address = recipient.email.strip().lower()
        if len(current) >= limit or address in seen:
            runs.append(current)
            current, seen = [], set()
        current.append(recipient)
        seen.add(address)
    if current:
        runs.append(current)
    return runs


def _mailbox(email: str, name: str = "", *, quote_specials: bool = False) -> dict[str, str]:
    box = {"email": email}
    name = clean_header_value(name)
    if name and quote_specials and ("," in name or ";" in name):
        # SendGrid does not quote a personalization name holding "," or ";" and the To header
        # splits into bogus addresses (sendgrid-python#291; from and reply_to are fine).
        name = f'"{quote(name)}"'
    if name:
        box["name"] = name
    return box


def _personalization(
    message: Message, recipient: Recipient, subject_keys: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """One recipient's personalization; ``subject_keys``: placeholders found in the subject."""
    p: dict[str, Any] = {
        "to": [_mailbox(recipient.email, recipient.name, quote_specials=True)],
        # Non-PII only: SendGrid keeps custom_args long-term; they come back in every event.
        "custom_args": {
            "delivery_id": str(recipient.delivery_id),
            "message_key": message.message_key,
        },
    }
    subs = recipient.substitutions
    if subs:
        if not subject_keys.isdisjoint(subs):
            # A value that lands in the subject must not carry a line break into a header.
            subs = {**subs, **{k: clean_header_value(subs[k]) for k in subject_keys if k in subs}}
        p["substitutions"] = subs if isinstance(subs, dict) else dict(subs)
    if recipient.headers:
        p["headers"] = {k: clean_header_value(v) for k, v in recipient.headers.items()}
    return p


def _subject_keys(message: Message, recipients: Sequence[Recipient]) -> frozenset[str]:
    """The placeholders of any of ``recipients`` that appear in the subject (found once)."""
    keys: set[str] = set()
    for recipient in recipients:
        keys.update(recipient.substitutions)
    return frozenset(key for key in keys if key in message.subject)


def build_body(
    message: Message, recipients: Sequence[Recipient], *, sandbox: bool
) -> dict[str, Any]:
    """The Mail Send JSON body for one request (``recipients`` already split)."""
    subject_keys = _subject_keys(message, recipients)
    content = [
        {"type": mime_type, "value": value}
        for mime_type, value in (("text/plain", message.text), ("text/html", message.html))
        if value  # SendGrid rejects an empty value; text/plain must come first
    ]
    body: dict[str, Any] = {
        "personalizations": [_personalization(message, r, subject_keys) for r in recipients],
        "from": _mailbox(message.from_email, message.from_name),
        "subject": clean_header_value(message.subject),
        "content": content,
    }
    if message.reply_to:
        body["reply_to"] = _mailbox(message.reply_to)
    if message.category:
        body["categories"] = [message.category]
    if message.headers:
        body["headers"] = {k: clean_header_value(v) for k, v in message.headers.items()}
    if sandbox:
        body["mail_settings"] = {"sandbox_mode": {"enable": True}}
    return body


# -- a deadline for the whole exchange, under the library -----------------------------------------

SEND_CHUNK = 64 * 1024  # bytes per socket send, each given the time left
DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?")
MAIL_SEND_SCOPE = "mail.send"


class _Closable(Protocol):
    def close(self) -> None: ...


class _Deadline:
    """One call's end on the monotonic clock, whether its request has left, and what it opened.

    Every socket operation of the call asks :meth:`time_left`; once the deadline has passed that
    raises ``TimeoutError``, so nothing waits past it. :meth:`close` releases the connections.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.request_sent = False  # the whole request was handed to the network
        self._opened: list[_Closable] = []

    def time_left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out: the deadline passed")
        return left

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.end

    def opened(self, thing: _Closable) -> None:
        self._opened.append(thing)

    def close(self) -> None:
        for thing in reversed(self._opened):
            with contextlib.suppress(OSError, http.client.HTTPException):
                thing.close()
        self._opened.clear()


class _DeadlineReader(io.RawIOBase):
    """The socket file of an HTTP answer, each read given only the time left."""

    def __init__(self, raw: io.RawIOBase, sock: socket.socket, deadline: _Deadline) -> None:
        super().__init__()
        self._raw = raw  # the socket's own file: closing it lets the socket close
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(self._deadline.time_left())
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTP answer whose status line, headers and body must all arrive before the deadline."""

    def __init__(self, sock: socket.socket, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        raw = self.fp.detach()
        self.fp = io.BufferedReader(_DeadlineReader(raw, sock, deadline))
        deadline.opened(self)


class _DeadlineConnection(http.client.HTTPConnection):
    """Connects, sends and reads within ``deadline``; notes when the whole request has left."""

    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline
        self._create_connection = self._connect_within_deadline
        # http.client calls response_class(sock, method=...); typeshed wants a class, but any
        # callable does, and this one carries the deadline.
        answer = functools.partial(_DeadlineResponse, deadline=deadline)
        self.response_class = answer  # type: ignore[assignment]
        deadline.opened(self)

    def _connect_within_deadline(
        self, address: tuple[str, int], timeout: float | None, source: Any = None
    ) -> socket.socket:
        sock = socket.create_connection(address, self._deadline.time_left(), source)
        sock.settimeout(self._deadline.time_left())  # what is left for a TLS handshake
        return sock

    def send(self, data: Any) -> None:
        if self.sock is None:
            self.connect()
        if not isinstance(data, bytes | bytearray | memoryview):
            self.sock.settimeout(self._deadline.time_left())
            super().send(data)
            return
        # sendall's timeout is per call, and per chunk over TLS: send in chunks, each given the
        # time left, so a server reading slowly cannot stretch the call either.
        view = memoryview(data)
        while view:
            self.sock.settimeout(self._deadline.time_left())
            view = view[self.sock.send(view[:SEND_CHUNK]) :]

    def getresponse(self) -> http.client.HTTPResponse:
        # urllib asks for the answer only once the request went out whole: from now on a failure
        # leaves SendGrid with a request it may have accepted.
        self._deadline.request_sent = True
        return super().getresponse()


class _DeadlineHTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    pass


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(_DeadlineConnection, deadline=self._deadline)
        return self.do_open(connection, req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()  # the default context: certificates and host names verified
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(_DeadlineHTTPSConnection, deadline=self._deadline)
        return self.do_open(connection, req)


class _ErrorBodyNow(urllib.request.HTTPDefaultErrorHandler):
    """Reads an error answer's body at once, within the deadline, before raising as urllib does.

    The status is SendGrid's verdict; its body only explains it. A body that never finishes must
    not turn a 429 or a 400 into a maybe-sent timeout, so it is read here and dropped if it fails.
    """

    def http_error_default(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        hdrs: HeaderMap,
    ) -> NoReturn:
        try:
            body = fp.read()
        except (OSError, http.client.HTTPException):
            body = b""
        finally:
            fp.close()
        raise urllib.error.HTTPError(req.full_url, code, msg, hdrs, io.BytesIO(body))


class _DeadlineClient(python_http_client.Client):  # type: ignore[misc]
    """python_http_client's Client, unchanged but for the opener: one bounded by ``deadline``.

    The library builds a plain opener for each request and gives it a per-read timeout;
    ``_make_request``, its hook for exactly this, hands the request to ours instead.
    """

    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline

    def _make_request(self, opener: Any, request: Any, timeout: float | None = None) -> Any:
        bounded = urllib.request.build_opener(
            _DeadlineHTTPHandler(self.deadline),
            _DeadlineHTTPSHandler(self.deadline),
            _ErrorBodyNow(),
        )
        return super()._make_request(bounded, request, timeout=self.deadline.seconds)


# -- the backend ----------------------------------------------------------------------------------


class SendGridBackend(EmailBackend):
    """Sends through SendGrid's v3 API. Thread-safe (each call builds its own request)."""

    name = "sendgrid"
    max_batch = MAX_RECIPIENTS

    def __init__(
        self,
        api_key: str,
        *,
        api_url: str = "https://api.sendgrid.com",
        timeout: float = 10.0,
        sandbox: bool = False,
        clock: Clock,
    ) -> None:
        if not api_key:
            raise ValueError("SendGridBackend needs an API key")
        if timeout <= 0:
            raise ValueError("SendGridBackend needs a positive timeout")
        self.sandbox = sandbox
        self.timeout = timeout
        self._clock = clock
        # The official client makes the host, the Authorization and User-Agent headers; each call
        # then goes through a _DeadlineClient built from them.
        self._client = SendGridAPIClient(api_key, host=api_url.rstrip("/"))

    def send_batch(self, message: Message, recipients: Sequence[Recipient]) -> list[SendResult]:
        results: list[SendResult] = []
        for run in split_requests(recipients):
            try:
                message_id = self._post(build_body(message, run, sandbox=self.sandbox))
            except BackendError as err:
                if not results:
                    raise  # nothing of the batch accepted: the caller handles the whole batch
                untried = recipients[len(results) + len(run) :]
                return results + _failed(run, err) + _untried(untried, err)
            results += [
                SendResult(r.delivery_id, True, provider_message_id=message_id) for r in run
            ]
        return results

    def probe(self) -> None:
        """``GET /v3/scopes``: returns when the key works and has ``mail.send``; sends no email.

        Raises :class:`PermanentBackendError` for a rejected key (401, 403) or one without
        ``mail.send``, :class:`ThrottledBackendError` for 429 and 5xx, and
        :class:`TransientBackendError` when SendGrid cannot be reached or does not answer (a probe
        sends nothing, so no answer is nothing worse than no connection)."""
        try:
            response = self._call(lambda client: client.get(), "v3", "scopes")
        except AmbiguousBackendError as err:
            raise TransientBackendError(f"SendGrid did not answer the probe: {err}") from err
        try:
            scopes = json.loads(response.body)["scopes"]
        except (ValueError, TypeError, KeyError) as err:
            raise TransientBackendError("SendGrid's /v3/scopes answer holds no scopes") from err
        if MAIL_SEND_SCOPE not in scopes:
            raise PermanentBackendError(
                "SendGrid API key lacks the mail.send scope: it cannot send email", status=403
            )

    def _post(self, body: dict[str, Any]) -> str | None:
        response = self._call(lambda client: client.post(request_body=body), "v3", "mail", "send")
        status = int(response.status_code)
        if not 200 <= status < 300:  # urllib raises for the others; defensive
            raise PermanentBackendError(f"SendGrid answered {status}", status=status)
        message_id = response.headers.get("X-Message-Id")
        return str(message_id) if message_id else None

    def _call(self, request: Callable[[_DeadlineClient], Any], *path: str) -> Any:
        """One request to ``path`` within the deadline; its answer, or the error it amounts to."""
        deadline = _Deadline(self.timeout)
        base = self._client.client
        client = _DeadlineClient(
            host=base.host,
            request_headers=dict(base.request_headers),  # the library adds to it: one per call
            url_path=list(path),
            deadline=deadline,
        )
        try:
            return request(client)
        except HTTPError as err:  # python_http_client's: the server answered 4xx or 5xx
            raise self._http_error(err) from err
        except (OSError, http.client.HTTPException) as err:
            raise _no_answer(err, deadline) from err
        finally:
            deadline.close()

    def _http_error(self, err: HTTPError) -> BackendError:
        status = int(err.status_code)
        text = f"SendGrid {status}: {_provider_messages(err.body) or err.reason}"
        if status == 429 or 500 <= status <= 599:
            hint = self._retry_after(err.headers, rate_limit_reset=status == 429)
            return ThrottledBackendError(text, status=status, retry_after=hint)
        if status == 401:
            text += " (the API key is invalid or revoked)"
        elif status == 403:
            text += " (the API key lacks a permission)"
        return PermanentBackendError(text, status=status)

    def _retry_after(self, headers: Any, *, rate_limit_reset: bool) -> float | None:
        """Seconds to wait from ``Retry-After`` and (``rate_limit_reset``) ``X-RateLimit-Reset``,
        the earlier of the two; None when neither is there or readable."""
        if headers is None:
            return None
        now = self._clock().timestamp()
        hints = [_retry_after_seconds(headers.get("Retry-After"), now)]
        if rate_limit_reset:
            hints.append(_epoch_seconds_from(headers.get("X-RateLimit-Reset"), now))
        known = [hint for hint in hints if hint is not None]
        return min(known) if known else None


def _no_answer(err: BaseException, deadline: _Deadline) -> BackendError:
    """The error for a request that got no usable answer: maybe sent once it had left whole."""
    reason = getattr(err, "reason", None) or err
    within = f" within {deadline.seconds:g}s" if deadline.passed else ""
    if deadline.request_sent:
        return AmbiguousBackendError(
            f"SendGrid gave no answer{within} to a request it may have accepted: {reason}"
        )
    return TransientBackendError(f"SendGrid unreachable{within}: {reason}")


def _failed(run: Sequence[Recipient], err: BackendError) -> list[SendResult]:
    """The results of the request that failed after an earlier one was accepted."""
    if isinstance(err, AmbiguousBackendError):
        return [SendResult(r.delivery_id, False, error=str(err), unknown=True) for r in run]
    if isinstance(err, TransientBackendError):
        return _untried(run, err, error=str(err))
    return [SendResult(r.delivery_id, False, error=str(err)) for r in run]


def _untried(
    rest: Sequence[Recipient], err: BackendError, *, error: str | None = None
) -> list[SendResult]:
    """Certainly not sent; after a throttle they carry its hint (0.0: none) and are held."""
    error = error or f"not sent: an earlier request of the batch failed: {err}"
    hint = None
    if isinstance(err, ThrottledBackendError):
        hint = err.retry_after if err.retry_after is not None else 0.0
    return [
        SendResult(r.delivery_id, False, error=error, transient=True, retry_after=hint)
        for r in rest
    ]


def _retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After``: delta seconds, or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP-dates are GMT
    return max(0.0, when.timestamp() - now)


def _epoch_seconds_from(value: str | None, now: float) -> float | None:
    """``X-RateLimit-Reset`` (epoch seconds) as seconds from ``now``; None when unreadable."""
    try:
        reset = float(value) if value else math.nan
    except ValueError:
        return None
    return max(0.0, reset - now) if math.isfinite(reset) else None


def _provider_messages(body: bytes | str | None) -> str:
    """The ``errors[].message`` texts of a SendGrid error body, joined; else the raw start."""
    if not body:
        return ""
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        errors = json.loads(raw).get("errors", [])
        messages = [str(e["message"]) for e in errors if isinstance(e, dict) and e.get("message")]
    except (ValueError, AttributeError, TypeError):
        messages = []
    return "; ".join(messages) if messages else raw[:500]
