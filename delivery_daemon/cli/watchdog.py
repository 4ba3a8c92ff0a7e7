"""``delivery-daemon reconcile`` and ``delivery-daemon missed``: the missed-order watchdog by hand.

``delivery-daemon reconcile --config C [--store S] [--since 7d] [--json]`` runs the watchdog once now over store
``S`` (every store whose marketplace can list orders when omitted), from ``--since`` ago (default ``1d``) rather than
from the store's cursor, and with no grace for webhooks on their way: each paid order without a job is queued (the
running daemon's worker delivers it) or raised as missed. It prints one line per listed paid order with what was
done, then a summary per store. It needs the stores' credentials (the whole configuration, like ``serve``). Exit 0,
or 1 when a store's list could not be read (the line says why).

``delivery-daemon missed --config C [--store S] [--json]`` lists the open missed orders: paid orders the
marketplace lists that have no job and that the daemon cannot deliver without their webhook (SoftStore's delivery
token is only in the webhook). An order stops being listed as soon as a job exists for it (a late or resent webhook).
It reads only the database, like ``orders``. Exit 0 (1 with ``--fail-if-any`` when there is one, for monitoring).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from typing import Any

import structlog

from delivery_daemon.cli.connect import add_database_options, open_engine
from delivery_daemon.cli.options import add_config_option
from delivery_daemon.cli.orders import iso, parse_since
from delivery_daemon.errors import ConfigError
from delivery_daemon.tables import render_table

COMMANDS = {
    "reconcile": "list marketplaces' paid orders now; queue those without a job, or raise them as missed",
    "missed": "paid orders without a job the daemon cannot deliver: the seller must act",
}


async def _reconcile(settings: Any, store: str | None, since: float) -> list[Any]:
    from delivery_daemon.compose import build_daemon, default_marketplaces
    from delivery_daemon.generators.discovery import discover

    daemon = build_daemon(settings, marketplaces=default_marketplaces(), plugins=discover(settings.plugins.directory))
    try:
        watchdog = daemon.watchdog
        assert watchdog is not None
        names = watchdog.listed_stores()
        if store is not None:
            if store not in daemon.stores:
                raise ConfigError("stores", f"no store named {store!r}")
            if store not in names:
                index = next(i for i, s in enumerate(settings.stores) if s.name == store)
                raise ConfigError(
                    f"stores[{index}]",
                    f"store {store!r} cannot list its orders (its marketplace has no order list the daemon uses, or "
                    "a Sellix store has no api_key)",
                )
            names = [store]
        return [await watchdog.run_store(name, since, grace=0.0) for name in names]
    finally:
        await daemon.aclose()


def cmd_reconcile(args: argparse.Namespace) -> int:
    from delivery_daemon.clock import SystemClock
    from delivery_daemon.config import load_settings
    from delivery_daemon.logs import configure_logging

    settings = load_settings(args.config)
    if not structlog.is_configured():  # an embedding application's logging is left alone
        configure_logging(settings.logging.format, "warning", stream=sys.stderr)  # stdout is the report
    since = parse_since(args.since, SystemClock().now())
    reports = asyncio.run(_reconcile(settings, args.store, since))  # ConfigError: one line, exit 2 (cli.main)
    if args.json:
        print(json.dumps([_report_document(report) for report in reports], indent=2))
    else:
        for report in reports:
            rows = [
                (f.order_id, f.product_id, iso(f.placed_at), f.outcome.value, f.detail or "") for f in report.findings
            ]
            title = f"store {report.store}: paid orders listed since {iso(report.since)}"
            print(render_table(("order", "product", "placed", "outcome", "detail"), rows, title=title))
            counts = (
                ", ".join(f"{outcome} {n}" for outcome, n in _counts(report).items() if n) or "no paid orders listed"
            )
            print(f"  {report.pages} page(s): {counts}" + (f"; FAILED: {report.error}" if report.error else ""))
    return 1 if any(report.error for report in reports) else 0


def _counts(report: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for finding in report.findings:
        counts[finding.outcome.value] = counts.get(finding.outcome.value, 0) + 1
    return counts


def _report_document(report: Any) -> dict[str, Any]:
    return {
        "store": report.store,
        "since": iso(report.since),
        "pages": report.pages,
        "error": report.error,
        "cursor": iso(report.cursor),
        "counts": _counts(report),
        "orders": [
            {**dataclasses.asdict(f), "outcome": f.outcome.value, "placed_at": iso(f.placed_at)}
            for f in report.findings
        ],
    }


def cmd_missed(args: argparse.Namespace) -> int:
    from delivery_daemon.storage.missed import open_missed

    found = open_missed(open_engine(args), args.store, args.limit)
    if args.json:
        documents = [
            {**dataclasses.asdict(m), "placed_at": iso(m.placed_at), "found_at": iso(m.found_at)} for m in found
        ]
        print(json.dumps(documents, indent=2))
    else:
        rows = [(m.store, m.order_id, m.product_id, iso(m.placed_at), iso(m.found_at), m.reason) for m in found]
        title = "missed orders (no job; the seller must act), oldest found first"
        print(render_table(("store", "order", "product", "placed", "found", "why"), rows, title=title))
    return 1 if args.fail_if_any and found else 0


def register(sub: Any) -> None:
    """Add ``reconcile`` and ``missed`` to the CLI."""
    reconcile = sub.add_parser("reconcile", help=COMMANDS["reconcile"])
    add_config_option(reconcile)
    reconcile.add_argument("--store", help="one store (default: every store whose marketplace lists orders)")
    reconcile.add_argument("--since", default="1d", help="how far back: 30m, 12h, 7d or a date (default: 1d)")
    reconcile.add_argument("--json", action="store_true", help="one JSON document instead of tables")
    reconcile.set_defaults(func=cmd_reconcile)

    missed = sub.add_parser("missed", help=COMMANDS["missed"])
    add_database_options(missed)
    missed.add_argument("--store")
    missed.add_argument("--limit", type=int, default=500)
    missed.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    missed.add_argument("--fail-if-any", action="store_true", help="exit 1 when there is an open missed order")
    missed.set_defaults(func=cmd_missed)
