"""Signing in to the dashboard: passwords, the lock-out, sessions, CSRF, the CLI.

Each test runs on SQLite and PostgreSQL; time moves only with the injected FrozenClock.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from drip.cli.main import main
from drip.clock import FrozenClock
from drip.models import AdminLoginFailure, AdminSession, AdminUser
from drip.runtime import Runtime
from drip.settings import Settings
from drip.web.dashboard.users import create_user, set_password, verify_password
from tests.dashboard_support import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    client,
    dashboard_settings,
    form_token,
    make_admin,
    sign_in,
    signed_in,
)

PAGES = ["/admin", "/admin/course", "/admin/subscribers", "/admin/broadcasts"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dashboard_settings(tmp_path)


def test_the_right_password_signs_in_with_a_hardened_cookie(rt: Runtime) -> None:
    make_admin(rt)
    http = client(rt)

    answer = sign_in(http)

    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if "drip_admin=" in c)
    assert cookie.startswith("__Host-drip_admin=")  # https public URL: Secure, Path=/
    for attribute in ("HttpOnly", "Secure", "SameSite=lax", "Path=/", "Max-Age=43200"):
        assert attribute.lower() in cookie.lower()
    page = http.get("/admin")
    assert page.status_code == 200
    assert ADMIN_EMAIL in page.text
    with rt.sessions() as session:
        stored = session.scalars(select(AdminSession)).one()
        token = cookie.split(";")[0].split("=", 1)[1]
        assert token not in stored.id  # only a digest of the token is stored


def test_a_plain_http_install_gets_a_cookie_without_secure(rt: Runtime, tmp_path: Path) -> None:
    plain = Runtime.build(
        dashboard_settings(tmp_path, public_url="http://127.0.0.1:8000"),
        engine=rt.engine,
        backend=rt.backend,
        clock=rt.clock,
    )
    make_admin(plain)
    http = client(plain)

    cookie = next(c for c in sign_in(http).headers.get_list("set-cookie") if "drip_admin=" in c)

    assert cookie.startswith("drip_admin=")
    assert "secure" not in cookie.lower()


@pytest.mark.parametrize(
    ("email", "password"),
    [(ADMIN_EMAIL, "wrong password, long enough"), ("nobody@example.com", ADMIN_PASSWORD)],
)
def test_a_wrong_password_or_address_is_refused_the_same_way(
    rt: Runtime, email: str, password: str
) -> None:
    make_admin(rt)
    http = client(rt)

    answer = sign_in(http, email, password)

    assert answer.status_code == 401
    assert "That address and password don&#39;t match an account." in answer.text
    assert http.get("/admin").status_code == 303  # still signed out
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(AdminLoginFailure)) == 1


def test_five_failures_lock_the_account_even_for_the_right_password(
    rt: Runtime, clock: FrozenClock
) -> None:
    make_admin(rt)
    http = client(rt)
    for _ in range(5):
        assert sign_in(http, password="not the password at all").status_code == 401

    locked = sign_in(http)

    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) == 15 * 60
    assert "Too many failed sign-ins" in locked.text
    clock.advance(timedelta(minutes=15, seconds=1))
    assert sign_in(http).status_code == 303


def test_failures_from_one_address_lock_it_out_of_every_account(rt: Runtime) -> None:
    make_admin(rt)
    make_admin(rt, "second@example.com")
    http = client(rt)
    for n in range(5):
        sign_in(http, f"guess{n}@example.com", "not the password at all")

    answer = sign_in(http, "second@example.com")

    assert answer.status_code == 429


def test_a_success_forgets_the_accounts_failures(rt: Runtime) -> None:
    make_admin(rt)
    http = client(rt)
    for _ in range(3):
        sign_in(http, password="not the password at all")

    assert sign_in(http).status_code == 303

    with rt.sessions() as session:
        left = session.scalar(
            select(func.count())
            .select_from(AdminLoginFailure)
            .where(AdminLoginFailure.account == ADMIN_EMAIL)
        )
    assert left == 0


def test_the_sign_in_form_needs_its_csrf_token(rt: Runtime) -> None:
    make_admin(rt)
    http = client(rt)
    http.get("/admin/login")  # the pre-session cookie is set

    missing = http.post("/admin/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    forged = http.post(
        "/admin/login",
        data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": "0" * 64},
    )

    assert missing.status_code == forged.status_code == 403
    assert http.get("/admin").status_code == 303


@pytest.mark.parametrize("path", PAGES)
def test_pages_without_a_session_redirect_to_sign_in(rt: Runtime, path: str) -> None:
    answer = client(rt).get(path)

    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/admin/login?next=/admin")


def test_json_endpoints_without_a_session_answer_401(rt: Runtime) -> None:
    http = client(rt)

    answer = http.get("/admin/api/broadcasts/1/progress")
    posted = http.post("/admin/api/broadcasts/audience", data={})

    assert answer.status_code == posted.status_code == 401
    assert answer.json()["error"]["field"] == "session"


def test_a_forged_cookie_is_refused(rt: Runtime) -> None:
    make_admin(rt)
    http = client(rt)
    http.cookies.set("__Host-drip_admin", "InRva2VuIg.forged-signature")

    assert http.get("/admin").status_code == 303


def test_after_sign_in_the_next_page_is_the_one_asked_for_but_never_another_site(
    rt: Runtime,
) -> None:
    make_admin(rt)
    http = client(rt)
    first = http.get("/admin/subscribers?q=ana")
    page = http.get(first.headers["location"])
    token = form_token(page.text)

    answer = http.post(
        "/admin/login",
        data={
            "email": ADMIN_EMAIL,
            "password": ADMIN_PASSWORD,
            "csrf_token": token,
            "next": "//evil.example/admin",
        },
    )

    assert answer.headers["location"] == "/admin"
    assert 'name="next" value="/admin/subscribers?q=ana"' in page.text


def test_a_state_change_without_the_csrf_token_is_refused_with_403(rt: Runtime) -> None:
    http, token = signed_in(rt)

    without = http.post("/admin/logout")
    wrong = http.post("/admin/logout", data={"csrf_token": "x" * 43})
    json_without = http.post("/admin/api/broadcasts/audience", data={})

    assert without.status_code == wrong.status_code == json_without.status_code == 403
    assert json_without.json()["error"]["field"] == "csrf_token"
    assert http.get("/admin").status_code == 200  # still signed in
    assert (
        http.post("/admin/api/broadcasts/audience", headers={"X-CSRF-Token": token}).json()["count"]
        == 0
    )


def test_logout_ends_the_session_for_good(rt: Runtime) -> None:
    http, token = signed_in(rt)
    stolen = dict(http.cookies)

    answer = http.post("/admin/logout", data={"csrf_token": token})

    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/login?out=1"
    replay = client(rt)
    for name, value in stolen.items():
        replay.cookies.set(name, value)
    assert replay.get("/admin").status_code == 303
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(AdminSession)) == 0


def test_sessions_expire_when_idle_and_after_their_lifetime(
    rt: Runtime, clock: FrozenClock
) -> None:
    http, _ = signed_in(rt)
    for _ in range(7):  # active every 100 minutes: idle expiry (120) never reached...
        clock.advance(timedelta(minutes=100))
        assert http.get("/admin/course").status_code == 200
    clock.advance(timedelta(minutes=100))  # ...but 12 hours after sign-in it ends anyway
    assert http.get("/admin/course").status_code == 303

    again = client(rt)
    assert sign_in(again).status_code == 303
    clock.advance(timedelta(minutes=121))
    assert again.get("/admin/course").status_code == 303


def test_a_new_password_signs_the_account_out_everywhere(rt: Runtime) -> None:
    http, _ = signed_in(rt)

    with rt.transaction() as session:
        set_password(session, ADMIN_EMAIL, "a brand new passphrase", rt.clock())

    assert http.get("/admin").status_code == 303
    assert sign_in(client(rt), password="a brand new passphrase").status_code == 303


def test_passwords_are_argon2id_hashes_and_short_ones_are_refused(rt: Runtime) -> None:
    with rt.transaction() as session:
        user = create_user(session, "Coach@Example.com", ADMIN_PASSWORD, rt.clock())
        assert user.email == "coach@example.com"
        assert user.password_hash.startswith("$argon2id$")
        assert ADMIN_PASSWORD not in user.password_hash
        assert verify_password(user, ADMIN_PASSWORD)
        assert not verify_password(user, ADMIN_PASSWORD + "x")
        user.active = False
        assert not verify_password(user, ADMIN_PASSWORD)
    with rt.transaction() as session, pytest.raises(ValueError, match="at least 12"):
        create_user(session, "other@example.com", "short", rt.clock())


def test_the_cli_creates_an_account_and_refuses_a_second_one(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIP_DATABASE_URL", rt.engine.url.render_as_string(hide_password=False))
    from drip.settings import get_settings

    get_settings.cache_clear()
    runner = CliRunner()
    try:
        created = runner.invoke(
            main, ["admin", "create-user", "Lead@Example.com"], input=f"{ADMIN_PASSWORD}\n" * 2
        )
        again = runner.invoke(
            main,
            ["admin", "create-user", "lead@example.com", "--password-stdin"],
            input=f"{ADMIN_PASSWORD}\n",
        )
        mismatch = runner.invoke(
            main,
            ["admin", "create-user", "x@example.com"],
            input="one password!!\nanother one!!\n" * 2,
        )
        short = runner.invoke(
            main, ["admin", "create-user", "y@example.com", "--password-stdin"], input="short\n"
        )
    finally:
        get_settings.cache_clear()

    assert created.exit_code == 0, created.output
    assert "created dashboard account lead@example.com" in created.output
    assert again.exit_code == 1
    assert "already has an account" in again.output
    assert mismatch.exit_code != 0
    assert "do not match" in mismatch.output
    assert short.exit_code == 1
    assert "at least 12 characters" in short.output
    with rt.sessions() as session:
        emails = set(session.scalars(select(AdminUser.email)))
    assert emails == {"lead@example.com"}
    assert sign_in(client(rt), "lead@example.com").status_code == 303
