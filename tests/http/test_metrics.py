"""``GET /metrics``: Prometheus values move as orders flow; bearer token; a separate admin address."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from delivery_daemon.generators.contract import Generated, OrderContext
from delivery_daemon.http.metrics import create_admin_app
from delivery_daemon.http.serving import serve
from tests.support.stack import PRODUCT, STORE, Stack, StackFactory


async def scrape(
    client: httpx.AsyncClient, url: str, **headers: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get(f"{url}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_as_orders_flow(stack: Stack) -> None:
    """Webhooks, job states, oldest age, outcomes, latency and generator timing all follow real orders."""
    before = await scrape(stack.client, stack.url)
    assert value(before, "delivery_daemon_jobs", state="queued") == 0
    placed = await stack.market.place_order(PRODUCT, 2)
    await stack.market.place_order(PRODUCT, 1)  # a resent webhook for the first order is a duplicate:
    await stack.post({"id_order": placed.id_order, "signature": "0" * 40, "id_product": PRODUCT, "delivery_url": "x"})
    await stack.post({"id_order": "x"}, store="nope")
    stack.clock.advance(7)
    mid = await scrape(stack.client, stack.url)
    assert value(mid, "delivery_daemon_webhooks_received_total", store=STORE, result="accepted") == 2
    assert value(mid, "delivery_daemon_webhooks_received_total", store=STORE, result="rejected_403") == 1
    assert value(mid, "delivery_daemon_webhooks_received_total", store="_unknown", result="rejected_404") == 1
    assert value(mid, "delivery_daemon_jobs", state="queued") == 2
    assert value(mid, "delivery_daemon_oldest_pending_job_age_seconds") >= 7
    stack.market.faults.fail_next_deliveries(1, status=503)
    await stack.drain()
    after = await scrape(stack.client, stack.url)
    assert value(after, "delivery_daemon_deliveries_total", store=STORE, outcome="delivered") == 1
    assert value(after, "delivery_daemon_deliveries_total", store=STORE, outcome="retry") == 1
    assert value(after, "delivery_daemon_jobs", state="delivered") == 1
    assert value(after, "delivery_daemon_jobs", state="retry_wait") == 1
    assert value(after, "delivery_daemon_delivery_latency_seconds_count", store=STORE) == 1
    assert value(after, "delivery_daemon_delivery_latency_seconds_sum", store=STORE) >= 7
    assert value(after, "delivery_daemon_generator_duration_seconds_count", generator="pattern") == 2
    await stack.advance_and_drain(10)
    final = await scrape(stack.client, stack.url)
    assert value(final, "delivery_daemon_deliveries_total", store=STORE, outcome="delivered") == 2
    assert value(final, "delivery_daemon_oldest_pending_job_age_seconds") == 0


class Stocked:
    """A generator that reports its stock, as a key-list plugin would."""

    def __init__(self) -> None:
        self.left = 5

    def stock_remaining(self) -> int:
        return self.left

    def generate(self, order: OrderContext) -> Generated:
        self.left -= order.quantity
        return Generated(keys=[f"KEY-{self.left + i}" for i in range(order.quantity)])


@pytest.mark.contract("stock_remaining")
async def test_stock_gauge_follows_generator(stack: Stack) -> None:
    """delivery_daemon_stock_remaining reports a generator's stock_remaining() and drops as keys go out."""
    store = stack.daemon.stores[STORE]
    store.products[PRODUCT] = dataclasses.replace(store.products[PRODUCT], generator=Stocked())
    assert (
        value(await scrape(stack.client, stack.url), "delivery_daemon_stock_remaining", store=STORE, product=PRODUCT)
        == 5
    )
    await stack.market.place_order(PRODUCT, 2)
    await stack.drain()
    assert (
        value(await scrape(stack.client, stack.url), "delivery_daemon_stock_remaining", store=STORE, product=PRODUCT)
        == 3
    )


async def test_metrics_token(make_stack: StackFactory) -> None:
    """With admin.token set, /metrics answers 401 without the bearer token and 200 with it."""
    async with make_stack(admin={"token": "metrics-token-123"}) as stack:
        response = await stack.client.get(f"{stack.url}/metrics")
        assert response.status_code == 401 and "metrics-token-123" not in response.text
        wrong = await stack.client.get(f"{stack.url}/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        await scrape(stack.client, stack.url, Authorization="Bearer metrics-token-123")


async def test_admin_address_is_separate(make_stack: StackFactory) -> None:
    """With admin.port set, /metrics is served by the admin app only, not on the public webhook port."""
    async with make_stack(admin={"port": 0}) as stack:
        assert (await stack.client.get(f"{stack.url}/metrics")).status_code == 404
        async with serve(create_admin_app(stack.daemon), lifespan="off") as admin:
            samples = await scrape(stack.client, admin.url)
            assert ("delivery_daemon_jobs", (("state", "queued"),)) in samples
            assert (await stack.client.get(f"{admin.url}/healthz")).status_code == 200
            assert (await stack.client.post(f"{admin.url}/webhooks/{STORE}", json={})).status_code == 404


@pytest.mark.contract("stock_remaining")
async def test_stock_gauge_reports_the_stock_plugin(make_stack: StackFactory) -> None:
    """The ``stock`` generator reports the keys left in the pool, so the gauge is there for stock products."""
    from delivery_daemon.storage.stock_pool import StockPool

    async with make_stack(products={"serials": {"generator": "stock"}}) as stack:
        stack.market.add_product("serials")
        StockPool(stack.daemon.engine, stack.clock).import_keys(STORE, "serials", ["A", "B", "C"])
        assert (
            value(
                await scrape(stack.client, stack.url), "delivery_daemon_stock_remaining", store=STORE, product="serials"
            )
            == 3
        )
        await stack.market.place_order("serials", 2)
        await stack.drain()
        assert (
            value(
                await scrape(stack.client, stack.url), "delivery_daemon_stock_remaining", store=STORE, product="serials"
            )
            == 1
        )


async def test_no_created_series_and_process_and_build_info(stack: Stack) -> None:
    """The scrape has no ``*_created`` series (counters and histograms included), the ``process_*`` metrics of the
    daemon's process, and ``delivery_daemon_build_info{version=...} 1``."""
    import time

    from delivery_daemon import __version__

    await stack.market.place_order(PRODUCT, 1)
    await stack.drain()  # a counter and a histogram child exist: each would have its own _created
    response = await stack.client.get(f"{stack.url}/metrics")
    assert "_created" not in response.text
    samples = await scrape(stack.client, stack.url)
    assert value(samples, "delivery_daemon_deliveries_total", store=STORE, outcome="delivered") == 1
    assert value(samples, "delivery_daemon_build_info", version=__version__) == 1
    assert [name for name, _ in samples if name == "delivery_daemon_build_info"] == ["delivery_daemon_build_info"]
    assert value(samples, "process_resident_memory_bytes") > 1_000_000
    assert value(samples, "process_cpu_seconds_total") > 0
    assert value(samples, "process_open_fds") > 0
    assert 0 < value(samples, "process_start_time_seconds") <= time.time()
