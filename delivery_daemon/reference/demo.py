"""``delivery-daemon demo``: the whole path on this machine, with nothing to configure.

Starts the reference SoftStore marketplace and the daemon on free loopback ports with a temporary database, places
orders of mixed quantities (one delivery is made to fail once, to show a retry), shows progress, prints a table and
returns 0 only if every order was delivered exactly once with the right number of keys.

The progress, the table and the verdict (:class:`Row`, :func:`follow`, :func:`report`) are shared with the other
marketplaces' demos (``demo_webhooks``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from delivery_daemon.compose import create_app, default_marketplaces
from delivery_daemon.config import parse_settings
from delivery_daemon.generators.discovery import discover
from delivery_daemon.http.serving import serve
from delivery_daemon.logs import configure_logging
from delivery_daemon.reference.softstore import SoftStoreMarketplace
from delivery_daemon.tables import Column, render_table

PRODUCTS = {
    "win11-pro": {"pattern": "XXXXX-XXXXX-XXXXX-XXXXX-XXXXX"},
    "office-2024": {"pattern": "XXXX-XXXX-XXXX-XXXX", "prefix": "OFF-"},
}
TEMPLATE = "Thank you for order {order_id}. Your key(s):\n{keys_lines}"


@dataclass
class Row:
    order_id: str
    product: str
    quantity: int
    placed_at: float
    keys: int = 0
    accepted: int = 0
    latency_ms: float | None = None
    channel: str = ""  # how it reached the buyer; shown as a column when set (the SoftStore demo leaves it out)
    fulfilled: int | None = None  # times the shop's order was marked fulfilled; None: the marketplace has no such step

    @property
    def ok(self) -> bool:
        return self.accepted == 1 and self.keys == self.quantity and self.fulfilled in (None, 1)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _colour(text: str, code: str, stream: TextIO) -> str:
    """``text`` in an ANSI colour on a terminal (unless $NO_COLOR is set), as is anywhere else."""
    if not _is_terminal(stream) or os.environ.get("NO_COLOR"):
        return text
    return f"\x1b[{code}m{text}\x1b[0m"


def say(stream: TextIO, text: str) -> None:
    print(text, file=stream, flush=True)


async def run_demo(
    orders: int = 6, stream: TextIO | None = None, deadline_s: float = 60.0, title: str = "delivery-daemon demo"
) -> int:
    """Run the demo, writing to ``stream`` (default: stdout); 0 if every order was delivered exactly once."""
    stream = stream or sys.stdout
    configure_logging("console", "error", stream=sys.stderr)  # the table is the output; errors still show
    api_key = secrets.token_hex(20)
    market = SoftStoreMarketplace(api_key=api_key)
    for product_id in PRODUCTS:
        market.add_product(product_id, count=1000)
    with tempfile.TemporaryDirectory(prefix="delivery-daemon-demo-") as tmp:
        async with serve(market.app) as market_server:
            market.bind(market_server.url)
            settings = parse_settings(
                {
                    "database": {"url": f"sqlite:///{Path(tmp) / 'demo.db'}"},
                    "delivery": {"retry_schedule": [0.3, 1, 2, 5], "timeout": 5},
                    "worker": {"poll_interval": 0.2},
                    "stores": [
                        {
                            "name": "demo",
                            "marketplace": "softstore",
                            "api_url": market.api_base,
                            "api_key": api_key,
                            "products": {
                                pid: {"generator": "pattern", "options": options, "template": TEMPLATE}
                                for pid, options in PRODUCTS.items()
                            },
                        }
                    ],
                },
                environ={},
            )
            app = create_app(settings, marketplaces=default_marketplaces(), plugins=discover())
            async with serve(app) as daemon_server:
                market.seller_url = f"{daemon_server.url}/webhooks/demo"
                say(stream, f"reference marketplace at {market_server.url}, daemon at {daemon_server.url}")
                market.faults.fail_next_deliveries(1, status=503)  # one retry, to show the machinery
                rows = await _place(market, orders)
                await follow(rows, lambda row: _refresh(market, row), stream, deadline_s)
    return report(rows, stream, title)


def report(rows: list[Row], stream: TextIO, title: str = "delivery-daemon demo") -> int:
    """Print the table and the verdict; 0 only if every order was delivered exactly once with all its keys."""
    say(stream, _table(rows, title))
    bad = [row for row in rows if not row.ok]
    if bad:
        say(stream, _colour(f"{len(bad)} of {len(rows)} orders were not delivered exactly once", "31", stream))
        return 1
    say(stream, _colour(f"all {len(rows)} orders delivered exactly once", "32", stream))
    return 0


async def _place(market: SoftStoreMarketplace, orders: int) -> list[Row]:
    products = list(PRODUCTS)
    rows = []
    for index in range(orders):
        product = products[index % len(products)]
        quantity = 1 + index % 3
        placed_at = time.time()
        placed = await market.place_order(product, quantity)
        rows.append(Row(placed.id_order, product, quantity, placed_at))
    return rows


def _refresh(market: SoftStoreMarketplace, row: Row) -> None:
    accepted = [d for d in market.deliveries(row.order_id) if d.status == 200]
    row.accepted = len(accepted)
    if accepted:
        body = accepted[0].json
        text = str(body.get("text", "")) if isinstance(body, dict) else ""
        row.keys = len([line for line in text.splitlines()[1:] if line.strip()])
        row.latency_ms = (accepted[0].at - row.placed_at) * 1000


class _Progress:
    """ "delivering 3/6 after 0.8 s": on a terminal one line rewritten in place and erased at the end; elsewhere
    (a pipe, a log file) a line each time the count of delivered orders changes."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream, self.total = stream, total
        self.terminal = _is_terminal(stream)
        self.started = time.monotonic()
        self.done: int | None = None
        self.shown = ""

    def update(self, done: int) -> None:
        if done == self.done and not self.terminal:
            return
        self.done = done
        text = f"delivering {done}/{self.total} after {time.monotonic() - self.started:.1f} s"
        if self.terminal:
            self.stream.write("\r" + text.ljust(len(self.shown)))
            self.stream.flush()
            self.shown = text
        else:
            say(self.stream, text)

    def close(self) -> None:
        if self.terminal and self.shown:
            self.stream.write("\r" + " " * len(self.shown) + "\r")
            self.stream.flush()


