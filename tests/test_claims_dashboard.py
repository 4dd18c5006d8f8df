"""Claims of docs/dashboard.md, "Security": the database keeps only the SHA-256 of a session's
token, and sign-ins tried during a lock-out are not counted, so the lock ends when it said.

Both databases; time moves only with the injected clock.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from itsdangerous import URLSafeSerializer
from sqlalchemy import func, select, text

from drip.clock import FrozenClock
from drip.models import AdminLoginFailure
from drip.runtime import Runtime
from drip.settings import Settings
from tests.dashboard_support import client, dashboard_settings, make_admin, sign_in

WRONG = "not the password at all"
ATTEMPTS = 5
WINDOW_MINUTES = 15


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dashboard_settings(
        tmp_path, admin_lockout_attempts=ATTEMPTS, admin_lockout_minutes=WINDOW_MINUTES
    )


def _session_cookie(answer: httpx.Response) -> str:
    cookie = next(c for c in answer.headers.get_list("set-cookie") if "drip_admin=" in c)
    return cookie.split(";", 1)[0].split("=", 1)[1]


def test_the_sessions_table_holds_the_tokens_hash_and_never_the_cookie(rt: Runtime) -> None:
    make_admin(rt)
    answer = sign_in(client(rt))
    assert answer.status_code == 303
    cookie = _session_cookie(answer)
    # The cookie is the token signed with DRIP_SECRET_KEY (docs/dashboard.md).
    serializer = URLSafeSerializer(rt.secret, salt="drip.admin.session")
    token = serializer.loads(cookie)
    digest = hashlib.sha256(token.encode()).hexdigest()

    with rt.sessions() as session:
        rows = [
            dict(row) for row in session.execute(text("select * from admin_sessions")).mappings()
        ]

    assert len(rows) == 1
    assert rows[0]["id"] == digest
    stored = " ".join(str(value) for value in rows[0].values())
    assert cookie not in stored
    assert token not in stored


def _failures(rt: Runtime) -> int:
    with rt.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(AdminLoginFailure)) or 0)


def test_sign_ins_during_a_lock_out_are_not_counted_and_it_ends_when_it_said(
    rt: Runtime, clock: FrozenClock
) -> None:
    make_admin(rt)
    http = client(rt)
    for _ in range(ATTEMPTS):  # a failure a minute: the lock ends 15 minutes after the first
        assert sign_in(http, password=WRONG).status_code == 401
        clock.advance(timedelta(minutes=1))
    clock.advance(timedelta(minutes=5))  # 10 minutes after the first failure

    during = [sign_in(http, password=WRONG) for _ in range(3)] + [sign_in(http)]

    assert {answer.status_code for answer in during} == {429}
    waits = {int(answer.headers["retry-after"]) for answer in during}
    assert waits == {5 * 60}  # what is left of the first failure's window, every time
    assert _failures(rt) == ATTEMPTS  # nothing counted while locked
    clock.advance(timedelta(seconds=waits.pop()))
    assert sign_in(http).status_code == 303  # free exactly when the answer said
