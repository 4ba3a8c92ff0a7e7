"""Network safety: configured URLs never reach private/loopback/link-local/metadata addresses unless allowed,
redirects are never followed, and marketplace traffic goes only to the store's configured origin."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import httpcore
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from delivery_daemon.channels.webhook import WebhookDelivery
from delivery_daemon.clock import ManualClock, SystemClock
from delivery_daemon.config import DeliverySettings, OutboundWebhookSettings, SecuritySettings, StoreSettings
from delivery_daemon.errors import Dead, Retry
from delivery_daemon.http.serving import RunningServer, serve
from delivery_daemon.marketplaces.base import AdapterContext, create_client
from delivery_daemon.net.guard import (
    BlockedDestination,
    IPAddress,
    NetPolicy,
    check_url,
    classify,
    guarded_client,
    parse_networks,
)
from delivery_daemon.order import Content
from delivery_daemon.reference.standard_webhooks import new_secret
from delivery_daemon.storage.models import Job
from delivery_daemon.testing import arun_generator
from tests.support.stack import PRODUCT, Stack


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


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("169.254.10.10", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "not-global"),
        ("224.0.0.1", "multicast"),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
    ],
)
def test_addresses_are_classified(address: str, reason: str | None) -> None:
    """Each refused category is recognised (IPv4-mapped IPv6 included); public addresses pass."""
    assert classify(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",
        "0x7f000001",
        "127.1",
        "017700000001",
        "[::ffff:7f00:1]",
        "[0:0:0:0:0:ffff:127.0.0.1]",
        "[::127.0.0.1]",
        "[2002:7f00:1::]",
        "[64:ff9b::a9fe:a9fe]",
    ],
)
async def test_obfuscated_forms_of_a_refused_address_are_refused(host: str) -> None:
    """Decimal, hex, octal and short IPv4 forms (resolved by the system, as a connection would be), IPv4-mapped,
    IPv4-compatible, 6to4 and NAT64 IPv6 forms of loopback/metadata addresses are all refused."""
    with pytest.raises(BlockedDestination, match=r"loopback|reserved|metadata"):
        await check_url(f"http://{host}:8080/hook", NetPolicy())


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
    context = AdapterContext(
        store=StoreSettings(name="s", marketplace="softstore"),
        path="stores[0]",
        clock=SystemClock(),
        delivery=DeliverySettings(timeout=5),
    )
    async with create_client(context) as client:
        assert (await client.get(f"{running.url}/redirect")).status_code == 302
    assert rec.hits == ["/redirect", "/redirect"]


async def test_marketplace_traffic_stays_on_the_configured_origin(
    stack: Stack, recorder: tuple[Recorder, RunningServer]
) -> None:
    """A signed webhook whose delivery_url points elsewhere is refused (422); no job, the other host never called."""
    rec, running = recorder
    placed = await stack.market.place_order(PRODUCT, 1, send_webhook=False)
    payload = {**placed.payload, "delivery_url": f"{running.url}/orders/delivery/{placed.token}"}
    response = await stack.post(payload)
    assert response.status_code == 422
    assert await stack.job(placed.id_order) is None
    await stack.drain()
    assert rec.hits == []


# -- every rule, on the real outbound paths ------------------------------------------------------------------------

DNS = {
    "keys.internal": ["10.0.0.5"],
    "hook.example": ["93.184.215.14"],
    "split.example": ["93.184.215.14", "10.9.9.9"],
    "meta.example": ["169.254.169.254"],
    "sink.test": ["127.0.0.1"],
}


async def fake_dns(host: str, port: int) -> list[IPAddress]:
    """A fixed DNS table (the system resolver cannot be told that a name points at a private address)."""
    if host not in DNS:
        raise httpcore.ConnectError(f"cannot resolve {host}")
    return [ipaddress.ip_address(a) for a in DNS[host]]


class Counting:
    """An injected test transport (no network) that answers 200 and counts what reached it."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        return httpx.Response(200, json={"ok": True})


