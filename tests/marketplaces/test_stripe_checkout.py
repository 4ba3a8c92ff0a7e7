"""The stripe-checkout adapter: the Stripe signature (shared with ``stripe``, cross-checked with the stripe library),
which events make an order, the line-item mapping, its configuration errors, and its Stripe API client and session
list against the reference account on a loopback socket."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import stripe

from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import default_marketplaces
from delivery_daemon.config import parse_settings
from delivery_daemon.errors import AuthenticationFailed, ConfigError, Dead, MarketplaceError, Retry, WebhookRejected
from delivery_daemon.http.serving import serve
from delivery_daemon.marketplaces.base import AdapterContext, OrderEvent
from delivery_daemon.marketplaces.listing import OrderListing
from delivery_daemon.marketplaces.optional import ResolvesEvents
from delivery_daemon.marketplaces.stripe_checkout import StripeCheckoutAdapter
from delivery_daemon.order import IncomingOrder, OrderItem
from delivery_daemon.reference.standard_webhooks import new_secret
from delivery_daemon.reference.stripe_checkout import StripeCheckoutAccount
from delivery_daemon.reference.stripe_store import charge_refunded, event
from delivery_daemon.storage.models import Job

SECRET = "whsec_checkout_0123456789abcdef"
KEY = "sk_test_0123456789abcdef"
PATTERN = {"generator": "pattern"}


def adapter(clock: ManualClock, api_url: str = "http://127.0.0.1:9", **store: Any) -> StripeCheckoutAdapter:
    """A stripe-checkout adapter for a store with products ``price_a`` and ``prod_b`` (``store`` overrides keys)."""
    document = {
        "name": "shop",
        "marketplace": "stripe-checkout",
        "api_url": api_url,
        "api_key": KEY,
        "webhook_secret": SECRET,
        "products": {"price_a": PATTERN, "prod_b": PATTERN},
        "delivery": {"channel": "webhook", "webhook": {"url": "http://127.0.0.1:9/x", "secret": new_secret()}},
        **store,
    }
    settings = parse_settings({"stores": [{k: v for k, v in document.items() if v is not None}]}, environ={})
    [kind] = [kind for kind in default_marketplaces() if kind.name == "stripe-checkout"]
    made = kind.create(
        AdapterContext(store=settings.stores[0], path="stores[0]", clock=clock, delivery=settings.delivery)
    )
    assert isinstance(made, StripeCheckoutAdapter)
    return made


def session(payment_status: str = "paid", **fields: Any) -> dict[str, Any]:
    return {
        "id": "cs_test_1",
        "object": "checkout.session",
        "payment_status": payment_status,
        "status": "complete",
        "payment_intent": "pi_1",
        "customer_details": {"email": "ann@example.org"},
        **fields,
    }


def signed(clock: ManualClock, message: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    body = json.dumps(message).encode()
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET, timestamp=int(clock.now()))
    return {"stripe-signature": header}, body


def parse(made: StripeCheckoutAdapter, clock: ManualClock, message: dict[str, Any]) -> Any:
    return made.parse_webhook(*signed(clock, message))


@pytest.mark.parametrize(
    ("kind", "status", "queued"),
    [
        ("checkout.session.completed", "paid", True),
        ("checkout.session.completed", "no_payment_required", True),
        ("checkout.session.completed", "unpaid", False),
        ("checkout.session.async_payment_succeeded", "paid", True),
        ("checkout.session.async_payment_failed", "unpaid", False),
        ("checkout.session.expired", "unpaid", False),
        ("payment_intent.succeeded", "paid", False),
    ],
)
async def test_which_session_events_make_an_order(kind: str, status: str, queued: bool) -> None:
    """Only a session that is paid (or needs no payment) makes an order, keyed by the session id, product cart."""
    clock = ManualClock()
    made = adapter(clock)
    result = parse(made, clock, event(kind, session(status)))
    if not queued:
        assert result is None
        return
    assert isinstance(result, IncomingOrder)
    assert (result.order_id, result.product_id, result.marketplace) == ("cs_test_1", "cart", "stripe-checkout")
    assert result.buyer_email == "ann@example.org" and result.payload["payment_intent"] == "pi_1"
    assert result.event_id is not None and "lines" not in result.payload
    await made.aclose()


async def test_a_setup_session_is_not_an_order() -> None:
    """A setup-mode session (a card saved, no_payment_required, no line items) is acknowledged and stores nothing."""
    clock = ManualClock()
    made = adapter(clock)
    assert parse(made, clock, event("checkout.session.completed", session("no_payment_required", mode="setup"))) is None
    await made.aclose()


async def test_a_forged_signature_is_refused_by_the_shared_stripe_check() -> None:
    """A body signed with another secret, or changed after signing, is a 403 from the Stripe signature check."""
    clock = ManualClock()
    made = adapter(clock)
    headers, body = signed(clock, event("checkout.session.completed", session()))
    with pytest.raises(WebhookRejected) as info:
        made.parse_webhook(headers, body.replace(b"cs_test_1", b"cs_test_2"))
    assert info.value.status == 403
    with pytest.raises(WebhookRejected, match="missing Stripe-Signature"):
        made.parse_webhook({}, body)
    await made.aclose()


async def test_line_items_in_the_event_are_kept_only_when_complete() -> None:
    """An expanded, complete line_items list is kept in the job (not read again); a partial one is not."""
    clock = ManualClock()
    made = adapter(clock)
    line = {"id": "li_1", "quantity": 2, "price": {"id": "price_a", "product": "prod_x"}}
    whole = parse(
        made, clock, event("checkout.session.completed", session(line_items={"data": [line], "has_more": False}))
    )
    assert whole.payload["lines"] == [{"price": "price_a", "product": "prod_x", "quantity": 2}]
    partial = parse(
        made, clock, event("checkout.session.completed", session(line_items={"data": [line], "has_more": True}))
    )
    assert "lines" not in partial.payload
    await made.aclose()


async def test_lines_map_by_price_then_product_and_others_are_left_alone() -> None:
    """price_a and any price of prod_b are ours (quantities of one product added up); other lines are skipped."""
    clock = ManualClock()
    made = adapter(clock)
    lines = [
        {"price": "price_a", "product": "prod_z", "quantity": 1},
        {"price": "price_other", "product": "prod_b", "quantity": 2},
        {"price": "price_a", "product": "prod_z", "quantity": 3},
        {"price": "price_mug", "product": "prod_mug", "quantity": 1},
        {"price": "price_a", "product": None, "quantity": 0},
        "not a line",
    ]
    assert made.items(lines) == (OrderItem("price_a", 4), OrderItem("prod_b", 2))
    await made.aclose()


@pytest.mark.parametrize(
    ("kind", "obj", "expected"),
    [
        ("charge.refunded", charge_refunded("pi_9"), "refunded"),
        ("refund.created", {"id": "re_1", "payment_intent": "pi_9", "amount": 5, "status": "succeeded"}, "refunded"),
        ("refund.created", {"id": "re_1", "payment_intent": "pi_9", "status": "failed"}, None),
        ("refund.created", {"id": "re_1", "charge": "ch_1", "status": "succeeded"}, None),
        ("charge.dispute.created", {"id": "dp_1", "payment_intent": "pi_9", "reason": "fraudulent"}, "disputed"),
    ],
)
async def test_refunds_and_disputes_name_the_payment_intent(
    kind: str, obj: dict[str, Any], expected: str | None
) -> None:
    """Refund and dispute events become events about the PaymentIntent (resolved to a session by the receiver);
    a failed refund, or one without a PaymentIntent, is ignored."""
    clock = ManualClock()
    made = adapter(clock)
    result = parse(made, clock, event(kind, obj))
    if expected is None:
        assert result is None
    else:
        assert isinstance(result, OrderEvent) and result.kind == expected and result.order_id == "pi_9"
    assert isinstance(made, ResolvesEvents) and isinstance(made, OrderListing)
    await made.aclose()


@pytest.mark.parametrize(
    ("store", "path"),
    [({"api_key": None}, "stores[0].api_key"), ({"products": {}, "default": PATTERN}, "stores[0].products")],
)
def test_an_incomplete_store_names_the_key(store: dict[str, Any], path: str) -> None:
    """Without a secret key, or without products to map line items to, the config error names the key path."""
    with pytest.raises(ConfigError) as info:
        adapter(ManualClock(), **store)
    assert info.value.path == path


@contextlib.asynccontextmanager
async def account_adapter() -> AsyncIterator[tuple[StripeCheckoutAccount, StripeCheckoutAdapter, ManualClock]]:
    clock = ManualClock()
    account = StripeCheckoutAccount(now=clock.now, api_key=KEY, webhook_secret=SECRET)
    async with serve(account.app) as server:
        made = adapter(clock, api_url=server.url)
        try:
            yield account, made, clock
        finally:
            await made.aclose()


def job(order_id: str, payload: dict[str, Any] | None = None) -> Job:
    """A job as the receiver stores it (only what fetch_order reads is set)."""
    return Job(
        store="shop",
        marketplace="stripe-checkout",
        order_id=order_id,
        product_id="cart",
        payload=json.dumps(payload or {}),
        due_at=0.0,
        created_at=0.0,
        updated_at=0.0,
    )


async def test_verification_reads_the_session_and_its_lines_from_stripe() -> None:
    """fetch_order confirms the session is paid and returns its configured lines as items, with the buyer email."""
    async with account_adapter() as (account, made, _clock):
        made_session, _ = account.checkout([(account.price("prod_b"), 2), (account.price("prod_mug"), 1)])
        order = await made.fetch_order(job(made_session.id))
        assert order.paid and order.quantity == 2 and order.items == (OrderItem("prod_b", 2),)
        assert order.buyer_email == "buyer@example.org"
        with pytest.raises(Dead, match="no Checkout Session"):
            await made.fetch_order(job("cs_test_unknown"))
        unpaid, _ = account.checkout([(account.price("prod_b"), 1)], payment="unpaid")
        with pytest.raises(Retry, match="not paid yet"):
            await made.fetch_order(job(unpaid.id))
        unpaid.status = "expired"
        with pytest.raises(Dead, match="unpaid"):
            await made.fetch_order(job(unpaid.id))


@pytest.mark.parametrize(
    ("status", "error"), [(401, AuthenticationFailed), (429, Retry), (503, Retry), (400, MarketplaceError)]
)
async def test_stripe_refusals_are_translated(status: int, error: type[Exception]) -> None:
    """A refused key is AuthenticationFailed, a 429 or 5xx a Retry, another 4xx a MarketplaceError; never the key."""
    async with account_adapter() as (account, made, _clock):
        made_session, _ = account.checkout([(account.price("prod_b"), 1)])
        account.api_failures = [status]
        with pytest.raises(error) as info:
            await made.fetch_order(job(made_session.id))
        assert KEY not in str(info.value) and KEY in made.secrets()


async def test_a_refund_is_resolved_to_its_session_through_stripe() -> None:
    """resolve_event finds the session by its PaymentIntent; a payment no session made, or a charge id, is None."""
    async with account_adapter() as (account, made, _clock):
        made_session, _ = account.checkout([(account.price("prod_b"), 1)])
        refund = OrderEvent("shop", "stripe-checkout", made_session.payment_intent, "refunded", detail="refunded 1500")
        resolved = await made.resolve_event(refund)
        assert resolved is not None and resolved.order_id == made_session.id
        assert resolved.detail == f"refunded 1500 (payment {made_session.payment_intent})"
        assert await made.resolve_event(OrderEvent("shop", "stripe-checkout", "pi_none", "refunded")) is None
        assert await made.resolve_event(OrderEvent("shop", "stripe-checkout", "ch_1", "disputed")) is None


async def test_the_session_list_pages_oldest_first_and_skips_unpaid_sessions() -> None:
    """230 sessions over time: pages of 100 oldest first, paid only, none before ``since``, cursor None at the end."""
    async with account_adapter() as (account, made, clock):
        price = account.price("prod_b")
        old, _ = account.checkout([(price, 1)])
        clock.advance(10)
        since = clock.now()
        made_ids = []
        for index in range(230):
            created, _ = account.checkout([(price, 1)], payment="unpaid" if index % 10 == 9 else "paid")
            made_ids.append(created.id)
            clock.advance(1 if index % 3 else 0)  # several sessions in the same second, too
        listed: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await made.list_paid_orders(since, cursor)
            pages += 1
            listed += [item.order.order_id for item in page.orders]
            assert all(item.deliverable and item.order.product_id == "cart" for item in page.orders)
            stamps = [item.created_at for item in page.orders]
            assert stamps == sorted(stamps)
            cursor = page.cursor
            if cursor is None:
                break
        paid = [sid for index, sid in enumerate(made_ids) if index % 10 != 9]
        assert listed == paid and old.id not in listed and pages == 3
