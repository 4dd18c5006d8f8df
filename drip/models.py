"""The data model (SQLAlchemy 2.0, typed). Works on SQLite and PostgreSQL.

Flows it serves (see DESIGN.md): a subscriber signs up (``pending``, a :class:`Consent` row),
confirms (``active``) and is enrolled in a sequence (:class:`Enrollment`, ``next_send_at`` in
UTC). Every email is a :class:`Delivery` row written *before* the backend is called, unique
per (subscriber, message_key): that uniqueness is what makes sending exactly-once. Opens,
clicks, bounces and complaints are :class:`TrackingEvent` rows; bounces and complaints also
add a :class:`Suppression`.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identity columns.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite has no time zone type and hands back naive values; this stores UTC and always returns an
    aware UTC datetime, so comparisons with an injected clock never mix naive and aware values.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """Default for created_at columns only; engine logic takes an injected clock."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class SubscriberStatus(enum.StrEnum):
    PENDING = "pending"  # signed up, not yet confirmed (double opt-in)
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    ERASED = "erased"  # GDPR erasure: personal data gone, row kept for aggregate stats


class EnrollmentStatus(enum.StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    STOPPED = "stopped"  # an exit condition: stop_reason says which


class DeliveryKind(enum.StrEnum):
    """What a delivery row sends; each kind has one message source (drip.engine.kinds)."""

    LESSON = "lesson"  # a lesson of a sequence, message key "<sequence>/<position>"
    BROADCAST = "broadcast"  # a newsletter, message key "broadcast/<id>"
    CONFIRM = "confirm"  # the double opt-in email, message key "confirm"


class DeliveryStatus(enum.StrEnum):
    QUEUED = "queued"  # row written, not yet handed to the backend
    SENDING = "sending"  # claimed by a worker, backend call may be in flight
    SENT = "sent"  # the backend accepted it
    FAILED = "failed"  # permanent backend error, or retries exhausted
    SKIPPED = "skipped"  # an exit condition held right before sending
    UNKNOWN = "unknown"  # a worker died mid-call: maybe sent, never re-sent blindly


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320), unique=True)  # NULL once erased
    first_name: Mapped[str] = mapped_column(String(100), default="")
    time_zone: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=SubscriberStatus.PENDING, index=True)
    source: Mapped[str] = mapped_column(String(100), default="")
    form: Mapped[str | None] = mapped_column(String(64))  # the signup form's slug (forms/*.toml)
    course_emails: Mapped[bool] = mapped_column(Boolean, default=True)
    newsletter: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    confirmed_at: Mapped[datetime | None] = mapped_column(index=True)  # dashboard growth chart
    unsubscribed_at: Mapped[datetime | None]
    converted_at: Mapped[datetime | None]

    tags: Mapped[list[Tag]] = relationship(secondary="subscriber_tags", lazy="selectin")
    consents: Mapped[list[Consent]] = relationship(back_populates="subscriber")
    enrollments: Mapped[list[Enrollment]] = relationship(back_populates="subscriber")

    # The dashboard's search is a substring of the address or the name: a trigram index answers
    # it without scanning the table (PostgreSQL's pg_trgm; SQLite installs are small and scan).
    __table_args__ = (
        Index(
            "ix_subscribers_email_trgm",
            "email",
            postgresql_using="gin",
            postgresql_ops={"email": "gin_trgm_ops"},
            info={"dialects": ("postgresql",)},
        ).ddl_if(dialect="postgresql"),
        Index(
            "ix_subscribers_first_name_trgm",
            "first_name",
            postgresql_using="gin",
            postgresql_ops={"first_name": "gin_trgm_ops"},
            info={"dialects": ("postgresql",)},
        ).ddl_if(dialect="postgresql"),
    )


