"""Gumroad: the marketplace type, and with an access token (``api_key``) the sales API.

The Ping and what it is checked against are in :mod:`~delivery_daemon.marketplaces.gumroad_ping`. With an access
token (a Gumroad application's, scope ``view_sales``; sent as ``Authorization: Bearer``, never in a URL) the store:

* re-reads each sale before anything is generated: ``GET /v2/sales/{sale_id}`` (trust, but verify). The sale must
  be this seller's and the Ping's product, and is paid unless Gumroad shows it ``refunded``, ``partially_refunded``,
  ``chargedback`` or ``disputed``; the quantity and the buyer's email are the API's;
* lists its sales for the missed-order watchdog (:class:`~delivery_daemon.marketplaces.listing.OrderListing`):
  ``GET /v2/sales?after=YYYY-MM-DD`` and then ``page_key`` as long as Gumroad gives a ``next_page_key``. Gumroad
  pages newest first; each page is handed on oldest first, and sales before ``since`` (the ``after`` filter is by
  day) are left out. Listed sales are deliverable: Gumroad has no delivery API, so the store delivers by email or
  its webhook channel anyway, and a sale without an email is raised as missed instead.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from delivery_daemon.errors import Dead, MarketplaceError, Retry, WebhookRejected
from delivery_daemon.marketplaces.base import AdapterContext, create_client, message_of, transport_retry
from delivery_daemon.marketplaces.gumroad_ping import GumroadAdapter, is_true, permalink, sale_order
from delivery_daemon.marketplaces.listing import ListedOrder, OrderPage
from delivery_daemon.order import MarketplaceOrder
from delivery_daemon.storage.models import Job

API_URL = "https://api.gumroad.com"
UNPAID = ("refunded", "partially_refunded", "chargedback", "disputed")
"""A sale showing any of these is not delivered (the order's status names the first that is true)."""


def created_at(sale: dict[str, Any]) -> float | None:
    """The sale's ``created_at`` as unix seconds, or None when it is absent or unreadable."""
    value = sale.get("created_at")
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


class GumroadApiAdapter(GumroadAdapter):
    """A Gumroad account with an access token: sales are re-read and listed through the API."""

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        assert context.store.api_key is not None  # Gumroad.create chooses this class only with one
        self.token = context.store.api_key.get_secret_value()
        self.client = create_client(context, context.store.api_url or API_URL)

    async def _get(self, path: str) -> httpx.Response:
        try:
            return await self.client.call("GET", path, headers={"Authorization": f"Bearer {self.token}"})
        except httpx.HTTPError as exc:
            raise transport_retry(exc) from None

    async def fetch_order(self, job: Job) -> MarketplaceOrder:
        """The sale as the API shows it now (see the module docstring)."""
        response = await self._get(f"/v2/sales/{job.order_id}")
        if response.status_code == 404:
            raise Dead(f"sale not found at Gumroad: {message_of(response)}", http_status=404)
        if response.status_code != 200:
            raise Retry(f"sale lookup answered {response.status_code}", http_status=response.status_code)
        try:
            sale = response.json()["sale"]
            assert isinstance(sale, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise Retry("sale lookup unreadable", http_status=200) from None
        if sale.get("seller_id") is not None and str(sale["seller_id"]) != self.seller_id:
            raise Dead("the sale belongs to another Gumroad seller")
        try:
            stored = json.loads(job.payload) if job.payload else {}
        except ValueError:
            stored = {}
        expected_product = stored.get("gumroad_product_id") or "" if isinstance(stored, dict) else ""
        same_product = str(sale.get("product_id") or "") == expected_product or permalink(sale) == job.product_id
        unpaid = next((flag for flag in UNPAID if is_true(sale.get(flag))), None)
        try:
            count = int(sale.get("quantity") or 1)
        except (TypeError, ValueError):
            raise Retry("sale quantity unreadable", http_status=200) from None
        buyer = sale.get("email")
        return MarketplaceOrder(
            order_id=job.order_id,
            product_id=job.product_id if same_product else str(permalink(sale) or sale.get("product_id")),
            paid=unpaid is None and sale.get("paid", True) is not False,
            status=unpaid or "paid",
            quantity=count,
            buyer_email=buyer if isinstance(buyer, str) else None,
        )

    async def list_paid_orders(self, since: float, cursor: str | None = None) -> OrderPage:
        """One page of the account's paid sales placed at or after ``since`` (see the module docstring)."""
        day = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d")
        path = f"/v2/sales?after={day}" + (f"&page_key={quote(cursor, safe='')}" if cursor else "")
        response = await self._get(path)
        if response.status_code >= 500:
            raise Retry(f"sales list answered {response.status_code}", http_status=response.status_code)
        if response.status_code != 200:
            raise MarketplaceError(f"Gumroad refused the sales list ({response.status_code}): {message_of(response)}")
        try:
            data = response.json()
            sales = data["sales"]
            assert isinstance(sales, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise Retry("sales list unreadable", http_status=200) from None
        orders = [listed for sale in reversed(sales) if (listed := self._listed(sale, since)) is not None]
        next_key = data.get("next_page_key")
        return OrderPage(orders, str(next_key) if next_key else None)

    def _listed(self, sale: Any, since: float) -> ListedOrder | None:
        if not isinstance(sale, dict) or any(is_true(sale.get(flag)) for flag in UNPAID):
            return None
        when = created_at(sale)
        product_id = permalink(sale)
        if when is None or when < since or product_id is None:
            return None
        try:
            order = sale_order(self.store, sale, product_id)
        except WebhookRejected:  # one malformed sale must not stop the page: it is not listed
            return None
        if order.buyer_email is None:
            return ListedOrder(order, when, False, "the sale has no buyer email to deliver to")
        return ListedOrder(order, when, True)

    def secrets(self) -> list[str]:
        return [*super().secrets(), self.token]

    async def aclose(self) -> None:
        await self.client.aclose()


class Gumroad:
    """The marketplace type, for the explicit list handed to the daemon."""

    name = "gumroad"

    def create(self, context: AdapterContext) -> GumroadAdapter:
        if context.store.api_key is not None and context.store.api_key.get_secret_value():
            return GumroadApiAdapter(context)
        return GumroadAdapter(context)
