"""SendGrid v3 Mail Send backend, through the official ``sendgrid`` library.

One request carries one personalization per recipient, in the batch's order; SendGrid fills the
placeholders from each personalization's ``substitutions``. A request holds at most 1000 recipients
and never the same address twice (SendGrid rejects both), so a batch may take several requests.

Contract (see :mod:`drip.esp.base`): 2xx -> every recipient ok, ``provider_message_id`` = the
``X-Message-Id`` response header (the prefix of ``sg_message_id`` in events). 429, 5xx, timeouts and
connection errors raise :class:`TransientBackendError` (429 with ``retry_after`` from
``X-RateLimit-Reset``); other 4xx raise :class:`PermanentBackendError` carrying SendGrid's error
messages. Once a request of the batch has been accepted, a later failure is reported in the
remaining results (transient) instead of raised, so retrying cannot send twice.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Sequence
from email.utils import quote
from typing import Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from drip.clock import Clock
from drip.errors import BackendError, PermanentBackendError, TransientBackendError
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
        self.sandbox = sandbox
        self._clock = clock
        self._client = SendGridAPIClient(api_key, host=api_url.rstrip("/"))
        # The library sets no timeout (pitfalls.md): without one a stalled socket hangs a worker.
        self._client.client.timeout = timeout

    def send_batch(self, message: Message, recipients: Sequence[Recipient]) -> list[SendResult]:
        results: list[SendResult] = []
        for run in split_requests(recipients):
            try:
                message_id = self._post(build_body(message, run, sandbox=self.sandbox))
            except BackendError as err:
                if not any(r.ok for r in results):
                    raise
                rest = recipients[len(results) :]
                results += [
                    SendResult(r.delivery_id, False, error=str(err), transient=True) for r in rest
                ]
                break
            results += [
                SendResult(r.delivery_id, True, provider_message_id=message_id) for r in run
            ]
        return results

    def _post(self, body: dict[str, Any]) -> str | None:
        try:
            response = self._client.client.mail.send.post(request_body=body)
        except HTTPError as err:  # python_http_client's: the server answered 4xx or 5xx
            raise self._http_error(err) from err
        except (OSError, http.client.HTTPException) as err:
            # URLError (refused, DNS, a timeout while connecting) and TimeoutError (while reading
            # the answer) are OSErrors; a torn response is an HTTPException.
            reason = getattr(err, "reason", None) or err
            raise TransientBackendError(f"SendGrid unreachable: {reason}") from err
        status = int(response.status_code)
        if not 200 <= status < 300:
            raise TransientBackendError(f"SendGrid answered {status}", status=status)
        message_id = response.headers.get("X-Message-Id")
        return str(message_id) if message_id else None

    def _http_error(self, err: HTTPError) -> BackendError:
        status = int(err.status_code)
        text = f"SendGrid {status}: {_provider_messages(err.body) or err.reason}"
        if status == 429:
            return TransientBackendError(text, status=status, retry_after=self._retry_after(err))
        if status >= 500 or status < 400:
            return TransientBackendError(text, status=status)
        return PermanentBackendError(text, status=status)

    def _retry_after(self, err: HTTPError) -> float | None:
        headers = err.headers
        reset = headers.get("X-RateLimit-Reset") if headers is not None else None
        try:
            return max(0.0, float(reset) - self._clock().timestamp()) if reset else None
        except ValueError:
            return None


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
