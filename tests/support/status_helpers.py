"""Helpers shared by the status page tests: serve the page on a stack's admin app, log in, read CSRF tokens."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from delivery_daemon.config import StatusSettings
from delivery_daemon.http.metrics import create_admin_app
from delivery_daemon.http.serving import serve
from delivery_daemon.status import MOUNT_PATH, status_mount
from tests.support.stack import PRODUCT, Stack

PASSWORD = "correct horse battery staple"
TOKEN = "status-token-0123456789"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class StatusPage:
    url: str
    """The page's root on the admin address, without the trailing slash (``http://127.0.0.1:P/status``)."""
    admin_url: str
    client: httpx.AsyncClient

    async def login(self, password: str = PASSWORD) -> httpx.Response:
        form = await self.client.get(f"{self.url}/login")
        return await self.client.post(
            f"{self.url}/login", data={"csrf_token": csrf_of(form.text), "password": password, "next": f"{MOUNT_PATH}/"}
        )

    async def csrf(self, path: str = "/") -> str:
        return csrf_of((await self.client.get(f"{self.url}{path}")).text)


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)


@contextlib.asynccontextmanager
async def status_page(stack: Stack, **overrides: object) -> AsyncIterator[StatusPage]:
    """``stack``'s admin app with the status page mounted, as ``serve`` builds it, on loopback with a cookie-keeping
    client."""
    settings = StatusSettings.model_validate({"enabled": True, "password": PASSWORD, "token": TOKEN, **overrides})
    admin = create_admin_app(stack.daemon, [status_mount(stack.daemon, settings)])
    async with serve(admin, lifespan="off") as server, httpx.AsyncClient(timeout=30) as client:
        yield StatusPage(url=f"{server.url}{MOUNT_PATH}", admin_url=server.url, client=client)


async def dead_order(stack: Stack, product: str = PRODUCT) -> str:
    """Place an order whose delivery the marketplace refuses with 422 (final), so the job ends dead."""
    stack.market.faults.fail_next_deliveries(1, status=422)
    placed = await stack.market.place_order(product)
    await stack.drain()
    job = await stack.job(placed.id_order)
    assert job.state == "dead"
    return placed.id_order


async def delivered_order(stack: Stack, product: str = PRODUCT) -> str:
    placed = await stack.market.place_order(product)
    await stack.drain()
    assert (await stack.job(placed.id_order)).state == "delivered"
    return placed.id_order
