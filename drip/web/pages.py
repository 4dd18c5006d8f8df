"""Public pages: the signup form and its post, confirmation, unsubscribe and preferences.

These paths are pasted into other people's websites and into every email: keep them stable.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from drip.content.types import DEFAULT_FORM
from drip.engine.consent import unsubscribe
from drip.errors import InvalidInput
from drip.models import SubscriberStatus
from drip.subscribers.confirm import ConfirmState, confirm
from drip.subscribers.preferences import (
    Resubscribe,
    after_resubscribe,
    resubscribe,
    subscriber_from_token,
    update_preferences,
)
from drip.subscribers.signup import resend_confirmation, signup_and_confirm
from drip.subscribers.validation import clean_form, clean_signup, normalize_address
from drip.web.deps import RuntimeDep, enqueue
from drip.web.forms import NotAForm, client_ip, not_a_form, rate_limited, read_form, user_agent
from drip.web.templating import page

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from drip.models import Subscriber
    from drip.runtime import Runtime

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
HONEYPOT = "website"
TOKEN_MAX = 512


def mask(email: str | None) -> str:
    """``a•••@example.com``: enough to recognise one's address, not to read it off a screen."""
    if not email:
        return ""
    local, _, domain = email.partition("@")
    return f"{local[:1]}•••@{domain}"


async def _limited_form(request: Request, limit: int) -> dict[str, str] | Response:
    """The posted form, or the refusal to answer with (not a form, or over the rate limit)."""
    try:
        fields = await read_form(request)
    except NotAForm:
        return not_a_form(request)
    limited = await rate_limited(request, "signup", limit)
    return limited if limited is not None else fields


@router.get("/")
@router.get("/signup")
def signup_form(request: Request) -> Response:
    return page(request, "signup.html", {"values": {}})


def _form_page(
    request: Request, fields: dict[str, str], err: InvalidInput, status: int
) -> Response:
    """Our signup page again, with the visitor's values and the error naming its field."""
    values = {k: v for k, v in fields.items() if k != HONEYPOT}
    return page(request, "signup.html", {"error": err, "values": values}, status=status)


@router.post("/subscribe")
async def subscribe(request: Request, rt: RuntimeDep) -> Response:
    fields = await _limited_form(request, rt.settings.signup_rate_limit)
    if isinstance(fields, Response):
        return fields
    try:  # a form that does not exist is the site's mistake: 422, never the default form
        form = clean_form(fields.get("form"), rt.forms)
    except InvalidInput as err:
        return _form_page(request, fields, err, 422)
    thanks = form.redirect or rt.settings.thank_you_url or _our_thanks(request, form.slug)
    if fields.get(HONEYPOT, "").strip():
        log.info("honeypot filled: signup ignored")
        return RedirectResponse(thanks, status_code=303)
    try:
        data = clean_signup(
            email=fields.get("email"),
            first_name=fields.get("first_name"),
            timezone=fields.get("timezone"),
            tags=fields.get("tags"),
            source=fields.get("source"),
            ip=client_ip(request),
            user_agent=user_agent(request),
            consent_text=rt.settings.consent_text,
            form=form,
        )
    except InvalidInput as err:
        return _form_page(request, fields, err, 400)
    await run_in_threadpool(signup_and_confirm, rt, data, "form", enqueue(request))
    return RedirectResponse(thanks, status_code=303)


def _our_thanks(request: Request, form: str) -> str:
    """Our thank-you page; for a form other than the default, naming it so the page says what
    is on its way (a lead magnet is not the course's first lesson)."""
    url = request.url_for("thanks")
    return str(url if form == DEFAULT_FORM else url.include_query_params(form=form))


@router.get("/thanks", name="thanks")
def thanks(request: Request, rt: RuntimeDep, form: str = "") -> Response:
    found = rt.forms.get(form) if form and form != DEFAULT_FORM else None
    return page(request, "thanks.html", {"what": found.name if found else None})


@router.get("/confirm/{token}")
def confirm_link(request: Request, rt: RuntimeDep, token: str) -> Response:
    if len(token) > TOKEN_MAX:
        return page(request, "confirm_failed.html", {"reason": "invalid"}, status=400)
    outcome = confirm(rt, token, ip=client_ip(request), user_agent=user_agent(request))
    if outcome.state == ConfirmState.CONFIRMED:
        return page(request, "confirmed.html", {"first_name": outcome.first_name})
    if outcome.state == ConfirmState.ALREADY:
        return page(request, "already_confirmed.html", {"first_name": outcome.first_name})
    status = 410 if outcome.state == ConfirmState.EXPIRED else 400
    return page(request, "confirm_failed.html", {"reason": outcome.state}, status=status)


