"""Synchronous fulfilment (Sellix ``product:dynamic``): a flood of requests runs a bounded number of generators."""

from __future__ import annotations

import asyncio
import io
import secrets
from pathlib import Path
from typing import Any

import pytest

from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import create_app, default_marketplaces
from delivery_daemon.config import parse_settings
from delivery_daemon.generators.discovery import discover
from delivery_daemon.http.serving import serve
from delivery_daemon.logs import configure_logging
from delivery_daemon.reference import sellix
from delivery_daemon.reference.sellix import SellixSender
from tests.pipeline.test_worker_limits import Gate, gated_generator
from tests.support.multistore import multi_stack

BOUND = 2
REQUESTS = 6


async def test_concurrent_dynamic_requests_run_at_most_concurrency_receiver_generators(tmp_path: Path) -> None:
    """Six simultaneous product:dynamic requests, worker.concurrency=2: two receiver-side generator calls at a
    time, all served (the worker has its own bound: docs/configuration.md)."""
    configure_logging("json", "error", stream=io.StringIO())
    gate = Gate(held=True)

    Counted = gated_generator(gate)
    secret = secrets.token_hex(16)
    settings = parse_settings(
        {
            "database": {"url": f"sqlite:///{tmp_path / 'd.db'}"},
            "worker": {"concurrency": BOUND, "poll_interval": 60},
            "stores": [
                {
                    "name": "sellix",
                    "marketplace": "sellix",
                    "webhook_secret": secret,
                    "sync_budget": 9.5,
                    "default": {"generator": "counted"},
                    "delivery": {
                        "channel": "webhook",
                        "webhook": {"url": "http://127.0.0.1:9/hook", "secret": secrets.token_hex(16)},
                    },
                }
            ],
        },
        environ={},
    )
    plugins: dict[str, Any] = {**dict(discover()), "counted": Counted}
    app = create_app(
        settings, marketplaces=default_marketplaces(), plugins=plugins, clock=ManualClock(), start_worker=False
    )
    async with serve(app) as daemon:
        sender = SellixSender(f"{daemon.url}/webhooks/sellix", secret)
        orders = [sellix.order("p") for _ in range(REQUESTS)]
        answers = [asyncio.create_task(sender.dynamic(order, wait=60)) for order in orders]
        await gate.until(BOUND)
        for n in range(BOUND + 1, REQUESTS + 1):  # each finished call lets exactly one more in
            gate.let_one()
            await gate.until(n)
        for _ in range(BOUND):
            gate.let_one()
        products = await asyncio.wait_for(asyncio.gather(*answers), 60)
    assert [p is not None and p.startswith(f"K-{o['uniqid']}-0") for p, o in zip(products, orders, strict=True)] == [
        True
    ] * REQUESTS
    assert gate.peak == BOUND


async def test_dynamic_product_is_never_also_delivered_by_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that claims due jobs after every commit never takes a dynamic order: it is answered, not also sent."""
    async with multi_stack(tmp_path) as multi:
        committer, draining = multi.daemon.queue.committer, False
        run, run_merged = committer.run, committer.run_merged

        async def then_drain(result: Any) -> Any:
            nonlocal draining
            if not draining:  # the worker's own commits do not start another drain
                draining = True
                try:
                    await multi.drain()
                finally:
                    draining = False
            return result

        async def run_then_drain(*args: Any, **kwargs: Any) -> Any:
            return await then_drain(await run(*args, **kwargs))

        async def merged_then_drain(*args: Any, **kwargs: Any) -> Any:
            return await then_drain(await run_merged(*args, **kwargs))

        monkeypatch.setattr(committer, "run", run_then_drain)
        monkeypatch.setattr(committer, "run_merged", merged_then_drain)
        data = sellix.order("dyn-race", quantity=2)
        product = await multi.sellix().dynamic(data)
        assert product is not None and len(product.split("\n")) == 2
        assert multi.seller.received == []
        job = await multi.job("sellix", data["uniqid"])
        assert job.state == "delivered" and job.content is not None
