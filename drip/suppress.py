"""The suppression list: addresses we must never mail again, kept as salted hashes.

The salt is generated once per installation and stored in ``engine_state``, so an erased
subscriber's address is not recoverable from the list, yet an import of the same address still
matches (GDPR erasure must not let a later import resubscribe someone silently). The salt is not
derived from ``DRIP_SECRET_KEY`` on purpose: rotating that key must not un-suppress anyone.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from drip.models import EngineState, Suppression

SALT_KEY = "suppression_salt"
_salt_cache: dict[str, bytes] = {}


def normalize_email(email: str) -> str:
    """Trimmed and lowercased: the form in which addresses are hashed and compared."""
    return email.strip().lower()


def salt(session: Session) -> bytes:
    """This installation's salt, created on first use."""
    url = str(session.get_bind().engine.url)
    if url in _salt_cache:
        return _salt_cache[url]
    row = session.get(EngineState, SALT_KEY)
    if row is None:
        row = EngineState(key=SALT_KEY, value={"salt": secrets.token_hex(32)})
        session.add(row)
        session.flush()
    value = bytes.fromhex(row.value["salt"])
    _salt_cache[url] = value
    return value


def email_hash(session: Session, email: str) -> str:
    return hmac.new(salt(session), normalize_email(email).encode(), hashlib.sha256).hexdigest()


def suppressed_hashes(session: Session, emails: Iterable[str]) -> set[str]:
    """The hashes among ``emails`` that are on the suppression list (one query)."""
    hashes = [email_hash(session, e) for e in emails]
    if not hashes:
        return set()
    found = session.scalars(
        select(Suppression.email_hash).where(Suppression.email_hash.in_(hashes))
    )
    return set(found)


def is_suppressed(session: Session, email: str) -> bool:
    return bool(suppressed_hashes(session, [email]))


def suppress(session: Session, email: str, reason: str, detail: str | None = None) -> bool:
    """Add ``email`` to the list; False if it was there already (the first reason is kept)."""
    digest = email_hash(session, email)
    if session.scalar(select(Suppression.id).where(Suppression.email_hash == digest)) is not None:
        return False
    session.add(Suppression(email_hash=digest, reason=reason, detail=detail))
    session.flush()
    return True
