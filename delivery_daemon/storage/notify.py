"""Cross-replica wake-up on PostgreSQL: ``LISTEN delivery_daemon_jobs`` and wake the local worker on each NOTIFY.

The NOTIFY itself is sent by the database (migration ``0002``'s trigger, at commit of any transaction that made a
job ``queued``), so a webhook received by one replica is picked up at once by whichever replica is idle. The
listener holds one dedicated connection per replica. If it drops, the listener reconnects with capped exponential
backoff and wakes the worker once on reconnecting (a notification sent while nobody listened is lost); meanwhile
the worker's periodic poll (``worker.poll_interval``) is the fallback, so a lost notification delays a job by at
most one poll, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from sqlalchemy.engine import make_url

log = structlog.get_logger("delivery_daemon.storage.notify")

CHANNEL = "delivery_daemon_jobs"
"""The channel migration 0002's trigger notifies; keep the two in step."""


def libpq_url(url: str) -> str | None:
    """The libpq connection URI for a SQLAlchemy PostgreSQL URL (driver suffix dropped); None for other backends."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return None
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """Calls ``wake()`` whenever another process commits a runnable job. Start with :meth:`start`."""

    def __init__(self, conninfo: str, wake: Callable[[], None], *, max_backoff: float = 30.0) -> None:
        self._conninfo = conninfo
        self._wake = wake
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        """Set while the LISTEN connection is up (tests wait on it instead of sleeping)."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notify-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.listening.clear()

    async def _run(self) -> None:
        # Imported only when a listener runs (PostgreSQL): psycopg and libpq cost ~9 MB of RSS that a SQLite daemon
        # would carry for nothing.
        import psycopg

        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    delay = 0.5
                    log.info("notify.listening", channel=CHANNEL)
                    self._wake()  # catch whatever was committed while nobody listened
                    async for _notification in conn.notifies():
                        self._wake()
            except (psycopg.Error, OSError) as exc:
                # Type and SQLSTATE only: libpq messages can echo connection parameters.
                self.listening.clear()
                log.warning(
                    "notify.disconnected",
                    error=type(exc).__name__,
                    sqlstate=getattr(exc, "sqlstate", None),
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)


def listener_for(url: str, wake: Callable[[], None]) -> Listener | None:
    """A listener for ``url`` if it is a PostgreSQL database, else None (SQLite wakes in-process)."""
    conninfo = libpq_url(url)
    return Listener(conninfo, wake) if conninfo is not None else None
