"""A daemon running stores of several marketplaces at once, the seller's own system (the ``webhook`` channel) and,
on request, a real SMTP server (aiosmtpd) for the ``email`` channel — all on loopback sockets.

Stores: ``sellix``, ``shoppy`` and ``stripe`` deliver through the signed ``webhook`` channel to :class:`SellerSystem`;
``generic`` (Standard Webhooks) delivers by ``email``; ``sellix-strict`` knows one product and has no default, and
its ``hang`` product's generator never finishes (for the synchronous budget). On request (``softstore=True``) a
``softstore`` store on the reference SoftStore, delivering through SoftStore's own API, the one marketplace with a
listed stock count.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller

from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import Daemon, create_app, default_marketplaces
from delivery_daemon.config import parse_settings
from delivery_daemon.generators.contract import Generated, NoOptions, OrderContext
from delivery_daemon.generators.discovery import discover
from delivery_daemon.http.serving import serve
from delivery_daemon.logs import configure_logging
from delivery_daemon.reference.chaos.harness import restart_port
from delivery_daemon.reference.sellix import SellixSender
from delivery_daemon.reference.shoppy import ShoppySender
from delivery_daemon.reference.softstore import SoftStoreMarketplace
from delivery_daemon.reference.standard_webhooks import SellerSystem, StandardWebhooksSender, new_secret
from delivery_daemon.reference.stripe_store import StripeStoreSender

PATTERN = {"generator": "pattern", "options": {"pattern": "XXXX-XXXX-XXXX"}}


class Hang:
    """A generator that never answers (an external key service that is down)."""

    name = "hang"
    Options = NoOptions

    def __init__(self, options: NoOptions) -> None:
        self.options = options

    async def generate(self, order: OrderContext) -> Generated:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class Mailbox:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


def free_port() -> int:
    """A free loopback port below the ephemeral range: a server stopped and started again on it (a restarted daemon,
    PostgreSQL) cannot find it taken by an outgoing connection's local port meanwhile."""
    return restart_port()


@dataclass
class Multi:
    daemon: Daemon
    url: str
    clock: ManualClock
    logs: io.StringIO
    seller: SellerSystem
    secrets: dict[str, str]
    mailbox: Mailbox | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    market: SoftStoreMarketplace | None = None
    """The reference SoftStore of the ``softstore`` store, when the stack has one."""

    def hook(self, store: str) -> str:
        return f"{self.url}/webhooks/{store}"

    def sellix(self, store: str = "sellix") -> SellixSender:
        return SellixSender(self.hook(store), self.secrets[store], now=self.clock.now)

    def shoppy(self) -> ShoppySender:
        return ShoppySender(self.hook("shoppy"), self.secrets["shoppy"], now=self.clock.now)

    def stripe(self) -> StripeStoreSender:
        return StripeStoreSender(self.hook("stripe"), self.secrets["stripe"], now=self.clock.now)

    def generic(self) -> StandardWebhooksSender:
        return StandardWebhooksSender(self.hook("generic"), self.secrets["generic"], now=self.clock.now)

    async def drain(self) -> int:
        return await self.daemon.worker.drain()

    async def job(self, store: str, order_id: str) -> Any:
        return await self.daemon.queue.find(store, order_id)

    def log_events(self) -> list[str]:
        import json

        return [json.loads(line)["event"] for line in self.logs.getvalue().splitlines() if line.startswith("{")]


