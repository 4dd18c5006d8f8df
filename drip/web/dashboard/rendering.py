"""Rendering dashboard pages (templates/web/admin/) and its static files, with safe headers.

Dashboard pages carry a Content-Security-Policy that allows scripts and styles from the app
itself only (the files under ``static/``, no inline code), frames from the app itself (the email
previews) and no framing of the dashboard by anyone. Email previews are served with a policy of
their own: inline styles (emails are made of them), no scripts, ``sandbox``, framed by us only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment

from drip.web.dashboard.security import DashboardRoute, NotFound
from drip.web.deps import runtime
from drip.web.logs import request_id_var
from drip.web.templating import COURSE, PROGRAM

STATIC_DIR = Path(__file__).resolve().parent / "static"
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
EMAIL_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; "
    "frame-ancestors 'self'; form-action 'none'; base-uri 'none'"
)
static_router = APIRouter(route_class=DashboardRoute, include_in_schema=False)


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


@lru_cache(maxsize=1)
def static_files() -> dict[str, StaticFile]:
    """The files under ``static/``, read once per process."""
    files: dict[str, StaticFile] = {}
    for path in sorted(STATIC_DIR.iterdir()):
        if path.suffix in _TYPES and path.is_file():
            body = path.read_bytes()
            files[path.name] = StaticFile(
                body, _TYPES[path.suffix], hashlib.sha256(body).hexdigest()[:16]
            )
    return files


def static_url(name: str) -> str:
    """The URL of a static file, versioned by its content (so it can be cached for long)."""
    return f"/admin/static/{name}?v={static_files()[name].etag}"


@static_router.get("/static/{name}")
def static(request: Request, name: str) -> Response:
    found = static_files().get(name)
    if found is None:
        raise NotFound("file")
    headers = {"Cache-Control": "public, max-age=86400", "ETag": f'"{found.etag}"'}
    if request.headers.get("if-none-match") == f'"{found.etag}"':
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


def when(value: datetime | str | None, zone: tzinfo = UTC) -> str:
    """A time for people in ``zone``: ``2026-03-02 04:00 EST`` (``-`` when there is none)."""
    if value is None or value == "":
        return "-"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def admin_page(
    request: Request, name: str, context: Mapping[str, Any] | None = None, *, status: int = 200
) -> HTMLResponse:
    """Render ``templates/web/admin/<name>`` with the shared context and the page headers."""
    rt = runtime(request)
    env: Environment = request.app.state.pages
    admin = getattr(request.state, "admin", None)
    shared: dict[str, Any] = {
        "admin": admin,
        "csrf_token": admin.csrf_token if admin is not None else "",
        "static": static_url,
        "when": partial(when, zone=rt.settings.dashboard_zone),
        "zone_name": rt.settings.dashboard_zone.key,
        "section": "",
        "course": COURSE,
        "program": PROGRAM,
        "coach": rt.settings.from_name,
        "request_id": request_id_var.get() or "",
        "notice": None,
        "error": None,
    }
    html = env.get_template(f"admin/{name}").render({**shared, **(context or {})})
    headers = {"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"}
    return HTMLResponse(html, status_code=status, headers=headers)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return admin_page(request, "error.html", {"status": status, "message": message}, status=status)


def email_frame(html: str) -> HTMLResponse:
    """An email's HTML for an ``<iframe>`` of the dashboard: sandboxed, never a top page."""
    headers = {
        "Content-Security-Policy": EMAIL_CSP,
        "Cache-Control": "no-store",
        "X-Frame-Options": "SAMEORIGIN",
    }
    return HTMLResponse(html, headers=headers)
