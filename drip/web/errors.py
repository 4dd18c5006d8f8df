"""Errors as visitors and API clients see them: a page or ``{"error": {...}}``, never a trace."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from drip.errors import InvalidInput
from drip.web.logs import request_id_var

log = logging.getLogger("drip.web")

REASONS = {
    400: "That request didn't look right.",
    401: "You need to sign in to see this.",
    403: "This isn't available.",
    404: "We couldn't find that page.",
    405: "That isn't something this page can do.",
    413: "That was more data than we accept.",
    415: "That content type isn't accepted here.",
    422: "Some of what was sent isn't valid.",
    429: "Too many tries from your network. Please wait a little and try again.",
    500: "Something went wrong on our side. It has been logged; please try again later.",
    503: "We're temporarily unavailable. Please try again in a few minutes.",
}


class ApiError(Exception):
    """An error answer of the JSON API: ``{"error": {"field": ..., "message": ...}}``."""

    def __init__(
        self,
        status: int,
        field: str | None,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.field = field
        self.message = message
        self.headers = dict(headers or {})
        super().__init__(message)


class BodyTooLarge(Exception):
    """The request body passed ``DRIP_MAX_BODY_BYTES`` while it was being read."""


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def error_json(
    status: int, field: str | None, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"field": field, "message": message}
    request_id = request_id_var.get()
    if request_id:
        body["request_id"] = request_id
    return JSONResponse({"error": body}, status_code=status, headers=dict(headers or {}))


def error_response(
    request: Request, status: int, message: str | None = None, field: str | None = None
) -> Response:
    """JSON under ``/api/``, the friendly error page elsewhere (naming ``field``, if given)."""
    text = message or REASONS.get(status, "Something went wrong.")
    if is_api(request):
        return error_json(status, field, text)
    if field:
        text = f"{field}: {text}"
    from drip.web.templating import page

    return page(request, "error.html", {"status": status, "message": text}, status=status)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_json(exc.status, exc.field, exc.message, exc.headers)

    @app.exception_handler(InvalidInput)
    async def _invalid(request: Request, exc: InvalidInput) -> Response:
        return error_response(request, 422, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        return error_response(request, 422, str(first.get("msg", "invalid input")), field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        text = None
        if is_api(request) and isinstance(exc.detail, str) and exc.status_code < 500:
            text = exc.detail
        response = error_response(request, exc.status_code, text)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response
