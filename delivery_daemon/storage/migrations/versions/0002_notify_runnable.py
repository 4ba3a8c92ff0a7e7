"""PostgreSQL only: announce every job that becomes ``queued`` on the ``delivery_daemon_jobs`` channel.

The trigger runs inside the writer's transaction and PostgreSQL delivers the NOTIFY at commit (never for a rolled
back insert), so idle replicas listening with :mod:`delivery_daemon.storage.notify` wake as soon as a webhook
committed on any replica — whatever code path committed it (single insert, group commit, requeue, expired lease).
Identical notifications within one transaction are folded into one by the server. SQLite has a single process per
database and wakes its worker in-process, so there is nothing to do there.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

CHANNEL = "delivery_daemon_jobs"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"""
        CREATE OR REPLACE FUNCTION delivery_daemon_notify_runnable() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE TRIGGER jobs_notify_runnable
        AFTER INSERT OR UPDATE OF state ON jobs
        FOR EACH ROW WHEN (NEW.state = 'queued')
        EXECUTE FUNCTION delivery_daemon_notify_runnable()
    """)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS jobs_notify_runnable ON jobs")
    op.execute("DROP FUNCTION IF EXISTS delivery_daemon_notify_runnable()")
