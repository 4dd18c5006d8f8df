"""Dashboard sessions: a random token in a signed cookie, a row per signed-in browser.

The cookie holds a 256-bit random token, signed with ``DRIP_SECRET_KEY`` (a forged or altered
cookie is refused before any database work). The table keeps only the token's SHA-256, the
account, the CSRF token of the session and its two expiries: absolute
(``DRIP_ADMIN_SESSION_HOURS`` after sign-in) and idle (``DRIP_ADMIN_IDLE_MINUTES`` after the
last request). Signing out deletes the row, so a copied cookie dies with it; changing the
password deletes every row of the account.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from drip.models import AdminSession, AdminUser
from drip.settings import Settings

SALT = "drip.admin.session"
TOUCH_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often


@dataclass(frozen=True)
class SignedIn:
    """The account behind a request, and its session's CSRF token."""

    user_id: int
    email: str
    session_id: str
    csrf_token: str


def _serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(settings.secret_key.get_secret_value(), salt=SALT)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(
    session: Session,
    user: AdminUser,
    settings: Settings,
    now: datetime,
    *,
    ip: str | None,
    user_agent: str | None,
) -> tuple[str, SignedIn]:
    """A new session for ``user``: the cookie value and who is signed in. Expired rows of
    every account are removed on the way (sign-ins are rare, so this is where it is cheap).

    ``user`` may come from another session (sign-in verifies the password outside any
    transaction): it is merged into this one, so a re-hashed password is written along with
    ``last_login_at``."""
    session.execute(delete(AdminSession).where(AdminSession.expires_at <= now))
    user = session.merge(user)
    token = secrets.token_urlsafe(32)
    row = AdminSession(
        id=_digest(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + timedelta(hours=settings.admin_session_hours),
        last_seen_at=now,
        ip=ip,
        user_agent=(user_agent or "")[:512] or None,
    )
    session.add(row)
    user.last_login_at = now
    signed_in = SignedIn(user.id, user.email, row.id, row.csrf_token)
    return _serializer(settings).dumps(token), signed_in


def session_id_of(cookie: str | None, settings: Settings) -> str | None:
    """The row id a cookie names, or None if it is missing or its signature is wrong."""
    if not cookie or len(cookie) > 512:
        return None
    try:
        token = _serializer(settings).loads(cookie)
    except BadSignature:
        return None
    return _digest(token) if isinstance(token, str) else None


def load_session(
    session: Session, session_id: str, settings: Settings, now: datetime
) -> tuple[SignedIn | None, bool]:
    """Who is signed in with this session id (None if no one), and whether ``last_seen_at``
    is due for an update (see :func:`touch`)."""
    row = session.execute(
        select(AdminSession, AdminUser)
        .join(AdminUser, AdminUser.id == AdminSession.user_id)
        .where(AdminSession.id == session_id)
    ).one_or_none()
    if row is None:
        return None, False
    found, user = row
    idle = timedelta(minutes=settings.admin_idle_minutes)
    if not user.active or now >= found.expires_at or now >= found.last_seen_at + idle:
        return None, False
    signed_in = SignedIn(user.id, user.email, found.id, found.csrf_token)
    return signed_in, now >= found.last_seen_at + TOUCH_EVERY


def touch(session: Session, session_id: str, now: datetime) -> None:
    row = session.get(AdminSession, session_id)
    if row is not None:
        row.last_seen_at = now


def end_session(session: Session, session_id: str) -> None:
    session.execute(delete(AdminSession).where(AdminSession.id == session_id))


def check_csrf(signed_in: SignedIn, presented: str | None) -> bool:
    """Constant-time comparison of a form's or header's token with the session's."""
    if not presented:
        return False
    return secrets.compare_digest(presented.encode(), signed_in.csrf_token.encode())
