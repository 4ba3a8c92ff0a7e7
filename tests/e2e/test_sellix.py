"""Sellix end to end: X-Sellix-Signature, dynamic products answered synchronously (stored first, same keys when
asked again, non-2xx and a log line on failure), order:paid through the configured channel."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from delivery_daemon.reference.sellix import SellixSender, order
from tests.support.multistore import multi_stack


def test_reference_signs_as_the_document_says() -> None:
    """The signature is hash_hmac('sha512', payload, secret) of the exact body, as the PHP sample computes."""
    sender = SellixSender("http://unused", "testing981y25n89byoas7by")
    body = sender.encode({"event": "order:paid", "data": {"uniqid": "x"}})
    headers = sender.headers(body, "order:paid")
    expected = hmac.new(b"testing981y25n89byoas7by", body, hashlib.sha512).hexdigest()
    assert headers == {"X-Sellix-Signature": expected, "X-Sellix-Event": "order:paid"}


async def test_dynamic_product_answers_keys_and_repeats_them(tmp_path: Path) -> None:
    """product:dynamic for quantity 3 answers 3 keys as text/plain, stored; asking again answers the same keys."""
    async with multi_stack(tmp_path) as multi:
        sender = multi.sellix()
        data = order("dyn-1", quantity=3)
        product = await sender.dynamic(data)
        assert product is not None and sender.sent[-1].content_type.startswith("text/plain")
        keys = product.split("\n")
        assert len(keys) == 3 and len(set(keys)) == 3
        job = await multi.job("sellix", data["uniqid"])
        assert job.state == "delivered" and job.content is not None and job.quantity == 3
        assert await sender.dynamic(data) == product
        # Sellix's order:paid for the same order is a duplicate: nothing goes through the channel.
        assert (await sender.send("order:paid", data)).json()["duplicate"] is True
        assert await multi.drain() == 0 and multi.seller.received == []
        assert "".join(keys) not in multi.logs.getvalue()


async def test_dynamic_quantity_from_the_cart_item(tmp_path: Path) -> None:
    """Without data.quantity, the quantity is the cart item's whose uniqid is the product."""
    async with multi_stack(tmp_path) as multi:
        data = order(
            "dyn-2", quantity=None, cart=[{"uniqid": "other", "quantity": 5}, {"uniqid": "dyn-2", "quantity": 2}]
        )
        product = await multi.sellix().dynamic(data)
        assert product is not None and len(product.split("\n")) == 2


async def test_dynamic_failure_answers_non_2xx_and_logs(tmp_path: Path) -> None:
    """An unconfigured product, or a generator past the budget, answers 503, leaves the job dead and logs it."""
    async with multi_stack(tmp_path) as multi:
        sender = multi.sellix("sellix-strict")
        unknown = order("nope", quantity=1)
        assert await sender.dynamic(unknown) is None and sender.sent[-1].status == 503
        hung = order("hang", quantity=1)
        assert await sender.dynamic(hung) is None and sender.sent[-1].status == 503
        for data in (unknown, hung):
            job = await multi.job("sellix-strict", data["uniqid"])
            assert job.state == "dead" and job.content is None
        assert multi.log_events().count("fulfil.failed") == 2
        assert "within 0.5 s" in (await multi.job("sellix-strict", hung["uniqid"])).last_error


async def test_order_paid_goes_through_the_channel_once(tmp_path: Path) -> None:
    """order:paid for a service product is queued and delivered by the webhook channel; a resend is a duplicate."""
    async with multi_stack(tmp_path) as multi:
        sender = multi.sellix()
        data = order("svc-1", quantity=2, email="carol@example.org")
        assert (await sender.send("order:paid", data)).json()["duplicate"] is False
        assert (await sender.send("order:paid", data)).json()["duplicate"] is True
        await multi.drain()
        [delivery] = multi.seller.accepted()
        assert delivery.body["data"]["buyer_email"] == "carol@example.org" and len(delivery.body["data"]["keys"]) == 2


async def test_self_delivered_forged_and_unrelated_events(tmp_path: Path) -> None:
    """SERIALS products (Sellix delivers) and other events are ignored; a wrong signature is 403 and stores nothing."""
    async with multi_stack(tmp_path) as multi:
        sender = multi.sellix()
        serials = order("ser-1", product_type="SERIALS")
        assert (await sender.send("order:paid", serials)).json() == {"status": "ignored"}
        assert (await sender.send("product:stock", serials)).json() == {"status": "ignored"}
        forged = SellixSender(multi.hook("sellix"), "not-the-secret")
        paid = order("svc-2")
        assert (await forged.send("order:paid", paid)).status_code == 403
        assert await forged.dynamic(paid) is None and forged.sent[-1].status == 403
        assert await multi.job("sellix", paid["uniqid"]) is None
        assert await multi.job("sellix", serials["uniqid"]) is None