def webhook_sink(url: str, policy: NetPolicy, transport: httpx.AsyncBaseTransport | None = None) -> WebhookDelivery:
    store = StoreSettings.model_validate({"name": "s", "marketplace": "shoppy", "webhook_secret": "x" * 16})
    context = AdapterContext(
        store=store,
        path="stores[0]",
        clock=ManualClock(),
        delivery=DeliverySettings(timeout=5),
        transport=transport,
        policy=policy,
    )
    return WebhookDelivery(OutboundWebhookSettings(url=url, secret=new_secret()), context)


JOB = Job(
    store="s",
    order_id="o-1",
    marketplace="shoppy",
    product_id="p",
    payload="{}",
    due_at=0,
    created_at=0,
    updated_at=0,
    quantity=1,
)
CONTENT = Content("KEY-1", None, ("KEY-1",))
REFUSED_URLS = [
    ("http://10.0.0.5/hook", "private"),
    ("http://192.168.1.20/hook", "private"),
    ("http://127.0.0.1/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://[::ffff:10.0.0.5]/hook", "private"),
    ("http://169.254.10.10/hook", "link-local"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://keys.internal/hook", "private"),
    ("http://split.example/hook", "private"),
    ("http://meta.example/hook", "metadata"),
    ("http://0.0.0.0/hook", "unspecified"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED_URLS, ids=[u for u, _ in REFUSED_URLS])
async def test_outbound_webhook_refuses_each_category_even_with_an_injected_transport(url: str, reason: str) -> None:
    """Each refused kind of address (literal, IPv6, IPv4-mapped, or a DNS name resolving to it) makes the outbound
    webhook Dead before the transport sees the request — an injected test transport is guarded too."""
    seen = Counting()
    sink = webhook_sink(url, NetPolicy(resolver=fake_dns), seen.transport)
    with pytest.raises(Dead, match=reason):
        await sink.send(JOB, CONTENT)
    assert seen.urls == []


@pytest.mark.parametrize(
    ("url", "policy"),
    [
        ("http://hook.example/hook", NetPolicy(resolver=fake_dns)),
        ("http://keys.internal/hook", NetPolicy(resolver=fake_dns, allow_private=True)),
        ("http://keys.internal/hook", NetPolicy(resolver=fake_dns, allowed_networks=parse_networks(["10.0.0.0/24"]))),
        (
            "http://meta.example/hook",
            NetPolicy(resolver=fake_dns, allowed_networks=parse_networks(["169.254.169.254"])),
        ),
        ("http://[::ffff:127.0.0.1]/hook", NetPolicy(allowed_networks=parse_networks(["127.0.0.0/8"]))),
    ],
    ids=["public", "allow-private", "allowed-network", "metadata-allowed-explicitly", "mapped-loopback-allowed"],
)
async def test_outbound_webhook_reaches_public_and_explicitly_allowed_hosts(url: str, policy: NetPolicy) -> None:
    """A public address passes; a refused one passes only when the operator allowed it explicitly."""
    seen = Counting()
    receipt = await webhook_sink(url, policy, seen.transport).send(JOB, CONTENT)
    assert receipt.outcome == "delivered" and seen.urls == [url]


async def test_metadata_is_refused_with_private_networks_allowed_on_the_real_path() -> None:
    """allow_private_networks does not open 169.254.169.254 to the outbound webhook."""
    seen = Counting()
    with pytest.raises(Dead, match="metadata"):
        await webhook_sink("http://169.254.169.254/", NetPolicy(allow_private=True), seen.transport).send(JOB, CONTENT)
    assert seen.urls == []


async def test_dns_name_is_connected_at_the_address_that_was_checked(recorder: tuple[Recorder, RunningServer]) -> None:
    """Over the real network, a name is resolved once by the guard and the socket goes to that checked address."""
    rec, running = recorder
    refused = NetPolicy(resolver=fake_dns)
    allowed = NetPolicy(resolver=fake_dns, allowed_networks=parse_networks(["127.0.0.0/8"]))
    with pytest.raises(Dead, match="loopback"):
        await webhook_sink(f"http://sink.test:{running.port}/hook", refused).send(JOB, CONTENT)
    assert rec.hits == []
    receipt = await webhook_sink(f"http://sink.test:{running.port}/hook", allowed).send(JOB, CONTENT)
    assert receipt.outcome == "delivered" and rec.hits == ["/hook"]


async def test_http_generator_refuses_a_name_resolving_to_a_private_address() -> None:
    """The http generator's key server URL goes through the same guard: a private address by DNS is Dead, unsent."""
    from plugins.http import HttpGenerator

    with pytest.raises(Dead, match="private"):
        await arun_generator(HttpGenerator, {"url": "http://keys.internal/keys"}, policy=NetPolicy(resolver=fake_dns))


async def test_http_generator_does_not_follow_redirects(recorder: tuple[Recorder, RunningServer]) -> None:
    """A 302 from the key server is a refusal (Dead), and its Location is never requested."""
    from plugins.http import HttpGenerator

    rec, running = recorder
    rec.target = f"{running.url}/elsewhere"
    policy = NetPolicy(allowed_networks=parse_networks(["127.0.0.0/8"]))
    with pytest.raises(Dead, match="302"):
        await arun_generator(HttpGenerator, {"url": f"{running.url}/redirect"}, policy=policy)
    assert rec.hits == ["/redirect"]


async def test_outbound_webhook_does_not_follow_a_redirect_to_an_allowed_host(
    recorder: tuple[Recorder, RunningServer],
) -> None:
    """A 302 from the seller's endpoint is retried as an answer; the Location is never requested."""
    rec, running = recorder
    rec.target = f"{running.url}/elsewhere"
    sink = webhook_sink(f"{running.url}/redirect", NetPolicy(allowed_networks=parse_networks(["127.0.0.0/8"])))
    with pytest.raises(Retry, match="302"):
        await sink.send(JOB, CONTENT)
    assert rec.hits == ["/redirect"]


async def test_marketplace_client_only_reaches_the_stores_origin(recorder: tuple[Recorder, RunningServer]) -> None:
    """A marketplace adapter's client refuses any URL off the store's API origin, before connecting."""
    rec, running = recorder
    context = AdapterContext(
        store=StoreSettings(name="s", marketplace="softstore"),
        path="stores[0]",
        clock=SystemClock(),
        delivery=DeliverySettings(timeout=5),
    )
    async with create_client(context, base_url=f"{running.url}/api") as client:
        assert (await client.get("/orders/info/1")).status_code == 200
        with pytest.raises(BlockedDestination, match="not the store's API host"):
            await client.post(f"http://localhost:{running.port}/api/orders/delivery/tok")
    assert rec.hits == ["/api/orders/info/1"]


@pytest.mark.parametrize(
    ("url", "network"),
    [
        ("http://192.168.1.20:8000/orders", "192.168.1.20/32"),
        ("http://[::ffff:10.0.0.5]/hook", "10.0.0.5/32"),
        ("http://keys.internal/hook", "10.0.0.5/32"),
        ("http://[fd12::1]/hook", "fd12::1/128"),
    ],
)
async def test_a_refused_lan_receiver_says_which_switch_opens_it_and_why_it_is_off(url: str, network: str) -> None:
    """A receiver on the seller's own network is refused with the switch to set (security.allowed_networks and the
    exact network to list), why it is off by default and where the docs explain it — in the Dead reason itself."""
    with pytest.raises(Dead) as refused:
        await webhook_sink(url, NetPolicy(resolver=fake_dns), Counting().transport).send(JOB, CONTENT)
    reason = refused.value.reason
    assert f"list it in security.allowed_networks (e.g. {network})" in reason
    assert "off by default so that a URL or DNS name in the configuration cannot reach" in reason
    assert "docs/marketplaces.md#lan-receivers" in reason


async def test_a_refused_metadata_address_says_allow_private_networks_does_not_open_it() -> None:
    """The cloud metadata address's refusal says that security.allow_private_networks never opens it."""
    with pytest.raises(BlockedDestination) as refused:
        await check_url("http://169.254.169.254/latest", NetPolicy(allow_private=True))
    assert "security.allow_private_networks never opens a cloud metadata address" in str(refused.value)
    assert "security.allowed_networks (e.g. 169.254.169.254/32)" in str(refused.value)
