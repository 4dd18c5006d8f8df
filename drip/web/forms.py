"""Reading HTML form posts and the visitor's address, shared by the public routes."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from drip.subscribers.validation import storable_text
from drip.web.errors import error_response

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
MAX_FIELDS = 50


class NotAForm(Exception):
    """The request body is not an HTML form post."""


def client_ip(request: Request) -> str | None:
    """The peer address (uvicorn rewrites it from X-Forwarded-For for trusted proxies only)."""
    return request.client.host if request.client else None


def user_agent(request: Request) -> str | None:
    return request.headers.get("user-agent")


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_form(request: Request) -> dict[str, str]:
    """The text fields of a form post (first value of each); :class:`NotAForm` otherwise.

    A field holding a NUL character raises :class:`~drip.errors.InvalidInput` naming it (a 422):
    no form of ours has a use for one, and PostgreSQL text cannot store it.
    """
    if content_type(request) not in FORM_TYPES:
        raise NotAForm
    form = await request.form(max_files=0, max_fields=MAX_FIELDS)
    values: dict[str, str] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            values.setdefault(key, storable_text(value, key))
    return values


def not_a_form(request: Request) -> Response:
    return error_response(
        request,
        415,
        "Send this as an HTML form post (Content-Type: application/x-www-form-urlencoded).",
    )


async def rate_limited(request: Request, scope: str, limit: int) -> Response | None:
    """A 429 answer if this client is over ``limit`` in the current window, else None."""
    wait = await run_in_threadpool(request.app.state.limiter.hit, scope, client_ip(request), limit)
    if wait is None:
        return None
    response = error_response(request, 429)
    response.headers["Retry-After"] = str(wait)
    return response
