"""The missed-order watchdog end to end over 127.0.0.1 sockets, on SQLite and PostgreSQL: orders whose webhook the
reference marketplaces never sent end delivered (Sellix, Virtual Stores: by email) or raised as missed (SoftStore),
once; the cursor keeps a run to the new orders; a webhook racing the watchdog still makes one job."""

from __future__ import annotations

import asyncio
from typing import Any

from delivery_daemon.storage.missed import open_missed
from delivery_daemon.watchdog.findings import Outcome, StoreReport
from tests.watchdog.stacks import EBOOK, Watched, watched

GRACE = 600.0


def outcomes(report: StoreReport) -> dict[str, Outcome]:
    return {finding.order_id: finding.outcome for finding in report.findings}


def sample(watch: Watched, name: str, **labels: str) -> float:
    value = watch.daemon.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def place_unannounced(watch: Watched) -> dict[str, str]:
    """One order per marketplace whose webhook is never sent; returns their order ids by store."""
    watch.soft.faults.never_send_next_webhooks(1)
    soft = await watch.soft.place_order("prod-1", 2)
    assert soft.webhook_status is None and watch.soft.webhooks == []
    watch.sellix.faults.never_send_next_webhooks(1)
    sellix = await watch.sellix.place_order("svc-1", 2, email="carol@example.org")
    watch.vs.faults.webhooks_never_sent = 1
    vs = watch.vs.place_order(EBOOK, email="dave@example.org")
    assert await watch.vs.announce(vs, watch.vs_sender) is None and watch.vs_sender.sent == []
    return {"soft": soft.id_order, "sellix": str(sellix["uniqid"]), "vs": vs.payment_intent_id}


async def test_orders_never_announced_end_delivered_or_raised(db_url: str) -> None:
    """Sellix and Virtual Stores orders without a webhook are queued and mailed once; SoftStore's is raised once."""
    async with watched(db_url) as watch:
        lost = await place_unannounced(watch)
        announced = await watch.soft.place_order("prod-1")  # its webhook came: the watchdog leaves it alone
        watch.vs.place_order([{"product_id": "mug", "quantity": 1, "unit_price": "12.50"}])  # nothing digital: skipped
        assert announced.webhook_status == 200
        watch.clock.advance(GRACE + 1)
        reports = {report.store: report for report in await watch.watchdog.run_all()}
        assert set(reports) == {"soft", "sellix", "vs"} and not any(r.error for r in reports.values())
        assert outcomes(reports["soft"]) == {lost["soft"]: Outcome.MISSED, announced.id_order: Outcome.HAD_JOB}
        assert outcomes(reports["sellix"]) == {lost["sellix"]: Outcome.QUEUED}
        assert outcomes(reports["vs"]) == {lost["vs"]: Outcome.QUEUED}
        assert await watch.drain() == 3
        for store in ("sellix", "vs"):
            assert (await watch.job(store, lost[store])).state == "delivered"
        recipients = sorted(rcpt for message in watch.mailbox.messages for rcpt in message.rcpt_tos)
        assert recipients == ["carol@example.org", "dave@example.org"]
        assert next(iter(watch.vs.orders.values())).status == "fulfilled"
        assert await watch.job("soft", lost["soft"]) is None and watch.soft.accepted(lost["soft"]) is None
        [missed] = open_missed(watch.daemon.engine)
        assert (missed.store, missed.order_id) == ("soft", lost["soft"]) and "only in the webhook" in missed.reason
        [event] = watch.events("order.missed")
        assert event["order_id"] == lost["soft"] and event["level"] == "warning"
        assert sample(watch, "delivery_daemon_watchdog_orders_total", store="soft", outcome="missed") == 1

        watch.clock.advance(300)
        again = {report.store: report for report in await watch.watchdog.run_all()}
        assert outcomes(again["soft"])[lost["soft"]] == Outcome.STILL_MISSED
        assert outcomes(again["sellix"]) == {lost["sellix"]: Outcome.HAD_JOB}
        assert len(watch.events("order.missed")) == 1 and await watch.drain() == 0
        assert len(watch.mailbox.messages) == 2

        await watch.soft.send_webhook(lost["soft"])  # SoftStore resent it after all: the order is no longer missed
        assert open_missed(watch.daemon.engine) == []
        assert await watch.drain() == 1 and watch.soft.accepted(lost["soft"]) is not None


async def test_an_order_younger_than_grace_waits_for_its_webhook(db_url: str) -> None:
    """A run leaves an order placed less than watchdog.grace ago alone; a run after the grace queues it."""
    async with watched(db_url) as watch:
        watch.sellix.faults.never_send_next_webhooks(1)
        data = await watch.sellix.place_order("svc-1")
        [first] = [r for r in await watch.watchdog.run_all() if r.store == "sellix"]
        assert outcomes(first) == {data["uniqid"]: Outcome.TOO_RECENT}
        assert await watch.job("sellix", str(data["uniqid"])) is None
        watch.clock.advance(GRACE + 1)
        report = await watch.watchdog.run_store("sellix")
        assert outcomes(report) == {data["uniqid"]: Outcome.QUEUED}


