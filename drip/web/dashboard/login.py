"""Signing in and out of the dashboard.

The sign-in form has its own CSRF protection (there is no session yet): a random value in a
short-lived ``drip_admin_login`` cookie and its HMAC in the form (:func:`login_token`). A wrong
address and a wrong password get the same answer in the same time; the lock-out
(:mod:`drip.web.dashboard.lockout`) answers 429 with ``Retry-After``.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from drip.errors import InvalidInput
from drip.web.dashboard import lockout
from drip.web.dashboard.rendering import admin_page
from drip.web.dashboard.security import (
    CSRF_FIELD,
    PREFIX,
    Checked,
    CsrfRejected,
    DashboardRoute,
    cookie_name,
    current_session,
    login_token,
    safe_next,
    secure_cookies,
)
from drip.web.dashboard.sessions import end_session, start_session
from drip.web.dashboard.users import find_user, normalize_account, verify_password
from drip.web.deps import RuntimeDep, runtime
from drip.web.forms import NotAForm, client_ip, read_form, user_agent

if TYPE_CHECKING:
    from drip.runtime import Runtime

log = logging.getLogger(__name__)
router = APIRouter(route_class=DashboardRoute, include_in_schema=False)
LOGIN_COOKIE_SECONDS = 3600
WRONG = "That address and password don't match an account."


@dataclass(frozen=True)
class Outcome:
    cookie: str | None = None  # the session cookie on success
    error: str | None = None
    retry_after: int | None = None  # locked out


def _form(
    request: Request,
    *,
    email: str = "",
    error: str | None = None,
    status: int = 200,
    nonce: str | None = None,
    next_url: str = PREFIX,
) -> Response:
    rt = runtime(request)
    login_cookie = cookie_name(rt.settings, "drip_admin_login")
    nonce = nonce or request.cookies.get(login_cookie) or secrets.token_urlsafe(24)
    context = {
        "email": email,
        "error": error,
        "next": next_url,
        "login_token": login_token(rt.settings, nonce),
        "signed_out": request.query_params.get("out") == "1",
    }
    response = admin_page(request, "login.html", context, status=status)
    response.set_cookie(
        login_cookie,
        nonce,
        max_age=LOGIN_COOKIE_SECONDS,
        path="/",
        secure=secure_cookies(rt.settings),
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/login")
def login_page(request: Request, next: str = PREFIX) -> Response:
    if current_session(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _form(request, next_url=safe_next(next))


def _sign_in(rt: Runtime, email: str, password: str, ip: str | None, agent: str | None) -> Outcome:
    settings, now = rt.settings, rt.clock()
    window = timedelta(minutes=settings.admin_lockout_minutes)
    try:
        account = normalize_account(email)
    except InvalidInput:
        account = email.strip().lower()[:320]
    # Three steps, no transaction held across the slow hash (SQLite takes its write lock at
    # BEGIN): read the lock and the account, verify, then write the outcome.
    with rt.sessions() as session:
        wait = lockout.locked_for(
            session, account, ip, now, attempts=settings.admin_lockout_attempts, window=window
        )
        user = find_user(session, account) if wait is None else None
    if wait is not None:
        return Outcome(retry_after=wait)
    ok = verify_password(user, password)
    with rt.transaction() as write:
        if not ok or user is None:
            lockout.record_failure(write, account, ip, now, window=window)
            log.info("dashboard sign-in refused")
            return Outcome(error=WRONG)
        lockout.clear_account(write, account)
        cookie, _ = start_session(write, user, settings, now, ip=ip, user_agent=agent)
    log.info("dashboard sign-in", extra={"admin_user": user.id})
    return Outcome(cookie=cookie)


@router.post("/login")
async def login(request: Request, rt: RuntimeDep) -> Response:
    try:
        fields = await read_form(request)
    except NotAForm:
        raise CsrfRejected from None
    nonce = request.cookies.get(cookie_name(rt.settings, "drip_admin_login"), "")
    expected = login_token(rt.settings, nonce) if nonce else ""
    if not nonce or not hmac.compare_digest(fields.get(CSRF_FIELD, "").encode(), expected.encode()):
        raise CsrfRejected
    email, password = fields.get("email", ""), fields.get("password", "")
    next_url = safe_next(fields.get("next"))
    outcome = await run_in_threadpool(
        _sign_in, rt, email, password, client_ip(request), user_agent(request)
    )
    if outcome.retry_after is not None:
        minutes = max(1, round(outcome.retry_after / 60))
        message = f"Too many failed sign-ins. Try again in about {minutes} minute(s)."
        response = _form(request, email=email, error=message, status=429, next_url=next_url)
        response.headers["Retry-After"] = str(outcome.retry_after)
        return response
    if outcome.cookie is None:
        return _form(request, email=email, error=outcome.error, status=401, next_url=next_url)
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        cookie_name(rt.settings),
        outcome.cookie,
        max_age=rt.settings.admin_session_hours * 3600,
        path="/",
        secure=secure_cookies(rt.settings),
        httponly=True,
        samesite="lax",
    )
    response.delete_cookie(cookie_name(rt.settings, "drip_admin_login"), path="/")
    return response


@router.post("/logout")
def logout(request: Request, rt: RuntimeDep, admin: Checked) -> Response:
    with rt.transaction() as session:
        end_session(session, admin.session_id)
    response = RedirectResponse(f"{PREFIX}/login?out=1", status_code=303)
    response.delete_cookie(
        cookie_name(rt.settings), path="/", secure=secure_cookies(rt.settings), httponly=True
    )
    return response
