"""``POST /api/v1/subscribers``: the JSON signup webhook for integrations (Zapier-style)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from drip.errors import InvalidInput
from drip.subscribers.signup import signup_and_confirm
from drip.subscribers.validation import clean_form, clean_ip, clean_signup
from drip.web.auth import verify_webhook
from drip.web.deps import RuntimeDep, enqueue
from drip.web.errors import ApiError
from drip.web.forms import client_ip, content_type

router = APIRouter(prefix="/api/v1", tags=["signup"])
ACCEPTED = {
    "status": "accepted",
    "message": "If this address can be subscribed, a confirmation email is on its way.",
}


class SignupIn(BaseModel):
    """The webhook's body. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    email: str = Field(description="Required. The address to subscribe.", max_length=320)
    first_name: str = Field("", max_length=100)
    timezone: str | None = Field(None, description="IANA name, e.g. Europe/Berlin.")
    tags: list[str] | str = Field(default_factory=list, description="List or comma-separated.")
    source: str = Field("", max_length=100, description="Which form or campaign.")
    ip: str | None = Field(None, description="The visitor's IP, as your form saw it.")
    user_agent: str | None = Field(None, description="The visitor's browser, as your form saw it.")
    consent_text: str | None = Field(
        None, description="The consent text your form showed (default: DRIP_CONSENT_TEXT)."
    )
    form: str | None = Field(
        None,
        max_length=64,
        description="The signup form's slug (content/forms/<slug>.toml); default: default.",
    )


class Accepted(BaseModel):
    status: str
    message: str


class ErrorDetail(BaseModel):
    field: str | None
    message: str
    request_id: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Body is not a JSON object",
        401: "Missing or bad bearer token or signature",
        413: "Body too large",
        415: "Content-Type is not application/json",
        422: "A field is invalid (``field`` names it)",
        429: "Rate limit (see Retry-After)",
    }.items()
}


def _decode(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "body", "is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body", "must be a JSON object")
    return data


@router.post(
    "/subscribers",
    status_code=202,
    response_model=Accepted,
    responses=ERRORS,
    summary="Sign someone up (double opt-in)",
    description=(
        "Authenticate with `Authorization: Bearer <token>` (DRIP_API_TOKENS) or "
        "`X-Drip-Signature: sha256=<hex HMAC-SHA256 of the raw body>` (DRIP_WEBHOOK_SECRET), "
        "optionally with `X-Drip-Timestamp` (then the HMAC covers `<timestamp>.<body>`). "
        "The answer is the same whether the address is new, pending, subscribed or blocked."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SignupIn.model_json_schema()}},
        }
    },
)
async def create_subscriber(request: Request, rt: RuntimeDep) -> JSONResponse:
    body = await request.body()
    verify_webhook(request, body, rt.settings, rt.clock())
    if content_type(request) != "application/json":
        raise ApiError(415, "content-type", "send the body as application/json")
    wait = await run_in_threadpool(
        request.app.state.limiter.hit, "api", client_ip(request), rt.settings.api_rate_limit
    )
    if wait is not None:
        raise ApiError(429, None, "too many requests", headers={"Retry-After": str(wait)})
    raw = _decode(body)
    try:
        fields = SignupIn.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise ApiError(422, field, str(first["msg"])) from None
    try:
        form = clean_form(fields.form, rt.forms)  # an unknown one is a 422, never the default
        data = clean_signup(
            email=fields.email,
            first_name=fields.first_name,
            timezone=fields.timezone,
            tags=fields.tags,
            source=fields.source,
            ip=clean_ip(fields.ip),  # the visitor's, if the integration knows it
            user_agent=fields.user_agent,
            consent_text=fields.consent_text or rt.settings.consent_text,
            form=form,
        )
    except InvalidInput as err:
        raise ApiError(422, err.field, err.message) from None
    await run_in_threadpool(signup_and_confirm, rt, data, "api", enqueue(request))
    return JSONResponse(ACCEPTED, status_code=202)
