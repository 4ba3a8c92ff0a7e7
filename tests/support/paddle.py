"""The daemon with a Paddle Billing store and a Paddle Classic store, the reference Paddle (API, signed sender, Classic
vendor) and the seller's own system (the ``webhook`` channel), all on loopback sockets.

Store ``paddle`` (Billing) knows product ``pro_keys`` and ``pro_slow`` (a generator that never finishes) and has a
default; store ``paddle-classic`` has a default and product ``hang`` (never finishes, for the synchronous budget).
"""

from __future__ import annotations

import contextlib
import io
import json
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
from delivery_daemon.reference.paddle import ClassicVendor, PaddleBilling, PaddleSender
from delivery_daemon.reference.standard_webhooks import SellerSystem, new_secret
from tests.support.multistore import PATTERN, Hang


@dataclass
class PaddleStack:
    daemon: Daemon
    url: str
    clock: ManualClock
    logs: io.StringIO
    seller: SellerSystem
    billing: PaddleBilling
    vendor: ClassicVendor
    secret: str

    def sender(self, secret: str | None = None, old_secrets: tuple[str, ...] = ()) -> PaddleSender:
        return PaddleSender(
            f"{self.url}/webhooks/paddle", secret or self.secret, now=self.clock.now, old_secrets=old_secrets
        )

    async def drain(self) -> int:
        return await self.daemon.worker.drain()

    async def job(self, order_id: str, store: str = "paddle") -> Any:
        return await self.daemon.queue.find(store, order_id)

    def log_events(self) -> list[str]:
        return [json.loads(line)["event"] for line in self.logs.getvalue().splitlines() if line.startswith("{")]


@contextlib.asynccontextmanager
async def paddle_stack(
    tmp_path: Path,
    *,
    classic_budget: float = 5.0,
    server: dict[str, Any] | None = None,
    plugins: dict[str, Any] | None = None,
) -> AsyncIterator[PaddleStack]:
    """The stack; ``classic_budget`` is the Classic store's ``sync_budget``, ``server`` the receiver's settings,
    ``plugins`` generators added (or replacing ``hang``)."""
    logs = io.StringIO()
    configure_logging("json", "debug", stream=logs)
    clock = ManualClock()
    secret = f"pdl_ntfset_01{secrets.token_hex(12)}_{secrets.token_urlsafe(24)}"
    billing = PaddleBilling(now=clock.now)
    seller = SellerSystem(new_secret(), now=clock.now)
    async with serve(billing.app) as api, serve(seller.app) as seller_server:
        channel = {
            "channel": "webhook",
            "webhook": {"url": f"{seller_server.url}/hooks/orders", "secret": seller.secret},
        }
        vendor = ClassicVendor("")
        stores = [
            {
                "name": "paddle",
                "marketplace": "paddle",
                "api_url": api.url,
                "api_key": billing.api_key,
                "webhook_secret": secret,
                "delivery": channel,
                "default": PATTERN,
                "products": {"pro_keys": PATTERN, "pro_slow": {"generator": "hang"}},
            },
            {
                "name": "paddle-classic",
                "marketplace": "paddle-classic",
                "webhook_secret": vendor.public_pem,
                "delivery": channel,
                "default": PATTERN,
                "products": {"hang": {"generator": "hang"}},
                "sync_budget": classic_budget,
            },
        ]
        settings = parse_settings(
            {
                "database": {"url": f"sqlite:///{tmp_path / 'paddle.db'}"},
                "delivery": {"retry_schedule": [5, 300], "timeout": 10, "jitter": False},
                "worker": {"poll_interval": 60, "lease_seconds": 30},
                "security": {"allowed_networks": ["127.0.0.0/8"]},
                "stores": stores,
                **({"server": server} if server is not None else {}),
            },
            environ={},
        )
        app = create_app(
            settings,
            marketplaces=default_marketplaces(),
            plugins={**dict(discover()), "hang": Hang, **(plugins or {})},
            clock=clock,
            start_worker=False,
        )
        async with serve(app) as receiver:
            vendor.url = f"{receiver.url}/webhooks/paddle-classic"
            yield PaddleStack(app.state.daemon, receiver.url, clock, logs, seller, billing, vendor, secret)
