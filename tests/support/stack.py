"""The daemon wired to the reference SoftStore marketplace, as the ``stack`` fixtures of tests/conftest.py serve it:
the store and product names, the settings they use and :class:`Stack`, what a test gets to drive them."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import Daemon
from delivery_daemon.config import Settings, parse_settings
from delivery_daemon.reference.softstore import SoftStoreMarketplace

STORE = "shop"
PRODUCT = "prod-1"


@dataclass
class Stack:
    """The reference marketplace and the daemon, both serving on loopback."""

    market: SoftStoreMarketplace
    daemon: Daemon
    url: str
    settings: Settings
    clock: ManualClock
    api_key: str
    logs: io.StringIO
    client: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=30.0))
    """The test's own client (the marketplace's side): 30 s, not httpx's 5 s, because a test that posts 200
    webhooks at once waited over 5 s for a pooled connection on a loaded CI machine (PoolTimeout)."""

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/webhooks/{STORE}"

    async def drain(self) -> int:
        return await self.daemon.worker.drain()

    def catch_up_with_cli(self) -> None:
        """Move the stack's clock to the wall clock if it is behind: a CLI command (another process in production)
        stamps the jobs it requeues with the wall clock, and ``ManualClock`` starts at a fixed instant that the
        wall clock passes on 2027-01-15; behind it, the requeued jobs would not be due for the next drain."""
        self.clock.advance(max(0.0, time.time() - self.clock.now()))

    async def advance_and_drain(self, seconds: float) -> int:
        self.clock.advance(seconds)
        return await self.drain()

    async def post(
        self,
        body: bytes | dict[str, Any],
        *,
        content_type: str = "application/json",
        store: str = STORE,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        import json

        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post(
            f"{self.url}/webhooks/{store}", content=raw, headers={"Content-Type": content_type, **(headers or {})}
        )

    async def job(self, order_id: str) -> Any:
        return await self.daemon.queue.find(STORE, order_id)


StackFactory = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]
"""The ``make_stack`` fixture: ``async with make_stack(**sections) as stack``."""


def accepted_text(market: SoftStoreMarketplace, order_id: str) -> str:
    """The text of the delivery the marketplace accepted for ``order_id``; fails the test when it accepted none."""
    record = market.accepted(order_id)
    assert record is not None, f"no delivery accepted for {order_id}"
    return str(record.json["text"])


def stack_settings(
    db_path: Path,
    api_base: str,
    api_key: str,
    products: dict[str, Any] | None = None,
    store_delivery: dict[str, Any] | None = None,
    **sections: Any,
) -> Settings:
    document: dict[str, Any] = {
        "database": {"url": f"sqlite:///{db_path}"},
        "delivery": {"retry_schedule": [5, 300, 1800], "timeout": 5, "jitter": False},
        "worker": {"poll_interval": 60, "lease_seconds": 30},
        "stores": [
            {
                "name": STORE,
                "marketplace": "softstore",
                "api_url": api_base,
                "api_key": api_key,
                "products": {PRODUCT: {"generator": "pattern", "template": "Keys for {order_id}:\n{keys_lines}"}},
                "default": {"generator": "pattern", "options": {"pattern": "XXXX-XXXX-XXXX"}},
            }
        ],
    }
    document["stores"][0]["products"].update(products or {})  # extra products for the store under test
    if store_delivery is not None:  # the store's channel (default: SoftStore's own delivery API)
        document["stores"][0]["delivery"] = store_delivery
    for key, value in sections.items():
        document[key] = {**document.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_settings(document, environ={})
