"""The daemon with a Lemon Squeezy store and a Polar store, the reference Lemon Squeezy (its API and its webhooks)
and the seller's own system (the ``webhook`` channel), all on loopback sockets, on a :class:`ManualClock`."""

from __future__ import annotations

import contextlib
import io
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import Daemon, create_app, default_marketplaces
from delivery_daemon.config import parse_settings
from delivery_daemon.generators.discovery import discover
from delivery_daemon.http.serving import serve
from delivery_daemon.logs import configure_logging
from delivery_daemon.marketplaces.lemonsqueezy import LemonSqueezyAdapter
from delivery_daemon.reference.lemonsqueezy import LemonSqueezy
from delivery_daemon.reference.polar import PolarSender
from delivery_daemon.reference.polar import new_secret as new_polar_secret
from delivery_daemon.reference.standard_webhooks import SellerSystem, new_secret
from tests.support.multistore import PATTERN, free_port

LS_STORE = "lemon"
POLAR_STORE = "polar"


@dataclass
class LemonStack:
    daemon: Daemon
    url: str
    clock: ManualClock
    logs: io.StringIO
    market: LemonSqueezy
    seller: SellerSystem
    polar_secret: str

    def hook(self, store: str = LS_STORE) -> str:
        return f"{self.url}/webhooks/{store}"

    def down(self) -> None:
        """The daemon unreachable for Lemon Squeezy: its webhooks go to a port nobody listens on."""
        self.market.seller_url = f"http://127.0.0.1:{free_port()}/webhooks/{LS_STORE}"

    def up(self) -> None:
        self.market.seller_url = self.hook()

    def polar(self) -> PolarSender:
        return PolarSender(self.hook(POLAR_STORE), self.polar_secret, now=self.clock.now)

    @property
    def adapter(self) -> LemonSqueezyAdapter:
        adapter = self.daemon.stores[LS_STORE].marketplace
        assert isinstance(adapter, LemonSqueezyAdapter)
        return adapter

    async def drain(self) -> int:
        return await self.daemon.worker.drain()

    async def job(self, order_id: str, store: str = LS_STORE) -> Any:
        return await self.daemon.queue.find(store, order_id)


@contextlib.asynccontextmanager
async def lemon_stack(
    tmp_path: Path, *, database: str | None = None, server: dict[str, Any] | None = None
) -> AsyncIterator[LemonStack]:
    """The stack; ``database`` overrides the SQLite file (a PostgreSQL URL), ``server`` is the receiver's settings."""
    logs = io.StringIO()
    configure_logging("json", "debug", stream=logs)
    clock = ManualClock()
    market = LemonSqueezy(api_key=secrets.token_hex(20), secret=secrets.token_hex(16), now=clock.now)
    seller = SellerSystem(new_secret(), now=clock.now)
    polar_secret = new_polar_secret()
    async with serve(market.app) as api, serve(seller.app) as seller_server:
        channel = {
            "channel": "webhook",
            "webhook": {"url": f"{seller_server.url}/hooks/orders", "secret": seller.secret},
        }
        settings = parse_settings(
            {
                "database": {"url": database or f"sqlite:///{tmp_path / 'lemon.db'}"},
                "delivery": {"retry_schedule": [5, 300], "timeout": 10, "jitter": False},
                "worker": {"poll_interval": 60, "lease_seconds": 30},
                "security": {"allowed_networks": ["127.0.0.0/8"]},
                "stores": [
                    {
                        "name": LS_STORE,
                        "marketplace": "lemonsqueezy",
                        "api_url": api.url,
                        "api_key": market.api_key,
                        "store_id": market.store_id,
                        "webhook_secret": market.secret,
                        "delivery": channel,
                        "default": PATTERN,
                        "products": {"77:8": {**PATTERN, "options": {"pattern": "PRO-XXXX-XXXX"}}},
                    },
                    {
                        "name": POLAR_STORE,
                        "marketplace": "polar",
                        "webhook_secret": polar_secret,
                        "delivery": channel,
                        "default": PATTERN,
                    },
                ],
                **({"server": server} if server is not None else {}),
            },
            environ={},
        )
        app = create_app(
            settings, marketplaces=default_marketplaces(), plugins=discover(), clock=clock, start_worker=False
        )
        async with serve(app) as receiver:
            market.seller_url = f"{receiver.url}/webhooks/{LS_STORE}"
            yield LemonStack(app.state.daemon, receiver.url, clock, logs, market, seller, polar_secret)
