"""broadcasts: audit trail, time-zone groups, scheduling and sending state (issue 6)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 21:00:00.000000

New columns of ``broadcasts`` are nullable, so existing rows need no default.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("local_wall_time", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("past_zones", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("quiet_hours", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("total", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("queued_all_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("runner", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "broadcast_events",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("broadcast_id", BIG_ID, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=24), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["broadcast_id"],
            ["broadcasts.id"],
            name=op.f("fk_broadcast_events_broadcast_id_broadcasts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcast_events")),
    )
    with op.batch_alter_table("broadcast_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_broadcast_events_broadcast_id"), ["broadcast_id"], unique=False
        )

    op.create_table(
        "broadcast_zones",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("broadcast_id", BIG_ID, nullable=False),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("zones", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("last_subscriber_id", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["broadcast_id"],
            ["broadcasts.id"],
            name=op.f("fk_broadcast_zones_broadcast_id_broadcasts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcast_zones")),
        sa.UniqueConstraint(
            "broadcast_id", "send_at", name=op.f("uq_broadcast_zones_broadcast_id_send_at")
        ),
    )


def downgrade() -> None:
    op.drop_table("broadcast_zones")
    with op.batch_alter_table("broadcast_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_broadcast_events_broadcast_id"))
    op.drop_table("broadcast_events")
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("runner")
        batch_op.drop_column("queued_all_at")
        batch_op.drop_column("total")
        batch_op.drop_column("quiet_hours")
        batch_op.drop_column("past_zones")
        batch_op.drop_column("local_wall_time")
