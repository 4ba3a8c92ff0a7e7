"""SoftStore's seller endpoints: the seller's profile (its webhook target, ``api_url``) and a product's listed
``count``, through the adapter's authenticated requests. The commands are in :mod:`delivery_daemon.cli.softstore`.

:func:`connect` sets the seller's ``api_url`` (where SoftStore sends paid-order webhooks) through
``POST /seller/profile`` and reads it back with ``GET /seller``; with ``check`` it only compares. "Points at this
daemon" means the seller's ``api_url`` ends with ``/webhooks/<store name>``. A failed or unreadable answer is a
:class:`~delivery_daemon.errors.MarketplaceError` carrying the marketplace's message ("Invalid API URL", …).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import structlog

from delivery_daemon.errors import MarketplaceError, Retry
from delivery_daemon.marketplaces.base import message_of

log = structlog.get_logger("delivery_daemon.softstore")


class Authorised(Protocol):
    """An authenticated request to the store's API (the adapter's: Bearer JWT, refreshed once after a 401);
    a transport failure raises :class:`~delivery_daemon.errors.Retry`."""

    async def __call__(self, method: str, url: str, **kwargs: Any) -> httpx.Response: ...


class SellerApi:
    """The seller endpoints of SoftStore's API, through an adapter's authenticated requests."""

    def __init__(self, request: Authorised) -> None:
        self._request = request

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._request(method, path, **kwargs)
        except Retry as exc:
            raise MarketplaceError(f"SoftStore is unreachable: {exc.reason}") from None
        if response.status_code != 200:
            raise MarketplaceError(f"SoftStore answered {response.status_code}: {message_of(response)}")
        try:
            data = response.json()["data"]
        except (ValueError, KeyError, TypeError):
            raise MarketplaceError("SoftStore's answer is unreadable") from None
        if not isinstance(data, dict):
            raise MarketplaceError("SoftStore's answer is unreadable")
        return data

    async def seller(self) -> dict[str, Any]:
        return await self._call("GET", "/seller")

    async def update_profile(self, **fields: str) -> dict[str, Any]:
        return await self._call("POST", "/seller/profile", json=fields)

    async def product(self, product_id: str) -> dict[str, Any]:
        """``GET /products/info/{id}``: the product object (``id``, ``count``, ``status_moderation``, …)."""
        product = (await self._call("GET", f"/products/info/{quote(product_id, safe='')}")).get("product")
        if not isinstance(product, dict):
            raise MarketplaceError("SoftStore's product answer is unreadable")
        return product

    async def update_product(self, product_id: str, **fields: Any) -> dict[str, Any]:
        """``POST /products/update/{id}``; the answer has ``moderation``: whether the product went back to review."""
        return await self._call("POST", f"/products/update/{quote(product_id, safe='')}", json=fields)


async def listed_count(api: SellerApi, product_id: str) -> int:
    """The ``count`` SoftStore shows for the product."""
    count = (await api.product(product_id)).get("count")
    try:
        return int(str(count))
    except ValueError:
        raise MarketplaceError(f"SoftStore's count for product {product_id} is unreadable") from None


async def set_listed_count(api: SellerApi, product_id: str, count: int, store: str) -> None:
    """Set ``count`` alone: a field SoftStore documents as not triggering moderation (logged if it did anyway)."""
    answer = await api.update_product(product_id, count=count)
    if answer.get("moderation"):
        log.warning("stock_sync.moderation", store=store, product_id=product_id)


def points_here(api_url: str | None, store: str) -> bool:
    return bool(api_url) and str(api_url).rstrip("/").endswith(f"/webhooks/{store}")


@dataclass(frozen=True)
class Connection:
    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


async def connect(api: SellerApi, public_url: str, *, check: bool) -> Connection:
    """Set (or with ``check`` only compare) the seller's ``api_url``; the result is read back from SoftStore."""
    before = str((await api.seller()).get("api_url") or "")
    if check or before == public_url:
        return Connection(before, before)
    await api.update_profile(api_url=public_url)
    after = str((await api.seller()).get("api_url") or "")
    return Connection(before, after)


async def store_status(api: SellerApi, store: str) -> str:
    """One line about the store as SoftStore sees it (for ``check-config``)."""
    seller = await api.seller()
    api_url = seller.get("api_url") or "(not set)"
    where = "points at this daemon" if points_here(seller.get("api_url"), store) else "does NOT point at this daemon"
    return (
        f"SoftStore seller {seller.get('name')!r}, moderation status {seller.get('status_moderation')}, "
        f"api_url {api_url} ({where})"
    )
