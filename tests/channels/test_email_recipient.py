"""Issue #20 item 2: the email channel mails one order's keys to exactly one mailbox.

A buyer email that is not exactly one mailbox (a list, a header injection, a group) holds the order for the operator
— at the webhook when it carries the address, at verification when the marketplace's API gives it, and in the email
channel itself — and the SMTP server (a real aiosmtpd on loopback) receives nothing. One mailbox, with or without a
display name, is delivered to its normalised address alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from delivery_daemon.cli import main
from delivery_daemon.clock import ManualClock
from delivery_daemon.order import IncomingOrder
from delivery_daemon.storage.engine import create_db_engine, create_schema
from delivery_daemon.storage.models import JobState
from delivery_daemon.storage.operator import Orders
from delivery_daemon.storage.queue import JobQueue
from tests.support.multistore import Mailbox, free_port, multi_stack
from tests.support.stack import PRODUCT, Stack, StackFactory
from tests.support.status_helpers import status_page

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

NOT_ONE_MAILBOX = [
    pytest.param("a@example.com, b@example.org", id="list"),
    pytest.param("a@example.com,b@example.org", id="list-no-space"),
    pytest.param("a@example.com\r\nBcc: b@example.org", id="crlf-injection"),
    pytest.param("a@example.com\nb@example.org", id="lf"),
    pytest.param("friends: a@example.com, b@example.org;", id="group"),
    pytest.param("friends:a@example.com,b@example.org;", id="group-no-space"),
    pytest.param("A <a@example.com>, B <b@example.org>", id="display-name-list"),
]


def events(logs: io.StringIO, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if line["event"] == name]


@pytest.mark.parametrize("address", NOT_ONE_MAILBOX)
async def test_webhook_email_that_is_not_one_mailbox_holds_the_order(tmp_path: Path, address: str) -> None:
    """A webhook whose buyer email is not exactly one mailbox is answered 2xx, stored held with the reason and
    logged as order.held; the worker leaves it alone and the SMTP server receives nothing."""
    async with multi_stack(tmp_path, mail=True) as multi:
        response = await multi.generic().send("order.paid", {"order_id": "H-1", "quantity": 1, "email": address})
        assert response.status_code == 200, response.text
        await multi.drain()
        job = await multi.job("generic", "H-1")
        assert multi.mailbox is not None and multi.mailbox.messages == []
        assert job.state == "held", (job.state, job.last_error)
        assert job.last_error.startswith("buyer email is not exactly one mailbox")
        [held] = events(multi.logs, "order.held")
        assert held["order_id"] == "H-1" and held["step"] == "receive" and held["reason"] == job.last_error
        assert address not in multi.logs.getvalue()  # the reason names what is wrong, not the address
        history = await multi.daemon.queue.history(job.id)
        assert [(a.step, a.outcome, a.state) for a in history] == [("receive", "held", "held")]


@pytest.mark.parametrize(
    ("address", "normalised"),
    [
        ("Eve Buyer <eve@Example.ORG>", "eve@example.org"),
        ("eve@EXAMPLE.org", "eve@example.org"),
        ("<eve@example.org>", "eve@example.org"),
        ('"Buyer, Eve" <eve@example.org>', "eve@example.org"),
    ],
)
async def test_one_mailbox_is_delivered_to_its_normalised_address_alone(
    tmp_path: Path, address: str, normalised: str
) -> None:
    """One mailbox, with or without a display name, is delivered to exactly its normalised address, which the job
    stores."""
    async with multi_stack(tmp_path, mail=True) as multi:
        await multi.generic().send("order.paid", {"order_id": "N-1", "quantity": 1, "email": address})
        await multi.drain()
        job = await multi.job("generic", "N-1")
        assert job.state == "delivered", job.last_error
        assert job.buyer_email == normalised
        assert multi.mailbox is not None
        [envelope] = multi.mailbox.messages
        assert envelope.rcpt_tos == [normalised]
        assert message_from_bytes(envelope.content).get_all("To") == [normalised]


# -- the address from the marketplace's API, at verification (SoftStore's order info) -----------------------------


@contextlib.asynccontextmanager
async def email_stack(make_stack: StackFactory) -> AsyncIterator[tuple[Stack, Mailbox]]:
    """The reference SoftStore and the daemon, its store delivering by email to a real SMTP server on loopback."""
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        email = {"host": "127.0.0.1", "port": port, "security": "none", "sender": "shop@example.org"}
        async with make_stack(
            store_delivery={"channel": "email", "email": email}, security={"allowed_networks": ["127.0.0.0/8"]}
        ) as stack:
            yield stack, mailbox
    finally:
        controller.stop()


def cli(stack: Stack, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main([*argv, "--database", stack.settings.database.url])
    out, err = capsys.readouterr()
    return code, out + err


async def test_marketplace_email_list_is_held_at_verification_and_never_mailed(
    make_stack: StackFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """An order whose email from the marketplace's API is a list of two addresses is held at verification (the old
    code mailed both); `orders show`, `orders list --state held` and the status page show it with its reason."""
    async with email_stack(make_stack) as (stack, mailbox):
        placed = await stack.market.place_order(PRODUCT, email="a@example.com, b@example.org")
        assert placed.webhook_status == 200
        await stack.drain()
        job = await stack.job(placed.id_order)
        assert mailbox.messages == [], [m.rcpt_tos for m in mailbox.messages]
        assert job.state == "held", (job.state, job.last_error)
        assert job.last_error.startswith("buyer email is not exactly one mailbox")
        assert job.content is None and job.quantity is None  # nothing generated for an order that cannot go out
        [held] = events(stack.logs, "order.held")
        assert held["step"] == "verify" and held["order_id"] == placed.id_order

        code, shown = cli(stack, capsys, "orders", "show", placed.id_order)
        assert code == 0 and "held" in shown and "buyer email is not exactly one mailbox" in shown
        code, listed = cli(stack, capsys, "orders", "list", "--state", "held", "--json")
        assert code == 0 and [row["order_id"] for row in json.loads(listed)] == [placed.id_order]

        async with status_page(stack) as page:
            await page.login()
            detail = (await page.client.get(f"{page.url}/orders/{job.id}")).text
            assert 'id="order-state">held<' in detail and 'id="held-note"' in detail
            assert "buyer email is not exactly one mailbox" in detail
            listing = (await page.client.get(f"{page.url}/orders", params={"state": "held"})).text
            assert placed.id_order in listing and '<option value="held" selected' in listing
            metrics = (await page.client.get(f"{page.admin_url}/metrics")).text
            assert 'delivery_daemon_jobs{state="held"} 1.0' in metrics


async def test_held_order_is_retried_after_the_fix_or_cancelled(
    make_stack: StackFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """`orders retry` queues a held order again (it is checked again: held while the address is still wrong,
    delivered to the one mailbox once the marketplace has it right); `orders cancel` ends a held order."""
    async with email_stack(make_stack) as (stack, mailbox):
        fixed = await stack.market.place_order(PRODUCT, email="a@example.com,b@example.org")
        dropped = await stack.market.place_order(PRODUCT, email="a@example.com,b@example.org")
        await stack.drain()
        assert (await stack.job(fixed.id_order)).state == "held"

        assert cli(stack, capsys, "orders", "retry", fixed.id_order)[0] == 0
        stack.catch_up_with_cli()
        await stack.drain()
        assert (await stack.job(fixed.id_order)).state == "held" and mailbox.messages == []

        stack.market.orders[fixed.id_order].email = "A.Buyer@Example.com"
        assert cli(stack, capsys, "orders", "retry", fixed.id_order)[0] == 0
        stack.catch_up_with_cli()
        await stack.drain()
        job = await stack.job(fixed.id_order)
        assert job.state == "delivered" and job.buyer_email == "A.Buyer@example.com"
        assert [m.rcpt_tos for m in mailbox.messages] == [["A.Buyer@example.com"]]

        code, said = cli(stack, capsys, "orders", "cancel", dropped.id_order)
        assert code == 0, said
        assert (await stack.job(dropped.id_order)).state == "cancelled"
        assert len(mailbox.messages) == 1


# -- the channel itself, the last line of defence -----------------------------------------------------------------


@pytest.mark.parametrize("address", NOT_ONE_MAILBOX)
async def test_email_channel_refuses_a_stored_address_that_is_not_one_mailbox(
    make_stack: StackFactory, address: str
) -> None:
    """A job that reaches the email channel with a stored address that is not one mailbox (e.g. verified before
    this check existed) is held by the channel and nothing reaches the SMTP server."""
    async with email_stack(make_stack) as (stack, mailbox):
        placed = await stack.market.place_order(PRODUCT, send_webhook=False)
        await stack.market.send_webhook(placed.id_order)
        queue = stack.daemon.queue
        [job] = await queue.claim("test", 30, 1)
        await queue.save_verification(job, "test", 1, address, 1.0)  # stored as the old code did
        await queue.release_owned("test")
        await stack.drain()
        job = await stack.job(placed.id_order)
        assert mailbox.messages == []
        assert job.state == "held", (job.state, job.last_error)
        assert job.last_error.startswith("buyer email is not exactly one mailbox")
        assert job.content is not None  # generated before the channel refused: a retry sends the same keys
        [held] = events(stack.logs, "order.held")
        assert held["step"] == "deliver"


async def test_held_webhook_order_answers_like_any_accepted_order(tmp_path: Path) -> None:
    """The held order's webhook answer is a 200 that says it is held; the same webhook again is a duplicate."""
    async with multi_stack(tmp_path, mail=True) as multi:
        sender = multi.generic()
        first = await sender.send("order.paid", {"order_id": "D-1", "email": "a@example.com, b@example.org"})
        again = await sender.send("order.paid", {"order_id": "D-1", "email": "a@example.com, b@example.org"})
        assert first.status_code == 200 and first.json() == {
            "status": "accepted",
            "order_id": "D-1",
            "duplicate": False,
            "held": True,
        }
        assert again.status_code == 200 and again.json()["duplicate"] is True
        assert (await multi.job("generic", "D-1")).received == 2
        assert len(events(multi.logs, "order.held")) == 1


