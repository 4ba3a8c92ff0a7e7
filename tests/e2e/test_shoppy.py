"""Shoppy end to end: X-Shoppy-Signature (HMAC-SHA512, configurable), webhook_type 100 creates a job delivered
through the channel, 200 (dispute) is recorded and logged."""

from __future__ import annotations

import json
from pathlib import Path

from delivery_daemon.marketplaces.shoppy import ShoppyAdapter
from delivery_daemon.net.signatures import hex_hmac
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

    store = StoreSettings.model_validate(
        {
            "name": "s",
            "marketplace": "shoppy",
            "webhook_secret": "k3y-secret",
            "signature": {"header": "X-Sig", "algorithm": "sha256"},
        }
    )
    adapter = ShoppyAdapter(AdapterContext(store, "stores[0]", ManualClock(), DeliverySettings()))
    sender = ShoppySender("http://unused", "k3y-secret", header="X-Sig", algorithm="sha256")
    body = sender.encode({"webhook_type": "100", "data": {"order": order("7", order_id="o1")}})
    from delivery_daemon.net.signatures import hex_hmac

    result = adapter.parse_webhook({"X-Sig": hex_hmac(b"k3y-secret", body, "sha256")}, body)
    assert result is not None and getattr(result, "order_id", None) == "o1"


DOCUMENTED_PAID_ORDER = rb"""{
    "status": true,
    "webhook_type": "100",
    "data": {
        "order": {
            "email": "webhook@shoppy.gg",
            "ip_address": "123.456.789.111",
            "country_code": "NL",
            "user_agent": "Mozilla\/5.0 (Macintosh; Intel Mac OS X 10_12_2)"
        },
        "product": {
            "product_id": 7,
            "hashed_id": "596260a7da9fb",
            "created_at": "2017-07-09 18:58:15",
            "updated_at": "2017-11-16 06:13:21",
            "deleted_at": null,
            "seller_id": 1,
            "title": "Nulled VIP 3 months",
            "description": "* A new userbar to make you stand out.\r\n* Bypass the requirements to unlock hidden content.\t\r\n* Access to VIP exclusive forums.\t\r\n* Storage for 5,000 messages.\t\r\n* Access to auth key (free BoL scripts, Soapbox, ...)\t\r\n* Able to rate other members with +2\/-1 likes.\t\r\n* Able to close your own threads.\t\r\n* Bypass auth requirements (auth access)\t\r\n* Able to change your username",
            "type": 2,
            "email_message": "Thank you for your support",
            "price": 10,
            "stock_warning": 0,
            "minimum_quantity": 1,
            "maximum_quantity": 1,
            "unlisted": 0,
            "webhook_url": "http://vlan.shoppy.gg/ipn",
            "custom_fields": "a:1:{i:0;a:4:{s:4:\"name\";s:3:\"UID\";s:4:\"type\";s:1:\"2\";s:8:\"required\";s:4:\"true\";s:8:\"iterator\";s:1:\"0\";}}",
            "gateways": "a:2:{i:0;s:7:\"Bitcoin\";i:1;s:8:\"Ethereum\";}",
            "required_confirmations": 1,
            "attachment_id": null,
            "attach_email_text": 0
        }
    }
}"""  # noqa: E501 (Shoppy's documented payload, verbatim)
"""The Shoppy document's "example webhook notification on a paid order event", byte for byte: it has no order id."""


async def test_the_documented_paid_order_without_an_id_is_delivered_once(tmp_path: Path) -> None:
    """The document's example (no order id) is accepted under an id derived from the signed order; resending it,
    even re-serialised, is a duplicate and the buyer gets one delivery; another buyer's order is another order."""
    async with multi_stack(tmp_path) as multi:
        sender = multi.shoppy()
        signed = {"X-Shoppy-Signature": hex_hmac(multi.secrets["shoppy"].encode(), DOCUMENTED_PAID_ORDER, "sha512")}
        first = await sender.post(DOCUMENTED_PAID_ORDER, signed)
        assert first.status_code == 200, first.text
        answer = first.json()
        assert answer["duplicate"] is False and answer["order_id"].startswith("body-")
        resent = await sender.post(DOCUMENTED_PAID_ORDER, signed)
        assert resent.status_code == 200 and resent.json() == {**answer, "duplicate": True}
        compact = sender.encode(json.loads(DOCUMENTED_PAID_ORDER))  # the same webhook, serialised another way
        assert compact != DOCUMENTED_PAID_ORDER
        again = await sender.post(
            compact, {"X-Shoppy-Signature": hex_hmac(multi.secrets["shoppy"].encode(), compact, "sha512")}
        )
        assert again.json() == {**answer, "duplicate": True}
        await multi.drain()
        [delivery] = multi.seller.accepted()
        data = delivery.body["data"]
        assert data["order_id"] == answer["order_id"] and data["product_id"] == "7"
        assert data["buyer_email"] == "webhook@shoppy.gg" and len(data["keys"]) == 1
        other = json.loads(DOCUMENTED_PAID_ORDER)
        other["data"]["order"]["email"] = "second-buyer@example.org"
        assert (await sender.send(100, other["data"]["order"], other["data"]["product"])).json()["order_id"] != (
            answer["order_id"]
        )
        job = await multi.job("shoppy", answer["order_id"])
        assert job.state == "delivered" and json.loads(job.payload)["derived_id"] is True
