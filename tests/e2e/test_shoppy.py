"""Shoppy end to end: X-Shoppy-Signature (HMAC-SHA512, configurable), webhook_type 100 creates a job delivered
through the channel, 200 (dispute) is recorded and logged."""

from __future__ import annotations

from pathlib import Path

from delivery_daemon.marketplaces.shoppy import ShoppyAdapter
from delivery_daemon.reference.shoppy import ShoppySender, order
from tests.support.multistore import multi_stack


async def test_completed_order_is_delivered_once_with_its_quantity(tmp_path: Path) -> None:
    """webhook_type 100 for 2 units: one job, one delivery of 2 keys; the same webhook again is a duplicate."""
    async with multi_stack(tmp_path) as multi:
        sender = multi.shoppy()
        data = order("7", quantity=2, email="dan@example.org")
        assert (await sender.send(100, data, {"id": 7, "title": "VIP"})).json()["duplicate"] is False
        assert (await sender.send(100, data)).json()["duplicate"] is True
        await multi.drain()
        [delivery] = multi.seller.accepted()
        assert delivery.body["data"]["order_id"] == data["id"] and len(delivery.body["data"]["keys"]) == 2


async def test_forged_wrong_algorithm_and_unsigned_are_refused(tmp_path: Path) -> None:
    """A wrong secret, a SHA-256 signature (store expects SHA-512) or no header answers 403 and stores nothing."""
    async with multi_stack(tmp_path) as multi:
        data = order("7")
        assert (await ShoppySender(multi.hook("shoppy"), "wrong").send(100, data)).status_code == 403
        sha256 = ShoppySender(multi.hook("shoppy"), multi.secrets["shoppy"], algorithm="sha256")
        assert (await sha256.send(100, data)).status_code == 403
        other_header = ShoppySender(multi.hook("shoppy"), multi.secrets["shoppy"], header="X-Signature")
        assert (await other_header.send(100, data)).status_code == 403
        assert await multi.job("shoppy", data["id"]) is None


async def test_dispute_is_recorded_and_logged(tmp_path: Path) -> None:
    """webhook_type 200 after delivery flags the order and logs order.disputed; other types are ignored."""
    async with multi_stack(tmp_path) as multi:
        sender = multi.shoppy()
        data = order("7")
        await sender.send(100, data)
        await multi.drain()
        assert (await sender.send(200, data)).json()["status"] == "flagged"
        assert (await sender.send(500, data)).json() == {"status": "ignored"}
        job = await multi.job("shoppy", data["id"])
        assert job.state == "delivered" and "disputed" in job.last_error
        assert "order.disputed" in multi.log_events()


def test_signature_header_and_algorithm_are_configurable() -> None:
    """signature.header / signature.algorithm change what the adapter checks."""
    from delivery_daemon.clock import ManualClock
    from delivery_daemon.config import DeliverySettings, StoreSettings
    from delivery_daemon.marketplaces.base import AdapterContext

    store = StoreSettings.model_validate({"name": "s", "marketplace": "shoppy", "webhook_secret": "k3y-secret",
                                          "signature": {"header": "X-Sig", "algorithm": "sha256"}})
    adapter = ShoppyAdapter(AdapterContext(store, "stores[0]", ManualClock(), DeliverySettings()))
    sender = ShoppySender("http://unused", "k3y-secret", header="X-Sig", algorithm="sha256")
    body = sender.encode({"webhook_type": "100", "data": {"order": order("7", order_id="o1")}})
    from delivery_daemon.net.signatures import hex_hmac

    result = adapter.parse_webhook({"X-Sig": hex_hmac(b"k3y-secret", body, "sha256")}, body)
    assert result is not None and getattr(result, "order_id", None) == "o1"
