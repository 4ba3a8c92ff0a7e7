"""Helpers shared by the status page tests: serve the page next to a stack, log in, read CSRF tokens."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from delivery_daemon.config import StatusSettings
from delivery_daemon.serving import serve
from delivery_daemon.status import create_status_app
from tests.conftest import PRODUCT, Stack

PASSWORD = "correct horse battery staple"
TOKEN = "status-token-0123456789"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class StatusPage:
    url: str
    client: httpx.AsyncClient

    async def login(self, password: str = PASSWORD) -> httpx.Response:
        form = await self.client.get(f"{self.url}/login")
        return await self.client.post(f"{self.url}/login",
                                      data={"csrf_token": csrf_of(form.text), "password": password, "next": "/"})

    async def csrf(self, path: str = "/") -> str:
        return csrf_of((await self.client.get(f"{self.url}{path}")).text)


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)


@contextlib.asynccontextmanager
async def status_page(stack: Stack, **overrides: object) -> AsyncIterator[StatusPage]:
    """The status app for ``stack``'s daemon, served on loopback, with a cookie-keeping client."""
    settings = StatusSettings.model_validate({"enabled": True, "password": PASSWORD, "token": TOKEN, **overrides})
    async with serve(create_status_app(stack.daemon, settings)) as server, httpx.AsyncClient(timeout=30) as client:
        yield StatusPage(url=server.url, client=client)


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
