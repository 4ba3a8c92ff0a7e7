"""``webhook_events`` (marketplace event ids already handled) and ``stock_keys`` (the pre-made key pool), exactly
as the release that added them made them with ``create_all``.

Databases created by that release (every table, no ``alembic_version``) are stamped at this revision instead of
running it (see :mod:`delivery_daemon.storage.schema`).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("store", "event_id", name="uq_webhook_events_store_event"),
    )
    op.create_index("ix_webhook_events_received_at", "webhook_events", ["received_at"])
    op.create_table(
        "stock_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store", sa.String(length=64), nullable=False),
        sa.Column("product_id", sa.String(length=128), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("imported_at", sa.Float(), nullable=False),
        sa.Column("claimed_by", sa.String(length=256), nullable=True),
        sa.Column("claimed_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("store", "product_id", "key", name="uq_stock_keys_key"),
    )
    op.create_index("ix_stock_keys_free", "stock_keys", ["store", "product_id", "claimed_by"])


def downgrade() -> None:
    op.drop_index("ix_stock_keys_free", table_name="stock_keys")
    op.drop_table("stock_keys")
    op.drop_index("ix_webhook_events_received_at", table_name="webhook_events")
    op.drop_table("webhook_events")
