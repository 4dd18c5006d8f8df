"""``GET /t/o/<token>.gif`` (open pixel) and ``GET /t/c/<token>`` (click redirect), as plain ASGI.

The pixel always answers the 1x1 GIF with no-cache headers, even for a bad token (a broken image
in an email helps no one), but records nothing for a bad token. The click answers 302 to the
exact URL its token was signed for; a bad or tampered token gets a plain 404, never a redirect.
``HEAD`` is answered like ``GET`` and recorded as a machine event (only scanners send it).

Each event is one ``XADD`` (:class:`~drip.ingest.stream.EventQueue`, group commit); if Redis
fails, it is stored directly in the database; if that fails too, it is logged and the visitor
still gets the image or the redirect.

:class:`TrackingEndpoints` sits in front of the FastAPI app (``app.add_middleware``, outermost):
these two paths take most of the traffic, and FastAPI's routing, dependency and middleware
layers cost ~10 times the work of the endpoints themselves (docs/decisions.md). So they answer
here, without the per-request log line of the rest of the app; anything else passes through.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import weakref
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from drip.ingest import stream
from drip.runtime import Runtime
from drip.tokens import BadToken
from drip.tracking.tokens import TrackingSigner, signer_for

log = logging.getLogger(__name__)

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_CACHE = [
    (b"cache-control", b"no-store, no-cache, must-revalidate, max-age=0"),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_GIF_HEADERS = [
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(GIF)).encode()),
    *NO_CACHE,
]
_URL_SAFE = ":/?#[]@!$&'()*+,;=%-._~"  # RFC 3986 reserved and unreserved, and "%"
_NOT_FOUND = b"not found\n"
_NOT_FOUND_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(_NOT_FOUND)).encode()),
    *NO_CACHE,
]


class TrackingEndpoints:
    """ASGI middleware answering ``/t/o/...gif`` and ``/t/c/...``; the rest goes to ``app``."""

    def __init__(self, app: ASGIApp, rt: Runtime) -> None:
        self.app = app
        self.rt = rt
        self.signer: TrackingSigner = signer_for(rt.secret, rt.settings.public_url)
        # An asyncio Redis connection belongs to the loop that opened it (a test client may run
        # a loop per request; a server runs one).
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, stream.EventQueue]
        self._queues = weakref.WeakKeyDictionary()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            path: str = scope["path"]
            if path.startswith("/t/o/") and path.endswith(".gif") and len(path) > 9:
                await self._open(scope, send, path[5:-4])
                return
            if path.startswith("/t/c/") and len(path) > 5:
                await self._click(scope, send, path[5:])
                return
        elif scope["type"] == "lifespan":
            await self.app(scope, self._closing(receive), send)
            return
        await self.app(scope, receive, send)

    def queue(self) -> stream.EventQueue:
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            settings = self.rt.settings
            queue = self._queues[loop] = stream.EventQueue(
                settings.redis_url, settings.tracking_stream
            )
        return queue

    def _closing(self, receive: Receive) -> Receive:
        """``receive`` that closes this loop's Redis connection when the server shuts down."""

        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                queue = self._queues.pop(asyncio.get_running_loop(), None)
                if queue is not None:
                    await queue.close()
            return message

        return wrapped

    async def _record(self, fields: dict[str, str]) -> None:
        try:
            await self.queue().put(fields)
            return
        except Exception as err:  # Redis down or slow: the database is the fallback
            log.warning("tracking queue unavailable (%s); storing directly", type(err).__name__)
        try:
            await run_in_threadpool(stream.store_now, self.rt, fields)
        except Exception:
            log.exception("tracking event lost: neither Redis nor the database took it")

    def _entry(
        self,
        scope: Scope,
        kind: str,
        delivery_id: int,
        index: int | None = None,
        url: str | None = None,
    ) -> dict[str, str]:
        user_agent = None
        for name, value in scope["headers"]:
            if name == b"user-agent":
                user_agent = value.decode("latin-1")
                break
        client = scope.get("client")
        return stream.entry(
            kind,
            delivery_id,
            at=self.rt.clock(),
            ip=client[0] if client else None,
            user_agent=user_agent,
            head=scope["method"] == "HEAD",
            index=index,
            url=url,
        )

    async def _open(self, scope: Scope, send: Send, token: str) -> None:
        try:
            delivery_id = self.signer.read_open(token)
        except BadToken:
            delivery_id = None
        if delivery_id is not None:
            await self._record(self._entry(scope, stream.OPEN, delivery_id))
        await _answer(send, scope, 200, _GIF_HEADERS, GIF)

    async def _click(self, scope: Scope, send: Send, token: str) -> None:
        try:
            delivery_id, index, url = self.signer.read_click(token)
        except BadToken:
            await _answer(send, scope, 404, _NOT_FOUND_HEADERS, _NOT_FOUND)
            return
        await self._record(self._entry(scope, stream.CLICK, delivery_id, index=index, url=url))
        location = quote(url, safe=_URL_SAFE).encode("ascii")  # no space, CR/LF or non-ASCII
        headers = [(b"location", location), (b"content-length", b"0"), *NO_CACHE]
        await _answer(send, scope, 302, headers, b"")


async def _answer(
    send: Send, scope: Scope, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
