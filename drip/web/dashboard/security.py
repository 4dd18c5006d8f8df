"""Who may use the dashboard: the session dependency, CSRF checks, and how refusals look.

Every route of the dashboard is a :class:`DashboardRoute`. Its handler turns the refusals
raised by the dependencies into answers: pages redirect to the sign-in page (303) and JSON
endpoints (``/admin/api/...``) answer 401; a missing or wrong CSRF token is a 403 either way.
State-changing requests carry the session's CSRF token as the ``csrf_token`` form field or the
``X-CSRF-Token`` header (the dashboard's scripts send the header).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute

from drip.settings import Settings
from drip.web.dashboard.sessions import (
    SignedIn,
    check_csrf,
    load_session,
    session_id_of,
    touch,
)
from drip.web.deps import runtime
from drip.web.errors import error_json
from drip.web.forms import FORM_TYPES, MAX_FIELDS, content_type

PREFIX = "/admin"
API_PREFIX = "/admin/api/"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class NeedsSignIn(Exception):
    """No valid session: sign in first."""


class CsrfRejected(Exception):
    """A state-changing request without the session's CSRF token."""


class NotFound(Exception):
    """The page names something that does not exist (a subscriber, a lesson, a broadcast)."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(what)


def secure_cookies(settings: Settings) -> bool:
    return settings.public_url.startswith("https://")


def cookie_name(settings: Settings, base: str = "drip_admin") -> str:
    """``__Host-`` cookies (Secure, Path=/, no Domain) when the app is served over https."""
    return f"__Host-{base}" if secure_cookies(settings) else base


def is_json(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX)


def safe_next(target: str | None) -> str:
    """A local dashboard path to go to after signing in (never another site)."""
    if target and target.startswith(PREFIX) and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    nxt = quote(target, safe="/") if request.method == "GET" else quote(PREFIX, safe="/")
    return RedirectResponse(f"{PREFIX}/login?next={nxt}", status_code=303)


class DashboardRoute(APIRoute):
    """An APIRoute whose refusals become redirects, 401s, 403s and 404s in the dashboard's
    style, without installing anything on the app (the app is shared with other routers)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except NeedsSignIn:
                if is_json(request):
                    return error_json(401, "session", "sign in to the dashboard first")
                return login_redirect(request)
            except CsrfRejected:
                if is_json(request):
                    return error_json(403, CSRF_FIELD, "missing or wrong CSRF token")
                from drip.web.dashboard.rendering import error_page

                return error_page(
                    request, 403, "This form has expired. Go back, reload the page, try again."
                )
            except NotFound as err:
                if is_json(request):
                    return error_json(404, None, f"no such {err.what}")
                from drip.web.dashboard.rendering import error_page

                return error_page(request, 404, f"There is no such {err.what}.")

        return handler


def current_session(request: Request) -> SignedIn | None:
    """The signed-in account of this request, or None (refreshes the idle clock)."""
    rt = runtime(request)
    session_id = session_id_of(request.cookies.get(cookie_name(rt.settings)), rt.settings)
    if session_id is None:
        return None
    now = rt.clock()
    with rt.sessions() as session:
        found, due = load_session(session, session_id, rt.settings, now)
    if found is not None and due:
        with rt.transaction() as session:
            touch(session, session_id, now)
    return found


def signed_in(request: Request) -> SignedIn:
    """Dependency of every dashboard route but sign-in: :class:`NeedsSignIn` without a session."""
    found = current_session(request)
    if found is None:
        raise NeedsSignIn
    request.state.admin = found
    return found


async def csrf_checked(
    request: Request, admin: Annotated[SignedIn, Depends(signed_in)]
) -> SignedIn:
    """Dependency of every state-changing route: the session's token, or :class:`CsrfRejected`."""
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and content_type(request) in FORM_TYPES:
        form = await request.form(max_files=0, max_fields=MAX_FIELDS)
        value = form.get(CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    if not check_csrf(admin, presented):
        raise CsrfRejected
    return admin


def login_token(settings: Settings, nonce: str) -> str:
    """The sign-in form's CSRF token: an HMAC of the pre-session cookie's random value, so a
    page on another site can neither read nor forge the pair (signed double submit)."""
    key = settings.secret_key.get_secret_value().encode()
    return hmac.new(key, b"admin-login:" + nonce.encode(), hashlib.sha256).hexdigest()


# What route functions declare: ``admin: Admin`` to read, ``admin: Checked`` to change things.
Admin = Annotated[SignedIn, Depends(signed_in)]
Checked = Annotated[SignedIn, Depends(csrf_checked)]
