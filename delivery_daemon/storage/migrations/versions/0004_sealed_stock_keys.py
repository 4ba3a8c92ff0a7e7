"""Sealed stock keys: ``stock_keys.key_hash`` (HMAC of the key) carries the uniqueness the plaintext used to, and
``daemon_secrets`` holds the HMAC key.

Existing rows keep their plaintext ``key`` and a NULL ``key_hash`` here: a migration has no encryption key, so the
daemon seals them at its next start (:func:`delivery_daemon.storage.rekey.seal_at_start`) and compacts the SQLite file.
Until then they are still claimable (NULLs never conflict in a unique constraint). On SQLite the constraint change
rebuilds the table (Alembic's batch mode); the index ``ix_stock_keys_free`` is recreated with it.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "daemon_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("stock_keys") as batch:
        batch.add_column(sa.Column("key_hash", sa.String(length=64), nullable=True))
        batch.drop_constraint("uq_stock_keys_key", type_="unique")
        batch.create_unique_constraint("uq_stock_keys_key_hash", ["store", "product_id", "key_hash"])


def downgrade() -> None:
    # Only for a database whose keys are still plaintext: sealed keys are not unique as ciphertext and cannot be
    # read back by the previous release anyway.
    with op.batch_alter_table("stock_keys") as batch:
        batch.drop_constraint("uq_stock_keys_key_hash", type_="unique")
        batch.create_unique_constraint("uq_stock_keys_key", ["store", "product_id", "key"])
        batch.drop_column("key_hash")
    op.drop_table("daemon_secrets")
