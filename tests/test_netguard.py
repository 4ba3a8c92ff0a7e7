"""Network safety: configured URLs never reach private/loopback/link-local/metadata addresses unless allowed,
redirects are never followed, and marketplace traffic goes only to the store's configured origin."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from delivery_daemon.clock import SystemClock
from delivery_daemon.config import DeliverySettings, SecuritySettings, StoreSettings
from delivery_daemon.marketplace import AdapterContext, create_client
from delivery_daemon.netguard import BlockedDestination, NetPolicy, check_url, classify, guarded_client
from delivery_daemon.serving import RunningServer, serve
from tests.conftest import PRODUCT, Stack


class Recorder:
    """A loopback HTTP server that counts what reaches it; ``/redirect`` answers 302 to ``target``."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.target = ""
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST"])])

    async def handle(self, request: Request) -> Response:
        self.hits.append(request.url.path)
        if request.url.path == "/redirect":
            return RedirectResponse(self.target, status_code=302)
        return JSONResponse({"ok": True})


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, RunningServer]]:
    rec = Recorder()
    async with serve(rec.app) as running:
        yield rec, running


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd12::1", "private"),
    ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"), ("100.100.100.200", "metadata"),
    ("169.254.10.10", "link-local"), ("fe80::1", "link-local"), ("0.0.0.0", "unspecified"),
    ("100.64.0.1", "not-global"), ("224.0.0.1", "multicast"), ("8.8.8.8", None), ("2606:4700::1111", None),
])
def test_addresses_are_classified(address: str, reason: str | None) -> None:
    """Each refused category is recognised (IPv4-mapped IPv6 included); public addresses pass."""
    assert classify(ipaddress.ip_address(address)) == reason


def test_metadata_stays_refused_when_private_networks_are_allowed() -> None:
    """allow_private opens the LAN but not the cloud metadata endpoint; only an explicit network opens that."""
    metadata = ipaddress.ip_address("169.254.169.254")
    assert NetPolicy(allow_private=True).refusal(ipaddress.ip_address("10.0.0.1")) is None
    assert NetPolicy(allow_private=True).refusal(metadata) == "metadata"
    assert NetPolicy(allowed_networks=(ipaddress.ip_network("169.254.169.254/32"),)).refusal(metadata) is None
    from_config = NetPolicy.from_settings(SecuritySettings(allowed_networks=("169.254.169.254/32",)))
    assert from_config.refusal(metadata) is None


async def test_loopback_url_is_refused_before_connecting(recorder: tuple[Recorder, RunningServer]) -> None:
    """A configured URL on 127.0.0.1 is refused and the server there never sees a byte."""
    rec, running = recorder
    async with guarded_client(NetPolicy()) as client:
        with pytest.raises(BlockedDestination, match="loopback"):
            await client.post(f"{running.url}/hook", json={"secret": "x"})
    assert rec.hits == []


async def test_hostname_is_checked_after_dns_resolution(recorder: tuple[Recorder, RunningServer]) -> None:
    """``localhost`` is a name, not an IP: it is resolved, found to be loopback and refused."""
    rec, running = recorder
    with pytest.raises(BlockedDestination, match="localhost"):
        await check_url(f"http://localhost:{running.port}/hook", NetPolicy())
    async with guarded_client(NetPolicy()) as client:
        with pytest.raises(BlockedDestination):
            await client.get(f"http://localhost:{running.port}/hook")
    assert rec.hits == []


async def test_explicitly_allowed_network_is_reached(recorder: tuple[Recorder, RunningServer]) -> None:
    """With ``127.0.0.0/8`` allowed, the same request goes through (to the checked address)."""
    rec, running = recorder
    policy = NetPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    async with guarded_client(policy) as client:
        assert (await client.post(f"http://localhost:{running.port}/hook", json={})).status_code == 200
    assert rec.hits == ["/hook"]


async def test_redirects_are_never_followed(recorder: tuple[Recorder, RunningServer]) -> None:
    """A 302 is returned as the answer: neither the guarded client nor a marketplace client follows it."""
    rec, running = recorder
    rec.target = f"{running.url}/elsewhere"
    policy = NetPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    async with guarded_client(policy) as client:
        assert (await client.get(f"{running.url}/redirect")).status_code == 302
    context = AdapterContext(store=StoreSettings(name="s", marketplace="softstore"), path="stores[0]",
                             clock=SystemClock(), delivery=DeliverySettings(timeout=5))
    async with create_client(context) as client:
        assert (await client.get(f"{running.url}/redirect")).status_code == 302
    assert rec.hits == ["/redirect", "/redirect"]


async def test_marketplace_traffic_stays_on_the_configured_origin(
        stack: Stack, recorder: tuple[Recorder, RunningServer]) -> None:
    """A signed webhook whose delivery_url points elsewhere is refused (422); no job, the other host never called."""
    rec, running = recorder
    placed = await stack.market.place_order(PRODUCT, 1, send_webhook=False)
    payload = {**placed.payload, "delivery_url": f"{running.url}/orders/delivery/{placed.token}"}
    response = await stack.post(payload)
    assert response.status_code == 422
    assert await stack.job(placed.id_order) is None
    await stack.drain()
    assert rec.hits == []
