"""The sign-in lock-out: too many failures for an account, or from a client, lock both out.

``DRIP_ADMIN_LOCKOUT_ATTEMPTS`` failures within ``DRIP_ADMIN_LOCKOUT_MINUTES`` lock the
account (whatever address they come from: a password guesser changes addresses) and the client
(whatever account it tries: a sprayer changes accounts). While locked, even the right password
is refused, and attempts are not counted, so the lock lifts when the window has passed over the
failures that caused it. The rows live in the database, so the lock holds across processes and
the injected clock decides; old rows are pruned at each failure.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.orm import Session

from drip.models import AdminLoginFailure
from drip.web.ratelimit import client_key


def _lifted_at(
    session: Session, where: ColumnElement[bool], since: datetime, attempts: int
) -> datetime | None:
    rows = list(
        session.scalars(
            select(AdminLoginFailure.at)
            .where(where, AdminLoginFailure.at > since)
            .order_by(AdminLoginFailure.at.desc())
            .limit(attempts)
        )
    )
    # Locked while ``attempts`` failures are in the window: until the oldest of them leaves it.
    return rows[-1] if len(rows) >= attempts else None


def locked_for(
    session: Session,
    account: str,
    ip: str | None,
    now: datetime,
    *,
    attempts: int,
    window: timedelta,
) -> int | None:
    """Seconds until sign-in is possible again for this account or client; None if it is now."""
    since = now - window
    ends = [
        at + window
        for at in (
            _lifted_at(session, AdminLoginFailure.account == account, since, attempts),
            _lifted_at(session, AdminLoginFailure.ip == client_key(ip), since, attempts),
        )
        if at is not None
    ]
    if not ends:
        return None
    return max(1, math.ceil((max(ends) - now).total_seconds()))


def record_failure(
    session: Session, account: str, ip: str | None, now: datetime, *, window: timedelta
) -> None:
    session.execute(delete(AdminLoginFailure).where(AdminLoginFailure.at <= now - window))
    session.add(AdminLoginFailure(at=now, account=account[:320], ip=client_key(ip)))


def clear_account(session: Session, account: str) -> None:
    """Forget an account's failures after a successful sign-in (the client's stay counted)."""
    session.execute(delete(AdminLoginFailure).where(AdminLoginFailure.account == account))
