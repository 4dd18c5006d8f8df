"""deliveries: when a row was last queued, and an index of the rows a person must look at

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 20:00:00.000000

``queued_at`` starts the retry window of an email that certainly did not go out
(``DRIP_SEND_RETRY_HOURS``); a failed lesson queued again the next day starts a new window.
NULL in older rows means ``created_at``. The partial index keeps the ``unknown`` and ``failed``
rows (few) findable without scanning every delivery: the event ingest asks "is anything
unknown?" on every batch, and ``drip deliveries`` lists them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = "status IN ('unknown', 'failed')"


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_deliveries_unsettled",
        "deliveries",
        ["status", "updated_at"],
        postgresql_where=sa.text(WHERE),
        sqlite_where=sa.text(WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_unsettled", table_name="deliveries")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("queued_at")
