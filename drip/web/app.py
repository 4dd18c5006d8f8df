"""The ASGI app: ``create_app(rt)`` wires routers, middleware and error handling.

Every response carries ``X-Request-ID``; every request is logged once as a JSON line (route
template, never the raw path: paths hold personal tokens). An exception anywhere becomes the
500 page or a JSON error naming the request id: no stack trace ever reaches a visitor.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from drip import suppress
from drip.engine.handover import Enqueue
from drip.reports.database_health import database_problem
from drip.runtime import Runtime
from drip.settings import get_settings
from drip.web import admin, admin_stats, admin_tags, api, dashboard, pages
from drip.web import broadcasts as broadcasts_api
from drip.web.deps import RuntimeDep
from drip.web.errors import BodyTooLarge, error_response, install_handlers
from drip.web.logs import request_id_var
from drip.web.params import refuse_nul_params
from drip.web.ratelimit import RateLimiter
from drip.web.templating import make_environment
from drip.web.tracking import TrackingEndpoints
from drip.web.webhooks import router as webhooks_router

log = logging.getLogger("drip.web")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class BodyLimit:
    """Refuse bodies over ``limit`` bytes: by Content-Length at once, or while streaming.

    It raises :class:`BodyTooLarge`; the outer middleware turns that into the 413 answer.
    """

    def __init__(self, app: ASGIApp, limit: int, per_path: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.per_path = dict(per_path or {})  # path prefix -> its own limit (provider webhooks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        limit = next((v for k, v in self.per_path.items() if path.startswith(k)), self.limit)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > limit:
            raise BodyTooLarge  # answered by _observe: a page, or JSON under /api/
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
            return message

        await self.app(scope, limited, send)


def _route_name(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))


async def _observe(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    incoming = request.headers.get("x-request-id", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    token = request_id_var.set(request_id)
    started = time.perf_counter()
    try:
        try:
            response = await call_next(request)
        except BodyTooLarge:
            response = error_response(request, 413)
        except Exception:
            log.exception("unhandled error", extra={"route": _route_name(request)})
            response = error_response(request, 500)
        response.headers["X-Request-ID"] = request_id
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        log.info(
            "request",
            extra={
                "method": request.method,
                "route": _route_name(request),
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return response
    finally:
        request_id_var.reset(token)


def healthz(rt: RuntimeDep) -> JSONResponse:
    """200 when the database answers, 503 otherwise."""
    problem = database_problem(rt.engine)
    if problem is not None:
        log.warning("health check: database unreachable: %s", problem)
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


def create_app(rt: Runtime | None = None, *, enqueue: Enqueue | None = None) -> FastAPI:
    """The web app around ``rt`` (built from the DRIP_* settings when None).

    ``enqueue`` hands delivery ids to the workers when a person queues emails again from the
    dashboard (drip.engine.handover); None: the Celery send task. Tests pass a list's ``append``.
    """
    runtime = rt if rt is not None else Runtime.build(get_settings())
    app = FastAPI(
        title="drip",
        summary="Signup webhook and admin API of the Glute Accelerator Crash Course.",
        version="1",
        docs_url="/docs",
        redoc_url=None,
        dependencies=[Depends(refuse_nul_params)],  # issue 12: NUL never reaches PostgreSQL
    )
    app.state.rt = runtime
    app.state.enqueue = enqueue
    app.state.pages = make_environment(runtime.settings.templates_dir)
    app.state.limiter = RateLimiter(
        runtime.settings.redis_url, runtime.settings.rate_limit_window_seconds, runtime.clock
    )
    install_handlers(app)
    app.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    app.include_router(pages.router)
    app.include_router(api.router)
    app.include_router(admin.router)
    app.include_router(admin_stats.router)  # issue 5: GET /api/v1/admin/stats
    app.include_router(admin_tags.router)  # issue 15: tags and manual starts by address
    app.include_router(webhooks_router)  # issue 5: /webhooks/sendgrid, /webhooks/purchase
    app.include_router(broadcasts_api.router)  # issue 6: /api/v1/admin/broadcasts...
    app.include_router(dashboard.router)  # issue 7: the dashboard under /admin
    app.add_middleware(
        BodyLimit,
        limit=runtime.settings.max_body_bytes,
        per_path={"/webhooks/sendgrid": runtime.settings.sendgrid_webhook_max_bytes},
    )
    app.middleware("http")(_observe)
    app.add_middleware(TrackingEndpoints, rt=runtime)  # issue 5: /t/o/, /t/c/ (outermost: hot)
    _prime_salt(runtime)
    return app


def _prime_salt(rt: Runtime) -> None:
    """Create the suppression salt in a committed transaction of its own, before any request.

    :func:`drip.suppress.salt` caches the salt per process; created inside a request's
    transaction that then rolled back, the cached salt would not be in the database.
    """
    try:
        with rt.transaction() as session:
            suppress.salt(session)
    except Exception as err:
        log.warning("could not prepare the suppression salt: %s", type(err).__name__)
