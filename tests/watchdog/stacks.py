"""The daemon with one store per marketplace that can list its orders, each against its reference marketplace on
loopback: ``soft`` (SoftStore, delivered through SoftStore's API), ``sellix`` (Sellix with an API secret, delivered by
email) and ``vs`` (Virtual Stores, delivered by email), plus a real SMTP server (aiosmtpd). Every marketplace dates its
orders with the daemon's :class:`ManualClock`."""

from __future__ import annotations

import contextlib
import io
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller

from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import Daemon, create_app, default_marketplaces
from delivery_daemon.config import Settings, parse_settings
from delivery_daemon.generators.discovery import discover
from delivery_daemon.http.serving import serve
from delivery_daemon.logs import configure_logging
from delivery_daemon.reference.sellix import SellixSender
from delivery_daemon.reference.sellix_shop import SellixShop
from delivery_daemon.reference.softstore import SoftStoreMarketplace
from delivery_daemon.reference.stripe_store import StripeStoreSender
from delivery_daemon.reference.virtual_stores import STAFF_EMAIL, VirtualStoresShop
from delivery_daemon.watchdog.patrol import Watchdog
from tests.support.multistore import Mailbox, _authenticator, free_port

PATTERN = {"generator": "pattern", "options": {"pattern": "XXXX-XXXX-XXXX"}}
EBOOK = [{"product_id": "ebook", "quantity": 2, "unit_price": "9.90", "name": "E-book"}]


@dataclass
class Watched:
    daemon: Daemon
    settings: Settings
    clock: ManualClock
    logs: io.StringIO
    mailbox: Mailbox
    soft: SoftStoreMarketplace
    sellix: SellixShop
    vs: VirtualStoresShop
    vs_sender: StripeStoreSender
    url: str
    document: dict[str, Any]
    """The configuration the daemon was built from (for commands run against the same stores)."""

    @property
    def watchdog(self) -> Watchdog:
        assert self.daemon.watchdog is not None
        return self.daemon.watchdog

    async def drain(self) -> int:
        return await self.daemon.worker.drain()

    async def job(self, store: str, order_id: str) -> Any:
        return await self.daemon.queue.find(store, order_id)

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.logs.getvalue().splitlines() if line.startswith("{")]
        return [line for line in lines if line["event"] == name]


@contextlib.asynccontextmanager
async def watched(
    db_url: str, *, sellix_page_size: int = 20, watchdog: dict[str, Any] | None = None
) -> AsyncIterator[Watched]:
    logs = io.StringIO()
    configure_logging("json", "debug", stream=logs)
    clock = ManualClock()
    soft_key, sellix_key = secrets.token_hex(20), secrets.token_hex(24)
    soft = SoftStoreMarketplace(api_key=soft_key, clock=clock.now)
    soft.add_product("prod-1", count=1000)
    sellix = SellixShop(sellix_key, now=clock.now, page_size=sellix_page_size)
    sellix_secret = secrets.token_hex(16)
    vs = VirtualStoresShop(now=clock.now)
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=port, auth_require_tls=False, authenticator=_authenticator
    )
    controller.start()
    email = {
        "channel": "email",
        "email": {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "username": "seller",
            "password": "smtp-pass-123",
            "sender": "shop@example.org",
        },
    }
    try:
        async with serve(soft.app) as soft_server, serve(sellix.app) as sellix_server, serve(vs.app) as vs_server:
            soft.bind(soft_server.url)
            document: dict[str, Any] = {
                "database": {"url": db_url},
                "delivery": {"retry_schedule": [5, 300], "timeout": 10, "jitter": False},
                "worker": {"poll_interval": 60, "lease_seconds": 30},
                "security": {"allowed_networks": ["127.0.0.0/8"]},
                "watchdog": watchdog or {},
                "stores": [
                    {
                        "name": "soft",
                        "marketplace": "softstore",
                        "api_url": soft.api_base,
                        "api_key": soft_key,
                        "default": PATTERN,
                    },
                    {
                        "name": "sellix",
                        "marketplace": "sellix",
                        "api_url": sellix_server.url,
                        "api_key": sellix_key,
                        "webhook_secret": sellix_secret,
                        "delivery": email,
                        "default": PATTERN,
                    },
                    {
                        "name": "vs",
                        "marketplace": "virtual-stores",
                        "api_url": vs_server.url,
                        "webhook_secret": vs.webhook_secret,
                        "staff": {"email": STAFF_EMAIL, "password": vs.password},
                        "delivery": email,
                        "products": {"ebook": PATTERN},
                    },
                ],
            }
            settings = parse_settings(document, environ={})
            app = create_app(
                settings,
                marketplaces=default_marketplaces(),
                plugins=dict(discover()),
                clock=clock,
                start_worker=False,
            )
            async with serve(app) as server:
                soft.seller_url = f"{server.url}/webhooks/soft"
                sellix.sender = SellixSender(f"{server.url}/webhooks/sellix", sellix_secret, now=clock.now)
                yield Watched(
                    daemon=app.state.daemon,
                    settings=settings,
                    clock=clock,
                    logs=logs,
                    mailbox=mailbox,
                    soft=soft,
                    sellix=sellix,
                    vs=vs,
                    vs_sender=vs.sender(f"{server.url}/webhooks/vs", now=clock.now),
                    url=server.url,
                    document=document,
                )
    finally:
        controller.stop()