@contextlib.asynccontextmanager
async def multi_stack(
    tmp_path: Path,
    *,
    smtp: dict[str, Any] | None = None,
    mail: bool = False,
    sync_budget: float = 5.0,
    security: dict[str, Any] | None = None,
    plugins: dict[str, Any] | None = None,
    stripe_products: dict[str, Any] | None = None,
    stores: list[dict[str, Any]] | None = None,
    server_settings: dict[str, Any] | None = None,
    products: dict[str, dict[str, Any]] | None = None,
    pools: dict[str, Any] | None = None,
    softstore: bool = False,
    database: dict[str, Any] | None = None,
) -> AsyncIterator[Multi]:
    """The daemon with every marketplace type; ``mail`` starts the SMTP server, ``smtp`` overrides the generic
    store's SMTP settings, ``security`` the network policy (default: loopback allowed, where the seller's sink and
    the SMTP server run); ``plugins`` adds generators and ``stripe_products`` gives the stripe store products of
    its own (besides its default). ``stores`` are more stores (delivering through the seller's webhook channel
    unless they say otherwise) and ``server_settings`` the daemon's ``server`` section. ``products`` adds products per
    store name, ``pools`` is the top-level section, ``softstore`` adds the SoftStore store and ``database`` replaces
    the SQLite file (e.g. a PostgreSQL URL)."""
    logs = io.StringIO()
    configure_logging("json", "debug", stream=logs)
    clock = ManualClock()
    keys = {
        "sellix": secrets.token_hex(16),
        "sellix-strict": secrets.token_hex(16),
        "shoppy": secrets.token_hex(16),
        "stripe": "whsec_" + secrets.token_hex(16),
        "generic": new_secret(),
    }
    seller = SellerSystem(new_secret(), now=clock.now)
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        auth_require_tls=False,
        authenticator=_authenticator,
        auth_required=True,
    )
    if mail:
        controller.start()
    if softstore:
        keys["softstore"] = secrets.token_hex(20)
    market = SoftStoreMarketplace(api_key=keys["softstore"], clock=clock.now) if softstore else None
    try:
        async with contextlib.AsyncExitStack() as servers:
            seller_server = await servers.enter_async_context(serve(seller.app))
            if market is not None:
                market.bind((await servers.enter_async_context(serve(market.app))).url)
            channel = {
                "channel": "webhook",
                "webhook": {"url": f"{seller_server.url}/hooks/orders", "secret": seller.secret},
            }
            smtp_settings = {
                "host": "127.0.0.1",
                "port": port,
                "security": "none",
                "username": "seller",
                "password": "smtp-pass-123",
                "sender": "shop@example.org",
                "subject": "Order {order_id}",
                **(smtp or {}),
            }
            configured: list[dict[str, Any]] = [
                {
                    "name": "sellix",
                    "marketplace": "sellix",
                    "webhook_secret": keys["sellix"],
                    "delivery": channel,
                    "default": PATTERN,
                    "sync_budget": sync_budget,
                },
                {
                    "name": "sellix-strict",
                    "marketplace": "sellix",
                    "webhook_secret": keys["sellix-strict"],
                    "delivery": channel,
                    "products": {"p1": PATTERN, "hang": {"generator": "hang"}},
                    "sync_budget": 0.5,
                },
                {
                    "name": "shoppy",
                    "marketplace": "shoppy",
                    "webhook_secret": keys["shoppy"],
                    "delivery": channel,
                    "default": PATTERN,
                },
                {
                    "name": "stripe",
                    "marketplace": "stripe",
                    "webhook_secret": keys["stripe"],
                    "delivery": channel,
                    "default": PATTERN,
                    "products": stripe_products or {},
                },
                {
                    "name": "generic",
                    "marketplace": "standard-webhooks",
                    "webhook_secret": keys["generic"],
                    "delivery": {"channel": "email", "email": smtp_settings},
                    "default": {**PATTERN, "template": "Thank you! Your keys:\n{keys_lines}"},
                },
                *({"delivery": channel, **extra} for extra in stores or []),
            ]
            if market is not None:
                configured.append(
                    {
                        "name": "softstore",
                        "marketplace": "softstore",
                        "api_url": market.api_base,
                        "api_key": keys["softstore"],
                    }
                )
            for store in configured:
                store["products"] = {**store.get("products", {}), **(products or {}).get(store["name"], {})}
            settings = parse_settings(
                {
                    "database": database or {"url": f"sqlite:///{tmp_path / 'multi.db'}"},
                    "pools": pools or {},
                    **({"server": server_settings} if server_settings is not None else {}),
                    "delivery": {"retry_schedule": [5, 300], "timeout": 10, "jitter": False},
                    "worker": {"poll_interval": 60, "lease_seconds": 30},
                    "security": {"allowed_networks": ["127.0.0.0/8"]} if security is None else security,
                    "stores": configured,
                },
                environ={},
            )
            found = {**dict(discover()), "hang": Hang, **(plugins or {})}
            app = create_app(
                settings, marketplaces=default_marketplaces(), plugins=found, clock=clock, start_worker=False
            )
            async with serve(app) as server:
                if market is not None:
                    market.seller_url = f"{server.url}/webhooks/softstore"
                yield Multi(
                    daemon=app.state.daemon,
                    url=server.url,
                    clock=clock,
                    logs=logs,
                    seller=seller,
                    secrets=keys,
                    mailbox=mailbox,
                    market=market,
                )
    finally:
        if mail:
            controller.stop()


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ok = (
        isinstance(auth_data, LoginPassword) and auth_data.login == b"seller" and auth_data.password == b"smtp-pass-123"
    )
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


async def post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(url, content=body, headers={"Content-Type": "application/json", **headers})


FROZEN_NOW = "2027-01-15 08:00:00"
"""A wall-clock instant for freezegun (1_800_000_000, ManualClock's start)."""


def wall_clock_adapter(marketplace: str, secret: str) -> Any:
    """The adapter of a ``marketplace`` store as ``serve`` builds it: on the :class:`SystemClock`, so that its
    signature tolerance follows the wall clock (frozen by a test with freezegun, like the third-party verifiers')."""
    from delivery_daemon.clock import SystemClock

    return store_adapter(marketplace, secret, SystemClock())


def store_adapter(marketplace: str, secret: str, clock: Any, **store: Any) -> Any:
    """The adapter of one ``marketplace`` store (delivering by the webhook channel, with ``store``'s other settings)
    on ``clock``."""
    from delivery_daemon.marketplaces.base import AdapterContext

    settings = parse_settings(
        {
            "stores": [
                {
                    "name": "s",
                    "marketplace": marketplace,
                    "webhook_secret": secret,
                    "delivery": {
                        "channel": "webhook",
                        "webhook": {"url": "http://127.0.0.1:9/x", "secret": new_secret()},
                    },
                    "default": PATTERN,
                    **store,
                }
            ]
        },
        environ={},
    )
    [kind] = [kind for kind in default_marketplaces() if kind.name == marketplace]
    return kind.create(
        AdapterContext(store=settings.stores[0], path="stores[0]", clock=clock, delivery=settings.delivery)
    )
