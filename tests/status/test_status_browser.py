"""The status page in a real browser: Debian's headless Chromium driven by Playwright (no browser download).

Skipped, with the reason, when the ``playwright`` package or ``/usr/bin/chromium`` is missing (a failure when
``CI`` is set: ``.ci/run`` installs both, so CI never skips). Screenshots of each step are saved to
``artifacts/screenshots/``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import PRODUCT, Stack
from tests.support.status_helpers import PASSWORD, status_page

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _unavailable(reason: str) -> None:
    """Skip on a developer machine without the browser; in CI (``CI`` set) a missing browser is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run must install it", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


try:
    import playwright.async_api as playwright_api
except ImportError:
    _unavailable("the playwright package is not installed (pip install -e '.[browser]'; never `playwright install`)")
if not os.access(CHROMIUM, os.X_OK):
    _unavailable(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")

MakeStack = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]


async def _tab_to(page: Any, target: Any, limit: int = 40) -> None:
    """Press Tab until ``target`` has the focus: it is reachable from the keyboard in document order."""
    for _ in range(limit):
        if await target.evaluate("element => element === document.activeElement"):
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"{target} is not reachable with Tab")


async def test_seller_logs_in_filters_and_retries_a_dead_order(make_stack: MakeStack, tmp_path: Path) -> None:
    """In Chromium with JavaScript off, by keyboard where it matters: log in, filter orders by state and search,
    open the dead order, Retry, and see it delivered."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with make_stack(delivery={"retry_schedule": [1, 1], "jitter": False}) as stack:
        delivered = await stack.market.place_order(PRODUCT)
        await stack.drain()
        stack.market.faults.fail_next_deliveries(3, status=503)  # every attempt fails until the order is dead
        dead = await stack.market.place_order(PRODUCT)
        await stack.drain()
        await stack.advance_and_drain(1)
        await stack.advance_and_drain(1)
        assert (await stack.job(dead.id_order)).state == "dead"
        assert (await stack.job(delivered.id_order)).state == "delivered"

        async with status_page(stack) as server, playwright_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                java_script_enabled=False,
            )  # the page must work without JavaScript (it ships none)
            try:
                page = browser.pages[0] if browser.pages else await browser.new_page()
                page.set_default_timeout(30_000)
                expect = playwright_api.expect
                expect.set_options(timeout=30_000)  # generous: other test runs share the CPUs

                await page.goto(f"{server.url}/")  # the admin address's /status/
                await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
                assert page.url.startswith(f"{server.url}/login")
                await page.screenshot(path=SCREENSHOTS / "01-login.png", full_page=True)
                await page.get_by_label("Password or token").fill(PASSWORD)
                await page.keyboard.press("Enter")  # the form submits from the keyboard
                await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
                await page.keyboard.press("Tab")  # the first stop is the skip link
                await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
                await page.keyboard.press("Enter")
                assert page.url.endswith("#main")  # the skip link jumps over the navigation
                await page.screenshot(path=SCREENSHOTS / "02-overview.png", full_page=True)

                await page.get_by_role("navigation", name="Main").get_by_role("link", name="Orders").click()
                await page.get_by_label("State").select_option("dead")
                await page.get_by_role("button", name="Filter").click()
                await expect(page.get_by_role("link", name=dead.id_order)).to_be_visible()
                await expect(page.get_by_role("link", name=delivered.id_order)).to_have_count(0)
                assert "state=dead" in page.url
                await page.get_by_role("link", name="Clear").click()
                await page.get_by_label("Order id or e-mail contains").fill(delivered.id_order)
                await page.keyboard.press("Enter")  # the search submits from the keyboard
                await expect(page.get_by_role("link", name=delivered.id_order)).to_be_visible()
                await expect(page.get_by_role("link", name=dead.id_order)).to_have_count(0)
                await page.get_by_label("State").select_option("dead")
                await page.get_by_label("Order id or e-mail contains").fill("")
                await page.get_by_role("button", name="Filter").click()
                await page.screenshot(path=SCREENSHOTS / "03-dead-orders.png", full_page=True)

                await page.get_by_role("link", name=dead.id_order).click()
                await expect(page.locator("#order-state")).to_have_text("dead")
                await expect(page.get_by_role("cell", name="gave up after 3 attempts")).to_be_visible()
                await page.screenshot(path=SCREENSHOTS / "04-dead-order.png", full_page=True)
                await _tab_to(page, page.get_by_role("button", name="Retry delivery now"))
                await page.keyboard.press("Enter")
                await expect(page.get_by_role("status")).to_contain_text("queued for another delivery attempt")
                await expect(page.locator("#order-state")).to_have_text("queued")

                assert await stack.drain() == 1  # the worker delivers the retried order
                await page.reload()
                await expect(page.locator("#order-state")).to_have_text("delivered")
                await expect(page.get_by_role("button", name="Redeliver the same keys")).to_be_visible()
                await page.screenshot(path=SCREENSHOTS / "05-delivered.png", full_page=True)
            finally:
                await browser.close()
        assert stack.market.accepted(dead.id_order) is not None
