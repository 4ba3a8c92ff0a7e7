"""The live worker never has more than ``worker.concurrency`` generator calls or deliveries in flight.

A generator and the transport to the reference marketplace record how many calls are inside them at once; one
of the two is held shut and let through one call at a time, so the queue (more orders than the bound) presses
against the limit for the whole run.
"""

from __future__ import annotations

import asyncio
import io
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import create_app, default_marketplaces
from delivery_daemon.config import parse_settings
from delivery_daemon.generators.contract import Generated, NoOptions, OrderContext
from delivery_daemon.generators.discovery import discover
from delivery_daemon.http.serving import serve
from delivery_daemon.logs import configure_logging
from delivery_daemon.reference.softstore import SoftStoreMarketplace

BOUND = 3
ORDERS = 10


@dataclass
class Gate:
    """Counts calls inside it (now and at most); when ``held``, each call waits for a ticket from ``let_one``."""

    held: bool
    inside: int = 0
    peak: int = 0
    entered: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    tickets: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(0))

    async def __aenter__(self) -> None:
        async with self.changed:
            self.inside += 1
            self.entered += 1
            self.peak = max(self.peak, self.inside)
            self.changed.notify_all()
        if self.held:
            await self.tickets.acquire()

    async def __aexit__(self, *exc: object) -> None:
        async with self.changed:
            self.inside -= 1
            self.changed.notify_all()

    async def until(self, entered: int) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.entered >= entered), 30)

    def let_one(self) -> None:
        self.tickets.release()


def gated_generator(gate: Gate) -> type:
    """A generator plugin (name ``counted``) whose calls pass through ``gate``; keys ``K-<order>-<i>``."""

    class Counted:
        name = "counted"
        Options = NoOptions

        def __init__(self, options: NoOptions) -> None:
            self.options = options

        async def generate(self, order: OrderContext) -> Generated:
            async with gate:
                return Generated(tuple(f"K-{order.order_id}-{i}" for i in range(order.quantity)))

    return Counted


class GatedTransport(httpx.AsyncBaseTransport):
    """Real HTTP to the marketplace; delivery POSTs pass through ``gate``."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "/orders/delivery/" not in request.url.path:
            return await self.inner.handle_async_request(request)
        async with self.gate:
            response = await self.inner.handle_async_request(request)
            await response.aread()
            return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("held", ["generate", "deliver"])
async def test_in_flight_generator_calls_and_deliveries_stay_within_concurrency(tmp_path: Path, held: str) -> None:
    """With 10 orders queued and worker.concurrency=3, at most 3 generator calls and 3 deliveries run at once."""
    configure_logging("json", "error", stream=io.StringIO())
    generating, delivering = Gate(held=held == "generate"), Gate(held=held == "deliver")

    Counted = gated_generator(generating)
    api_key = secrets.token_hex(20)
    market = SoftStoreMarketplace(api_key=api_key)
    market.add_product("p", count=100)
    async with serve(market.app) as market_server:
        market.bind(market_server.url)
        settings = parse_settings(
            {
                "database": {"url": f"sqlite:///{tmp_path / 'd.db'}"},
                "worker": {"concurrency": BOUND, "claim_batch": 32, "poll_interval": 60},
                "stores": [
                    {
                        "name": "shop",
                        "marketplace": "softstore",
                        "api_url": market.api_base,
                        "api_key": api_key,
                        "default": {"generator": "counted"},
                    }
                ],
            },
            environ={},
        )
        plugins: dict[str, Any] = {**dict(discover()), "counted": Counted}
        app = create_app(
            settings,
            marketplaces=default_marketplaces(),
            plugins=plugins,
            clock=ManualClock(),
            transport=GatedTransport(delivering),
            start_worker=True,
        )
        async with serve(app) as daemon:
            market.seller_url = f"{daemon.url}/webhooks/shop"
            placed = [await market.place_order("p", 1) for _ in range(ORDERS)]
            assert all(p.webhook_status == 200 for p in placed)
            gate = generating if held == "generate" else delivering
            await gate.until(BOUND)  # the worker filled every slot ...
            for n in range(BOUND + 1, ORDERS + 1):  # ... and each slot freed lets exactly one more in
                gate.let_one()
                await gate.until(n)
            for _ in range(BOUND):
                gate.let_one()
            async with delivering.changed:
                await asyncio.wait_for(
                    delivering.changed.wait_for(lambda: delivering.entered >= ORDERS and delivering.inside == 0), 30
                )
    assert all(market.accepted(p.id_order) is not None for p in placed)
    assert gate.peak == BOUND  # reached: the test pressed against the bound
    assert generating.peak <= BOUND and delivering.peak <= BOUND
