"""``ix_attempts_step_outcome`` on ``attempts (step, outcome, job_id)``: the after-delivery sweep's lookup.

Every periodic run the follow-up sweep (``storage.followups.pending``) asks which delivered jobs already have a
finished ``fulfil`` step (``step = 'fulfil' AND outcome IN ('ok', 'dead')``). With only ``ix_attempts_job_id`` that
subquery scans the whole history table, which grows with every order of every store; with this index it reads only
the finished rows of that step (index only: ``job_id`` is in it).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_attempts_step_outcome", "attempts", ["step", "outcome", "job_id"])


def downgrade() -> None:
    op.drop_index("ix_attempts_step_outcome", table_name="attempts")
