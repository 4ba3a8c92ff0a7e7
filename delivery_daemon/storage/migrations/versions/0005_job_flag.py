"""``jobs.flag``: a refund or dispute the marketplace reported for a leased or delivered order.

``refunded`` / ``disputed`` on a running job means the refund is pending (its worker settles it: cancelled if
nothing was sent, delivered and flagged if the attempt succeeded); on a delivered job it means a refunded or
disputed buyer holds the keys. Existing rows get NULL: an order an earlier release flagged after delivery keeps
saying so in ``last_error`` only.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # A plain ALTER TABLE … ADD COLUMN on both dialects: no table rebuild (which would drop 0002's trigger).
    op.add_column("jobs", sa.Column("flag", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("flag")
