"""Stock sync from a command's own process (``stock import``, ``softstore sync-stock``): the shipped marketplaces,
the configured plugins, one line per product (see :mod:`delivery_daemon.stock.sync` for what a sync does).

The commands import this module when they sync, not at start: it loads the stores' machinery and every marketplace.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import structlog

from delivery_daemon.compose import default_marketplaces
from delivery_daemon.config import Settings
from delivery_daemon.generators.discovery import discover
from delivery_daemon.logs import configure_logging
from delivery_daemon.stock.sync import SyncResult, sync_once


async def sync_for_command(
    settings: Settings, *, stores: Sequence[str], product: str | None, log_level: str, pool: str | None = None
) -> list[SyncResult]:
    """:func:`~delivery_daemon.stock.sync.sync_once` as a command runs it: the shipped marketplaces, the configured
    plugins, and logging to stderr at ``log_level`` unless an embedding application configured it (stdout is the
    command's output)."""
    if not structlog.is_configured():
        configure_logging(settings.logging.format, log_level, stream=sys.stderr)
    return await sync_once(
        settings,
        marketplaces=default_marketplaces(),
        plugins=discover(settings.plugins.directory),
        stores=stores,
        product=product,
        pool=pool,
    )


def describe(result: SyncResult) -> str:
    """One line for a command's output."""
    where = f"{result.store}/{result.product_id}"
    if result.outcome == "failed":
        return f"{where}: sync failed: {result.error}"
    if result.outcome == "unchanged":
        return f"{where}: listed count {result.count} (unchanged)"
    return f"{where}: listed count {result.before} -> {result.count}"