async def test_webhook_email_is_not_checked_for_stores_that_do_not_mail(tmp_path: Path) -> None:
    """A store delivering through the signed webhook channel does not mail anyone: its order is not held."""
    async with multi_stack(tmp_path) as multi:
        from delivery_daemon.reference.shoppy import order

        data = order("7", email="a@example.com, b@example.org")
        response = await multi.shoppy().send(100, data)
        assert response.status_code == 200
        await multi.drain()
        assert (await multi.job("shoppy", data["id"])).state == "delivered"


# -- the held state in the queue, on SQLite and PostgreSQL ----------------------------------------------------------


async def test_held_orders_are_stored_held_never_claimed_and_left_to_the_operator(db_url: str) -> None:
    """Held orders enqueued alone and together with queued ones (one multi-row INSERT) are stored held with their
    reason, never claimed by a worker, and moved only by the operator's retry (to queued) or cancel."""
    engine = create_db_engine(db_url)
    create_schema(engine)
    clock = ManualClock()
    queue = JobQueue(engine, clock)
    try:

        def order(n: int, held: str | None) -> IncomingOrder:
            return IncomingOrder(
                store="shop", marketplace="softstore", order_id=f"o{n}", product_id="p", payload={}, held=held
            )

        await queue.enqueue(order(0, "buyer email is not exactly one mailbox: x"))
        await asyncio.gather(*(queue.enqueue(order(n, "why" if n % 2 else None)) for n in range(1, 9)))
        found = {n: await queue.find("shop", f"o{n}") for n in range(9)}
        jobs = {n: job for n, job in found.items() if job is not None}
        assert len(jobs) == 9
        held = sorted(n for n, job in jobs.items() if job.state == JobState.HELD.value)
        assert held == [0, 1, 3, 5, 7]
        assert jobs[0].last_error == "buyer email is not exactly one mailbox: x" and jobs[2].last_error is None
        assert [(a.step, a.outcome, a.state, a.error) for a in await queue.history(jobs[1].id or 0)] == [
            ("receive", "held", "held", "why")
        ]
        claimed = await queue.claim("w", 30, 20)
        assert sorted(job.order_id for job in claimed) == ["o2", "o4", "o6", "o8"]
        assert (await queue.counts())["held"] == 5

        orders = Orders(engine, clock)
        assert (await queue.retry(jobs[0].id or 0)) is True
        assert orders.retry("o1").state == "queued"
        assert orders.cancel("o3").state == "cancelled"
        assert (await queue.counts())["held"] == 2
    finally:
        queue.close()
        engine.dispose()
