"""tracking rollups: delivery_engagement and message_stats (issue 5)

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-25 20:41:00.147816

The counters of ``message_stats`` are kept up to date by the send path (``sent``) and by the
event ingest (the rest). Deliveries sent before this migration are counted here, once.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "message_stats",
        sa.Column("message_key", sa.String(length=128), nullable=False),
        sa.Column("sent", sa.BigInteger(), nullable=False),
        sa.Column("delivered", sa.BigInteger(), nullable=False),
        sa.Column("bounced", sa.BigInteger(), nullable=False),
        sa.Column("opened", sa.BigInteger(), nullable=False),
        sa.Column("clicked", sa.BigInteger(), nullable=False),
        sa.Column("complained", sa.BigInteger(), nullable=False),
        sa.Column("unsubscribed", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("message_key", name=op.f("pk_message_stats")),
    )
    op.create_table(
        "delivery_engagement",
        sa.Column(
            "delivery_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("message_key", sa.String(length=128), nullable=False),
        sa.Column("subscriber_id", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("clicked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("bounced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("complained_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unsubscribed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_delivery_engagement_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_delivery_engagement")),
    )
    with op.batch_alter_table("delivery_engagement", schema=None) as batch_op:
        batch_op.create_index(
            "ix_delivery_engagement_clicked",
            ["message_key", "subscriber_id"],
            unique=False,
            postgresql_where=sa.text("clicked_at IS NOT NULL"),
            sqlite_where=sa.text("clicked_at IS NOT NULL"),
        )
    # Deliveries sent before the counters existed (portable SQL: SQLite and PostgreSQL).
    op.execute(
        "INSERT INTO message_stats"
        " (message_key, sent, delivered, bounced, opened, clicked, complained, unsubscribed)"
        " SELECT message_key, count(*), 0, 0, 0, 0, 0, 0 FROM deliveries"
        " WHERE status = 'sent' GROUP BY message_key"
    )


def downgrade() -> None:
    with op.batch_alter_table("delivery_engagement", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_delivery_engagement_clicked",
            postgresql_where=sa.text("clicked_at IS NOT NULL"),
            sqlite_where=sa.text("clicked_at IS NOT NULL"),
        )
    op.drop_table("delivery_engagement")
    op.drop_table("message_stats")
