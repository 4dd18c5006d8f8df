"""Dashboard accounts: addresses with argon2id password hashes, made from the command line.

There is no sign-up page on purpose: ``drip admin create-user`` is the only way in, so the
dashboard never exposes a way to create the first account. Passwords are hashed with
``argon2-cffi``'s defaults (argon2id, RFC 9106's low-memory profile) and re-hashed on sign-in
when those defaults change.
"""

from __future__ import annotations

from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from drip.errors import InvalidInput
from drip.models import AdminSession, AdminUser
from drip.subscribers.validation import normalize_address

PASSWORD_MIN = 12
PASSWORD_MAX = 1024  # argon2 takes any length; the cap keeps one request from costing much
_HASHER = PasswordHasher()
# Verified when the address is unknown, so that a wrong address costs as long as a wrong
# password and the timing does not tell which addresses have accounts.
_DUMMY_HASH = _HASHER.hash("no such account: this hash only equalizes the timing")


def normalize_account(email: object) -> str:
    """The canonical form of an account address; :class:`InvalidInput` on ``email``."""
    return normalize_address(email)


def check_password(password: str) -> None:
    """:class:`InvalidInput` on ``password`` unless it is 12 to 1024 characters, not blank."""
    if len(password) < PASSWORD_MIN:
        raise InvalidInput("password", f"must be at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise InvalidInput("password", f"must be at most {PASSWORD_MAX} characters")
    if not password.strip():
        raise InvalidInput("password", "must not be only spaces")


def hash_password(password: str) -> str:
    check_password(password)
    return _HASHER.hash(password)


def find_user(session: Session, email: str) -> AdminUser | None:
    return session.scalar(select(AdminUser).where(AdminUser.email == email))


def create_user(session: Session, email: str, password: str, now: datetime) -> AdminUser:
    """A new active account; :class:`InvalidInput` if the address is taken or anything is bad."""
    account = normalize_account(email)
    if find_user(session, account) is not None:
        raise InvalidInput("email", f"{account} already has an account (use set-password)")
    user = AdminUser(
        email=account,
        password_hash=hash_password(password),
        active=True,
        created_at=now,
        password_changed_at=now,
    )
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, email: str, password: str, now: datetime) -> AdminUser:
    """Replace the password and sign the account out everywhere."""
    user = find_user(session, normalize_account(email))
    if user is None:
        raise InvalidInput("email", "no such account")
    user.password_hash = hash_password(password)
    user.password_changed_at = now
    user.active = True
    session.execute(delete(AdminSession).where(AdminSession.user_id == user.id))
    return user


def verify_password(user: AdminUser | None, password: str) -> bool:
    """True if ``user`` is active and ``password`` is theirs; as slow when there is no user."""
    if len(password) > PASSWORD_MAX:
        return False
    try:
        if user is None:
            _HASHER.verify(_DUMMY_HASH, password)
            return False
        _HASHER.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    if not user.active:
        return False
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
    return True
