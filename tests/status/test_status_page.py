"""The status page over plain HTTP: login, CSRF, the pages' numbers and filters, retry/redeliver, stock, labels."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from delivery_daemon.config import StatusSettings, parse_settings
from delivery_daemon.errors import ConfigError
from delivery_daemon.http.serving import serve
from delivery_daemon.order import Content
from delivery_daemon.status import create_status_app
from delivery_daemon.storage.jobs import MarkedOrder
from delivery_daemon.storage.stock_pool import StockPool
from tests.support.stack import PRODUCT, STORE, Stack
from tests.support.status_helpers import PASSWORD, TOKEN, csrf_of, dead_order, delivered_order, status_page

MakeStack = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]


async def test_pages_redirect_anonymous_visitors_to_login(stack: Stack) -> None:
    """Every page needs a login: an anonymous GET is sent to /login with the page as ``next``."""
    async with status_page(stack) as page:
        for path in ("/", "/orders?state=dead", "/orders/1", "/stock"):
            response = await page.client.get(f"{page.url}{path}")
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/status/login?next=/status/"), path
        assert "state%3Ddead" in (await page.client.get(f"{page.url}/orders?state=dead")).headers["location"]


async def test_anonymous_action_changes_nothing(stack: Stack) -> None:
    """A POST without a login is refused and the dead job stays dead."""
    order_id = await dead_order(stack)
    job = await stack.job(order_id)
    async with status_page(stack) as page:
        response = await page.client.post(f"{page.url}/orders/{job.id}/retry", data={"csrf_token": "x"})
        assert response.status_code == 401
    assert (await stack.job(order_id)).state == "dead"


async def test_wrong_password_is_refused(stack: Stack) -> None:
    """A wrong password answers 401 with a message and grants no session."""
    async with status_page(stack) as page:
        response = await page.login("not the password")
        assert response.status_code == 401
        assert "Wrong password or token." in response.text
        assert PASSWORD not in response.text
        assert (await page.client.get(f"{page.url}/")).status_code == 303


async def test_password_and_token_both_log_in(stack: Stack) -> None:
    """The login form accepts the password or the token, then the overview is shown."""
    for secret in (PASSWORD, TOKEN):
        async with status_page(stack) as page:
            response = await page.login(secret)
            assert response.status_code == 303
            overview = await page.client.get(f"{page.url}/")
            assert overview.status_code == 200
            assert "<h1>Overview</h1>" in overview.text


async def test_login_form_without_csrf_token_is_refused(stack: Stack) -> None:
    """Login CSRF: a login POST without the form's token is refused even with the right password."""
    async with status_page(stack) as page:
        await page.client.get(f"{page.url}/login")
        response = await page.client.post(f"{page.url}/login", data={"password": PASSWORD})
        assert response.status_code == 403
        assert (await page.client.get(f"{page.url}/")).status_code == 303


async def test_action_without_valid_csrf_token_is_refused(stack: Stack) -> None:
    """A logged-in POST with a missing or foreign CSRF token answers 403 and retries nothing."""
    order_id = await dead_order(stack)
    job = await stack.job(order_id)
    async with status_page(stack) as page:
        await page.login()
        for form in ({}, {"csrf_token": "forged"}):
            response = await page.client.post(f"{page.url}/orders/{job.id}/retry", data=form)
            assert response.status_code == 403
    assert (await stack.job(order_id)).state == "dead"


