"""Authentication of the JSON API: bearer tokens and HMAC-SHA256 signatures.

Signup webhook (``POST /api/v1/subscribers``), either of:

- ``Authorization: Bearer <token>``, one of ``DRIP_API_TOKENS``;
- ``X-Drip-Signature: sha256=<hex>``: HMAC-SHA256 with ``DRIP_WEBHOOK_SECRET`` of the raw body,
  or, when ``X-Drip-Timestamp: <unix seconds>`` is sent, of ``<timestamp>.<raw body>``; a
  timestamp more than ``DRIP_WEBHOOK_MAX_SKEW_SECONDS`` from now is refused (replay window).
  ``DRIP_WEBHOOK_REQUIRE_TIMESTAMP=true`` refuses signatures without one.

Admin API: ``Authorization: Bearer <token>``, one of ``DRIP_ADMIN_TOKENS``.
Every comparison is constant-time (:func:`hmac.compare_digest`) and checks every token.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from fastapi import Request
from pydantic import SecretStr

from drip.settings import Settings
from drip.web.deps import runtime
from drip.web.errors import ApiError

SIGNATURE_HEADER = "X-Drip-Signature"
TIMESTAMP_HEADER = "X-Drip-Timestamp"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="drip"'}


def bearer_token(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def token_matches(presented: str, tokens: tuple[SecretStr, ...]) -> bool:
    """Constant-time membership: every configured token is compared, match or not."""
    given = presented.encode()
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given, token.get_secret_value().encode())
    return found


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "authorization", message, headers=CHALLENGE)


def require_admin(request: Request) -> None:
    """FastAPI dependency of the admin API."""
    settings = runtime(request).settings
    token = bearer_token(request)
    if not settings.admin_tokens:
        raise unauthorized("the admin API is disabled: set DRIP_ADMIN_TOKENS")
    if token is None or not token_matches(token, settings.admin_tokens):
        raise unauthorized("missing or wrong bearer token")


def sign(secret: str, body: bytes, timestamp: str | None = None) -> str:
    """The ``X-Drip-Signature`` value for ``body`` (what a sender computes)."""
    message = body if timestamp is None else timestamp.encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_webhook(request: Request, body: bytes, settings: Settings, now: datetime) -> None:
    """Accept a good bearer token or a good signature; :class:`ApiError` 401 otherwise."""
    token = bearer_token(request)
    if token is not None:
        if settings.api_tokens and token_matches(token, settings.api_tokens):
            return
        raise unauthorized("wrong bearer token")
    signature = request.headers.get(SIGNATURE_HEADER)
    if signature is None:
        raise unauthorized(f"send a bearer token or an {SIGNATURE_HEADER} header")
    if settings.webhook_secret is None:
        raise unauthorized("signatures are not enabled on this server")
    timestamp = request.headers.get(TIMESTAMP_HEADER)
    if timestamp is None and settings.webhook_require_timestamp:
        raise unauthorized(f"{TIMESTAMP_HEADER} is required")
    if timestamp is not None:
        if not timestamp.isdigit():
            raise unauthorized(f"{TIMESTAMP_HEADER} must be unix seconds")
        if abs(now.timestamp() - int(timestamp)) > settings.webhook_max_skew_seconds:
            raise unauthorized("timestamp outside the replay window")
    expected = sign(settings.webhook_secret.get_secret_value(), body, timestamp)
    if not hmac.compare_digest(signature.strip().encode(), expected.encode()):
        raise unauthorized("bad signature")
