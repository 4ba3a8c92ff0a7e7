"""Where the seller sees a missed order: the status page's overview and the ``delivery_daemon_missed_orders`` gauge,
until a job exists for it."""

from __future__ import annotations

from delivery_daemon.watchdog.findings import Outcome
from tests.support.stack import PRODUCT, StackFactory
from tests.support.status_helpers import TOKEN, status_page


async def test_missed_order_on_the_status_page_and_in_metrics(make_stack: StackFactory) -> None:
    """A SoftStore order whose webhook never came is listed on the overview and counted by the gauge until its job."""
    async with make_stack() as stack:
        stack.market.clock = stack.clock.now  # the marketplace dates its orders on the daemon's clock
        stack.market.faults.never_send_next_webhooks(1)
        placed = await stack.market.place_order(PRODUCT)
        stack.clock.advance(stack.settings.watchdog.grace + 1)
        assert stack.daemon.watchdog is not None
        report = await stack.daemon.watchdog.run_store("shop")
        assert [f.outcome for f in report.findings] == [Outcome.MISSED]
        async with status_page(stack) as page:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            html = (await page.client.get(f"{page.url}/", headers=headers)).text
            assert "missed-heading" in html and placed.id_order in html and "only in the webhook" in html
            metrics = (await page.client.get(f"{page.admin_url}/metrics")).text
            assert 'delivery_daemon_missed_orders{store="shop"} 1.0' in metrics
            await stack.market.send_webhook(placed.id_order)
            html = (await page.client.get(f"{page.url}/", headers=headers)).text
            assert "missed-heading" not in html and "only in the webhook" not in html
            metrics = (await page.client.get(f"{page.admin_url}/metrics")).text
            assert 'delivery_daemon_missed_orders{store="shop"} 0.0' in metrics
