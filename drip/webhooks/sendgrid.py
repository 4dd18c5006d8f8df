"""SendGrid Event Webhook: lookup tables and one mapping function to
:class:`~drip.ingest.events.Event`.

SendGrid posts a JSON array of events. Each keeps its raw payload; ``custom_args`` come back as
top-level keys (we send ``delivery_id`` and ``message_key``); ``sg_message_id`` starts with the
``X-Message-Id`` of the API request, up to the first ".". An event type we don't know becomes
``unknown``; an element that is not even an object is kept as ``unknown`` too, never a crash.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from drip.ingest.events import Event, EventType

PROVIDER = "sendgrid"

EVENT_TYPES = {
    "processed": EventType.QUEUED,
    "dropped": EventType.REJECTED,
    "deferred": EventType.DEFERRED,
    "delivered": EventType.DELIVERED,
    "bounce": EventType.BOUNCED,  # "type": "bounce" (hard) or "blocked" (refused for now)
    "blocked": EventType.BOUNCED,  # older accounts post blocks as their own event
    "open": EventType.OPENED,
    "click": EventType.CLICKED,
    "spamreport": EventType.COMPLAINED,
    "unsubscribe": EventType.UNSUBSCRIBED,
    "group_unsubscribe": EventType.UNSUBSCRIBED,
    "group_resubscribe": EventType.SUBSCRIBED,
}

# Why SendGrid dropped a message (``reason``, lowercased) -> what we do about the address.
DROP_EFFECTS = {
    "bounced address": "bounce",  # on SendGrid's bounce list: it bounced hard before
    "invalid": "bounce",  # not a deliverable address
    "spam reporting address": "complaint",
    "unsubscribed address": "unsubscribe",
}


# The JSON escapes of what PostgreSQL cannot store: NUL, and UTF-16 surrogates (a lone one is
# not a character; a pair is, and is cheap to let through the slow path).
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89abcdefABCDEF])")
_SURROGATE = re.compile("[\ud800-\udfff]")


class InvalidPayload(ValueError):
    """The body is not a JSON array (400: SendGrid should not keep posting it)."""


def parse_batch(body: bytes, now: datetime) -> list[Event]:
    """Every element of the posted array as an :class:`Event` (raises :class:`InvalidPayload`).

    NUL characters and lone surrogates are removed from every string of every event, keys
    included: they are SendGrid's data, not a visitor's input, and one of them must not make
    PostgreSQL refuse the whole batch (SendGrid would retry it for a day, then drop it).
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidPayload(f"body is not JSON: {err}") from None
    if not isinstance(data, list):
        raise InvalidPayload("body must be a JSON array of events")
    if _UNSTORABLE_ESCAPE.search(body):  # rare: most batches skip the walk below
        data = storable(data)
    return [to_event(item, now) for item in data]


def storable(value: Any) -> Any:
    """``value`` (anything json.loads returns) with NUL and lone surrogates removed from every
    string in it, dictionary keys included."""
    if isinstance(value, str):
        return _SURROGATE.sub("", value.replace("\x00", ""))
    if isinstance(value, list):
        return [storable(item) for item in value]
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    return value


def _text(value: Any, limit: int = 2000) -> str | None:
    if value is None or value == "":
        return None
    return str(value).replace("\x00", "")[:limit]  # PostgreSQL text cannot hold NUL


def _delivery_id(value: Any) -> int | None:
    text = str(value).strip() if isinstance(value, (str, int)) else ""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def _when(value: Any, now: datetime) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return now


def _event_id(raw: dict[str, Any]) -> str:
    given = raw.get("sg_event_id")
    if isinstance(given, str) and given:
        return given[:128]
    # No id: the content is the identity, so a re-post of the same event is still a duplicate.
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _reason(name: str, raw: dict[str, Any]) -> str | None:
    if name in ("delivered", "deferred", "processed"):
        return _text(raw.get("response"))
    parts = [raw.get("type"), raw.get("status"), raw.get("reason")]
    if name in ("bounce", "blocked") and raw.get("bounce_classification"):
        parts.insert(1, raw["bounce_classification"])
    return _text(" ".join(str(p) for p in parts if p not in (None, "")))


def to_event(raw: Any, now: datetime) -> Event:
    """Map one SendGrid event (anything json.loads gave us) to an :class:`Event`."""
    if not isinstance(raw, dict):
        raw = {"value": raw}
    name = str(raw.get("event", ""))
    kind = EVENT_TYPES.get(name, EventType.UNKNOWN)
    event = Event(
        type=kind,
        occurred_at=_when(raw.get("timestamp"), now),
        provider=PROVIDER,
        provider_event_id=_event_id(raw),
        delivery_id=_delivery_id(raw.get("delivery_id")),
        message_id=_text(str(raw.get("sg_message_id") or "").split(".", 1)[0], 128),
        email=_text(raw.get("email"), 320),
        url=_text(raw.get("url"), 4000),
        reason=_reason(name, raw),
        ip=_text(raw.get("ip"), 45),
        user_agent=_text(raw.get("useragent"), 512),
        provider_machine=raw.get("sg_machine_open") is True,
        raw=raw,
    )
    if name == "bounce" and str(raw.get("type", "bounce")).lower() == "bounce":
        event.suppress = "bounce"  # hard bounce; a "blocked" bounce is not about the address
    elif name == "dropped":
        effect = DROP_EFFECTS.get(str(raw.get("reason", "")).strip().lower())
        event.suppress = effect if effect in ("bounce", "complaint") else None
        event.unsubscribe = effect == "unsubscribe"
    elif name == "spamreport":
        event.suppress = "complaint"
    elif kind == EventType.UNSUBSCRIBED:
        event.unsubscribe = True
    return event
