"""The receiver asks an adapter that implements ``ResolvesEvents`` which order a refund is about, before anything is
stored: the order it names is marked, None is answered ``ignored``, a marketplace that cannot be asked is a 503 with
nothing stored (the event id not remembered, so the resend is handled)."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from pathlib import Path

import httpx

from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import create_app
from delivery_daemon.config import parse_settings
from delivery_daemon.errors import Retry
from delivery_daemon.generators.discovery import discover
from delivery_daemon.http.serving import serve
from delivery_daemon.logs import configure_logging
from delivery_daemon.marketplaces.base import AdapterContext, OrderEvent, WebhookResult, load_object
from delivery_daemon.marketplaces.signed_body import SignedPayloadAdapter
from delivery_daemon.reference.standard_webhooks import new_secret


class Resolving(SignedPayloadAdapter):
    """A test adapter: every body is a refund of payment ``body.payment`` (event ``body.id``); payment ``pay-1`` is
    order ``order-1``, ``pay-away`` cannot be looked up now, any other belongs to no order."""

    marketplace = "resolving"
    down = True

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        data = load_object(body)
        return OrderEvent(self.store, self.marketplace, str(data["payment"]), "refunded", event_id=str(data["id"]))

    async def resolve_event(self, event: OrderEvent) -> OrderEvent | None:
        if event.order_id == "pay-away" and Resolving.down:
            raise Retry("the marketplace is down")
        if event.order_id in ("pay-1", "pay-away"):
            return dataclasses.replace(event, order_id="order-1")
        return None


class ResolvingType:
    name = "resolving"

    def create(self, context: AdapterContext) -> Resolving:
        return Resolving(context)


async def test_refunds_are_resolved_to_their_order_before_anything_is_stored(tmp_path: Path) -> None:
    """pay-1 cancels order-1 (unseen); an unknown payment is ignored; a lookup failure is a 503 and the resend of
    the same event id, once the marketplace answers, is handled, not a duplicate."""
    logs = io.StringIO()
    configure_logging("json", "debug", stream=logs)
    settings = parse_settings(
        {
            "database": {"url": f"sqlite:///{tmp_path / 'resolve.db'}"},
            "stores": [
                {
                    "name": "s",
                    "marketplace": "resolving",
                    "webhook_secret": "not-checked-by-this-adapter",
                    "default": {"generator": "pattern"},
                    "delivery": {
                        "channel": "webhook",
                        "webhook": {"url": "http://127.0.0.1:9/x", "secret": new_secret()},
                    },
                }
            ],
        },
        environ={},
    )
    app = create_app(
        settings, marketplaces=[ResolvingType()], plugins=dict(discover()), clock=ManualClock(), start_worker=False
    )
    async with serve(app) as server, httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        queue = app.state.daemon.queue

        async def send(event_id: str, payment: str) -> httpx.Response:
            return await client.post("/webhooks/s", json={"id": event_id, "payment": payment})

        other = await send("e0", "pay-elsewhere")
        assert other.status_code == 200 and other.json() == {"status": "ignored"}
        away = await send("e1", "pay-away")
        assert away.status_code == 503 and "try again" in away.json()["error"]
        assert await queue.find("s", "order-1") is None and '"webhook.resolve_failed"' in logs.getvalue()
        Resolving.down = False
        again = await send("e1", "pay-away")
        assert again.json() == {"status": "cancelled_unseen", "order_id": "order-1"}
        assert (await queue.find("s", "order-1")).state == "cancelled"
        assert (await send("e1", "pay-away")).json()["status"] == "duplicate"
        assert (await queue.find("s", "pay-away")) is None
    await app.state.daemon.aclose()