class Consent(Base):
    """Proof of consent (GDPR Art. 7): when, where, from which IP and browser, and what text."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(24))  # signup, confirm, resubscribe, import
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(100), default="")
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    text: Mapped[str] = mapped_column(Text, default="")

    subscriber: Mapped[Subscriber] = relationship(back_populates="consents")

    __table_args__ = (Index(None, "subscriber_id"),)


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)


class SubscriberTag(Base):
    __tablename__ = "subscriber_tags"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True)

    __table_args__ = (Index(None, "tag_id"),)


class Enrollment(Base):
    """A subscriber's place in one sequence. ``position`` counts the lessons already claimed."""

    __tablename__ = "enrollments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    sequence: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer, default=0)
    # Which time the subscriber is going through the sequence (re-entry starts it over with the
    # same row): lesson deliveries of a later entry carry it in their message key.
    entry: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    trigger: Mapped[str | None] = mapped_column(String(100))  # what started it, "tag_added:5k"
    status: Mapped[str] = mapped_column(String(16), default=EnrollmentStatus.ACTIVE)
    stop_reason: Mapped[str | None] = mapped_column(String(64))
    next_send_at: Mapped[datetime | None]
    enrolled_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_sent_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]

    subscriber: Mapped[Subscriber] = relationship(back_populates="enrollments")

    __table_args__ = (
        UniqueConstraint("subscriber_id", "sequence"),
        # The tick's query: only active rows carry a next_send_at, so this index stays small and
        # a tick with nothing due is one index probe whatever the number enrolled.
        Index(
            "ix_enrollments_due",
            "next_send_at",
            postgresql_where=text("next_send_at IS NOT NULL"),
            sqlite_where=text("next_send_at IS NOT NULL"),
        ),
    )


def lesson_key(sequence: str, position: int, entry: int = 1) -> str:
    """A lesson delivery's message key: ``"course/3"``, and ``"course/3#2"`` on a second entry
    into the sequence (re-entry), so that the unique (subscriber, message key) pair still keeps
    every email once per entry."""
    return f"{sequence}/{position}" if entry <= 1 else f"{sequence}/{position}#{entry}"


def lesson_of_key(message_key: str) -> tuple[str, int]:
    """The (sequence, position) of a lesson delivery's message key (:func:`lesson_key`)."""
    slug, _, rest = message_key.rpartition("/")
    return slug, int(rest.partition("#")[0])


class Delivery(Base):
    """One email to one subscriber; unique (subscriber_id, message_key) guards exactly-once."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    message_key: Mapped[str] = mapped_column(String(128))  # "glute-accelerator/3", "broadcast/7"
    kind: Mapped[str] = mapped_column(String(16))  # a DeliveryKind
    sequence: Mapped[str | None] = mapped_column(String(64))
    position: Mapped[int | None] = mapped_column(Integer)
    broadcast_id: Mapped[int | None] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.QUEUED)
    backend: Mapped[str | None] = mapped_column(String(16))
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None]
    # When the row was last queued again after a failure (NULL: ``created_at``); the retry
    # window of drip.engine.outcomes counts from here.
    queued_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("subscriber_id", "message_key"),
        # Partial indexes: each status change rewrites a row's index entries, so the rows of
        # finished sends stay out of the indexes that only in-flight rows need.
        Index(
            "ix_deliveries_in_flight",
            "status",
            "updated_at",
            postgresql_where=text("status IN ('queued', 'sending')"),
            sqlite_where=text("status IN ('queued', 'sending')"),
        ),
        # Rows waiting or in flight have no provider id yet: left out (migration 0006).
        Index(
            "ix_deliveries_provider_message_id",
            "provider_message_id",
            postgresql_where=text("provider_message_id IS NOT NULL"),
            sqlite_where=text("provider_message_id IS NOT NULL"),
        ),
        # The few rows a person may have to look at: maybe sent, or failed (migration 0008).
        Index(
            "ix_deliveries_unsettled",
            "status",
            "updated_at",
            postgresql_where=text("status IN ('unknown', 'failed')"),
            sqlite_where=text("status IN ('unknown', 'failed')"),
        ),
        Index(
            "ix_deliveries_broadcast",
            "broadcast_id",
            postgresql_where=text("broadcast_id IS NOT NULL"),
            sqlite_where=text("broadcast_id IS NOT NULL"),
        ),
    )


class TrackingEvent(Base):
    """One normalized tracking event (anymail-style), from our endpoints or a provider webhook."""

    __tablename__ = "tracking_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    type: Mapped[str] = mapped_column(String(24))  # see drip.ingest.events.EventType
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Not foreign keys: checking them was a third of the cost of storing an event, and this
    # table is an append-only log. purge_pending, the one deletion of subscribers, clears them.
    delivery_id: Mapped[int | None] = mapped_column(BigId)
    subscriber_id: Mapped[int | None] = mapped_column(BigId)
    provider: Mapped[str] = mapped_column(String(16), default="drip")
    provider_event_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    machine: Mapped[bool] = mapped_column(Boolean, default=False)  # privacy proxy / link scanner
    url: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    raw: Mapped[dict[str, Any] | None]

    __table_args__ = (
        Index(None, "delivery_id", "type"),
        Index(None, "subscriber_id", "type"),
        Index(None, "type", "occurred_at"),
    )


class Suppression(Base):
    """An address we must never mail. Keyed by a salted hash so erased addresses stay blocked."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[str] = mapped_column(String(24))  # bounce, complaint, erased, manual
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Conversion(Base):
    """A purchase of The Runners Lab, idempotent on the checkout's order id."""

    __tablename__ = "conversions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[str] = mapped_column(String(128), unique=True)
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    email_hash: Mapped[str | None] = mapped_column(String(64))
    product: Mapped[str] = mapped_column(String(200))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    attributed_delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL")
    )
    raw: Mapped[dict[str, Any] | None]


