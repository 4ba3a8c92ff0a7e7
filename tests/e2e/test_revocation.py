"""Revocation and re-issue end to end (docs/guarantees.md, "Revocation"): a Stripe store delivering through the signed
``webhook`` channel to the seller's system, over real sockets, on SQLite and PostgreSQL.

A refund after delivery, ``orders revoke`` and ``orders reissue`` record a revocation with the order; the worker calls
the product's generator hook once and sends ``order.revoked``; the ``stock`` pool never hands a revoked key out again
and takes back a key whose order was cancelled before any delivery; the ``signed`` product's revocation list makes
``license verify`` refuse a refunded licence.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from delivery_daemon_plugins.stock import StockGenerator, StockOptions
from sqlalchemy import select

from delivery_daemon.cli import main
from delivery_daemon.generators.contract import (
    Generated,
    NoOptions,
    OrderContext,
    Resources,
    RevocationContext,
)
from delivery_daemon.generators.licence import generate_keypair
from delivery_daemon.http.revocations import FRESH
from delivery_daemon.reference.stripe_store import charge_refunded, event, payment_intent
from delivery_daemon.storage.retention import purge
from delivery_daemon.storage.stock_pool import KEYS, StockPool
from tests.support.multistore import Multi, multi_stack
from tests.support.status_helpers import status_page


class Recording:
    """A generator plugin whose keys name the order's content (its idempotency key) and whose ``revoke`` hook records
    each call; ``failures`` makes the first calls raise. :func:`recording` gives each test its own lists."""

    name = "recording"
    Options = NoOptions
    calls: ClassVar[list[RevocationContext]] = []
    failures: ClassVar[list[Exception]] = []

    def __init__(self, options: NoOptions) -> None:
        self.options = options

    def generate(self, order: OrderContext) -> Generated:
        return Generated(keys=[f"KEY-{order.idempotency_key}-{seat}" for seat in range(order.quantity)])

    async def revoke(self, revocation: RevocationContext) -> None:
        self.calls.append(revocation)
        if self.failures:
            raise self.failures.pop(0)


def recording() -> type[Recording]:
    class Fresh(Recording):
        calls: ClassVar[list[RevocationContext]] = []
        failures: ClassVar[list[Exception]] = []

    return Fresh


def gated_stock(entered: threading.Event, release: threading.Event) -> type:
    """The ``stock`` generator, held inside its claim until ``release`` (the keys are taken, nothing is stored)."""

    class GatedStock:
        name = "gated-stock"
        Options = StockOptions

        def __init__(self, options: StockOptions, resources: Resources) -> None:
            self.stock = StockGenerator(options, resources)

        def generate(self, order: OrderContext) -> Generated:
            generated: Generated = self.stock.generate(order)
            entered.set()
            release.wait(30)
            return generated

        def revoke(self, revocation: RevocationContext) -> None:
            self.stock.revoke(revocation)

    return GatedStock


def pool(multi: Multi) -> StockPool:
    return StockPool(multi.daemon.queue.engine, multi.clock, multi.daemon.queue.cipher)


def revoked_at(multi: Multi) -> dict[str, float | None]:
    """Pool rows (by claim) and whether each is revoked."""
    with multi.daemon.queue.engine.connect() as conn:
        rows = conn.execute(select(KEYS.c.id, KEYS.c.claimed_by, KEYS.c.revoked_at).order_by(KEYS.c.id)).all()
    return {f"{row.id}:{row.claimed_by}": row.revoked_at for row in rows}


def log_lines(multi: Multi, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in multi.logs.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if line["event"] == name]


async def pay(multi: Multi, product: str, quantity: int = 1) -> str:
    intent = payment_intent(product, quantity=quantity)
    assert (await multi.stripe().send(event("payment_intent.succeeded", intent))).status_code == 200
    return str(intent["id"])


async def refund(multi: Multi, order_id: str) -> str:
    answer = await multi.stripe().send(event("charge.refunded", charge_refunded(order_id)))
    assert answer.status_code == 200
    return str(answer.json()["status"])


async def later(multi: Multi, seconds: float) -> None:
    multi.clock.advance(seconds)
    await multi.drain()


def bodies(multi: Multi, kind: str) -> list[dict[str, Any]]:
    return [r.body for r in multi.seller.accepted() if r.body["type"] == kind]


async def test_refunded_stock_key_is_revoked_and_never_sold_again(tmp_path: Path, db_url: str) -> None:
    """A stock key whose order is refunded after delivery is marked revoked and stays out of the pool: the seller
    gets order.revoked with it, the next order gets the other key, and the one after waits for stock."""
    async with multi_stack(
        tmp_path, database={"url": db_url}, stripe_products={"serial": {"generator": "stock"}}
    ) as multi:
        assert pool(multi).import_keys("stripe", "serial", ["SERIAL-A", "SERIAL-B"]).added == 2
        first = await pay(multi, "serial")
        await multi.drain()
        [sold] = bodies(multi, "order.delivered")[0]["data"]["keys"]
        assert await refund(multi, first) == "flagged"
        await multi.drain()
        [revoked] = bodies(multi, "order.revoked")
        assert (revoked["data"]["keys"], revoked["data"]["reason"]) == ([sold], "refunded")
        assert [at is not None for at in revoked_at(multi).values()] == [sold == "SERIAL-A", sold == "SERIAL-B"]
        assert pool(multi).available("stripe", "serial") == 1
        second = await pay(multi, "serial")
        await multi.drain()
        assert bodies(multi, "order.delivered")[1]["data"]["keys"] == [k for k in ("SERIAL-A", "SERIAL-B") if k != sold]
        third = await pay(multi, "serial")
        await multi.drain()
        assert (await multi.job("stripe", third)).state == "waiting"
        assert (await multi.job("stripe", second)).state == "delivered"
        [state] = [r.state for r in await multi.daemon.queue.revocations((await multi.job("stripe", first)).id)]
        assert state == "done"


async def test_stock_key_of_an_order_cancelled_before_delivery_goes_back(tmp_path: Path, db_url: str) -> None:
    """A refund while the stock key is being taken cancels the order before any attempt: the key returns to the
    pool, the content is cleared (a retry takes a key anew), and the seller is told nothing."""
    entered, release = threading.Event(), threading.Event()
    async with multi_stack(
        tmp_path,
        database={"url": db_url},
        plugins={"gated-stock": gated_stock(entered, release)},
        stripe_products={"serial": {"generator": "gated-stock"}},
    ) as multi:
        pool(multi).import_keys("stripe", "serial", ["ONLY-KEY"])
        order = await pay(multi, "serial")
        drain = asyncio.create_task(multi.drain())
        try:
            assert await asyncio.to_thread(entered.wait, 30)
            assert pool(multi).available("stripe", "serial") == 0
            assert await refund(multi, order) == "pending"
        finally:
            release.set()
            await asyncio.wait_for(drain, 30)
        job = await multi.job("stripe", order)
        assert (job.state, job.content, job.issue) == ("cancelled", None, 1)
        [revocation] = await multi.daemon.queue.revocations(job.id)
        assert (revocation.sent, revocation.state) == (False, "done")
        assert pool(multi).available("stripe", "serial") == 1
        assert list(revoked_at(multi).values()) == [None]
        assert multi.seller.received == []


@pytest.mark.contract("revoke", "RevocationContext")
async def test_operator_revoke_calls_the_hook_once_and_retries_until_done(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """orders revoke: the hook is called until it succeeds (a failure and a failed order.revoked are tried again on
    the delivery schedule), never after; orders show, the status page and the metric show it; a second revoke is
    refused."""
    plugin = recording()
    plugin.failures.append(RuntimeError("key server down"))
    async with multi_stack(
        tmp_path,
        database={"url": db_url},
        plugins={"recording": plugin},
        stripe_products={"rec": {"generator": "recording"}},
    ) as multi:
        order = await pay(multi, "rec", quantity=2)
        await multi.drain()
        database = ["--database", db_url]
        assert main(["orders", "revoke", order, *database]) == 0
        await multi.drain()
        assert [call.reason for call in plugin.calls] == ["revoked"]  # raised: tried again later
        multi.seller.answers = [503]
        await later(multi, 5)
        assert len(plugin.calls) == 2
        [call] = plugin.calls[1:]
        assert (call.order_id, call.keys, call.sent, call.issue) == (
            order,
            (f"KEY-stripe:{order}-0", f"KEY-stripe:{order}-1"),
            True,
            0,
        )
        assert call.idempotency_key == f"stripe:{order}" and call.quantity == 2
        assert bodies(multi, "order.revoked") == []  # the seller answered 503
        await later(multi, 300)
        assert len(plugin.calls) == 2  # never again after its success
        [revoked] = bodies(multi, "order.revoked")
        assert revoked["data"]["reason"] == "revoked" and revoked["data"]["order_id"] == order
        job = await multi.job("stripe", order)
        assert job.state == "delivered"
        capsys.readouterr()
        assert main(["orders", "show", order, *database, "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert [(r["reason"], r["state"], r["attempts"]) for r in shown["revocations"]] == [("revoked", "done", 3)]
        assert [(h["outcome"]) for h in shown["history"] if h["step"] == "revoke"] == [
            "revoked:pending",
            "retry",
            "hook_ok",
            "retry",
            "done",
        ]
        assert main(["orders", "revoke", order, *database]) == 1
        assert "revoked already" in capsys.readouterr().err
        assert [line["reason"] for line in log_lines(multi, "order.revoked")] == ["revoked"]
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"{multi.url}/metrics")).text
        assert 'delivery_daemon_revocations_total{outcome="retry",store="stripe"} 2.0' in metrics
        assert 'delivery_daemon_revocations_total{outcome="done",store="stripe"} 1.0' in metrics
        async with status_page(multi) as page:  # type: ignore[arg-type]  # a Multi: status_page uses only .daemon
            assert (await page.login()).status_code == 303
            shown_page = (await page.client.get(f"{page.url}/orders/{job.id}")).text
            assert 'id="revocations"' in shown_page and ">revoked<" in shown_page and ">done<" in shown_page
            overview = (await page.client.get(f"{page.url}/")).text
            assert 'data-revocations="done">1<' in overview


async def test_reissue_revokes_the_key_and_delivers_a_new_one(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """orders reissue: the old keys are revoked (hook, order.revoked), new ones are generated and delivered through
    the store's channel as a new message, every attempt with the same bytes; the old keys stay in the history."""
    plugin = recording()
    async with multi_stack(
        tmp_path,
        database={"url": db_url},
        plugins={"recording": plugin},
        stripe_products={"rec": {"generator": "recording"}},
    ) as multi:
        order = await pay(multi, "rec")
        await multi.drain()
        database = ["--database", db_url]
        assert main(["orders", "reissue", order, *database]) == 0
        multi.seller.answers = [500]  # the new content's first attempt fails
        await multi.drain()
        await later(multi, 5)
        delivered = [r for r in multi.seller.received if r.body["type"] == "order.delivered"]
        assert [r.status for r in delivered] == [200, 500, 200]
        old, new = delivered[0], delivered[2]
        assert old.body["data"]["keys"] == [f"KEY-stripe:{order}-0"]
        assert new.body["data"]["keys"] == [f"KEY-stripe:{order}#1-0"]
        assert delivered[1].body == new.body and delivered[1].msg_id == new.msg_id != old.msg_id
        [revoked] = bodies(multi, "order.revoked")
        assert (revoked["data"]["reason"], revoked["data"]["keys"]) == ("reissued", old.body["data"]["keys"])
        assert [(c.reason, c.issue, c.keys) for c in plugin.calls] == [("reissued", 0, (f"KEY-stripe:{order}-0",))]
        job = await multi.job("stripe", order)
        assert (job.state, job.issue) == ("delivered", 1)
        capsys.readouterr()
        assert main(["orders", "show", order, *database, "--json", "--reveal"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["content"]["keys"] == new.body["data"]["keys"]
        assert shown["revoked"] == {"0": old.body["data"]["keys"]}


async def test_reissue_and_revoke_are_refused_where_they_do_not_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refunded order gets no new key, and an order not delivered has nothing to revoke (exit 1, one line)."""
    async with multi_stack(tmp_path) as multi:
        delivered = await pay(multi, "prod-a")
        await multi.drain()
        queued = await pay(multi, "prod-a")
        await refund(multi, delivered)
        database = ["--database", multi.daemon.settings.database.url]
        capsys.readouterr()
        assert main(["orders", "reissue", delivered, *database]) == 1
        assert "refunded: it gets no new key" in capsys.readouterr().err
        assert main(["orders", "revoke", queued, *database]) == 1
        assert "not delivered" in capsys.readouterr().err


async def test_a_revoked_or_refunded_content_is_never_redelivered(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """orders redeliver and the status page refuse an order whose content was revoked or refunded (the keys were taken
    back); nothing is sent again, and an order with a re-issued content can be redelivered."""
    async with multi_stack(tmp_path, database={"url": db_url}) as multi:
        refunded, revoked, reissued = [await pay(multi, "prod-a") for _ in range(3)]
        await multi.drain()
        database = ["--database", db_url]
        await refund(multi, refunded)
        assert main(["orders", "revoke", revoked, *database]) == 0
        assert main(["orders", "reissue", reissued, *database]) == 0
        await multi.drain()
        sent = len(bodies(multi, "order.delivered"))
        capsys.readouterr()
        assert main(["orders", "redeliver", refunded, *database]) == 1
        assert "refunded" in capsys.readouterr().err
        assert main(["orders", "redeliver", revoked, *database]) == 1
        assert "revoked" in capsys.readouterr().err
        async with status_page(multi) as page:  # type: ignore[arg-type]  # a Multi: status_page uses only .daemon
            assert (await page.login()).status_code == 303
            for order in (refunded, revoked):
                job = await multi.job("stripe", order)
                assert job.id is not None and not await multi.daemon.queue.redeliver(job.id)
                assert "/redeliver" not in (await page.client.get(f"{page.url}/orders/{job.id}")).text
        await later(multi, 5)
        assert len(bodies(multi, "order.delivered")) == sent
        assert (await multi.job("stripe", revoked)).state == "delivered"
        assert main(["orders", "redeliver", reissued, *database]) == 0  # its new content was never revoked
        await multi.drain()
        assert len(bodies(multi, "order.delivered")) == sent + 1


async def test_a_flood_of_revocation_list_requests_reads_the_database_once(tmp_path: Path) -> None:
    """The unauthenticated list is built once per FRESH seconds per product, whatever the number of requests (also
    when they arrive together); after that the next request reads the database again and sees a new revocation."""
    private, public = tmp_path / "signing.pem", tmp_path / "signing.pub"
    generate_keypair(private, public)
    signed = {"generator": "signed", "options": {"private_key_file": str(private)}}
    async with multi_stack(tmp_path, stripe_products={"app": signed}) as multi:
        order = await pay(multi, "app")
        await multi.drain()
        queue = multi.daemon.queue
        reads: list[tuple[str, str]] = []
        read = queue.revoked_hashes

        async def counted(store: str, product_id: str) -> list[str]:
            reads.append((store, product_id))
            return await read(store, product_id)

        queue.revoked_hashes = counted  # type: ignore[method-assign]  # a spy around the real read
        async with httpx.AsyncClient() as client:

            async def fetch() -> str:
                response = await client.get(f"{multi.url}/revocations/stripe/app")
                assert response.status_code == 200
                return response.text

            first = await asyncio.gather(*(fetch() for _ in range(20)))
            assert len(set(first)) == 1 and reads == [("stripe", "app")]
            await refund(multi, order)
            await multi.drain()
            multi.clock.advance(FRESH - 1)
            assert await fetch() == first[0] and len(reads) == 1
            multi.clock.advance(1)
            assert await fetch() != first[0] and len(reads) == 2


@pytest.mark.contract("revocation_list")
async def test_refunded_signed_licence_is_on_the_published_revocation_list(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """GET /revocations/{store}/{product} serves the signed list; license verify --revocations accepts a licence
    while it is not on it and refuses it once its order was refunded (after the served copy's FRESH seconds), also
    after the retention purge dropped the revoked keys; a product without a list is a JSON 404, an altered list is
    refused."""
    private, public = tmp_path / "signing.pem", tmp_path / "signing.pub"
    generate_keypair(private, public)
    signed = {"generator": "signed", "options": {"private_key_file": str(private)}}
    async with multi_stack(tmp_path, database={"url": db_url}, stripe_products={"app": signed}) as multi:
        order = await pay(multi, "app")
        await multi.drain()
        [licence] = bodies(multi, "order.delivered")[0]["data"]["keys"]
        listing = tmp_path / "revoked.txt"

        async def verify() -> tuple[int, str]:
            async with httpx.AsyncClient() as client:
                response = await client.get(f"{multi.url}/revocations/stripe/app")
            assert response.status_code == 200 and response.text.startswith("revocations/")
            listing.write_text(response.text)
            capsys.readouterr()
            code = main(["license", "verify", licence, "--public-key", str(public), "--revocations", str(listing)])
            return code, capsys.readouterr().out

        code, out = await verify()
        assert code == 0 and out.startswith("valid:")
        await refund(multi, order)
        await multi.drain()
        code, out = await verify()
        assert code == 0, "the list built a moment ago is served for FRESH seconds"
        await later(multi, FRESH)
        code, out = await verify()
        assert code == 1 and out.startswith("invalid: revoked")
        multi.clock.advance(31 * 86400)  # the retention purge drops the revoked keys, never their place on the list
        assert purge(multi.daemon.queue.engine, multi.clock, days=30) == 1
        [revocation] = await multi.daemon.queue.revocations((await multi.job("stripe", order)).id)
        assert revocation.content is None and revocation.key_hashes is not None
        code, out = await verify()
        assert code == 1 and out.startswith("invalid: revoked")
        async with httpx.AsyncClient() as client:
            for path in ("/revocations/stripe/prod-a", "/revocations/nowhere/app"):
                missing = await client.get(f"{multi.url}{path}")
                assert missing.status_code == 404 and "no revocation list" in missing.json()["error"]
        listing.write_text(listing.read_text().replace("revocations/", "revocations/x", 1))
        assert main(["license", "verify", licence, "--public-key", str(public), "--revocations", str(listing)]) == 2
