"""send path: index only the deliveries that have a provider message id

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 23:45:00.000000

A delivery row is written three times on its way out (queued, sending, sent), and each write of
a row whose indexed columns change adds an entry to every index that covers it. Rows waiting
or in flight have no provider message id, so a partial index skips two of those entries per
email; lookups by message id (the event webhooks) name a non-NULL id anyway.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = "provider_message_id IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_provider_message_id")
        batch_op.create_index(
            "ix_deliveries_provider_message_id",
            ["provider_message_id"],
            unique=False,
            postgresql_where=sa.text(WHERE),
            sqlite_where=sa.text(WHERE),
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_provider_message_id")
        batch_op.create_index(
            "ix_deliveries_provider_message_id", ["provider_message_id"], unique=False
        )