class Broadcast(Base):
    """A newsletter: message, segment and time; a send resumes from ``last_subscriber_id``."""

    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subject: Mapped[str] = mapped_column(String(200))
    preheader: Mapped[str] = mapped_column(String(200), default="")
    body_md: Mapped[str] = mapped_column(Text)
    segment: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="draft", index=True)
    scheduled_at: Mapped[datetime | None]
    local_time: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    max_subscriber_id: Mapped[int | None] = mapped_column(BigInteger)
    last_subscriber_id: Mapped[int] = mapped_column(BigInteger, default=0)
    # Issue 6 (migration 0004): see drip/broadcasts/. A local-time send keeps its wall-clock
    # time ("2026-03-09T09:00") and per-zone progress in BroadcastZone rows.
    local_wall_time: Mapped[str | None] = mapped_column(String(16))
    past_zones: Mapped[str | None] = mapped_column(String(8))  # "now" | "tomorrow"
    quiet_hours: Mapped[int | None] = mapped_column(Integer)  # None: the setting's value
    total: Mapped[int | None] = mapped_column(BigInteger)  # recipients in the id snapshot
    queued_all_at: Mapped[datetime | None]  # the last page of deliveries was written
    runner: Mapped[str | None] = mapped_column(String(32))  # the page chain owning the send
    heartbeat_at: Mapped[datetime | None]  # that chain's last page


class BroadcastEvent(Base):
    """The audit trail of a broadcast: who did what, when, and the status before and after."""

    __tablename__ = "broadcast_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    broadcast_id: Mapped[int] = mapped_column(ForeignKey("broadcasts.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(24))  # created, updated, scheduled, paused...
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index(None, "broadcast_id"),)


class BroadcastZone(Base):
    """One time-zone group of a local-time broadcast: the zones whose wall-clock send time falls
    on the same UTC instant, and the group's own id checkpoint."""

    __tablename__ = "broadcast_zones"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    broadcast_id: Mapped[int] = mapped_column(ForeignKey("broadcasts.id", ondelete="CASCADE"))
    send_at: Mapped[datetime]
    zones: Mapped[list[str]] = mapped_column(JSON)  # raw subscribers.time_zone values; "" = none
    status: Mapped[str] = mapped_column(String(16), default="waiting")  # waiting, done
    last_subscriber_id: Mapped[int] = mapped_column(BigInteger, default=0)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("broadcast_id", "send_at"),)


class EngineState(Base):
    """Process-wide switches shared by every worker, e.g. ``sending_paused`` with its reason."""

    __tablename__ = "engine_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# --------------------------------------------------------------------------- tracking
# Rollups kept up to date by the event ingest (drip.engagement), so that the stats read a few
# small tables instead of scanning millions of events: see docs/decisions.md.


