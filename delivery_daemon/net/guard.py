"""Outbound network guard for URLs that come from configuration (outbound webhooks, the ``http`` generator).

The rule: resolve the host, then refuse if *any* address it resolves to is loopback, private, link-local, CGNAT,
reserved, multicast, unspecified or a cloud metadata endpoint — unless the operator explicitly allowed it. The check
runs inside the connection itself (:class:`GuardedBackend` is an httpcore network backend), so the address that is
checked is the address that is connected to: a DNS answer that changes between a check and the connect (DNS
rebinding) cannot slip through. Redirects are never followed by :func:`guarded_client`.

Usage (from a plugin or a sink)::

    policy = NetPolicy.from_settings(settings.security)
    async with guarded_client(policy, timeout=10) as client:
        response = await client.post(url, json=body)   # BlockedDestination if url resolves somewhere refused

An injected httpx transport (tests) is wrapped in :class:`GuardedTransport`, which checks each request's host the
same way before the transport sees it. ``NetPolicy.resolver`` replaces the system's DNS (tests use a fixed table to
make a name resolve to a private address). Configured URLs are also checked at start-up, with their key path
(:mod:`~delivery_daemon.pipeline.destinations`).

Marketplace API hosts are not guarded here: they are configured per store, and each adapter's client is pinned to
that origin (:class:`delivery_daemon.marketplaces.base.PinnedOrigin`), so a URL handed over in a webhook cannot send it
elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from delivery_daemon.config import SecuritySettings
from delivery_daemon.errors import DeliveryDaemonError
from delivery_daemon.net.transport import pool_limits

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
"""``(host, port) -> addresses``: the system's DNS (:func:`resolve`) unless a test hands in its own."""

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, DigitalOcean, OpenStack
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
"""Cloud metadata endpoints: refused even when private networks are allowed, unless listed explicitly."""


LAN_DOCS = "docs/marketplaces.md#lan-receivers"
OFF_BY_DEFAULT = (
    "off by default so that a URL or DNS name in the configuration cannot reach the daemon's own host or "
    "network unless you list it"
)
"""Why refused addresses are refused unless listed (an SSRF guard); said in every refusal, with :data:`LAN_DOCS`."""


class BlockedDestination(DeliveryDaemonError):
    """An outbound request was refused before connecting; the message names the host and why, never the URL, and
    for a refused address the switch that opens it (``security.allowed_networks``) and why it is off by default."""

    address: IPAddress | None = None
    """The refused address, when an address was the reason."""
    what: str = ""
    """The refusal without the advice (the start-up check words the advice as what it expected)."""


def suggested_network(address: IPAddress) -> str:
    """The network to list in ``security.allowed_networks`` to open exactly ``address`` (IPv4 for a mapped one)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return f"{address}/{address.max_prefixlen}"


def metadata_note(address: IPAddress | None) -> str:
    """What to add when ``address`` is a cloud metadata endpoint (the broad switch does not open those)."""
    if address is None or classify(address) != "metadata":
        return ""
    return "; security.allow_private_networks never opens a cloud metadata address"


def refused(host: str, address: IPAddress, reason: str) -> BlockedDestination:
    """The refusal of ``host`` at ``address``: what, which switch opens it, why it is off, where the docs say more."""
    what = f"refused to connect to {host}: it resolves to a {reason} address ({address})"
    blocked = BlockedDestination(
        f"{what}; to deliver to a receiver on your own network, list it in security.allowed_networks "
        f"(e.g. {suggested_network(address)}): it is {OFF_BY_DEFAULT}{metadata_note(address)} ({LAN_DOCS})"
    )
    blocked.address = address
    blocked.what = what
    return blocked


def classify(address: IPAddress) -> str | None:
    """Why ``address`` is refused by default (``"loopback"``, ``"private"``, ``"metadata"`` …), or None if public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return classify(address.ipv4_mapped)
    if isinstance(address, ipaddress.IPv6Address) and address.sixtofour is not None:
        inner = classify(address.sixtofour)  # 2002:7f00:1:: is 6to4 for 127.0.0.1: judged by the address it embeds
        if inner is not None:
            return inner
    if address in METADATA_ADDRESSES:
        return "metadata"
    for reason in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
        if getattr(address, f"is_{reason}"):
            return reason.replace("_", "-")
    if not address.is_global:
        return "not-global"  # e.g. 100.64.0.0/10 (carrier-grade NAT), documentation ranges
    return None


