"""The marketer's dashboard under ``/admin``: server-rendered pages on the admin API's functions.

Modules: ``users``, ``sessions``, ``lockout`` (accounts and signing in), ``security`` (the
session and CSRF dependencies, how refusals look), ``rendering`` (pages, static files, email
previews), ``figures``/``cache``/``charts`` (numbers and SVG charts), and one router per page:
``login``, ``overview``, ``course``, ``sequences``, ``subscribers``, ``broadcasts`` (with
``broadcast_api`` for the scripts), ``sending`` (the pause, unknown and failed emails, resume and
resend), ``signup_forms`` (the Forms page), ``webhooks`` (the outgoing webhooks). The app
mounts :data:`router` with one ``include_router`` line.
"""

from fastapi import APIRouter

from drip.web.dashboard import (
    broadcast_api,
    broadcasts,
    course,
    login,
    overview,
    sending,
    sequences,
    signup_forms,
    subscribers,
    webhooks,
)
from drip.web.dashboard.rendering import static_router

router = APIRouter(include_in_schema=False)
PARTS = (
    static_router,
    login.router,
    overview.router,
    course.router,
    sequences.router,
    subscribers.router,
    broadcast_api.router,
    broadcasts.router,
    sending.router,
    signup_forms.router,
    webhooks.router,
)
for part in PARTS:
    router.include_router(part, prefix="/admin")

__all__ = ["router"]
