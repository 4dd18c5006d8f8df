"""Rendering the public pages (templates/web/) with safe headers.

Pages get a Content-Security-Policy with a per-response nonce for their inline style and script,
``Cache-Control: no-store`` (they may carry a personal link) and no referrer (tokens live in URLs).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from drip.web.deps import runtime
from drip.web.logs import request_id_var

COURSE = "Glute Accelerator Crash Course"
PROGRAM = "The Runners Lab"


def make_environment(templates_dir: Path) -> Environment:
    return Environment(
        loader=FileSystemLoader(templates_dir / "web"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def page(
    request: Request, name: str, context: Mapping[str, Any] | None = None, *, status: int = 200
) -> HTMLResponse:
    """Render ``templates/web/<name>`` with the shared context and the safety headers."""
    rt = runtime(request)
    env: Environment = request.app.state.pages
    nonce = secrets.token_urlsafe(16)
    settings = rt.settings
    shared = {
        "course": COURSE,
        "program": PROGRAM,
        "coach": settings.from_name,
        "postal_address": settings.postal_address,
        "consent_text": settings.consent_text,
        "lesson_count": rt.course().length,
        "nonce": nonce,
        "request_id": request_id_var.get() or "",
        "error": None,
    }
    html = env.get_template(name).render({**shared, **(context or {})})
    form_targets = "'self'"
    if settings.thank_you_url:
        form_targets += " " + _origin(settings.thank_you_url)
    headers = {
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
            f"img-src 'self' data:; form-action {form_targets}; frame-ancestors 'none'; "
            "base-uri 'none'"
        ),
        "Cache-Control": "no-store",
    }
    return HTMLResponse(html, status_code=status, headers=headers)
