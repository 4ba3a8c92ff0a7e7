"""The status page's stock page lists a shared pool as one row, named as a pool, beside the products' own pools."""

from __future__ import annotations

from delivery_daemon.storage.stock_pool import StockPool, pool_owner
from tests.support.stack import Stack
from tests.support.status_helpers import status_page


async def test_stock_page_shows_a_shared_pool(stack: Stack) -> None:
    """A shared pool's row reads "shared pool" with the pool's name and counts, not the internal @pool store."""
    stock = StockPool(stack.daemon.engine, stack.clock, stack.daemon.resources.cipher)
    stock.import_keys(*pool_owner("office-suite"), ["P1", "P2"])
    stock.import_keys("shop", "own", ["O1"])
    async with status_page(stack) as page:
        await page.login()
        html = (await page.client.get(f"{page.url}/stock")).text
    row = html.split("office-suite")[0].rsplit("<tr", 1)[1]
    assert "<em>shared pool</em>" in row and "@pool" not in html
    assert "<td>shop</td>" in html.split(">own<")[0].rsplit("<tr", 1)[1]
