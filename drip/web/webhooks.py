"""``POST /webhooks/sendgrid`` and ``POST /webhooks/purchase``: validate, parse, store, answer.

Answers (JSON ``{"error": {"field", "message"}}`` on failure):

- SendGrid: 200 ``{"received", "stored", "duplicates"}`` once the batch is committed; 400 for
  missing headers, a signature that is not base64, or a body that is not a JSON array; 403 for a
  signature that does not verify or a stale timestamp; 503 when no public key is configured or
  the database fails (SendGrid retries any non-2xx for 24 hours).
- Purchase: 200 with the stored conversion (``X-Drip-Replay: true`` on a replay); 401 without a
  signature, 403 with a wrong one; 422 naming the bad field; 503 when not configured or the
  database fails.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from drip import signature
from drip.errors import InvalidInput
from drip.ingest.events import store
from drip.web.deps import RuntimeDep, runtime
from drip.web.errors import error_json
from drip.webhooks import purchase, sendgrid

if TYPE_CHECKING:
    from drip.runtime import Runtime

log = logging.getLogger(__name__)
router = APIRouter(prefix="/webhooks", tags=["webhooks"])


def _public_key(request: Request) -> Any:
    """The loaded key, cached on the app (parsing it per request would cost more than verifying)."""
    cached = getattr(request.app.state, "sendgrid_public_key", None)
    if cached is None:
        configured = runtime(request).settings.sendgrid_webhook_public_key
        if configured is None:
            return None
        cached = signature.load_public_key(configured.get_secret_value())
        request.app.state.sendgrid_public_key = cached
    return cached


@router.post("/sendgrid", summary="SendGrid Event Webhook (signed)")
async def sendgrid_events(request: Request, rt: RuntimeDep) -> JSONResponse:
    key = _public_key(request)
    if key is None:
        log.error("SendGrid event refused: DRIP_SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
        return error_json(503, None, "signature verification is not configured")
    body = await request.body()
    now = rt.clock()
    try:
        signature.verify(
            key,
            signature=request.headers.get(signature.SIGNATURE_HEADER),
            timestamp=request.headers.get(signature.TIMESTAMP_HEADER),
            body=body,
            now=now,
            max_age=rt.settings.sendgrid_webhook_max_age,
        )
    except signature.SignatureError as err:
        return error_json(err.status, "signature", err.message)
    try:
        events = sendgrid.parse_batch(body, now)
    except sendgrid.InvalidPayload as err:
        return error_json(400, "body", str(err))
    try:
        report = await run_in_threadpool(store, rt, events)
    except Exception:
        log.exception("SendGrid batch not stored; SendGrid will retry it")
        return error_json(503, None, "not stored, please retry")
    return JSONResponse(
        {"received": report.received, "stored": report.stored, "duplicates": report.duplicates}
    )


def _store_purchase(rt: Runtime, order: purchase.Purchase) -> tuple[dict[str, Any], bool]:
    with rt.transaction() as session:
        return purchase.record_purchase(rt, session, order, now=rt.clock())


@router.post("/purchase", summary="A sale from the checkout (HMAC-signed)")
async def purchase_webhook(request: Request, rt: RuntimeDep) -> JSONResponse:
    secret = rt.settings.purchase_webhook_secret
    if secret is None:
        return error_json(503, None, "the purchase webhook is not configured")
    body = await request.body()
    header = request.headers.get(purchase.SIGNATURE_HEADER)
    if not header:
        return error_json(401, "signature", f"{purchase.SIGNATURE_HEADER} is required")
    if not purchase.signature_ok(secret.get_secret_value(), header, body):
        return error_json(403, "signature", "signature does not match the body")
    try:
        order = purchase.parse_purchase(body, rt.clock())
    except InvalidInput as err:
        return error_json(422, err.field, err.message)
    try:
        stored, replay = await run_in_threadpool(_store_purchase, rt, order)
    except Exception:
        log.exception("purchase %s not stored", order.order_id)
        return error_json(503, None, "not stored, please retry")
    headers = {"X-Drip-Replay": "true"} if replay else {}
    return JSONResponse(stored, headers=headers)
