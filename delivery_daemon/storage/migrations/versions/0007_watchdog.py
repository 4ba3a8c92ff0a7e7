"""``watchdog_cursors`` and ``missed_orders``: the missed-order watchdog's memory (issue #24).

``watchdog_cursors`` holds, per store, the creation time from which the next run lists the marketplace's paid orders;
``missed_orders`` the paid orders found without a job that the daemon could not queue (the seller must act). Both are
new tables: existing rows of other tables are untouched, and a database without them simply starts each store's
cursor at ``watchdog.lookback``.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "watchdog_cursors",
        sa.Column("store", sa.String(length=64), nullable=False),
        sa.Column("since", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("store"),
    )
    op.create_table(
        "missed_orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("marketplace", sa.String(length=32), nullable=False),
        sa.Column("product_id", sa.String(length=128), nullable=False),
        sa.Column("placed_at", sa.Float(), nullable=False),
        sa.Column("found_at", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("store", "order_id", name="uq_missed_orders_store_order"),
    )
    op.create_index("ix_missed_orders_found_at", "missed_orders", ["found_at"])


def downgrade() -> None:
    op.drop_index("ix_missed_orders_found_at", table_name="missed_orders")
    op.drop_table("missed_orders")
    op.drop_table("watchdog_cursors")
