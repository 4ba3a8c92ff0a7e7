"""Alembic environment, run only from :mod:`delivery_daemon.storage.schema` with an open connection.

The caller passes the connection (inside its transaction, holding the migration lock) through
``config.attributes["connection"]``; there is no alembic.ini and no URL here, so nothing can migrate a database
other than the one the daemon was configured with.
"""

from __future__ import annotations

from alembic import context

from delivery_daemon.storage.models import METADATA

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - a programming error, not an operator one
    raise RuntimeError(
        "delivery_daemon migrations run from delivery_daemon.storage.schema.upgrade(), not the alembic CLI"
    )

# render_as_batch: SQLite cannot ALTER most things; batch mode rebuilds the table, and is a no-op on PostgreSQL.
context.configure(connection=connection, target_metadata=METADATA, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
