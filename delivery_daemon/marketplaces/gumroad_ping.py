"""Gumroad's Ping (``sale``) and the resource subscriptions ``refund`` and ``dispute``.

Gumroad signs nothing: a Ping is a plain ``application/x-www-form-urlencoded`` POST. Its authenticity comes from
two checks, both before anything is read into an order:

* the webhook URL carries a secret token, ``POST /webhooks/{store}?token=<webhook_secret>``, compared in constant
  time (:func:`~delivery_daemon.net.signatures.check_token`). The query, not the path: the route stays the one every
  store has, and the daemon logs no request URLs (uvicorn's access log is off; the token is also a redacted secret);
* the body's ``seller_id`` must be the store's ``seller_id`` (a leaked token alone does not let another Gumroad
  account's Pings through).

With an access token (``api_key``) the sale is then re-read through the API before anything is generated
(``GET /v2/sales/{sale_id}``, :mod:`delivery_daemon.marketplaces.gumroad_api`), and the store lists its sales for
the missed-order watchdog; without one the Ping's own fields are used, as for the signed-body marketplaces.

Mapping: order id ``sale_id`` (Gumroad resends a failed Ping with the same one, so a resend is a duplicate);
product ``permalink`` (else the last segment of ``product_permalink``: the part after ``/l/`` in the product's URL);
quantity ``quantity`` (else 1); buyer ``email``. ``resource_name`` ``refund`` / ``dispute`` mark the order refunded /
disputed; ``dispute_won``, ``cancellation`` (a subscription stops renewing: nothing paid is taken back) and the
``subscription_*`` resources are acknowledged and ignored, as is a sale with ``test=true`` (the seller's own test
purchase, or the dashboard's "send test Ping": no money moved, so no key is made).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl

from delivery_daemon.config import StoreSettings, expect
from delivery_daemon.errors import ConfigError, WebhookRejected
from delivery_daemon.marketplaces.base import AdapterContext, OrderEvent, WebhookResult
from delivery_daemon.marketplaces.signed_body import SignedPayloadAdapter, email, order_payload, quantity
from delivery_daemon.net.signatures import check_token, same_text
from delivery_daemon.order import IncomingOrder

FORM = "application/x-www-form-urlencoded"
QUERY_PARAMETER = "token"
MIN_TOKEN = 16
"""Characters a URL token must have at least: it is the only secret a Ping is checked against."""
GUMROAD_ID = re.compile(r"^[A-Za-z0-9_=.:-]{1,128}$")
"""Gumroad's ids (sales, sellers, products) are URL-safe base64 with ``=`` padding."""
PERMALINK = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
IGNORED = ("dispute_won", "cancellation", "subscription_ended", "subscription_restarted", "subscription_updated")


def parse_form(body: bytes) -> dict[str, str]:
    """A form-urlencoded body as a dict (the first value of a repeated name), or WebhookRejected 400."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=1000)
    except (UnicodeDecodeError, ValueError):
        raise WebhookRejected(400, "body is not a UTF-8 form (application/x-www-form-urlencoded)") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


def gumroad_id(value: Any, name: str) -> str:
    """A Gumroad id from the body, or WebhookRejected 422 naming the field."""
    if not isinstance(value, str) or not value:
        raise WebhookRejected(422, f"missing field: {name}")
    if not GUMROAD_ID.match(value):
        raise WebhookRejected(422, f"field {name} must be 1 to 128 letters, digits or _=.:-")
    return value


def permalink(sale: Mapping[str, Any]) -> str | None:
    """The product's short permalink (what the store's ``products`` are keyed by), or None when it has none:
    ``permalink``, else the last path segment of ``product_permalink`` (a URL in a Ping, bare in the API)."""
    for name in ("permalink", "product_permalink"):
        value = sale.get(name)
        if isinstance(value, str) and value:
            last = value.rstrip("/").rsplit("/", 1)[-1]
            if PERMALINK.match(last):
                return last
    return None


def is_true(value: Any) -> bool:
    """Gumroad's booleans: ``true`` in a form, ``true`` in JSON."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def sale_order(store: str, sale: Mapping[str, Any], product_id: str) -> IncomingOrder:
    """The order a sale (a Ping's form, or a sale object from the API) is stored as."""
    buyer = email(sale.get("email"))
    count = quantity(sale.get("quantity") or 1, "quantity")
    return IncomingOrder(
        store=store,
        marketplace="gumroad",
        order_id=gumroad_id(sale.get("sale_id") or sale.get("id"), "sale_id"),
        product_id=product_id,
        buyer_email=buyer,
        payload=order_payload(
            count, buyer, "paid", gumroad_product_id=str(sale.get("product_id") or ""), seller_id=sale.get("seller_id")
        ),
    )


class GumroadAdapter(SignedPayloadAdapter):
    """A Gumroad account without an access token: the Ping is trusted once its token and seller id check out."""

    marketplace = "gumroad"
    body_types = (FORM,)

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        if len(self.secret) < MIN_TOKEN:
            raise ConfigError(
                f"{context.path}.webhook_secret",
                f"the URL token must have at least {MIN_TOKEN} characters",
                *expect(StoreSettings, "webhook_secret"),
            )
        if context.store.seller_id is None:
            raise ConfigError(f"{context.path}.seller_id", "required for gumroad", *expect(StoreSettings, "seller_id"))
        self.seller_id = context.store.seller_id

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        """Without the URL's query there is no token: refused (the receiver calls :meth:`parse_request`)."""
        return self.parse_request(headers, {}, body)

    def parse_request(self, headers: Mapping[str, str], query: Mapping[str, str], body: bytes) -> WebhookResult:
        check_token(self.secret, query.get(QUERY_PARAMETER), QUERY_PARAMETER)
        form = parse_form(body)
        seller = form.get("seller_id")
        if not seller:
            raise WebhookRejected(403, "missing seller_id")
        if not same_text(self.seller_id, seller):
            raise WebhookRejected(403, "seller_id is not this store's")
        resource = form.get("resource_name") or "sale"
        if resource in IGNORED:
            return None
        sale_id = gumroad_id(form.get("sale_id"), "sale_id")
        product_id = permalink(form) or ""
        if resource in ("refund", "dispute"):
            kind: Literal["refunded", "disputed"] = "refunded" if resource == "refund" else "disputed"
            return OrderEvent(self.store, self.marketplace, sale_id, kind, product_id, detail=f"Gumroad {resource}")
        if resource != "sale" or is_true(form.get("test")):
            return None
        if not product_id:
            raise WebhookRejected(422, "missing field: permalink (or product_permalink)")
        return sale_order(self.store, form, product_id)