class DeliveryEngagement(Base):
    """Firsts of one delivery: each column is set once, by the first such event received.

    A column going from NULL to a time is what increments the matching :class:`MessageStats`
    counter, so the counters are unique per delivery (unique opens, unique clicks...).
    """

    __tablename__ = "delivery_engagement"

    delivery_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    message_key: Mapped[str] = mapped_column(String(128))
    subscriber_id: Mapped[int] = mapped_column(BigInteger)
    delivered_at: Mapped[datetime | None]
    opened_at: Mapped[datetime | None]  # human opens only (a human click implies one)
    clicked_at: Mapped[datetime | None]  # human clicks only
    bounced_at: Mapped[datetime | None]
    complained_at: Mapped[datetime | None]
    unsubscribed_at: Mapped[datetime | None]  # the person left after this email (the last one)

    __table_args__ = (
        # "Clicked the upsell" of the funnel: distinct clickers of a few message keys.
        Index(
            "ix_delivery_engagement_clicked",
            "message_key",
            "subscriber_id",
            postgresql_where=text("clicked_at IS NOT NULL"),
            sqlite_where=text("clicked_at IS NOT NULL"),
        ),
    )


class MessageStats(Base):
    """Counters per message key ("glute-accelerator/3"): deliveries sent, unique events."""

    __tablename__ = "message_stats"

    message_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    sent: Mapped[int] = mapped_column(BigInteger, default=0)
    delivered: Mapped[int] = mapped_column(BigInteger, default=0)
    bounced: Mapped[int] = mapped_column(BigInteger, default=0)
    opened: Mapped[int] = mapped_column(BigInteger, default=0)
    clicked: Mapped[int] = mapped_column(BigInteger, default=0)
    complained: Mapped[int] = mapped_column(BigInteger, default=0)
    unsubscribed: Mapped[int] = mapped_column(BigInteger, default=0)


# --------------------------------------------------------------------------- dashboard


class AdminUser(Base):
    """Someone who signs in to the dashboard (``/admin``); ``password_hash`` is argon2id."""

    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    password_changed_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]


class AdminSession(Base):
    """A signed-in browser. ``id`` is the SHA-256 of the random token in the cookie, so a copy
    of the table cannot be replayed; ``csrf_token`` is the session's form token."""

    __tablename__ = "admin_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("admin_users.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]  # absolute end, whatever the activity
    last_seen_at: Mapped[datetime]  # idle expiry counts from here
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))

    __table_args__ = (Index(None, "user_id"), Index(None, "expires_at"))


class AdminLoginFailure(Base):
    """One failed sign-in: the lock-out counts these per account and per client address."""

    __tablename__ = "admin_login_failures"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime]
    account: Mapped[str] = mapped_column(String(320))  # the address typed, normalized
    ip: Mapped[str] = mapped_column(String(64))  # per address; an IPv6 client per /64

    __table_args__ = (Index(None, "account", "at"), Index(None, "ip", "at"), Index(None, "at"))


# --------------------------------------------------------------------------- outgoing webhooks


class OutgoingWebhookStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its next attempt (or in one)
    DELIVERED = "delivered"  # the endpoint answered 2xx
    FAILED = "failed"  # no 2xx within the retry window, or the endpoint is no longer configured


class OutgoingWebhook(Base):
    """One event for one endpoint: the outbox of outgoing webhooks (drip.outgoing).

    Written in the transaction of what it reports, so it exists if and only if that was
    committed. ``body`` is the JSON posted, the same bytes on every attempt; ``message_id`` is
    its ``webhook-id``, by which a receiver recognizes a retry. No secret is stored here: the
    worker signs with the configured endpoint's.
    """

    __tablename__ = "outgoing_webhooks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(40))  # "msg_<32 hex>"
    event_type: Mapped[str] = mapped_column(String(40))  # drip.outgoing_endpoints.EVENT_TYPES
    endpoint_url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=OutgoingWebhookStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    # Due time of the next attempt (pending rows only); pushed ahead while an attempt runs.
    next_attempt_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        # Beat's query every few seconds: only pending rows, so finished ones cost nothing.
        Index(
            "ix_outgoing_webhooks_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )


class OutgoingWebhookAttempt(Base):
    """One attempt to post an :class:`OutgoingWebhook`: its answer or error, and how long."""

    __tablename__ = "outgoing_webhook_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("outgoing_webhooks.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # 1 for the first attempt
    at: Mapped[datetime]
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)  # None: no answer (error says why)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index(None, "webhook_id"),)