@dataclass(frozen=True)
class NetPolicy:
    """What configured URLs may reach: public addresses, plus what the operator allowed."""

    allow_private: bool = False
    """Allow loopback/private/link-local destinations (a sink on the LAN); metadata endpoints stay refused."""
    allowed_networks: tuple[IPNetwork, ...] = ()
    """Networks allowed whatever they are (``127.0.0.0/8`` for a local test sink, even a metadata address)."""
    resolver: Resolver | None = field(default=None, compare=False)
    """How host names become addresses; None is the system's DNS (tests pass a fixed table)."""

    @classmethod
    def from_settings(cls, settings: SecuritySettings) -> NetPolicy:
        """From ``security.allow_private_networks`` and ``security.allowed_networks``."""
        return cls(
            allow_private=settings.allow_private_networks, allowed_networks=parse_networks(settings.allowed_networks)
        )

    def refusal(self, address: IPAddress) -> str | None:
        """None if ``address`` may be contacted, else the reason it may not."""
        plain = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped else address
        if any(plain in network for network in self.allowed_networks):
            return None
        reason = classify(plain)
        if reason is None or (self.allow_private and reason != "metadata"):
            return None
        return reason


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``["127.0.0.0/8", "::1"]`` → networks; raises ValueError naming a bad entry."""
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (a literal IP resolves to itself)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror}") from None
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in found:
            found.append(address)
    return found


async def checked_addresses(host: str, port: int, policy: NetPolicy) -> list[IPAddress]:
    """The addresses of ``host``, or BlockedDestination if any of them is refused (all must pass, not one)."""
    try:
        literal = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        literal = []
    addresses = literal or await (policy.resolver or resolve)(host, port)
    for address in addresses:
        reason = policy.refusal(address)
        if reason is not None:
            raise refused(host, address, reason)
    return addresses


async def check_url(url: str | httpx.URL, policy: NetPolicy) -> None:
    """Validate a configured URL now (at start-up, for a clear early error; and each request of a
    :class:`GuardedTransport`); connections are checked again."""
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise BlockedDestination(f"only http(s) URLs with a host are allowed, not {parsed.scheme or 'none'}")
    await checked_addresses(parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80), policy)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the policy allows, to the address it checked."""

    def __init__(self, policy: NetPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's backend API)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await checked_addresses(host, port, self.policy)
        error: Exception | None = None
        for address in addresses:
            try:  # the checked address itself, so the name cannot be re-resolved elsewhere; TLS still uses `host`
                return await self.inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's backend API)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedDestination("unix sockets are not allowed for configured URLs")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncBaseTransport):
    """Any httpx transport (an injected test transport too) behind the policy: each request's host is resolved and
    checked before ``inner`` sees it. Over the real network prefer :func:`guarded_transport`, which also pins the
    connection to the checked address."""

    def __init__(self, inner: httpx.AsyncBaseTransport, policy: NetPolicy) -> None:
        self.inner = inner
        self.policy = policy

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            await check_url(request.url, self.policy)
        except httpcore.ConnectError as exc:
            raise httpx.ConnectError(str(exc), request=request) from None
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def guarded_transport(policy: NetPolicy, *, limits: httpx.Limits | None = None) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose every connection goes through :class:`GuardedBackend`."""
    limits = limits or pool_limits(50, 10)
    transport = httpx.AsyncHTTPTransport(limits=limits)
    # httpx does not take a network backend; the pool is rebuilt with the same settings and ours (pinned httpx<1).
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=GuardedBackend(policy),
    )
    return transport


def guarded_client(
    policy: NetPolicy,
    *,
    timeout: float = 10.0,
    headers: dict[str, str] | None = None,
    limits: httpx.Limits | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An AsyncClient for configured URLs: guarded connections, redirects never followed. An injected
    ``transport`` (tests) is wrapped in :class:`GuardedTransport`, so the policy applies to it as well."""
    guarded = guarded_transport(policy, limits=limits) if transport is None else GuardedTransport(transport, policy)
    return httpx.AsyncClient(
        transport=guarded,
        follow_redirects=False,
        timeout=httpx.Timeout(timeout),
        headers={"User-Agent": "delivery-daemon", **(headers or {})},
    )


__all__: Sequence[str] = [
    "LAN_DOCS",
    "METADATA_ADDRESSES",
    "OFF_BY_DEFAULT",
    "BlockedDestination",
    "GuardedBackend",
    "GuardedTransport",
    "NetPolicy",
    "Resolver",
    "check_url",
    "checked_addresses",
    "classify",
    "guarded_client",
    "guarded_transport",
    "metadata_note",
    "parse_networks",
    "refused",
    "suggested_network",
]
