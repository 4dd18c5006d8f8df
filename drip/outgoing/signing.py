"""Standard Webhooks signatures (https://www.standardwebhooks.com).

Each post carries ``webhook-id`` (the event's message id, the same on every attempt),
``webhook-timestamp`` (unix seconds of this attempt) and ``webhook-signature``:
``v1,<base64 of HMAC-SHA256 over "{id}.{timestamp}.{body}">``, keyed with the base64-decoded
part of the endpoint's ``whsec_`` secret. Receivers verify it with any Standard Webhooks library,
e.g. ``standardwebhooks.Webhook(secret).verify(body, headers)``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{message_id}.{timestamp}.{body}">``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt: the three Standard Webhooks headers and the content type."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, message_id, timestamp, body),
        "content-type": "application/json",
    }
