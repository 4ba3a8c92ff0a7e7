"""``revocations`` (a content to take back, a durable step of its order), ``jobs.issue``, ``stock_keys.revoked_at``.

A row is written in the same transaction as what caused it (a refund, dispute or cancellation of an order whose
content was stored, an operator's ``orders revoke`` or ``orders reissue``) and the worker runs it: the generator's
revocation hook once, then (for a content that went out) the channel's ``order.revoked`` event. ``(job_id, issue)``
is unique, so one content is revoked once however many refunds and disputes arrive. ``content`` is a sealed copy of
what is revoked: it stays in the order's history when a re-issue replaces the job's content.

``jobs.issue`` counts the contents an order has had (0 for the first); ``stock_keys.revoked_at`` marks a pool key
whose order was refunded, disputed or revoked after it went out, so it never returns to the pool. Existing rows get
0 / NULL.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Plain ALTER TABLE … ADD COLUMN on both dialects: no table rebuild (which would drop 0002's trigger).
    op.add_column("jobs", sa.Column("issue", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("stock_keys", sa.Column("revoked_at", sa.Float(), nullable=True))
    op.create_table(
        "revocations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("issue", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("sent", sa.Boolean(), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("key_hashes", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.Float(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("hook_done_at", sa.Float(), nullable=True),
        sa.Column("notified_at", sa.Float(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "issue", name="uq_revocations_job_issue"),
    )
    op.create_index("ix_revocations_state_due", "revocations", ["state", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_revocations_state_due", table_name="revocations")
    op.drop_table("revocations")
    with op.batch_alter_table("stock_keys") as batch:
        batch.drop_column("revoked_at")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("issue")
