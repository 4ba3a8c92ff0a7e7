"""Retention: after ``retention.days``, a finished order keeps only a minimal audit row.

What is purged from a delivered, dead or cancelled job last changed more than ``days`` ago: the webhook payload
(delivery URL and token), the delivered content (the licence keys) and the buyer's e-mail. What stays: the job row
(store, order id, product, quantity, state, attempt count, times, last error) and its attempt history, plus one
attempt ``admin/purged`` saying when. Unfinished jobs are never touched. A purge is idempotent and works in
batches, so a large first purge does not hold the write lock for long.

The running daemon purges every ``retention.interval`` seconds (:class:`RetentionService`'s jobs on the daemon's one
APScheduler scheduler);
``delivery-daemon db purge`` does the same once, from a shell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import structlog
from sqlalchemy import Engine, and_, insert, or_, select, update

from delivery_daemon.clock import Clock
from delivery_daemon.storage.jobs import ATTEMPTS, JOBS
from delivery_daemon.storage.models import FINAL, RevocationState
from delivery_daemon.storage.revocations import REVOCATIONS

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler

log = structlog.get_logger("delivery_daemon.storage.retention")

BATCH = 500
EMPTY_PAYLOAD = "{}"


def purge(engine: Engine, clock: Clock, days: float, *, batch: int = BATCH) -> int:
    """Purge payload, content and e-mail of finished jobs older than ``days``; returns how many jobs."""
    now = clock.now()
    cutoff = now - days * 86400
    stale = and_(
        JOBS.c.state.in_(FINAL),
        JOBS.c.updated_at < cutoff,
        or_(JOBS.c.payload != EMPTY_PAYLOAD, JOBS.c.content.is_not(None), JOBS.c.buyer_email.is_not(None)),
    )
    total = 0
    while True:
        with engine.begin() as conn:
            ids = conn.execute(select(JOBS.c.id).where(stale).order_by(JOBS.c.id).limit(batch)).scalars().all()
            if not ids:
                return total
            rows = conn.execute(
                update(JOBS)
                .where(and_(JOBS.c.id.in_(ids), stale))
                .values(payload=EMPTY_PAYLOAD, content=None, buyer_email=None)
                .returning(JOBS.c.id, JOBS.c.state)
            ).fetchall()
            for job_id, state in rows:
                conn.execute(
                    insert(ATTEMPTS).values(job_id=job_id, at=now, step="admin", outcome="purged", state=state)
                )
            # The revoked keys of finished revocations go with the order's content (their hashes stay for the list).
            conn.execute(
                update(REVOCATIONS)
                .where(
                    and_(
                        REVOCATIONS.c.job_id.in_([job_id for job_id, _state in rows]),
                        REVOCATIONS.c.state.in_([RevocationState.DONE.value, RevocationState.DEAD.value]),
                    )
                )
                .values(content=None)
            )
            total += len(rows)


class RetentionService:
    """Runs :func:`purge` every ``interval`` seconds on the scheduler given to :meth:`schedule`."""

    def __init__(self, engine: Engine, clock: Clock, days: float, interval: float) -> None:
        self.engine = engine
        self.clock = clock
        self.days = days
        self.interval = interval

    async def run_once(self) -> int:
        try:
            purged = await anyio.to_thread.run_sync(purge, self.engine, self.clock, self.days)
        except Exception as exc:  # the next run tries again; the daemon keeps delivering
            log.error("retention.failed", error=f"{type(exc).__name__}: {exc}"[:300])
            return 0
        if purged:
            log.info("retention.purged", jobs=purged, older_than_days=self.days)
        return purged

    def schedule(self, scheduler: BaseScheduler) -> None:
        """Add the purge to ``scheduler``: every ``interval`` seconds, and once as soon as it runs (a daemon restarted
        daily would otherwise never purge). Scheduling again replaces these jobs instead of doubling them."""
        scheduler.add_job(
            self.run_once,
            "interval",
            seconds=self.interval,
            id="retention",
            max_instances=1,
            coalesce=True,
            replace_existing=True,
        )
        # No misfire limit: added before the scheduler starts, the run must not be dropped as "missed" if the start
        # comes more than APScheduler's default second later.
        scheduler.add_job(self.run_once, "date", id="retention-first", misfire_grace_time=None, replace_existing=True)
