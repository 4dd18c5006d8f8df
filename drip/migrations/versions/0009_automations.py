"""automations: many sequences started and ended by triggers, signup forms, re-entry

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 23:20:00.000000

``enrollments.entry`` counts the times a subscriber went through a sequence (a sequence may allow
re-entry after it was completed or exited: the same row starts over); ``enrollments.trigger``
records what started it. ``subscribers.form`` is the signup form a subscriber came through.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("entry", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("trigger", sa.String(length=100), nullable=True))
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("form", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.drop_column("form")
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_column("trigger")
        batch_op.drop_column("entry")
