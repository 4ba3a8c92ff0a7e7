"""Paddle Billing's transaction entity, as both its webhooks and its API show it: which line of a transaction is the
order, its quantity and the buyer's email, and the API requests the Paddle adapter makes (Bearer API key).

Only what the adapter (:mod:`delivery_daemon.marketplaces.paddle`) needs is read; everything else is left alone.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from delivery_daemon.errors import Dead, MarketplaceError, Retry, WebhookRejected
from delivery_daemon.marketplaces.base import ApiClient, message_of, transport_retry
from delivery_daemon.marketplaces.signed_body import DEFAULT_PRODUCT, identifier, optional_mapping, quantity
from delivery_daemon.net.guard import BlockedDestination

PAID_STATUSES = ("paid", "completed")
"""Transaction statuses whose money is in: ``paid`` comes before ``completed`` (Paddle's own processing), and both
are past the point a payment can fail."""

PAGE_SIZE = 30
"""Paddle's maximum for the transaction list (a larger per_page is answered with 30)."""


@dataclass(frozen=True)
class Line:
    """The transaction line the daemon delivers: its product id as the store names it, and its quantity."""

    product_id: str
    quantity: int
    price_id: str | None


def _ids(item: dict[str, Any]) -> tuple[str | None, str | None]:
    """(product id, price id) of a line: ``price.product_id`` / ``product.id``, and ``price_id`` / ``price.id``."""
    price, product = optional_mapping(item, "price"), optional_mapping(item, "product")
    product_id = identifier(price.get("product_id") or product.get("id"), "items[].price.product_id", required=False)
    price_id = identifier(item.get("price_id") or price.get("id"), "items[].price_id", required=False)
    return product_id, price_id


def pick_line(transaction: dict[str, Any], configured: Container[str]) -> Line:
    """The line to deliver: the first whose product id (``pro_…``), else price id (``pri_…``), is one of the store's
    ``configured`` products; else the first line, by its product id (the store's ``default`` product applies).

    A transaction is one order to the daemon; a second configured line in the same transaction is not delivered
    (docs/marketplaces.md). WebhookRejected 422 when the transaction has no usable line."""
    items = transaction.get("items")
    if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
        raise WebhookRejected(422, "field items must be a non-empty list of objects")
    lines = [(item, *_ids(item)) for item in items]
    for item, product_id, price_id in lines:
        for chosen in (product_id, price_id):
            if chosen is not None and chosen in configured:
                return Line(chosen, quantity(item.get("quantity"), "items[].quantity"), price_id)
    item, product_id, price_id = lines[0]
    return Line(product_id or DEFAULT_PRODUCT, quantity(item.get("quantity"), "items[].quantity"), price_id)


def customer_email(transaction: dict[str, Any]) -> str | None:
    """The buyer's email of a transaction read with ``include=customer`` (the webhook has only ``customer_id``)."""
    customer = transaction.get("customer")
    value = customer.get("email") if isinstance(customer, dict) else None
    return value if isinstance(value, str) and 1 <= len(value) <= 320 else None


def timestamp(value: Any) -> float | None:
    """An RFC 3339 time as Paddle writes it (``2024-04-12T10:18:48.294633Z``) in unix seconds, else None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def rfc3339(seconds: float) -> str:
    """Unix seconds as the RFC 3339 time Paddle's list filters take."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PaddleApi:
    """The Paddle Billing API for one store: ``GET /transactions/{id}`` and ``GET /transactions``."""

    def __init__(self, client: ApiClient, api_key: str) -> None:
        self._client = client
        self._auth = {"Authorization": f"Bearer {api_key}"}
        self.page_size = PAGE_SIZE

    async def _get(self, url: str) -> httpx.Response:
        try:
            return await self._client.call("GET", url, headers=self._auth)
        except httpx.HTTPError as exc:
            raise transport_retry(exc) from None
        except BlockedDestination as exc:  # the client is pinned to api_url's origin: config must change
            raise Dead(f"not contacted: {exc}") from None

    async def transaction(self, transaction_id: str) -> dict[str, Any]:
        """The transaction with its customer; Dead when Paddle does not know it, Retry when it cannot answer."""
        response = await self._get(f"/transactions/{transaction_id}?include=customer")
        if response.status_code == 404:
            raise Dead(f"transaction not found at Paddle: {_error(response)}", http_status=404)
        if response.status_code != 200:
            raise Retry(
                f"transaction answered {response.status_code}: {_error(response)}", http_status=response.status_code
            )
        data: dict[str, Any] = _data(response, dict, Retry("transaction answer unreadable", http_status=200))
        return data

    async def completed(self, since: float, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of completed transactions created at or after ``since``, oldest first, and the cursor (the last
        transaction's id) when Paddle says there are more."""
        url = (
            f"/transactions?status=completed&include=customer&order_by=created_at[ASC]&per_page={self.page_size}"
            f"&created_at[GTE]={rfc3339(since)}"
        )
        if after is not None:
            url += f"&after={after}"
        try:
            response = await self._get(url)
        except Dead as exc:
            raise MarketplaceError(exc.reason) from None
        if response.status_code in (401, 403):
            raise MarketplaceError(f"Paddle refused the API key ({response.status_code})")
        if response.status_code != 200:
            raise Retry(f"transaction list answered {response.status_code}", http_status=response.status_code)
        rows = _data(response, list, Retry("transaction list unreadable", http_status=200))
        try:
            more = bool(response.json()["meta"]["pagination"]["has_more"])
        except (ValueError, KeyError, TypeError):
            more = False
        last = rows[-1].get("id") if rows and isinstance(rows[-1], dict) else None
        return [row for row in rows if isinstance(row, dict)], str(last) if more and last else None


def _data(response: httpx.Response, kind: type, failure: Retry) -> Any:
    try:
        data = response.json()["data"]
    except (ValueError, KeyError, TypeError):
        raise failure from None
    if not isinstance(data, kind):
        raise failure
    return data


def _error(response: httpx.Response) -> str:
    """Paddle's ``error.detail`` (or the generic ``message`` / reason) for the order's history."""
    try:
        detail = response.json()["error"]["detail"]
    except (ValueError, KeyError, TypeError):
        return message_of(response)
    return str(detail)[:500]