async def follow(rows: list[Row], refresh: Callable[[Row], None], stream: TextIO, deadline_s: float) -> None:
    """Show progress until every row has a delivery (``refresh`` updates one row from what the buyer's side saw) or
    the deadline passes, then look once more after a short wait, so a late duplicate shows."""
    progress = _Progress(stream, len(rows))
    deadline = time.monotonic() + deadline_s
    try:
        while time.monotonic() < deadline:
            for row in rows:
                refresh(row)
            done = sum(1 for row in rows if row.accepted)
            progress.update(done)
            if done == len(rows):
                break
            await asyncio.sleep(0.05)
    finally:
        progress.close()
    await asyncio.sleep(0.3)  # a late duplicate delivery would show up in this window
    for row in rows:
        refresh(row)


def _table(rows: list[Row], title: str = "delivery-daemon demo") -> str:
    """The demo's result table; long order ids are abbreviated (the demo's marketplace is gone when it is printed),
    ids of up to 13 characters are shown whole; a ``channel`` column when the rows name their channel, a ``shop
    order`` column when the marketplace's order is marked fulfilled after delivery."""
    channel = any(row.channel for row in rows)
    shop = any(row.fulfilled is not None for row in rows)
    names = (
        "order",
        "product",
        "quantity",
        *(("channel",) if channel else ()),
        "keys",
        *(("shop order",) if shop else ()),
        "latency",
        "result",
    )
    columns = [Column(name, "right" if name in ("quantity", "keys", "latency") else "left") for name in names]
    return render_table(
        columns,
        [
            (
                row.order_id if len(row.order_id) <= 13 else row.order_id[:12] + "…",
                row.product,
                row.quantity,
                *((row.channel,) if channel else ()),
                row.keys,
                *((_fulfilment(row.fulfilled),) if shop else ()),
                f"{row.latency_ms:.0f} ms" if row.latency_ms is not None else "-",
                "delivered once" if row.ok else f"accepted {row.accepted}x",
            )
            for row in rows
        ],
        title=title,
    )


def _fulfilment(times: int | None) -> str:
    return {None: "-", 0: "not fulfilled", 1: "fulfilled"}.get(times, f"fulfilled {times}x")
