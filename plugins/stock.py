"""``stock``: hand out pre-made keys imported with ``delivery-daemon stock import`` (a "serials" product).

Each key goes to exactly one order; the claim is atomic in the database (see
:mod:`delivery_daemon.storage.stock_pool`) and
idempotent per order, so a retried order gets the same keys. With too few keys left the order waits (OutOfStock)
and is delivered after the next import. ``low_stock_threshold`` logs one ``stock.low`` event each time the number of
keys left drops to or below it.

``revoke()`` (the contract's revocation hook): a key that went out and whose order was refunded, disputed or revoked
is marked revoked in the pool and never handed out again; a key taken for an order cancelled before any delivery
attempt goes back to the pool.

``stock_remaining()`` reports the keys left for the configured product (the ``delivery_daemon_stock_remaining``
metric and stock sync read it); a store's ``default`` product serves many product ids, so it is asked with one.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from delivery_daemon.generators.contract import Generated, OrderContext, Resources, RevocationContext


class StockOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    low_stock_threshold: int | None = Field(default=None, ge=0)


class StockGenerator:
    """Keys from the seller's pool imported for the order's store and product."""

    name = "stock"
    Options = StockOptions

    def __init__(self, options: StockOptions, resources: Resources) -> None:
        self.options = options
        self.resources = resources

    def generate(self, order: OrderContext) -> Generated:
        # Sync on purpose: the daemon runs sync generators in a thread, and the pool's SQL is blocking.
        keys = self.resources.stock.claim(
            order.store,
            order.product_id,
            order.idempotency_key,
            order.quantity,
            low_threshold=self.options.low_stock_threshold,
        )
        return Generated(keys=keys)

    def revoke(self, revocation: RevocationContext) -> None:
        # Sync on purpose, like generate: the pool's SQL is blocking.
        pool = self.resources.stock
        if revocation.sent:
            pool.revoke(revocation.store, revocation.product_id, revocation.idempotency_key)
        else:
            pool.release(revocation.store, revocation.product_id, revocation.idempotency_key)

    def stock_remaining(self, product_id: str | None = None) -> int | None:
        """Keys nobody holds for ``product_id`` (default: the configured product); None when there is no product."""
        product = product_id or self.resources.product_id
        if product is None:
            return None
        return self.resources.stock.available(self.resources.store, product)
