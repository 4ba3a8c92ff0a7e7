"""Serve the status page on its own address (``status.host``/``status.port``), in the daemon's event loop.

The receiver's port stays webhook-only: the status page is a second uvicorn server started in the daemon app's
lifespan, so it lives and dies with the daemon and never needs a second process.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import structlog

from ..serving import RunningServer, serve
from .routes import create_status_app

if TYPE_CHECKING:
    from ..app import Daemon

log = structlog.get_logger("delivery_daemon.status")


@contextlib.asynccontextmanager
async def serve_status(daemon: Daemon) -> AsyncIterator[RunningServer | None]:
    """Run the status page for the block when ``status.enabled``; yields its server, or None when disabled."""
    settings = daemon.settings.status
    if not settings.enabled:
        yield None
        return
    app = create_status_app(daemon, settings)
    async with serve(app, settings.host, settings.port) as running:
        log.info("status.serving", url=running.url)
        yield running
