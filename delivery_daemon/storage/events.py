"""Marketplace event ids already handled, so that a resent or replayed event is answered as a duplicate.

Stripe resends an event (same ``evt_…`` id) for up to three days; Standard Webhooks senders reuse the
``webhook-id``. Ids are kept for :data:`RETENTION` seconds, longer than either retries. An id is recorded only after
the event was handled (committed), so a failure in between makes the marketplace resend and the daemon handle it
again — which is safe, since orders are deduplicated by (store, order_id) and marking an order is idempotent.
"""

from __future__ import annotations

from sqlalchemy import and_, delete, select

from delivery_daemon.storage import dialect
from delivery_daemon.storage.models import WEBHOOK_EVENTS as EVENTS
from delivery_daemon.storage.queue import JobQueue

RETENTION = 7 * 86_400.0
"""Seconds an event id is remembered: more than Stripe's 3 days of retries, with margin for a daemon outage."""


class EventLog:
    """Seen event ids per store, in the queue's database and on its database thread."""

    def __init__(self, queue: JobQueue, retention: float = RETENTION) -> None:
        self.queue = queue
        self.retention = retention

    def _seen(self, store: str, event_id: str) -> bool:
        cutoff = self.queue.clock.now() - self.retention
        with self.queue.engine.connect() as conn:
            found = conn.execute(
                select(EVENTS.c.id).where(
                    and_(
                        EVENTS.c.store == store,
                        EVENTS.c.event_id == event_id,
                        EVENTS.c.received_at >= cutoff,
                    )
                )
            ).first()
        return found is not None

    async def seen(self, store: str, event_id: str) -> bool:
        """True when ``event_id`` was handled for ``store`` within the retention."""
        return await self.queue.run(self._seen, store, event_id)

    def _record(self, store: str, event_id: str) -> None:
        now = self.queue.clock.now()
        with self.queue.engine.begin() as conn:
            # Pruned here rather than by a scheduler: one indexed delete per recorded event is cheap.
            conn.execute(delete(EVENTS).where(EVENTS.c.received_at < now - self.retention))
            conn.execute(
                dialect.insert(self.queue.engine.dialect.name, EVENTS)
                .values(store=store, event_id=event_id, received_at=now)
                .on_conflict_do_nothing(index_elements=["store", "event_id"])
            )

    async def record(self, store: str, event_id: str) -> None:
        """Remember that ``event_id`` was handled (a second call changes nothing)."""
        await self.queue.run(self._record, store, event_id)