@router.post("/confirm/resend")
async def confirm_resend(request: Request, rt: RuntimeDep) -> Response:
    fields = await _limited_form(request, rt.settings.signup_rate_limit)
    if isinstance(fields, Response):
        return fields
    try:
        email = normalize_address(fields.get("email"))
    except InvalidInput as err:
        context = {"reason": "resend", "error": err, "email": fields.get("email", "")}
        return page(request, "confirm_failed.html", context, status=400)
    await run_in_threadpool(resend_confirmation, rt, email, enqueue(request))
    return page(request, "resend_sent.html")


def _bad_link(request: Request) -> Response:
    return page(request, "link_invalid.html", status=400)


def _holder(rt: Runtime, session: Session, token: str) -> Subscriber | None:
    """The subscriber an unsubscribe link's token names, None for a bad or unknown token."""
    return subscriber_from_token(session, rt.secret, token[:TOKEN_MAX])


def _unsubscribed(request: Request, token: str, *, erased: bool) -> Response:
    return page(request, "unsubscribed.html", {"token": token, "erased": erased})


@router.get("/unsubscribe/{token}")
def unsubscribe_page(request: Request, rt: RuntimeDep, token: str) -> Response:
    """Shows choices; never changes anything (link scanners fetch URLs with GET)."""
    with rt.sessions() as session:
        sub = _holder(rt, session, token)
        if sub is None:
            return _bad_link(request)
        context = {
            "token": token,
            "email": mask(sub.email),
            "status": sub.status,
            "course_emails": sub.course_emails,
            "newsletter": sub.newsletter,
        }
    if sub.status == SubscriberStatus.ERASED:
        return _unsubscribed(request, token, erased=True)
    if sub.status == SubscriberStatus.UNSUBSCRIBED:
        return _unsubscribed(request, token, erased=False)
    return page(request, "unsubscribe.html", context)


@router.post("/unsubscribe/{token}")
def unsubscribe_now(request: Request, rt: RuntimeDep, token: str) -> Response:
    """RFC 8058 one-click (body ``List-Unsubscribe=One-Click``) and the page's button: 200, no
    redirect, no cookie. Any POST to a genuine link unsubscribes: only people and mail
    providers POST, link scanners don't."""
    with rt.transaction() as session:
        sub = _holder(rt, session, token)
        if sub is None:
            return _bad_link(request)
        erased = sub.status == SubscriberStatus.ERASED
        unsubscribe(
            session,
            sub,
            rt.clock(),
            "unsubscribe-link",
            ip=client_ip(request),
            user_agent=user_agent(request),
        )
    return _unsubscribed(request, token, erased=erased)


@router.post("/unsubscribe/{token}/preferences")
async def save_preferences(request: Request, rt: RuntimeDep, token: str) -> Response:
    try:
        fields = await read_form(request)
    except NotAForm:
        return not_a_form(request)
    course = fields.get("course_emails") == "on"
    news = fields.get("newsletter") == "on"

    def store() -> tuple[bool, bool] | None:
        with rt.transaction() as session:
            sub = _holder(rt, session, token)
            if sub is None:
                return None
            erased = sub.status == SubscriberStatus.ERASED
            out = update_preferences(
                rt,
                session,
                sub,
                course_emails=course,
                newsletter=news,
                ip=client_ip(request),
                user_agent=user_agent(request),
            )
            return out, erased

    result = await run_in_threadpool(store)
    if result is None:
        return _bad_link(request)
    unsubscribed, erased = result
    if unsubscribed or erased:
        return _unsubscribed(request, token, erased=erased)
    context = {"token": token, "course_emails": course, "newsletter": news}
    return page(request, "preferences_saved.html", context)


@router.post("/unsubscribe/{token}/resubscribe")
def resubscribe_now(request: Request, rt: RuntimeDep, token: str) -> Response:
    with rt.transaction() as session:
        sub = _holder(rt, session, token)
        if sub is None:
            return _bad_link(request)
        outcome = resubscribe(
            rt, session, sub, ip=client_ip(request), user_agent=user_agent(request)
        )
    after_resubscribe(outcome, enqueue(request))
    if outcome.state == Resubscribe.REFUSED:
        return _unsubscribed(request, token, erased=True)
    return page(request, "resubscribed.html", {"token": token, "state": outcome.state})
