"""The purchase webhook of the checkout: a sale of The Runners Lab becomes a :class:`Conversion`.

Contract of ``POST /webhooks/purchase``:

- body: JSON ``{"email", "product", "order_id", "amount", "currency", "time"}``; ``amount`` in
  major units (``197`` or ``"197.00"``, never rounded: more decimals than the currency has is an
  error); ``time`` ISO 8601 with an offset, or unix seconds (default: when received);
- ``X-Drip-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` with
  ``DRIP_PURCHASE_WEBHOOK_SECRET``, compared in constant time;
- idempotent on ``order_id``: a replay stores nothing and answers the stored result again.

``product`` is a product id (:data:`drip.content.triggers.TAG_RE`: ``runners-lab``), trimmed and
lowercased first; anything else is refused naming the field, as sequence.toml names products
the same way.

Effects (one transaction): the buyer, if a subscriber, is marked converted (the upsell stops at
once and the send path skips it anyway), the ``purchased`` event of the product applies to them
(drip.engine.automations: the sequences whose ``[[exits]]`` list it stop, those whose
``[[triggers]]`` list it start; a replay applies nothing again), and the sale is credited to the
last *human* click of theirs within ``DRIP_ATTRIBUTION_WINDOW_DAYS`` before it. An unknown buyer
is recorded with no subscriber, by the salted hash of the address: never dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from drip.content.triggers import TAG_RE
from drip.engine.automations import handle
from drip.engine.enrollments import stop_enrollments
from drip.errors import InvalidInput
from drip.models import Conversion, Delivery, Subscriber, TrackingEvent
from drip.outgoing import PURCHASE_COMPLETED, emit, subscriber_data
from drip.store import store_for
from drip.subscribers.validation import storable_text
from drip.suppress import email_hash, normalize_email

if TYPE_CHECKING:
    from drip.runtime import Runtime

SIGNATURE_HEADER = "X-Drip-Signature"
# ISO 4217 currencies whose minor unit is not 1/100.
_MINOR_DIGITS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG"), 0),
    **dict.fromkeys(("RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}
_MAX_AMOUNT = Decimal(10) ** 12


@dataclass(frozen=True)
class Purchase:
    email: str  # normalized
    product: str
    order_id: str
    amount_cents: int  # minor units of ``currency``
    currency: str
    time: datetime
    raw: dict[str, Any]


def signature_ok(secret: str, header: str, body: bytes) -> bool:
    """Constant-time check of ``sha256=<hex>`` against the HMAC of ``body``."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header.strip().lower().encode(), expected.encode())


def _string(data: dict[str, Any], name: str, limit: int) -> str:
    value = data.get(name)
    if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value).strip():
        raise InvalidInput(name, "required, a non-empty string")
    text = storable_text(str(value).strip(), name)
    if len(text) > limit:
        raise InvalidInput(name, f"at most {limit} characters")
    return text


def _product(data: dict[str, Any]) -> str:
    product = _string(data, "product", 200).lower()
    if not TAG_RE.fullmatch(product):
        raise InvalidInput(
            "product",
            "must be a product id like 'runners-lab': lowercase letters, digits, '-', '_' and "
            "':', at most 64 characters",
        )
    return product


def _amount(data: dict[str, Any], currency: str) -> int:
    value = data.get("amount")
    if isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
        raise InvalidInput("amount", "required, a number such as 197.00")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidInput("amount", "not a number") from None
    if not amount.is_finite() or amount < 0 or amount >= _MAX_AMOUNT:
        raise InvalidInput("amount", "must be a positive number")
    minor = amount.scaleb(_MINOR_DIGITS.get(currency, 2))
    if minor != minor.to_integral_value():
        raise InvalidInput("amount", f"more decimals than {currency} has")
    return int(minor)


def _time(data: dict[str, Any], now: datetime) -> datetime:
    value = data.get("time")
    if value is None:
        return now
    try:
        if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
            return datetime.fromtimestamp(float(value), UTC)
        if isinstance(value, str):
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            if moment.tzinfo is not None:
                return moment.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise InvalidInput("time", "ISO 8601 with a time zone offset, or unix seconds")


