"""outgoing webhooks: the outbox of events for the coach's other tools, and each attempt

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 09:00:00.000000

``outgoing_webhooks`` holds one row per (event, endpoint that wants it), written in the
transaction of what the event reports; beat's task posts the due ones (drip.outgoing.delivery).
The partial index keeps the due query to the pending rows. ``outgoing_webhook_attempts`` logs
every attempt (status code or error, duration).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PENDING = "status = 'pending'"


def upgrade() -> None:
    op.create_table(
        "outgoing_webhooks",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("endpoint_url", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outgoing_webhooks")),
    )
    op.create_index(
        "ix_outgoing_webhooks_due",
        "outgoing_webhooks",
        ["next_attempt_at"],
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )
    op.create_table(
        "outgoing_webhook_attempts",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("webhook_id", BIG_ID, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["outgoing_webhooks.id"],
            name=op.f("fk_outgoing_webhook_attempts_webhook_id_outgoing_webhooks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outgoing_webhook_attempts")),
    )
    op.create_index(
        op.f("ix_outgoing_webhook_attempts_webhook_id"),
        "outgoing_webhook_attempts",
        ["webhook_id"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_outgoing_webhook_attempts_webhook_id"), table_name="outgoing_webhook_attempts"
    )
    op.drop_table("outgoing_webhook_attempts")
    op.drop_index("ix_outgoing_webhooks_due", table_name="outgoing_webhooks")
    op.drop_table("outgoing_webhooks")
