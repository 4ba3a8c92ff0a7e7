"""Generating a cart: an order whose marketplace lists several digital products (``MarketplaceOrder.items``).

Each item runs its own product's generator for its quantity, one after the other within one generator slot; the
buyer gets one delivery (:func:`merge`): every item's rendered text in the order's item order, all the keys, and the
first download link (each item's link is also in its own text when its template shows ``{download}``). The result is
stored once per order like any content, so a retry re-sends exactly these bytes. An item out of stock makes the whole
cart wait, its reason naming the item's product (:func:`~delivery_daemon.storage.transitions.item_waiting`) so that
importing keys for that product wakes it.
"""

from __future__ import annotations

from collections.abc import Sequence

from delivery_daemon.errors import Dead, OutOfStock
from delivery_daemon.generators.contract import OrderContext, idempotency_key
from delivery_daemon.order import Content, OrderItem
from delivery_daemon.pipeline.generate import generate
from delivery_daemon.pipeline.stores import Product, Store
from delivery_daemon.storage.models import Job
from delivery_daemon.storage.transitions import item_waiting


def item_context(store: Store, job: Job, item: OrderItem) -> tuple[Product, OrderContext]:
    """The item's product (its own, never the store's ``default``) and what its generator is told; Dead when the
    item's product has no generator (the adapter lists configured products only, so the config changed)."""
    product = store.products.get(item.product_id)
    if product is None:
        raise Dead(f"no generator is configured for product {item.product_id}")
    return product, OrderContext(
        store=job.store,
        marketplace=job.marketplace,
        order_id=job.order_id,
        product_id=item.product_id,
        quantity=item.quantity,
        buyer_email=job.buyer_email,
        options=product.options,
        # Stable per item across retries, and distinct between the items of one order.
        idempotency_key=f"{idempotency_key(job.store, job.order_id, job.issue)}:{item.product_id}",
    )


async def generate_items(
    store: Store, job: Job, items: Sequence[OrderItem], *, budget: float
) -> tuple[Product, Content]:
    """Every item's content, merged; the first item's product (named in the log line and the metrics). Raises what
    a generator raises (nothing is stored unless every item succeeds)."""
    made: list[Content] = []
    first: Product | None = None
    for item in items:
        product, context = item_context(store, job, item)
        first = first or product
        try:
            made.append(await generate(product, context, budget=budget))
        except OutOfStock as exc:  # named, so that a refill of this item's product wakes the cart
            raise OutOfStock(item_waiting(item.product_id, exc.reason), http_status=exc.http_status) from exc
    if first is None:
        raise Dead("the order has no digital product to generate")
    return first, merge(made)


def merge(contents: Sequence[Content]) -> Content:
    """One delivery holding every item's content (see the module docstring)."""
    return Content(
        text="\n\n".join(c.text for c in contents if c.text),
        download=next((c.download for c in contents if c.download), None),
        keys=tuple(key for c in contents for key in c.keys),
    )