def parse_purchase(body: bytes, now: datetime) -> Purchase:
    """Validate the body; :class:`InvalidInput` names the first bad field."""
    try:
        data = json.loads(body, parse_float=Decimal)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidInput("body", "not JSON") from None
    if not isinstance(data, dict):
        raise InvalidInput("body", "must be a JSON object")
    email = normalize_email(_string(data, "email", 320))
    if email.count("@") != 1 or email.startswith("@") or email.endswith("@") or " " in email:
        raise InvalidInput("email", "not an email address")
    currency = _string(data, "currency", 3).upper()
    if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
        raise InvalidInput("currency", "an ISO 4217 code such as USD")
    return Purchase(
        email=email,
        product=_product(data),
        order_id=_string(data, "order_id", 128),
        amount_cents=_amount(data, currency),
        currency=currency,
        time=_time(data, now),
        raw=json.loads(body),  # floats again: a Decimal is not JSON-storable
    )


def last_human_click(
    session: Session, subscriber_id: int, before: datetime, window: timedelta
) -> int | None:
    """The delivery of the subscriber's last human click in ``[before - window, before]``."""
    return session.scalar(
        select(TrackingEvent.delivery_id)
        .where(
            TrackingEvent.subscriber_id == subscriber_id,
            TrackingEvent.type == "clicked",
            TrackingEvent.machine.is_(False),
            TrackingEvent.delivery_id.is_not(None),
            TrackingEvent.occurred_at <= before,
            TrackingEvent.occurred_at >= before - window,
        )
        .order_by(TrackingEvent.occurred_at.desc(), TrackingEvent.id.desc())
        .limit(1)
    )


def result(session: Session, order_id: str) -> dict[str, Any] | None:
    """What the webhook answers for ``order_id`` (None if it was never recorded)."""
    row = session.execute(
        select(Conversion, Delivery.message_key)
        .outerjoin(Delivery, Delivery.id == Conversion.attributed_delivery_id)
        .where(Conversion.order_id == order_id)
    ).first()
    if row is None:
        return None
    conversion, message_key = row
    return {
        "order_id": conversion.order_id,
        "conversion_id": conversion.id,
        "subscriber_id": conversion.subscriber_id,
        "attributed_delivery_id": conversion.attributed_delivery_id,
        "attributed_message_key": message_key,
        "amount_cents": conversion.amount_cents,
        "currency": conversion.currency,
    }


def _webhook_data(purchase: Purchase, stored: dict[str, Any]) -> dict[str, Any]:
    """The ``purchase.completed`` event's data: the buyer, the sale, the email credited."""
    return subscriber_data(
        stored["subscriber_id"],
        purchase.email,
        order_id=purchase.order_id,
        product=purchase.product,
        amount_cents=purchase.amount_cents,
        currency=purchase.currency,
        purchased_at=purchase.time,
        attributed_message_key=stored["attributed_message_key"],
    )


def record_purchase(
    rt: Runtime, session: Session, purchase: Purchase, *, now: datetime
) -> tuple[dict[str, Any], bool]:
    """Store ``purchase`` once and apply its effects; returns (the stored result, True if it was
    a replay). The attribution window and the upsell sequences come from ``rt``."""
    window = timedelta(days=rt.settings.attribution_window_days)
    upsell_sequences = [slug for slug, seq in rt.library.items() if seq.kind == "upsell"]
    stored = result(session, purchase.order_id)
    if stored is not None:
        return stored, True
    sub = session.scalar(select(Subscriber).where(Subscriber.email == purchase.email))
    attributed = None
    if sub is not None:
        attributed = last_human_click(session, sub.id, purchase.time, window)
    created = session.scalar(
        store_for(session)
        .insert_ignore(Conversion, ["order_id"])
        .values(
            order_id=purchase.order_id,
            subscriber_id=sub.id if sub else None,
            email_hash=email_hash(session, purchase.email),
            product=purchase.product,
            amount_cents=purchase.amount_cents,
            currency=purchase.currency,
            occurred_at=purchase.time,
            received_at=now,
            attributed_delivery_id=attributed,
            raw=purchase.raw,
        )
        .returning(Conversion.id)
    )
    if created is not None and sub is not None:
        if sub.converted_at is None or purchase.time < sub.converted_at:
            sub.converted_at = purchase.time
        for slug in upsell_sequences:
            stop_enrollments(session, sub.id, "converted", sequence=slug)
        session.flush()
        handle(rt, session, "purchased", purchase.product, [sub.id], now)
    session.flush()
    final = result(session, purchase.order_id)
    assert final is not None  # inserted here, or by a concurrent call we raced
    if created is not None:
        emit(session, None, PURCHASE_COMPLETED, _webhook_data(purchase, final), now)
    return final, created is None