async def test_the_cursor_keeps_a_run_to_the_new_orders(db_url: str) -> None:
    """The first run pages back to the lookback; the next one reads only the pages since its cursor."""
    async with watched(db_url, sellix_page_size=2) as watch:
        for _ in range(8):
            await watch.sellix.place_order("svc-1")
            watch.clock.advance(1_000)
        watch.clock.advance(watch.settings.watchdog.settle)  # the cursor will be past every one of them
        first = await watch.watchdog.run_store("sellix")
        assert first.pages == 5 and len(first.findings) == 8 and first.error is None
        assert first.cursor == watch.clock.now() - watch.settings.watchdog.settle
        assert await watch.watchdog.ledger.cursor("sellix") == first.cursor
        watch.sellix.faults.never_send_next_webhooks(1)
        late = await watch.sellix.place_order("svc-1")
        watch.clock.advance(GRACE + 1)
        asked = len(watch.sellix.requests)
        second = await watch.watchdog.run_store("sellix")
        assert second.since == first.cursor
        assert second.pages == 1 and outcomes(second) == {late["uniqid"]: Outcome.QUEUED}
        assert len(watch.sellix.requests) - asked == 1
        # By hand from later than the cursor: the orders in between were not looked at, so the cursor stays.
        watch.clock.advance(2 * watch.settings.watchdog.settle)
        by_hand = await watch.watchdog.run_store("sellix", watch.clock.now() - 60, grace=0)
        assert by_hand.error is None and by_hand.cursor is None
        assert await watch.watchdog.ledger.cursor("sellix") == second.cursor


async def test_a_failed_listing_leaves_the_cursor_and_counts_the_failure(db_url: str) -> None:
    """A 503 from the list is the run's error (logged, counted); the cursor stays, the next run recovers."""
    async with watched(db_url) as watch:
        watch.sellix.faults.never_send_next_webhooks(1)
        data = await watch.sellix.place_order("svc-1")
        watch.clock.advance(GRACE + 1)
        watch.sellix.list_failures.append(503)
        failed = await watch.watchdog.run_store("sellix")
        assert failed.error is not None and "503" in failed.error and failed.cursor is None
        assert await watch.watchdog.ledger.cursor("sellix") is None
        assert sample(watch, "delivery_daemon_watchdog_runs_total", store="sellix", result="failed") == 1
        assert watch.events("watchdog.failed")
        report = await watch.watchdog.run_store("sellix")
        assert report.error is None and outcomes(report) == {data["uniqid"]: Outcome.QUEUED}


async def test_a_webhook_racing_the_watchdog_makes_one_job(db_url: str) -> None:
    """Webhooks sent while the watchdog queues the same orders: one job and one email per order, whoever wins."""
    async with watched(db_url) as watch:
        watch.sellix.faults.never_send_next_webhooks(6)
        orders = [await watch.sellix.place_order("svc-1", email=f"b{i}@example.org") for i in range(6)]
        watch.clock.advance(GRACE + 1)
        assert watch.sellix.sender is not None
        sender = watch.sellix.sender
        report, answers = await asyncio.gather(
            watch.watchdog.run_store("sellix"), asyncio.gather(*(sender.send("order:paid", data) for data in orders))
        )
        assert all(answer.status_code == 200 for answer in answers)
        assert {f.outcome for f in report.findings} <= {Outcome.QUEUED, Outcome.RACED, Outcome.HAD_JOB}
        for data in orders:
            job = await watch.job("sellix", str(data["uniqid"]))
            assert job is not None
        assert await watch.drain() == 6
        assert sorted(r for m in watch.mailbox.messages for r in m.rcpt_tos) == [f"b{i}@example.org" for i in range(6)]


async def test_the_webhook_committing_between_look_and_insert_is_raced(db_url: str, monkeypatch: Any) -> None:
    """When the job appears after the watchdog looked (the webhook won), the insert is a duplicate: outcome raced."""
    async with watched(db_url) as watch:
        watch.sellix.faults.never_send_next_webhooks(1)
        data = await watch.sellix.place_order("svc-1")
        watch.clock.advance(GRACE + 1)
        ledger = watch.watchdog.ledger
        looked = ledger.with_job

        async def look_then_webhook(store: str, order_ids: Any) -> set[str]:
            found = await looked(store, order_ids)
            if order_ids:  # the page with the order (the last page is empty)
                assert watch.sellix.sender is not None
                assert (await watch.sellix.sender.send("order:paid", data)).json()["duplicate"] is False
            return found

        monkeypatch.setattr(ledger, "with_job", look_then_webhook)
        report = await watch.watchdog.run_store("sellix")
        [finding] = report.findings
        assert finding.outcome == Outcome.RACED
        job = await watch.job("sellix", str(data["uniqid"]))
        assert finding.job_id == job.id and job.received == 2
        assert await watch.drain() == 1 and len(watch.mailbox.messages) == 1
