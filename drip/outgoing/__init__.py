"""Outgoing webhooks: events posted to the coach's other tools (docs/webhooks-outgoing.md).

An emitter writes outbox rows in its own transaction (:mod:`drip.outgoing.outbox`); beat's task
posts them, signed as Standard Webhooks says, and retries for a day
(:mod:`drip.outgoing.delivery`). This package sits in the libraries layer, below every emitter
(the engine, the event ingest, the features). Emit with the constants below, e.g.::

    from drip import outgoing

    outgoing.emit(session, None, outgoing.TAG_ADDED,
                  outgoing.subscriber_data(sub.id, sub.email, tag="glute-course"), now)
    outgoing.emit_for_subscribers(session, None, outgoing.SEQUENCE_COMPLETED, ids, now,
                                  {"sequence": "glute-accelerator"})
"""

from drip.outgoing.config import load_endpoints
from drip.outgoing.outbox import (
    bind_endpoints,
    emit,
    emit_for_subscribers,
    emit_many,
    endpoints_of,
    subscriber_data,
)
from drip.outgoing_endpoints import (
    EMAIL_BOUNCED,
    EMAIL_COMPLAINED,
    EVENT_TYPES,
    PURCHASE_COMPLETED,
    SEQUENCE_COMPLETED,
    SUBSCRIBER_CONFIRMED,
    SUBSCRIBER_SUBSCRIBED,
    SUBSCRIBER_UNSUBSCRIBED,
    TAG_ADDED,
    Endpoint,
)

__all__ = [
    "EMAIL_BOUNCED",
    "EMAIL_COMPLAINED",
    "EVENT_TYPES",
    "PURCHASE_COMPLETED",
    "SEQUENCE_COMPLETED",
    "SUBSCRIBER_CONFIRMED",
    "SUBSCRIBER_SUBSCRIBED",
    "SUBSCRIBER_UNSUBSCRIBED",
    "TAG_ADDED",
    "Endpoint",
    "bind_endpoints",
    "emit",
    "emit_for_subscribers",
    "emit_many",
    "endpoints_of",
    "load_endpoints",
    "subscriber_data",
]
