"""tracking events: an append-only log, its delivery and subscriber ids not foreign keys

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 01:00:00.000000

Every stored event checked both ids against their tables, one lookup and one row lock each,
which was a third of the database's cost of ingesting a provider's batch. The ids are still
indexed; the one place that deletes subscribers (``drip.subscribers.signup.purge_pending``)
clears the ids of their events itself, as ``ON DELETE SET NULL`` did (docs/decisions.md).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DELIVERY_FK = "fk_tracking_events_delivery_id_deliveries"
SUBSCRIBER_FK = "fk_tracking_events_subscriber_id_subscribers"


def upgrade() -> None:
    with op.batch_alter_table("tracking_events", schema=None) as batch_op:
        batch_op.drop_constraint(DELIVERY_FK, type_="foreignkey")
        batch_op.drop_constraint(SUBSCRIBER_FK, type_="foreignkey")


def downgrade() -> None:
    # Ids left behind by a deletion that raced an ingest would fail the constraint: clear them.
    op.execute(
        "UPDATE tracking_events SET delivery_id = NULL WHERE delivery_id IS NOT NULL"
        " AND delivery_id NOT IN (SELECT id FROM deliveries)"
    )
    op.execute(
        "UPDATE tracking_events SET subscriber_id = NULL WHERE subscriber_id IS NOT NULL"
        " AND subscriber_id NOT IN (SELECT id FROM subscribers)"
    )
    with op.batch_alter_table("tracking_events", schema=None) as batch_op:
        batch_op.create_foreign_key(
            DELIVERY_FK, "deliveries", ["delivery_id"], ["id"], ondelete="SET NULL"
        )
        batch_op.create_foreign_key(
            SUBSCRIBER_FK, "subscribers", ["subscriber_id"], ["id"], ondelete="SET NULL"
        )