async def test_bearer_token_opens_the_pages(stack: Stack) -> None:
    """``Authorization: Bearer <token>`` is enough for scripts; a wrong token is 401 with a JSON reason."""
    async with status_page(stack) as page:
        ok = await page.client.get(f"{page.url}/orders", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        wrong = await page.client.get(f"{page.url}/orders", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.json() == {"error": "a valid bearer token is required"}


async def test_login_never_redirects_off_site(stack: Stack) -> None:
    """``next`` pointing at another host is replaced by the overview (no open redirect)."""
    async with status_page(stack) as page:
        form = await page.client.get(f"{page.url}/login?next=//evil.example/")
        response = await page.client.post(
            f"{page.url}/login",
            data={"csrf_token": csrf_of(form.text), "password": PASSWORD, "next": "//evil.example/"},
        )
        assert response.headers["location"] == "/status/"


async def test_pages_are_readable_without_javascript(stack: Stack) -> None:
    """No page ships a script (the CSP forbids them anyway): numbers, tables and forms are plain HTML."""
    job = await stack.job(await dead_order(stack))
    async with status_page(stack) as page:
        await page.login()
        for path in ("/login", "/", "/orders", f"/orders/{job.id}", "/stock"):
            response = await page.client.get(f"{page.url}{path}")
            assert "<script" not in response.text.lower() and " on" + "click=" not in response.text.lower(), path
            assert "script-src" not in response.headers["content-security-policy"], path  # default-src 'none'
        html = (await page.client.get(f"{page.url}/orders/{job.id}")).text
        assert f'<form method="post" action="/status/orders/{job.id}/retry">' in html


async def test_pages_send_security_headers(stack: Stack) -> None:
    """Responses forbid framing and inline scripts and are not cached."""
    async with status_page(stack) as page:
        response = await page.client.get(f"{page.url}/login")
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie


async def test_overview_counts_states_and_deliveries(stack: Stack) -> None:
    """The overview shows jobs per state, recent deliveries, the oldest open order and the latency chart."""
    await delivered_order(stack)
    await delivered_order(stack)
    await dead_order(stack)
    waiting = await stack.market.place_order(PRODUCT)  # received, not processed
    async with status_page(stack) as page:
        await page.login()
        html = (await page.client.get(f"{page.url}/")).text
    assert '<span class="number" id="delivered-hour">2</span>' in html
    assert '<span class="number" id="delivered-day">2</span>' in html
    assert '<td class="num" data-state="dead">1</td>' in html
    assert '<td class="num" data-state="queued">1</td>' in html
    assert waiting.id_order in html  # the oldest unfinished order
    assert "<svg" in html
    assert "&lt; 1 s: 2" in html  # the chart's text alternative: both deliveries took under a second


async def test_orders_filter_by_state_store_product_and_search(stack: Stack) -> None:
    """The orders table filters by exact state/product and searches order ids literally (no SQL wildcards)."""
    dead = await dead_order(stack)
    delivered_1 = await delivered_order(stack)
    delivered_2 = await delivered_order(stack, "prod-2")
    async with status_page(stack) as page:
        await page.login()

        async def listed(**params: str) -> str:
            response = await page.client.get(f"{page.url}/orders", params=params)
            assert response.status_code == 200
            return response.text

        html = await listed(state="dead")
        assert dead in html and delivered_1 not in html and delivered_2 not in html
        html = await listed(product="prod-2")
        assert delivered_2 in html and dead not in html and delivered_1 not in html
        html = await listed(store=STORE, state="delivered")
        assert delivered_1 in html and delivered_2 in html and dead not in html
        html = await listed(store="other")
        assert "No order matches." in html
        html = await listed(q=delivered_1[3:12])
        assert delivered_1 in html and delivered_2 not in html
        assert "No order matches." in await listed(q="%")
        html = await listed(state="not-a-state")
        assert dead in html and delivered_1 in html  # an unknown state is ignored, not an error


async def test_orders_filters_holding_a_nul_list_nothing_on_both_databases(
    make_stack: Callable[..., contextlib.AbstractAsyncContextManager[Stack]], db_url: str
) -> None:
    """A NUL in the orders filters lists no order instead of a 500 (PostgreSQL refuses NUL as a parameter)."""
    async with make_stack(database={"url": db_url}) as stack:
        delivered = await delivered_order(stack)
        async with status_page(stack) as page:
            await page.login()
            for params in ({"q": "a\x00b"}, {"store": "\x00"}, {"product": "p\x00"}, {"q": delivered[:6] + "\x00"}):
                response = await page.client.get(f"{page.url}/orders", params=params)
                assert response.status_code == 200, (params, response.status_code)
                assert "No order matches." in response.text and delivered not in response.text


async def test_order_detail_shows_attempts_but_never_keys_or_tokens(stack: Stack) -> None:
    """An order's page lists every attempt with its error; the stored keys and delivery token stay hidden."""
    order_id = await delivered_order(stack)
    dead = await dead_order(stack)
    job = await stack.job(order_id)
    async with status_page(stack) as page:
        await page.login()
        html = (await page.client.get(f"{page.url}/orders/{job.id}")).text
        keys = Content.from_json(job.content).keys
        assert keys
        for key in keys:
            assert key not in html
        assert stack.market.orders[order_id].token not in html
        assert "Redeliver the same keys" in html
        dead_job = await stack.job(dead)
        dead_html = (await page.client.get(f"{page.url}/orders/{dead_job.id}")).text
        assert "SoftStore answered 422" in dead_html
        history = await stack.daemon.queue.history(dead_job.id)
        assert len(history) >= 3  # received, verified, refused at least
        rows = dead_html.split('<table class="attempts">')[1].split("<tbody>")[1].split("</tbody>")[0]
        shown = re.findall(r"<tr>\s*<td>[^<]*</td>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>", rows)
        assert shown == [(a.step, a.outcome) for a in history]  # every recorded attempt has its row, in order
        assert "Retry delivery now" in dead_html
        assert (await page.client.get(f"{page.url}/orders/999999")).status_code == 404


async def test_retry_button_delivers_a_dead_order(stack: Stack) -> None:
    """Retry moves a dead job back to the queue (an admin attempt) and the worker then delivers it."""
    order_id = await dead_order(stack)
    job = await stack.job(order_id)
    async with status_page(stack) as page:
        await page.login()
        response = await page.client.post(
            f"{page.url}/orders/{job.id}/retry", data={"csrf_token": await page.csrf(f"/orders/{job.id}")}
        )
        assert response.status_code == 303
        assert (await stack.job(order_id)).state == "queued"
        await stack.drain()
        html = (await page.client.get(f"{page.url}/orders/{job.id}")).text
        assert f"Order #{job.id} queued for another delivery attempt." in html
        assert '<span class="badge delivered" id="order-state">delivered</span>' in html
    assert stack.market.accepted(order_id) is not None


async def test_cancelled_order_can_be_retried_with_a_warning(stack: Stack) -> None:
    """A cancelled order offers Retry (as ``orders retry`` does) with a note saying it will be delivered anyway."""
    placed = await stack.market.place_order(PRODUCT)
    job = await stack.job(placed.id_order)
    await stack.daemon.queue.mark(MarkedOrder(STORE, placed.id_order, "softstore", PRODUCT, "refunded", "refunded"))
    async with status_page(stack) as page:
        await page.login()
        html = (await page.client.get(f"{page.url}/orders/{job.id}")).text
        assert "This order was cancelled (refunded)." in html and "Retry delivery now" in html
        await page.client.post(f"{page.url}/orders/{job.id}/retry", data={"csrf_token": csrf_of(html)})
    assert (await stack.job(placed.id_order)).state == "queued"


async def test_redeliver_sends_the_same_keys_again(stack: Stack) -> None:
    """Redeliver queues a delivered job with its stored content; the marketplace receives the same keys."""
    order_id = await delivered_order(stack)
    job = await stack.job(order_id)
    async with status_page(stack) as page:
        await page.login()
        csrf = await page.csrf(f"/orders/{job.id}")
        await page.client.post(f"{page.url}/orders/{job.id}/redeliver", data={"csrf_token": csrf})
        assert (await stack.job(order_id)).state == "queued"
        await stack.drain()
        again = await page.client.post(
            f"{page.url}/orders/{(await stack.job(order_id)).id}/retry", data={"csrf_token": csrf}
        )
        assert "cannot be retried" in (await page.client.get(page.admin_url + again.headers["location"])).text
    after = await stack.job(order_id)
    assert after.state == "delivered"
    assert after.content == job.content
    deliveries = stack.market.deliveries(order_id)
    assert len(deliveries) == 2
    assert [(a.step, a.outcome) for a in await stack.daemon.queue.history(job.id)][-2:] == [
        ("admin", "redeliver"),
        ("deliver", "already"),
    ]


async def test_redeliver_refuses_jobs_that_were_not_delivered(stack: Stack) -> None:
    """``JobQueue.redeliver`` moves only delivered jobs; a dead one is left as it was."""
    job = await stack.job(await dead_order(stack))
    assert await stack.daemon.queue.redeliver(job.id) is False
    left = await stack.daemon.queue.get(job.id)
    assert left is not None and left.state == "dead"


async def test_stock_page_without_a_stock_pool(stack: Stack) -> None:
    """With no stock keys imported the stock page says there is no pool instead of failing."""
    async with status_page(stack) as page:
        await page.login()
        response = await page.client.get(f"{page.url}/stock")
    assert response.status_code == 200
    assert "No stock pool" in response.text


async def test_stock_page_highlights_low_stock(stack: Stack) -> None:
    """Free keys at or below ``low_stock`` are highlighted; issued keys are counted apart."""
    pool = StockPool(stack.daemon.engine, stack.clock, stack.daemon.resources.cipher)  # sealed, as imported
    pool.import_keys("shop", "plenty", [f"K{index}" for index in range(5)])
    pool.import_keys("shop", "scarce", ["K5", "K6", "K7"])
    assert len(pool.claim("shop", "scarce", "shop:o1", 1)) == 1  # one issued, two free
    async with status_page(stack, low_stock=3) as page:
        await page.login()
        html = (await page.client.get(f"{page.url}/stock")).text
    scarce = html.split("scarce")[0].rsplit("<tr", 1)[1]
    plenty = html.split("plenty")[0].rsplit("<tr", 1)[1]
    assert 'class="low"' in scarce
    assert 'class="ok"' in plenty
    assert html.count("low stock</strong>") == 1
    assert '<td class="num">2</td>\n      <td class="num">1</td>' in html
    assert "K0" not in html  # the keys themselves are never shown


class _FormAudit(HTMLParser):
    """Collects form controls, label targets and buttons without accessible text."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, Any]] = []
        self.label_for: set[str] = set()
        self.skip_link = False
        self._button_text: list[str] | None = None
        self.empty_buttons = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag in ("input", "select", "textarea") and attributes.get("type") != "hidden":
            self.controls.append(attributes)
        if tag == "label" and attributes.get("for"):
            self.label_for.add(str(attributes["for"]))
        if tag == "a" and attributes.get("href") == "#main":
            self.skip_link = True
        if tag == "button":
            self._button_text = []

    def handle_data(self, data: str) -> None:
        if self._button_text is not None:
            self._button_text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "button" and self._button_text is not None:
            self.empty_buttons += not "".join(self._button_text).strip()
            self._button_text = None


async def test_every_control_has_a_label_and_pages_have_a_skip_link(stack: Stack) -> None:
    """Keyboard and screen-reader basics: each visible form control has a <label for>, buttons have text."""
    job = await stack.job(await dead_order(stack))
    async with status_page(stack) as page:
        pages = {"/login": (await page.client.get(f"{page.url}/login")).text}
        await page.login()
        for path in ("/", "/orders", f"/orders/{job.id}", "/stock"):
            pages[path] = (await page.client.get(f"{page.url}{path}")).text
    for path, html in pages.items():
        audit = _FormAudit()
        audit.feed(html)
        assert audit.skip_link, path
        assert audit.empty_buttons == 0, path
        for control in audit.controls:
            assert control.get("id") in audit.label_for, (path, control)
    assert len([c for c in _controls(pages["/orders"])]) == 4  # search, state, store, product


def _controls(html: str) -> list[dict[str, Any]]:
    audit = _FormAudit()
    audit.feed(html)
    return audit.controls


def test_enabling_the_status_page_requires_a_secret() -> None:
    """``status.enabled`` without a password or token is a config error naming the key."""
    with pytest.raises(ConfigError) as caught:
        parse_settings({"status": {"enabled": True}, "admin": {"port": 9100}}, environ={})
    assert str(caught.value).startswith("status.password: required")
    settings = parse_settings(
        {"status": {"enabled": True, "token": "${T}"}, "admin": {"port": 9100}}, environ={"T": "abc"}
    )
    assert settings.status.token is not None and settings.status.token.get_secret_value() == "abc"


async def test_status_app_works_mounted_under_a_prefix(stack: Stack) -> None:
    """Mounted at /status on another app, links, redirects and the stylesheet keep the prefix."""
    settings = StatusSettings(enabled=True, password=PASSWORD)
    outer = Starlette(routes=[Mount("/status", app=create_status_app(stack.daemon, settings))])
    async with serve(outer) as server, httpx.AsyncClient() as client:
        anonymous = await client.get(f"{server.url}/status/orders")
        assert anonymous.headers["location"] == "/status/login?next=/status/orders"
        form = await client.get(f"{server.url}/status/login?next=/status/orders")
        assert 'href="/status/static/style.css"' in form.text
        assert (await client.get(f"{server.url}/status/static/style.css")).status_code == 200
        logged_in = await client.post(
            f"{server.url}/status/login",
            data={"csrf_token": csrf_of(form.text), "password": PASSWORD, "next": "/status/orders"},
        )
        assert logged_in.headers["location"] == "/status/orders"
        assert 'href="/status/stock"' in (await client.get(f"{server.url}/status/orders")).text
