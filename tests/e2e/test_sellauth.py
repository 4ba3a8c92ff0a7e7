"""SellAuth end to end over loopback sockets: dynamic delivery answered synchronously (stored first), the same
Idempotency-Key answered the same keys, one order per invoice item, SellAuth's 3 attempts 5 s apart within its 10 s
deadline, and forged signatures refused."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from delivery_daemon.generators.contract import Generated, NoOptions, OrderContext
from delivery_daemon.reference.sellauth import INTERVAL, SellAuthSender, invoice_item
from tests.support.multistore import PATTERN, Multi, multi_stack

SECRET = secrets.token_hex(16)


@contextlib.asynccontextmanager
async def sellauth_stack(tmp_path: Path, sync_budget: float = 5.0) -> AsyncIterator[Multi]:
    """The daemon with a ``sellauth`` store: product 77 is a pattern key, 99 a generator that never answers."""
    store = {
        "name": "sellauth",
        "marketplace": "sellauth",
        "webhook_secret": SECRET,
        "products": {"77": PATTERN, "99": {"generator": "hang"}},
        "sync_budget": sync_budget,
    }
    async with multi_stack(tmp_path, stores=[store]) as multi:
        yield multi


def sender(multi: Multi, secret: str = SECRET) -> tuple[SellAuthSender, list[float]]:
    """A SellAuth sender whose pauses move the daemon's clock (and are recorded) instead of sleeping."""
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        multi.clock.advance(seconds)

    return SellAuthSender(multi.hook("sellauth"), secret, now=multi.clock.now, pause=pause), pauses


def test_reference_signs_the_body_it_sends() -> None:
    """X-Signature is hash_hmac('sha256', body, secret) of the exact bytes sent, as SellAuth's guide computes it."""
    reference = SellAuthSender("http://unused", "s3cret")
    body = reference.encode(invoice_item(77))
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert reference.headers(body, "k")["X-Signature"] == expected


async def test_item_is_answered_its_keys_and_stored(tmp_path: Path) -> None:
    """One item of quantity 3 is answered 3 keys as text/plain at the first attempt; the job is stored delivered."""
    async with sellauth_stack(tmp_path) as multi:
        reference, pauses = sender(multi)
        message = invoice_item(77, 3)
        shown = await reference.deliver(message)
        assert shown is not None and reference.sent[-1].content_type.startswith("text/plain")
        keys = shown.split("\n")
        assert len(keys) == 3 == len(set(keys)) and pauses == []
        job = await multi.job("sellauth", f"{message['id']}-{message['item']['id']}")
        assert job.state == "delivered" and job.quantity == 3
        assert await multi.drain() == 0 and multi.seller.received == []  # answered, not sent through the channel
        assert not any(key in multi.logs.getvalue() for key in keys)


async def test_same_idempotency_key_gets_the_same_keys(tmp_path: Path) -> None:
    """SellAuth asking again with the same Idempotency-Key (its retry after a lost answer) gets the stored keys."""
    async with sellauth_stack(tmp_path) as multi:
        reference, _ = sender(multi)
        message = invoice_item(77, 2)
        first = await reference.deliver(message, key="a" * 64)
        again = await reference.deliver(message, key="a" * 64)
        assert first is not None and again == first
        assert multi.log_events().count("fulfil.repeated") == 1


async def test_items_of_one_invoice_are_separate_orders(tmp_path: Path) -> None:
    """Two items of one invoice, one request each, get different keys and two jobs."""
    async with sellauth_stack(tmp_path) as multi:
        reference, _ = sender(multi)
        one = await reference.deliver(invoice_item(77, invoice_id=5, item_id=1))
        two = await reference.deliver(invoice_item(77, invoice_id=5, item_id=2))
        assert one is not None and two is not None and one != two
        assert (await multi.job("sellauth", "5-1")) is not None and (await multi.job("sellauth", "5-2")) is not None


async def test_retries_within_the_deadline_get_the_stored_keys(tmp_path: Path) -> None:
    """A generator past the budget answers 503 (within SellAuth's 10 s); SellAuth's retries 5 s apart with the same
    key are answered 503 while nothing is stored, and all three attempts are made."""
    async with sellauth_stack(tmp_path, sync_budget=0.5) as multi:
        reference, pauses = sender(multi)
        message = invoice_item(99)
        assert await reference.deliver(message, key="k" * 64) is None
        assert [s.status for s in reference.sent] == [503, 503, 503] and pauses == [INTERVAL, INTERVAL]
        assert {s.headers["Idempotency-Key"] for s in reference.sent} == {"k" * 64}
        job = await multi.job("sellauth", f"{message['id']}-{message['item']['id']}")
        assert job.state == "dead" and job.content is None


class Gated:
    """A generator that waits for the test to open its gate: slower than SellAuth's deadline, within the budget."""

    name = "gated"
    Options = NoOptions
    gate: asyncio.Event | None = None

    def __init__(self, options: NoOptions) -> None:
        self.options = options

    async def generate(self, order: OrderContext) -> Generated:
        assert Gated.gate is not None
        await Gated.gate.wait()
        return Generated([f"GATED-{order.order_id}-{n}" for n in range(order.quantity)])


async def test_answer_lost_to_the_deadline_is_repeated_on_the_retry(tmp_path: Path) -> None:
    """The keys are made after SellAuth gave up on its first attempt: they are stored, and its retry with the same
    Idempotency-Key is answered exactly those keys (made once)."""
    Gated.gate = asyncio.Event()
    store = {"name": "sellauth", "marketplace": "sellauth", "webhook_secret": SECRET, "default": {"generator": "gated"}}
    async with multi_stack(tmp_path, stores=[store], plugins={"gated": Gated}) as multi:
        message = invoice_item(55, 2)
        order_id = f"{message['id']}-{message['item']['id']}"

        async def pause(seconds: float) -> None:
            assert Gated.gate is not None
            Gated.gate.set()  # the seller's generator finishes after SellAuth's deadline passed
            for _ in range(200):
                job = await multi.job("sellauth", order_id)
                if job is not None and job.state == "delivered":
                    return
                await asyncio.sleep(0.01)

        reference = SellAuthSender(multi.hook("sellauth"), SECRET, now=multi.clock.now, pause=pause, deadline=0.3)
        shown = await reference.deliver(message, key="r" * 64)
        assert reference.failures == ["timeout"] and shown is not None
        assert shown.split("\n") == [f"GATED-{order_id}-0", f"GATED-{order_id}-1"]
        assert multi.log_events().count("fulfil.repeated") == 1


async def test_forged_signature_and_other_events(tmp_path: Path) -> None:
    """A wrong secret is 403 with a JSON reason and stores nothing; a notification event is acknowledged and ignored."""
    async with sellauth_stack(tmp_path) as multi:
        forged, _ = sender(multi, "not-the-secret")
        message = invoice_item(77, item_id=8)
        response = await forged.attempt(message, "f" * 64)
        assert response is not None and response.status_code == 403 and response.json()["error"] == "invalid signature"
        assert await multi.job("sellauth", f"{message['id']}-8") is None
        reference, _ = sender(multi)
        note = {"event": "NOTIFICATION.SHOP_INVOICE_CREATED", "data": {"invoice_id": 1218}, "shop_id": 1}
        ignored = await reference.attempt(note, "n" * 64)
        assert ignored is not None and ignored.json() == {"status": "ignored"}
