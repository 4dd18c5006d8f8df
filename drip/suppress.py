"""The suppression list: addresses we must never mail again, kept as salted hashes.

The salt is generated once per installation and stored in ``engine_state``, so an erased
subscriber's address is not recoverable from the list, yet an import of the same address still
matches (GDPR erasure must not let a later import resubscribe someone silently). The salt is not
derived from ``DRIP_SECRET_KEY`` on purpose: rotating that key must not un-suppress anyone.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from drip.macs import prekeyed
from drip.models import EngineState, Suppression, utcnow
from drip.store import one_of, store_for

SALT_KEY = "suppression_salt"
_salt_cache: dict[object, bytes] = {}  # per engine: one salt per database


def normalize_email(email: str) -> str:
    """Trimmed and lowercased: the form in which addresses are hashed and compared."""
    return email.strip().lower()


def salt(session: Session) -> bytes:
    """This installation's salt, created on first use.

    Cached per engine only once read back from the database as already there: a salt created
    inside a transaction that later rolls back must not outlive it in the cache.
    """
    engine = session.get_bind().engine
    if engine in _salt_cache:
        return _salt_cache[engine]
    stored = session.scalar(select(EngineState.value).where(EngineState.key == SALT_KEY))
    if stored is not None:
        _salt_cache[engine] = bytes.fromhex(stored["salt"])
        return _salt_cache[engine]
    # Two workers may both find no salt: ON CONFLICT lets the first writer win and the other
    # read the winner's value, instead of failing its whole transaction.
    session.execute(
        store_for(session)
        .insert_ignore(EngineState, ["key"])
        .values(key=SALT_KEY, value={"salt": secrets.token_hex(32)}, updated_at=utcnow())
    )
    created = session.scalar(select(EngineState.value).where(EngineState.key == SALT_KEY))
    assert created is not None
    return bytes.fromhex(created["salt"])


def email_hash(session: Session, email: str) -> str:
    return hash_with(salt(session), email)


def hash_with(key: bytes, email: str) -> str:
    """HMAC-SHA256 of the normalized address under the installation's salt, in hex."""
    return prekeyed(key).hexdigest(normalize_email(email).encode())


def suppressed_hashes(session: Session, emails: Iterable[str]) -> set[str]:
    """The hashes of those ``emails`` that are on the suppression list (one query)."""
    key = salt(session)
    return listed_hashes(session, [hash_with(key, e) for e in emails])


def listed_hashes(session: Session, hashes: Iterable[str]) -> set[str]:
    """Those of ``hashes`` (see :func:`email_hash`) that are on the suppression list."""
    hashes = list(hashes)
    if not hashes:
        return set()
    found = session.scalars(
        select(Suppression.email_hash).where(one_of(Suppression.email_hash, hashes, session))
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


def suppress_addresses(session: Session, entries: dict[str, tuple[str, str]], now: datetime) -> int:
    """Add ``{email: (reason, detail)}`` to the suppression list; returns how many were new."""
    if not entries:
        return 0
    key = salt(session)
    rows = sorted(
        (
            {"email_hash": hash_with(key, email), "reason": reason, "detail": detail}
            for email, (reason, detail) in entries.items()
        ),
        key=lambda row: row["email_hash"],  # one lock order for concurrent batches
    )
    return store_for(session).suppress_hashes(session, rows, now)


# Export and import (drip.subscribers.csv_export, drip.subscribers.importer): a suppression
# travels with the address to another list, with its reason and date.


def suppressions_of(session: Session, emails: Iterable[str]) -> dict[str, Suppression]:
    """The suppression row of each of ``emails`` on the list, by address (one query).

    Reads only: before anything was ever suppressed there is no salt, and none is created.
    """
    emails = list(emails)
    if not emails or session.scalar(select(Suppression.id).limit(1)) is None:
        return {}
    key = salt(session)  # stored already: every suppression was hashed with it
    by_hash = {hash_with(key, email): email for email in emails}
    rows = session.scalars(
        select(Suppression).where(one_of(Suppression.email_hash, list(by_hash), session))
    )
    return {by_hash[row.email_hash]: row for row in rows}


def suppress_since(
    session: Session, email: str, reason: str, since: datetime | None, detail: str | None = None
) -> bool:
    """:func:`suppress`, dated ``since`` when the file says when (else now); False if the
    address was on the list already (its first reason and date are kept)."""
    digest = email_hash(session, email)
    if session.scalar(select(Suppression.id).where(Suppression.email_hash == digest)) is not None:
        return False
    session.add(
        Suppression(email_hash=digest, reason=reason, detail=detail, created_at=since or utcnow())
    )
    session.flush()
    return True
