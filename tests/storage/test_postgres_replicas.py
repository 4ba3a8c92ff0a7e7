"""Replicas sharing one PostgreSQL database: the end-to-end path on both backends, and NOTIFY wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from delivery_daemon.compose import create_app, default_marketplaces
from delivery_daemon.generators.discovery import discover
from delivery_daemon.http.serving import serve
from delivery_daemon.order import Content
from tests.support.stack import PRODUCT, Stack

MakeStack = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]


async def test_order_delivered_and_retried_on_either_backend(make_stack: MakeStack, db_url: str) -> None:
    """A webhook is queued, a failed delivery retried after backoff, and the order delivered once."""
    async with make_stack(database={"url": db_url}) as stack:
        stack.market.faults.fail_next_deliveries(1)
        placed = await stack.market.place_order(PRODUCT, count=2)
        assert placed.webhook_status == 200
        await stack.drain()
        assert stack.market.accepted(placed.id_order) is None
        await stack.advance_and_drain(5)
        accepted = stack.market.accepted(placed.id_order)
        assert accepted is not None
        job = await stack.job(placed.id_order)
        assert job.state == "delivered" and job.attempts == 2
        assert accepted.json["text"] == Content.from_json(job.content).text


@pytest.mark.postgres
async def test_webhook_on_one_replica_wakes_another_through_notify(make_stack: MakeStack, pg_url: str) -> None:
    """An idle replica whose poll is an hour away delivers, within seconds, an order another replica received."""
    async with make_stack(database={"url": pg_url}) as stack:
        idle = stack.settings.model_copy(
            update={"worker": stack.settings.worker.model_copy(update={"poll_interval": 3600.0})}
        )
        replica = create_app(
            idle, marketplaces=default_marketplaces(), plugins=dict(discover()), clock=stack.clock, start_worker=True
        )
        async with serve(replica):
            await asyncio.wait_for(replica.state.listener.listening.wait(), timeout=60)
            placed = await stack.market.place_order(PRODUCT)
            assert placed.webhook_status == 200  # received by the stack's daemon, whose worker is not running
            await wait_for(lambda: stack.market.accepted(placed.id_order), limit=60)
        job = await stack.job(placed.id_order)
        assert job.state == "delivered"


async def wait_for(probe: Callable[[], Any], limit: float) -> Any:
    """Poll ``probe`` until it returns something truthy (a condition, not a timing assumption)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not (result := probe()):
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {limit}s")
        await asyncio.sleep(0.05)
    return result
