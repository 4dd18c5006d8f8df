"""The Celery app: Redis broker, JSON only, beat firing the drip tick.

Start with ``drip worker`` and ``drip beat`` (or ``celery -A workers.celery_app ...``).
Design notes: nothing is ever scheduled with a long ETA or countdown (Redis redelivers them past
the visibility timeout). Tasks are acknowledged late (``task_acks_late``), so a task whose worker
dies is delivered again; that is safe because a send claims its rows with a compare-and-set. The
database is the source of truth: the tick re-enqueues any ``queued`` delivery whose task was lost
(a worker killed with prefetched messages), so nothing is dropped either way.
"""

from __future__ import annotations

from celery import Celery

from drip.settings import Settings, get_settings


def make_celery(settings: Settings) -> Celery:
    app = Celery("drip", broker=settings.broker_url, include=["workers.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        worker_prefetch_multiplier=2,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600},
        task_default_queue="drip",
        beat_schedule={
            "drip-tick": {"task": "drip.tick", "schedule": float(settings.tick_seconds)},
            # Due broadcasts start, silent page chains restart, finished sends close.
            "drip-broadcasts-tick": {
                "task": "drip.broadcasts_tick",
                "schedule": float(settings.tick_seconds),
            },
            # Opens and clicks queued in Redis by the web app -> PostgreSQL.
            "drip-tracking-drain": {
                "task": "drip.tracking_drain",
                "schedule": float(settings.tracking_drain_seconds),
                "options": {"expires": float(settings.tracking_drain_seconds) * 5},
            },
            # Signups never confirmed within DRIP_PENDING_PURGE_DAYS are deleted (GDPR: keep no
            # more than needed).
            "drip-purge-pending": {"task": "drip.purge_pending", "schedule": 3600.0},
            # Outgoing webhooks whose attempt is due: a bounded batch, about one deadline long.
            "drip-outgoing-webhooks": {
                "task": "drip.outgoing_webhooks",
                "schedule": float(settings.outgoing_webhook_seconds),
                "options": {"expires": float(settings.outgoing_webhook_seconds) * 5},
            },
        },
        worker_hijack_root_logger=False,
    )
    return app


app = make_celery(get_settings())
